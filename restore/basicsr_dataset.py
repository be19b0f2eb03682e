"""A paired dataset for BasicSR that also yields the prior: ``type: PairedImagePriorDataset``.

It reads what BasicSR's ``PairedImageDataset`` reads and yields what it yields (``lq``, ``gt``
``(3, h, w)`` float32 RGB in [0, 1], ``lq_path``, ``gt_path``), plus ``prior_labels``: the prior's
``(h, w)`` int32 region map of the input, ids 0..K-1 (what :class:`~restore.basicsr_plugin.PriorRestorationModel`
hands to the network as ``PriorOutput.labels``).

The prior runs on the whole degraded image, as the project's own paired training data does, and the
training crop and flips are then applied to the input, the ground truth and the label map alike (labels
are copied pixel for pixel, never interpolated, and relabelled 0..K-1 after the crop). With
``prior_cache: FOLDER`` each image's prior is computed once and read back afterwards (a
:class:`~robustsam_prior.cache.PriorCache`, the folder that ``robustsam-restore prior-cache`` fills);
without it the prior is computed again for every sample.

Options (one ``datasets.<phase>`` entry of a BasicSR options file; BasicSR adds ``phase`` and
``scale``):

- ``dataroot_gt``, ``dataroot_lq``: folders; the ground truth ``NAME.EXT`` is paired with
  ``filename_tmpl.format(NAME) + EXT`` in ``dataroot_lq`` (BasicSR's ``paired_paths_from_folder``
  rule; ``filename_tmpl`` defaults to ``'{}'``);
- ``io_backend``: ``{type: disk}``, the only backend (images are decoded by the project's reader, so
  16-bit, grayscale and alpha files are handled as everywhere else in the project);
- ``gt_size``: the square training crop in pixels (train phase; validation uses whole images);
- ``use_hflip``, ``use_rot``: BasicSR's augmentation (a horizontal flip; a vertical flip and a
  transpose, each with probability 1/2), drawn from Python's ``random`` that BasicSR seeds;
- ``prior``: ``{type: NAME, ...options}`` of :func:`robustsam_prior.prior.build_prior`
  (default ``{type: regions}``);
- ``prior_cache``: a cache folder, optional.

Keys that BasicSR's loaders read (``batch_size_per_gpu``, ``num_worker_per_gpu`` ...) are accepted;
any other key is an error with a "did you mean", so that a misspelt ``prior_cache`` is not silently
ignored. ``scale`` must be 1 (restoration, not super-resolution).
"""

from __future__ import annotations

import logging
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .training.data import relabel
from .training.files import DataError

logger = logging.getLogger(__name__)

DATASET_KEYS = frozenset({
    "name", "type", "phase", "scale", "dataroot_gt", "dataroot_lq", "filename_tmpl", "io_backend",
    "gt_size", "use_hflip", "use_rot", "prior", "prior_cache",
})
# read by BasicSR's build_dataloader / train loop, or by the NAFNet fork's paired dataset, not by the dataset
LOADER_KEYS = frozenset({
    "batch_size_per_gpu", "num_worker_per_gpu", "dataset_enlarge_ratio", "prefetch_mode", "num_prefetch_queue",
    "pin_memory", "persistent_workers", "use_shuffle", "color", "mean", "std", "use_flip",
})


def pair_files(gt_dir: Path, lq_dir: Path, filename_tmpl: str, where: str) -> list[tuple[Path, Path]]:
    """``(lq, gt)`` paths: every image ``NAME.EXT`` of ``gt_dir`` with ``filename_tmpl.format(NAME) + EXT``
    of ``lq_dir``, sorted by ground-truth name; ``DataError`` naming the first missing input."""
    from robustsam_prior.core.io import is_image_file

    for key, folder in (("dataroot_gt", gt_dir), ("dataroot_lq", lq_dir)):
        if not folder.is_dir():
            raise DataError(f"{where}.{key}: folder not found: {folder}")
    gts = sorted(p for p in gt_dir.iterdir() if p.is_file() and is_image_file(p))
    if not gts:
        raise DataError(f"{where}.dataroot_gt: no image files in {gt_dir}")
    pairs = []
    for gt in gts:
        lq = lq_dir / (filename_tmpl.format(gt.stem) + gt.suffix)
        if not lq.is_file():
            raise DataError(f"{where}: no input {lq.name!r} in {lq_dir} for the ground truth {gt.name!r} "
                            f"(filename_tmpl {filename_tmpl!r})")
        pairs.append((lq, gt))
    return pairs


