"""Weather: fog, rain and snow, rendered as layers composited over the image.

Each is ``out = image * t + A * (1 - t)`` for a per-pixel transmission ``t`` (HxW, in [0, 1]) and a
colour ``A`` (3,), both returned (``Out.transmission``, ``Out.airlight``) so the effect is exactly
reproducible and invertible. Layers are drawn with vectorised random fields and OpenCV filters.
"""

from __future__ import annotations

import math

import numpy as np

from .base import Out, ParamRange, check_image, register, same
from .kernels import convolve_np, line_kernel


def composite(image: np.ndarray, transmission: np.ndarray, airlight: np.ndarray) -> np.ndarray:
    """``image * t + A * (1 - t)``: ``image`` HxWx3, ``t`` HxW, ``A`` (3,)."""
    t = transmission[..., None].astype(np.float32)
    return np.clip(image * t + np.asarray(airlight, np.float32) * (1 - t), 0.0, 1.0).astype(np.float32)


def fractal_noise(
    h: int, w: int, rng: np.random.Generator, *, cells: float = 4.0, persistence: float = 0.6
) -> np.ndarray:
    """Smooth random field (zero mean, max |value| = 1): octaves of bicubically upsampled Gaussian
    noise, ``cells`` cells across the shorter side at the coarsest octave, amplitude x ``persistence``
    per octave (each octave doubles the resolution), down to about 16 px cells."""
    import cv2

    field = np.zeros((h, w), np.float32)
    amp = 1.0
    n = cells
    while True:
        gh = max(2, int(round(n * h / min(h, w))))
        gw = max(2, int(round(n * w / min(h, w))))
        coarse = rng.standard_normal((gh, gw)).astype(np.float32)
        field += np.float32(amp) * cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC)
        if min(h, w) / n <= 16 or n >= 256:
            break
        amp *= persistence
        n *= 2
    field -= field.mean()
    peak = np.abs(field).max()
    return field / peak if peak > 0 else field


def _blobs(
    h: int,
    w: int,
    rng: np.random.Generator,
    *,
    density: float,
    sigma: float,
    length: float,
    angle: float,
    strength: tuple[float, float],
) -> np.ndarray:
    """A layer of random Gaussian blobs (peak ~ strength) smeared along ``angle`` over ``length`` px."""
    import cv2

    centres = rng.random((h, w), dtype=np.float32) < density
    layer = centres * rng.uniform(*strength, size=(h, w)).astype(np.float32)
    layer = cv2.GaussianBlur(layer, (0, 0), sigmaX=sigma, borderType=cv2.BORDER_REFLECT)
    layer *= np.float32(2 * math.pi * sigma**2)  # an isolated blob peaks at its strength
    kernel = line_kernel(length, angle)
    if kernel.shape != (1, 1):
        layer = convolve_np(layer, kernel)
        layer *= np.float32(max(1.0, length / (math.sqrt(2 * math.pi) * sigma)))  # streaks keep their peak
    return np.clip(layer, 0.0, 1.0)


@register(
    "fog",
    family="weather",
    params=(
        ParamRange(
            "density",
            ((0.1, 0.2), (0.2, 0.3), (0.3, 0.45), (0.45, 0.6), (0.6, 0.75)),
            help="mean opacity of the fog, mean(1 - t)",
            bounds=(0, 1),
        ),
        ParamRange(
            "variation",
            same(0.3, 0.8),
            help="relative spatial variation of the opacity (clouds)",
            bounds=(0, 1),
        ),
        ParamRange("airlight", same(0.75, 0.95), help="grey level of the fog", bounds=(0, 1)),
    ),
    summary="patchy fog: a fractal-noise opacity layer of the given mean, composited in grey",
    reference="official: iaa.Fog + A.RandomFog(fog_coef 0.1..0.2, alpha_coef 0.08) (cloud layer + blurred "
    "fog patches); ours is a fractal cloud layer with an exact mean opacity",
)
def fog(
    image: np.ndarray, *, density: float, variation: float, airlight: float, rng: np.random.Generator
) -> Out:
    """``t = 1 - density * (1 + v * f)``, ``f`` fractal noise with zero mean and max |f| = 1, and
    ``v = min(variation, (1 - density) / density)`` so the opacity stays in [0, 1] and its mean is
    exactly ``density``."""
    x = check_image(image)
    h, w = x.shape[:2]
    v = min(variation, (1 - density) / density) if density > 0 else 0.0
    opacity = np.float32(density) * (1 + np.float32(v) * fractal_noise(h, w, rng, cells=rng.uniform(2, 5)))
    t = np.clip(1 - opacity, 0.0, 1.0).astype(np.float32)
    a = np.full(3, airlight, np.float32)
    return Out(composite(x, t, a), transmission=t, airlight=a)


