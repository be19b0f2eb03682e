"""Evaluation datasets on disk: paired restoration folders and segmentation images + masks.

Restoration pairs (degraded or restored image, ground truth) are matched by file name, and what does
not match is reported, never silently dropped. Matching modes:

- ``name``: identical paths relative to each root (``a/b.png`` <-> ``a/b.png``);
- ``stem``: identical relative paths without the suffix (a restored ``x.png`` <-> ground truth ``x.jpg``);
- ``auto`` (default): ``name`` first, then ``stem`` for what is left, where unambiguous;
- ``prefix``: the degraded stem up to its first ``_`` names the ground truth (RESIDE/SOTS:
  ``hazy/1400_1.png`` and ``hazy/1400_2.png`` <-> ``gt/1400.png``).

:func:`open_restoration_dataset` also knows the common layouts of real datasets (GoPro test:
``<seq>/blur/*.png`` + ``<seq>/sharp/*.png``; SOTS: ``hazy/`` + ``gt/`` or ``clear/``; generic
``{lq,input,blur,hazy,degraded}/`` + ``{gt,target,sharp,clear}/``).

Segmentation datasets (:func:`open_segmentation_dataset`): ``images/NAME.ext`` plus either
``masks/NAME.png``, an instance label map (every distinct non-zero value, or colour, is one
instance; a 0/255 binary map such as MSRA10K's is one instance), or ``masks/NAME/*.png``, one binary
mask per instance (SA-1B/LVIS exports). The built-in :class:`~robustsam_prior.data.ShapesDataset`
offers the same interface without any files.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

__all__ = [
    "PairedDataset",
    "PairedItem",
    "SegmentationDataset",
    "SegmentationItem",
    "file_list_hash",
    "open_restoration_dataset",
    "open_segmentation_dataset",
    "pair_folders",
    "read_instance_masks",
]

LQ_NAMES = ("lq", "input", "blur", "hazy", "degraded", "low", "noisy")
GT_NAMES = ("gt", "target", "sharp", "clear", "GT", "high", "groundtruth")
MATCH_MODES = ("auto", "name", "stem", "prefix")


def file_list_hash(entries: list[str]) -> str:
    """sha256 of the sorted, newline-joined entries (identifies which files a result was computed on)."""
    h = hashlib.sha256()
    for e in sorted(entries):
        h.update(e.encode("utf-8") + b"\n")
    return h.hexdigest()


@dataclass(frozen=True)
class PairedItem:
    """One pair: ``name`` (the key results are reported under), the degraded/predicted file, the ground truth."""

    name: str
    lq: Path
    gt: Path


@dataclass
class PairedDataset:
    """Matched pairs plus the files that found no partner (relative paths)."""

    name: str
    items: list[PairedItem]
    unmatched_lq: list[str] = field(default_factory=list)
    unmatched_gt: list[str] = field(default_factory=list)
    lq_root: Path | None = None
    gt_root: Path | None = None

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self) -> Iterator[PairedItem]:
        return iter(self.items)

    def file_list_hash(self) -> str:
        """Hash of the matched pairs' relative paths."""
        return file_list_hash(
            [f"{it.name}\t{_rel(it.lq, self.lq_root)}\t{_rel(it.gt, self.gt_root)}" for it in self.items]
        )

    def describe(self) -> dict:
        return {
            "name": self.name,
            "count": len(self.items),
            "file_list_sha256": self.file_list_hash(),
            "unmatched_lq": len(self.unmatched_lq),
            "unmatched_gt": len(self.unmatched_gt),
        }


def _rel(p: Path, root: Path | None) -> str:
    try:
        return p.relative_to(root).as_posix() if root is not None else p.name
    except ValueError:
        return p.as_posix()


def _list_images(root: Path, recursive: bool) -> dict[str, Path]:
    from robustsam_prior.core.io import is_image_file
    from robustsam_prior.inputs import collect_inputs

    out = {}
    for src, rel in collect_inputs(root, recursive=recursive):
        if is_image_file(src):
            out[rel.as_posix()] = src
        else:
            logger.warning("%s: skipping %s (not an image file)", root, rel)
    return out


def _strip_suffix(rel: str) -> str:
    p = Path(rel)
    return p.with_suffix("").as_posix()


