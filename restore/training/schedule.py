"""The learning-rate schedule (linear warm-up, then constant or cosine) and the EMA of the weights."""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn


def lr_factor(step: int, *, iterations: int, warmup: int, kind: str, base_lr: float, eta_min: float) -> float:
    """Multiplier of the base learning rate at optimizer step ``step`` (0-based).

    Linear warm-up ``(step+1)/warmup`` over the first ``warmup`` steps, then either constant or a cosine
    from ``base_lr`` to ``eta_min`` at the last step (torch's ``CosineAnnealingLR`` formula).
    """
    if step < warmup:
        return (step + 1) / warmup
    if kind == "constant" or base_lr == 0:
        return 1.0
    span = max(1, iterations - warmup)
    progress = min(1.0, (step - warmup) / span)
    floor = eta_min / base_lr
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))


class Ema:
    """Exponential moving average of a module's parameters (buffers copied).

    Decay at update ``t`` (1-based) is ``min(decay, (1 + t) / (10 + t))`` so early averages are not
    dominated by the random initialisation.
    """

    def __init__(self, module: nn.Module, decay: float) -> None:
        self.module = copy.deepcopy(module).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.decay = decay
        self.updates = 0

    @torch.no_grad()
    def update(self, module: nn.Module) -> None:
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        src = dict(module.named_parameters())
        for name, p in self.module.named_parameters():
            p.mul_(d).add_(src[name].detach(), alpha=1 - d)
        src_b = dict(module.named_buffers())
        for name, b in self.module.named_buffers():
            b.copy_(src_b[name])

    def state_dict(self) -> dict[str, Any]:
        return {"module": self.module.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.module.load_state_dict(state["module"])
        self.updates = int(state["updates"])
