"""Procedural clean training images: dead leaves.

The dead-leaves model (Matheron, 1968; studied as a model of natural images by Lee, Mumford and
Huang, IJCV 2001) stacks opaque disks at random positions with radii drawn from a power law
``p(r) ~ r**-alpha`` on ``[rmin, rmax]``. With ``alpha = 3`` the images are scale invariant: sharp
occlusion edges at every scale and orientation, flat regions of every size, which is the statistics
that deblurring and denoising networks have to learn. Achddou, Gousseau and Ladjal ("Synthetic
images as a regularity prior for image restoration neural networks", SSVM 2021) trained restoration
networks on such images and came close to training on natural photos. Here they add edge variety
to the few photos that installed packages ship (``data.*.dead_leaves`` in a training recipe).

Rendering is front to back (each new disk only paints pixels that no earlier disk covered, which
gives the same law as painting back to front without drawing the hidden disks), at twice the output
size and averaged down 2x2, so edges are anti-aliased like a camera's.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SUPERSAMPLE = 2


def _radii(rng: np.random.Generator, n: int, rmin: float, rmax: float, alpha: float) -> np.ndarray:
    """``n`` radii with density ``~ r**-alpha`` on ``[rmin, rmax]`` (inverse CDF; ``alpha != 1``)."""
    u = rng.random(n)
    a = 1.0 - alpha
    return (rmin**a + u * (rmax**a - rmin**a)) ** (1.0 / a)


def dead_leaves(
    size: int,
    rng: np.random.Generator,
    *,
    rmin: float = 1.5,
    rmax: float | None = None,
    alpha: float = 3.0,
    coverage: float = 0.999,
    max_disks: int = 200_000,
) -> np.ndarray:
    """A ``size x size x 3`` float32 dead-leaves image in [0, 1].

    ``rmin``/``rmax``: radius range in output pixels (``rmax`` defaults to ``size / 2``); ``alpha``:
    power-law exponent; disks are added until ``coverage`` of the pixels is painted (or
    ``max_disks``), and what is left takes the mean colour. Each disk's colour is a random RGB colour
    pulled towards a random grey by a random amount, so saturation varies as in photographs.
    """
    if size < 2:
        raise ValueError(f"dead_leaves needs size >= 2, got {size}")
    if alpha == 1.0:
        raise ValueError("alpha must not be 1 (the radius law is r**-alpha with alpha != 1)")
    rmax = size / 2 if rmax is None else rmax
    if not 0 < rmin <= rmax:
        raise ValueError(f"expected 0 < rmin <= rmax, got rmin={rmin}, rmax={rmax}")
    s = SUPERSAMPLE
    n = size * s
    image = np.zeros((n, n, 3), np.float32)
    covered = np.zeros((n, n), bool)
    left = n * n
    target = (1.0 - coverage) * n * n
    batch = 1024
    drawn = 0
    while left > target and drawn < max_disks:
        radii = _radii(rng, batch, rmin * s, rmax * s, alpha)
        centres = rng.uniform(-0.1 * n, 1.1 * n, size=(batch, 2))
        grey = rng.random((batch, 1))
        colours = grey + rng.uniform(0.2, 1.0, (batch, 1)) * (rng.random((batch, 3)) - grey)
        for r, (cy, cx), c in zip(radii, centres, colours.astype(np.float32)):
            y0, y1 = max(0, int(cy - r)), min(n, int(cy + r) + 1)
            x0, x1 = max(0, int(cx - r)), min(n, int(cx + r) + 1)
            if y0 >= y1 or x0 >= x1:
                continue
            yy = np.arange(y0, y1)[:, None] + 0.5 - cy
            xx = np.arange(x0, x1)[None, :] + 0.5 - cx
            free = (yy * yy + xx * xx <= r * r) & ~covered[y0:y1, x0:x1]
            k = int(free.sum())
            if k:
                image[y0:y1, x0:x1][free] = c
                covered[y0:y1, x0:x1] |= free
                left -= k
        drawn += batch
    if left:
        image[~covered] = image[covered].mean(axis=0) if covered.any() else 0.5
    return image.reshape(size, s, size, s, 3).mean(axis=(1, 3)).clip(0, 1).astype(np.float32)


@dataclass(frozen=True)
class DeadLeavesImage:
    """A dead-leaves clean image that a dataset lists beside its files (seeded, made on demand)."""

    index: int
    size: int
    seed: int

    @property
    def name(self) -> str:
        return f"dead_leaves_{self.index:04d}"

    def render(self) -> np.ndarray:
        return dead_leaves(self.size, np.random.default_rng([self.seed, self.index]))
