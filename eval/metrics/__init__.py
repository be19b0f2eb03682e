"""Restoration and segmentation metrics (functional ops, ``nn.Module`` wrappers, dataset accumulators).

Re-exports are resolved lazily so that ``import eval.metrics`` does not import torch or lpips.
"""

from __future__ import annotations

from robustsam_prior.core.lazy import lazy_exports

_EXPORTS = {
    "psnr": "psnr_ssim",
    "ssim": "psnr_ssim",
    "PSNR": "psnr_ssim",
    "SSIM": "psnr_ssim",
    "MetricConventions": "psnr_ssim",
    "rgb_to_y": "psnr_ssim",
    "LPIPS": "lpips_metric",
    "LpipsUnavailable": "lpips_metric",
    "build_lpips": "lpips_metric",
    "lpips_status": "lpips_metric",
    "ConfusionMatrix": "segmentation",
    "PromptMetrics": "segmentation",
    "confusion_matrix": "segmentation",
    "iou_from_confusion": "segmentation",
    "mask_iou": "segmentation",
    "mask_dice": "segmentation",
    "mask_pixel_accuracy": "segmentation",
    "mask_metrics": "segmentation",
    "matched_miou": "segmentation",
    "matched_relabel": "segmentation",
    "ImageMetrics": "accumulator",
    "IMAGE_METRICS": "accumulator",
    "MetricUnavailable": "accumulator",
    "METRIC_INFO": "info",
    "build_image_metrics": "accumulator",
    "missing_metrics": "accumulator",
    "is_lower_better": "info",
}

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
