"""Real-data sources of training pairs: video frame averages and depth-true haze.

:class:`VideoWindows` makes motion blur as the GoPro dataset did (Nah et al., "Deep Multi-scale
Convolutional Neural Network for Dynamic Scene Deblurring", CVPR 2017): the blurry input is the mean
of ``N`` consecutive sharp frames of 240-fps video, optionally in linear light (frames raised to
``gamma``, averaged, raised to ``1 / gamma``: an inverse gamma camera response), and the ground truth
is frame ``N // 2`` of the window (the middle one for odd ``N``). Each *item* is a centre frame
whose widest window (``frames[1]`` frames) lies inside its sequence, so the ground truth of an item
is always its centre frame, whatever ``N`` a variant draws; windows never reach past a sequence's
ends, so a validation split kept in its own folder shares no frame with training.

:class:`DepthHaze` hazes clean photos through their metric depth with the scattering model
``I = J t + A (1 - t)``, ``t = exp(-beta d)`` (RESIDE's indoor training set, Li et al., TIP 2019,
made the same way from NYU-Depth-v2), ``beta`` per metre and a grey airlight ``A`` drawn per variant.

Both keep decoded frames, depth maps and averages as compact arrays (uint8 frames, float32 depth),
since a 1280x720 frame is 11 MB as float32 and a video holds hundreds.
"""

from __future__ import annotations

import fnmatch
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .files import DataError, cut_border
from .options import DatasetOptions


@dataclass(frozen=True)
class FrameItem:
    """One window centre: ``sequence`` index, ``frame`` index inside it, and a display ``name``."""

    sequence: int
    frame: int
    name: str


def _image_files(folder: Path, opts: DatasetOptions) -> list[Path]:
    from robustsam_prior.core.io import is_image_file

    return sorted(
        p for p in folder.iterdir()
        if p.is_file() and is_image_file(p)
        and any(fnmatch.fnmatch(p.name, g) for g in opts.include)
        and not any(fnmatch.fnmatch(p.name, g) for g in opts.exclude)
    )


def _read_u8(path: Path) -> np.ndarray:
    """``HxWx3`` uint8 RGB of an image file (16-bit files rounded to 8 bits)."""
    from robustsam_prior.core.io import read_image

    return np.round(read_image(path).pixels * 255.0).astype(np.uint8)


class VideoWindows:
    """Frame sequences under ``opts.video_dir`` and the blurred windows around their frames.

    Each sub-folder of ``video_dir`` holding image files is one sequence (or ``video_dir`` itself
    when it holds them), frames ordered by file name. ``items`` are the usable window centres,
    every ``opts.frame_step``-th one.
    """

    def __init__(self, folder: Path, opts: DatasetOptions, key: str) -> None:
        self.opts, self.key = opts, key
        folders = [folder] + sorted(p for p in folder.iterdir() if p.is_dir())
        self.sequences = [files for f in folders if (files := _image_files(f, opts))]
        if not self.sequences:
            raise DataError(f"{key}.video_dir: no image files in {folder} or its sub-folders")
        lo, hi = opts.frames
        before, after = hi // 2, hi - hi // 2 - 1  # frames of the widest window before/after its centre
        self.items: list[FrameItem] = []
        for s, files in enumerate(self.sequences):
            centres = range(before, len(files) - after, opts.frame_step)
            self.items += [FrameItem(s, c, f"{files[c].parent.name}/{files[c].name}") for c in centres]
        if opts.max_images is not None:
            self.items = self.items[: opts.max_images]
        if not self.items:
            longest = max(len(f) for f in self.sequences)
            raise DataError(f"{key}.frames: windows of up to {hi} frames need sequences of at least {hi} "
                            f"frames; the longest in {folder} has {longest}")
        self._frames: OrderedDict[tuple[int, int], np.ndarray] = OrderedDict()
        self._max_frames = max(hi, opts.cache_images)

    def frame(self, sequence: int, index: int) -> np.ndarray:
        """One decoded frame, ``HxWx3`` uint8 (least recently used frames are dropped)."""
        key = (sequence, index)
        if key in self._frames:
            self._frames.move_to_end(key)
            return self._frames[key]
        pixels = _read_u8(self.sequences[sequence][index])
        self._frames[key] = pixels
        while len(self._frames) > self._max_frames:
            self._frames.popitem(last=False)
        return pixels

    def sharp(self, item: int) -> np.ndarray:
        """The ground truth of ``item``: its centre frame, ``HxWx3`` float32 in [0, 1]."""
        it = self.items[item]
        return self.frame(it.sequence, it.frame).astype(np.float32) / 255.0

    def blurred(self, item: int, rng: np.random.Generator) -> np.ndarray:
        """The mean of ``N`` frames around ``item`` (``N`` drawn from ``opts.frames``), ``HxWx3`` float32
        in [0, 1], quantised to 8 bits as a saved blurry frame is."""
        it = self.items[item]
        lo, hi = self.opts.frames
        n = int(rng.integers(lo, hi + 1))
        start = it.frame - n // 2
        gamma = self.opts.frame_gamma
        lut = (np.arange(256, dtype=np.float64) / 255.0) ** gamma  # to linear light
        acc = None
        for i in range(start, start + n):
            f = self.frame(it.sequence, i)
            if acc is not None and f.shape != acc.shape:
                raise DataError(f"{self.key}: frame {self.sequences[it.sequence][i]} is "
                                f"{f.shape[1]}x{f.shape[0]}, its neighbours {acc.shape[1]}x{acc.shape[0]}")
            acc = lut[f] if acc is None else acc + lut[f]
        mean = (acc / n) ** (1.0 / gamma)
        return (np.round(mean * 255.0) / 255.0).astype(np.float32)