@register(
    "rain",
    family="weather",
    params=(
        ParamRange(
            "density",
            ((0.0005, 0.001), (0.001, 0.002), (0.002, 0.004), (0.004, 0.007), (0.007, 0.01)),
            help="rain streaks started per pixel",
            bounds=(0, 1),
        ),
        ParamRange(
            "length",
            ((8, 15), (12, 20), (15, 30), (20, 40), (30, 50)),
            unit="px",
            help="streak length",
            bounds=(0, None),
        ),
        ParamRange(
            "slant", same(-25.0, 25.0), unit="deg", help="streak direction, counter-clockwise from vertical"
        ),
        ParamRange(
            "width", same(0.4, 0.8), unit="px", help="streak half-width (Gaussian sigma)", bounds=(0.1, None)
        ),
        ParamRange(
            "intensity",
            ((0.3, 0.5), (0.4, 0.6), (0.5, 0.7), (0.6, 0.8), (0.7, 0.9)),
            help="streak opacity",
            bounds=(0, 1),
        ),
        ParamRange(
            "veil",
            ((0.0, 0.03), (0.02, 0.06), (0.05, 0.1), (0.08, 0.15), (0.12, 0.2)),
            help="uniform rain haze opacity",
            bounds=(0, 1),
        ),
        ParamRange(
            "brightness", same(0.75, 0.9), help="grey level of the streaks and the veil", bounds=(0, 1)
        ),
    ),
    summary="rain: slanted motion-blurred streaks plus a light veil, composited in light grey",
    reference="official: iaa.Rain(drop_size=(0.4, 0.5), speed=(0.05, 0.1)); ours renders streaks directly",
)
def rain(
    image: np.ndarray,
    *,
    density: float,
    length: float,
    slant: float,
    width: float,
    intensity: float,
    veil: float,
    brightness: float,
    rng: np.random.Generator,
) -> Out:
    x = check_image(image)
    h, w = x.shape[:2]
    streaks = _blobs(
        h, w, rng, density=density, sigma=width, length=length, angle=90.0 + slant, strength=(0.5, 1.0)
    )
    t = ((1 - np.float32(intensity) * streaks) * np.float32(1 - veil)).astype(np.float32)
    a = np.full(3, brightness, np.float32)
    return Out(composite(x, t, a), transmission=t, airlight=a)


@register(
    "snow",
    family="weather",
    params=(
        ParamRange(
            "density",
            ((0.0005, 0.001), (0.001, 0.002), (0.002, 0.004), (0.004, 0.007), (0.007, 0.012)),
            help="near snowflakes per pixel (three times as many small far ones are added)",
            bounds=(0, 1),
        ),
        ParamRange(
            "flake_size",
            ((0.8, 1.2), (1.0, 1.5), (1.2, 1.8), (1.5, 2.2), (1.8, 2.6)),
            unit="px",
            help="near flake radius (Gaussian sigma)",
            bounds=(0.1, None),
        ),
        ParamRange("fall", same(2.0, 6.0), unit="px", help="motion smear of near flakes", bounds=(0, None)),
        ParamRange(
            "slant", same(-20.0, 20.0), unit="deg", help="fall direction, counter-clockwise from vertical"
        ),
        ParamRange(
            "veil",
            ((0.0, 0.05), (0.03, 0.08), (0.05, 0.12), (0.1, 0.18), (0.15, 0.25)),
            help="uniform whitening (snowy air)",
            bounds=(0, 1),
        ),
    ),
    summary="snow: near and far flakes (Gaussian blobs smeared along the fall direction) plus a white veil",
    reference="official: A.RandomSnow(brightness_coeff=1.0) (a no-op at that coefficient) then "
    "iaa.Snowflakes(density=0.35, flake_size=(0.6, 0.8)); ours renders flakes directly",
)
def snow(
    image: np.ndarray,
    *,
    density: float,
    flake_size: float,
    fall: float,
    slant: float,
    veil: float,
    rng: np.random.Generator,
) -> Out:
    x = check_image(image)
    h, w = x.shape[:2]
    angle = 90.0 + slant
    near = _blobs(h, w, rng, density=density, sigma=flake_size, length=fall, angle=angle, strength=(0.7, 1.0))
    far = _blobs(
        h,
        w,
        rng,
        density=3 * density,
        sigma=0.5 * flake_size,
        length=0.5 * fall,
        angle=angle,
        strength=(0.4, 0.8),
    )
    t = ((1 - near) * (1 - far) * np.float32(1 - veil)).astype(np.float32)
    a = np.ones(3, np.float32)
    return Out(composite(x, t, a), transmission=t, airlight=a)
