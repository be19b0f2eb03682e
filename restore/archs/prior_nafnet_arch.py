"""The named restoration networks: ``nafnet``, ``map_nafnet``, ``fusion_nafnet``.

All take ``forward(image (B,3,H,W) float in [0,1], prior: PriorOutput | None) -> (B,3,H,W)`` of the
input's size (any size; padded internally to a multiple of ``2 ** levels``) and expose
``needs_prior`` and ``uses_features``. Each takes ``head="residual" | "scattering"`` (the output
head, see :mod:`restore.archs.nafnet_arch`).

- ``nafnet``: the NAFNet backbone alone, no prior (the ablation).
- ``map_nafnet``: SAM-Deblur (arXiv 2309.02270): the MAP unit's ``seg_channels`` region-pooled maps
  are concatenated to the RGB input (``intro`` takes 3 + S channels), region dropout p in training.
- ``fusion_nafnet``: ``map_nafnet`` plus SFT conditioning of every encoder level on the prior's
  feature maps (:mod:`restore.archs.fusion`). Runs on a prior without features (e.g. ``regions``)
  by using only its labels. ``feature_frame="sam"`` (default) places the maps as the
  ``robustsam``/``sam`` priors produce them (SAM's padded square frame).

For tiled inference a prior's ``meta["regions"]`` may hold one ``(y0, x0, H, W)`` per sample: where
the sample (a tile) sits in the full image that the features cover (see ``fusion.py``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import torch
from torch import nn

from ._registry import ARCHS
from .fusion import SFTFusion
from .map_unit import MapUnit, means_table, region_sums
from .nafnet_arch import NAFNet

if TYPE_CHECKING:
    from robustsam_prior.prior import PriorOutput

ARCHS.add("nafnet", NAFNet)

# RobustSAM's prompt-independent features and their channel counts
DEFAULT_FEATURES = {"robust_mask_features": 32, "image_embedding": 256}
# where a feature map lies on the image: "sam" = SAM's frame (the image resized so its longest side
# fills the encoder input, zero-padded bottom/right to a square: the map covers a max(H, W) square
# anchored at the top-left corner); "image" = the map spans exactly the image
FEATURE_FRAMES = ("sam", "image")
# the feature name under which prepare_prior passes whole-image MAP region means to tiles
MAP_MEANS = "map_region_means"


def _labels(prior: PriorOutput | None, image: torch.Tensor, name: str) -> torch.Tensor:
    if prior is None:
        raise ValueError(f"{name} needs a prior (labels (B,H,W)); got None. Use --prior regions|robustsam|sam|none")
    labels = prior.labels
    if labels.shape[0] != image.shape[0] or labels.shape[1:] != image.shape[2:]:
        raise ValueError(
            f"{name}: prior labels {tuple(labels.shape)} do not match the image "
            f"{(image.shape[0], *image.shape[2:])}"
        )
    return labels.to(image.device)


@ARCHS.register("map_nafnet")
class MapNAFNet(nn.Module):
    """SAM-Deblur's SegNAFNet: MAP unit + NAFNet (bugs of the official code fixed, see ``map_unit``)."""

    needs_prior = True
    uses_features: tuple[str, ...] = ()

    def __init__(
        self,
        *,
        width: int = 16,
        enc_blocks: Sequence[int] = (1, 1, 1, 1),
        middle_blocks: int = 1,
        dec_blocks: Sequence[int] = (1, 1, 1, 1),
        seg_channels: int = 2,
        region_dropout: float = 0.5,
        head: str = "residual",
        guided_radius: int = 0,
        guided_eps: float = 1e-5,
    ) -> None:
        super().__init__()
        self.map = MapUnit(seg_channels=seg_channels, dropout=region_dropout)
        self.backbone = NAFNet(
            in_channels=3 + seg_channels,
            width=width,
            enc_blocks=enc_blocks,
            middle_blocks=middle_blocks,
            dec_blocks=dec_blocks,
            head=head,
            guided_radius=guided_radius,
            guided_eps=guided_eps,
        )
        self.multiple = self.backbone.multiple

    def prepare_prior(self, image: torch.Tensor, prior: PriorOutput, *, rows: int = 256) -> PriorOutput:
        """Add the whole image's MAP region means as feature ``map_region_means`` (B, S, 1, K).

        Called by the inference engine before tiling, so that every tile pools over whole regions,
        not over the part of a region inside the tile (inference only; no region dropout). The
        learned map is computed ``rows`` image rows at a time (with a 1-row halo for its 3x3
        convolution, so the sums are exact) to keep memory bounded on very large images.
        """
        from robustsam_prior.prior import PriorOutput

        labels = _labels(prior, image, type(self).__name__)
        b, _, h, _ = image.shape
        k = int(labels.max()) + 1
        sums, counts = None, None
        for y0 in range(0, h, rows):
            y1 = min(h, y0 + rows)
            top, bottom = max(0, y0 - 1), min(h, y1 + 1)
            seg = self.map.seg(image[..., top:bottom, :])[..., y0 - top : y0 - top + y1 - y0, :]
            s, c = region_sums(seg, labels[:, y0:y1], k)
            sums, counts = (s, c) if sums is None else (sums + s, counts + c)
        means = means_table(sums, counts, b, image.dtype)
        return PriorOutput(prior.labels, {**prior.features, MAP_MEANS: means}, dict(prior.meta))

    def _input(self, image: torch.Tensor, prior: PriorOutput | None) -> torch.Tensor:
        labels = _labels(prior, image, type(self).__name__)
        means = None if self.training else prior.features.get(MAP_MEANS)
        return torch.cat([image, self.map(image, labels, means)], dim=1)

    def forward(self, image: torch.Tensor, prior: PriorOutput | None) -> torch.Tensor:
        return self.backbone.run(self._input(image, prior), image)


