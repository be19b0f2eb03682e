"""ImageMetrics (reset/update/compute), the metric table and metric construction."""

import math

import pytest
import torch

from eval.metrics.accumulator import METRIC_INFO, ImageMetrics, build_image_metrics, is_lower_better
from eval.metrics.psnr_ssim import MetricConventions, psnr, ssim


def test_accumulates_per_image_and_means():
    fns, unavailable = build_image_metrics(["psnr", "ssim"], conventions=MetricConventions(crop_border=2))
    assert unavailable == {}
    acc = ImageMetrics(metrics=fns)
    g = torch.Generator().manual_seed(0)
    a, b = torch.rand(3, 3, 24, 24, generator=g), torch.rand(3, 3, 24, 24, generator=g)
    out = acc.update(a[:2], b[:2], ["x", "y"])
    acc.update(a[2], b[2], ["z"])  # a single (3, H, W) image
    # MetricConventions' defaults are the project's convention: rounded to 8-bit levels
    assert out["x"]["psnr"] == psnr(a[0], b[0], crop_border=2, quantize=True).item()
    assert out["x"]["psnr"] != psnr(a[0], b[0], crop_border=2).item()
    r = acc.compute()
    assert r["count"] == 3 and list(r["per_image"]) == ["x", "y", "z"]
    assert r["mean"]["ssim"] == pytest.approx(ssim(a, b, crop_border=2, quantize=True).mean().item())
    acc.reset()
    with pytest.raises(ValueError, match="no images were scored"):
        acc.compute()


def test_inf_psnr_mean_and_errors():
    fns, _ = build_image_metrics(["psnr"])
    acc = ImageMetrics(metrics=fns)
    x = torch.rand(1, 3, 8, 8)
    acc.update(x, x, ["same"])
    acc.update(x, x * 0.5, ["half"])
    assert math.isinf(acc.compute()["mean"]["psnr"])  # as BasicSR: the mean of inf and a number is inf
    with pytest.raises(ValueError, match="already scored"):
        acc.update(x, x, ["same"])
    with pytest.raises(ValueError, match="2 names for a batch of 1"):
        acc.update(x, x, ["a", "b"])
    with pytest.raises(ValueError, match="at least one metric"):
        ImageMetrics(metrics={})
    with pytest.raises(KeyError, match="did you mean 'ssim'"):
        build_image_metrics(["sim"])


def test_unavailable_lpips_is_carried_not_scored(tmp_path):
    fns, unavailable = build_image_metrics(["psnr", "lpips_vgg"], lpips_weights=tmp_path)
    assert list(fns) == ["psnr"] and "vgg16-397923af.pth" in unavailable["lpips_vgg"]
    acc = ImageMetrics(metrics=fns, unavailable=unavailable)
    x = torch.rand(1, 3, 8, 8)
    acc.update(x, x * 0.9, ["a"])
    r = acc.compute()
    assert "lpips_vgg" not in r["mean"] and r["unavailable"] == unavailable


def test_lower_is_better_table():
    assert is_lower_better("lpips") and is_lower_better("lpips_vgg") and is_lower_better("lpips_custom")
    assert not is_lower_better("psnr") and not is_lower_better("iou") and not is_lower_better("unknown")
    assert METRIC_INFO["psnr"].unit == "dB"


def test_conventions_are_described_for_headers():
    assert MetricConventions().describe() == "PSNR/SSIM: BasicSR 1.4 convention, RGB, crop 0, 8-bit"
    c = MetricConventions(crop_border=4, test_y_channel=True, quantize=False)
    assert c.describe() == "PSNR/SSIM: BasicSR 1.4 convention, Y channel (BT.601), crop 4, unrounded"
    assert c.kwargs() == {"crop_border": 4, "test_y_channel": True, "data_range": 1.0, "quantize": False}


def test_metric_names_come_from_one_registry(tmp_path):
    from eval.metrics import IMAGE_METRICS, missing_metrics

    assert IMAGE_METRICS.names() == ["lpips", "lpips_alex", "lpips_vgg", "psnr", "ssim"]
    assert missing_metrics(["psnr", "ssim"]) == {}
    assert "vgg16-397923af.pth" in missing_metrics(["lpips_vgg"], lpips_weights=tmp_path)["lpips_vgg"]
    with pytest.raises(KeyError, match="unknown metric 'lpip' \\(did you mean 'lpips'\\?\\)"):
        missing_metrics(["lpip"])
