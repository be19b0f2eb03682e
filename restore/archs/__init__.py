"""Restoration architectures: ``forward(image (B,3,H,W) [0,1], prior) -> (B,3,H,W)``.

``ARCHS`` (a :class:`~robustsam_prior.core.registry.Registry`) maps ``nafnet``, ``map_nafnet`` and
``fusion_nafnet`` to their classes; :func:`build_arch` builds one from keyword arguments;
:func:`register_with_basicsr` adds them to BasicSR's ``ARCH_REGISTRY`` so BasicSR option files can name
them (``type: NAFNet|MapNAFNet|FusionNAFNet``); importing :mod:`restore.basicsr_plugin` calls it (this
package never does on its own).
Torch is imported only when an architecture is first needed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import nn

    from robustsam_prior.core.registry import Registry

__all__ = ["ARCHS", "ARCH_LIMITS", "MAX_PARAMETERS", "build_arch", "check_arch_kwargs", "register_with_basicsr"]

# Bounds on the size arguments of the architectures (inclusive), far above any published NAFNet (width 64,
# 36 blocks, 4 levels) yet low enough that a mistyped or hostile value (a recipe, a checkpoint's metadata)
# fails at once instead of trying to allocate terabytes. For enc_blocks/dec_blocks they bound each item
# (at most MAX_LEVELS of them), for feature_channels each value.
ARCH_LIMITS: dict[str, tuple[int, int]] = {
    "width": (2, 1024),
    "in_channels": (1, 64),
    "out_channels": (1, 64),
    "enc_blocks": (0, 256),
    "middle_blocks": (0, 256),
    "dec_blocks": (0, 256),
    "seg_channels": (1, 1024),
    "fusion_channels": (1, 4096),
    "feature_channels": (1, 8192),
    "guided_radius": (0, 4096),
}
MAX_LEVELS = 8
# and on the whole network, counted on the meta device before it is built: 500 M parameters (2 GB in
# float32), 7x NAFNet-width64's 68 M
MAX_PARAMETERS = 500_000_000


def _load_archs() -> Registry:
    from . import prior_nafnet_arch  # noqa: F401  (registers the architectures)
    from ._registry import ARCHS

    return ARCHS


def __getattr__(name: str) -> Any:
    if name == "ARCHS":
        return _load_archs()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def check_arch_kwargs(kwargs: Any) -> None:
    """Raise ``ValueError("arch_kwargs.<key>: ...")`` where a size argument is not an integer within
    :data:`ARCH_LIMITS` (other keys are left to the architecture). Needs no torch."""
    if not isinstance(kwargs, dict):
        raise ValueError(f"arch_kwargs: expected a mapping, got {type(kwargs).__name__}")

    def check(key: str, where: str, value: Any) -> None:
        low, high = ARCH_LIMITS[key]
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"arch_kwargs.{where}: expected an integer, got {value!r}")
        if not low <= value <= high:
            raise ValueError(f"arch_kwargs.{where}: must be in {low}..{high}, got {value}")

    for key, value in kwargs.items():
        if key not in ARCH_LIMITS:
            continue
        if key in ("enc_blocks", "dec_blocks"):
            if not isinstance(value, (list, tuple)):
                raise ValueError(f"arch_kwargs.{key}: expected a list of block counts, got {value!r}")
            if len(value) > MAX_LEVELS:
                raise ValueError(f"arch_kwargs.{key}: at most {MAX_LEVELS} levels, got {len(value)}")
            for i, n in enumerate(value):
                check(key, f"{key}[{i}]", n)
        elif key == "feature_channels":
            if value is None:
                continue
            if not isinstance(value, dict):
                raise ValueError(f"arch_kwargs.{key}: expected a mapping of feature name to channels, got {value!r}")
            for name, n in value.items():
                check(key, f"{key}.{name}", n)
        else:
            check(key, key, value)


def build_arch(name: str, **kwargs: Any) -> nn.Module:
    """Build the architecture ``name`` (see ``ARCHS.names()``) with keyword arguments ``kwargs``.

    ``ValueError`` where a size argument is out of :data:`ARCH_LIMITS` or the network would have more
    than :data:`MAX_PARAMETERS` parameters (counted on the meta device, before anything is allocated).
    """
    from robustsam_prior.core.checkpoint import count_parameters, on_meta_device

    cls = _load_archs().get(name)
    check_arch_kwargs(kwargs)
    try:
        n = count_parameters(on_meta_device(lambda: cls(**kwargs)))
        if n > MAX_PARAMETERS:
            raise ValueError(f"architecture {name!r}: {n:,} parameters, more than the {MAX_PARAMETERS:,} allowed "
                             f"(arch_kwargs {kwargs})")
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

    reg = _load_archs()
    return [register_once(ARCH_REGISTRY, reg.get(key), "ARCH_REGISTRY") for key in reg.names()]


def register_once(registry, obj, what: str) -> str:
    """Register ``obj`` under its class name in the BasicSR ``registry`` unless it is already there;
    ``RuntimeError`` where ``registry`` holds a different object under that name. Returns the name."""
    name = obj.__name__
    if name in registry:
        if registry.get(name) is not obj:
            raise RuntimeError(f"BasicSR's {what} already has a different {name!r}")
    else:
        registry.register(obj)
    return name
