"""Classical restoration baselines with the networks' interface.

- Dark channel prior dehazing (He, Sun, Tang, "Single Image Haze Removal Using Dark Channel
  Prior", CVPR 2009) with the transmission refined by the guided filter (He, Sun, Tang, "Guided
  Image Filtering", ECCV 2010), settings from those papers: 15x15 patch, omega 0.95, t0 0.1,
  airlight from the brightest 0.1% of the dark channel, guided filter r = 60, eps = 1e-3 on the
  grey image. OpenCV's ximgproc is not in opencv-python-headless, so the guided filter is written
  here with ``cv2.boxFilter`` (running sums: O(1) per pixel for any radius). ``kornia.filters.guided_blur``
  gives the same transmission (within 1e-12, tested, on inputs padded like OpenCV's borders) but its box
  filter is a convolution, O(r) per pixel: 680x slower at r = 60 (``benchmarks/kornia_fit.py``).
- Wiener and Richardson-Lucy deconvolution given a known blur kernel (scikit-image), for
  synthetic benchmarks where the kernel is known.
- The identity (input as output).

Functions take and return ``(B, 3, H, W)`` float tensors in [0, 1] (computed per image in NumPy on
the CPU and returned on the input's device/dtype). :class:`ClassicalRestorer` wraps a function as a
``forward(image, prior=None)`` module like the networks (``needs_prior = False``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

# He et al. 2009 / 2010 settings
PATCH = 15
OMEGA = 0.95
T0 = 0.1
TOP_FRACTION = 0.001
GF_RADIUS = 60
GF_EPS = 1e-3


def _check_batch(image: torch.Tensor, fn: str) -> None:
    if image.dim() != 4 or image.shape[1] != 3:
        raise ValueError(f"{fn}: image must be (B, 3, H, W), got {tuple(image.shape)}")


def _per_image(image: torch.Tensor, fn: Callable[[np.ndarray], np.ndarray]) -> torch.Tensor:
    outs = []
    for img in image.detach().float().cpu().numpy():
        outs.append(fn(np.ascontiguousarray(img.transpose(1, 2, 0))).transpose(2, 0, 1))
    return torch.from_numpy(np.stack(outs).astype(np.float32)).to(device=image.device, dtype=image.dtype)


# ------------------------------------------------------------------ dark channel prior


def dark_channel(rgb: np.ndarray, patch: int = PATCH) -> np.ndarray:
    """``min_{y in patch(x)} min_c I_c(y)`` of an ``HxWx3`` float image -> ``HxW``."""
    import cv2

    m = rgb.min(axis=2).astype(np.float32)
    # erosion = min filter; OpenCV's default border for erosion ignores the outside
    return cv2.erode(m, np.ones((patch, patch), np.uint8))


def estimate_airlight(
    rgb: np.ndarray, dark: np.ndarray, top_fraction: float = TOP_FRACTION, mode: str = "mean"
) -> np.ndarray:
    """Airlight ``(3,)`` from the brightest ``top_fraction`` of the dark channel's pixels.

    ``mode="mean"``: the mean colour of those pixels (the common implementation; on O-HAZE 35 it
    gives 19.81 dB / 0.870 against the project's reference 19.76 / 0.868); ``"brightest"``: the one
    with the highest intensity in the input, as He et al. 2009 word it (18.71 dB / 0.845 there).
    """
    flat_dark = dark.reshape(-1)
    n = max(1, math.floor(flat_dark.size * top_fraction))
    idx = np.argpartition(flat_dark, -n)[-n:]
    cand = rgb.reshape(-1, 3)[idx].astype(np.float64)
    if mode == "mean":
        return cand.mean(axis=0)
    if mode == "brightest":
        return cand[np.argmax(cand.sum(axis=1))]
    raise ValueError(f"estimate_airlight: mode must be 'mean' or 'brightest', got {mode!r}")


def guided_filter(guide: np.ndarray, src: np.ndarray, radius: int = GF_RADIUS, eps: float = GF_EPS) -> np.ndarray:
    """Grey-guide guided filter (He et al. 2010, Alg. 1) with ``(2r+1)^2`` box means; ``HxW`` float."""
    import cv2

    def box(x: np.ndarray) -> np.ndarray:
        return cv2.boxFilter(x, cv2.CV_64F, (2 * radius + 1, 2 * radius + 1), borderType=cv2.BORDER_REFLECT)

    i = guide.astype(np.float64)
    p = src.astype(np.float64)
    mean_i, mean_p = box(i), box(p)
    var_i = box(i * i) - mean_i * mean_i
    cov_ip = box(i * p) - mean_i * mean_p
    a = cov_ip / (var_i + eps)
    b = mean_p - a * mean_i
    return box(a) * i + box(b)


def dcp_dehaze_numpy(
    rgb: np.ndarray,
    *,
    patch: int = PATCH,
    omega: float = OMEGA,
    t0: float = T0,
    top_fraction: float = TOP_FRACTION,
    radius: int = GF_RADIUS,
    eps: float = GF_EPS,
    refine: bool = True,
    airlight: str | np.ndarray = "mean",
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Dehaze an ``HxWx3`` RGB float image in [0, 1]: returns ``(J, t, A)``.

    ``t = 1 - omega * dark_channel(I / A)`` (refined by the guided filter on the grey image when
    ``refine``), ``J = (I - A) / max(t, t0) + A`` clipped to [0, 1]. ``airlight``: a mode of
    :func:`estimate_airlight` or a known ``(3,)`` colour.
    """
    rgb = np.asarray(rgb, dtype=np.float64)
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"dark channel prior: expected an HxWx3 image, got shape {rgb.shape}")
    if isinstance(airlight, str):
        a = estimate_airlight(rgb, dark_channel(rgb, patch), top_fraction, airlight)
    else:
        a = np.asarray(airlight, dtype=np.float64).reshape(3)
    t = 1.0 - omega * dark_channel(rgb / np.maximum(a, 1e-6), patch).astype(np.float64)
    if refine:
        grey = rgb @ np.array([0.299, 0.587, 0.114])
        t = guided_filter(grey, t, radius, eps)
    t = np.clip(t, t0, 1.0)
    j = (rgb - a) / t[..., None] + a
    return np.clip(j, 0.0, 1.0).astype(np.float32), t.astype(np.float32), a.astype(np.float32)


