"""Segment one image with a RobustSAM model, from prompts or automatically, into files and scores.

:func:`segment_image` returns a :class:`SegmentationResult`: the images to write (an ``overlay.png`` with
every mask or region tinted in its own colour and the prompts marked; prompted: ``mask_<i>.png``, 8-bit,
1 inside, per returned mask; automatic: ``labels.png``, a 16-bit label map whose value is the region id
from :func:`robustsam_prior.masks_to_label_map`, and beside it the overlapping masks as segment-anything's
``scripts/amg.py`` writes them: ``masks/<i>.png`` per mask and ``masks.json``, the generator's records with
the segmentation as COCO RLE), and ``scores``: predicted IoU per mask (plus area, and for automatic
masks stability score, bbox, prompt point, crop box, region id, and how many candidates each filter
kept), the checkpoint's path and sha256 and the settings. :meth:`SegmentationResult.write` writes them
into a folder. This is what the ``robustsam-restore segment`` command runs.

Overlay markers: a foreground point is a green disc, a background point a red one, each ringed in white;
a box is a blue outline; automatic masks mark their prompt point with a small white disc.
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
FOREGROUND = (0.1, 0.9, 0.1)
BACKGROUND = (0.9, 0.1, 0.1)
BOX = (0.1, 0.4, 1.0)
RING = (1.0, 1.0, 1.0)


def marker_radius(h: int, w: int) -> int:
    """Radius in pixels of a prompt marker: 1% of the shorter side, at least 2."""
    return max(2, round(min(h, w) / 100))


def draw_point(image: np.ndarray, x: float, y: float, colour: Sequence[float], radius: int, ring: bool = True) -> None:
    """A disc of ``colour`` centred on the pixel holding ``(x, y)``, ringed in white, in place on ``image``
    ``(H, W, 3)``; the parts off the image are left out."""
    h, w = image.shape[:2]
    cy, cx = int(np.floor(y)), int(np.floor(x))
    y0, y1, x0, x1 = max(cy - radius - 1, 0), min(cy + radius + 2, h), max(cx - radius - 1, 0), min(cx + radius + 2, w)
    yy, xx = np.mgrid[y0:y1, x0:x1]
    d2 = (yy - cy) ** 2 + (xx - cx) ** 2
    patch = image[y0:y1, x0:x1]
    if ring:
        patch[d2 <= (radius + 1) ** 2] = RING
    patch[d2 <= radius**2] = colour


def draw_box(image: np.ndarray, box: Sequence[float], colour: Sequence[float], width: int) -> None:
    """The outline of ``box`` (x0, y0, x1, y1, pixels) ``width`` pixels wide, inside the box, in place."""
    h, w = image.shape[:2]
    x0, y0 = max(int(np.floor(box[0])), 0), max(int(np.floor(box[1])), 0)
    x1, y1 = min(int(np.ceil(box[2])), w), min(int(np.ceil(box[3])), h)
    image[y0:y0 + width, x0:x1] = colour
    image[max(y1 - width, y0):y1, x0:x1] = colour
    image[y0:y1, x0:x0 + width] = colour
    image[y0:y1, max(x1 - width, x0):x1] = colour


def coco_rle(mask: np.ndarray) -> dict[str, Any]:
    """The COCO RLE of an ``(H, W)`` bool mask (column-major runs starting with zeros): compressed
    (``counts`` a string) when pycocotools is installed, as segment-anything's ``coco_rle`` output mode,
    else uncompressed (``counts`` a list of run lengths), which pycocotools' ``frPyObjects`` also reads."""
    import torch
    from segment_anything.utils.amg import coco_encode_rle, mask_to_rle_pytorch

    rle = mask_to_rle_pytorch(torch.from_numpy(np.ascontiguousarray(mask, dtype=bool))[None])[0]
    try:
        import pycocotools  # noqa: F401
    except ImportError:
        return rle
    return coco_encode_rle(rle)


def palette(n: int) -> np.ndarray:
    """``(max(n, 1), 3)`` float32 colours in [0.2, 1], the same for every call (seed 0)."""
    rng = np.random.default_rng(0)
    return rng.uniform(0.2, 1.0, size=(max(n, 1), 3)).astype(np.float32)


