"""The ``none`` prior: every pixel in region 0, no features (the "no prior" ablation)."""

from __future__ import annotations

import torch

from ..prior import PRIORS, Prior, PriorOutput


@PRIORS.register("none")
class NonePrior(Prior):
    """All-zero labels ``(B, H, W)`` int32 and no features."""

    name = "none"

    def __init__(self) -> None:
        super().__init__()

    def forward(self, images: torch.Tensor) -> PriorOutput:
        b, _, h, w = images.shape
        labels = torch.zeros((b, h, w), dtype=torch.int32, device=images.device)
        return PriorOutput(labels, {}, self.meta)
