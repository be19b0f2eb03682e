"""Each degradation changes the image in its documented way, measured or checked against an
independent implementation (torchvision, scipy, Pillow, torch's interpolation)."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from scipy import ndimage

from robustsam_prior.core.io import to_numpy, to_tensor
from robustsam_prior.degradations import DEGRADATIONS, add_haze, degrade, synthetic_depth
from robustsam_prior.degradations.geometric import elastic_transform, frosted_glass_blur
from robustsam_prior.degradations.noise import iso_noise
from robustsam_prior.degradations.weather import rain


def _flat(value: float, h: int = 256, w: int = 256) -> torch.Tensor:
    return torch.full((1, 3, h, w), value)


def _textured(seed: int = 0, h: int = 96, w: int = 112) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(1, 3, h // 8, w // 8, generator=g)
    return (0.1 + 0.8 * F.interpolate(x, size=(h, w), mode="bicubic", align_corners=False)).clamp(0, 1)


def _range(name: str, param: str, severity: int) -> tuple[float, float]:
    return DEGRADATIONS.get(name).param(param).range_for(severity)


# -------------------------------------------------------------------------------------- photometric


@pytest.mark.parametrize("severity", [1, 3, 5])
def test_low_light_mean_ratio_in_range(severity):
    x = _textured()
    out = degrade(x, "low_light", severity, seed=severity)
    ratio = float(out.image.mean() / x.mean())
    lo, hi = _range("low_light", "factor", severity)
    assert lo <= ratio <= hi
    assert ratio == pytest.approx(out.params["factor"], rel=1e-5)


@pytest.mark.parametrize("severity", [1, 3, 5])
def test_gaussian_noise_measured_sigma(severity):
    x = _flat(0.5)
    out = degrade(x, "gaussian_noise", severity, seed=severity)
    diff = (out.image - x).numpy()
    sigma = out.params["sigma"]
    assert diff.std() == pytest.approx(sigma, rel=0.02)
    assert abs(diff.mean()) < 0.1 * sigma
    # channels are independent
    flat = diff[0].reshape(3, -1)
    assert abs(np.corrcoef(flat)[0, 1]) < 0.02
    if severity == 3:  # the official var_limit (250, 260) on 0..255
        assert 250**0.5 / 255 <= sigma <= 260**0.5 / 255


def test_iso_noise_variance_is_shot_plus_read_and_chroma_is_separate():
    gain, read, chroma = 0.004, 0.01, 0.03
    rng = np.random.default_rng(0)
    u = np.array([1, -1, 0]) / np.sqrt(2)
    for level in (0.2, 0.6):
        x = np.full((256, 256, 3), level, np.float32)
        out = iso_noise(x, gain=gain, read_sigma=read, chroma_sigma=chroma, rng=rng).image
        d = out - x
        luma_var = d.mean(axis=2).var()
        assert luma_var == pytest.approx(gain * level + read**2, rel=0.03)
        assert (d @ u).std() == pytest.approx(chroma, rel=0.03)


def test_multiplicative_noise_gain_and_speckle():
    x = _flat(0.3)
    out = degrade(x, "multiplicative_noise", 3, seed=0)
    ratio = (out.image / x).numpy()
    assert ratio.mean() == pytest.approx(out.params["gain"], rel=0.005)
    assert (ratio / out.params["gain"]).std() == pytest.approx(out.params["speckle"], rel=0.03)
    assert 1.4 <= out.params["gain"] <= 1.5  # the official multiplier range at severity 3


def test_impulse_noise_fractions():
    x = _flat(0.5)
    out = degrade(x, "impulse_noise", 4, seed=0)
    img = out.image.numpy()
    amount, salt = out.params["amount"], out.params["salt_ratio"]
    assert (img == 1).mean() == pytest.approx(amount * salt, rel=0.05)
    assert (img == 0).mean() == pytest.approx(amount * (1 - salt), rel=0.05)
    assert ((img == 0) | (img == 1) | (img == 0.5)).all()


def test_contrast_factor_measured():
    x = 0.4 + 0.2 * _textured()  # stays unclipped
    out = degrade(x, "contrast", 3, seed=0)
    a = (x - 0.5).flatten().numpy()
    b = (out.image - 0.5).flatten().numpy()
    factor = float(a @ b / (a @ a))  # least-squares slope through mid-grey
    assert factor == pytest.approx(out.params["factor"], rel=1e-5)
    assert 1.6 <= factor <= 1.7  # official U(1.6, 1.7)


def test_color_jitter_equals_torchvision_in_recorded_order():
    import torchvision.transforms.functional as TF

    x = _textured(1)
    for seed in range(4):
        out = degrade(x, "color_jitter", 3, seed=seed)
        p = out.params
        ref = x[0]
        ops = {
            "brightness": TF.adjust_brightness,
            "contrast": TF.adjust_contrast,
            "saturation": TF.adjust_saturation,
            "hue": TF.adjust_hue,
        }
        for step in p["order"]:
            ref = ops[step](ref, p[step])
        torch.testing.assert_close(out.image[0], ref, atol=2e-5, rtol=0)


def test_jpeg_equals_reencoding_at_stated_quality():
    x = _textured(2)
    out = degrade(x, "jpeg_compression", 3, seed=0)
    q = out.params["quality"]
    assert 5 <= q <= 10

    def encode(quality: int) -> np.ndarray:
        u8 = np.round(to_numpy(x) * 255).astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(u8).save(buf, format="JPEG", quality=quality)
        return np.asarray(Image.open(buf), dtype=np.float32) / 255

    got = to_numpy(out.image)
    np.testing.assert_array_equal(got, encode(q))
    assert not np.array_equal(got, encode(q + 1))


# --------------------------------------------------------------------------------------------- blur


@pytest.mark.parametrize("name", ["motion_blur", "defocus_blur", "camera_shake_blur"])
def test_kernel_blur_equals_returned_kernel_convolved(name):
    x = _textured(3)
    out = degrade(x, name, 3, seed=4)
    k = out.kernel[0].numpy().astype(np.float64)
    src = to_numpy(x).astype(np.float64)
    ref = np.stack([ndimage.convolve(src[..., c], k, mode="reflect") for c in range(3)], axis=2)
    np.testing.assert_allclose(to_numpy(out.image), ref, atol=2e-5)


def test_motion_kernel_direction_and_length():
    x = _flat(0.5, 32, 32)
    out = degrade(x, "motion_blur", 3, seed=5, overrides={"length": 21, "angle": 30.0})
    k = out.kernel[0].numpy()
    ys, xs = np.mgrid[: k.shape[0], : k.shape[1]] - k.shape[0] // 2
    cov = np.cov(np.stack([xs.ravel(), -ys.ravel()]), aweights=k.ravel())
    evals, evecs = np.linalg.eigh(cov)
    major = evecs[:, 1]
    angle = np.degrees(np.arctan2(major[1], major[0])) % 180
    assert angle == pytest.approx(30, abs=1)
    # a uniform segment of length 20 (centres of the 21 pixels) has std 20 / sqrt(12)
    assert np.sqrt(evals[1]) == pytest.approx(20 / np.sqrt(12), rel=0.05)


def test_defocus_kernel_is_a_disk_of_the_stated_radius():
    out = degrade(_flat(0.5, 32, 32), "defocus_blur", 3, seed=0, overrides={"radius": 6.0})
    k = out.kernel[0].numpy()
    ys, xs = np.mgrid[: k.shape[0], : k.shape[1]] - k.shape[0] // 2
    rms_radius = np.sqrt((k * (xs**2 + ys**2)).sum())
    assert rms_radius == pytest.approx(6.0 / np.sqrt(2), rel=0.03)  # uniform disk: R / sqrt(2)
    np.testing.assert_allclose(k, k.T, atol=1e-7)
    np.testing.assert_allclose(k, k[::-1], atol=1e-7)


def test_camera_shake_kernel_extent():
    for seed in range(3):
        out = degrade(_flat(0.5, 64, 64), "camera_shake_blur", 3, seed=seed)
        k = out.kernel[0].numpy()
        rows, cols = np.nonzero(k > 0)
        extent = max(rows.max() - rows.min(), cols.max() - cols.min())
        assert extent == pytest.approx(out.params["size"] - 1, abs=2)


def _dot_windows(img: np.ndarray, pos: tuple[int, ...], r: int = 19) -> dict[tuple[int, int], np.ndarray]:
    return {(y, x): img[y - r : y + r + 1, x - r : x + r + 1] for y in pos for x in pos}


def test_nonuniform_shake_blur_is_uniform_without_roll_and_grows_away_from_the_centre_with_it():
    pos = (40, 80, 120)  # a 3x3 grid of dots; the rotation centre (0.5, 0.5) is the middle one
    x = torch.zeros(1, 3, 161, 161)
    for y in pos:
        x[:, :, y, pos] = 1.0
    centre = {"centre_x": 0.5, "centre_y": 0.5}
    # no roll: every dot gets the same spread (a shift-invariant blur)
    out = degrade(x, "nonuniform_shake_blur", 3, seed=0, overrides={"roll": 0.0, "size": 15.0, **centre})
    wins = _dot_windows(out.image[0, 0].numpy(), pos)
    assert wins[(80, 80)].max() < 0.5  # really blurred
    for w in wins.values():
        np.testing.assert_allclose(w, wins[(80, 80)], atol=1e-6)
    # rotation only: the centre dot stays put, the others move along circles about it, the farther
    # ones farther (roll = the motion of the farthest pixel, the corner at 80 * sqrt(2) px)
    out = degrade(x, "nonuniform_shake_blur", 3, seed=0, overrides={"roll": 24.0, "size": 1.0, **centre})
    wins = _dot_windows(out.image[0, 0].numpy(), pos)
    assert wins[(80, 80)].max() > 0.99
    yy, xx = np.mgrid[-19:20, -19:20]
    for (y, x0), w in wins.items():
        radial = np.array([x0 - 80.0, y - 80.0])
        dist = np.linalg.norm(radial)
        if dist == 0:
            continue
        radial /= dist
        tangent = np.array([-radial[1], radial[0]])
        assert w.sum() == pytest.approx(1.0, abs=1e-4)
        # centred on the dot (the paths are centred on their time mean)
        assert abs((w * xx).sum()) < 0.15 and abs((w * yy).sum()) < 0.15
        on = w > 1e-4
        along = xx[on] * tangent[0] + yy[on] * tangent[1]
        across = xx[on] * radial[0] + yy[on] * radial[1]
        arc = 24.0 * dist / np.hypot(80, 80)
        assert arc <= np.ptp(along) <= arc + 2.5  # + the bilinear footprint
        assert np.ptp(across) <= 2.5


def test_resampling_blur_equals_torch_bilinear_down_up():
    x = _textured(4, 96, 120)
    out = degrade(x, "resampling_blur", 2, seed=0, overrides={"factor": 2.5})
    down = F.interpolate(x, size=(38, 48), mode="bilinear", align_corners=False, antialias=False)
    ref = F.interpolate(down, size=(96, 120), mode="bilinear", align_corners=False)
    torch.testing.assert_close(out.image, ref, atol=1e-5, rtol=0)


def test_zoom_blur_spreads_a_dot_along_its_ray():
    x = torch.zeros(1, 3, 129, 129)
    x[:, :, 64, 104] = 1.0  # 40 px right of the centre (64, 64)
    out = degrade(x, "zoom_blur", 3, seed=0, overrides={"max_factor": 1.25, "step": 0.1})
    assert out.params["n_copies"] == 3  # zooms 1.0, 1.1, 1.2
    img = out.image[0, 0].numpy()
    assert img[:62].sum() + img[67:].sum() < 1e-6  # nothing off the ray (row 64 +- bilinear spread)
    assert img[64, 104] == pytest.approx(1 / 3, abs=1e-6)  # the unzoomed copy, 1/3 of the mean
    for z in (1.1, 1.2):  # zoomed copies land at 64 + 40 z on the same row
        col = 64 + 40 * z
        lo, hi = int(col) - 2, int(col) + 3
        window = img[60:69, lo:hi]
        xs = np.arange(lo, hi)
        centroid = (window.sum(axis=0) * xs).sum() / window.sum()
        assert centroid == pytest.approx(col, abs=0.15)
        assert window.sum() > 0.3


# ------------------------------------------------------------------------------------ compositing


@pytest.mark.parametrize("name", ["haze", "fog", "rain", "snow"])
def test_composite_equals_formula_for_returned_t_and_airlight(name):
    x = _textured(5)
    out = degrade(x, name, 3, seed=6)
    t, a = out.transmission, out.airlight
    assert float(t.min()) >= 0 and float(t.max()) <= 1
    expected = x * t + a[:, :, None, None] * (1 - t)
    torch.testing.assert_close(out.image, expected.clamp(0, 1), atol=1e-6, rtol=0)
    assert float((1 - t).mean()) > 0.01


def test_fog_mean_opacity_is_the_density():
    out = degrade(_textured(), "fog", 4, seed=2)
    assert float((1 - out.transmission).mean()) == pytest.approx(out.params["density"], abs=1e-4)


def test_snow_only_whitens():
    x = _textured()
    out = degrade(x, "snow", 5, seed=1)
    assert bool((out.image >= x - 1e-6).all())
    assert torch.equal(out.airlight, torch.ones(1, 3))


def test_rain_streak_direction_is_the_slant():
    for slant in (-20.0, 0.0, 15.0):
        x = np.full((192, 192, 3), 0.3, np.float32)
        out = rain(
            x,
            density=0.001,
            length=30,
            slant=slant,
            width=0.6,
            intensity=0.8,
            veil=0.0,
            brightness=0.9,
            rng=np.random.default_rng(0),
        )
        a = 1 - out.transmission.astype(np.float64)
        # the autocorrelation of a streak layer is elongated along the streaks
        spectrum = np.fft.fft2(a - a.mean())
        ac = np.fft.fftshift(np.real(np.fft.ifft2(np.abs(spectrum) ** 2)))
        c = 96
        win = ac[c - 20 : c + 21, c - 20 : c + 21]
        win = np.where(win > 0.2 * win.max(), win, 0)
        ys, xs = np.mgrid[-20:21, -20:21]
        cov = np.cov(np.stack([xs.ravel(), -ys.ravel()]), aweights=win.ravel())  # y up, as on screen
        along = np.linalg.eigh(cov)[1][:, 1]
        angle_from_vertical = (np.degrees(np.arctan2(-along[0], along[1])) + 90) % 180 - 90
        assert angle_from_vertical == pytest.approx(slant, abs=3)


def test_haze_with_given_depth_follows_the_scattering_model():
    x = _textured(6, 48, 64)
    depth = torch.linspace(0, 2, 64).expand(1, 1, 48, 64)
    out = add_haze(x, depth=depth, beta=0.8, airlight=(0.9, 0.85, 0.8))
    t = torch.exp(-0.8 * depth)
    torch.testing.assert_close(out.transmission, t, atol=1e-6, rtol=0)
    a = torch.tensor([0.9, 0.85, 0.8])
    torch.testing.assert_close(out.image, (x * t + a[None, :, None, None] * (1 - t)), atol=1e-6, rtol=0)
    assert out.params == {"beta": 0.8, "airlight": [0.9, 0.85, 0.8], "synthetic_depth": False}
    # numpy in, numpy out
    np_out = add_haze(to_numpy(x), depth=depth[0, 0].numpy(), beta=0.8, airlight=0.9)
    np.testing.assert_allclose(np_out.transmission, t[0, 0].numpy(), atol=1e-6)


def test_haze_errors():
    x = np.zeros((8, 8, 3), np.float32)
    with pytest.raises(ValueError, match="depth shape"):
        add_haze(x, depth=np.zeros((8, 9)), beta=1.0)
    with pytest.raises(ValueError, match=">= 0"):
        add_haze(x, depth=-np.ones((8, 8)), beta=1.0)
    with pytest.raises(ValueError, match="beta"):
        add_haze(x, depth=np.ones((8, 8)), beta=-1.0)
    with pytest.raises(ValueError, match="depth batch"):
        add_haze(torch.zeros(2, 3, 8, 8), depth=torch.ones(3, 8, 8), beta=1.0)
    from robustsam_prior.degradations.haze import haze

    with pytest.raises(ValueError, match="rng"):
        haze(x, beta=1.0, airlight=0.9)
    with pytest.raises(ValueError, match="2x2"):
        synthetic_depth(1, 8, np.random.default_rng(0))


def test_synthetic_depth_is_plausible():
    for seed in range(4):
        d = synthetic_depth(120, 160, np.random.default_rng(seed))
        assert d.dtype == np.float32 and d.min() == 0 and d.max() == pytest.approx(1)
        assert d[-5:].mean() < 0.4 < d[:5].mean()  # the ground near the camera is at the bottom
        gy, gx = np.gradient(d)
        assert np.abs(gy).max() < 0.1 and np.abs(gx).max() < 0.1  # smooth: no cliffs


# -------------------------------------------------------------------------------------- geometric


def _checkerboard(h: int, w: int, cell: int) -> tuple[torch.Tensor, torch.Tensor]:
    ys, xs = np.mgrid[:h, :w]
    labels = (ys // cell) * (w // cell + 1) + xs // cell
    parity = ((ys // cell + xs // cell) % 2).astype(np.float32)
    return to_tensor(np.repeat(parity[..., None], 3, 2)), torch.from_numpy(labels.astype(np.int32))[None]


def _parity(labels: np.ndarray, w: int, cell: int) -> np.ndarray:
    return (labels // (w // cell + 1) + labels % (w // cell + 1)) % 2


@pytest.mark.parametrize("name", ["elastic_transform", "frosted_glass_blur"])
def test_warps_keep_labels_aligned_with_the_image(name):
    h, w, cell = 96, 128, 16
    image, labels = _checkerboard(h, w, cell)
    for severity in (3, 5):
        out = degrade(image, name, severity, seed=severity, labels=labels)
        assert out.labels.dtype == torch.int32 and not torch.equal(out.labels, labels)
        value = out.image[0, 0].numpy()
        parity = _parity(out.labels[0].numpy(), w, cell)
        confident = np.abs(value - 0.5) > 0.4
        assert confident.mean() > 0.6
        # wherever the image is clearly black or white, the warped label is the matching cell
        assert np.array_equal(value[confident] > 0.5, parity[confident] == 1)
        # edges coincide: image and label parity disagree only on a thin band at the edges
        assert ((value > 0.5) != (parity == 1)).mean() < 0.005


def test_unwarped_labels_would_be_misaligned():
    """The check above can fail: labels left in place (the official bug) disagree with the image."""
    h, w, cell = 96, 128, 16
    image, labels = _checkerboard(h, w, cell)
    out = degrade(image, "elastic_transform", 5, seed=5)
    value = out.image[0, 0].numpy()
    parity = _parity(labels[0].numpy(), w, cell)
    confident = np.abs(value - 0.5) > 0.4
    assert not np.array_equal(value[confident] > 0.5, parity[confident] == 1)
    assert ((value > 0.5) != (parity == 1)).mean() > 0.05


def _ramps(h: int, w: int) -> np.ndarray:
    ys, xs = np.mgrid[:h, :w].astype(np.float32)
    return np.stack([xs / (w - 1), ys / (h - 1), np.zeros_like(xs)], axis=2)


def test_elastic_displacement_rms_is_the_parameter():
    h = w = 256
    out = elastic_transform(
        _ramps(h, w), displacement=3.0, sigma=10.0, affine=0.0, rng=np.random.default_rng(0)
    )
    ys, xs = np.mgrid[:h, :w]
    dx = out.image[..., 0] * (w - 1) - xs  # bilinear sampling of a linear ramp is exact
    dy = out.image[..., 1] * (h - 1) - ys
    m = 24  # away from the reflected borders
    rms = np.sqrt((dx[m:-m, m:-m] ** 2 + dy[m:-m, m:-m] ** 2).mean())
    assert rms == pytest.approx(3.0, rel=0.1)
    # smooth: neighbouring displacements are nearly equal
    assert np.abs(np.diff(dx[m:-m, m:-m], axis=1)).max() < 0.5


def test_frosted_glass_offsets_bounded_by_radius():
    h = w = 128
    out = frosted_glass_blur(_ramps(h, w), radius=3.0, sigma=0.0, rng=np.random.default_rng(0))
    ys, xs = np.mgrid[:h, :w]
    dx = (out.image[..., 0] * (w - 1) - xs)[8:-8, 8:-8]
    dy = (out.image[..., 1] * (h - 1) - ys)[8:-8, 8:-8]
    assert np.abs(dx).max() <= 3.0 + 1e-3 and np.abs(dy).max() <= 3.0 + 1e-3
    assert np.abs(dx).max() > 2.9 and np.abs(dx).std() > 0.5  # uniform in [-3, 3], not collapsed
    assert abs(np.corrcoef(dx[:, 1:].ravel(), dx[:, :-1].ravel())[0, 1]) < 0.05  # independent per pixel


@pytest.mark.parametrize("seed", range(6))
def test_camera_shake_kernel_is_centred_on_its_mass(seed):
    """An off-centre kernel would also translate the image (blurred and clean no longer aligned)."""
    from robustsam_prior.degradations import camera_shake_kernel

    k = camera_shake_kernel(25, np.random.default_rng(seed)).astype(np.float64)
    half = (k.shape[0] - 1) / 2
    ys, xs = np.mgrid[: k.shape[0], : k.shape[1]]
    assert abs((k * xs).sum() / k.sum() - half) < 1e-3
    assert abs((k * ys).sum() / k.sum() - half) < 1e-3


def test_frame_average_blur_is_the_linear_light_mean_of_discrete_copies():
    # one bright dot: the output (back in linear light) holds `frames` copies whose masses sum to the
    # dot's, centred on it (mass-centred kernel), each a bilinear splat (at most 4 pixels)
    x = torch.zeros(1, 3, 129, 129)
    x[:, :, 64, 64] = 1.0
    out = degrade(x, "frame_average_blur", 5, seed=3, overrides={"frames": 9, "anxiety": 0.0})
    lin = out.image[0, 0].numpy().astype(np.float64) ** 2.2
    assert lin.sum() == pytest.approx(1.0, rel=1e-3)
    yy, xx = np.mgrid[:129, :129]
    assert (lin * yy).sum() == pytest.approx(64, abs=0.05) and (lin * xx).sum() == pytest.approx(64, abs=0.05)
    assert 9 <= (lin > 1e-6).sum() <= 36
    extent = max(np.ptp(yy[lin > 1e-3]), np.ptp(xx[lin > 1e-3]))
    assert out.params["size"] - 3 <= extent <= out.params["size"] + 1
    # a flat image stays flat; one frame or under a pixel of motion is the identity
    flat = degrade(_flat(0.3, 64, 64), "frame_average_blur", 4, seed=0).image
    torch.testing.assert_close(flat, _flat(0.3, 64, 64), atol=1e-5, rtol=0)
    img = _textured()
    for overrides in ({"frames": 1}, {"size": 1.0}):
        torch.testing.assert_close(degrade(img, "frame_average_blur", 3, seed=0, overrides=overrides).image, img)
