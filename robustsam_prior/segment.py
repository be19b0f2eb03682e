"""Segment one image with a RobustSAM model, from prompts or automatically, into files and scores.

:func:`segment_image` returns a :class:`SegmentationResult`: the images to write (an ``overlay.png`` with
every mask or region tinted in its own colour and the prompts marked; prompted: ``mask_<i>.png``, 8-bit,
1 inside, per returned mask; automatic: ``labels.png``, a 16-bit label map whose value is the region id
from :func:`robustsam_prior.masks_to_label_map`, and beside it the overlapping masks as segment-anything's
``scripts/amg.py`` writes them: ``masks/<i>.png`` per mask and ``masks.json``, the generator's records with
the segmentation as COCO RLE), and ``scores``: predicted IoU per mask (plus area, and for automatic
masks stability score, bbox, prompt point, crop box, region id, and how many candidates each filter
kept), the checkpoint's path and sha256 and the settings. :meth:`SegmentationResult.write` writes them
into a folder.

For files, what the ``robustsam-restore segment`` command runs: :func:`load_model` (a checkpoint file or Hub
name), :class:`Prompts` (parsed from their text form, checked against each image's size, where
:func:`image_size` reads it from the header), :func:`segment_file` (segment one image file and write its
results, only once all of them are known and valid) and :func:`output_folder` (where each image of a folder
goes).

Overlay markers: a foreground point is a green disc, a background point a red one, each ringed in white;
a box is a blue outline; automatic masks mark their prompt point with a small white disc.
"""

from __future__ import annotations

import math
import os
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .modeling.robustsam import RobustSam

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from .core.io import ImageData

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
    pred_iou_thresh: float | None = None,
    stability_score_thresh: float | None = None,
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
    region area (segment-anything's options of those names; an IoU or stability threshold left at ``None`` is
    the model's own, :func:`robustsam_prior.automatic.score_filters_for`: Meta's 0.88 / 0.95 for the
    official sizes, 0 / 0 for the packaged ``robustsam-tiny``); the masks are written one by one and turned
    into one label map. With no mask left, ``scores["no_masks"]`` says which filter removed the
    candidates (:func:`robustsam_prior.automatic.explain_no_masks`).
    ``image_name`` is recorded in the scores. ``ValueError`` for prompts together with ``auto``, neither,
    or more regions than a 16-bit label map holds.
    """
    from .automatic import (
        RobustSamAutomaticMaskGenerator,
        explain_no_masks,
        masks_to_label_map,
        score_filters_for,
    )
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
        filters = score_filters_for(getattr(model, "config", None), pred_iou_thresh=pred_iou_thresh,
                                    stability_score_thresh=stability_score_thresh)
        pred_iou_thresh, stability_score_thresh = filters["pred_iou_thresh"], filters["stability_score_thresh"]
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


# ------------------------------------------------------------------------------------------------------
# files: prompts in their text form, the model, one image file in, its results out
# ------------------------------------------------------------------------------------------------------


class PromptError(ValueError):
    """A prompt that is malformed or lies off the image; ``prompt`` says which: ``"points"`` or ``"box"``."""

    def __init__(self, prompt: str, message: str) -> None:
        super().__init__(message)
        self.prompt = prompt


def parse_points(text: str) -> tuple[list[list[float]], list[int]]:
    """``"x,y,label;x,y,label"`` (pixels of the original image; label 1 foreground, 0 background) ->
    ``(coords, labels)``; :class:`PromptError` naming the bad item."""
    coords, labels = [], []
    for item in filter(None, (s.strip() for s in text.split(";"))):
        parts = item.split(",")
        if len(parts) != 3:
            raise PromptError("points", f"{item!r}: expected x,y,label")
        try:
            x, y, label = float(parts[0]), float(parts[1]), int(parts[2])
        except ValueError:
            raise PromptError("points", f"{item!r}: expected numbers x,y and an integer label") from None
        if not (math.isfinite(x) and math.isfinite(y)):
            raise PromptError("points", f"{item!r}: x and y must be finite numbers")
        if label not in (0, 1):
            raise PromptError("points", f"{item!r}: label must be 1 (foreground) or 0 (background)")
        coords.append([x, y])
        labels.append(label)
    if not coords:
        raise PromptError("points", "no points given")
    return coords, labels


def parse_box(text: str) -> list[float]:
    """``"x0,y0,x1,y1"`` in pixels of the original image; :class:`PromptError` unless four finite numbers
    with ``x1 > x0`` and ``y1 > y0``."""
    try:
        box = [float(v) for v in text.split(",")]
    except ValueError:
        raise PromptError("box", f"{text!r}: expected four numbers x0,y0,x1,y1") from None
    if len(box) == 4 and not all(math.isfinite(v) for v in box):
        raise PromptError("box", f"{text!r}: box coordinates must be finite numbers")
    if len(box) != 4 or box[2] <= box[0] or box[3] <= box[1]:
        raise PromptError("box", f"{text!r}: expected x0,y0,x1,y1 with x1 > x0 and y1 > y0")
    return box


@dataclass(frozen=True)
class Prompts:
    """Point prompts (``points`` ``[[x, y], ...]`` with ``point_labels``, 1 foreground, 0 background) and/or
    a ``box`` ``[x0, y0, x1, y1]``, in pixels of the image; all None: automatic masks."""

    points: list[list[float]] | None = None
    point_labels: list[int] | None = None
    box: list[float] | None = None

    @classmethod
    def parse(cls, points: str | None = None, box: str | None = None) -> Prompts:
        """From their text forms (:func:`parse_points`, :func:`parse_box`); None or empty: not given."""
        coords, labels = parse_points(points) if points else (None, None)
        return cls(coords, labels, parse_box(box) if box else None)

    @property
    def given(self) -> bool:
        return self.points is not None or self.box is not None

    def check_inside(self, h: int, w: int, name: str = "the image") -> None:
        """:class:`PromptError` unless the points lie on the ``w`` x ``h`` image ``name`` (x in [0, w),
        y in [0, h)) and the box inside [0, w] x [0, h]."""
        for x, y in self.points or []:
            if not (0 <= x < w and 0 <= y < h):
                raise PromptError("points", f"point {x:g},{y:g} lies outside the {w}x{h} image {name} "
                                            f"(x must be in [0, {w}), y in [0, {h}))")
        if self.box is not None:
            x0, y0, x1, y1 = self.box
            if not (0 <= x0 and 0 <= y0 and x1 <= w and y1 <= h):
                raise PromptError("box", f"box {x0:g},{y0:g},{x1:g},{y1:g} reaches outside the {w}x{h} image "
                                         f"{name} (x must be in [0, {w}], y in [0, {h}])")


def image_size(path: str | os.PathLike) -> tuple[int, int] | None:
    """``(H, W)`` from the file's header, after EXIF orientation (as ``read_image`` applies it); None where
    the header cannot be read (reading the image reports why)."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            w, h = im.size
            if im.getexif().get(0x0112) in (5, 6, 7, 8):  # transposed orientations
                w, h = h, w
            return h, w
    except Exception:  # noqa: BLE001 - any unreadable header is reported when the image is read
        return None


