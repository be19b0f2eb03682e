"""What each metric name means for reports: unit and whether lower is better (no torch import)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["METRIC_INFO", "MetricInfo", "describe_conventions", "is_lower_better"]


@dataclass(frozen=True)
class MetricInfo:
    """What a metric name means for reports (pyiqa-style ``lower_better`` flag)."""

    name: str
    lower_is_better: bool
    unit: str = ""
    description: str = ""


METRIC_INFO: dict[str, MetricInfo] = {
    m.name: m
    for m in (
        MetricInfo("psnr", False, "dB", "peak signal-to-noise ratio"),
        MetricInfo("ssim", False, "", "structural similarity (BasicSR 1.4)"),
        MetricInfo("lpips", True, "", "LPIPS v0.1 (alex)"),
        MetricInfo("lpips_alex", True, "", "LPIPS v0.1, AlexNet"),
        MetricInfo("lpips_vgg", True, "", "LPIPS v0.1, VGG16"),
        MetricInfo("iou", False, "", "per-prompt mask IoU"),
        MetricInfo("dice", False, "", "per-prompt mask Dice"),
        MetricInfo("pa", False, "", "per-prompt pixel accuracy"),
        MetricInfo("miou", False, "", "mean IoU over classes"),
        MetricInfo("images_per_s", False, "img/s", "throughput"),
        MetricInfo("seconds", True, "s", "wall time"),
    )
}


def is_lower_better(metric: str) -> bool:
    """True for metrics where smaller is better (LPIPS, times); unknown metrics count as higher-is-better."""
    info = METRIC_INFO.get(metric)
    if info is None and metric.startswith("lpips"):
        return True
    return bool(info and info.lower_is_better)


def describe_conventions(conventions: Mapping) -> str:
    """One line naming the PSNR/SSIM convention of a result, for report and table headers.

    ``conventions`` holds :class:`eval.metrics.psnr_ssim.MetricConventions`' fields (a results row's
    ``conventions``); e.g. ``"PSNR/SSIM: BasicSR 1.4 convention, RGB, crop 0, 8-bit"``. "8-bit" means
    that both images were rounded to 8-bit levels first (BasicSR's ``tensor2img``), "unrounded" that
    they were scored at the levels they had (float network outputs, 16-bit files).
    """
    channel = "Y channel (BT.601)" if conventions.get("test_y_channel") else "RGB"
    crop = int(conventions.get("crop_border") or 0)
    levels = "8-bit" if conventions.get("quantize") else "unrounded"
    return f"PSNR/SSIM: BasicSR 1.4 convention, {channel}, crop {crop}, {levels}"
