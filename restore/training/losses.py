"""Pixel losses for restoration training: L1, Charbonnier, MSE, the PSNR loss and a frequency loss.

Written here rather than imported from BasicSR because ``import basicsr`` costs ~7 s per process
(every DDP rank and every resumed run would pay it); ``tests/pipelines/test_train_data.py`` checks L1
and Charbonnier against BasicSR 1.4.2's ``basicsr.losses.basic_loss``, and the PSNR and frequency
losses against their definitions.

All take ``pred``, ``target`` ``(B, C, H, W)`` and return a scalar (mean reduction).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .options import LossTerm


def l1_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return (pred - target).abs().mean()


def mse_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return (pred - target).pow(2).mean()


def charbonnier_loss(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """``mean(sqrt((pred - target)^2 + eps))`` (BasicSR's definition; ``eps`` inside the root)."""
    return torch.sqrt((pred - target).pow(2) + eps).mean()


def psnr_loss(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Negative PSNR (data range 1), averaged over the batch: ``mean_b 10 log10(mse_b + eps)``.

    NAFNet's ``PSNRLoss`` (used by SAM-Deblur): ``10/ln(10) * mean(log(mse_b + 1e-8))``.
    """
    mse = (pred - target).pow(2).flatten(1).mean(dim=1)
    return (10.0 / math.log(10.0)) * torch.log(mse + eps).mean()


def fft_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference of the 2-D spectra, real and imaginary parts alike (``torch.fft.rfft2``,
    unnormalised, as deblurring papers use it: MIMO-UNet's frequency reconstruction loss, Cho et al.
    ICCV 2021, weight 0.1 beside L1). By Parseval a squared error is the same on pixels and on the
    spectrum; an absolute error on the spectrum is meant to weigh the small high-frequency errors that
    blur leaves more than a pixel loss does. Unnormalised, a given per-pixel error weighs more on larger
    crops (about sqrt(H*W/2) times an L1 pixel loss for white error), so weights carry over between
    recipes only at the same crop size.
    """
    return torch.view_as_real(torch.fft.rfft2(pred - target)).abs().mean()  # the FFT is linear


class PixelLoss(nn.Module):
    """Weighted sum of loss terms; ``forward`` returns ``(total, {term name: value})``.

    A term is named by its type; a second term of the same type is ``<type>_2``, a third ``<type>_3``, so
    that each logged value keeps its own key.
    """

    def __init__(self, terms: tuple[LossTerm, ...]) -> None:
        super().__init__()
        if not terms:
            raise ValueError("PixelLoss needs at least one term")
        self.terms = terms

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        parts: dict[str, torch.Tensor] = {}
        total = pred.new_zeros(())
        for t in self.terms:
            if t.type == "l1":
                v = l1_loss(pred, target)
            elif t.type == "mse":
                v = mse_loss(pred, target)
            elif t.type == "charbonnier":
                v = charbonnier_loss(pred, target, t.eps)
            elif t.type == "psnr":
                v = psnr_loss(pred, target)
            elif t.type == "fft":
                v = fft_loss(pred, target)
            else:
                raise ValueError(f"unknown loss type {t.type!r}")
            key, n = t.type, 1
            while key in parts:
                n += 1
                key = f"{t.type}_{n}"
            parts[key] = v.detach()
            total = total + t.weight * v
        return total, parts