class PriorPairs(torch.utils.data.Dataset):
    """Degraded/clean pairs with the prior's region map of the degraded image (see the module docstring).

    ``crop`` is the square training crop (``None``: whole images, no augmentation); ``prior`` a built
    :class:`~robustsam_prior.prior.Prior`; ``prior_cache`` a :class:`~robustsam_prior.cache.PriorCache`
    or ``None``; ``where`` names the dataset in error messages.
    """

    def __init__(
        self,
        *,
        pairs: list[tuple[Path, Path]],
        prior: Any,
        prior_cache: Any = None,
        crop: int | None = None,
        hflip: bool = False,
        rot: bool = False,
        where: str = "dataset",
    ) -> None:
        self.pairs, self.prior, self.prior_cache = pairs, prior, prior_cache
        self.crop, self.hflip, self.rot, self.where = crop, hflip, rot, where

    def __len__(self) -> int:
        return len(self.pairs)

    def whole_image_labels(self, lq: np.ndarray) -> np.ndarray:
        """The prior's ``(H, W)`` int32 label map of a whole ``HxWx3`` input (through the cache if any)."""
        from robustsam_prior.core.io import to_tensor

        image = to_tensor(lq)
        with torch.no_grad():
            out = self.prior_cache.get_or_compute(self.prior, image) if self.prior_cache else self.prior(image)
        return out.labels[0].cpu().numpy().astype(np.int32)

    def __getitem__(self, index: int) -> dict[str, Any]:
        from robustsam_prior.core.io import read_image

        lq_path, gt_path = self.pairs[index]
        lq, gt = read_image(lq_path).pixels, read_image(gt_path).pixels
        if lq.shape != gt.shape:
            raise DataError(f"{self.where}: {lq_path} is {lq.shape[1]}x{lq.shape[0]} but its ground truth "
                            f"{gt_path} is {gt.shape[1]}x{gt.shape[0]} (scale 1: the sizes must agree)")
        labels = self.whole_image_labels(lq)
        arrays = [lq, gt, labels]
        if self.crop is not None:
            h, w = labels.shape
            if min(h, w) < self.crop:
                raise DataError(f"{self.where}.gt_size: {self.crop} is larger than {gt_path} ({w}x{h})")
            top, left = random.randint(0, h - self.crop), random.randint(0, w - self.crop)
            arrays = [a[top : top + self.crop, left : left + self.crop] for a in arrays]
            # BasicSR's augment(): hflip, then vflip and transpose for rotations, each with probability 1/2
            hflip = self.hflip and random.random() < 0.5
            vflip = self.rot and random.random() < 0.5
            transpose = self.rot and random.random() < 0.5
            if hflip:
                arrays = [a[:, ::-1] for a in arrays]
            if vflip:
                arrays = [a[::-1] for a in arrays]
            if transpose:
                arrays = [a.swapaxes(0, 1) for a in arrays]
        lq, gt, labels = (np.ascontiguousarray(a) for a in arrays)
        return {
            "lq": torch.from_numpy(lq.transpose(2, 0, 1).copy()),
            "gt": torch.from_numpy(gt.transpose(2, 0, 1).copy()),
            "prior_labels": torch.from_numpy(relabel(labels)),
            "lq_path": str(lq_path),
            "gt_path": str(gt_path),
        }


def _kwargs_from_options(opt: dict[str, Any]) -> dict[str, Any]:
    """Keyword arguments of :class:`PriorPairs` from one BasicSR ``datasets.<phase>`` entry."""
    from robustsam_prior.cache import PriorCache
    from robustsam_prior.core.registry import did_you_mean
    from robustsam_prior.prior import build_prior

    where = f"datasets.{opt.get('phase', '?')} ({opt.get('name', 'unnamed')})"
    known = sorted(DATASET_KEYS | LOADER_KEYS)
    for key in opt:
        if key not in known:
            raise DataError(f"{where}: unknown key {key!r}{did_you_mean(key, known)} for PairedImagePriorDataset")
    for key in ("dataroot_gt", "dataroot_lq"):
        if not opt.get(key):
            raise DataError(f"{where}: {key} is required")
    backend = (opt.get("io_backend") or {"type": "disk"}).get("type")
    if backend != "disk":
        raise DataError(f"{where}.io_backend: only 'disk' is supported, got {backend!r}")
    if opt.get("scale", 1) != 1:
        raise DataError(f"{where}: scale must be 1 (the networks keep the input's size), got {opt['scale']}")
    crop = None
    if opt.get("phase") == "train":
        crop = opt.get("gt_size")
        if isinstance(crop, bool) or not isinstance(crop, int) or crop < 1:
            raise DataError(f"{where}.gt_size: the training crop must be a positive integer, got {crop!r}")
    prior_opt = dict(opt.get("prior") or {"type": "regions"})
    name = prior_opt.pop("type", None)
    if not name:
        raise DataError(f"{where}.prior: needs a type (regions, robustsam, sam, none), got {opt.get('prior')!r}")
    try:
        prior = build_prior(name, **prior_opt)
    except (KeyError, ValueError) as e:  # an unknown prior or option (a KeyError's str() would quote it)
        raise DataError(f"{where}.prior: {e.args[0]}") from None
    cache = PriorCache(opt["prior_cache"]) if opt.get("prior_cache") else None
    if cache is None and crop is not None:
        logger.info("%s: the prior is computed for every sample; prior_cache: FOLDER computes it once per image",
                    where)
    return {
        "pairs": pair_files(Path(opt["dataroot_gt"]), Path(opt["dataroot_lq"]), opt.get("filename_tmpl", "{}"), where),
        "prior": prior,
        "prior_cache": cache,
        "crop": crop,
        "hflip": bool(opt.get("use_hflip", False)),
        "rot": bool(opt.get("use_rot", False)),
        "where": where,
    }


class PairedImagePriorDataset(PriorPairs):
    """The BasicSR face of :class:`PriorPairs`: built from one options entry, as BasicSR's
    ``build_dataset`` builds every dataset (``DataError`` naming the entry and key on a bad option)."""

    def __init__(self, opt: dict[str, Any]) -> None:
        self.opt = opt  # BasicSR's validation reads dataset.opt["name"]
        super().__init__(**_kwargs_from_options(opt))
