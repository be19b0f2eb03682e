"""SAM-Deblur's mask-average-pooling (MAP) unit over an integer region map, and region dropout.

SAM-Deblur (arXiv 2309.02270) replaces every channel of a small
learned feature map by the mean of that channel over the pixel's SAM segment. The official code
loops over the batch and broadcasts an ``(M, H, W, C)`` tensor of boolean masks that were divided
by 255 (attenuating the segment means 255x). Here the segments are one ``int`` label
map per image (a partition, ids 0..K-1, gaps allowed) and the means are computed for the whole
batch at once with ``index_add_`` over per-sample offset ids: O(B*C*H*W), binary semantics (each
pixel belongs to exactly one region with weight 1), no loop over regions or over the batch.

Region dropout (training only) reproduces SAM-Deblur's mask dropout: ``floor(p * K)`` of a
sample's K present regions, drawn uniformly without replacement, are merged into ONE region that
gets the mean of their union (the official code zeroes the dropped masks and gives the
"remaining" pixels their joint mean).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .nafnet_arch import Conv1x1


def _check_labels(x: torch.Tensor, labels: torch.Tensor) -> None:
    if x.dim() != 4:
        raise ValueError(f"mask_average_pool: features must be (B, C, H, W), got {tuple(x.shape)}")
    if labels.dim() != 3 or labels.shape[0] != x.shape[0] or labels.shape[1:] != x.shape[2:]:
        raise ValueError(
            f"mask_average_pool: labels must be (B, H, W) = {(x.shape[0], *x.shape[2:])}, got {tuple(labels.shape)}"
        )
    if labels.dtype.is_floating_point or labels.dtype == torch.bool:
        raise ValueError(f"mask_average_pool: labels must be an integer tensor, got {labels.dtype}")
    if labels.numel() and int(labels.min()) < 0:
        raise ValueError(f"mask_average_pool: labels must be >= 0, got min {int(labels.min())}")


def region_sums(x: torch.Tensor, labels: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample region sums ``(B*k, C)`` (float32 at least) and pixel counts ``(B*k,)``.

    Sample ``b``'s region ``i`` is row ``b*k + i``: one ``index_add_`` over offset ids for the whole
    batch. ``labels`` must be < ``k``.
    """
    _check_labels(x, labels)
    b, c, h, w = x.shape
    ids = labels.to(device=x.device, dtype=torch.long).reshape(b, h * w)
    # offset each sample's ids so that regions of different images never share a slot
    flat = (ids + torch.arange(b, device=x.device)[:, None] * k).reshape(-1)
    # sums in float32 at least: a float16 sum over a large region overflows (max 65504)
    acc = torch.promote_types(x.dtype, torch.float32)
    vals = x.permute(0, 2, 3, 1).reshape(-1, c).to(acc)
    sums = torch.zeros(b * k, c, dtype=acc, device=x.device).index_add_(0, flat, vals)
    return sums, torch.bincount(flat, minlength=b * k)


def means_table(sums: torch.Tensor, counts: torch.Tensor, b: int, dtype: torch.dtype) -> torch.Tensor:
    """``(B*k, C)`` sums and ``(B*k,)`` counts -> the ``(B, C, 1, k)`` table of means (0 where empty)."""
    means = (sums / counts.clamp(min=1).to(sums.dtype)[:, None]).to(dtype)
    return means.reshape(b, -1, sums.shape[1]).permute(0, 2, 1)[:, :, None, :]


