"""The degradation registry and ``degrade()``: determinism, parameter tables, batches, errors."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from robustsam_prior.degradations import (
    DEGRADATIONS,
    RESTORATION_SET,
    ROBUST_SEG_SET,
    ParamRange,
    blur_with_kernel,
    camera_shake_kernel,
    defocus_kernel,
    degrade,
    line_kernel,
)
from robustsam_prior.degradations.base import check_image
from robustsam_prior.degradations.kernels import convolve_np, rasterize_trajectory

ALL = DEGRADATIONS.names()


@pytest.fixture(scope="module")
def image():
    g = torch.Generator().manual_seed(0)
    return torch.rand(1, 3, 40, 48, generator=g)


def test_registry_holds_the_paper_set_and_restoration_extras():
    assert len(ROBUST_SEG_SET) == 15 and len(set(ROBUST_SEG_SET)) == 15
    assert set(ROBUST_SEG_SET) | set(RESTORATION_SET) | {"impulse_noise"} == set(ALL)
    assert "impulse_noise" not in ROBUST_SEG_SET  # the official "impulse_noise" is multiplicative
    for name in ALL:
        spec = DEGRADATIONS.get(name)
        assert spec.name == name and spec.summary and spec.reference and spec.params


@pytest.mark.parametrize("name", ALL)
def test_deterministic_per_seed_and_different_across_seeds(image, name):
    for severity in (1, 3, 5):
        a = degrade(image, name, severity, seed=7)
        b = degrade(image, name, severity, seed=7)
        assert torch.equal(a.image, b.image) and a.params == b.params
        for field in ("transmission", "airlight", "kernel"):
            fa, fb = getattr(a, field), getattr(b, field)
            assert (fa is None and fb is None) or torch.equal(fa, fb)
        # an explicit generator with the same seed is the same stream
        c = degrade(image, name, severity, rng=np.random.default_rng(7))
        assert torch.equal(a.image, c.image)
    # severity 2 draws every parameter from a proper range (severity 3 fixes some official values)
    assert not torch.equal(degrade(image, name, 2, seed=1).image, degrade(image, name, 2, seed=2).image)


@pytest.mark.parametrize("name", ALL)
def test_output_contract_and_drawn_params_in_table(image, name):
    spec = DEGRADATIONS.get(name)
    for severity in (1, 2, 3, 4, 5):
        out = degrade(image, name, severity, seed=severity)
        assert out.image.shape == image.shape and out.image.dtype == image.dtype
        assert float(out.image.min()) >= 0 and float(out.image.max()) <= 1
        assert not torch.equal(out.image, image), f"{name} severity {severity} did nothing"
        json.dumps(out.params)  # JSON-able
        for p in spec.params:
            lo, hi = p.range_for(severity)
            assert lo <= out.params[p.name] <= hi, (name, p.name, severity)
            if p.integer:
                assert isinstance(out.params[p.name], int)
        if out.transmission is not None:
            assert out.transmission.shape == (1, 1, 40, 48) and out.airlight.shape == (1, 3)
        if out.kernel is not None:
            k = out.kernel[0]
            assert k.shape[0] % 2 == 1 and abs(float(k.sum()) - 1) < 1e-5 and float(k.min()) >= 0


def test_severity_increases_the_damage():
    """Mean absolute change grows with severity for every degradation that has a monotone table."""
    g = torch.Generator().manual_seed(3)
    x = 0.2 + 0.6 * torch.rand(1, 3, 64, 64, generator=g)
    for name in (
        "gaussian_noise",
        "iso_noise",
        "impulse_noise",
        "low_light",
        "contrast",
        "fog",
        "haze",
        "defocus_blur",
        "jpeg_compression",
        "resampling_blur",
    ):
        change = [float((degrade(x, name, s, seed=0).image - x).abs().mean()) for s in (1, 3, 5)]
        assert change[0] < change[1] < change[2], (name, change)


def test_batch_shares_params_but_not_random_fields():
    x = torch.full((2, 3, 32, 32), 0.5)
    out = degrade(x, "gaussian_noise", 3, seed=0)
    assert not torch.equal(out.image[0], out.image[1])
    out = degrade(x, "color_jitter", 3, seed=0)
    assert set(out.params) >= {"brightness", "contrast", "saturation", "hue"}
    orders = [p["order"] for p in out.params.get("per_image", [])] or [out.params["order"]] * 2
    assert all(sorted(o) == ["brightness", "contrast", "hue", "saturation"] for o in orders)
    out = degrade(x, "camera_shake_blur", 3, seed=0)
    assert out.kernel.shape[0] == 2 and not torch.equal(out.kernel[0], out.kernel[1])
    for i in range(2):  # each image used its own (zero-padded) kernel
        ref = blur_with_kernel(x[i : i + 1], out.kernel[i])
        torch.testing.assert_close(out.image[i : i + 1], ref)


def test_dtype_and_labels_pass_through(image):
    out = degrade(image.double(), "low_light", 3, seed=0)
    assert out.image.dtype == torch.float64
    labels = torch.arange(40 * 48, dtype=torch.int64).reshape(1, 40, 48)
    assert degrade(image, "gaussian_noise", seed=0, labels=labels).labels is labels
    assert degrade(image, "gaussian_noise", seed=0).labels is None
    warped = degrade(image, "elastic_transform", 5, seed=0, labels=labels).labels
    assert warped.dtype == torch.int64 and warped.shape == labels.shape and not torch.equal(warped, labels)


def test_overrides(image):
    out = degrade(image, "gaussian_noise", 3, seed=0, overrides={"sigma": 0.0})
    torch.testing.assert_close(out.image, image)
    assert out.params["sigma"] == 0.0
    with pytest.raises(ValueError, match=r"no parameter 'sigmaa'.*did you mean 'sigma'"):
        degrade(image, "gaussian_noise", overrides={"sigmaa": 0.1})


def test_errors(image):
    with pytest.raises(KeyError, match=r"did you mean 'gaussian_noise'"):
        degrade(image, "gausian_noise")
    for bad in (0, 6, "3", True, 2.5):
        with pytest.raises(ValueError, match="severity must be an integer 1..5"):
            degrade(image, "fog", bad)
    with pytest.raises(ValueError, match="either seed or rng"):
        degrade(image, "fog", seed=1, rng=np.random.default_rng(1))
    with pytest.raises(TypeError, match="torch.Tensor"):
        degrade(image[0].numpy(), "fog")
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        degrade(image[0], "fog")
    with pytest.raises(ValueError, match="float"):
        degrade((image * 255).to(torch.uint8), "fog")
    with pytest.raises(ValueError, match="in \\[0, 1\\]"):
        degrade(image * 255, "fog")
    with pytest.raises(ValueError, match="in \\[0, 1\\]"):
        degrade(torch.full_like(image, float("nan")), "fog")
    with pytest.raises(ValueError, match="empty"):
        degrade(torch.zeros(0, 3, 4, 4), "fog")
    with pytest.raises(ValueError, match="labels must be a"):
        degrade(image, "elastic_transform", labels=torch.zeros(1, 40, 47, dtype=torch.int32))
    with pytest.raises(ValueError, match="integer tensor"):
        degrade(image, "elastic_transform", labels=torch.zeros(1, 40, 48))


def test_param_table_validation():
    with pytest.raises(ValueError, match="need 5 ranges"):
        ParamRange("x", ((0, 1),))
    with pytest.raises(ValueError, match="reversed"):
        ParamRange("x", ((0, 1), (0, 1), (1, 0), (0, 1), (0, 1)))
    p = ParamRange("q", ((1, 2),) * 5, integer=True)
    assert p.format_range(1) == "1..2"
    assert ParamRange("f", ((0.5, 0.5),) * 5).format_range(3) == "0.5"
    with pytest.raises(KeyError, match="has no parameter"):
        DEGRADATIONS.get("fog").param("nope")
    with pytest.raises(ValueError, match="HxWx3"):
        check_image(np.zeros((4, 4)))
    with pytest.raises(ValueError, match="float"):
        check_image(np.zeros((4, 4, 3), np.uint8))


def _kernel_batch() -> np.ndarray:
    """Three different kernels, zero-padded to 31x31: a motion line, a camera-shake trajectory, the identity."""

    def padded(k: np.ndarray) -> np.ndarray:
        return np.pad(k, (31 - k.shape[0]) // 2)

    return np.stack([padded(line_kernel(21, 0.7)), padded(camera_shake_kernel(25, np.random.default_rng(2))),
                     padded(np.ones((1, 1), np.float32))])


@pytest.mark.parametrize("h, w", [(40, 48), (12, 9)])  # (12, 9): the kernel is wider than the image
def test_kornia_batch_blur_equals_the_opencv_path(h, w):
    from robustsam_prior.degradations.kernels import blur_batch_kornia

    x = torch.rand(3, 3, h, w, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    kernels = _kernel_batch()
    ref = blur_with_kernel(x, kernels)  # CPU tensors: OpenCV, image by image
    got = blur_batch_kornia(x, kernels)
    assert got.dtype == torch.float64 and got.shape == x.shape
    torch.testing.assert_close(got, ref, atol=2e-6, rtol=0)
    torch.testing.assert_close(got[2], x[2], atol=1e-6, rtol=0)  # the identity kernel
    with pytest.raises(ValueError, match="odd size"):
        blur_batch_kornia(x, np.ones((3, 4, 4), np.float32))


def test_tensors_off_the_cpu_are_blurred_by_kornia_where_they_are(monkeypatch):
    from robustsam_prior.degradations import kernels as kernels_module

    seen = []
    monkeypatch.setattr(kernels_module, "blur_batch_kornia", lambda image, k: seen.append((image.device.type, k.shape)))
    kernels_module.blur_with_kernel(torch.empty(3, 3, 8, 8, device="meta"), _kernel_batch())
    assert seen == [("meta", (3, 31, 31))]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_batch_blur_stays_on_the_gpu_and_equals_the_cpu():
    x = torch.rand(3, 3, 64, 80, generator=torch.Generator().manual_seed(1))
    kernels = _kernel_batch()
    got = blur_with_kernel(x.cuda(), kernels)
    assert got.device.type == "cuda"
    torch.testing.assert_close(got.cpu(), blur_with_kernel(x, kernels), atol=2e-6, rtol=0)


def test_kernels():
    x = np.random.default_rng(0).random((20, 24, 3), dtype=np.float32)
    assert line_kernel(1, 30).shape == (1, 1) and defocus_kernel(0.3).shape == (1, 1)
    np.testing.assert_allclose(convolve_np(x, np.ones((1, 1), np.float32)), x)
    with pytest.raises(ValueError, match="odd size"):
        convolve_np(x, np.ones((2, 2), np.float32) / 4)
    with pytest.raises(ValueError, match="NaN"):
        convolve_np(x, np.full((3, 3), np.nan, np.float32))
    with pytest.raises(ValueError, match=">= 0"):
        defocus_kernel(-1)
    with pytest.raises(ValueError, match="> 0"):
        camera_shake_kernel(0, np.random.default_rng(0))
    with pytest.raises(ValueError, match="anxiety"):
        camera_shake_kernel(9, np.random.default_rng(0), anxiety=2)
    with pytest.raises(ValueError, match="Nx2"):
        rasterize_trajectory(np.zeros((0, 2)))
    k = rasterize_trajectory(np.array([[0.5, 0.0]]))  # half-way between two pixels
    np.testing.assert_allclose(k[1], [0, 0.5, 0.5], atol=1e-7)
    t = torch.from_numpy(x).permute(2, 0, 1)[None]
    with pytest.raises(ValueError, match="B=1"):
        blur_with_kernel(t, np.ones((2, 3, 3), np.float32) / 9)
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        blur_with_kernel(t[0], np.ones((3, 3), np.float32) / 9)


def test_package_import_is_light():
    code = (
        "import sys, robustsam_prior.degradations as d; "
        "assert 'torch' not in sys.modules and 'cv2' not in sys.modules, sorted(sys.modules); "
        "d.ParamRange; assert 'torch' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def _bounded_params():
    for name in ALL:
        for p in DEGRADATIONS.get(name).params:
            lo, hi = p.bounds
            if lo is not None:
                yield name, p.name, lo - 1
            if hi is not None:
                yield name, p.name, hi + 1


@pytest.mark.parametrize("name,param,value", list(_bounded_params()))
def test_explicit_values_outside_the_bounds_are_rejected(image, name, param, value):
    with pytest.raises(ValueError, match=rf"{name}: {param} must be in"):
        degrade(image, name, overrides={param: value})


def test_bounds_are_checked_by_the_table_and_edge_values_work(image):
    with pytest.raises(ValueError, match="leaves its bounds"):
        ParamRange("x", ((0, 2),) * 5, bounds=(0, 1))
    edge = {
        "iso_noise": {"gain": 0.0},
        "fog": {"density": 0.0},
        "zoom_blur": {"max_factor": 1.0},
        "camera_shake_blur": {"size": 1.0},
        "nonuniform_shake_blur": {"size": 1.0, "roll": 0.0},
        "resampling_blur": {"factor": 1.0},
        "motion_blur": {"length": 0},
    }
    for name, overrides in edge.items():
        out = degrade(image, name, overrides=overrides, seed=0)
        assert out.image.shape == image.shape and torch.isfinite(out.image).all()
    # the identity cases really are identities
    torch.testing.assert_close(degrade(image, "fog", overrides={"density": 0.0}, seed=0).image, image)
    for name, overrides in (
        ("zoom_blur", {"max_factor": 1.0}),
        ("camera_shake_blur", {"size": 1.0}),
        ("nonuniform_shake_blur", {"size": 1.0, "roll": 0.0}),
    ):
        torch.testing.assert_close(
            degrade(image, name, overrides=overrides, seed=0).image, image, atol=1e-6, rtol=0
        )


def test_write_degraded_writes_where_the_layout_says(tmp_path):
    from pathlib import Path

    from robustsam_prior.core.io import read_image, to_tensor, write_image
    from robustsam_prior.degradations import DegradeLayout, degrade_file, degrade_manifest, write_degraded

    src = tmp_path / "in" / "sub" / "x.png"
    src.parent.mkdir(parents=True)
    write_image(src, np.random.default_rng(0).random((24, 32, 3)).astype(np.float32))
    rel = Path("sub/x.png")
    layout = DegradeLayout.for_output(tmp_path / "out", single_file=False, out_format="jpg")
    assert layout.target(rel) == tmp_path / "out" / "sub" / "x.jpg" and layout.manifest == tmp_path / "out" / "manifest.json"
    assert DegradeLayout(tmp_path, shared={rel}).sides(rel)["transmission"] == tmp_path / "transmission/sub/x.png.png"
    single = DegradeLayout.for_output(tmp_path / "y.png", single_file=True)
    assert single.sides(rel)["kernel"] == tmp_path / "y_kernel.npy" and single.manifest == tmp_path / "y.json"
    layout = DegradeLayout.for_output(tmp_path / "out", single_file=False)
    entry = write_degraded(src, rel, layout, "haze", 2, seed=5)
    assert entry["output"] == "sub/x.png" and entry["transmission"] == "transmission/sub/x.png"
    ref = degrade_file(to_tensor(read_image(src).pixels), "haze", 2, seed=5, rel=rel).image
    torch.testing.assert_close(to_tensor(read_image(tmp_path / "out" / "sub" / "x.png").pixels), ref, atol=1e-6, rtol=0)
    entry = write_degraded(src, rel, layout, "motion_blur", 2, seed=5)
    assert np.load(tmp_path / "out" / "kernel" / "sub" / "x.npy").sum() == pytest.approx(1, abs=1e-5)
    manifest = degrade_manifest("motion_blur", 2, 5, {"sub/x.png": entry})
    assert manifest["images"] == {"sub/x.png": entry} and manifest["failed"] == {} and manifest["seed"] == 5
