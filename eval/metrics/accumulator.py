"""Dataset-level accumulation of per-image restoration metrics (the metric table lives in ``info``).

``ImageMetrics`` follows the reset/update/compute pattern (detectron2's ``DatasetEvaluator``):
``update`` scores a batch and stores one value per image and metric; ``compute`` returns
``{"per_image": {name: {metric: value}}, "mean": {metric: value}}``. Metrics that cannot be computed
here (LPIPS without its backbone weights) are carried as ``unavailable`` with the reason, never as
a number.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch

from robustsam_prior.core.registry import Registry

from .info import METRIC_INFO, MetricInfo, is_lower_better
from .psnr_ssim import MetricConventions, psnr, ssim

logger = logging.getLogger(__name__)

__all__ = ["IMAGE_METRICS", "METRIC_INFO", "ImageMetric", "ImageMetrics", "MetricInfo", "MetricUnavailable",
           "build_image_metrics", "is_lower_better", "missing_metrics"]


PairFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
WeightsPath = str | os.PathLike | None


class MetricUnavailable(RuntimeError):
    """A metric that cannot be computed here (LPIPS without its backbone weights); ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class ImageMetric:
    """An entry of :data:`IMAGE_METRICS`: ``build(conventions, lpips_weights, device)`` makes the metric
    function ``fn(pred (B,3,H,W), gt) -> (B,)`` (:class:`MetricUnavailable` where it cannot be computed
    here), and ``missing(lpips_weights)`` says why it could not be, or None, without building anything."""

    build: Callable[[MetricConventions, WeightsPath, str | torch.device], PairFn]
    missing: Callable[[WeightsPath], str | None] = lambda weights: None


#: metric name -> :class:`ImageMetric`: ``psnr``, ``ssim`` (under the given conventions), ``lpips``
#: (= AlexNet), ``lpips_alex``, ``lpips_vgg``
IMAGE_METRICS: Registry[ImageMetric] = Registry("metric")


def _with_conventions(fn: Callable[..., torch.Tensor]) -> ImageMetric:
    def build(conventions: MetricConventions, weights: WeightsPath, device: str | torch.device) -> PairFn:
        kw = conventions.kwargs()
        return lambda a, b: fn(a, b, **kw)

    return ImageMetric(build)


def _lpips(net: str) -> ImageMetric:
    def build(conventions: MetricConventions, weights: WeightsPath, device: str | torch.device) -> PairFn:
        from .lpips_metric import LpipsUnavailable, build_lpips

        try:
            return build_lpips(net, weights, device=device)
        except LpipsUnavailable as e:
            logger.info("%s", e)  # callers report it (e.g. the CLI's "unavailable" line)
            raise MetricUnavailable(e.reason) from None

    def missing(weights: WeightsPath) -> str | None:
        from .lpips_metric import lpips_status

        ok, reason = lpips_status(net, weights)
        return None if ok else reason

    return ImageMetric(build, missing)


IMAGE_METRICS.add("psnr", _with_conventions(psnr))
IMAGE_METRICS.add("ssim", _with_conventions(ssim))
IMAGE_METRICS.add("lpips", _lpips("alex"))
IMAGE_METRICS.add("lpips_alex", _lpips("alex"))
IMAGE_METRICS.add("lpips_vgg", _lpips("vgg"))


def build_image_metrics(
    names: Sequence[str],
    *,
    conventions: MetricConventions = MetricConventions(),
    lpips_weights: WeightsPath = None,
    device: str | torch.device = "cpu",
) -> tuple[dict[str, PairFn], dict[str, str]]:
    """Metric functions ``fn(pred (B,3,H,W), gt) -> (B,)`` for ``names`` (:data:`IMAGE_METRICS`), and
    ``{name: reason}`` for those that cannot be computed here. An unknown name raises ``KeyError`` with a
    "did you mean", before any metric is built.
    """
    metrics = {name: IMAGE_METRICS.get(name) for name in names}
    fns: dict[str, PairFn] = {}
    unavailable: dict[str, str] = {}
    for name, metric in metrics.items():
        try:
            fns[name] = metric.build(conventions, lpips_weights, device)
        except MetricUnavailable as e:
            unavailable[name] = e.reason
    return fns, unavailable


def missing_metrics(names: Sequence[str], *, lpips_weights: WeightsPath = None) -> dict[str, str]:
    """``{name: reason}`` for the metrics in ``names`` that cannot be computed here, found without building any
    network (so a caller can stop before a long run): LPIPS without its backbone weights file (see
    :func:`eval.metrics.lpips_metric.find_backbone_weights` for where it is looked for). A file that is found
    but cannot be loaded still fails later, in :func:`build_image_metrics`. An unknown name raises ``KeyError``.
    """
    out: dict[str, str] = {}
    for name in names:
        reason = IMAGE_METRICS.get(name).missing(lpips_weights)
        if reason is not None:
            out[name] = reason
    return out


def _mean(values: list[float]) -> float:
    if not values:
        return math.nan
    if any(math.isinf(v) for v in values):  # e.g. PSNR of identical images: the mean is inf, as in BasicSR
        return math.fsum(values) if all(v > 0 for v in values if math.isinf(v)) else math.nan
    return math.fsum(values) / len(values)


class ImageMetrics:
    """Accumulates per-image metrics over a dataset: ``reset()``, ``update(pred, gt, names)``, ``compute()``."""

    def __init__(
        self, *, metrics: Mapping[str, PairFn], unavailable: Mapping[str, str] | None = None
    ) -> None:
        if not metrics and not unavailable:
            raise ValueError("ImageMetrics needs at least one metric")
        self.metrics = dict(metrics)
        self.unavailable = dict(unavailable or {})
        self.reset()

    def reset(self) -> None:
        self.per_image: dict[str, dict[str, float]] = {}

    def update(
        self, pred: torch.Tensor, gt: torch.Tensor, names: Sequence[str]
    ) -> dict[str, dict[str, float]]:
        """Score a batch ``(B, 3, H, W)`` in [0, 1]; ``names`` (length B) key the per-image results."""
        if pred.dim() == 3:
            pred, gt = pred[None], gt[None]
        if len(names) != pred.shape[0]:
            raise ValueError(f"{len(names)} names for a batch of {pred.shape[0]} images")
        dup = [n for n in names if n in self.per_image]
        if dup:
            raise ValueError(f"images already scored: {dup[:3]}")
        out: dict[str, dict[str, float]] = {n: {} for n in names}
        for metric, fn in self.metrics.items():
            values = fn(pred, gt).reshape(-1).tolist()
            for n, v in zip(names, values):
                out[n][metric] = float(v)
        self.per_image.update(out)
        return out

    def compute(self) -> dict:
        """``{"per_image": {name: {metric: v}}, "mean": {metric: v}, "count": N, "unavailable": {metric: reason}}``."""
        if not self.per_image:
            raise ValueError("ImageMetrics.compute: no images were scored")
        mean = {m: _mean([v[m] for v in self.per_image.values()]) for m in self.metrics}
        return {
            "per_image": {k: dict(v) for k, v in sorted(self.per_image.items())},
            "mean": mean,
            "count": len(self.per_image),
            "unavailable": dict(self.unavailable),
        }
