"""Pseudo-instance masks computed on clean images, for training and scoring a promptable segmenter.

No human masks exist for the photos this project trains on, so object masks are computed from the clean
image (never from a degraded one, so that a degraded copy is scored against what the clean image shows):

- :func:`colour_objects`: Felzenszwalb's graph segmentation (an over-segmentation that follows colour
  edges), then adjacent segments whose mean CIELAB colours are within ``merge_threshold`` merged
  hierarchically (scikit-image's region adjacency graph), so that a textured object is one region
  instead of dozens. For any photo.
- :func:`depth_regions`: regions bounded by depth discontinuities (a relative jump of more than ``jump``
  between neighbouring pixels). Where a depth map exists (NYU) this separates objects that share a colour
  with what lies behind them, which colour cannot do; each depth region is then split by
  :func:`colour_objects` only where the colour regions are large (a wall and the floor meet at a crease,
  not a depth jump).

Both return an ``(H, W)`` int32 label map: 0 = no object (regions smaller than ``min_area`` of the image),
1..K the objects, largest first. :func:`write_pseudo_mask_set` writes a folder of images and label masks
in the layout that ``robustsam_prior.training.data.FolderDataset`` (training) and
``eval.datasets.open_segmentation_dataset`` (the segmentation benchmark) read.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

METHODS = ("felzenszwalb", "depth")


def relabel_by_area(labels: np.ndarray, min_area: float) -> np.ndarray:
    """``labels`` (H,W) ints (0 may be a region too) -> int32 labels 1..K by decreasing area; regions with
    fewer than ``min_area`` x H x W pixels become 0."""
    flat = labels.ravel()
    ids, inverse, counts = np.unique(flat, return_inverse=True, return_counts=True)
    order = np.argsort(-counts, kind="stable")
    keep = counts[order] >= min_area * flat.size
    new = np.zeros(len(ids), np.int32)
    new[order[keep]] = np.arange(1, int(keep.sum()) + 1, dtype=np.int32)
    return new[inverse].reshape(labels.shape)


def colour_objects(
    image: np.ndarray,
    *,
    scale: float = 200.0,
    sigma: float = 0.8,
    min_size_fraction: float = 0.002,
    merge_threshold: float = 12.0,
    min_area: float = 0.01,
) -> np.ndarray:
    """Objects of ``image`` (H,W,3) float in [0, 1] by colour (module docstring): Felzenszwalb segments
    (``scale``, ``sigma``, minimum segment ``min_size_fraction`` x H x W pixels) merged while neighbours'
    mean Lab colours differ by less than ``merge_threshold``; (H,W) int32, 0 = regions under ``min_area``."""
    from skimage import graph
    from skimage.color import rgb2lab
    from skimage.segmentation import felzenszwalb

    image = _check_image(image)
    h, w = image.shape[:2]
    segments = felzenszwalb(image, scale=scale, sigma=sigma, min_size=max(1, int(min_size_fraction * h * w)))
    lab = rgb2lab(image)
    rag = graph.rag_mean_color(lab, segments, mode="distance")
    if rag.number_of_edges():
        segments = graph.merge_hierarchical(
            segments, rag, thresh=merge_threshold, rag_copy=False, in_place_merge=True,
            merge_func=_merge_mean_colour, weight_func=_mean_colour_weight)
    return relabel_by_area(segments, min_area)


def _mean_colour_weight(graph, src, dst, n):
    diff = graph.nodes[dst]["mean color"] - graph.nodes[n]["mean color"]
    return {"weight": float(np.linalg.norm(diff))}


def _merge_mean_colour(graph, src, dst):
    node = graph.nodes[dst]
    node["total color"] += graph.nodes[src]["total color"]
    node["pixel count"] += graph.nodes[src]["pixel count"]
    node["mean color"] = node["total color"] / node["pixel count"]


def depth_regions(
    depth: np.ndarray,
    image: np.ndarray | None = None,
    *,
    jump: float = 0.04,
    min_area: float = 0.01,
    split_above: float = 0.15,
    **colour_options: float,
) -> np.ndarray:
    """Regions of ``depth`` (H,W) positive floats bounded by relative jumps of more than ``jump`` between
    4-neighbours (edge pixels join the nearest region). With ``image`` (H,W,3), a region larger than
    ``split_above`` of the image is split along :func:`colour_objects` (``colour_options``) boundaries.
    (H,W) int32, 0 = regions under ``min_area``."""
    from scipy import ndimage

    depth = np.asarray(depth, np.float64)
    if depth.ndim != 2:
        raise ValueError(f"depth must be (H, W), got shape {depth.shape}")
    if not np.isfinite(depth).all() or depth.min() <= 0:
        raise ValueError("depth must be finite and positive everywhere (a filled depth map)")
    log_d = np.log(depth)
    edge = np.zeros(depth.shape, bool)
    dy = np.abs(np.diff(log_d, axis=0)) > np.log1p(jump)
    dx = np.abs(np.diff(log_d, axis=1)) > np.log1p(jump)
    edge[:-1] |= dy
    edge[1:] |= dy
    edge[:, :-1] |= dx
    edge[:, 1:] |= dx
    regions, _ = ndimage.label(~edge)
    # edge pixels take the label of the nearest non-edge pixel
    idx = ndimage.distance_transform_edt(regions == 0, return_distances=False, return_indices=True)
    regions = regions[tuple(idx)]
    if image is not None:
        if image.shape[:2] != depth.shape:
            raise ValueError(f"image {image.shape[:2]} and depth {depth.shape} differ in size")
        colour = colour_objects(image, min_area=0.0, **colour_options)
        ids, counts = np.unique(regions, return_counts=True)
        big = ids[counts > split_above * depth.size]
        split = np.isin(regions, big)
        # a big region's pixels get a joint (depth region, colour object) id; the others keep theirs
        regions = np.where(split, regions.max() + 1 + regions * (colour.max() + 1) + colour, regions)
    return relabel_by_area(regions, min_area)


def _check_image(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be (H, W, 3), got shape {image.shape}")
    if image.dtype.kind != "f" or image.min() < 0 or image.max() > 1:
        raise ValueError("image must be float with values in [0, 1]")
    return image


@dataclass(frozen=True)
class PseudoMaskSource:
    """What :func:`write_pseudo_mask_set` reads: ``images`` (files), with ``depths`` (the same number of
    ``.npy`` depth maps) for ``method="depth"``; ``prefix`` starts every written name."""

    prefix: str
    images: tuple[Path, ...]
    method: str = "felzenszwalb"
    depths: tuple[Path, ...] | None = None


def write_pseudo_mask_set(
    source: PseudoMaskSource,
    out_dir: str | os.PathLike,
    *,
    size: int = 256,
    crops: int = 0,
    crop_fraction: float = 0.5,
    seed: int = 0,
) -> list[dict]:
    """Write ``out_dir/images/<prefix>_<stem>[_cK].png`` and the label masks ``out_dir/masks/<same>.png``
    (16-bit, 0 = no object) of every image of ``source``, and append the records to
    ``out_dir/manifest_<prefix>.json`` (settings and, per written scene, its source file, window and
    object count). Each image is resized so that its longest side is ``size``; ``crops`` more
    random square crops of side ``crop_fraction`` x the shorter side (seeded by ``seed`` and the file name)
    are written too, each resized to ``size`` and segmented on its own. Masks are computed on the written
    (resized) clean image. Existing files of the same name are replaced; all writes are atomic."""
    import zlib

    from ..core.fileio import atomic_write, write_json
    from ..core.io import read_image

    if source.method not in METHODS:
        raise ValueError(f"unknown pseudo-mask method {source.method!r}; choose one of {METHODS}")
    if source.method == "depth" and (source.depths is None or len(source.depths) != len(source.images)):
        raise ValueError("method 'depth' needs one depth map per image")
    if size < 16 or crops < 0 or not 0 < crop_fraction <= 1:
        raise ValueError("size >= 16, crops >= 0 and 0 < crop_fraction <= 1 are required")
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(parents=True, exist_ok=True)
    records = []
    for i, path in enumerate(source.images):
        pixels = read_image(path).pixels
        depth = None
        if source.method == "depth":
            dpath = source.depths[i]
            try:
                depth = np.load(dpath, allow_pickle=False).astype(np.float32)
            except (OSError, ValueError) as e:
                raise ValueError(f"depth map {dpath}: unreadable ({e})") from e
            if depth.shape != pixels.shape[:2]:
                raise ValueError(f"depth map {dpath}: shape {depth.shape} but its image {path} is {pixels.shape[:2]}")
        rng = np.random.default_rng([seed, zlib.crc32(Path(path).name.encode())])
        h, w = pixels.shape[:2]
        windows = [(0, 0, h, w)]
        side = int(min(h, w) * crop_fraction)
        for _ in range(crops):
            y, x = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
            windows.append((y, x, side, side))
        for k, (y, x, ch, cw) in enumerate(windows):
            img, dep = _resize(pixels[y:y + ch, x:x + cw], None if depth is None else depth[y:y + ch, x:x + cw], size)
            labels = depth_regions(dep, img) if depth is not None else colour_objects(img)
            name = f"{source.prefix}_{Path(path).stem}" + (f"_c{k}" if k else "")
            _write_png(out / "images" / f"{name}.png", (img * 255).round().astype(np.uint8), atomic_write)
            _write_png(out / "masks" / f"{name}.png", labels.astype(np.uint16), atomic_write)
            rec = {"name": name, "source": str(path), "window_yxhw": [y, x, ch, cw], "method": source.method,
                   "objects": int(labels.max()), "coverage": float((labels > 0).mean())}
            records.append(rec)
    write_json(out / f"manifest_{source.prefix}.json",
               {"method": source.method, "size": size, "crops": crops, "crop_fraction": crop_fraction, "seed": seed,
                "scenes": records})
    logger.info("%s: %d scenes from %d images (%s)", out, len(records), len(source.images), source.method)
    return records


def write_shapes_set(out_dir: str | os.PathLike, *, count: int, size: int = 256, seed: int = 0,
                     prefix: str = "shapes") -> list[dict]:
    """Write ``count`` procedural scenes (``robustsam_prior.data.shapes``, exact masks: each shape's visible
    part) as ``out_dir/images/<prefix>_NNNNN.png`` + ``out_dir/masks/<same>.png``, in the layout of
    :func:`write_pseudo_mask_set`, with ``out_dir/manifest_<prefix>.json``."""
    from ..core.fileio import atomic_write, write_json
    from .shapes import ShapesDataset

    if count < 1 or size < 16:
        raise ValueError("count >= 1 and size >= 16 are required")
    out = Path(out_dir)
    records = []
    dataset = ShapesDataset(length=count, height=size, width=size, seed=seed)
    for i in range(count):
        scene = dataset[i]
        labels = np.zeros(scene.labels.shape, np.uint16)
        for k, m in enumerate(scene.masks, 1):
            labels[m] = k
        name = f"{prefix}_{i:05d}"
        _write_png(out / "images" / f"{name}.png", (scene.image * 255).round().astype(np.uint8), atomic_write)
        _write_png(out / "masks" / f"{name}.png", labels, atomic_write)
        records.append({"name": name, "method": "shapes", "objects": len(scene.masks),
                        "coverage": float((labels > 0).mean())})
    write_json(out / f"manifest_{prefix}.json", {"method": "shapes", "size": size, "seed": seed, "scenes": records})
    return records


def _resize(image: np.ndarray, depth: np.ndarray | None, size: int) -> tuple[np.ndarray, np.ndarray | None]:
    import cv2
    from segment_anything.utils.transforms import ResizeLongestSide

    h, w = image.shape[:2]
    nh, nw = ResizeLongestSide.get_preprocess_shape(h, w, size)
    image = np.clip(cv2.resize(image, (nw, nh), interpolation=cv2.INTER_AREA), 0, 1)
    if depth is not None:
        depth = cv2.resize(depth, (nw, nh), interpolation=cv2.INTER_NEAREST)
    return image, depth


def _write_png(path: Path, array: np.ndarray, atomic_write) -> None:
    from PIL import Image

    with atomic_write(path, "wb") as f:
        Image.fromarray(array).save(f, format="PNG")


__all__: Sequence[str] = ("METHODS", "PseudoMaskSource", "colour_objects", "depth_regions", "relabel_by_area",
                          "write_pseudo_mask_set", "write_shapes_set")
