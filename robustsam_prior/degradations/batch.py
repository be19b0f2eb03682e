"""Batch results of the degradations: :class:`Degraded`, input validation and assembling per-image results.

Shared by :func:`robustsam_prior.degradations.degrade` (``api.py``) and the family modules' batch helpers
(``haze.add_haze``), so that neither has to import the other.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .base import Out


@dataclass
class Degraded:
    """Result of :func:`degrade` for a batch.

    Attributes:
        image: ``(B, 3, H, W)`` float in [0, 1], same device and dtype as the input.
        params: the drawn parameters (JSON-able), shared by the batch; values drawn per image inside
            a degradation (e.g. colour-jitter order) are merged in where every image has the same
            value and listed under ``"per_image"`` (one dict per image) otherwise.
        transmission: ``(B, 1, H, W)`` for compositing degradations (haze, fog, rain, snow:
            ``image = clean * t + airlight * (1 - t)``), else None.
        airlight: ``(B, 3)`` for those, else None.
        kernel: ``(B, k, k)`` for kernel blurs (``image = clean (*) kernel``), else None.
        labels: the label map, warped with nearest sampling for geometric degradations, else the
            input labels unchanged (None if none were given).
    """

    image: torch.Tensor
    params: dict[str, Any] = field(default_factory=dict)
    transmission: torch.Tensor | None = None
    airlight: torch.Tensor | None = None
    kernel: torch.Tensor | None = None
    labels: torch.Tensor | None = None


def check_batch(image: torch.Tensor) -> None:
    """Validate a ``(B, 3, H, W)`` float tensor in [0, 1]."""
    if not isinstance(image, torch.Tensor):
        raise TypeError(f"image must be a torch.Tensor (B, 3, H, W), got {type(image).__name__}")
    if image.ndim != 4 or image.shape[1] != 3:
        raise ValueError(f"image must be (B, 3, H, W), got shape {tuple(image.shape)}")
    if not image.is_floating_point():
        raise ValueError(f"image must be float in [0, 1], got dtype {image.dtype}")
    if image.numel() == 0:
        raise ValueError(f"image is empty: shape {tuple(image.shape)}")
    lo, hi = float(image.min()), float(image.max())
    if not (np.isfinite(lo) and np.isfinite(hi)) or lo < -1e-4 or hi > 1 + 1e-4:
        raise ValueError(f"image values must be in [0, 1], got min {lo:g}, max {hi:g}")


def _stack_kernels(kernels: list[np.ndarray]) -> np.ndarray:
    """Zero-pad odd kernels (centred) to the largest size and stack them."""
    k = max(kk.shape[0] for kk in kernels)
    out = np.zeros((len(kernels), k, k), np.float32)
    for i, kk in enumerate(kernels):
        o = (k - kk.shape[0]) // 2
        out[i, o : o + kk.shape[0], o : o + kk.shape[1]] = kk
    return out


def _jsonable(v: Any) -> Any:
    if isinstance(v, dict):
        return {k: _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, np.generic):
        return v.item()
    return v


def collect(
    image: torch.Tensor, outs: list[Out], params: dict[str, Any], labels: torch.Tensor | None
) -> Degraded:
    """Assemble per-image :class:`Out` results into a batch :class:`Degraded`."""
    dev, dt = image.device, image.dtype
    img = torch.stack([torch.from_numpy(np.ascontiguousarray(o.image)).permute(2, 0, 1) for o in outs])
    params = _jsonable(dict(params))
    extras = [_jsonable(o.extra) for o in outs]
    shared = {k: v for k, v in extras[0].items() if all(k in e and e[k] == v for e in extras[1:])}
    params.update(shared)
    per_image = [{k: v for k, v in e.items() if k not in shared} for e in extras]
    if any(per_image):
        params["per_image"] = per_image
    result = Degraded(image=img.to(device=dev, dtype=dt), params=params, labels=labels)
    if outs[0].transmission is not None:
        t = np.stack([o.transmission for o in outs])[:, None]
        result.transmission = torch.from_numpy(t).to(device=dev, dtype=dt)
        result.airlight = torch.from_numpy(np.stack([o.airlight for o in outs])).to(device=dev, dtype=dt)
    if outs[0].kernel is not None:
        result.kernel = torch.from_numpy(_stack_kernels([o.kernel for o in outs])).to(device=dev)
    if outs[0].labels is not None and labels is not None:
        result.labels = torch.from_numpy(np.stack([o.labels for o in outs])).to(
            device=labels.device, dtype=labels.dtype
        )
    return result
