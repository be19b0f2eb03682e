"""Blur: resampling, linear motion, zoom, defocus (disk) and camera-shake trajectories.

All functions take ``HxWx3`` float32 in [0, 1]. Kernel blurs return the kernel they used
(``Out.kernel``), so ``out == blur_with_kernel(image, kernel)`` exactly.
"""

from __future__ import annotations

import numpy as np

from .base import Out, ParamRange, check_image, register, same
from .kernels import blur_with_kernel, camera_shake_kernel, defocus_kernel, line_kernel


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
    import cv2

    x = check_image(image)
    h, w = x.shape[:2]
    cx, cy = (w - 1) / 2, (h - 1) / 2
    # 1, 1 + step, ... below max_factor (at least the unzoomed copy)
    factors = 1.0 + step * np.arange(max(1, int(np.ceil((max_factor - 1.0) / step - 1e-9))))
    acc = np.zeros_like(x)
    for z in factors:  # a handful of whole-image warps, not a per-pixel loop
        m = np.array([[z, 0, (1 - z) * cx], [0, z, (1 - z) * cy]], dtype=np.float64)
        acc += cv2.warpAffine(x, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    return Out(np.clip(acc / len(factors), 0.0, 1.0), extra={"n_copies": int(len(factors))})


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
            ((7, 11), (11, 17), (17, 25), (25, 35), (35, 45)),
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
