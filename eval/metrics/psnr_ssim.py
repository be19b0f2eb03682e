"""PSNR and SSIM with the conventions image-restoration papers report (BasicSR 1.4).

Conventions (each one a keyword, never implicit):

- ``data_range``: float inputs lie in ``[0, data_range]`` (1.0 for the library's images); uint8
  inputs need ``data_range=255``. Values are mapped once to the [0, 255] scale BasicSR works on.
- ``quantize``: round to 8-bit levels first, ``round(x * 255)`` in float32, as BasicSR's ``tensor2img``
  does before ``calculate_psnr``/``calculate_ssim`` ("uint8-rounded" numbers). Off: float inputs.
- ``crop_border``: pixels dropped at each edge before anything else.
- ``test_y_channel``: evaluate on the Y channel of YCbCr (ITU-R BT.601, "studio swing" 16..235),
  computed with BasicSR's arithmetic (float32 intermediates) so results match ``calculate_psnr``
  bit for bit rather than approximately.
- SSIM: BasicSR 1.4's ``calculate_ssim``: per channel, 11x11 Gaussian window with sigma 1.5,
  C1 = (0.01*255)^2, C2 = (0.03*255)^2, "valid" filtering (the 5-pixel rim where the window does
  not fit is left out), mean over the map, then mean over channels. This is *not* the 3-D SSIM of
  the NAFNet/SAM-Deblur fork: numbers are not interchangeable.

The functions take each convention as a keyword (defaults: no rounding, as ``calculate_psnr`` on
floats); every report uses :class:`MetricConventions`' defaults, the project's one convention
(BasicSR 1.4, RGB, crop 0, 8-bit), and prints :meth:`MetricConventions.describe` in its header.

Inputs: torch tensors ``(B, C, H, W)`` or ``(C, H, W)``, or numpy arrays ``(H, W, C)`` / ``(H, W)``
(file-boundary convenience), RGB. Outputs: float64 tensors of shape ``(B,)``, one value per image;
PSNR of identical images is ``inf``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "MetricConventions",
    "PSNR",
    "SSIM",
    "gaussian_window_1d",
    "prepare_pair",
    "psnr",
    "rgb_to_y",
    "ssim",
]

SSIM_WINDOW = 11
SSIM_SIGMA = 1.5


@dataclass(frozen=True)
class MetricConventions:
    """The conventions a PSNR/SSIM number was computed under (recorded next to every result).

    The defaults are the project's one reporting convention, used by ``eval``, ``benchmark``, the
    pipelines' ``eval`` step, the trainers' validation and ``benchmarks/quality.py``: BasicSR 1.4's
    ``calculate_psnr``/``calculate_ssim`` on RGB, no border crop, both images rounded to 8-bit levels
    first (BasicSR's ``tensor2img``; a no-op for 8-bit files). :meth:`describe` names it in headers.
    """

    crop_border: int = 0
    test_y_channel: bool = False
    quantize: bool = True
    data_range: float = 1.0
    ssim: str = "basicsr-1.4 per-channel 2-D Gaussian 11x11 sigma=1.5, valid"

    def to_dict(self) -> dict:
        return asdict(self)

    def kwargs(self) -> dict:
        """The keywords of :func:`psnr` and :func:`ssim` for these conventions."""
        return dict(
            crop_border=self.crop_border,
            test_y_channel=self.test_y_channel,
            data_range=self.data_range,
            quantize=self.quantize,
        )

    def describe(self) -> str:
        """One line for report headers, e.g. ``PSNR/SSIM: BasicSR 1.4 convention, RGB, crop 0, 8-bit``."""
        from .info import describe_conventions

        return describe_conventions(self.to_dict())


def _as_bchw(x: torch.Tensor | np.ndarray, what: str) -> torch.Tensor:
    if isinstance(x, np.ndarray):
        if x.ndim == 2:
            x = x[:, :, None]
        if x.ndim != 3:
            raise ValueError(f"{what}: numpy images must be (H, W, C) or (H, W), got shape {x.shape}")
        return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))[None]
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{what}: expected a torch.Tensor or numpy array, got {type(x).__name__}")
    if x.dim() == 3:
        x = x[None]
    if x.dim() != 4:
        raise ValueError(f"{what}: tensors must be (B, C, H, W) or (C, H, W), got shape {tuple(x.shape)}")
    return x


def prepare_pair(
    pred: torch.Tensor | np.ndarray,
    gt: torch.Tensor | np.ndarray,
    *,
    data_range: float = 1.0,
    quantize: bool = False,
    crop_border: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate a prediction/ground-truth pair once and return both as float64 ``(B, C, H', W')`` in [0, 255].

    Raises ``ValueError`` for mismatched shapes, a channel count other than 1 or 3, values outside
    ``[0, data_range]`` (or NaN), a uint8 input with ``data_range != 255``, or a ``crop_border``
    that leaves no pixels.
    """
    a, b = _as_bchw(pred, "pred"), _as_bchw(gt, "gt")
    if a.shape != b.shape:
        raise ValueError(f"pred and gt shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}")
    if a.shape[1] not in (1, 3):
        raise ValueError(f"images must have 1 or 3 channels, got {a.shape[1]}")
    if not data_range > 0:
        raise ValueError(f"data_range must be positive, got {data_range}")
    if crop_border < 0:
        raise ValueError(f"crop_border must be >= 0, got {crop_border}")
    h, w = a.shape[-2:]
    if 2 * crop_border >= min(h, w):
        raise ValueError(f"crop_border={crop_border} leaves no pixels of a {h}x{w} image")
    out = []
    for x, what in ((a, "pred"), (b, "gt")):
        if x.dtype == torch.uint8:
            if data_range != 255:
                raise ValueError(f"{what} is uint8, so data_range must be 255 (got {data_range})")
            x = x.to(torch.float64)
        elif x.is_floating_point():
            if torch.isnan(x).any():
                raise ValueError(f"{what} contains NaN")
            lo, hi = float(x.min()), float(x.max())
            if lo < 0 or hi > data_range:
                raise ValueError(
                    f"{what} values must lie in [0, {data_range}] (data_range), got [{lo:.6g}, {hi:.6g}]; "
                    "clamp outputs or pass the right data_range"
                )
            if quantize:
                # BasicSR's tensor2img: float32 multiply, then round half to even (numpy/torch .round()).
                x = (x.to(torch.float32) * np.float32(255.0 / data_range)).round().to(torch.float64)
            else:
                x = x.to(torch.float64) * (255.0 / data_range)
        else:
            raise ValueError(f"{what}: unsupported dtype {x.dtype} (use float in [0, data_range] or uint8)")
        if crop_border:
            x = x[..., crop_border:-crop_border, crop_border:-crop_border]
        out.append(x)
    return out[0], out[1]


def rgb_to_y(x255: torch.Tensor) -> torch.Tensor:
    """Y of YCbCr (ITU-R BT.601) of an RGB image ``(B, 3, H, W)`` on the [0, 255] scale -> ``(B, 1, H, W)`` float64.

    BasicSR's ``to_y_channel`` is the studio-swing ``Y = 65.481 R + 128.553 G + 24.966 B + 16`` (R, G, B
    in [0, 1]), which is ``16 + 219 L`` for the BT.601 luma ``L = 0.299 R + 0.587 G + 0.114 B`` that
    ``kornia.color.rgb_to_y`` computes (kornia's YCbCr is the full-range JPEG one, hence the map here).
    BasicSR's precision steps are kept: the image goes to float32 and is divided by 255, ``L`` and ``Y``
    are formed in float64, ``Y / 255`` is stored as float32 and scaled back by 255 in float32. The result
    equals BasicSR's arithmetic bit for bit on every 8-bit colour (``tests/eval/test_eval_psnr_ssim.py``).
    """
    from kornia.color import rgb_to_y as bt601_luma

    if x255.dim() != 4 or x255.shape[1] != 3:
        raise ValueError(f"rgb_to_y expects (B, 3, H, W), got {tuple(x255.shape)}")
    luma = bt601_luma((x255.to(torch.float32) / np.float32(255.0)).to(torch.float64))
    y32 = ((luma * 219.0 + 16.0) / 255.0).to(torch.float32)
    return (y32 * np.float32(255.0)).to(torch.float64)


def _maybe_y(a: torch.Tensor, b: torch.Tensor, test_y_channel: bool) -> tuple[torch.Tensor, torch.Tensor]:
    if test_y_channel and a.shape[1] == 3:
        return rgb_to_y(a), rgb_to_y(b)
    return a, b


def psnr(
    pred: torch.Tensor | np.ndarray,
    gt: torch.Tensor | np.ndarray,
    *,
    crop_border: int = 0,
    test_y_channel: bool = False,
    data_range: float = 1.0,
    quantize: bool = False,
) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB per image, ``(B,)`` float64 (``inf`` where the images are equal).

    ``10 log10(255^2 / MSE)`` on the [0, 255] scale, MSE over channels and pixels of each image
    (BasicSR's ``calculate_psnr``; equal to scikit-image's ``peak_signal_noise_ratio`` with
    ``data_range`` for RGB, no crop, float inputs).
    """
    a, b = prepare_pair(pred, gt, data_range=data_range, quantize=quantize, crop_border=crop_border)
    a, b = _maybe_y(a, b, test_y_channel)
    mse = ((a - b) ** 2).mean(dim=(1, 2, 3))
    out = torch.full_like(mse, math.inf)
    nz = mse > 0
    out[nz] = 10.0 * torch.log10(255.0**2 / mse[nz])
    return out


def gaussian_window_1d(size: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA) -> torch.Tensor:
    """Normalised 1-D Gaussian ``(size,)`` float64 (what ``cv2.getGaussianKernel(size, sigma)`` returns)."""
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    return g / g.sum()


def _filter_valid(x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian filter of ``(B, C, H, W)``, 'valid' output ``(B, C, H-k+1, W-k+1)``."""
    c = x.shape[1]
    k = g.numel()
    x = F.conv2d(x, g.view(1, 1, k, 1).expand(c, 1, k, 1), groups=c)
    return F.conv2d(x, g.view(1, 1, 1, k).expand(c, 1, 1, k), groups=c)


def ssim(
    pred: torch.Tensor | np.ndarray,
    gt: torch.Tensor | np.ndarray,
    *,
    crop_border: int = 0,
    test_y_channel: bool = False,
    data_range: float = 1.0,
    quantize: bool = False,
) -> torch.Tensor:
    """Structural similarity per image, ``(B,)`` float64, as BasicSR 1.4's ``calculate_ssim`` (module docstring).

    Needs at least 11x11 pixels after ``crop_border``.
    """
    a, b = prepare_pair(pred, gt, data_range=data_range, quantize=quantize, crop_border=crop_border)
    if min(a.shape[-2:]) < SSIM_WINDOW:
        raise ValueError(
            f"SSIM needs at least {SSIM_WINDOW}x{SSIM_WINDOW} pixels after crop_border, got {tuple(a.shape[-2:])}"
        )
    a, b = _maybe_y(a, b, test_y_channel)
    g = gaussian_window_1d().to(a.device)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mu1, mu2 = _filter_valid(a, g), _filter_valid(b, g)
    mu1_sq, mu2_sq, mu12 = mu1**2, mu2**2, mu1 * mu2
    s1 = _filter_valid(a * a, g) - mu1_sq
    s2 = _filter_valid(b * b, g) - mu2_sq
    s12 = _filter_valid(a * b, g) - mu12
    m = ((2 * mu12 + c1) * (2 * s12 + c2)) / ((mu1_sq + mu2_sq + c1) * (s1 + s2 + c2))
    return m.mean(dim=(2, 3)).mean(dim=1)


class _PairMetric(nn.Module):
    def __init__(
        self,
        *,
        crop_border: int = 0,
        test_y_channel: bool = False,
        data_range: float = 1.0,
        quantize: bool = False,
    ) -> None:
        super().__init__()
        self.conventions = MetricConventions(
            crop_border=crop_border, test_y_channel=test_y_channel, quantize=quantize, data_range=data_range
        )

    def _kwargs(self) -> dict:
        return self.conventions.kwargs()

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self._kwargs().items())


class PSNR(_PairMetric):
    """``nn.Module`` wrapper of :func:`psnr`: ``forward(pred, gt) -> (B,)`` dB (higher is better)."""

    lower_is_better = False

    def forward(self, pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
        return psnr(pred, gt, **self._kwargs())


class SSIM(_PairMetric):
    """``nn.Module`` wrapper of :func:`ssim`: ``forward(pred, gt) -> (B,)`` (higher is better)."""

    lower_is_better = False

    def forward(self, pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
        return ssim(pred, gt, **self._kwargs())