@ARCHS.register("fusion_nafnet")
class FusionNAFNet(MapNAFNet):
    """MAP + SFT feature fusion at every encoder level."""

    def __init__(
        self,
        *,
        width: int = 16,
        enc_blocks: Sequence[int] = (1, 1, 1, 1),
        middle_blocks: int = 1,
        dec_blocks: Sequence[int] = (1, 1, 1, 1),
        seg_channels: int = 2,
        region_dropout: float = 0.5,
        feature_channels: Mapping[str, int] | None = None,
        fusion_channels: int = 16,
        feature_frame: str = "sam",
        head: str = "residual",
        guided_radius: int = 0,
        guided_eps: float = 1e-5,
    ) -> None:
        super().__init__(
            width=width,
            enc_blocks=enc_blocks,
            middle_blocks=middle_blocks,
            dec_blocks=dec_blocks,
            seg_channels=seg_channels,
            region_dropout=region_dropout,
            head=head,
            guided_radius=guided_radius,
            guided_eps=guided_eps,
        )
        feature_channels = dict(DEFAULT_FEATURES if feature_channels is None else feature_channels)
        self.fusion = SFTFusion(
            feature_channels=feature_channels,
            level_channels=self.backbone.level_channels,
            hidden=fusion_channels,
        )
        if feature_frame not in FEATURE_FRAMES:
            raise ValueError(f"feature_frame must be one of {FEATURE_FRAMES}, got {feature_frame!r}")
        self.feature_frame = feature_frame
        self.uses_features = tuple(feature_channels)

    def forward(self, image: torch.Tensor, prior: PriorOutput | None) -> torch.Tensor:
        x = self._input(image, prior)
        projected = self.fusion.prepare({k: v.to(image.device) for k, v in prior.features.items()})
        if not projected:  # a prior without (these) features: labels only
            return self.backbone.run(x, image)
        h, w = image.shape[-2:]
        regions = prior.meta.get("regions") or [(0, 0, h, w)] * image.shape[0]
        if len(regions) != image.shape[0]:
            raise ValueError(f"prior.meta['regions'] has {len(regions)} entries for a batch of {image.shape[0]}")
        if self.feature_frame == "sam":  # the maps cover a max(H, W) square anchored top-left
            regions = [(y0, x0, max(fh, fw), max(fh, fw)) for y0, x0, fh, fw in regions]

        def modulate(level: int, feats: torch.Tensor) -> torch.Tensor:
            return self.fusion.modulate(level, feats, projected, regions)

        return self.backbone.run(x, image, modulate)
