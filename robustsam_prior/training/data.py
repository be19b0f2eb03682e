"""Clear/degraded training pairs with a ground-truth mask and prompts drawn from it.

Differences from the official ``dataset.py`` (spec section 8 item 15-16): any image size (resized
to the model's input with its aspect ratio kept, not squashed to 512x512), a random instance or the
largest one, point and/or box prompts, and geometric degradations warp the ground truth too (the
official elastic transform left the mask unwarped). The degraded image is drawn uniformly from the
degradation list plus the identity (the paper's "15 degradations + identity mapping").
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

IDENTITY = "identity"


@dataclass
class TrainingPair:
    """One sample. ``clear``/``degraded`` (3,H,W) float in [0,1]; ``mask`` (H,W) float {0,1}, the
    ground truth on the degraded image; ``points`` (P,2) xy pixels with ``point_labels`` (P,) (all 1);
    ``box`` (4,) xyxy pixels; ``degradation`` name and its drawn ``params``."""

    clear: torch.Tensor
    degraded: torch.Tensor
    mask: torch.Tensor
    points: torch.Tensor
    point_labels: torch.Tensor
    box: torch.Tensor
    degradation: str
    params: dict[str, Any] = field(default_factory=dict)


def sample_points(mask: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` foreground pixel centres (x, y) of ``mask`` (with replacement when it is small)."""
    ys, xs = np.nonzero(mask)
    if len(ys) == 0:
        raise ValueError("cannot sample prompt points from an empty mask")
    idx = rng.choice(len(ys), size=n, replace=len(ys) < n)
    return np.stack([xs[idx], ys[idx]], axis=1).astype(np.float32)


def mask_box(mask: np.ndarray, rng: np.random.Generator, jitter: float = 0.1) -> np.ndarray:
    """The mask's bounding box (x0, y0, x1, y1), each side moved by up to ``jitter`` x its size."""
    ys, xs = np.nonzero(mask)
    if len(ys) == 0:
        raise ValueError("cannot make a box prompt from an empty mask")
    x0, x1, y0, y1 = xs.min(), xs.max() + 1, ys.min(), ys.max() + 1
    w, h = x1 - x0, y1 - y0
    d = rng.uniform(-jitter, jitter, 4) * np.array([w, h, w, h])
    hmax, wmax = mask.shape
    box = np.array([x0, y0, x1, y1], np.float64) + d
    box = np.clip(box, 0, [wmax, hmax, wmax, hmax])
    return box.astype(np.float32)


def make_pair(
    image: np.ndarray,
    masks: np.ndarray,
    *,
    degradations: Sequence[str],
    severities: Sequence[int] = (1, 2, 3, 4, 5),
    include_identity: bool = True,
    num_points: int = 3,
    instance: str = "random",
    rng: np.random.Generator,
) -> TrainingPair:
    """A pair from ``image`` (H,W,3) float [0,1] and its instance ``masks`` (N,H,W) bool."""
    from ..degradations import degrade

    masks = np.asarray(masks, bool)
    areas = masks.reshape(len(masks), -1).sum(1) if len(masks) else np.zeros(0)
    candidates = np.flatnonzero(areas > 0)
    if len(candidates) == 0:
        raise ValueError("the image has no non-empty instance mask")
    if instance == "largest":
        k = int(np.argmax(areas))
    elif instance == "random":
        k = int(rng.choice(candidates))
    else:
        raise ValueError(f"instance must be 'random' or 'largest', got {instance!r}")
    choices = list(degradations) + ([IDENTITY] if include_identity else [])
    if not choices:
        raise ValueError("no degradations to choose from")
    kind = str(rng.choice(choices))
    clear = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)).permute(2, 0, 1)
    gt = masks[k]
    params: dict[str, Any] = {}
    if kind == IDENTITY:
        degraded = clear.clone()
    else:
        out = degrade(clear[None], kind, int(rng.choice(list(severities))), rng=rng,
                      labels=torch.from_numpy(gt.astype(np.int64))[None])
        degraded = out.image[0].clamp(0, 1)
        params = out.params
        if out.labels is not None:
            warped = out.labels[0].numpy() > 0
            if warped.any():
                gt = warped
    return TrainingPair(
        clear=clear,
        degraded=degraded.float(),
        mask=torch.from_numpy(gt.astype(np.float32)),
        points=torch.from_numpy(sample_points(gt, num_points, rng)),
        point_labels=torch.ones(num_points, dtype=torch.int64),
        box=torch.from_numpy(mask_box(gt, rng)),
        degradation=kind,
        params=params,
    )


class PairSampler:
    """Endless batches of :class:`TrainingPair` from a dataset of scenes.

    ``dataset[i]`` must have ``.image`` (H,W,3) float [0,1] and ``.masks`` (N,H,W) bool (e.g.
    :class:`robustsam_prior.data.shapes.ShapesDataset`). Deterministic for a given ``seed``.
    """

    def __init__(self, dataset: Sequence[Any], *, batch_size: int, seed: int = 0, **pair_options: Any) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if len(dataset) == 0:
            raise ValueError("the dataset is empty")
        self.dataset = dataset
        self.batch_size = batch_size
        self.rng = np.random.default_rng(seed)
        self.pair_options = pair_options

    def __iter__(self) -> Iterator[list[TrainingPair]]:
        while True:
            batch = []
            for i in self.rng.choice(len(self.dataset), size=self.batch_size):
                scene = self.dataset[int(i)]
                batch.append(make_pair(scene.image, scene.masks, rng=self.rng, **self.pair_options))
            yield batch
