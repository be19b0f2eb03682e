"""Clear/degraded training pairs with a ground-truth mask and prompts drawn from it.

Differences from the official ``dataset.py``: any image size (resized
to the model's input with its aspect ratio kept, not squashed to 512x512), a random instance or the
largest one, point and/or box prompts, and geometric degradations warp the ground truth too (the
official elastic transform left the mask unwarped). The degraded image is drawn uniformly from the
degradation list plus the identity (the paper's "15 degradations + identity mapping").
"""

from __future__ import annotations

import logging
import os
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

IDENTITY = "identity"

logger = logging.getLogger(__name__)


@dataclass
class TrainingPair:
    """One sample. ``clear``/``degraded`` (3,H,W) float in [0,1]; ``mask`` (H,W) float {0,1}, the
    ground truth on the degraded image; ``points`` (P,2) xy pixels with ``point_labels`` (P,) (all 1);
    ``box`` (4,) xyxy pixels; ``degradation`` name and its drawn ``params``; ``others``: further instances
    of the same clean image as ``(mask, points, box)`` (stage 1's several prompts per image; empty otherwise)."""

    clear: torch.Tensor
    degraded: torch.Tensor
    mask: torch.Tensor
    points: torch.Tensor
    point_labels: torch.Tensor
    box: torch.Tensor
    degradation: str
    params: dict[str, Any] = field(default_factory=dict)
    others: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = field(default_factory=list)


