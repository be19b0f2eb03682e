"""Blur: resampling, linear motion, zoom, defocus (disk) and camera-shake trajectories, uniform or
with camera roll (spatially varying).

All functions take ``HxWx3`` float32 in [0, 1]. Kernel blurs return the kernel they used
(``Out.kernel``), so ``out == blur_with_kernel(image, kernel)`` exactly.
"""

from __future__ import annotations

import numpy as np

from .base import Out, ParamRange, check_image, register, same
from .kernels import (
    blur_with_kernel,
    camera_shake_kernel,
    camera_shake_trajectory,
    defocus_kernel,
    line_kernel,
    rasterize_trajectory,
)

#: Extent (px) of the camera-shake trajectory per severity, for both camera-shake blurs.
SHAKE_SIZES = ((7, 11), (11, 17), (17, 25), (25, 35), (35, 45))


def _mean_of_warps(x: np.ndarray, matrices) -> np.ndarray:
    """Mean of ``x`` warped by each 2x3 affine matrix (source to output, as ``cv2.warpAffine``;
    bilinear, reflected borders), clipped to [0, 1]: whole-image warps, not a per-pixel loop."""
    import cv2

    h, w = x.shape[:2]
    acc, n = np.zeros_like(x), 0
    for m in matrices:
        acc += cv2.warpAffine(x, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        n += 1
    return np.clip(acc / n, 0.0, 1.0)


def _rotation_shift(cx: float, cy: float, angle: float, dx: float, dy: float) -> np.ndarray:
    """The 2x3 matrix of a rotation by ``angle`` (radians, clockwise on screen) about ``(cx, cy)``
    followed by the shift ``(dx, dy)``."""
    import cv2

    m = cv2.getRotationMatrix2D((cx, cy), -np.degrees(angle), 1.0)
    m[:, 2] += (dx, dy)
    return m


@register(
    "resampling_blur",
    family="blur",
    params=(
        ParamRange(
            "factor",
            ((1.5, 2.0), (2.0, 3.0), (4.0, 4.0), (5.0, 6.0), (6.0, 8.0)),
            help="downscale factor; the image is resized down by it and back up (bilinear both ways)",
            bounds=(1, None),
        ),
    ),
    summary="down-sample then up-sample (bilinear), losing detail finer than the factor",
    reference="official: cv2.resize to 1/4 and back, INTER_LINEAR both ways (severity 3)",
)
def resampling_blur(image: np.ndarray, *, factor: float, rng: np.random.Generator | None = None) -> Out:
    import cv2

    x = check_image(image)
    h, w = x.shape[:2]
    small = (max(1, round(w / factor)), max(1, round(h / factor)))
    down = cv2.resize(x, small, interpolation=cv2.INTER_LINEAR)
    return Out(np.clip(cv2.resize(down, (w, h), interpolation=cv2.INTER_LINEAR), 0.0, 1.0))


@register(
    "motion_blur",
    family="blur",
    params=(
        ParamRange(
            "length",
            ((3, 7), (7, 15), (15, 25), (25, 35), (35, 49)),
            unit="px",
            integer=True,
            help="length of the straight motion path",
            bounds=(0, None),
        ),
        ParamRange("angle", same(0.0, 180.0), unit="deg", help="direction, counter-clockwise from +x"),
    ),
    summary="linear motion blur along a random direction (returns the kernel)",
    reference="official: A.MotionBlur(blur_limit=35), kernel 3..35 px (mean 19: our severity 3 is 15..25)",
)
def motion_blur(
    image: np.ndarray, *, length: float, angle: float, rng: np.random.Generator | None = None
) -> Out:
    x = check_image(image)
    kernel = line_kernel(length, angle)
    return Out(blur_with_kernel(x, kernel), kernel=kernel)


@register(
    "zoom_blur",
    family="blur",
    params=(
        ParamRange(
            "max_factor",
            ((1.02, 1.06), (1.06, 1.12), (1.12, 1.33), (1.33, 1.5), (1.5, 1.7)),
            help="largest zoom (about the image centre) averaged into the result",
            bounds=(1, None),
        ),
        ParamRange(
            "step",
            ((0.01, 0.015), (0.02, 0.03), (0.05, 0.07), (0.05, 0.07), (0.06, 0.08)),
            help="zoom increment between averaged copies",
            bounds=(0.001, None),
        ),
    ),
    summary="zoom (radial) blur: mean of the image zoomed by 1, 1+step, ... < max_factor about its centre",
    reference="official: A.ZoomBlur(max_factor=1.33, step_factor=(0.05, 0.07)) (max drawn in 1..1.33)",
)
def zoom_blur(
    image: np.ndarray, *, max_factor: float, step: float, rng: np.random.Generator | None = None
) -> Out:
    """Average of zoomed copies: the copy for factor z has ``out(q) = x(c + (q - c) / z)``,
    ``c`` the image centre, bilinear, reflected borders."""
    x = check_image(image)
    h, w = x.shape[:2]
    cx, cy = (w - 1) / 2, (h - 1) / 2
    # 1, 1 + step, ... below max_factor (at least the unzoomed copy)
    factors = 1.0 + step * np.arange(max(1, int(np.ceil((max_factor - 1.0) / step - 1e-9))))
    warps = (np.array([[z, 0, (1 - z) * cx], [0, z, (1 - z) * cy]], dtype=np.float64) for z in factors)
    return Out(_mean_of_warps(x, warps), extra={"n_copies": int(len(factors))})


@register(
    "defocus_blur",
    family="blur",
    params=(
        ParamRange(
            "radius",
            ((1.0, 2.0), (2.0, 3.5), (3.5, 5.0), (5.0, 7.0), (7.0, 10.0)),
            unit="px",
            help="radius of the (pill-box) circle of confusion",
            bounds=(0, None),
        ),
    ),
    summary="out-of-focus blur with an anti-aliased disk kernel (returns the kernel)",
    reference="pill-box defocus model; ranges ours (ImageNet-C uses disk radii 3..10 on 224 px images)",
)
def defocus_blur(image: np.ndarray, *, radius: float, rng: np.random.Generator | None = None) -> Out:
    x = check_image(image)
    kernel = defocus_kernel(radius)
    return Out(blur_with_kernel(x, kernel), kernel=kernel)


@register(
    "camera_shake_blur",
    family="blur",
    params=(
        ParamRange(
            "size",
            SHAKE_SIZES,
            unit="px",
            help="extent of the shake trajectory (largest of its width and height)",
            bounds=(1, None),
        ),
        ParamRange(
            "anxiety", same(0.2, 0.8), help="how erratic the trajectory is (0 = smooth curve)", bounds=(0, 1)
        ),
    ),
    summary="motion blur from a random camera-shake trajectory (returns the kernel)",
    reference="trajectory model after Boracchi & Foi (IEEE TIP 2012); sizes in the range of GoPro-like "
    "blur at severity 3",
)
def camera_shake_blur(image: np.ndarray, *, size: float, anxiety: float, rng: np.random.Generator) -> Out:
    x = check_image(image)
    kernel = camera_shake_kernel(size, rng, anxiety=anxiety)
    return Out(blur_with_kernel(x, kernel), kernel=kernel)


@register(
    "nonuniform_shake_blur",
    family="blur",
    params=(
        ParamRange(
            "size",
            SHAKE_SIZES,
            unit="px",
            help="extent of the translation part of the shake (as camera_shake_blur's size)",
            bounds=(1, None),
        ),
        ParamRange(
            "roll",
            ((3, 6), (6, 10), (10, 16), (16, 24), (24, 32)),
            unit="px",
            help="extent of the rotation part: how far the pixel farthest from the rotation centre moves",
            bounds=(0, None),
        ),
        ParamRange(
            "anxiety",
            same(0.2, 0.8),
            help="how erratic the trajectories are (0 = smooth curves)",
            bounds=(0, 1),
        ),
        ParamRange(
            "centre_x", same(0.25, 0.75), help="rotation centre, fraction of the width", bounds=(0, 1)
        ),
        ParamRange(
            "centre_y", same(0.25, 0.75), help="rotation centre, fraction of the height", bounds=(0, 1)
        ),
    ),
    summary="spatially varying camera-shake blur: the mean of the image moved along a random path of "
    "shifts and in-plane rotations (blur grows away from the rotation centre)",
    reference="rotational camera shake as in Whyte et al. (IJCV 2012) and Gupta et al. (ECCV 2010); "
    "mean of frames along the path as GoPro (Nah et al., CVPR 2017) makes its blurred images",
)
def nonuniform_shake_blur(
    image: np.ndarray,
    *,
    size: float,
    roll: float,
    anxiety: float,
    centre_x: float,
    centre_y: float,
    rng: np.random.Generator,
) -> Out:
    """Mean of copies of the image along one camera path: shift ``s(t)`` and rotation ``a(t)`` about
    ``c``, each copy ``out_t(R(a) (p - c) + c + s) = x(p)`` (bilinear, reflected borders).

    The translation path is :func:`~.kernels.camera_shake_trajectory` of extent ``size``; the
    rotation path is the first coordinate of a second such trajectory, scaled so that the pixel
    farthest from ``c`` moves ``roll`` pixels over it. Both are centred on their time mean, so
    every pixel's blur is centred on the pixel (to first order), as camera_shake_blur's kernels
    are. Copies are taken densely enough that consecutive ones move at most one pixel anywhere
    (bilinear sampling joins them into a continuous streak).
    """
    x = check_image(image)
    h, w = x.shape[:2]
    shift = camera_shake_trajectory(size, rng, anxiety=anxiety)
    angle = camera_shake_trajectory(2.0, rng, anxiety=anxiety)[:, 0]  # extent <= 1
    cx, cy = centre_x * (w - 1), centre_y * (h - 1)
    radius = max(np.hypot(max(cx, w - 1 - cx), max(cy, h - 1 - cy)), 1.0)
    span = angle.max() - angle.min()
    angle = angle * (roll / radius / span) if span > 0 else np.zeros_like(angle)
    shift = shift - shift.mean(axis=0)
    angle = angle - angle.mean()
    # largest displacement between path steps, anywhere in the image
    step = np.linalg.norm(np.diff(shift, axis=0), axis=1) + np.abs(np.diff(angle)) * radius
    n = int(np.clip(np.ceil(step.sum()), 1, 1024))
    if n == 1:  # under one pixel of motion in all: the image itself
        return Out(x.copy(), extra={"n_copies": 1})
    t, idx = np.linspace(0, len(angle) - 1, n), np.arange(len(angle))
    sx, sy, a = np.interp(t, idx, shift[:, 0]), np.interp(t, idx, shift[:, 1]), np.interp(t, idx, angle)
    warps = (_rotation_shift(cx, cy, th, dx, dy) for dx, dy, th in zip(sx, sy, a, strict=True))
    return Out(_mean_of_warps(x, warps), extra={"n_copies": n})


@register(
    "frame_average_blur",
    family="blur",
    params=(
        ParamRange(
            "size",
            ((4, 10), (10, 20), (20, 32), (32, 48), (48, 64)),
            unit="px",
            help="extent of the camera path over the exposure (largest of its width and height)",
            bounds=(0, None),
        ),
        ParamRange("frames", same(7, 13), integer=True, help="number of sharp frames averaged", bounds=(1, None)),
        ParamRange("anxiety", same(0.0, 0.3), help="how erratic the path is (0 = smooth curve)", bounds=(0, 1)),
        ParamRange("gamma", same(2.2, 2.2), help="average in linear light: x**gamma, mean, **(1/gamma)",
                   bounds=(0.1, 5)),
    ),
    summary="motion blur as high-frame-rate video makes it: the mean of a few sharp frames along a camera "
    "path, in linear light (discrete copies, which a fast motion leaves as ghosts rather than a streak)",
    reference="GoPro (Nah et al., CVPR 2017): 7-13 frames of 240-fps video averaged after an inverse "
    "gamma-2.2 camera response; path model as camera_shake_blur",
)
def frame_average_blur(
    image: np.ndarray, *, size: float, frames: int, anxiety: float, gamma: float, rng: np.random.Generator
) -> Out:
    """Mean of ``frames`` copies of the image shifted to equally spaced times along one camera path
    (:func:`~.kernels.camera_shake_trajectory` of extent ``size``), as one kernel of ``frames``
    bilinear points centred on its mass, applied to ``image ** gamma``."""
    x = check_image(image)
    if size <= 1 or frames <= 1:
        return Out(x.copy(), kernel=np.ones((1, 1), np.float32))
    path = camera_shake_trajectory(size, rng, anxiety=anxiety)
    t = np.linspace(0, len(path) - 1, int(frames))
    idx = np.arange(len(path))
    points = np.stack([np.interp(t, idx, path[:, 0]), np.interp(t, idx, path[:, 1])], axis=1)
    kernel = rasterize_trajectory(points - points.mean(axis=0))
    linear = np.power(x, gamma, dtype=np.float32)
    out = np.power(np.clip(blur_with_kernel(linear, kernel), 0.0, 1.0), 1.0 / gamma).astype(np.float32)
    return Out(out, kernel=kernel, extra={"frames": int(frames)})