def pair_folders(
    lq_dir: str | os.PathLike,
    gt_dir: str | os.PathLike,
    *,
    match: str = "auto",
    recursive: bool = False,
    name: str | None = None,
) -> PairedDataset:
    """Pair the images of two folders by file name (see module docstring for ``match``).

    Raises ``FileNotFoundError`` for a missing folder, ``NotADirectoryError`` when a path is a file,
    ``ValueError`` for an unknown ``match`` or when nothing matches at all.
    """
    if match not in MATCH_MODES:
        raise ValueError(f"unknown match mode {match!r}; choose one of {', '.join(MATCH_MODES)}")
    lq_root, gt_root = Path(lq_dir), Path(gt_dir)
    for p, what in ((lq_root, "degraded/predicted"), (gt_root, "ground-truth")):
        if not p.exists():
            raise FileNotFoundError(f"{what} folder {p} does not exist")
        if not p.is_dir():
            raise NotADirectoryError(f"{what} path {p} is not a folder")
    lq, gt = _list_images(lq_root, recursive), _list_images(gt_root, recursive)
    pairs: dict[str, tuple[Path, Path]] = {}
    used_gt: set[str] = set()
    if match in ("auto", "name"):
        for rel in sorted(lq):
            if rel in gt:
                pairs[rel] = (lq[rel], gt[rel])
                used_gt.add(rel)
    if match in ("auto", "stem"):
        gt_by_stem: dict[str, list[str]] = {}
        for rel in gt:
            if rel not in used_gt:
                gt_by_stem.setdefault(_strip_suffix(rel), []).append(rel)
        lq_left = [r for r in sorted(lq) if r not in pairs]
        lq_by_stem: dict[str, list[str]] = {}
        for rel in lq_left:
            lq_by_stem.setdefault(_strip_suffix(rel), []).append(rel)
        for stem, rels in lq_by_stem.items():
            cands = gt_by_stem.get(stem, [])
            if len(rels) == 1 and len(cands) == 1:
                pairs[rels[0]] = (lq[rels[0]], gt[cands[0]])
                used_gt.add(cands[0])
            elif cands:
                logger.warning("ambiguous stem %r: %s vs %s (not paired)", stem, rels, cands)
    if match == "prefix":
        gt_by_stem = {}
        for rel in gt:
            gt_by_stem.setdefault(_strip_suffix(rel), []).append(rel)
        for rel in sorted(lq):
            p = Path(rel)
            key = (p.parent / p.stem.split("_")[0]).as_posix()
            cands = gt_by_stem.get(key, [])
            if len(cands) == 1:
                pairs[rel] = (lq[rel], gt[cands[0]])
                used_gt.add(cands[0])
    items = [PairedItem(k, *v) for k, v in sorted(pairs.items())]
    ds = PairedDataset(
        name=name or lq_root.name,
        items=items,
        unmatched_lq=sorted(r for r in lq if r not in pairs),
        unmatched_gt=sorted(r for r in gt if r not in used_gt),
        lq_root=lq_root,
        gt_root=gt_root,
    )
    if not items:
        raise ValueError(
            f"no file names match between {lq_root} ({len(lq)} images) and {gt_root} ({len(gt)} images)"
            + (f"; e.g. {ds.unmatched_lq[0]!r} vs {ds.unmatched_gt[0]!r}" if lq and gt else "")
        )
    if ds.unmatched_lq or ds.unmatched_gt:
        logger.warning(
            "%d images in %s have no ground truth, %d ground-truth images in %s have no partner (see the dataset's "
            "unmatched_lq/unmatched_gt)",
            len(ds.unmatched_lq),
            lq_root,
            len(ds.unmatched_gt),
            gt_root,
        )
    return ds


def _first_existing(root: Path, names: tuple[str, ...]) -> Path | None:
    for n in names:
        if (root / n).is_dir():
            return root / n
    return None


