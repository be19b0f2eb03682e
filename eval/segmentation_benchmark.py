"""Segmentation-robustness benchmark (RobustSAM paper Tables 2-6 protocol).

Images with ground-truth instance masks; each instance gives one prompt (its tight box, or N positive
points drawn from the mask with a seed); each prompt's predicted mask is scored by IoU/Dice/PA; scores
are averaged over prompts, for the clear image and every degradation/severity, for each segmenter
(:mod:`eval.segmenters`). Prompts are drawn from the masks of each condition (geometric degradations
warp the masks with the image), with seeds that depend only on (seed, image, instance), so every
segmenter sees the same prompts.

Deterministic: the same spec gives identical metric values.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

import numpy as np
import torch

from .datasets import SegmentationDataset
from .metrics.segmentation import PromptMetrics
from .provenance import ROW_FORMAT, provenance, seed_for, write_rows
from .segmenters import PromptSegmenter

logger = logging.getLogger(__name__)


def mask_box(mask: np.ndarray) -> np.ndarray:
    """Tight box ``[x0, y0, x1, y1]`` (pixel indices, inclusive max, SAM's XYXY frame) of a non-empty mask."""
    ys, xs = np.nonzero(mask)
    if ys.size == 0:
        raise ValueError("cannot draw a prompt from an empty mask")
    return np.array([xs.min(), ys.min(), xs.max(), ys.max()], dtype=np.float32)


def draw_prompts(mask: np.ndarray, *, prompt: str, num_points: int, rng: np.random.Generator) -> dict:
    """One prompt from a ground-truth mask: ``{"box": (4,)}`` or ``{"points": (N, 2) xy, "labels": (N,)}``.

    Points are distinct mask pixels drawn uniformly (pixel centres); fewer if the mask is smaller.
    """
    if prompt == "box":
        return {"box": mask_box(mask)}
    if prompt == "point":
        ys, xs = np.nonzero(mask)
        if ys.size == 0:
            raise ValueError("cannot draw a prompt from an empty mask")
        idx = rng.choice(ys.size, size=min(num_points, ys.size), replace=False)
        pts = np.stack([xs[idx], ys[idx]], axis=1).astype(np.float32)
        return {"points": pts, "labels": np.ones(len(pts), dtype=np.int64)}
    raise ValueError(f"unknown prompt type {prompt!r}; choose 'box' or 'point'")


def _degrade_scene(image: np.ndarray, masks: np.ndarray, kind: str, severity: int, seed: int):
    """Degrade one image (and warp its masks for geometric degradations); returns (image, masks, params)."""
    from robustsam_prior.core.io import to_numpy, to_tensor
    from robustsam_prior.degradations import degrade

    labels = np.zeros(image.shape[:2], np.int64)
    for i, m in enumerate(masks, 1):
        labels[m] = i
    out = degrade(to_tensor(image), kind, severity, seed=seed, labels=torch.from_numpy(labels)[None])
    img = np.clip(to_numpy(out.image), 0, 1)
    lab = out.labels[0].cpu().numpy() if out.labels is not None else labels
    if lab.shape != img.shape[:2]:
        raise ValueError(f"degradation {kind!r} returned labels {lab.shape} for an image {img.shape[:2]}")
    return img, np.stack([lab == i for i in range(1, len(masks) + 1)]) if len(masks) else masks, out.params


def run_segmentation_benchmark(
    *,
    dataset: SegmentationDataset,
    segmenters: Sequence[PromptSegmenter],
    degradations: Sequence[str] = (),
    severities: Sequence[int] = (3,),
    prompt: str = "box",
    num_points: int = 3,
    seed: int = 0,
    include_clear: bool = True,
    out: str | os.PathLike | None = None,
) -> list[dict]:
    """One row per (segmenter, condition) with prompt-averaged IoU/Dice/PA (see module docstring)."""
    from robustsam_prior.core.progress import progress_bar

    if prompt not in ("box", "point"):
        raise ValueError(f"unknown prompt type {prompt!r}; choose 'box' or 'point'")
    if not segmenters:
        raise ValueError("no segmenters given")
    conditions: list[tuple[str, int | None]] = [("clear", None)] if include_clear else []
    conditions += [(k, s) for k in degradations for s in severities]
    if not conditions:
        raise ValueError("nothing to evaluate: no degradations and include_clear=False")
    acc = {(seg.name, c): PromptMetrics() for seg in segmenters for c in conditions}
    dataset_info = dataset.describe()
    prov = provenance()
    skipped = 0
    for item in progress_bar(dataset.items, desc="segmentation benchmark", unit="img", leave=False):
        image, masks = item.load_image(), item.load_masks()
        if masks.shape[1:] != image.shape[:2]:
            raise ValueError(f"{item.name}: masks {masks.shape[1:]} do not match the image {image.shape[:2]}")
        for kind, sev in conditions:
            if kind == "clear":
                img, gts = image, masks
            else:
                img, gts, _ = _degrade_scene(image, masks, kind, sev, seed_for(seed, item.name, kind, sev))
            prompts = []
            for j, m in enumerate(gts):
                if not m.any():  # an instance pushed out of the frame by a geometric degradation
                    skipped += 1
                    prompts.append(None)
                    continue
                rng = np.random.default_rng(seed_for(seed, item.name, j, "prompt", prompt, num_points))
                prompts.append(draw_prompts(m, prompt=prompt, num_points=num_points, rng=rng))
            keep = [j for j, p in enumerate(prompts) if p is not None]
            for seg in segmenters:
                seg.set_image(img)
                preds = seg.predict_many([prompts[j] for j in keep])
                for j, pred in zip(keep, preds):
                    acc[(seg.name, (kind, sev))].update(pred, gts[j])
    if skipped:
        logger.warning(
            "%d prompts skipped: their instance left the frame after a geometric degradation", skipped
        )
    rows = []
    for seg in segmenters:
        for kind, sev in conditions:
            a = acc[(seg.name, (kind, sev))]
            if not a.values["iou"]:
                logger.warning("%s / %s: no prompts", seg.name, kind)
                continue
            r = a.compute()
            rows.append(
                {
                    "format": ROW_FORMAT,
                    "kind": "segmentation",
                    "task": "segmentation",
                    "dataset": dataset_info,
                    "method": seg.name,
                    "prior": seg.meta,
                    "checkpoint_sha256": seg.meta.get("checkpoint_sha256"),
                    "degradation": kind,
                    "severity": sev,
                    "prompt": {
                        "type": prompt,
                        "num_points": num_points if prompt == "point" else None,
                        "seed": seed,
                    },
                    "metrics": {"iou": r["iou"], "dice": r["dice"], "pa": r["pa"]},
                    "count": r["count"],
                    "conventions": {"empty_both": "iou=dice=1", "pa": "fraction of equal pixels"},
                    "provenance": prov,
                }
            )
    if out is not None:
        write_rows(out, rows)
    return rows
