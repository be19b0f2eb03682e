"""Photometric and digital degradations: colour jitter, JPEG compression, low light, contrast.

All functions take ``HxWx3`` float32 RGB in [0, 1] and return the same.
"""

from __future__ import annotations

import io

import numpy as np

from .base import Out, ParamRange, check_image, clip01, register

# ITU-R 601-2 luma weights, as torchvision's rgb_to_grayscale uses them
_LUMA = np.array([0.2989, 0.587, 0.114], np.float32)
JITTER_STEPS = ("brightness", "contrast", "saturation", "hue")


def adjust_brightness(x: np.ndarray, factor: float) -> np.ndarray:
    """``clip(x * factor)``."""
    return clip01(x * np.float32(factor))


def adjust_contrast(x: np.ndarray, factor: float) -> np.ndarray:
    """Blend with the image's mean grey level: ``clip(factor * x + (1 - factor) * mean(luma))``."""
    mean = np.float32((x @ _LUMA).mean())
    return clip01(np.float32(factor) * x + np.float32(1 - factor) * mean)


def adjust_saturation(x: np.ndarray, factor: float) -> np.ndarray:
    """Blend with the per-pixel grey level: ``clip(factor * x + (1 - factor) * luma)``."""
    gray = (x @ _LUMA)[..., None]
    return clip01(np.float32(factor) * x + np.float32(1 - factor) * gray)


def adjust_hue(x: np.ndarray, shift: float) -> np.ndarray:
    """Rotate the HSV hue by ``shift`` turns (``shift`` in [-0.5, 0.5])."""
    import cv2

    hsv = cv2.cvtColor(np.ascontiguousarray(x, dtype=np.float32), cv2.COLOR_RGB2HSV)  # H in [0, 360)
    hsv[..., 0] = np.mod(hsv[..., 0] + np.float32(shift * 360.0), np.float32(360.0))
    return clip01(cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB))


@register(
    "color_jitter",
    family="digital",
    params=(
        ParamRange(
            "brightness",
            ((0.8, 1.2), (0.6, 1.4), (0.3, 1.7), (0.2, 1.8), (0.1, 1.9)),
            help="brightness factor (multiplies the image)",
            bounds=(0, None),
        ),
        ParamRange(
            "contrast",
            ((0.9, 1.1), (0.8, 1.2), (0.7, 1.3), (0.55, 1.45), (0.4, 1.6)),
            help="contrast factor (blend with the mean grey)",
            bounds=(0, None),
        ),
        ParamRange(
            "saturation",
            ((0.8, 1.2), (0.6, 1.4), (0.3, 1.7), (0.15, 1.85), (0.0, 2.0)),
            help="saturation factor (blend with the per-pixel grey)",
            bounds=(0, None),
        ),
        ParamRange(
            "hue",
            ((-0.05, 0.05), (-0.15, 0.15), (-0.5, 0.5), (-0.5, 0.5), (-0.5, 0.5)),
            unit="turns",
            help="hue rotation",
            bounds=(-0.5, 0.5),
        ),
    ),
    summary="random brightness, contrast, saturation and hue, applied in a random order (recorded)",
    reference="official: A.ColorJitter(brightness=0.7, contrast=0.3, saturation=0.7, hue=0.7) at severity 3 "
    "(a hue of 0.7 turns exceeds half a turn, so we draw the whole circle); same operations as "
    "torchvision's adjust_* functions",
)
def color_jitter(
    image: np.ndarray,
    *,
    brightness: float,
    contrast: float,
    saturation: float,
    hue: float,
    rng: np.random.Generator | None = None,
    order: list[str] | tuple[str, ...] | None = None,
) -> Out:
    """Apply the four adjustments in ``order`` (default: a random permutation drawn from ``rng``)."""
    x = check_image(image)
    if order is None:
        if rng is None:
            raise ValueError("color_jitter needs an order or an rng to draw one")
        order = [JITTER_STEPS[i] for i in rng.permutation(len(JITTER_STEPS))]
    ops = {
        "brightness": lambda v: adjust_brightness(v, brightness),
        "contrast": lambda v: adjust_contrast(v, contrast),
        "saturation": lambda v: adjust_saturation(v, saturation),
        "hue": lambda v: adjust_hue(v, hue),
    }
    for step in order:
        if step not in ops:
            raise ValueError(f"unknown color_jitter step {step!r}; known: {JITTER_STEPS}")
        x = ops[step](x)
    return Out(x, extra={"order": list(order)})


def jpeg_roundtrip(x: np.ndarray, quality: int) -> np.ndarray:
    """Quantise to 8 bits, encode as JPEG (Pillow/libjpeg, 4:2:0) at ``quality``, decode."""
    from PIL import Image

    if not 1 <= int(quality) <= 100:
        raise ValueError(f"JPEG quality must be in 1..100, got {quality}")
    u8 = np.round(np.clip(x, 0.0, 1.0) * 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(u8, "RGB").save(buf, format="JPEG", quality=int(quality))
    buf.seek(0)
    with Image.open(buf) as im:
        return np.asarray(im.convert("RGB"), dtype=np.float32) / np.float32(255)


@register(
    "jpeg_compression",
    family="digital",
    params=(
        ParamRange(
            "quality",
            ((30, 50), (15, 25), (5, 10), (3, 5), (1, 2)),
            integer=True,
            help="JPEG quality (libjpeg scale 1..100)",
            bounds=(1, 100),
        ),
    ),
    summary="JPEG compression artefacts (encode and decode at a low quality)",
    reference="official: A.ImageCompression(quality_lower=5, quality_upper=10) (severity 3)",
)
def jpeg_compression(image: np.ndarray, *, quality: int, rng: np.random.Generator | None = None) -> Out:
    return Out(jpeg_roundtrip(check_image(image), int(quality)))


@register(
    "low_light",
    family="digital",
    params=(
        ParamRange(
            "factor",
            ((0.85, 0.95), (0.75, 0.9), (0.6, 0.8), (0.4, 0.6), (0.2, 0.4)),
            help="the image is multiplied by this factor",
            bounds=(0, None),
        ),
    ),
    summary="darkening: x * factor",
    reference="official folder 'brightness': clip(img * U(0.6, 0.8)) (severity 3)",
)
def low_light(image: np.ndarray, *, factor: float, rng: np.random.Generator | None = None) -> Out:
    return Out(clip01(check_image(image) * np.float32(factor)))


@register(
    "contrast",
    family="digital",
    params=(
        ParamRange(
            "factor",
            ((1.15, 1.3), (1.3, 1.5), (1.6, 1.7), (1.9, 2.2), (2.4, 3.0)),
            help="contrast gain about mid-grey: (x - 0.5) * factor + 0.5",
            bounds=(0, None),
        ),
    ),
    summary="contrast stretch about mid-grey, clipped",
    reference="official: clip((img - 128) * U(1.6, 1.7) + 128) on 0..255 (severity 3)",
)
def contrast(image: np.ndarray, *, factor: float, rng: np.random.Generator | None = None) -> Out:
    x = check_image(image)
    return Out(clip01((x - np.float32(0.5)) * np.float32(factor) + np.float32(0.5)))
