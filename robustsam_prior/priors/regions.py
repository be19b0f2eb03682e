"""The ``regions`` prior: a classical over-segmentation that needs no weights.

Pipeline per image (all cheap, so the default restoration models stay above 1 megapixel/s):

1. downscale with area averaging so the longest side is at most ``working_size`` (never upscale);
2. contrast normalisation: a per-channel percentile stretch (``stretch_percentiles``, default 1 %
   and 99 %) so that haze, which lifts the black level and compresses the range, does not wash the
   regions out; a flat channel is left as is;
3. scikit-image SLIC (``method="slic"``; k-means in CIELAB on (colour, position)) or the
   Felzenszwalb-Huttenlocher graph segmentation (``method="felzenszwalb"``);
4. relabel to compact ids 0..K-1 and upsample the label map to the input size with nearest
   sampling.

No features are returned. Measured on 2 CPU cores: see ``benchmarks/prior_speed_regions.py``.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from ..prior import PRIORS, Prior, PriorOutput

METHODS = ("slic", "felzenszwalb")
CONTRAST = ("stretch", "none")


def stretch_contrast(image: np.ndarray, low: float = 1.0, high: float = 99.0) -> np.ndarray:
    """Per-channel percentile stretch of an ``HxWx3`` float image to [0, 1].

    Values at the ``low``-th percentile map to 0 and at the ``high``-th to 1 (clipped). A channel
    whose percentiles coincide (flat) is returned unchanged.
    """
    out = np.empty_like(image, dtype=np.float32)
    flat = image.reshape(-1, image.shape[-1])
    lo, hi = np.percentile(flat, [low, high], axis=0)
    for c in range(image.shape[-1]):
        span = hi[c] - lo[c]
        if span <= 1e-6:
            out[..., c] = image[..., c]
        else:
            out[..., c] = np.clip((image[..., c] - lo[c]) / span, 0.0, 1.0)
    return out


def compact_labels(labels: np.ndarray) -> np.ndarray:
    """Map the ids of an integer label map to 0..K-1 in order of first appearance-free id order."""
    labels = np.asarray(labels)
    if labels.size == 0:
        return labels.astype(np.int32)
    lo = int(labels.min())
    shifted = labels.astype(np.int64) - lo
    present = np.bincount(shifted.ravel()) > 0
    lut = np.cumsum(present) - 1
    return lut[shifted].astype(np.int32)


def upsample_nearest(labels: np.ndarray, height: int, width: int) -> np.ndarray:
    """Nearest-neighbour resize of an ``h x w`` label map to ``height x width`` (pixel centres aligned)."""
    h, w = labels.shape
    if (h, w) == (height, width):
        return labels
    rows = np.minimum(((np.arange(height) + 0.5) * (h / height)).astype(np.int64), h - 1)
    cols = np.minimum(((np.arange(width) + 0.5) * (w / width)).astype(np.int64), w - 1)
    return labels[rows[:, None], cols[None, :]]


@PRIORS.register("regions")
class RegionsPrior(Prior):
    """Weight-free over-segmentation prior (see module docstring).

    Options: ``method`` ("slic" | "felzenszwalb"); ``n_segments`` and ``compactness`` (SLIC);
    ``scale`` (Felzenszwalb, at the working resolution); ``working_size`` (longest side, pixels,
    at which the segmentation runs); ``stretch_percentiles`` (low, high) of the contrast stretch;
    ``contrast`` ("stretch", the default, or "none" to switch the normalisation off for ablations).
    """

    name = "regions"

    def __init__(
        self,
        *,
        method: str = "slic",
        n_segments: int = 100,
        compactness: float = 10.0,
        scale: float = 100.0,
        working_size: int = 256,
        stretch_percentiles: tuple[float, float] | list[float] = (1.0, 99.0),
        contrast: str = "stretch",
    ) -> None:
        if method not in METHODS:
            raise ValueError(f"regions prior: method must be one of {METHODS}, got {method!r}")
        if contrast not in CONTRAST:
            raise ValueError(f"regions prior: contrast must be one of {CONTRAST}, got {contrast!r}")
        if int(n_segments) < 1:
            raise ValueError(f"regions prior: n_segments must be >= 1, got {n_segments}")
        if not compactness > 0 or not scale > 0:
            raise ValueError(f"regions prior: compactness and scale must be > 0, got {compactness}, {scale}")
        if int(working_size) < 8:
            raise ValueError(f"regions prior: working_size must be >= 8 pixels, got {working_size}")
        low, high = (float(p) for p in stretch_percentiles)
        if not 0.0 <= low < high <= 100.0:
            raise ValueError(
                f"regions prior: stretch_percentiles must satisfy 0 <= low < high <= 100, got {stretch_percentiles}"
            )
        super().__init__(
            method=method,
            n_segments=int(n_segments),
            compactness=float(compactness),
            scale=float(scale),
            working_size=int(working_size),
            stretch_percentiles=[low, high],
            contrast=contrast,
        )

    @property
    def meta(self) -> dict:
        import skimage

        return {**super().meta, "skimage": skimage.__version__}

    def forward(self, images: torch.Tensor) -> PriorOutput:
        b, _, h, w = images.shape
        maps = [self.segment(images[i : i + 1]) for i in range(b)]
        labels = torch.from_numpy(np.stack(maps)).to(images.device)
        return PriorOutput(labels, {}, self.meta)

    def working_shape(self, height: int, width: int) -> tuple[int, int]:
        """The ``(h, w)`` the segmentation runs at: longest side <= ``working_size``, aspect kept."""
        s = min(1.0, self.options["working_size"] / max(height, width))
        return max(1, round(height * s)), max(1, round(width * s))

    def segment(self, image: torch.Tensor) -> np.ndarray:
        """Label map ``(H, W)`` int32, ids 0..K-1, for one image ``(1, 3, H, W)`` in [0, 1]."""
        _, _, h, w = image.shape
        sh, sw = self.working_shape(h, w)
        small = image.detach().float()
        if (sh, sw) != (h, w):
            # area averaging = anti-aliased downscale; done in torch (on the image's device) to avoid
            # a full-size numpy copy
            small = F.interpolate(small, size=(sh, sw), mode="area")
        arr = np.ascontiguousarray(small[0].permute(1, 2, 0).cpu().numpy())
        if self.options["contrast"] == "stretch":
            arr = stretch_contrast(arr, *self.options["stretch_percentiles"])
        labels = self._segment_small(arr)
        return upsample_nearest(compact_labels(labels), h, w)

    def _segment_small(self, arr: np.ndarray) -> np.ndarray:
        from skimage.segmentation import felzenszwalb, slic

        o = self.options
        if o["method"] == "slic":
            n = min(o["n_segments"], arr.shape[0] * arr.shape[1])
            return slic(arr, n_segments=n, compactness=o["compactness"], start_label=0, channel_axis=-1)
        # Felzenszwalb: the minimum region size scales with the working area (0.1 % of it)
        min_size = max(1, math.ceil(arr.shape[0] * arr.shape[1] / 1000))
        return felzenszwalb(arr, scale=o["scale"], sigma=0.8, min_size=min_size, channel_axis=-1)