def sample_points(mask: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` foreground pixel centres (x, y) of ``mask`` (with replacement when it is small)."""
    ys, xs = np.nonzero(mask)
    if len(ys) == 0:
        raise ValueError("cannot sample prompt points from an empty mask")
    idx = rng.choice(len(ys), size=n, replace=len(ys) < n)
    return np.stack([xs[idx], ys[idx]], axis=1).astype(np.float32)


def mask_box(mask: np.ndarray, rng: np.random.Generator, jitter: float = 0.1) -> np.ndarray:
    """The mask's bounding box (x0, y0, x1, y1), each side moved by up to ``jitter`` x its size."""
    ys, xs = np.nonzero(mask)
    if len(ys) == 0:
        raise ValueError("cannot make a box prompt from an empty mask")
    x0, x1, y0, y1 = xs.min(), xs.max() + 1, ys.min(), ys.max() + 1
    w, h = x1 - x0, y1 - y0
    d = rng.uniform(-jitter, jitter, 4) * np.array([w, h, w, h])
    hmax, wmax = mask.shape
    box = np.array([x0, y0, x1, y1], np.float64) + d
    box = np.clip(box, 0, [wmax, hmax, wmax, hmax])
    return box.astype(np.float32)


def make_pair(
    image: np.ndarray,
    masks: np.ndarray,
    *,
    degradations: Sequence[str],
    severities: Sequence[int] = (1, 2, 3, 4, 5),
    include_identity: bool = True,
    num_points: int = 3,
    instance: str = "random",
    instances: int = 1,
    rng: np.random.Generator,
) -> TrainingPair:
    """A pair from ``image`` (H,W,3) float [0,1] and its instance ``masks`` (N,H,W) bool. ``instances`` > 1
    adds up to ``instances - 1`` other instances (drawn without replacement) as ``others``; only without
    degradations, since they are not warped with the image."""
    from ..degradations import degrade

    masks = np.asarray(masks, bool)
    areas = masks.reshape(len(masks), -1).sum(1) if len(masks) else np.zeros(0)
    candidates = np.flatnonzero(areas > 0)
    if len(candidates) == 0:
        raise ValueError("the image has no non-empty instance mask")
    if instance == "largest":
        k = int(np.argmax(areas))
    elif instance == "random":
        k = int(rng.choice(candidates))
    else:
        raise ValueError(f"instance must be 'random' or 'largest', got {instance!r}")
    choices = list(degradations) + ([IDENTITY] if include_identity else [])
    if instances > 1 and list(degradations):
        raise ValueError("several instances per pair need a clean pair (no degradations)")
    if not choices:
        raise ValueError("no degradations to choose from")
    kind = str(rng.choice(choices))
    clear = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)).permute(2, 0, 1)
    gt = masks[k]
    params: dict[str, Any] = {}
    if kind == IDENTITY:
        degraded = clear.clone()
    else:
        out = degrade(clear[None], kind, int(rng.choice(list(severities))), rng=rng,
                      labels=torch.from_numpy(gt.astype(np.int64))[None])
        degraded = out.image[0].clamp(0, 1)
        params = out.params
        if out.labels is not None:
            warped = out.labels[0].numpy() > 0
            if warped.any():
                gt = warped
    others = []
    rest = candidates[candidates != k]
    for j in rng.choice(rest, size=min(instances - 1, len(rest)), replace=False) if instances > 1 else ():
        m = masks[int(j)]
        others.append((torch.from_numpy(m.astype(np.float32)), torch.from_numpy(sample_points(m, num_points, rng)),
                       torch.from_numpy(mask_box(m, rng))))
    return TrainingPair(
        clear=clear,
        degraded=degraded.float(),
        mask=torch.from_numpy(gt.astype(np.float32)),
        points=torch.from_numpy(sample_points(gt, num_points, rng)),
        point_labels=torch.ones(num_points, dtype=torch.int64),
        box=torch.from_numpy(mask_box(gt, rng)),
        degradation=kind,
        params=params,
        others=others,
    )


class PairSampler:
    """Endless batches of :class:`TrainingPair` from a dataset of scenes.

    ``dataset[i]`` must have ``.image`` (H,W,3) float [0,1] and ``.masks`` (N,H,W) bool (e.g.
    :class:`robustsam_prior.data.shapes.ShapesDataset`, :class:`FolderDataset`). Deterministic for a
    given ``seed``: every draw comes from ``self.rng`` (a numpy ``Generator``), so saving and restoring
    ``self.rng.bit_generator.state`` between batches resumes the exact sequence. Batches may mix image
    sizes (the trainer handles that). A scene without any non-empty instance mask is skipped with a
    warning (once per scene) and another one is drawn; :class:`DataError` if no scene has one.
    """

    def __init__(self, dataset: Sequence[Any], *, batch_size: int, seed: int = 0, **pair_options: Any) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if len(dataset) == 0:
            raise ValueError("the dataset is empty")
        self.dataset = dataset
        self.batch_size = batch_size
        self.rng = np.random.default_rng(seed)
        self.pair_options = pair_options
        self.skipped: set[int] = set()

    def __iter__(self) -> Iterator[list[TrainingPair]]:
        while True:
            yield [self._pair(int(i)) for i in self.rng.choice(len(self.dataset), size=self.batch_size)]

    def _pair(self, index: int) -> TrainingPair:
        while True:
            scene = self.dataset[index]
            masks = np.asarray(scene.masks, bool)
            if len(masks) and masks.reshape(len(masks), -1).any(1).any():
                return make_pair(scene.image, masks, rng=self.rng, **self.pair_options)
            if index not in self.skipped:
                self.skipped.add(index)
                where = f"mask {scene.mask_path}" if hasattr(scene, "mask_path") else f"scene {index}"
                logger.warning("%s: no instance (every label is 0, or every instance vanished in the resize "
                               "to %dx%d); skipped", where, masks.shape[-1], masks.shape[-2])
            if len(self.skipped) == len(self.dataset):
                raise DataError(f"no scene of the {len(self.dataset)} has an instance mask (all labels are 0)")
            index = int(self.rng.integers(len(self.dataset)))


# ------------------------------------------------------------------------------------------------
# scenes from a folder of images and a folder of label masks
# ------------------------------------------------------------------------------------------------

MASK_EXTENSIONS = (".png", ".tif", ".tiff")


class DataError(ValueError):
    """A problem with the training images or masks; the message names the file (or folder) and what is
    wrong with it."""


@dataclass
class FolderScene:
    """One scene of a :class:`FolderDataset`, shaped like a ``ShapesScene``.

    ``image`` (H,W,3) float32 RGB in [0, 1]; ``masks`` (N,H,W) bool, one per label value that is still
    present after resizing (N may be 0: see :class:`FolderDataset`); ``instance_ids`` (N,) the label
    value of each mask; ``image_path``/``mask_path`` the files it came from.
    """

    image: np.ndarray
    masks: np.ndarray
    instance_ids: np.ndarray
    image_path: Path
    mask_path: Path


def read_label_mask(path: str | os.PathLike) -> np.ndarray:
    """A label image (8- or 16-bit PNG or TIFF, single channel; palette PNGs give their indices) as
    ``(H, W)`` int64, with the file's EXIF orientation applied. Raises :class:`DataError` naming the file
    for a missing, empty, unreadable, colour or floating-point file."""
    from ..core.io import ImageReadError, apply_exif_orientation, is_tiff, read_tiff_samples

    path = Path(path)
    if not path.is_file():
        raise DataError(f"mask {path}: file not found")
    if path.stat().st_size == 0:
        raise DataError(f"mask {path}: empty file (0 bytes)")
    if is_tiff(path):
        try:
            array = read_tiff_samples(path)
        except ImageReadError as e:
            raise DataError(f"mask {path}: {e.reason}") from None
        mode = f"{array.dtype} array of shape {tuple(array.shape)}"
    else:
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(path) as im:
                im.load()
                mode = f"mode {im.mode}"
                orientation = im.getexif().get(0x0112)
                array = apply_exif_orientation(np.asarray(im), orientation)
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
            raise DataError(f"mask {path}: not a readable image, truncated or corrupt ({e})") from None
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[..., 0]
    if array.ndim != 2:
        raise DataError(
            f"mask {path}: a {mode} colour image; a mask must be a single-channel label image "
            "(0 = background, every other value one instance)"
        )
    if array.dtype.kind not in "biu":
        raise DataError(f"mask {path}: {array.dtype} samples; a mask must hold integer labels")
    return array.astype(np.int64)


def resize_longest(image: np.ndarray, labels: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Resize ``image`` (H,W,3) with area interpolation and ``labels`` (H,W) with nearest-neighbour
    sampling so that the longest side is ``size``, aspect ratio kept (SAM's ``ResizeLongestSide``
    rounding, so the trainer's own resize is then the identity)."""
    import cv2
    from segment_anything.utils.transforms import ResizeLongestSide

    h, w = labels.shape
    nh, nw = ResizeLongestSide.get_preprocess_shape(h, w, size)
    nh, nw = max(nh, 1), max(nw, 1)
    if (nh, nw) == (h, w):
        return image, labels
    image = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_AREA)
    # nearest: the source pixel whose centre is closest to each target pixel centre (no label mixing)
    rows = np.minimum(((np.arange(nh) + 0.5) * h / nh).astype(np.int64), h - 1)
    cols = np.minimum(((np.arange(nw) + 0.5) * w / nw).astype(np.int64), w - 1)
    return np.clip(image, 0.0, 1.0), labels[rows[:, None], cols[None, :]]


def _size_mismatch(mask: Path, mask_wh: Sequence[int], image: Path, image_wh: Sequence[int]) -> str:
    return (f"mask {mask}: {mask_wh[0]}x{mask_wh[1]} pixels (WxH) but its image {image.name} "
            f"is {image_wh[0]}x{image_wh[1]}")


def _header_size(path: Path, *, oriented: bool) -> tuple[int, int] | None:
    """(W, H) from the file header, after EXIF orientation if ``oriented`` (as ``read_image`` applies it);
    None where Pillow cannot read the header (the full read reports that file later)."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            w, h = im.size
            if oriented and im.getexif().get(0x0112) in (5, 6, 7, 8):  # transposed orientations
                w, h = h, w
            return w, h
    except Exception:  # noqa: BLE001 - any unreadable header is reported by the full read
        return None


class FolderDataset:
    """Scenes from ``images_dir`` and label masks in ``masks_dir``, matched by file stem.

    A mask is a label image (8- or 16-bit PNG or TIFF): 0 is background, every other value one
    instance. Images (any format :func:`robustsam_prior.core.io.read_image` reads) are resized with area
    interpolation and masks with nearest-neighbour sampling so that the longest side is ``size``, aspect
    ratio kept. Files are listed (``include``/``exclude`` globs on image file names) and paired when the
    dataset is made, but decoded only when a scene is asked for; the last ``cache`` scenes are kept.

    Errors (:class:`DataError`, naming the file): an empty selection, an image without a mask, two masks
    with the same stem, a mask of another size than its image (from the file headers, when the dataset is
    made), an unreadable file (when the scene is loaded). A mask without any
    instance (all 0, or every instance gone after resizing) is not an error here: the scene comes back
    with no masks and :class:`PairSampler` skips it with a warning.
    """

    def __init__(
        self,
        images_dir: str | os.PathLike,
        masks_dir: str | os.PathLike,
        *,
        size: int,
        include: Sequence[str] = ("*",),
        exclude: Sequence[str] = (),
        cache: int = 16,
    ) -> None:
        import fnmatch

        from ..core.io import is_image_file

        if size < 1:
            raise ValueError(f"size must be >= 1, got {size}")
        self.images_dir, self.masks_dir, self.size = Path(images_dir), Path(masks_dir), size
        for name, folder in (("images", self.images_dir), ("masks", self.masks_dir)):
            if not folder.is_dir():
                raise DataError(f"{name} folder {folder}: not found or not a folder")
        images = sorted(
            p for p in self.images_dir.iterdir()
            if p.is_file() and is_image_file(p)
            and any(fnmatch.fnmatch(p.name, g) for g in include)
            and not any(fnmatch.fnmatch(p.name, g) for g in exclude)
        )
        if not images:
            raise DataError(
                f"images folder {self.images_dir}: no image files match include={list(include)} exclude={list(exclude)}"
            )
        masks: dict[str, list[Path]] = {}
        for p in sorted(self.masks_dir.iterdir()):
            if p.is_file() and p.suffix.lower() in MASK_EXTENSIONS:
                masks.setdefault(p.stem, []).append(p)
        self.items: list[tuple[Path, Path]] = []
        for img in images:
            found = masks.get(img.stem, [])
            if not found:
                raise DataError(
                    f"image {img}: no mask named {img.stem}{{{','.join(MASK_EXTENSIONS)}}} in {self.masks_dir}"
                )
            if len(found) > 1:
                raise DataError(f"image {img}: several masks with its stem: {', '.join(p.name for p in found)}")
            self.items.append((img, found[0]))
        for img, mask in self.items:  # headers only: a mismatch shows at the start, not hours into a run
            image_size, mask_size = _header_size(img, oriented=True), _header_size(mask, oriented=False)
            if image_size and mask_size and image_size != mask_size:
                raise DataError(_size_mismatch(mask, mask_size, img, image_size))
        self.cache_size = cache
        self._cache: OrderedDict[int, FolderScene] = OrderedDict()

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> FolderScene:
        if index in self._cache:
            self._cache.move_to_end(index)
            return self._cache[index]
        scene = self.load(index)
        if self.cache_size:
            self._cache[index] = scene
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return scene

    def load(self, index: int) -> FolderScene:
        """Decode, check and resize scene ``index`` (no cache)."""
        from ..core.io import read_image

        img_path, mask_path = self.items[index]
        image = read_image(img_path).pixels  # ImageReadError (a ValueError) names the file
        labels = read_label_mask(mask_path)
        if labels.shape != image.shape[:2]:
            raise DataError(_size_mismatch(mask_path, labels.shape[::-1], img_path, image.shape[1::-1]))
        image, labels = resize_longest(image, labels, self.size)
        ids = np.unique(labels)
        ids = ids[ids != 0]
        masks = labels[None] == ids[:, None, None] if len(ids) else np.zeros((0, *labels.shape), bool)
        return FolderScene(np.ascontiguousarray(image, dtype=np.float32), masks, ids, img_path, mask_path)


def folder_or_shapes_dataset(data: Any, *, image_size: int, seed: int) -> Any:
    """The scenes of ``data`` (:class:`~robustsam_prior.training.options.RobustSamDataOptions`):
    procedural shapes (square, side ``data.image_size`` or ``image_size``) or a :class:`FolderDataset`
    (longest side ``data.image_size`` or ``image_size``)."""
    size = data.image_size or image_size
    if data.source == "folder":
        return FolderDataset(data.images_dir, data.masks_dir, size=size, include=data.include,
                             exclude=data.exclude, cache=data.cache_images)
    from ..data.shapes import ShapesDataset

    return ShapesDataset(length=data.scenes, height=size, width=size, seed=seed)
