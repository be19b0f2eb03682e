"""Data files of restoration training: finding, pairing and reading images, and the error that names them.

Used by the datasets (:mod:`restore.training.data`) and the real-data sources
(:mod:`restore.training.sources`); :class:`DataError` is what both raise for a data problem.
"""

from __future__ import annotations

import fnmatch
from pathlib import Path

import numpy as np

from .options import DatasetOptions


class DataError(ValueError):
    """A data problem (no images, crop larger than an image, unmatched pair); names the key and file."""


def config_path(value: str) -> Path:
    """Resolve a config path (``pkg://module/sub`` names a folder inside an installed package)."""
    from robustsam_prior.core.fileio import package_path

    try:
        return package_path(value)
    except FileNotFoundError as e:
        raise DataError(str(e)) from None


def list_images(folder: Path, opts: DatasetOptions, key: str) -> list[Path]:
    """Image files in ``folder`` selected by ``include``/``exclude`` globs, sorted by name."""
    from robustsam_prior.core.io import is_image_file

    pattern = "**/*" if opts.recursive else "*"
    files = sorted(
        p
        for p in folder.glob(pattern)
        if p.is_file()
        and is_image_file(p)
        and any(fnmatch.fnmatch(p.name, g) for g in opts.include)
        and not any(fnmatch.fnmatch(p.name, g) for g in opts.exclude)
    )
    if opts.max_images is not None:
        files = files[: opts.max_images]
    if not files:
        raise DataError(f"{key}: no image files in {folder} match include={list(opts.include)} exclude={list(opts.exclude)}")
    return files


def match_pairs(lq_files: list[Path], gt_dir: Path, how: str, key: str) -> list[tuple[Path, Path]]:
    """Pair each degraded file with its ground truth in ``gt_dir`` (see ``DatasetOptions``)."""
    from robustsam_prior.core.io import is_image_file

    by_name = {p.name: p for p in gt_dir.iterdir() if p.is_file() and is_image_file(p)}
    by_stem: dict[str, Path] = {}
    for p in by_name.values():
        by_stem.setdefault(p.stem, p)
    pairs, missing = [], []
    for lq in lq_files:
        if how == "name":
            gt = by_name.get(lq.name)
        elif how == "stem":
            gt = by_stem.get(lq.stem)
        else:
            gt = by_stem.get(lq.stem.split("_")[0])
        if gt is None:
            missing.append(lq.name)
        else:
            pairs.append((lq, gt))
    if missing:
        raise DataError(
            f"{key}.gt_dir: no ground truth in {gt_dir} for {len(missing)} input(s) (gt_match={how!r}), "
            f"e.g. {missing[:3]}"
        )
    return pairs


def read_rgb(path: Path) -> np.ndarray:
    """``HxWx3`` float32 RGB in [0, 1] (grayscale replicated; alpha dropped)."""
    from robustsam_prior.core.io import read_image

    return np.ascontiguousarray(read_image(path).pixels, dtype=np.float32)


def cut_border(a: np.ndarray, opts: DatasetOptions) -> np.ndarray:
    """``a`` without ``opts.crop_border`` pixels on each side."""
    b = opts.crop_border
    if b and (a.shape[0] <= 2 * b or a.shape[1] <= 2 * b):
        raise DataError(f"crop_border: {b} px on each side leaves nothing of a {a.shape[1]}x{a.shape[0]} image")
    return a[b:a.shape[0] - b, b:a.shape[1] - b] if b else a
