"""Physically based haze: the atmospheric scattering model.

``I = J * t + A * (1 - t)``, ``t = exp(-beta * d)`` (Koschmieder's law as used by McCartney and by
He et al., "Single image haze removal using dark channel prior", CVPR 2009), with ``J`` the clear
image, ``d`` the scene depth, ``beta`` the scattering coefficient and ``A`` the airlight. Without a
depth map, :func:`synthetic_depth` makes a plausible one: a ground plane receding to a (slightly
tilted) horizon, sky at the far end, modulated by smooth fractal noise.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .base import Out, ParamRange, check_image, register, same
from .weather import composite, fractal_noise

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from .batch import Degraded


def synthetic_depth(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """A smooth ``h x w`` float32 relative depth map in [0, 1] (0 = nearest, 1 = farthest).

    Rows below a random horizon (30-60% of the height, tilted by up to +-10% across the width)
    follow a ground plane, ``d ~ 1 / (row - horizon)``, from 0.1-0.3 at the bottom up to 1 at the
    horizon; the sky above is at depth 1. A smooth fractal field perturbs it by up to +-25% (hills,
    buildings), the result is lightly smoothed and rescaled to exactly [0, 1].
    """
    import cv2

    if h < 2 or w < 2:
        raise ValueError(f"synthetic_depth needs at least 2x2 pixels, got {h}x{w}")
    horizon = rng.uniform(0.3, 0.6) * h + rng.uniform(-0.1, 0.1) * h * (np.arange(w) - w / 2) / w
    near = rng.uniform(0.1, 0.3)
    rows = np.arange(h, dtype=np.float32)[:, None]
    below = rows - horizon[None, :]
    k = near * (h - horizon[None, :])  # depth `near` at the bottom row
    depth = np.where(below > k, k / np.maximum(below, 1e-6), 1.0).astype(np.float32)
    depth *= 1 + 0.25 * fractal_noise(h, w, rng, cells=rng.uniform(2, 4))
    depth = cv2.GaussianBlur(depth, (0, 0), sigmaX=max(1.0, 0.01 * min(h, w)), borderType=cv2.BORDER_REFLECT)
    lo, hi = float(depth.min()), float(depth.max())
    return ((depth - lo) / (hi - lo) if hi > lo else np.zeros_like(depth)).astype(np.float32)


@register(
    "haze",
    family="haze",
    params=(
        ParamRange(
            "beta",
            ((0.2, 0.5), (0.5, 0.9), (0.9, 1.5), (1.5, 2.2), (2.2, 3.0)),
            help="scattering coefficient per unit of (relative, [0, 1]) depth",
            bounds=(0, None),
        ),
        ParamRange("airlight", same(0.7, 1.0), help="grey airlight A", bounds=(0, 1)),
    ),
    summary="haze from the scattering model I = J t + A (1 - t), t = exp(-beta d), synthetic depth",
    reference="airlight range of RESIDE (Li et al., TIP 2019); beta per severity is ours, for depth in [0, 1] "
    "(t at the farthest point: 0.6..0.8 at severity 1, 0.05..0.1 at severity 5)",
)
def haze(
    image: np.ndarray,
    *,
    beta: float,
    airlight: float | np.ndarray,
    rng: np.random.Generator | None = None,
    depth: np.ndarray | None = None,
) -> Out:
    """Haze one ``HxWx3`` image. ``depth`` (``HxW``, >= 0, any unit matching ``beta``) defaults to
    :func:`synthetic_depth` drawn from ``rng``. ``airlight`` is a grey level or an RGB triple."""
    x = check_image(image)
    h, w = x.shape[:2]
    synthetic = depth is None
    if synthetic:
        if rng is None:
            raise ValueError("haze needs a depth map or an rng to draw a synthetic one")
        depth = synthetic_depth(h, w, rng)
    depth = np.asarray(depth, dtype=np.float32)
    if depth.shape != (h, w):
        raise ValueError(f"depth shape {depth.shape} does not match the image {(h, w)}")
    if not np.isfinite(depth).all() or depth.min() < 0:
        raise ValueError("depth must be finite and >= 0")
    if beta < 0:
        raise ValueError(f"beta must be >= 0, got {beta}")
    a = np.broadcast_to(np.asarray(airlight, np.float32), (3,)).copy()
    t = np.exp(-np.float32(beta) * depth).astype(np.float32)
    return Out(composite(x, t, a), transmission=t, airlight=a, extra={"synthetic_depth": synthetic})


def add_haze(
    image: np.ndarray | torch.Tensor,
    depth: np.ndarray | torch.Tensor | None = None,
    beta: float = 1.0,
    airlight: float | tuple[float, float, float] = 0.9,
    rng: np.random.Generator | None = None,
) -> Out | Degraded:
    """Haze with explicit parameters.

    Args:
        image: ``HxWx3`` numpy float in [0, 1] (returns an :class:`Out`), or a ``(B, 3, H, W)`` tensor
            (returns a :class:`~robustsam_prior.degradations.Degraded` with ``transmission``
            ``(B, 1, H, W)`` and ``airlight`` ``(B, 3)``).
        depth: ``HxW`` (numpy) / ``(B, 1, H, W)`` or ``(B, H, W)`` (tensor) depth >= 0; None draws
            :func:`synthetic_depth` per image from ``rng`` (a fresh unseeded generator if None).
        beta: scattering coefficient; airlight: grey level or RGB.
    """
    rng = rng if rng is not None else np.random.default_rng()
    if isinstance(image, np.ndarray):
        return haze(
            image, beta=beta, airlight=airlight, rng=rng, depth=None if depth is None else np.asarray(depth)
        )
    from .batch import check_batch, collect

    check_batch(image)
    b = image.shape[0]
    depths: list[np.ndarray | None] = [None] * b
    if depth is not None:
        d = depth.detach().cpu().numpy() if hasattr(depth, "detach") else np.asarray(depth)
        if d.ndim == 4:
            d = d[:, 0]
        if d.ndim == 2:
            d = np.broadcast_to(d, (b, *d.shape))
        if d.shape[0] != b:
            raise ValueError(f"depth batch {d.shape[0]} does not match the image batch {b}")
        depths = [d[i] for i in range(b)]
    outs = [
        haze(
            image[i].detach().float().cpu().permute(1, 2, 0).numpy(),
            beta=beta,
            airlight=airlight,
            rng=rng,
            depth=depths[i],
        )
        for i in range(b)
    ]
    airlight_json = airlight if np.isscalar(airlight) else [float(v) for v in airlight]
    return collect(image, outs, {"beta": float(beta), "airlight": airlight_json}, labels=None)
