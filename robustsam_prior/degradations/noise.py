"""Noise: Gaussian, sensor (ISO), multiplicative (the official "impulse_noise") and salt-and-pepper.

All functions take ``HxWx3`` float32 in [0, 1] and return the same, clipped to [0, 1].
"""

from __future__ import annotations

import numpy as np

from .base import Out, ParamRange, check_image, clip01, register, same

# Orthonormal chroma directions, both orthogonal to grey (1, 1, 1): noise along them leaves the
# per-pixel channel mean (the luma used by iso_noise) unchanged.
_CHROMA_U = np.array([1.0, -1.0, 0.0], np.float32) / np.sqrt(2.0)
_CHROMA_V = np.array([1.0, 1.0, -2.0], np.float32) / np.sqrt(6.0)


@register(
    "gaussian_noise",
    family="noise",
    params=(
        ParamRange(
            "sigma",
            (
                (4 / 255, 6 / 255),
                (8 / 255, 11 / 255),
                (250**0.5 / 255, 260**0.5 / 255),
                (22 / 255, 26 / 255),
                (32 / 255, 38 / 255),
            ),
            unit="of full scale",
            help="standard deviation of the additive noise, independent per pixel and channel",
            bounds=(0, None),
        ),
    ),
    summary="additive white Gaussian noise, per channel",
    reference="official: A.GaussNoise(var_limit=(250, 260)) on 0..255, i.e. sigma 15.8..16.1/255 (severity 3)",
)
def gaussian_noise(image: np.ndarray, *, sigma: float, rng: np.random.Generator) -> Out:
    """``clip(x + sigma * N(0, 1))`` with independent noise per pixel and channel."""
    x = check_image(image)
    noise = rng.standard_normal(x.shape, dtype=np.float32)
    return Out(clip01(x + np.float32(sigma) * noise))


@register(
    "iso_noise",
    family="noise",
    params=(
        ParamRange(
            "gain",
            ((0.0005, 0.001), (0.001, 0.002), (0.002, 0.004), (0.004, 0.008), (0.008, 0.015)),
            help="shot noise: luma variance grows by gain * luma (Poisson, photons = luma / gain)",
            bounds=(0, None),
        ),
        ParamRange(
            "read_sigma",
            ((0.002, 0.005), (0.005, 0.01), (0.01, 0.02), (0.02, 0.03), (0.03, 0.045)),
            unit="of full scale",
            help="signal-independent read noise on the luma",
            bounds=(0, None),
        ),
        ParamRange(
            "chroma_sigma",
            ((0.005, 0.01), (0.01, 0.02), (0.02, 0.04), (0.04, 0.06), (0.06, 0.09)),
            unit="of full scale",
            help="Gaussian noise on each of two chroma axes (colour speckle)",
            bounds=(0, None),
        ),
    ),
    summary="camera sensor noise: Poisson-Gaussian (shot + read) luma noise plus colour (chroma) noise",
    reference="our own sensor model (the official A.ISONoise(color_shift=(0.4, 0.5), intensity=(0.7, 0.8)) "
    "perturbs HLS hue/lightness); severity 3 is of similar visual strength",
)
def iso_noise(
    image: np.ndarray, *, gain: float, read_sigma: float, chroma_sigma: float, rng: np.random.Generator
) -> Out:
    """Sensor noise: luma ``Y = mean(R, G, B)`` gets ``gain * Poisson(Y / gain) - Y + read_sigma * N``
    (variance ``gain * Y + read_sigma**2``), added to all three channels; then chroma noise of
    ``chroma_sigma`` along two directions orthogonal to grey (which leave ``Y`` unchanged)."""
    x = check_image(image)
    luma = x.mean(axis=2)
    if gain > 0:
        shot = rng.poisson(np.maximum(luma, 0.0) / gain).astype(np.float32) * np.float32(gain) - luma
    else:  # no shot noise
        shot = np.zeros_like(luma)
    luma_noise = shot + np.float32(read_sigma) * rng.standard_normal(luma.shape, dtype=np.float32)
    chroma = np.float32(chroma_sigma) * rng.standard_normal((*luma.shape, 2), dtype=np.float32)
    noise = luma_noise[..., None] + chroma[..., :1] * _CHROMA_U + chroma[..., 1:] * _CHROMA_V
    return Out(clip01(x + noise))


@register(
    "multiplicative_noise",
    family="noise",
    params=(
        ParamRange(
            "gain",
            ((1.05, 1.15), (1.15, 1.3), (1.4, 1.5), (1.5, 1.7), (1.7, 2.0)),
            help="global multiplier (the official recipe's whole effect)",
            bounds=(0, None),
        ),
        ParamRange(
            "speckle",
            ((0.02, 0.04), (0.04, 0.07), (0.07, 0.1), (0.1, 0.15), (0.15, 0.22)),
            help="std of the per-pixel, per-channel multiplicative factor around 1",
            bounds=(0, None),
        ),
    ),
    summary="multiplicative (speckle) noise: x * gain * (1 + speckle * N(0, 1))",
    reference="the official folder 'impulse_noise' is A.MultiplicativeNoise(multiplier=(1.4, 1.5)) with "
    "albumentations' defaults (one multiplier per image): gain at severity 3; speckle is our addition",
)
def multiplicative_noise(image: np.ndarray, *, gain: float, speckle: float, rng: np.random.Generator) -> Out:
    x = check_image(image)
    factor = np.float32(gain) * (1.0 + np.float32(speckle) * rng.standard_normal(x.shape, dtype=np.float32))
    return Out(clip01(x * factor))


@register(
    "impulse_noise",
    family="noise",
    params=(
        ParamRange(
            "amount",
            ((0.01, 0.03), (0.03, 0.06), (0.06, 0.09), (0.09, 0.17), (0.17, 0.27)),
            help="fraction of samples (pixel x channel) replaced by 0 or 1",
            bounds=(0, 1),
        ),
        ParamRange(
            "salt_ratio", same(0.5, 0.5), help="fraction of the replaced samples set to 1", bounds=(0, 1)
        ),
    ),
    summary="salt-and-pepper impulse noise, independent per pixel and channel",
    reference="true impulse noise (absent from the official set despite the folder name); amounts follow "
    "ImageNet-C's impulse_noise (Hendrycks & Dietterich, ICLR 2019: 0.03, 0.06, 0.09, 0.17, 0.27)",
)
def impulse_noise(image: np.ndarray, *, amount: float, salt_ratio: float, rng: np.random.Generator) -> Out:
    x = check_image(image).copy()
    u = rng.random(x.shape, dtype=np.float32)
    salt = u < amount * salt_ratio
    pepper = (u >= amount * salt_ratio) & (u < amount)
    x[salt] = 1.0
    x[pepper] = 0.0
    return Out(x)