def region_means(x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-sample, per-region channel means of ``x (B, C, H, W)`` over ``labels (B, H, W)``.

    Returns ``(B, C, 1, K)`` with ``K = max(labels) + 1`` over the batch (ids that no pixel of a
    sample has get 0). The 4-D shape lets the table travel as a ``PriorOutput`` feature (see
    ``MapNAFNet.prepare_prior``).
    """
    _check_labels(x, labels)
    k = int(labels.max()) + 1 if labels.numel() else 1
    sums, counts = region_sums(x, labels, k)
    return means_table(sums, counts, x.shape[0], x.dtype)


def gather_region_means(means: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Paint each pixel of ``labels (B, H, W)`` with its region's row of ``means (B, C, 1, K)``."""
    b, c, _, k = means.shape
    if labels.dim() != 3 or labels.shape[0] != b:
        raise ValueError(f"gather_region_means: labels must be (B={b}, H, W), got {tuple(labels.shape)}")
    ids = labels.to(device=means.device, dtype=torch.long)
    if ids.numel() and int(ids.max()) >= k:
        raise ValueError(f"gather_region_means: label {int(ids.max())} has no mean (table of {k} regions)")
    h, w = ids.shape[1:]
    table = means[:, :, 0, :].permute(0, 2, 1).reshape(b * k, c)
    flat = (ids.reshape(b, -1) + torch.arange(b, device=ids.device)[:, None] * k).reshape(-1)
    return table[flat].reshape(b, h, w, c).permute(0, 3, 1, 2)


def mask_average_pool(x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Replace each pixel of ``x (B, C, H, W)`` by the mean of ``x`` over its region.

    ``labels (B, H, W)`` integer region ids >= 0 (per image; ids need not be contiguous). Returns
    ``(B, C, H, W)``; differentiable with respect to ``x``.
    """
    _check_labels(x, labels)
    if x.numel() == 0:
        return x.clone()
    return gather_region_means(region_means(x, labels), labels)


def region_dropout(labels: torch.Tensor, p: float, *, generator: torch.Generator | None = None) -> torch.Tensor:
    """Merge ``floor(p * K)`` randomly chosen regions of each sample into one region.

    ``labels (B, H, W)`` integer ids >= 0; K = the number of distinct ids present in a sample. The
    merged region takes the id ``max(id) + 1`` of that sample (so it never coincides with a kept
    region). Returns a new tensor (the input is not modified). ``generator`` (a ``torch.Generator``
    on the CPU) makes the draw reproducible; without it the global RNG is used.
    """
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"region_dropout: p must be in [0, 1], got {p}")
    if labels.dim() != 3:
        raise ValueError(f"region_dropout: labels must be (B, H, W), got {tuple(labels.shape)}")
    out = labels.clone()
    if p == 0.0 or labels.numel() == 0:
        return out
    for i in range(labels.shape[0]):  # per sample: a draw of its own present regions
        present = torch.unique(labels[i])
        k = math.floor(p * present.numel())
        if k == 0:
            continue
        drop = present[torch.randperm(present.numel(), generator=generator)[:k].to(present.device)]
        merged = torch.isin(labels[i], drop)
        out[i][merged] = int(present.max()) + 1
    return out


class MapUnit(nn.Module):
    """SAM-Deblur's MAP front end: ``conv1x1(conv3x3(image))`` pooled per region.

    ``forward(image (B,3,H,W), labels (B,H,W)) -> (B, seg_channels, H, W)``. In training mode
    ``dropout`` > 0 applies :func:`region_dropout` first (SAM-Deblur uses p = 0.5; "MAP" without
    dropout is p = 0). No activation between the two convolutions, as in the official unit.
    """

    def __init__(self, *, in_channels: int = 3, seg_channels: int = 2, dropout: float = 0.5) -> None:
        super().__init__()
        if not 0.0 <= dropout <= 1.0:
            raise ValueError(f"MapUnit: dropout must be in [0, 1], got {dropout}")
        self.pre_seg = nn.Conv2d(in_channels, seg_channels, 3, padding=1)
        self.pre_seg_in = Conv1x1(seg_channels, seg_channels)
        self.dropout = dropout
        self.generator: torch.Generator | None = None  # set for reproducible training

    def seg(self, image: torch.Tensor) -> torch.Tensor:
        """The learned ``(B, seg_channels, H, W)`` map that is pooled."""
        return self.pre_seg_in(self.pre_seg(image))

    def forward(self, image: torch.Tensor, labels: torch.Tensor, means: torch.Tensor | None = None) -> torch.Tensor:
        """``means`` (from :func:`region_means` of :meth:`seg` on the whole image) replaces the
        pooling: tiles of an image then get the whole image's region means (inference only)."""
        if means is not None:
            return gather_region_means(means.to(image.dtype), labels).to(image.dtype)
        if self.training and self.dropout > 0:
            labels = region_dropout(labels, self.dropout, generator=self.generator)
        return mask_average_pool(self.seg(image), labels)