class DepthHaze:
    """Metric depth maps for the clean images of a ``depth_haze`` set, and the hazing itself."""

    def __init__(self, folder: Path, clean_files: list[Path], opts: DatasetOptions, key: str) -> None:
        self.opts = opts
        by_stem: dict[str, Path] = {}
        for p in sorted(folder.iterdir()):
            if p.suffix.lower() in (".npy", ".png") and p.is_file():
                by_stem.setdefault(p.stem, p)
        missing = [p.name for p in clean_files if p.stem not in by_stem]
        if missing:
            raise DataError(f"{key}.depth_dir: no depth map (.npy or .png, same stem) in {folder} for "
                            f"{len(missing)} image(s), e.g. {missing[:3]}")
        self.files = [by_stem[p.stem] for p in clean_files]
        self._depth: dict[int, np.ndarray] = {}

    def depth(self, idx: int, shape: tuple[int, int]) -> np.ndarray:
        """Depth in metres of image ``idx``, resized (bilinear) to ``shape`` ``(H, W)`` if needed."""
        if idx not in self._depth:
            path = self.files[idx]
            try:
                if path.suffix.lower() == ".npy":
                    d = np.load(path, allow_pickle=False).astype(np.float32)
                else:  # 16-bit PNG in millimetres
                    import cv2

                    d = cv2.imread(str(path), cv2.IMREAD_UNCHANGED).astype(np.float32) / 1000.0
            except (OSError, ValueError, AttributeError) as e:
                raise DataError(f"{path}: unreadable depth map ({e})") from None
            if d.ndim != 2 or not np.isfinite(d).all() or d.min() < 0:
                raise DataError(f"{path}: a depth map must be HxW, finite and >= 0 (got shape {d.shape})")
            self._depth[idx] = cut_border(d, self.opts)
        d = self._depth[idx]
        if d.shape != shape:
            import cv2

            d = cv2.resize(d, (shape[1], shape[0]), interpolation=cv2.INTER_LINEAR)
        return d

    def hazy(self, idx: int, clean: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """``clean`` (``HxWx3`` float32) under haze of a drawn ``beta`` and airlight."""
        from robustsam_prior.degradations.haze import haze

        beta = float(rng.uniform(*self.opts.beta))
        airlight = float(rng.uniform(*self.opts.airlight))
        out = haze(clean, beta=beta, airlight=airlight, depth=self.depth(idx, clean.shape[:2]))
        return out.image.astype(np.float32)
