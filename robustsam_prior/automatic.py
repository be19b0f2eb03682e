"""Automatic masks on the RobustSAM path and their conversion to a region label map.

:class:`RobustSamAutomaticMaskGenerator` is ``segment_anything``'s ``SamAutomaticMaskGenerator``
(grid point prompts, IoU and stability filtering, box NMS, crops, RLE, small-region clean-up from
``segment_anything.utils.amg``) with its predictor replaced by a :class:`RobustSamPredictor`, so
every prompt batch runs the robust path (the official generator silently runs vanilla
SAM).

:func:`masks_to_label_map` turns overlapping masks into a partition (the region map a prior emits).

After :meth:`RobustSamAutomaticMaskGenerator.generate`, ``generator.filter_counts`` says how many
candidate masks each of SAM's filters let through, in order: ``candidates`` (3 per grid point),
``pred_iou_thresh``, ``stability_score_thresh``, ``crop_edge`` (masks touching a crop's inner edge),
``box_nms`` (duplicates within a crop), ``crop_nms`` (duplicates between crops) and
``min_mask_region_area`` (small-region clean-up and its NMS); :func:`explain_no_masks` turns them into
the sentence a user reads when nothing is left.
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

# SAM's filters in the order they run (RobustSamAutomaticMaskGenerator.filter_counts)
FILTERS = ("pred_iou_thresh", "stability_score_thresh", "crop_edge", "box_nms", "crop_nms", "min_mask_region_area")

_SAM_DEFAULTS = {
    name: p.default
    for name, p in inspect.signature(SamAutomaticMaskGenerator.__init__).parameters.items()
    if p.default is not inspect.Parameter.empty
}

SCORE_FILTERS = ("pred_iou_thresh", "stability_score_thresh")
# The score filters per trained-here variant. robustsam-tiny's IoU head and masks are not calibrated like
# SAM's: on its validation images its predicted IoUs have a median of 0.22-0.32 and its stability scores
# 0.21-0.40 (restore/weights/TRAINING.md), so Meta's thresholds keep no mask at all. Without score filters
# its candidates are still deduplicated by box NMS; this is how the robustsam-dehaze prior runs it.
TRAINED_HERE_SCORE_FILTERS = {"robustsam-tiny": {"pred_iou_thresh": 0.0, "stability_score_thresh": 0.0}}


def score_filters_for(config: Any, **given: float | None) -> dict[str, float]:
    """``pred_iou_thresh`` and ``stability_score_thresh`` for automatic masks of a model of architecture
    ``config`` (a variant name, a dict of sizes, a ``RobustSamConfig`` or ``None``): each one ``given`` (not
    ``None``) as it is, else its variant's entry in :data:`TRAINED_HERE_SCORE_FILTERS`, else Meta's default
    (0.88, 0.95; tuned for SAM ViT-H)."""
    from .modeling.build import config_name, resolve_config

    name = None
    if config is not None:
        try:
            name = config_name(resolve_config(config))
        except (ValueError, TypeError):  # not a known architecture: no variant of its own
            name = None
    own = TRAINED_HERE_SCORE_FILTERS.get(name) if name else None
    defaults = dict(own) if own else {k: float(_SAM_DEFAULTS[k]) for k in SCORE_FILTERS}
    return {k: defaults[k] if given.get(k) is None else given[k] for k in SCORE_FILTERS}


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
        self.filter_counts: dict[str, int] = dict.fromkeys(("candidates", *FILTERS), 0)
        self.best_scores: dict[str, float] = {}

    def generate(self, image: np.ndarray) -> list[dict[str, Any]]:
        self.filter_counts = dict.fromkeys(("candidates", *FILTERS), 0)
        # the best scores among the candidates each threshold saw, for explain_no_masks
        self.best_scores = {}
        if not self.progress:
            records = super().generate(image)
        else:
            from segment_anything.utils.amg import generate_crop_boxes

            from robustsam_prior.core.progress import progress_bar

            _, layers = generate_crop_boxes(image.shape[:2], self.crop_n_layers, self.crop_overlap_ratio)
            total = sum(len(self.point_grids[layer]) for layer in layers)
            with progress_bar(total=total, desc="automatic masks", unit="prompt", leave=False) as self._bar:
                try:
                    records = super().generate(image)
                finally:
                    self._bar = None
        self.filter_counts["min_mask_region_area"] = len(records)
        return records

    def _generate_masks(self, image: np.ndarray) -> Any:
        data = super()._generate_masks(image)
        self.filter_counts["crop_nms"] = len(data["rles"])
        return data

    def _process_crop(self, *args: Any, **kwargs: Any) -> Any:
        data = super()._process_crop(*args, **kwargs)
        self.filter_counts["box_nms"] += len(data["rles"])
        return data

    def _process_batch(
        self, points: np.ndarray, im_size: tuple[int, ...], crop_box: list[int], orig_size: tuple[int, ...]
    ) -> Any:
        """``SamAutomaticMaskGenerator._process_batch`` (the same steps and helpers), counting what each
        filter keeps into ``filter_counts``."""
        import torch
        from segment_anything.utils.amg import (
            MaskData,
            batched_mask_to_box,
            calculate_stability_score,
            is_box_near_crop_edge,
            mask_to_rle_pytorch,
            uncrop_masks,
        )

        orig_h, orig_w = orig_size
        transformed = self.predictor.transform.apply_coords(points, im_size)
        in_points = torch.as_tensor(transformed, device=self.predictor.device)
        in_labels = torch.ones(in_points.shape[0], dtype=torch.int, device=in_points.device)
        masks, iou_preds, _ = self.predictor.predict_torch(
            in_points[:, None, :], in_labels[:, None], multimask_output=True, return_logits=True)
        data = MaskData(masks=masks.flatten(0, 1), iou_preds=iou_preds.flatten(0, 1),
                        points=torch.as_tensor(points.repeat(masks.shape[1], axis=0)))
        del masks
        counts, best = self.filter_counts, self.best_scores
        counts["candidates"] += len(data["iou_preds"])
        if len(data["iou_preds"]):
            best["predicted_iou"] = max(best.get("predicted_iou", -np.inf), float(data["iou_preds"].max()))
        if self.pred_iou_thresh > 0.0:
            data.filter(data["iou_preds"] > self.pred_iou_thresh)
        counts["pred_iou_thresh"] += len(data["iou_preds"])
        data["stability_score"] = calculate_stability_score(
            data["masks"], self.predictor.model.mask_threshold, self.stability_score_offset)
        if len(data["stability_score"]):
            best["stability_score"] = max(best.get("stability_score", -np.inf), float(data["stability_score"].max()))
        if self.stability_score_thresh > 0.0:
            data.filter(data["stability_score"] >= self.stability_score_thresh)
        counts["stability_score_thresh"] += len(data["iou_preds"])
        data["masks"] = data["masks"] > self.predictor.model.mask_threshold
        data["boxes"] = batched_mask_to_box(data["masks"])
        keep = ~is_box_near_crop_edge(data["boxes"], crop_box, [0, 0, orig_w, orig_h])
        if not torch.all(keep):
            data.filter(keep)
        counts["crop_edge"] += len(data["iou_preds"])
        data["masks"] = uncrop_masks(data["masks"], crop_box, orig_h, orig_w)
        data["rles"] = mask_to_rle_pytorch(data["masks"])
        del data["masks"]
        if self._bar is not None:
            self._bar.update(len(points))
        return data


def explain_no_masks(generator: RobustSamAutomaticMaskGenerator) -> str:
    """Why :meth:`~RobustSamAutomaticMaskGenerator.generate` returned no mask: the first filter that
    left none, with the counts and, for a threshold, the best score it saw and what to lower."""
    counts, best = generator.filter_counts, getattr(generator, "best_scores", {})
    kept = counts["candidates"]
    if kept == 0:
        return "the point grid produced no candidate masks"
    hints = {
        "pred_iou_thresh": (generator.pred_iou_thresh, "predicted_iou", "--pred-iou-thresh"),
        "stability_score_thresh": (generator.stability_score_thresh, "stability_score", "--stability-thresh"),
    }
    for name in FILTERS:
        if counts[name] == 0:
            text = f"{name} removed all {kept} of the {counts['candidates']} candidate masks"
            if name in hints:
                value, score, option = hints[name]
                text = (f"{name} {value:g} removed all {kept} of the {counts['candidates']} candidate masks "
                        f"(best {score} {best.get(score, float('nan')):.3f}; lower {option})")
            elif name == "crop_edge":
                text += " (every mask touched the edge of its crop)"
            return text
        kept = counts[name]
    return "no filter removed every mask"


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
