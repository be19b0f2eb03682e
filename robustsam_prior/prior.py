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
