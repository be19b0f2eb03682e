"""A procedural dataset of textured, overlapping shapes with exact instance masks.

Each scene is a textured background with ``num_shapes`` filled shapes (ellipses, rotated rectangles,
triangles and regular polygons) painted back to front. Each shape has its own texture (stripes,
checkerboard or smooth noise over a base colour), so boundaries are visible to a segmenter but
interiors are not flat. Pixels are assigned without anti-aliasing, so the visible part of every
shape (what later shapes leave uncovered) is its exact ground-truth mask.

It exists so that the segmentation-robustness benchmark and RobustSAM's anti-degradation training
run without any download. Scenes are deterministic functions of ``(seed, index)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["SHAPE_KINDS", "ShapesDataset", "ShapesScene", "make_shapes_scene"]

SHAPE_KINDS = ("ellipse", "rectangle", "triangle", "polygon")


@dataclass
class ShapesScene:
    """One scene.

    - ``image``: ``(H, W, 3)`` float32 RGB in [0, 1];
    - ``labels``: ``(H, W)`` int32, 0 = background, ``k`` = the ``k``-th painted shape (1-based), only
      where it is visible;
    - ``masks``: ``(N, H, W)`` bool, the visible part of each shape kept as an instance (those with at
      least ``min_area`` visible pixels), in painting order;
    - ``instance_ids``: ``(N,)`` int, the label value of each mask;
    - ``kinds``: the shape kind of each mask.
    """

    image: np.ndarray
    labels: np.ndarray
    masks: np.ndarray
    instance_ids: np.ndarray
    kinds: list[str]


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cells: int) -> np.ndarray:
    """Bilinearly upsampled uniform noise in [0, 1], ``(h, w)`` float32."""
    import cv2

    small = rng.random((cells, cells), dtype=np.float32)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


def _texture(rng: np.random.Generator, h: int, w: int, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    """A random texture ``(h, w, 3)`` float32 in [0, 1]: base colour modulated by one pattern."""
    base = rng.uniform(0.1, 0.9, size=3).astype(np.float32)
    amp = np.float32(rng.uniform(0.05, 0.2))
    kind = rng.integers(3)
    if kind == 0:  # stripes
        theta = rng.uniform(0, np.pi)
        period = rng.uniform(4, 16)
        pat = 0.5 + 0.5 * np.sin(2 * np.pi * (xx * np.cos(theta) + yy * np.sin(theta)) / period)
    elif kind == 1:  # checkerboard
        cell = int(rng.integers(3, 10))
        pat = ((yy // cell + xx // cell) % 2).astype(np.float32)
    else:  # smooth noise
        pat = _smooth_noise(rng, h, w, int(rng.integers(3, 9)))
    tex = base[None, None, :] + amp * (pat.astype(np.float32)[..., None] - 0.5) * 2
    return np.clip(tex, 0, 1).astype(np.float32)


def _shape_mask(
    rng: np.random.Generator, kind: str, h: int, w: int, yy: np.ndarray, xx: np.ndarray
) -> np.ndarray:
    """Inside test on pixel centres for one random shape of ``kind``; ``(h, w)`` bool."""
    s = min(h, w)
    cy, cx = rng.uniform(0.15, 0.85) * h, rng.uniform(0.15, 0.85) * w
    y, x = yy + 0.5 - cy, xx + 0.5 - cx
    theta = rng.uniform(0, np.pi)
    c, sn = np.cos(theta), np.sin(theta)
    u, v = x * c + y * sn, -x * sn + y * c  # coordinates in the shape's rotated frame
    if kind == "ellipse":
        a, b = rng.uniform(0.1, 0.3, size=2) * s
        return (u / a) ** 2 + (v / b) ** 2 <= 1
    if kind == "rectangle":
        a, b = rng.uniform(0.08, 0.28, size=2) * s
        return (np.abs(u) <= a) & (np.abs(v) <= b)
    n = 3 if kind == "triangle" else int(rng.integers(5, 8))
    r = rng.uniform(0.12, 0.3) * s
    # convex regular polygon: inside all n half-planes at distance r cos(pi/n) from the centre
    inside = np.ones((h, w), bool)
    for k in range(n):
        phi = 2 * np.pi * k / n
        inside &= u * np.cos(phi) + v * np.sin(phi) <= r * np.cos(np.pi / n)
    return inside


def make_shapes_scene(
    *,
    height: int = 128,
    width: int = 128,
    num_shapes: int | tuple[int, int] = (3, 6),
    min_area: int | None = None,
    rng: np.random.Generator | None = None,
    seed: int | None = None,
) -> ShapesScene:
    """Generate one scene (see :class:`ShapesScene`).

    ``num_shapes`` is a count or an inclusive range drawn uniformly. ``min_area`` (default 1% of the
    image) is the smallest visible area for a shape to be kept as an instance mask. Pass ``rng`` or
    ``seed`` (not both); the same seed gives the same scene.
    """
    if rng is not None and seed is not None:
        raise ValueError("pass rng or seed, not both")
    if height < 8 or width < 8:
        raise ValueError(f"scenes need at least 8x8 pixels, got {height}x{width}")
    rng = rng if rng is not None else np.random.default_rng(seed)
    lo, hi = (num_shapes, num_shapes) if isinstance(num_shapes, int) else num_shapes
    if not 1 <= lo <= hi:
        raise ValueError(f"num_shapes must be >= 1 (or a range lo <= hi), got {num_shapes}")
    n = int(rng.integers(lo, hi + 1))
    min_area = max(1, int(0.01 * height * width)) if min_area is None else min_area
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    image = _texture(rng, height, width, yy, xx)
    labels = np.zeros((height, width), np.int32)
    kinds_all = []
    for k in range(1, n + 1):
        kind = SHAPE_KINDS[int(rng.integers(len(SHAPE_KINDS)))]
        inside = _shape_mask(rng, kind, height, width, yy, xx)
        image[inside] = _texture(rng, height, width, yy, xx)[inside]
        labels[inside] = k
        kinds_all.append(kind)
    ids = [k for k in range(1, n + 1) if np.count_nonzero(labels == k) >= min_area]
    masks = np.stack([labels == k for k in ids]) if ids else np.zeros((0, height, width), bool)
    return ShapesScene(
        image=image,
        labels=labels,
        masks=masks,
        instance_ids=np.asarray(ids, dtype=np.int64),
        kinds=[kinds_all[k - 1] for k in ids],
    )


class ShapesDataset:
    """``length`` deterministic scenes; item ``i`` depends only on ``(seed, i)``.

    ``dataset[i]`` returns a :class:`ShapesScene`; ``dataset.name(i)`` a file-name-like key
    (``shapes_00000``). Usable as a map-style ``torch.utils.data.Dataset`` (``__len__``/``__getitem__``).
    """

    def __init__(
        self,
        *,
        length: int = 16,
        height: int = 128,
        width: int = 128,
        num_shapes: int | tuple[int, int] = (3, 6),
        min_area: int | None = None,
        seed: int = 0,
    ) -> None:
        if length < 1:
            raise ValueError(f"length must be >= 1, got {length}")
        self.length = length
        self.height, self.width = height, width
        self.num_shapes = num_shapes
        self.min_area = min_area
        self.seed = seed

    def __len__(self) -> int:
        return self.length

    def name(self, index: int) -> str:
        return f"shapes_{index:05d}"

    def __getitem__(self, index: int) -> ShapesScene:
        if not -self.length <= index < self.length:
            raise IndexError(f"index {index} out of range for a ShapesDataset of length {self.length}")
        index %= self.length
        return make_shapes_scene(
            height=self.height,
            width=self.width,
            num_shapes=self.num_shapes,
            min_area=self.min_area,
            rng=np.random.default_rng([self.seed, index]),
        )

    def describe(self) -> dict:
        """JSON-able description (for benchmark provenance)."""
        return {
            "name": "shapes",
            "length": self.length,
            "height": self.height,
            "width": self.width,
            "num_shapes": list(self.num_shapes) if not isinstance(self.num_shapes, int) else self.num_shapes,
            "min_area": self.min_area,
            "seed": self.seed,
        }