def dark_channel_prior(image: torch.Tensor, **options: Any) -> torch.Tensor:
    """Dark channel prior dehazing of ``(B, 3, H, W)`` in [0, 1]; options of :func:`dcp_dehaze_numpy`."""
    _check_batch(image, "dark_channel_prior")
    return _per_image(image, lambda x: dcp_dehaze_numpy(x, **options)[0])


# ------------------------------------------------------------------ deconvolution


def _check_kernel(kernel: np.ndarray | torch.Tensor) -> np.ndarray:
    k = kernel.detach().cpu().numpy() if isinstance(kernel, torch.Tensor) else np.asarray(kernel)
    k = np.squeeze(k).astype(np.float64)
    if k.ndim != 2 or k.sum() <= 0:
        raise ValueError(f"deconvolution: the kernel must be a 2-D non-negative array with a positive sum, got shape {k.shape}")
    return k / k.sum()


def _padded(fn: Callable[[np.ndarray], np.ndarray], x: np.ndarray, k: np.ndarray) -> np.ndarray:
    """Run a per-channel deconvolution on a reflect-padded image and crop back: both scikit-image
    methods assume periodic (Wiener, FFT) or zero (Richardson-Lucy) boundaries, which darken or
    ring at the borders of a real image."""
    py, px = k.shape[0], k.shape[1]
    xp = np.pad(x, ((py, py), (px, px), (0, 0)), mode="reflect")
    out = np.stack([fn(xp[..., c].astype(np.float64)) for c in range(3)], -1)
    return np.clip(out[py:-py, px:-px], 0, 1)


def wiener_deblur(image: torch.Tensor, kernel: np.ndarray | torch.Tensor, *, balance: float = 0.05) -> torch.Tensor:
    """Wiener deconvolution (``skimage.restoration.wiener``) per channel with the known ``kernel``.

    ``balance`` is the regularisation (noise-to-signal) weight; ``(B,3,H,W) -> (B,3,H,W)``, clipped.
    """
    from skimage.restoration import wiener

    _check_batch(image, "wiener_deblur")
    k = _check_kernel(kernel)

    def run(x: np.ndarray) -> np.ndarray:
        return _padded(lambda c: wiener(c, k, balance, clip=False), x, k)

    return _per_image(image, run)


def richardson_lucy_deblur(image: torch.Tensor, kernel: np.ndarray | torch.Tensor, *, num_iter: int = 30) -> torch.Tensor:
    """Richardson-Lucy deconvolution (``skimage.restoration.richardson_lucy``) per channel."""
    from skimage.restoration import richardson_lucy

    _check_batch(image, "richardson_lucy_deblur")
    k = _check_kernel(kernel)

    def run(x: np.ndarray) -> np.ndarray:
        return _padded(lambda c: richardson_lucy(c, k, num_iter=num_iter, clip=True), x, k)

    return _per_image(image, run)


def identity(image: torch.Tensor) -> torch.Tensor:
    """The input as output (a copy)."""
    _check_batch(image, "identity")
    return image.clone()


class ClassicalRestorer(nn.Module):
    """A classical method as a restoration 'network': ``forward(image, prior=None)``."""

    needs_prior = False
    uses_features: tuple[str, ...] = ()
    multiple = 1

    def __init__(self, *, fn: Callable[..., torch.Tensor], name: str, **options: Any) -> None:
        super().__init__()
        self.fn, self.name, self.options = fn, name, options

    def forward(self, image: torch.Tensor, prior: Any = None) -> torch.Tensor:
        return self.fn(image, **self.options)

    def extra_repr(self) -> str:
        return f"name={self.name!r}, options={self.options}"
