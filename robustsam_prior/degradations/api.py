"""``degrade()``: the batch (torch) entry point over the registered per-image degradations.

:class:`Degraded`, :func:`check_batch` and :func:`collect` live in :mod:`.batch` (the family modules use
them too) and are re-exported here.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from robustsam_prior.core.registry import did_you_mean

# Importing the family modules registers their degradations (explicitly, no folder scanning).
from . import blur, digital, geometric, haze, noise, weather  # noqa: F401
from .base import DEGRADATIONS, SEVERITIES
from .batch import Degraded, check_batch, collect

#: The paper's 15 Robust-Seg degradations, in the official order,
#: under our names (official folder -> ours: gauss_noise -> gaussian_noise, ISO_noise -> iso_noise,
#: impulse_noise -> multiplicative_noise, compression -> jpeg_compression, brightness -> low_light).
ROBUST_SEG_SET: tuple[str, ...] = (
    "snow",
    "fog",
    "rain",
    "gaussian_noise",
    "iso_noise",
    "multiplicative_noise",
    "resampling_blur",
    "motion_blur",
    "zoom_blur",
    "color_jitter",
    "jpeg_compression",
    "elastic_transform",
    "frosted_glass_blur",
    "low_light",
    "contrast",
)

#: What restoration needs beyond the Robust-Seg set.
RESTORATION_SET: tuple[str, ...] = (
    "haze", "camera_shake_blur", "nonuniform_shake_blur", "frame_average_blur", "defocus_blur")


def degrade(
    image: torch.Tensor,
    kind: str,
    severity: int = 3,
    *,
    seed: int | None = None,
    rng: np.random.Generator | None = None,
    labels: torch.Tensor | None = None,
    overrides: dict[str, Any] | None = None,
) -> Degraded:
    """Degrade a batch of images.

    Args:
        image: ``(B, 3, H, W)`` float in [0, 1] (any device; the work is done on CPU).
        kind: a registered degradation name (``DEGRADATIONS.names()``).
        severity: 1..5; selects the parameter ranges (``degrade --list`` prints them).
        seed: makes the result deterministic; or pass ``rng`` (not both). Neither: unseeded.
        labels: optional ``(B, H, W)`` integer label map; warped with the image (nearest sampling)
            by geometric degradations, passed through otherwise.
        overrides: fix some parameters instead of drawing them, e.g. ``{"sigma": 0.1}``.

    Scalar parameters are drawn once per call (shared by the batch, in the order of the parameter
    table, before anything else); random fields (noise, flakes, displacements, depth,
    trajectories) are drawn per image from the same generator.
    """
    spec = DEGRADATIONS.get(kind)
    if (
        isinstance(severity, bool)
        or not isinstance(severity, (int, np.integer))
        or severity not in SEVERITIES
    ):
        raise ValueError(f"severity must be an integer 1..5, got {severity!r}")
    if seed is not None and rng is not None:
        raise ValueError("pass either seed or rng, not both")
    check_batch(image)
    b, _, h, w = image.shape
    if labels is not None:
        if not isinstance(labels, torch.Tensor) or tuple(labels.shape) != (b, h, w):
            got = tuple(labels.shape) if isinstance(labels, torch.Tensor) else type(labels).__name__
            raise ValueError(f"labels must be a (B, H, W) = {(b, h, w)} tensor, got {got}")
        if labels.is_floating_point() or labels.is_complex():
            raise ValueError(f"labels must be an integer tensor, got {labels.dtype}")
    rng = rng if rng is not None else np.random.default_rng(seed)

    params: dict[str, Any] = spec.sample(int(severity), rng)
    for name, value in (overrides or {}).items():
        if name not in params:
            raise ValueError(
                f"{kind} has no parameter {name!r}{did_you_mean(name, list(params))}; it has {list(params)}"
            )
        params[name] = value

    images = image.detach().to("cpu", torch.float32).permute(0, 2, 3, 1).numpy()
    label_np = labels.detach().cpu().numpy() if (labels is not None and spec.geometric) else None
    outs = []
    for i in range(b):
        kwargs = dict(params)
        if label_np is not None:
            kwargs["labels"] = label_np[i]
        outs.append(spec.fn(images[i], rng=rng, **kwargs))
    return collect(image, outs, params, labels)


def describe(names: list[str] | None = None, *, markdown: bool = False) -> str:
    """Every degradation with its parameter ranges per severity, as text or a Markdown table.

    Generated from the registry's parameter tables: ``degrade --list`` and the docs print this, so
    neither can disagree with what :func:`degrade` samples.
    """
    names = names or DEGRADATIONS.names()
    lines: list[str] = []
    for name in names:
        spec = DEGRADATIONS.get(name)
        tag = " [Robust-Seg]" if name in ROBUST_SEG_SET else ""
        if markdown:
            lines += [
                f"### `{name}` ({spec.family}){tag}",
                "",
                spec.summary + ".",
                "",
                "| parameter | " + " | ".join(f"severity {s}" for s in SEVERITIES) + " | meaning |",
                "|---|" + "---|" * len(SEVERITIES) + "---|",
            ]
            for p in spec.params:
                unit = f" ({p.unit})" if p.unit else ""
                cells = " | ".join(p.format_range(s) for s in SEVERITIES)
                lines.append(f"| `{p.name}` | {cells} | {p.help}{unit} |")
            lines += ["", f"Source: {spec.reference}.", ""]
        else:
            lines.append(f"{name} ({spec.family}){tag}: {spec.summary}")
            width = max(len(p.name) for p in spec.params)
            cell = max(len(p.format_range(s)) for p in spec.params for s in SEVERITIES)
            for p in spec.params:
                cells = "  ".join(f"{s}: {p.format_range(s):<{cell}}" for s in SEVERITIES)
                unit = f" [{p.unit}]" if p.unit else ""
                lines.append(f"    {p.name:<{width}}  {cells.rstrip()}{unit}")
            lines.append(f"    source: {spec.reference}")
            lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def describe_json(names: list[str] | None = None) -> list[dict[str, Any]]:
    """The parameter tables as JSON-able dicts (``degrade --list --json``)."""
    out = []
    for name in names or DEGRADATIONS.names():
        spec = DEGRADATIONS.get(name)
        out.append(
            {
                "name": name,
                "family": spec.family,
                "robust_seg": name in ROBUST_SEG_SET,
                "geometric": spec.geometric,
                "summary": spec.summary,
                "reference": spec.reference,
                "params": {
                    p.name: {
                        "unit": p.unit,
                        "help": p.help,
                        "integer": p.integer,
                        "bounds": list(p.bounds),
                        "ranges": {str(s): list(p.range_for(s)) for s in SEVERITIES},
                    }
                    for p in spec.params
                },
            }
        )
    return out
