"""PSNR/SSIM against BasicSR 1.4's calculate_psnr/calculate_ssim and scikit-image, in every convention."""

import itertools
import math

import numpy as np
import pytest
import torch

from eval.metrics.psnr_ssim import PSNR, SSIM, gaussian_window_1d, psnr, rgb_to_y, ssim


def _degrade(img: np.ndarray, seed: int) -> np.ndarray:
    """Blur + colour shift + noise, clipped to [0, 1] (float32 HxWx3)."""
    import cv2

    rng = np.random.default_rng(seed)
    out = cv2.GaussianBlur(img, (5, 5), 1.2) * np.float32(0.92) + np.float32(0.03)
    out = out + rng.normal(0, 0.02, img.shape).astype(np.float32)
    return np.clip(out, 0, 1).astype(np.float32)


def _real_pairs():
    from skimage import data

    pairs = []
    for i, name in enumerate(("astronaut", "chelsea", "coffee")):
        full = getattr(data, name)()
        h, w = full.shape[:2]
        # a 96x128 crop keeps the test fast on 2 shared cores while staying a real photograph
        gt = full[h // 2 - 48 : h // 2 + 48, w // 2 - 64 : w // 2 + 64].astype(np.float32) / np.float32(255)
        pairs.append((name, _degrade(gt, i), gt))
    return pairs


def _random_pair(seed=0, h=37, w=45):
    rng = np.random.default_rng(seed)
    gt = rng.random((h, w, 3), dtype=np.float32)
    pred = np.clip(gt + rng.normal(0, 0.1, gt.shape).astype(np.float32), 0, 1)
    return "random", pred, gt


@pytest.fixture(scope="module")
def basicsr_fns():
    from robustsam_prior._basicsr import import_basicsr

    import_basicsr()
    from basicsr.metrics.psnr_ssim import calculate_psnr, calculate_ssim

    return calculate_psnr, calculate_ssim


@pytest.fixture(scope="module")
def pairs():
    return [_random_pair(0), _random_pair(1, 64, 33), *_real_pairs()]


@pytest.mark.parametrize("quantize,y,crop", list(itertools.product([False, True], [False, True], [0, 4])))
def test_equals_basicsr_every_convention(basicsr_fns, pairs, quantize, y, crop):
    calculate_psnr, calculate_ssim = basicsr_fns
    for name, pred, gt in pairs:
        if quantize:  # BasicSR's tensor2img: float32 * 255, round, uint8
            P = (pred * np.float32(255)).round().astype(np.uint8)
            G = (gt * np.float32(255)).round().astype(np.uint8)
        else:
            P, G = pred.astype(np.float64) * 255, gt.astype(np.float64) * 255
        # BasicSR reads images with cv2, i.e. BGR; its Y conversion assumes BGR order.
        ref_p = calculate_psnr(P[..., ::-1], G[..., ::-1], crop, test_y_channel=y)
        ref_s = calculate_ssim(P[..., ::-1], G[..., ::-1], crop, test_y_channel=y)
        t_pred = torch.from_numpy(pred).permute(2, 0, 1)[None]
        t_gt = torch.from_numpy(gt).permute(2, 0, 1)[None]
        got_p = psnr(t_pred, t_gt, crop_border=crop, test_y_channel=y, quantize=quantize).item()
        got_s = ssim(t_pred, t_gt, crop_border=crop, test_y_channel=y, quantize=quantize).item()
        assert abs(got_p - ref_p) < 1e-6, (name, got_p, ref_p)
        assert abs(got_s - ref_s) < 1e-6, (name, got_s, ref_s)


def test_uint8_inputs_equal_quantized_floats(basicsr_fns):
    calculate_psnr, _ = basicsr_fns
    _, pred, gt = _random_pair(3)
    P = (pred * np.float32(255)).round().astype(np.uint8)
    G = (gt * np.float32(255)).round().astype(np.uint8)
    a = psnr(P, G, data_range=255).item()
    assert a == psnr(pred, gt, quantize=True).item()
    assert abs(a - calculate_psnr(P, G, 0)) < 1e-9
    assert ssim(P, G, data_range=255).item() == pytest.approx(ssim(pred, gt, quantize=True).item(), abs=1e-12)


def test_agrees_with_scikit_image_where_conventions_coincide(pairs):
    from skimage.color import rgb2ycbcr
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    for _, pred, gt in pairs:
        p64, g64 = pred.astype(np.float64), gt.astype(np.float64)
        assert psnr(pred, gt).item() == pytest.approx(
            peak_signal_noise_ratio(g64, p64, data_range=1.0), abs=1e-9
        )
        ref = structural_similarity(
            g64,
            p64,
            data_range=1.0,
            channel_axis=2,
            gaussian_weights=True,
            sigma=1.5,
            use_sample_covariance=False,
        )
        assert ssim(pred, gt).item() == pytest.approx(ref, abs=1e-8)
        # Y channel: scikit-image's BT.601 conversion in float64 (ours keeps BasicSR's float32 steps).
        yp, yg = rgb2ycbcr(p64)[..., 0], rgb2ycbcr(g64)[..., 0]
        assert psnr(pred, gt, test_y_channel=True).item() == pytest.approx(
            peak_signal_noise_ratio(yg, yp, data_range=255.0), abs=1e-3
        )


def test_hand_worked_psnr_and_identity():
    gt = torch.zeros(1, 3, 4, 4)
    pred = torch.full((1, 3, 4, 4), 0.1)
    # MSE on the 0..255 scale is 25.5^2, so PSNR = 20 log10(255 / 25.5) = 20 dB.
    assert psnr(pred, gt).item() == pytest.approx(20.0, abs=1e-5)
    assert math.isinf(psnr(gt, gt).item())
    x = torch.rand(2, 3, 16, 16)
    assert torch.allclose(ssim(x, x), torch.ones(2, dtype=torch.float64))


def test_data_range_and_batch_and_module_wrappers():
    x, y = torch.rand(3, 3, 20, 24), torch.rand(3, 3, 20, 24)
    per = psnr(x, y)
    assert per.shape == (3,) and per.dtype == torch.float64
    assert torch.allclose(psnr(x * 4, y * 4, data_range=4.0), per)
    for i in range(3):
        assert psnr(x[i], y[i]).item() == pytest.approx(per[i].item())
    assert torch.equal(
        PSNR(crop_border=2, test_y_channel=True)(x, y), psnr(x, y, crop_border=2, test_y_channel=True)
    )
    assert torch.equal(SSIM(quantize=True)(x, y), ssim(x, y, quantize=True))
    assert "crop_border=0" in repr(SSIM())


def test_window_matches_opencv():
    import cv2

    ref = cv2.getGaussianKernel(11, 1.5)[:, 0]
    assert np.allclose(gaussian_window_1d().numpy(), ref, atol=1e-15)


def test_rgb_to_y_values():
    white = torch.full((1, 3, 2, 2), 255.0, dtype=torch.float64)
    black = torch.zeros((1, 3, 2, 2), dtype=torch.float64)
    assert rgb_to_y(white)[0, 0, 0, 0].item() == pytest.approx(235.0, abs=1e-4)  # studio swing 16..235
    assert rgb_to_y(black)[0, 0, 0, 0].item() == pytest.approx(16.0, abs=1e-5)
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        rgb_to_y(torch.zeros(1, 1, 2, 2))


def test_rgb_to_y_is_basicsr_to_y_channel_bit_for_bit(basicsr_fns, monkeypatch):
    """rgb_to_y takes the BT.601 luma from kornia; on every 8-bit R and G (B in steps of 5) and on random
    float inputs it equals BasicSR's own ``to_y_channel`` exactly, not just within a tolerance."""
    import kornia.color

    from basicsr.metrics.metric_util import to_y_channel  # isort: skip

    calls = []
    luma = kornia.color.rgb_to_y
    monkeypatch.setattr(kornia.color, "rgb_to_y", lambda x: calls.append(x.dtype) or luma(x))

    v = torch.arange(256, dtype=torch.float64)
    r, g, b = torch.meshgrid(v, v, v[::5], indexing="ij")
    colours = torch.stack([r, g, b]).reshape(1, 3, 256 * 256, 52)
    floats = torch.rand(1, 3, 300, 200, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 255
    for x in (colours, floats):
        bgr = x[0].permute(1, 2, 0).numpy()[..., ::-1]
        ref = torch.from_numpy(to_y_channel(bgr)[..., 0].astype(np.float64))
        assert torch.equal(rgb_to_y(x)[0, 0], ref)
    assert calls == [torch.float64, torch.float64]


def test_single_channel_images_skip_y():
    x, y = torch.rand(1, 1, 16, 16), torch.rand(1, 1, 16, 16)
    assert psnr(x, y, test_y_channel=True).item() == psnr(x, y).item()


@pytest.mark.parametrize(
    "pred,gt,kwargs,match",
    [
        (torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 9), {}, "shapes differ"),
        (torch.rand(1, 3, 8, 8) + 1.5, torch.rand(1, 3, 8, 8), {}, r"pred values must lie in \[0, 1"),
        (torch.rand(1, 3, 8, 8), -torch.rand(1, 3, 8, 8) - 0.1, {}, r"gt values must lie"),
        (torch.full((1, 3, 8, 8), float("nan")), torch.rand(1, 3, 8, 8), {}, "NaN"),
        (torch.zeros(1, 3, 8, 8, dtype=torch.uint8), torch.zeros(1, 3, 8, 8, dtype=torch.uint8), {}, "uint8"),
        (torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 8), {"crop_border": 4}, "leaves no pixels"),
        (torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 8), {"crop_border": -1}, ">= 0"),
        (torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 8), {"data_range": 0}, "positive"),
        (torch.rand(1, 2, 8, 8), torch.rand(1, 2, 8, 8), {}, "1 or 3 channels"),
        (torch.rand(8, 8), torch.rand(8, 8), {}, r"\(B, C, H, W\)"),
        (np.zeros((2, 2, 2, 2)), np.zeros((2, 2, 2, 2)), {}, r"\(H, W, C\)"),
        (torch.zeros(1, 3, 8, 8, dtype=torch.int32), torch.zeros(1, 3, 8, 8, dtype=torch.int32), {}, "dtype"),
    ],
)
def test_invalid_inputs_raise_clear_errors(pred, gt, kwargs, match):
    with pytest.raises(ValueError, match=match):
        psnr(pred, gt, **kwargs)


def test_ssim_needs_window_and_type_errors():
    with pytest.raises(ValueError, match="at least 11x11"):
        ssim(torch.rand(1, 3, 14, 14), torch.rand(1, 3, 14, 14), crop_border=2)
    with pytest.raises(TypeError, match="torch.Tensor or numpy"):
        psnr([[0.0]], [[0.0]])