def load_model(
    checkpoint: str | os.PathLike | None = None,
    config: str | dict | None = None,
    *,
    bn_mode: str = "running",
    fast: bool = True,
    device: str | torch.device = "cpu",
) -> RobustSam:
    """The RobustSAM model to segment with: ``checkpoint`` a file or a Hub name (None: the official file of the
    ``config`` variant, or ``$ROBUSTSAM_CHECKPOINT``, else the packaged ``robustsam-tiny``;
    :func:`robustsam_prior.hub.resolve_checkpoint`), built
    with ``config`` (a variant name or a dict of sizes; None: from the file). ``bn_mode`` and ``fast`` are
    :func:`robustsam_prior.loading.build_robustsam`'s."""
    from .hub import resolve_checkpoint
    from .loading import build_robustsam

    path = resolve_checkpoint(checkpoint if checkpoint is not None else config)
    return build_robustsam(config, path, bn_mode=bn_mode, fast=fast, device=device)


def output_folder(output: str | os.PathLike, rel: str | os.PathLike | None, shared: Collection[Path] = ()) -> Path:
    """Where the results of an image go: ``output`` itself for a single image (``rel`` None), else
    ``output/<rel without its suffix>``, with the suffix where another image of its folder has the same stem
    (``rel`` in ``shared``)."""
    if rel is None:
        return Path(output)
    rel = Path(rel)
    return Path(output) / (rel if rel in shared else rel.with_suffix(""))


def segment_file(
    model: RobustSam,
    src: str | os.PathLike,
    folder: str | os.PathLike,
    *,
    prompts: Prompts = Prompts(),
    image: ImageData | None = None,
    **settings: Any,
) -> SegmentationResult:
    """Segment the image file ``src`` (``image``: its :class:`~robustsam_prior.core.io.ImageData` when already
    read) with ``model`` and write the results into ``folder`` (:meth:`SegmentationResult.write`).

    ``prompts`` (none: automatic masks) are checked against the image first; ``settings`` are
    :func:`segment_image`'s (``path``, ``multimask``, ``points_per_side``, ``pred_iou_thresh``, ...;
    ``auto`` follows from the prompts). Nothing is written until every result is known and its scores are
    valid JSON, so a failure leaves ``folder`` as it was: :class:`PromptError` for a prompt off the image,
    ``ValueError`` for more regions than a 16-bit label map holds or a NaN score (a broken checkpoint),
    :class:`~robustsam_prior.core.io.ImageReadError` for an unreadable image, ``OSError`` naming ``folder`` when it
    cannot be written.
    """
    from .core.io import read_image

    data = image if image is not None else read_image(src)
    prompts.check_inside(*data.pixels.shape[:2], str(src))
    result = segment_image(model, data.pixels, points=prompts.points, point_labels=prompts.point_labels,
                           box=prompts.box, auto=not prompts.given, image_name=str(src), **settings)
    try:
        result.to_json()
    except ValueError as e:
        raise ValueError(f"{src}: the model's scores cannot be saved ({e}); nothing written") from None
    try:
        result.write(folder)
    except OSError as e:
        raise OSError(f"cannot write into {folder}: {e}") from None
    return result
