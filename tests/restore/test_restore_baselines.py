"""Classical baselines: dark channel prior, guided filter, Wiener / Richardson-Lucy, identity."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage
from skimage import data, transform

from restore.baselines import (
    ClassicalRestorer,
    dark_channel,
    dark_channel_prior,
    dcp_dehaze_numpy,
    estimate_airlight,
    guided_filter,
    identity,
    richardson_lucy_deblur,
    wiener_deblur,
)


def psnr(clear: np.ndarray, x: np.ndarray, data_range: float = 1) -> float:
    """PSNR (dB) of ``HxWx3`` images in [0, 1] under the project's one convention (eval.metrics)."""
    from eval.metrics import MetricConventions
    from eval.metrics import psnr as metric

    assert data_range == 1
    return float(metric(np.clip(x, 0, 1), clear, **MetricConventions().kwargs()))


def _clear(h=96, w=128) -> np.ndarray:
    return transform.resize(data.astronaut(), (h, w), anti_aliasing=True).astype(np.float64)


def _t(img: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(img.transpose(2, 0, 1)[None].astype(np.float32))


def _np(t: torch.Tensor) -> np.ndarray:
    return t[0].numpy().transpose(1, 2, 0).astype(np.float64)


def test_dark_channel_is_patch_min_of_channel_min():
    rng = np.random.default_rng(0)
    img = rng.random((20, 17, 3)).astype(np.float32)
    ref = ndimage.minimum_filter(img.min(axis=2), size=5, mode="nearest")
    np.testing.assert_allclose(dark_channel(img, 5), ref)


def test_guided_filter_constant_and_edge_preserving():
    rng = np.random.default_rng(0)
    guide = rng.random((30, 40))
    np.testing.assert_allclose(guided_filter(guide, np.full((30, 40), 0.3), 5, 1e-3), 0.3, atol=1e-9)
    # with a tiny eps the filter reproduces a source that is a linear function of the guide
    np.testing.assert_allclose(guided_filter(guide, 2 * guide + 1, 3, 1e-9), 2 * guide + 1, atol=1e-4)


@pytest.mark.parametrize("h, w, radius", [(30, 40, 4), (21, 17, 12)])  # (21, 17, 12): windows wider than the image
def test_guided_filter_equals_kornia_guided_blur_with_opencv_borders(h, w, radius):
    """The reference: kornia's guided filter on the inputs padded by 2r like OpenCV's BORDER_REFLECT (the
    filter's two box passes then see the borders cv2.boxFilter gives them). kornia stays out of the baseline
    itself: its box filter is a convolution, 680x slower at r = 60 (benchmarks/kornia_fit.py)."""
    from kornia.filters import guided_blur

    from robustsam_prior.degradations.kernels import symmetric_pad

    rng = np.random.default_rng(1)
    guide, src = rng.random((h, w)), rng.random((h, w))
    p = 2 * radius
    padded = [symmetric_pad(torch.from_numpy(a)[None, None], p) for a in (guide, src)]
    ref = guided_blur(*padded, 2 * radius + 1, 1e-3)[0, 0, p:-p, p:-p].numpy()
    np.testing.assert_allclose(guided_filter(guide, src, radius, 1e-3), ref, atol=1e-12, rtol=0)


def test_dcp_improves_synthetic_haze_with_known_transmission():
    clear = _clear()
    h, w, _ = clear.shape
    depth = np.linspace(0.2, 1.0, h)[:, None] * np.ones((1, w))
    t = np.exp(-1.5 * depth)
    a = np.array([0.9, 0.9, 0.92])
    hazy = clear * t[..., None] + a * (1 - t[..., None])
    out = _np(dark_channel_prior(_t(hazy)))
    p_in, p_out = psnr(clear, hazy, data_range=1), psnr(clear, out, data_range=1)
    assert p_out > p_in + 3, (p_in, p_out)


def test_dcp_matches_formula_on_constant_depth():
    # clear image whose dark channel is 0 everywhere (one channel is 0 at every pixel), constant t
    rng = np.random.default_rng(1)
    clear = rng.uniform(0.2, 1.0, (40, 50, 3))
    yy, xx = np.mgrid[:40, :50]
    for c in range(3):
        clear[..., c][(yy + xx) % 3 == c] = 0.0
    t, a, omega = 0.6, np.array([0.95, 0.9, 0.85]), 0.95
    hazy = clear * t + a * (1 - t)
    j, t_est, a_est = dcp_dehaze_numpy(hazy, airlight=a, omega=omega)
    # dark(I / A) = 1 - t  ->  t_est = 1 - omega (1 - t); the guided filter keeps a constant
    np.testing.assert_allclose(t_est, 1 - omega * (1 - t), atol=1e-6)
    expected = np.clip((hazy - a) / (1 - omega * (1 - t)) + a, 0, 1)
    np.testing.assert_allclose(j, expected, atol=1e-5)
    # omega = 1 recovers the clear image exactly
    j1, _, _ = dcp_dehaze_numpy(hazy, airlight=a, omega=1.0)
    np.testing.assert_allclose(j1, clear, atol=1e-5)


def test_airlight_modes_and_errors():
    img = np.zeros((10, 10, 3))
    img[0, 0] = [1.0, 0.9, 0.8]
    img[9, 9] = [0.6, 0.7, 0.9]
    dark = img.min(axis=2)
    np.testing.assert_allclose(estimate_airlight(img, dark, 0.02, "brightest"), [1.0, 0.9, 0.8])
    np.testing.assert_allclose(estimate_airlight(img, dark, 0.02, "mean"), [0.8, 0.8, 0.85])
    with pytest.raises(ValueError, match="mode"):
        estimate_airlight(img, dark, 0.02, "max")
    with pytest.raises(ValueError, match="HxWx3"):
        dcp_dehaze_numpy(np.zeros((5, 5)))
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        dark_channel_prior(torch.zeros(3, 5, 5))


def _blur(img: np.ndarray, k: np.ndarray) -> np.ndarray:
    return np.stack([ndimage.convolve(img[..., c], k, mode="reflect") for c in range(3)], -1)


def test_wiener_and_rl_improve_with_true_kernel():
    clear = _clear(96, 96)
    k = np.zeros((9, 9))
    k[4, :] = 1.0  # horizontal motion blur
    k /= k.sum()
    blurred = _blur(clear, k) + np.random.default_rng(0).normal(0, 0.002, clear.shape)
    blurred = np.clip(blurred, 0, 1)
    p_in = psnr(clear, blurred, data_range=1)
    p_w = psnr(clear, _np(wiener_deblur(_t(blurred), k)), data_range=1)
    p_rl = psnr(clear, _np(richardson_lucy_deblur(_t(blurred), torch.from_numpy(k), num_iter=30)), data_range=1)
    assert p_w > p_in + 1.5, (p_in, p_w)  # measured 18.59 -> 20.80 dB
    assert p_rl > p_in + 1, (p_in, p_rl)
    with pytest.raises(ValueError, match="kernel"):
        wiener_deblur(_t(blurred), np.zeros((3, 3)))
    with pytest.raises(ValueError, match="kernel"):
        richardson_lucy_deblur(_t(blurred), np.ones(3))


def test_identity_and_wrapper():
    x = torch.rand(2, 3, 5, 4)
    y = identity(x)
    assert torch.equal(x, y) and y.data_ptr() != x.data_ptr()
    dcp = ClassicalRestorer(fn=dark_channel_prior, name="dcp", radius=4)
    assert dcp.needs_prior is False and "dcp" in repr(dcp)
    torch.testing.assert_close(dcp(x, None), dark_channel_prior(x, radius=4))