@dataclass
class SegmentationResult:
    """``scores`` (JSON-able, the content of ``scores.json``), ``images``: file name (relative to the
    output folder) -> ``(pixels (H, W) or (H, W, 3) float in [0, 1], or (H, W) bool, bit depth)``, and
    ``json_files``: file name -> JSON-able content (``masks.json``)."""

    scores: dict[str, Any]
    images: dict[str, tuple[np.ndarray, int]] = field(default_factory=dict)
    json_files: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        """``scores`` as strict JSON (indent 2); ``ValueError`` naming the key if a score (in ``scores`` or
        a JSON file) is NaN or infinite."""
        from .core.fileio import json_dumps

        for content in self.json_files.values():
            json_dumps(content)
        return json_dumps(self.scores, indent=2)

    def write(self, folder: str | os.PathLike) -> None:
        """Write the images, the JSON files and ``scores.json`` into ``folder`` (created if needed), each
        file atomically."""
        from .core.fileio import write_json
        from .core.io import write_image

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        for name, (pixels, bit_depth) in self.images.items():
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            if pixels.dtype == bool:
                pixels = pixels.astype(np.float32)
            write_image(folder / name, pixels, bit_depth=bit_depth)
        for name, content in self.json_files.items():
            write_json(folder / name, content)
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
    box_nms_thresh: float = 0.7,
    min_mask_region_area: int = 0,
    progress: bool = False,
    image_name: str = "image",
) -> SegmentationResult:
    """Masks of ``pixels`` (``(H, W, 3)`` float RGB in [0, 1]) from ``model`` on decoder ``path``.

    Prompted (``auto=False``): ``points`` ``[[x, y], ...]`` with ``point_labels`` (1 foreground,
    0 background) and/or ``box`` ``[x0, y0, x1, y1]``, in pixels of the image; one mask, or three with
    ``multimask``. Automatic (``auto=True``, no prompts): :class:`robustsam_prior.RobustSamAutomaticMaskGenerator`
    over a ``points_per_side``² grid with its IoU and stability thresholds, box NMS threshold and minimum
    region area (segment-anything's options of those names); the masks are written one by one and turned
    into one label map. With no mask left, ``scores["no_masks"]`` says which filter removed the
    candidates (:func:`robustsam_prior.automatic.explain_no_masks`).
    ``image_name`` is recorded in the scores. ``ValueError`` for prompts together with ``auto``, neither,
    or more regions than a 16-bit label map holds.
    """
    from .automatic import RobustSamAutomaticMaskGenerator, explain_no_masks, masks_to_label_map
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
            box_nms_thresh=box_nms_thresh,
            min_mask_region_area=min_mask_region_area,
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
        scores["masks_json"] = "masks.json"
        scores["settings"] = {"points_per_side": points_per_side, "pred_iou_thresh": pred_iou_thresh,
                              "stability_score_thresh": stability_score_thresh, "box_nms_thresh": box_nms_thresh,
                              "min_mask_region_area": min_mask_region_area}
        scores["filters"] = dict(generator.filter_counts)
        if not records:
            scores["no_masks"] = explain_no_masks(generator)
        scores["masks"] = []
        coco = []
        for i, r in enumerate(records):
            name = f"masks/{i}.png"
            images[name] = (np.asarray(r["segmentation"], bool), 8)
            entry = {
                "predicted_iou": float(r["predicted_iou"]),
                "stability_score": float(r["stability_score"]),
                "area": int(r["area"]),
                "bbox": [float(v) for v in r["bbox"]],
                "point_coords": [[float(v) for v in p] for p in r["point_coords"]],
                "crop_box": [float(v) for v in r["crop_box"]],
            }
            scores["masks"].append({"file": name, **entry, "region": region_of.get(i)})
            coco.append({"segmentation": coco_rle(r["segmentation"]), **entry})
        json_files = {"masks.json": coco}
        colours = palette(len(sources))
        tint = colours[label_map]
        if -1 in sources:
            uncovered = label_map == sources.index(-1)
            tint[uncovered] = pixels[uncovered]
        overlay = 0.5 * pixels + 0.5 * tint
        radius = max(1, marker_radius(h, w) // 2)
        for r in records:
            for x, y in r["point_coords"]:
                draw_point(overlay, x, y, RING, radius, ring=False)
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
        radius = marker_radius(h, w)
        if box is not None:
            draw_box(overlay, box, BOX, max(1, radius // 2))
        for (x, y), label in zip(points or [], point_labels or []):
            draw_point(overlay, x, y, FOREGROUND if label == 1 else BACKGROUND, radius)
        json_files = {}
    images["overlay.png"] = (np.clip(overlay, 0.0, 1.0), 8)
    return SegmentationResult(scores=scores, images=images, json_files=json_files)
