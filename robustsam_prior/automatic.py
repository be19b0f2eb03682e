"""Automatic masks on the RobustSAM path and their conversion to a region label map.

:class:`RobustSamAutomaticMaskGenerator` is ``segment_anything``'s ``SamAutomaticMaskGenerator``
(grid point prompts, IoU and stability filtering, box NMS, crops, RLE, small-region clean-up from
``segment_anything.utils.amg``) with its predictor replaced by a :class:`RobustSamPredictor`, so
every prompt batch runs the robust path (the official generator silently runs vanilla
SAM).

:func:`masks_to_label_map` turns overlapping masks into a partition (the region map a prior emits).
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

import numpy as np
from segment_anything import SamAutomaticMaskGenerator
from segment_anything.utils.amg import rle_to_mask

from .automatic_limits import check_generator_options
from .modeling.robustsam import RobustSam
from .predictor import RobustSamPredictor

_SAM_DEFAULTS = {
    name: p.default
    for name, p in inspect.signature(SamAutomaticMaskGenerator.__init__).parameters.items()
    if p.default is not inspect.Parameter.empty
}


class RobustSamAutomaticMaskGenerator(SamAutomaticMaskGenerator):
    """``SamAutomaticMaskGenerator(model, **options)`` on ``path`` ("robust" by default or "sam").

    Options and output (``generate(uint8 HxWx3 RGB) -> list[dict]`` with ``segmentation``, ``area``,
    ``bbox`` XYWH, ``predicted_iou``, ``point_coords``, ``stability_score``, ``crop_box``) are
    ``segment_anything``'s. Meta's defaults (``pred_iou_thresh=0.88``,
    ``stability_score_thresh=0.95``) were tuned for SAM ViT-H. Sizes and thresholds outside the
    bounds of :func:`~robustsam_prior.automatic_limits.check_generator_options` raise ``ValueError``.
    ``keep_encoding`` is the predictor's (:class:`RobustSamPredictor`): the encoder outputs of the latest
    crop stay in ``self.predictor.last_encoding`` after :meth:`generate`.
    """

    def __init__(
        self,
        model: RobustSam,
        *,
        path: str = "robust",
        progress: bool = False,
        keep_encoding: bool = False,
        **options: Any,
    ) -> None:
        # sizes are bounded before the parent allocates its point grids (automatic_limits says why)
        check_generator_options(**{**_SAM_DEFAULTS, **options})
        super().__init__(model, **options)
        self.predictor = RobustSamPredictor(model, path=path, keep_encoding=keep_encoding)
        # a bar over the point prompts of generate(): on a CPU each ViT-B prompt costs ~0.2 s, so a
        # 32x32 grid runs for minutes (benchmarks/prior_speed.py --amg)
        self.progress = progress
        self._bar: Any = None

    def generate(self, image: np.ndarray) -> list[dict[str, Any]]:
        if not self.progress:
            return super().generate(image)
        from segment_anything.utils.amg import generate_crop_boxes

        from robustsam_prior.progress import progress_bar

        _, layers = generate_crop_boxes(image.shape[:2], self.crop_n_layers, self.crop_overlap_ratio)
        total = sum(len(self.point_grids[layer]) for layer in layers)
        with progress_bar(total=total, desc="automatic masks", unit="prompt", leave=False) as self._bar:
            try:
                return super().generate(image)
            finally:
                self._bar = None

    def _process_batch(self, points: np.ndarray, *args: Any, **kwargs: Any) -> Any:
        data = super()._process_batch(points, *args, **kwargs)
        if self._bar is not None:
            self._bar.update(len(points))
        return data


def _segmentation(mask: Any, index: int) -> np.ndarray:
    seg = mask.get("segmentation") if isinstance(mask, dict) else mask
    if seg is None:
        raise ValueError(f"mask {index}: dict without a 'segmentation' entry")
    if isinstance(seg, dict):  # RLE
        if isinstance(seg.get("counts"), list):
            return rle_to_mask(seg)
        try:
            from pycocotools import mask as mask_utils
        except ImportError as e:
            raise ValueError(
                f"mask {index}: COCO RLE needs pycocotools; generate with output_mode='binary_mask' "
                "or 'uncompressed_rle'"
            ) from e
        return mask_utils.decode(seg).astype(bool)
    arr = np.asarray(seg)
    if arr.ndim != 2:
        raise ValueError(f"mask {index}: expected an HxW mask, got shape {arr.shape}")
    return arr.astype(bool)


def masks_to_label_map(
    masks: Sequence[dict[str, Any]] | np.ndarray,
    shape: tuple[int, int] | None = None,
    *,
    return_sources: bool = False,
) -> np.ndarray | tuple[np.ndarray, list[int]]:
    """Partition an image into non-overlapping regions from possibly overlapping masks.

    ``masks``: the generator's list of dicts (``segmentation`` as a bool array or RLE, optional
    ``predicted_iou``) or a bool array (N, H, W). ``shape`` (H, W) is required when there are no masks.

    Rule: each pixel goes to the **smallest** mask covering it (so parts nested in a larger mask keep
    their own region); equal areas are decided by the higher ``predicted_iou``, then the lower index.
    Pixels no mask covers form one extra region together. A mask that ends up owning no pixel gets no
    region. Region ids are compacted to 0..K-1 in the order in which the regions first appear in a
    row-major scan, so the map does not depend on the order of the input masks.

    Returns an int32 (H, W) array; with ``return_sources`` also a list of length K giving, for each
    region id, the index of its source mask (-1 for the uncovered region).
    """
    if isinstance(masks, np.ndarray) and masks.ndim == 3:
        arrays = [m.astype(bool) for m in masks]
        scores = [0.0] * len(arrays)
    else:
        arrays = [_segmentation(m, i) for i, m in enumerate(masks)]
        scores = [float(m.get("predicted_iou", 0.0)) if isinstance(m, dict) else 0.0 for m in masks]
    if shape is None:
        if not arrays:
            raise ValueError("masks_to_label_map: no masks and no shape given")
        shape = arrays[0].shape
    shape = (int(shape[0]), int(shape[1]))
    for i, m in enumerate(arrays):
        if m.shape != shape:
            raise ValueError(f"mask {i} has shape {m.shape}, expected {shape}")
    n = len(arrays)
    areas = [int(m.sum()) for m in arrays]
    priority = sorted(range(n), key=lambda i: (areas[i], -scores[i], i))
    owner = np.full(shape, n, dtype=np.int64)  # n = uncovered
    for i in reversed(priority):  # paint the lowest priority first; higher priorities overwrite
        owner[arrays[i]] = i
    flat = owner.ravel()
    values, first, inverse = np.unique(flat, return_index=True, return_inverse=True)
    order = np.argsort(first, kind="stable")
    rank = np.empty(len(values), dtype=np.int64)
    rank[order] = np.arange(len(values))
    labels = rank[inverse].reshape(shape).astype(np.int32)
    if not return_sources:
        return labels
    sources = [int(v) if v < n else -1 for v in values[order]]
    return labels, sources
