"""Feature fusion: spatial feature transform (SFT) of the backbone by the prior's feature maps.

Beyond what SAM-Deblur and the SAM-prior dehazing method do (they feed only masks), the backbone
is conditioned on RobustSAM's feature maps (``image_embedding`` (B,256,64,64),
``robust_mask_features`` (B,32,256,256)) with an SFT layer (Wang et al., CVPR 2018, "Recovering
Realistic Texture ... by Deep Spatial Feature Transform"): per pixel, ``x * (1 + scale) + shift``,
where ``scale`` and ``shift`` come from the prior.

Each named feature map is first projected by a 1x1 convolution to ``hidden`` channels (at the
feature's own resolution, which is cheap), then resampled bilinearly onto each encoder level and
summed over the features. The resampling is *image-aligned*: level pixel ``(i, j)`` of a
``stride``-downsampled level samples the feature map at the image position of its centre,
``(y0 + (i + .5) * stride, x0 + (j + .5) * stride)`` in an image of size ``(H, W)`` that the
feature map covers (``align_corners=False`` convention, border values beyond the image). For the
whole image (``y0 = x0 = 0``) and ``H, W`` divisible by the stride this equals
``F.interpolate(f, (H // stride, W // stride), mode="bilinear")``; for a tile, ``(y0, x0, H, W)`` place the
tile in the full image so tiled inference uses exactly the same conditioning as whole-image
inference while the feature maps are computed once per image. Any feature size is accepted.

The scale/shift convolutions start at zero, so an untrained fusion is the identity.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .nafnet_arch import Conv1x1

# (y0, x0, H, W): where a (tile) image sits in the full image its prior features cover
Region = tuple[int, int, int, int]


def aligned_grid(
    out_hw: tuple[int, int], stride: int, regions: Sequence[Region], *, device=None, dtype=torch.float32
) -> torch.Tensor:
    """Sampling grid ``(B, h, w, 2)`` (x, y in [-1, 1]) for ``F.grid_sample(align_corners=False)``.

    Pixel ``(i, j)`` of a level with ``stride`` maps to image position ``(y0 + (i+.5)*stride,
    x0 + (j+.5)*stride)`` normalised by the full image size ``(H, W)`` of each region.
    """
    h, w = out_hw
    r = torch.tensor(regions, dtype=torch.float64, device=device)  # (B, 4)
    ii = (torch.arange(h, dtype=torch.float64, device=device) + 0.5) * stride
    jj = (torch.arange(w, dtype=torch.float64, device=device) + 0.5) * stride
    gy = 2 * (r[:, 0, None] + ii[None]) / r[:, 2, None] - 1  # (B, h)
    gx = 2 * (r[:, 1, None] + jj[None]) / r[:, 3, None] - 1  # (B, w)
    grid = torch.stack(torch.broadcast_tensors(gx[:, None, :], gy[:, :, None]), dim=-1)
    return grid.to(dtype)


class SFTFusion(nn.Module):
    """SFT conditioning of encoder levels on named prior feature maps.

    ``feature_channels``: feature name -> its channel count (e.g. ``{"robust_mask_features": 32}``).
    ``level_channels``: channels of each modulated encoder level. ``__call__`` is split into
    :meth:`prepare` (project the features once) and :meth:`modulate` (per level).
    """

    def __init__(
        self, *, feature_channels: Mapping[str, int], level_channels: Sequence[int], hidden: int = 16
    ) -> None:
        super().__init__()
        if not feature_channels:
            raise ValueError("SFTFusion needs at least one feature name -> channels entry")
        self.feature_channels = dict(feature_channels)
        self.proj = nn.ModuleDict({k: Conv1x1(c, hidden) for k, c in self.feature_channels.items()})
        self.scale = nn.ModuleList(Conv1x1(hidden, c) for c in level_channels)
        self.shift = nn.ModuleList(Conv1x1(hidden, c) for c in level_channels)
        for conv in [*self.scale, *self.shift]:
            nn.init.zeros_(conv.weight)
            nn.init.zeros_(conv.bias)

    def prepare(self, features: Mapping[str, torch.Tensor]) -> list[torch.Tensor]:
        """Project the available features to ``hidden`` channels; missing names are skipped."""
        projected = []
        for name, conv in self.proj.items():
            f = features.get(name)
            if f is None:
                continue
            if f.shape[1] != self.feature_channels[name]:
                raise ValueError(
                    f"prior feature {name!r} has {f.shape[1]} channels, the network expects "
                    f"{self.feature_channels[name]} (was it trained with another prior?)"
                )
            projected.append(conv(f.to(conv.weight.dtype)))
        return projected

    def modulate(
        self, level: int, x: torch.Tensor, projected: list[torch.Tensor], regions: Sequence[Region]
    ) -> torch.Tensor:
        """``x (B, C_level, h, w)`` -> ``x * (1 + scale) + shift``; identity if nothing projected."""
        if not projected:
            return x
        stride = 2**level
        grid = aligned_grid(x.shape[-2:], stride, regions, device=x.device, dtype=x.dtype)
        cond = None
        for p in projected:
            if p.shape[0] != x.shape[0]:
                p = p.expand(x.shape[0], -1, -1, -1)
            s = F.grid_sample(p, grid, mode="bilinear", padding_mode="border", align_corners=False)
            cond = s if cond is None else cond + s
        cond = F.leaky_relu(cond, 0.1)
        return x * (1 + self.scale[level](cond)) + self.shift[level](cond)
