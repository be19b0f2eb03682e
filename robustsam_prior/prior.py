"""The Prior interface: what restoration networks consume.

A prior maps images ``(B, 3, H, W)`` float32 RGB in [0, 1] to a :class:`PriorOutput`:

- ``labels``: ``(B, H, W)`` int32 region map at image resolution; regions do not overlap and their
  ids are 0..K-1 per image (what SAM-Deblur's mask-average-pooling unit consumes);
- ``features``: named feature maps ``(B, C, h, w)`` (e.g. ``image_embedding`` (B,256,64,64),
  ``robust_mask_features`` (B,32,256,256)); empty for priors without features;
- ``meta``: the prior's name, checkpoint sha256 and settings, so that a cache entry can never be
  confused with another prior's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from .core.registry import Registry, did_you_mean
from .core.versions import package_version


@dataclass
class PriorOutput:
    """Output of a prior for a batch of images (see module docstring for the contract)."""

    labels: torch.Tensor
    features: dict[str, torch.Tensor] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.labels.dim() != 3:
            raise ValueError(f"PriorOutput.labels must be (B, H, W), got shape {tuple(self.labels.shape)}")
        if self.labels.dtype != torch.int32:
            raise ValueError(f"PriorOutput.labels must be int32, got {self.labels.dtype}")
        for name, f in self.features.items():
            if f.dim() != 4 or f.shape[0] != self.labels.shape[0]:
                raise ValueError(
                    f"PriorOutput.features[{name!r}] must be (B, C, h, w) with B={self.labels.shape[0]}, "
                    f"got {tuple(f.shape)}"
                )

    @property
    def batch_size(self) -> int:
        return self.labels.shape[0]

    def to(self, device: torch.device | str) -> PriorOutput:
        return PriorOutput(
            self.labels.to(device), {k: v.to(device) for k, v in self.features.items()}, dict(self.meta)
        )

    def index(self, i: int) -> PriorOutput:
        """The single-image output ``i`` (batch size 1)."""
        return PriorOutput(
            self.labels[i : i + 1], {k: v[i : i + 1] for k, v in self.features.items()}, dict(self.meta)
        )

    @staticmethod
    def cat(outputs: list[PriorOutput]) -> PriorOutput:
        """Concatenate single outputs along the batch axis (features must agree in shape)."""
        if not outputs:
            raise ValueError("PriorOutput.cat needs at least one output")
        names = outputs[0].features.keys()
        return PriorOutput(
            torch.cat([o.labels for o in outputs]),
            {k: torch.cat([o.features[k] for o in outputs]) for k in names},
            dict(outputs[0].meta),
        )


# --------------------------------------------------------------------------------------------------
# The prior registry and base class
# --------------------------------------------------------------------------------------------------

PRIORS: Registry[type[Prior]] = Registry("prior")

# the modules that register the built-in priors; imported on first use of :func:`build_prior`
# (an explicit list: nothing scans folders)
_BUILTIN_MODULES = (
    "robustsam_prior.priors.none",
    "robustsam_prior.priors.regions",
    "robustsam_prior.priors.segment_anything_prior",
)


class Prior:
    """Base class of every prior: ``prior(images (B, 3, H, W) float in [0, 1]) -> PriorOutput``.

    Subclasses set the class attribute ``name``, take their options as typed keyword arguments,
    record them (JSON-able) in ``self.options`` and implement :meth:`forward`. :attr:`meta` is what
    makes a cache entry unique to this prior (name, options, checkpoint sha256, versions).
    """

    name: str = ""

    def __init__(self, **options: Any) -> None:
        self.options: dict[str, Any] = dict(options)

    @property
    def meta(self) -> dict[str, Any]:
        """``{"name", "options", "version", ...}``; JSON-able; subclasses add e.g. ``checkpoint_sha256``."""
        return {"name": self.name, "options": dict(self.options), "version": package_version()}

    def forward(self, images: torch.Tensor) -> PriorOutput:
        raise NotImplementedError

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> PriorOutput:
        check_images(images, what=f"{self.name} prior input")
        out = self.forward(images)
        b, _, h, w = images.shape
        if tuple(out.labels.shape) != (b, h, w):
            raise RuntimeError(
                f"{self.name} prior returned labels of shape {tuple(out.labels.shape)} for images "
                f"{tuple(images.shape)}; expected {(b, h, w)}"
            )
        return out

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in self.options.items())
        return f"{type(self).__name__}({opts})"


def check_images(images: Any, *, what: str = "images") -> None:
    """Raise ``ValueError`` unless ``images`` is a float tensor ``(B, 3, H, W)`` with values in [0, 1]."""
    if not isinstance(images, torch.Tensor):
        raise ValueError(f"{what} must be a torch.Tensor (B, 3, H, W), got {type(images).__name__}")
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"{what} must have shape (B, 3, H, W), got {tuple(images.shape)}")
    if not images.is_floating_point():
        raise ValueError(f"{what} must be a float tensor with values in [0, 1], got {images.dtype}")
    if min(images.shape) == 0:
        raise ValueError(f"{what} is empty: shape {tuple(images.shape)}")
    lo, hi = (float(v) for v in torch.aminmax(images.detach()))
    if not (lo >= -1e-3 and hi <= 1 + 1e-3):  # also catches NaN
        raise ValueError(f"{what} must have values in [0, 1], got range [{lo:.4g}, {hi:.4g}] (0..255 input?)")


def build_prior(name: str, **options: Any) -> Prior:
    """Build the prior registered as ``name`` (``regions``, ``none``, ``robustsam``, ``sam``).

    Unknown option names raise ``ValueError`` listing the accepted ones (with a "did you mean").
    """
    import importlib
    import inspect

    for module in _BUILTIN_MODULES:
        importlib.import_module(module)
    cls = PRIORS.get(name)
    params = inspect.signature(cls.__init__).parameters
    accepted = [p for p in params if p != "self" and params[p].kind == inspect.Parameter.KEYWORD_ONLY]
    unknown = [k for k in options if k not in accepted]
    if unknown:
        raise ValueError(
            f"prior {name!r}: unknown option {unknown[0]!r}{did_you_mean(unknown[0], accepted)}; "
            f"accepted: {', '.join(accepted) or 'none'}"
        )
    return cls(**options)
