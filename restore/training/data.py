"""Training and validation data for restoration networks.

A *sample position* ``p`` (0, 1, 2, ... over the whole run) fully determines a training sample: the
image (through a per-epoch permutation seeded by ``seed`` and ``p // n``), the crop, the joint
augmentation and the degradation (a ``numpy`` generator seeded with ``(seed, p)``). So the data do
not depend on worker processes, on the number of DDP ranks or on where a run was resumed: the global
batch of step ``t`` is positions ``t*B .. t*B+B-1`` and rank ``r`` of ``W`` takes the contiguous
slice ``r*B/W .. (r+1)*B/W - 1`` (the same global order as a single-process run).

Pairs come from (``DatasetOptions.type``):

- ``synthetic``: clean images (files, plus ``dead_leaves`` procedural images made on demand from the
  seed, :mod:`restore.training.procedural`) degraded with :func:`robustsam_prior.degradations.degrade`. With
  ``variants = 0`` each sample is a fresh degradation of the augmented crop and the prior is computed
  on the degraded crop, batched, in the training process (:meth:`PairDataset.needs_prior_on_batch`).
  With ``variants = N`` each image has ``N`` fixed degraded versions, whose prior is computed once on
  the whole degraded image (kept in memory, and in a ``PriorCache`` if configured), then cropped and
  augmented jointly with the images, so no image is segmented twice across epochs. Fixed versions,
  and the validation pairs, follow the project's one seeding rule
  (:func:`robustsam_prior.degradations.file_seed`): version ``v`` of the file at relative path ``REL``
  draws its kind and severity from, and is degraded with, ``file_seed(seed, REL, v)``, whatever the
  other files, their order or the ranks. With one kind, one severity, ``gamma: 1`` and ``quantise: true``
  the validation input of a file is exactly what ``robustsam-restore degrade`` writes for it with the
  set's seed (a recipe's ``seed`` for training sets, ``data.val_seed`` or else ``seed + 1000003`` for validation sets).
- ``paired``: degraded/clean files matched by name; the prior is computed once per whole input image.
- ``video``: the mean of consecutive frames of high-frame-rate video against the middle frame, and
  ``depth_haze``: clean photos hazed through their metric depth (:mod:`restore.training.sources`);
  both as fixed variants, like synthetic data with ``variants = N`` (``0`` counts as one).

:class:`MixedDataset` draws each sample position from one of several such sets (``data.train`` and
``data.train_extra``) with probabilities proportional to their weights, also seeded by position.

Images are ``(3, H, W)`` float32 tensors in [0, 1]; label maps ``(H, W)`` int32 with ids 0..K-1
(relabelled after cropping). Geometric augmentation (flips, rot90, rescale) is applied identically to
input, ground truth and labels (labels with nearest sampling).
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

# DataError and the file helpers live in .files (the real-data sources use them too); callers may keep
# importing them from here
from .files import DataError, config_path, cut_border, list_images, match_pairs, read_rgb
from .options import AugmentOptions, DatasetOptions
from .procedural import DeadLeavesImage
from .sources import DepthHaze, FrameItem, VideoWindows

if TYPE_CHECKING:  # pragma: no cover
    from robustsam_prior.cache import PriorCache
    from robustsam_prior.prior import Prior, PriorOutput

logger = logging.getLogger(__name__)

_SEED_SALT = 0x5EED


def relabel(labels: np.ndarray) -> np.ndarray:
    """Compact ids 0..K-1 (a crop keeps only some regions of the whole-image map)."""
    _, inverse = np.unique(labels, return_inverse=True)
    return inverse.reshape(labels.shape).astype(np.int32)


def sample_rng(seed: int, position: int) -> np.random.Generator:
    return np.random.default_rng([_SEED_SALT, seed, position])


def _resize(arr: np.ndarray, h: int, w: int, nearest: bool) -> np.ndarray:
    import cv2

    interp = cv2.INTER_NEAREST if nearest else (cv2.INTER_AREA if h < arr.shape[0] else cv2.INTER_LINEAR)
    out = cv2.resize(arr, (w, h), interpolation=interp)
    return out


def augment_geometry(
    arrays: list[np.ndarray | None], rng: np.random.Generator, aug: AugmentOptions
) -> list[np.ndarray | None]:
    """Apply the same hflip/vflip/rot90 to every ``HxW[xC]`` array (labels included)."""
    hflip = aug.hflip and rng.random() < 0.5
    vflip = aug.vflip and rng.random() < 0.5
    k = int(rng.integers(4)) if aug.rot90 else 0
    out = []
    for a in arrays:
        if a is not None:
            if hflip:
                a = a[:, ::-1]
            if vflip:
                a = a[::-1]
            if k:
                a = np.rot90(a, k, axes=(0, 1))
            a = np.ascontiguousarray(a)
        out.append(a)
    return out


def color_jitter(
    image: np.ndarray, rng: np.random.Generator, strength: float, *, like: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray | None]:
    """Brightness, contrast and saturation gains in ``1 +- strength`` on a clean image (and its input).

    The map is affine per pixel: saturation scales the offset from the pixel's grey value, contrast
    the offset from ``image``'s mean (one constant), brightness multiplies. ``like``, a degraded
    version of ``image``, gets the *same* map (same gains, same mean constant): an affine map ``f``
    commutes with any degradation that mixes pixels with weights summing to one, so for haze
    ``f(J t + A (1 - t)) = f(J) t + f(A) (1 - t)`` (the scene ``f(J)`` under airlight ``f(A)``) and for
    blur ``f(k * J) = k * f(J)``; the pair stays physically consistent up to clipping at 0 and 1.
    Returns ``(image, like)``; ``like`` stays ``None`` when not given.
    """
    if strength <= 0:
        return image, like
    b, c, s = rng.uniform(1 - strength, 1 + strength, size=3)
    mean = float(image.mean())

    def apply(x: np.ndarray) -> np.ndarray:
        gray = x.mean(axis=2, keepdims=True)
        x = gray + (x - gray) * s
        x = mean + (x - mean) * c
        return np.clip(x * b, 0.0, 1.0).astype(np.float32)

    return apply(image), None if like is None else apply(like)


@dataclass
class Sample:
    """One training/validation pair: ``lq``, ``gt`` ``(3,h,w)`` float32; ``labels`` ``(h,w)`` int32 or None."""

    lq: torch.Tensor
    gt: torch.Tensor
    labels: torch.Tensor | None
    name: str


def _chw(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1), dtype=np.float32))


def prior_of_whole_image(
    prior: Prior, image: torch.Tensor, *, cache: PriorCache | None = None, cache_only: bool = False,
    source: str | Path | None = None, key: str = "",
) -> PriorOutput:
    """``prior(image)`` for one whole image ``(1, 3, H, W)`` in [0, 1], through ``cache`` (a
    ``PriorCache``) when given. With ``cache_only`` the prior is never run: an image without an entry
    raises :class:`DataError` naming ``source`` (its file) and how to fill the cache."""
    if cache is None:
        return prior(image)
    if not cache_only:
        return cache.get_or_compute(prior, image)
    out = cache.lookup(prior, image)
    if out is None:
        where = Path(source) if isinstance(source, (str, Path)) else None
        folder = where.parent if where is not None else "FOLDER"
        raise DataError(
            f"{key}: {where if where is not None else source}: no {prior.name} prior in the prior cache {cache.root} "
            f"(prior.cache_only: the prior is not run during training). Fill the cache first with "
            f"`robustsam-restore prior-cache {folder} --prior {prior.name} --cache {cache.root}` and the recipe's "
            "prior options (--prior-checkpoint, --prior-option KEY=VALUE): entries are keyed by the image, the "
            "checkpoint and every setting"
        )
    cache.stats["hits"] += 1
    return out.to(image.device)


class PairDataset(torch.utils.data.Dataset):
    """Training pairs indexed by sample position (see module docstring); also the validation set.

    ``prior`` is the built prior object (``None`` when the network needs none). For ``paired`` data and
    ``variants > 0`` whole-image priors are computed lazily and memoised (in ``prior_cache`` too, if
    given). Validation (``train=False``): one fixed pair per image (variant 0 seeded by its index),
    centre crop of ``crop_size`` (0 = whole image), no augmentation; index = image index.
    """

    def __init__(
        self,
        opts: DatasetOptions,
        *,
        key: str,
        seed: int,
        train: bool,
        prior: Prior | None = None,
        prior_cache: PriorCache | None = None,
        prior_cache_only: bool = False,
    ) -> None:
        self.opts, self.key, self.seed, self.train = opts, key, seed, train
        self.prior, self.prior_cache, self.prior_cache_only = prior, prior_cache, prior_cache_only
        self.video: VideoWindows | None = None
        self.depth: DepthHaze | None = None
        if opts.type == "video":
            self.video = VideoWindows(config_path(opts.video_dir), opts, f"{key}")
            self.pairs = [(None, item) for item in self.video.items]
        elif opts.type == "depth_haze":
            self.clean_files = list_images(config_path(opts.clean_dir), opts, f"{key}.clean_dir")
            self.depth = DepthHaze(config_path(opts.depth_dir), self.clean_files, opts, key)
            self.pairs = [(None, p) for p in self.clean_files]
        elif opts.type == "synthetic":
            self.clean_files = list_images(config_path(opts.clean_dir), opts, f"{key}.clean_dir")
            for i, extra in enumerate(opts.extra_clean_dirs):
                folder, extra_key = config_path(extra), f"{key}.extra_clean_dirs[{i}]"
                if not folder.is_dir():
                    raise DataError(f"{extra_key}: folder not found: {extra!r}")
                self.clean_files += list_images(folder, opts, extra_key)
            self.pairs: list[tuple[Path | None, Path | DeadLeavesImage]] = [(None, p) for p in self.clean_files]
            self.pairs += [
                (None, DeadLeavesImage(i, opts.dead_leaves_size, seed))
                for i in range(opts.dead_leaves)
            ]
            # the names the seeding rule uses: paths relative to each file's folder, dead-leaves names
            folders = [config_path(opts.clean_dir), *map(config_path, opts.extra_clean_dirs)]
            self.rels = [_relative(p, folders) for p in self.clean_files]
            self.rels += [gt.name for _, gt in self.pairs[len(self.clean_files):]]
        else:
            lq = list_images(config_path(opts.lq_dir), opts, f"{key}.lq_dir")
            self.pairs = match_pairs(lq, config_path(opts.gt_dir), opts.gt_match, key)
        self._images: OrderedDict[int, tuple[np.ndarray | None, np.ndarray]] = OrderedDict()
        self._variants: OrderedDict[tuple[int, int], tuple[np.ndarray, np.ndarray | None]] = OrderedDict()
        self._perms: dict[int, np.ndarray] = {}
        self._check_sizes()
        self._warn_if_variants_overflow_cache()

    # -- bookkeeping -------------------------------------------------------------------------------
    @property
    def num_images(self) -> int:
        return len(self.pairs)

    def __len__(self) -> int:
        return self.num_images

    @property
    def fresh(self) -> bool:
        """True when each sample is a fresh degradation whose prior must be computed on the batch."""
        return self.opts.type == "synthetic" and (self.opts.variants == 0 and self.train)

    def needs_prior_on_batch(self) -> bool:
        return self.prior is not None and self.fresh

    def _check_sizes(self) -> None:
        from PIL import Image

        crop = self.opts.crop_size
        if crop == 0:
            return
        smin = self.opts.augment.scale[0] if self.train else 1.0
        for _, gt in self.pairs:
            if isinstance(gt, DeadLeavesImage):
                h = w = gt.size
            elif isinstance(gt, FrameItem):
                with Image.open(self.video.sequences[gt.sequence][gt.frame]) as im:
                    w, h = im.size
            else:
                with Image.open(gt) as im:
                    w, h = im.size
                b = self.opts.crop_border
                h, w = h - 2 * b, w - 2 * b
            if min(h, w) * smin < crop:
                raise DataError(
                    f"{self.key}.crop_size: {crop} is larger than image {gt.name!r} ({w}x{h})"
                    + (f" scaled by {smin}" if smin != 1.0 else "")
                )

    def image_index(self, position: int) -> int:
        """Which image sample position ``position`` uses (a fresh permutation each epoch)."""
        n = self.num_images
        epoch, offset = divmod(position, n)
        perm = self._perms.get(epoch)
        if perm is None:
            perm = np.random.default_rng([_SEED_SALT, self.seed, 1, epoch]).permutation(n)
            self._perms = {epoch: perm}  # keep one epoch: positions are visited in order
        return int(perm[offset])

    def _warn_if_variants_overflow_cache(self) -> None:
        """Fixed variants that do not fit in the memory cache are degraded again, and without a prior
        cache their label maps recomputed, each time they come back: correct, but slow enough to be
        worth a warning at start-up."""
        n = self.num_images * self.opts.variants
        if not self.train or self.opts.variants == 0 or n <= self.opts.cache_images:
            return
        again = "degraded again" if self.prior is None or self.prior_cache is not None else (
            "degraded and segmented again (set prior.cache_dir to read their label maps back)")
        logger.warning(
            "%s: %d images x %d variants = %d fixed variants, more than cache_images=%d: those dropped from "
            "memory are %s each time they are drawn; raise cache_images if memory allows",
            self.key, self.num_images, self.opts.variants, n, self.opts.cache_images, again)

    def _remember(self, cache: OrderedDict, key: Any, value: Any) -> None:
        cache[key] = value
        while len(cache) > self.opts.cache_images:
            cache.popitem(last=False)

    def _load(self, idx: int) -> tuple[np.ndarray | None, np.ndarray]:
        if self.video is not None:  # frames are cached compactly by VideoWindows
            return None, self.video.sharp(idx)
        if idx in self._images:
            self._images.move_to_end(idx)
        else:
            lq_path, gt_path = self.pairs[idx]
            gt = gt_path.render() if isinstance(gt_path, DeadLeavesImage) else cut_border(read_rgb(gt_path), self.opts)
            lq = cut_border(read_rgb(lq_path), self.opts) if lq_path is not None else None
            if lq is not None and lq.shape != gt.shape:
                raise DataError(
                    f"{self.key}: {lq_path.name} is {lq.shape[1]}x{lq.shape[0]} but its ground truth "
                    f"{gt_path.name} is {gt.shape[1]}x{gt.shape[0]}"
                )
            self._remember(self._images, idx, (lq, gt))
            return lq, gt
        return self._images[idx]

    # -- degradation and prior ---------------------------------------------------------------------
    def degrade(
        self, gt: np.ndarray, rng: np.random.Generator, *, rel: str | None = None, variant: int = 0
    ) -> np.ndarray:
        """Degrade an ``HxWx3`` clean image with a kind and severity drawn from ``rng``.

        A fixed version (``rel``: the image's name for the seeding rule, ``variant``: which version) is
        degraded with ``file_seed(self.seed, rel, variant)``; a fresh sample (``rel`` None) with a seed
        drawn from ``rng``.
        """
        from robustsam_prior.degradations import degrade, degrade_file

        d = self.opts.degradation
        kind = d.kinds[int(rng.integers(len(d.kinds)))]
        severity = int(rng.integers(d.severity[0], d.severity[1] + 1))
        x = _chw(gt)[None]
        if d.gamma != 1.0:  # to linear light (stored values are gamma-encoded)
            x = x.clamp(0, 1) ** d.gamma
        if rel is None:
            lq = degrade(x, kind, severity, seed=int(rng.integers(2**31 - 1))).image.clamp(0, 1)
        else:  # rounded by _quantised (quantise: true) after the gamma, as a stored file is
            lq = degrade_file(x, kind, severity, seed=self.seed, rel=rel, bit_depth=None, variant=variant).image
        if d.gamma != 1.0:
            lq = lq ** (1.0 / d.gamma)
        return lq[0].permute(1, 2, 0).numpy().astype(np.float32)

    def make_input(self, idx: int, gt: np.ndarray, variant: int) -> np.ndarray:
        """The degraded input of fixed version ``variant`` of image ``idx`` (clean ``gt``)."""
        if self.opts.type == "synthetic":
            from robustsam_prior.degradations import file_seed

            rel = self.rels[idx]
            rng = np.random.default_rng([_SEED_SALT, 2, file_seed(self.seed, rel, variant)])
            return self._quantised(self.degrade(gt, rng, rel=rel, variant=variant))
        rng = np.random.default_rng([_SEED_SALT, self.seed, 2, idx, variant])
        if self.video is not None:
            return self.video.blurred(idx, rng)  # quantised already
        return self._quantised(self.depth.hazy(idx, gt, rng))

    def _quantised(self, lq: np.ndarray) -> np.ndarray:
        return (np.round(lq * 255.0) / 255.0).astype(np.float32) if self.opts.quantise else lq

    def whole_prior(self, lq: np.ndarray, source: str | Path | None = None) -> np.ndarray | None:
        """Label map ``(H, W)`` of the prior on a whole degraded image (``None`` without a prior);
        ``source`` names the image in errors (its file, or the variant)."""
        if self.prior is None:
            return None
        with torch.no_grad():
            out = prior_of_whole_image(self.prior, _chw(lq)[None], cache=self.prior_cache,
                                       cache_only=self.prior_cache_only, source=source, key=self.key)
        return out.labels[0].cpu().numpy().astype(np.int32)

    def _variant(self, idx: int, variant: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        lq, gt = self._load(idx)
        key = (idx, variant)
        if key in self._variants:
            self._variants.move_to_end(key)
            lq, labels = _unpack(*self._variants[key])
        else:
            lq_path, gt_source = self.pairs[idx]
            source = lq_path
            if lq is None:
                lq = self.make_input(idx, gt, variant)
                source = f"variant {variant} of {gt_source}"
            labels = self.whole_prior(lq, source)
            self._remember(self._variants, key, _pack(lq, labels, eight_bit=self.video is not None or self.opts.quantise))
        return lq, gt, labels

    # -- samples -----------------------------------------------------------------------------------
    def __getitem__(self, position: int) -> Sample:
        if not self.train:
            return self.val_sample(position)
        rng = sample_rng(self.seed, position)
        idx = self.image_index(position)
        name = self.pairs[idx][1].name
        if self.fresh:
            _, gt = self._load(idx)
            lq, labels = None, None
        else:
            variant = int(rng.integers(max(1, self.opts.variants)))
            lq, gt, labels = self._variant(idx, variant)
        aug = self.opts.augment
        crop = self.opts.crop_size
        lo, hi = aug.scale
        if (lo, hi) != (1.0, 1.0):
            h0, w0 = gt.shape[:2]
            s = max(float(rng.uniform(lo, hi)), crop / min(h0, w0))
            h, w = max(crop, round(h0 * s)), max(crop, round(w0 * s))
            if (h, w) != (h0, w0):
                gt = _resize(gt, h, w, False)
                lq = None if lq is None else _resize(lq, h, w, False)
                labels = None if labels is None else _resize(labels, h, w, True)
        h, w = gt.shape[:2]
        y, x = int(rng.integers(h - crop + 1)), int(rng.integers(w - crop + 1))
        sl = (slice(y, y + crop), slice(x, x + crop))
        gt = gt[sl]
        lq = None if lq is None else lq[sl]
        labels = None if labels is None else labels[sl]
        gt, lq, labels = augment_geometry([gt, lq, labels], rng, aug)
        gt, lq = color_jitter(gt, rng, aug.color, like=lq)
        if lq is None:  # fresh synthetic sample
            lq = self._quantised(self.degrade(gt, rng))
        return Sample(_chw(lq), _chw(gt), None if labels is None else torch.from_numpy(relabel(labels)), name)

    def val_sample(self, idx: int) -> Sample:
        lq, gt, labels = self._variant(idx, 0)
        crop = self.opts.crop_size
        if crop:
            h, w = gt.shape[:2]
            y, x = (h - crop) // 2, (w - crop) // 2
            sl = (slice(y, y + crop), slice(x, x + crop))
            lq, gt = lq[sl], gt[sl]
            labels = None if labels is None else labels[sl]
        return Sample(
            _chw(lq), _chw(gt), None if labels is None else torch.from_numpy(relabel(labels)), self.pairs[idx][1].name
        )


def _relative(path: Path, folders: list[Path]) -> str:
    """``path`` relative to the first of ``folders`` that holds it, with ``/`` separators."""
    for folder in folders:
        try:
            return path.relative_to(folder).as_posix()
        except ValueError:
            continue
    return path.name


def _pack(lq: np.ndarray, labels: np.ndarray | None, *, eight_bit: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """Compact copies for the variant cache, losslessly: inputs already quantised to 8 bits as uint8,
    label maps with fewer than 32768 regions as int16."""
    if eight_bit:
        lq = np.round(lq * 255.0).astype(np.uint8)
    if labels is not None and labels.size and labels.max() < 2**15:
        labels = labels.astype(np.int16)
    return lq, labels


def _unpack(lq: np.ndarray, labels: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
    if lq.dtype == np.uint8:
        lq = lq.astype(np.float32) / 255.0
    return lq, None if labels is None else labels.astype(np.int32)


class MixedDataset(torch.utils.data.Dataset):
    """Training samples drawn from several :class:`PairDataset` parts by sample position.

    Position ``p`` goes to part ``k`` with probability ``weights[k] / sum(weights)``, drawn from a
    generator seeded with ``(seed, p)``; the part then makes its own sample ``p``. So, like each part,
    the mixture depends only on the seed and the position (resume and DDP stay exact).
    """

    def __init__(self, parts: list[PairDataset], weights: list[float], *, seed: int) -> None:
        if any(p.needs_prior_on_batch() for p in parts) and len(parts) > 1:
            bad = next(p.key for p in parts if p.needs_prior_on_batch())
            raise DataError(f"{bad}.variants: a mixture of training sets needs fixed variants (variants > 0) "
                            "where a prior is used: fresh samples take their prior per batch")
        total = float(sum(weights))
        if total <= 0:
            raise DataError("data.train.weight: the mixture weights must not all be 0")
        self.parts, self.seed = parts, seed
        self.cumulative = np.cumsum(np.asarray(weights, dtype=np.float64) / total)

    @property
    def num_images(self) -> int:
        return sum(p.num_images for p in self.parts)

    def __len__(self) -> int:
        return self.num_images

    def needs_prior_on_batch(self) -> bool:
        return any(p.needs_prior_on_batch() for p in self.parts)

    def part_of(self, position: int) -> int:
        u = np.random.default_rng([_SEED_SALT, self.seed, 3, position]).random()
        return int(min(np.searchsorted(self.cumulative, u, side="right"), len(self.parts) - 1))

    def __getitem__(self, position: int) -> Sample:
        return self.parts[self.part_of(position)][position]


def collate(samples: list[Sample]) -> dict[str, Any]:
    """Stack samples: ``lq``/``gt`` ``(B,3,h,w)``; ``labels`` ``(B,h,w)`` int32 or None; ``names``."""
    labels = None
    if samples[0].labels is not None:
        labels = torch.stack([s.labels for s in samples])
    return {
        "lq": torch.stack([s.lq for s in samples]),
        "gt": torch.stack([s.gt for s in samples]),
        "labels": labels,
        "names": [s.name for s in samples],
    }


class PositionBatches(torch.utils.data.Sampler):
    """Batches of sample positions for one rank: step ``t`` -> ``t*B + r*b + j`` for ``j < b``.

    ``B`` is the global batch size, ``b = B / world_size``; iteration starts at ``start_step`` (resume).
    """

    def __init__(self, *, global_batch: int, rank: int, world_size: int, start_step: int, steps: int) -> None:
        if global_batch % world_size:
            raise DataError(
                f"train.batch_size: the global batch {global_batch} must be divisible by the number of "
                f"processes ({world_size})"
            )
        self.b = global_batch // world_size
        self.B, self.rank, self.start, self.steps = global_batch, rank, start_step, steps

    def __iter__(self):
        for t in range(self.start, self.steps):
            base = t * self.B + self.rank * self.b
            yield list(range(base, base + self.b))

    def __len__(self) -> int:
        return max(0, self.steps - self.start)