def open_restoration_dataset(
    root: str | os.PathLike, *, layout: str = "auto", name: str | None = None
) -> PairedDataset:
    """Open a paired restoration dataset in one of the known layouts (module docstring).

    ``layout``: ``auto``, ``gopro``, ``sots``, ``pairs``. Raises ``ValueError`` naming the folders it
    looked for when the layout is not recognised.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"dataset folder {root} does not exist")
    name = name or root.name
    if layout in ("auto", "gopro"):
        seqs = sorted(p for p in root.iterdir() if (p / "blur").is_dir() and (p / "sharp").is_dir())
        if seqs:
            items, un_lq, un_gt = [], [], []
            for s in seqs:
                d = pair_folders(s / "blur", s / "sharp", match="name", name=s.name)
                items += [PairedItem(f"{s.name}/{it.name}", it.lq, it.gt) for it in d.items]
                un_lq += [f"{s.name}/{r}" for r in d.unmatched_lq]
                un_gt += [f"{s.name}/{r}" for r in d.unmatched_gt]
            return PairedDataset(name, items, un_lq, un_gt, root, root)
        if layout == "gopro":
            raise ValueError(f"{root}: no <sequence>/blur + <sequence>/sharp folders (GoPro layout)")
    lq_dir, gt_dir = _first_existing(root, LQ_NAMES), _first_existing(root, GT_NAMES)
    if layout in ("auto", "sots", "pairs") and lq_dir is not None and gt_dir is not None:
        match = "prefix" if layout == "sots" or (layout == "auto" and lq_dir.name == "hazy") else "auto"
        if match == "prefix":
            # SOTS names several hazy versions after one ground truth, but a plain name match wins if present
            try:
                return pair_folders(lq_dir, gt_dir, match="auto", name=name)
            except ValueError:
                pass
        return pair_folders(lq_dir, gt_dir, match=match, name=name)
    raise ValueError(
        f"{root}: unrecognised dataset layout {layout!r}: expected <seq>/blur + <seq>/sharp (GoPro), or one of "
        f"{'/'.join(LQ_NAMES)} beside one of {'/'.join(GT_NAMES)}"
    )


# ------------------------------------------------------------------------------------- segmentation


def read_instance_masks(path: str | os.PathLike) -> np.ndarray:
    """Instance masks ``(N, H, W)`` bool from a label-map image or a folder of binary mask images.

    Label maps: greyscale/palette values or RGB colours; 0 / black is background, every other
    distinct value is one instance (in increasing value order). A folder: one binary mask per file
    (non-zero = inside), in sorted file order; all must share one size.
    """
    from PIL import Image

    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
        if not files:
            raise ValueError(f"{path}: mask folder is empty")
        masks = []
        for f in files:
            try:
                a = np.asarray(Image.open(f))
            except Exception as e:
                raise ValueError(f"{f}: not a readable mask image ({e})") from e
            a = a.any(axis=-1) if a.ndim == 3 else a != 0
            if masks and a.shape != masks[0].shape:
                raise ValueError(f"{f}: mask size {a.shape} differs from {masks[0].shape} of {files[0].name}")
            masks.append(a)
        return np.stack(masks)
    try:
        a = np.asarray(Image.open(path))
    except FileNotFoundError as e:
        raise FileNotFoundError(f"mask file {path} does not exist") from e
    except Exception as e:
        raise ValueError(f"{path}: not a readable mask image ({e})") from e
    if a.ndim == 3:
        a = a[..., :3].astype(np.int64)
        a = (a[..., 0] << 16) | (a[..., 1] << 8) | a[..., 2]
    values = [v for v in np.unique(a) if v != 0]
    if not values:
        return np.zeros((0, *a.shape), bool)
    return np.stack([a == v for v in values])


@dataclass(frozen=True)
class SegmentationItem:
    """One image with its instance masks: ``load_image() -> (H, W, 3) float32``, ``load_masks() -> (N, H, W) bool``."""

    name: str
    load_image: Callable[[], np.ndarray]
    load_masks: Callable[[], np.ndarray]


@dataclass
class SegmentationDataset:
    """A list of :class:`SegmentationItem` with a name and a description for provenance."""

    name: str
    items: list[SegmentationItem]
    info: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self) -> Iterator[SegmentationItem]:
        return iter(self.items)

    def describe(self) -> dict:
        return {"name": self.name, "count": len(self.items), **self.info}

    @classmethod
    def from_shapes(cls, shapes) -> SegmentationDataset:
        """Wrap a :class:`robustsam_prior.data.ShapesDataset`."""
        items = []
        for i in range(len(shapes)):
            items.append(
                SegmentationItem(
                    shapes.name(i),
                    (lambda i=i: shapes[i].image),
                    (lambda i=i: shapes[i].masks),
                )
            )
        d = shapes.describe()
        names = [shapes.name(i) for i in range(len(shapes))]
        return cls("shapes", items, {**d, "file_list_sha256": file_list_hash(names)})


def open_segmentation_dataset(root: str | os.PathLike, *, name: str | None = None) -> SegmentationDataset:
    """``root/images/*`` + ``root/masks/<stem>.png`` (label map) or ``root/masks/<stem>/`` (binary masks).

    Images without masks are reported and left out; a dataset with no usable pair raises ``ValueError``.
    """
    from robustsam_prior.core.io import read_image

    root = Path(root)
    img_dir, mask_dir = root / "images", root / "masks"
    for d in (img_dir, mask_dir):
        if not d.is_dir():
            raise FileNotFoundError(f"{root}: expected folders images/ and masks/ ({d} missing)")
    images = _list_images(img_dir, recursive=False)
    items, missing, entries = [], [], []
    for rel, p in sorted(images.items()):
        stem = Path(rel).stem
        cands = [mask_dir / stem] if (mask_dir / stem).is_dir() else sorted(mask_dir.glob(f"{stem}.png"))
        if not cands:
            missing.append(rel)
            continue
        m = cands[0]
        items.append(
            SegmentationItem(
                stem,
                (lambda p=p: read_image(p).pixels),
                (lambda m=m: read_instance_masks(m)),
            )
        )
        entries.append(f"{rel}\t{m.relative_to(root).as_posix()}")
    for rel in missing:
        logger.warning("%s: no masks for image %s", root, rel)
    if not items:
        raise ValueError(f"{root}: no image in images/ has masks in masks/ ({len(images)} images)")
    return SegmentationDataset(
        name or root.name, items, {"file_list_sha256": file_list_hash(entries), "unmatched_images": missing}
    )
