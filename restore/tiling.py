"""Tiled inference with overlapping tiles and feathered blending, for images larger than memory allows.

Tiles of ``tile x tile`` pixels (rounded up to the network's ``multiple`` so interior tiles need no
padding) are placed evenly along each axis with at least ``overlap`` pixels between neighbours;
an axis no longer than the tile gets one tile of the axis' length (the network pads it itself).
Tiles are run in batches of ``batch_size``.

Blending: inside the overlap of two neighbours (``ov`` pixels) each tile's weight is a linear ramp
that is 0 on the ``margin = ov // 4`` pixels next to its own cut edge, 1 on the ``margin`` pixels
next to the neighbour's edge, and linear in between; the two weights of a pair sum to 1. Image
borders get no ramp. Output = sum(w * tile output) / sum(w). So a pixel never takes any weight from
a tile whose cut edge is closer than ``margin``: for a purely convolutional network with receptive
radius <= ``margin`` the tiled result equals whole-image inference everywhere (up to float
rounding; tested to 1e-5). NAFNet's simplified channel attention pools globally, so each tile sees
its own channel statistics and the result is not exactly local: for a random width-8 two-level
NAFNet (beta/gamma ~ N(0, 0.1)) on a 96x80 image with tile 48, overlap 16, the largest absolute
difference to whole-image inference is 5.7e-4 on the [0, 1] scale (asserted < 2e-3 in
``tests/restore/test_restore_tiling.py::test_nafnet_tiling_bound``). Trained networks with larger
SCA weights can differ more; use bigger tiles (``--tile``) where it matters. The MAP unit's region
means are exact: the inference engine computes them on the whole image first
(``MapNAFNet.prepare_prior``) and every tile paints its pixels from that table.

The prior runs once on the whole image: each tile gets the cropped label map and the *full*
feature maps plus ``meta["regions"] = [(y0, x0, H, W), ...]`` telling the network where the tile
sits, so feature conditioning is image-aligned (``restore/archs/fusion.py``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from robustsam_prior.prior import PriorOutput

# fn(image tiles (N,3,h,w), prior tiles | None) -> (N,3,h,w)
TileFn = Callable[[torch.Tensor, PriorOutput | None], torch.Tensor]


@dataclass(frozen=True)
class TileSpec:
    """Tiling settings: tile size, minimum overlap, tiles per batch, network size multiple."""

    tile: int = 512
    overlap: int = 32
    batch_size: int = 2
    multiple: int = 16

    def __post_init__(self) -> None:
        if self.tile < 1 or self.batch_size < 1 or self.multiple < 1:
            raise ValueError(f"TileSpec: tile, batch_size and multiple must be >= 1, got {self}")
        if not 0 <= self.overlap < self.padded_tile / 2:
            raise ValueError(
                f"TileSpec: overlap must be in [0, tile/2) = [0, {self.padded_tile / 2:g}), got {self.overlap}"
            )

    @property
    def padded_tile(self) -> int:
        """The tile size rounded up to the network's multiple."""
        return math.ceil(self.tile / self.multiple) * self.multiple


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Evenly spaced starts of tiles of size ``tile`` covering ``[0, length)`` with >= ``overlap``."""
    if length <= tile:
        return [0]
    n = 1 + math.ceil((length - tile) / (tile - overlap))
    step = (length - tile) / (n - 1)
    return sorted({round(i * step) for i in range(n)})


def axis_weights(starts: list[int], size: int, length: int) -> list[torch.Tensor]:
    """1-D blending weights (float64, one ``(size,)`` tensor per tile) as described above."""
    ws = []
    for k, s in enumerate(starts):
        w = torch.ones(size, dtype=torch.float64)
        if k > 0:  # overlap with the previous tile: ramp up
            ov = starts[k - 1] + size - s
            w[:ov] = torch.minimum(w[:ov], _ramp(ov))
        if k + 1 < len(starts):  # overlap with the next tile: ramp down
            ov = s + size - starts[k + 1]
            w[size - ov :] = torch.minimum(w[size - ov :], _ramp(ov).flip(0))
        ws.append(w)
    return ws


def _ramp(ov: int) -> torch.Tensor:
    m = ov // 4
    i = torch.arange(ov, dtype=torch.float64)
    return ((i - m + 0.5) / max(ov - 2 * m, 1)).clamp(0, 1)


def crop_prior(prior: PriorOutput, boxes: list[tuple[int, int, int, int]], full_hw: tuple[int, int]) -> PriorOutput:
    """Prior of a batch of tiles of a single image: cropped labels, full features, tile regions."""
    h, w = full_hw
    labels = torch.stack([prior.labels[0, y0:y1, x0:x1] for y0, y1, x0, x1 in boxes])
    n = len(boxes)
    feats = {k: v[:1].expand(n, *v.shape[1:]) for k, v in prior.features.items()}
    meta = dict(prior.meta)
    meta["regions"] = [(y0, x0, h, w) for y0, _, x0, _ in boxes]
    return PriorOutput(labels, feats, meta)


@torch.no_grad()
def tiled_forward(
    fn: TileFn, image: torch.Tensor, prior: PriorOutput | None = None, spec: TileSpec | None = None
) -> torch.Tensor:
    """Run ``fn`` over overlapping tiles of ``image (B,3,H,W)`` and blend; returns ``(B,3,H,W)``.

    ``prior`` (for the whole image, batch B) is cropped per tile. Output dtype float32 on the
    image's device; tiles are computed in ``fn``'s precision.
    """
    spec = spec or TileSpec()
    if image.dim() != 4:
        raise ValueError(f"tiled_forward: image must be (B, C, H, W), got {tuple(image.shape)}")
    b, _, h, w = image.shape
    if prior is not None and (prior.labels.shape[0] != b or tuple(prior.labels.shape[1:]) != (h, w)):
        raise ValueError(f"tiled_forward: prior labels {tuple(prior.labels.shape)} do not match image {(b, h, w)}")
    t = spec.padded_tile
    th, tw = min(t, h), min(t, w)
    ys, xs = tile_starts(h, th, spec.overlap), tile_starts(w, tw, spec.overlap)
    wy, wx = axis_weights(ys, th, h), axis_weights(xs, tw, w)
    boxes = [(y, y + th, x, x + tw, i, j) for i, y in enumerate(ys) for j, x in enumerate(xs)]
    outs = []
    for bi in range(b):
        img = image[bi : bi + 1]
        pr = prior.index(bi) if prior is not None else None
        acc = None
        wsum = torch.zeros(1, 1, h, w, dtype=torch.float32, device=image.device)
        for start in range(0, len(boxes), spec.batch_size):
            chunk = boxes[start : start + spec.batch_size]
            tiles = torch.cat([img[..., y0:y1, x0:x1] for y0, y1, x0, x1, _, _ in chunk])
            tprior = crop_prior(pr, [c[:4] for c in chunk], (h, w)) if pr is not None else None
            res = fn(tiles, tprior).float()
            if acc is None:
                acc = torch.zeros(1, res.shape[1], h, w, dtype=torch.float32, device=image.device)
            for k, (y0, y1, x0, x1, i, j) in enumerate(chunk):
                wt = (wy[i][:, None] * wx[j][None, :]).to(device=image.device, dtype=torch.float32)
                acc[0, :, y0:y1, x0:x1] += res[k] * wt
                wsum[0, 0, y0:y1, x0:x1] += wt
        outs.append(acc / wsum.clamp_min(1e-12))
    return torch.cat(outs)
