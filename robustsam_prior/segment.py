"""Segment one image with a RobustSAM model, from prompts or automatically, into files and scores.

:func:`segment_image` returns a :class:`SegmentationResult`: the images to write (an ``overlay.png`` with
every mask or region tinted in its own colour; prompted: ``mask_<i>.png``, 8-bit, 1 inside, per returned
mask; automatic: ``labels.png``, a 16-bit label map whose value is the region id from
:func:`robustsam_prior.masks_to_label_map`) and ``scores``: predicted IoU per mask (plus area, and for
automatic masks stability score, bbox and the region ids), the checkpoint's path and sha256 and the
settings. :meth:`SegmentationResult.write` writes them into a folder. This is what the
``robustsam-restore segment`` command runs.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .modeling.robustsam import RobustSam

MAX_LABEL = 65535  # the largest region id a 16-bit label map holds


def palette(n: int) -> np.ndarray:
    """``(max(n, 1), 3)`` float32 colours in [0.2, 1], the same for every call (seed 0)."""
    rng = np.random.default_rng(0)
    return rng.uniform(0.2, 1.0, size=(max(n, 1), 3)).astype(np.float32)


@dataclass
class SegmentationResult:
    """``scores`` (JSON-able, the content of ``scores.json``) and ``images``: file name ->
    ``(pixels (H, W) or (H, W, 3) float in [0, 1], bit depth)``."""

    scores: dict[str, Any]
    images: dict[str, tuple[np.ndarray, int]] = field(default_factory=dict)

    def to_json(self) -> str:
        """``scores`` as strict JSON (indent 2); ``ValueError`` naming the key if a score is NaN or infinite."""
        from .fileio import json_dumps

        return json_dumps(self.scores, indent=2)

    def write(self, folder: str | os.PathLike) -> None:
        """Write the images and ``scores.json`` into ``folder`` (created if needed)."""
        from .fileio import write_json
        from .io import write_image

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        for name, (pixels, bit_depth) in self.images.items():
            write_image(folder / name, pixels, bit_depth=bit_depth)
        write_json(folder / "scores.json", self.scores)


def segment_image(
    model: RobustSam,
    pixels: np.ndarray,
    *,
    points: Sequence[Sequence[float]] | None = None,
    point_labels: Sequence[int] | None = None,
    box: Sequence[float] | None = None,
    auto: bool = False,
    path: str = "robust",
    multimask: bool = False,
    points_per_side: int = 32,
    pred_iou_thresh: float = 0.88,
    stability_score_thresh: float = 0.95,
    progress: bool = False,
    image_name: str = "image",
) -> SegmentationResult:
    """Masks of ``pixels`` (``(H, W, 3)`` float RGB in [0, 1]) from ``model`` on decoder ``path``.

    Prompted (``auto=False``): ``points`` ``[[x, y], ...]`` with ``point_labels`` (1 foreground,
    0 background) and/or ``box`` ``[x0, y0, x1, y1]``, in pixels of the image; one mask, or three with
    ``multimask``. Automatic (``auto=True``, no prompts): :class:`robustsam_prior.RobustSamAutomaticMaskGenerator`
    over a ``points_per_side``² grid with its IoU and stability thresholds, the masks turned into one label map.
    ``image_name`` is recorded in the scores. ``ValueError`` for prompts together with ``auto``, neither,
    or more regions than a 16-bit label map holds.
    """
    from .automatic import RobustSamAutomaticMaskGenerator, masks_to_label_map
    from .predictor import RobustSamPredictor

    if auto and (points is not None or box is not None):
        raise ValueError("automatic masks take no prompts")
    if not auto and points is None and box is None:
        raise ValueError("give points and/or a box, or auto=True")
    rgb8 = np.clip(np.rint(pixels * 255.0), 0, 255).astype(np.uint8)
    h, w = rgb8.shape[:2]
    scores: dict[str, Any] = {
        "image": image_name,
        "size": [h, w],
        "path": path,
        "bn_mode": model.bn_mode,
        "checkpoint": {"path": model.checkpoint_path, "sha256": model.checkpoint_sha256},
    }
    images: dict[str, tuple[np.ndarray, int]] = {}

    if auto:
        generator = RobustSamAutomaticMaskGenerator(
            model,
            path=path,
            points_per_side=points_per_side,
            pred_iou_thresh=pred_iou_thresh,
            stability_score_thresh=stability_score_thresh,
            progress=progress,
        )
        records = generator.generate(rgb8)
        label_map, sources = masks_to_label_map(records, (h, w), return_sources=True)
        if len(sources) > MAX_LABEL:
            raise ValueError(f"{len(sources)} regions do not fit a 16-bit label map")
        images["labels.png"] = (label_map.astype(np.float32) / float(MAX_LABEL), 16)
        region_of = {src: rid for rid, src in enumerate(sources)}
        scores["mode"] = "auto"
        scores["label_map"] = "labels.png"
        scores["num_regions"] = len(sources)
        scores["masks"] = [
            {
                "predicted_iou": float(r["predicted_iou"]),
                "stability_score": float(r["stability_score"]),
                "area": int(r["area"]),
                "bbox_xywh": [float(v) for v in r["bbox"]],
                "region": region_of.get(i),
            }
            for i, r in enumerate(records)
        ]
        colours = palette(len(sources))
        tint = colours[label_map]
        if -1 in sources:
            uncovered = label_map == sources.index(-1)
            tint[uncovered] = pixels[uncovered]
        overlay = 0.5 * pixels + 0.5 * tint
    else:
        predictor = RobustSamPredictor(model, path=path)
        predictor.set_image(rgb8)
        masks, iou, _ = predictor.predict(
            point_coords=np.asarray(points, dtype=np.float32) if points else None,
            point_labels=np.asarray(point_labels) if point_labels else None,
            box=np.asarray(box, dtype=np.float32) if box else None,
            multimask_output=multimask,
        )
        scores["mode"] = "prompted"
        scores["prompts"] = {"points": points, "point_labels": point_labels, "box": box}
        scores["masks"] = []
        overlay = pixels.copy()
        colours = palette(len(masks))
        for i, (mask, score) in enumerate(zip(masks, iou)):
            name = f"mask_{i}.png"
            images[name] = (mask.astype(np.float32), 8)
            scores["masks"].append({"file": name, "iou_prediction": float(score), "area": int(mask.sum())})
            overlay[mask] = 0.5 * overlay[mask] + 0.5 * colours[i]
    images["overlay.png"] = (np.clip(overlay, 0.0, 1.0), 8)
    return SegmentationResult(scores=scores, images=images)
