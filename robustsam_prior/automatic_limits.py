"""Bounds on the automatic mask generator's sizes, checked before anything is allocated.

``segment_anything``'s generator takes its sizes on trust: ``points_per_side=100000`` builds a grid
of 10^10 prompts (tens of GiB before the first prompt runs), ``crop_n_layers=12`` asks for 4^12
crops, each a full encoder pass, and a ``crop_n_points_downscale_factor`` of 0 divides by zero.
:func:`check_generator_options` turns such values into a ``ValueError`` naming the option, its
range and why. This module imports nothing heavy, so a command line can use the bounds in its
option types.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

# 128² = 16384 prompts, already minutes per image on a GPU and hours on a CPU (about 0.2 s per prompt
# for ViT-B, benchmarks/prior_speed.py --amg)
MAX_POINTS_PER_SIDE = 128
# each prompt of a batch holds 3 float32 mask logits at the image size (plus comparisons of them):
# 12+ bytes per pixel per prompt, so 256 prompts on a 1-megapixel image are over 3 GB
MAX_POINTS_PER_BATCH = 256
# crop layer i adds 4**i crops, each a full encoder pass: 3 layers are 1 + 4 + 16 + 64 = 85 passes
MAX_CROP_N_LAYERS = 3

_UNIT = ("pred_iou_thresh", "stability_score_thresh", "box_nms_thresh", "crop_nms_thresh")


def _is_int(v: Any) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _is_real(v: Any) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)


def check_generator_options(what: str = "automatic masks", **options: Any) -> None:
    """Raise ``ValueError`` (``"<what>: <option> must be ..., got ..."``) for an option of
    ``SamAutomaticMaskGenerator`` outside its bounds; options not given are not checked.

    Sizes: ``points_per_side`` 1..:data:`MAX_POINTS_PER_SIDE` (or None with ``point_grids``, each an
    (N, 2) array of at most ``MAX_POINTS_PER_SIDE²`` points in [0, 1]), ``points_per_batch``
    1..:data:`MAX_POINTS_PER_BATCH`, ``crop_n_layers`` 0..:data:`MAX_CROP_N_LAYERS`,
    ``crop_n_points_downscale_factor`` >= 1 and small enough that the last crop layer keeps a point,
    ``min_mask_region_area`` >= 0. Thresholds (``pred_iou_thresh``, ``stability_score_thresh``,
    ``box_nms_thresh``, ``crop_nms_thresh``) are finite numbers in [0, 1], ``crop_overlap_ratio`` in
    [0, 1) and ``stability_score_offset`` finite and >= 0.
    """

    def fail(name: str, rule: str) -> None:
        raise ValueError(f"{what}: {name} must be {rule}, got {options[name]!r}")

    pps = options.get("points_per_side")
    if "points_per_side" in options and not (pps is None and options.get("point_grids") is not None):
        if not _is_int(pps) or not 1 <= pps <= MAX_POINTS_PER_SIDE:
            fail("points_per_side", f"an integer in 1..{MAX_POINTS_PER_SIDE} (the grid has points_per_side² prompts)")
    grids = options.get("point_grids")
    if grids is not None:
        import numpy as np

        for i, g in enumerate(grids):
            arr = np.asarray(g)
            if arr.ndim != 2 or arr.shape[1] != 2 or not 1 <= len(arr) <= MAX_POINTS_PER_SIDE**2:
                raise ValueError(
                    f"{what}: point_grids[{i}] must be an (N, 2) array with 1 <= N <= {MAX_POINTS_PER_SIDE**2}, "
                    f"got shape {arr.shape}"
                )
            if not np.issubdtype(arr.dtype, np.number) or not np.all((arr >= 0) & (arr <= 1)):
                raise ValueError(f"{what}: point_grids[{i}] must hold finite coordinates in [0, 1]")
    if "points_per_batch" in options:
        ppb = options["points_per_batch"]
        if not _is_int(ppb) or not 1 <= ppb <= MAX_POINTS_PER_BATCH:
            fail("points_per_batch", f"an integer in 1..{MAX_POINTS_PER_BATCH} (memory grows with it)")
    layers = options.get("crop_n_layers", 0)
    if not _is_int(layers) or not 0 <= layers <= MAX_CROP_N_LAYERS:
        fail("crop_n_layers", f"an integer in 0..{MAX_CROP_N_LAYERS} (layer i adds 4**i crops)")
    factor = options.get("crop_n_points_downscale_factor", 1)
    if not _is_int(factor) or factor < 1:
        fail("crop_n_points_downscale_factor", "an integer >= 1")
    if _is_int(pps) and int(pps / factor**layers) < 1:
        raise ValueError(
            f"{what}: crop_n_points_downscale_factor {factor} leaves crop layer {layers} without points "
            f"(points_per_side {pps} / {factor}**{layers} < 1)"
        )
    if "min_mask_region_area" in options:
        area = options["min_mask_region_area"]
        if not _is_int(area) or area < 0:
            fail("min_mask_region_area", "an integer >= 0")
    for name in _UNIT:
        if name in options and not (_is_real(options[name]) and 0 <= options[name] <= 1):
            fail(name, "a number in [0, 1]")
    if "crop_overlap_ratio" in options:
        r = options["crop_overlap_ratio"]
        if not (_is_real(r) and 0 <= r < 1):
            fail("crop_overlap_ratio", "a number in [0, 1)")
    if "stability_score_offset" in options:
        off = options["stability_score_offset"]
        if not (_is_real(off) and off >= 0):
            fail("stability_score_offset", "a finite number >= 0")
