"""Restoration architectures: ``forward(image (B,3,H,W) [0,1], prior) -> (B,3,H,W)``.

``ARCHS`` (a :class:`~robustsam_prior.registry.Registry`) maps ``nafnet``, ``map_nafnet`` and
``fusion_nafnet`` to their classes; :func:`build_arch` builds one from keyword arguments;
:func:`register_with_basicsr` adds them to BasicSR's ``ARCH_REGISTRY`` (explicitly, never at import
time) so BasicSR option files can name them (``type: NAFNet|MapNAFNet|FusionNAFNet``).
Torch is imported only when an architecture is first needed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import nn

    from robustsam_prior.registry import Registry

__all__ = ["ARCHS", "build_arch", "register_with_basicsr"]


def _load_archs() -> Registry:
    from . import prior_nafnet_arch  # noqa: F401  (registers the architectures)
    from ._registry import ARCHS

    return ARCHS


def __getattr__(name: str) -> Any:
    if name == "ARCHS":
        return _load_archs()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def build_arch(name: str, **kwargs: Any) -> nn.Module:
    """Build the architecture ``name`` (see ``ARCHS.names()``) with keyword arguments ``kwargs``."""
    cls = _load_archs().get(name)
    try:
        return cls(**kwargs)
    except TypeError as e:
        raise TypeError(f"architecture {name!r}: bad arguments {sorted(kwargs)} ({e})") from e


def register_with_basicsr() -> list[str]:
    """Register every architecture with BasicSR's ``ARCH_REGISTRY`` under its class name.

    Idempotent (an entry already holding the same class is left alone); returns the BasicSR names.
    Raises ``RuntimeError`` if BasicSR already has a different class under one of the names.
    """
    from robustsam_prior._basicsr import import_basicsr

    import_basicsr()
    from basicsr.utils.registry import ARCH_REGISTRY

    names = []
    reg = _load_archs()
    for key in reg.names():
        cls = reg.get(key)
        bname = cls.__name__
        if bname in ARCH_REGISTRY:
            if ARCH_REGISTRY.get(bname) is not cls:
                raise RuntimeError(f"BasicSR's ARCH_REGISTRY already has a different {bname!r}")
        else:
            ARCH_REGISTRY.register(cls)
        names.append(bname)
    return names
