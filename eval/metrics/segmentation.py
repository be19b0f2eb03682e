"""Segmentation metrics: semantic mIoU from a confusion matrix, and RobustSAM's per-prompt IoU/Dice/PA.

Semantic segmentation (label maps with ``num_classes`` classes): a confusion matrix is accumulated
over the whole dataset (rows = ground truth, columns = prediction; pixels whose ground truth is
``ignore_index`` are left out) and IoU_c = TP / (TP + FP + FN) is computed once at the end. Classes
that appear neither in the ground truth nor in the prediction have an undefined IoU (NaN) and are
left out of the mean, so mIoU is not diluted by classes the dataset does not contain.
Two region partitions with arbitrary ids (a prior's label maps of two images) are compared with
:func:`matched_miou`, after matching their regions one to one.

Promptable segmentation (RobustSAM, CVPR 2024, Sect. 4.3): each prompt gives
one predicted binary mask, scored against its ground-truth mask with

- IoU = |P ∩ G| / |P ∪ G|,
- Dice = 2 |P ∩ G| / (|P| + |G|),
- pixel accuracy PA = fraction of pixels where P == G (the authors' answer in issue #12 of the official
  RobustSAM GitHub repository),

and each is averaged over prompts. Where both masks are empty the prediction is exactly right, so
IoU = Dice = 1 (the authors' snippet would divide 0 by 0); one empty and one not gives 0.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

__all__ = [
    "ConfusionMatrix",
    "PromptMetrics",
    "confusion_matrix",
    "iou_from_confusion",
    "mask_dice",
    "mask_iou",
    "mask_metrics",
    "mask_pixel_accuracy",
    "matched_miou",
    "matched_relabel",
]


def _to_numpy(x: torch.Tensor | np.ndarray, what: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    if isinstance(x, np.ndarray):
        return x
    raise TypeError(f"{what}: expected a torch.Tensor or numpy array, got {type(x).__name__}")


def confusion_matrix(
    pred: torch.Tensor | np.ndarray,
    gt: torch.Tensor | np.ndarray,
    num_classes: int,
    *,
    ignore_index: int | None = 255,
) -> np.ndarray:
    """Confusion matrix ``(num_classes, num_classes)`` int64 of two label maps of equal shape.

    ``cm[g, p]`` counts pixels with ground truth ``g`` predicted as ``p``. Pixels whose ground truth
    equals ``ignore_index`` are skipped. Any other label outside ``[0, num_classes)`` (in ``pred``
    or ``gt``) raises ``ValueError``.
    """
    p, g = _to_numpy(pred, "pred"), _to_numpy(gt, "gt")
    if p.shape != g.shape:
        raise ValueError(f"pred and gt label maps differ in shape: {p.shape} vs {g.shape}")
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    p, g = p.reshape(-1).astype(np.int64), g.reshape(-1).astype(np.int64)
    if ignore_index is not None:
        keep = g != ignore_index
        p, g = p[keep], g[keep]
    for x, what in ((g, "gt"), (p, "pred")):
        if x.size and (x.min() < 0 or x.max() >= num_classes):
            bad = x[(x < 0) | (x >= num_classes)][0]
            raise ValueError(
                f"{what} has label {bad} outside [0, {num_classes}) (ignore_index={ignore_index})"
            )
    return np.bincount(g * num_classes + p, minlength=num_classes**2).reshape(num_classes, num_classes)


def iou_from_confusion(cm: np.ndarray) -> np.ndarray:
    """Per-class IoU ``(K,)`` float64 from a confusion matrix; NaN for classes absent from both sides."""
    cm = np.asarray(cm, dtype=np.float64)
    tp = np.diag(cm)
    denom = cm.sum(0) + cm.sum(1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, tp / np.where(denom > 0, denom, 1), np.nan)


class ConfusionMatrix:
    """Dataset-level accumulator for semantic segmentation: ``reset()``, ``update(pred, gt)``, ``compute()``."""

    def __init__(self, *, num_classes: int, ignore_index: int | None = 255) -> None:
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.reset()

    def reset(self) -> None:
        self.matrix = np.zeros((self.num_classes, self.num_classes), dtype=np.int64)

    def update(self, pred: torch.Tensor | np.ndarray, gt: torch.Tensor | np.ndarray) -> None:
        """Add one label map pair (any equal shapes, e.g. ``(H, W)`` or ``(B, H, W)``)."""
        self.matrix += confusion_matrix(pred, gt, self.num_classes, ignore_index=self.ignore_index)

    def compute(self) -> dict:
        """``{"miou", "iou" (list, NaN -> None), "pixel_accuracy", "mean_class_accuracy"}``."""
        cm = self.matrix.astype(np.float64)
        total = cm.sum()
        if total == 0:
            raise ValueError("ConfusionMatrix.compute: no (non-ignored) pixels were accumulated")
        iou = iou_from_confusion(cm)
        gt_count = cm.sum(1)
        with np.errstate(invalid="ignore", divide="ignore"):
            acc = np.where(gt_count > 0, np.diag(cm) / np.where(gt_count > 0, gt_count, 1), np.nan)
        return {
            "miou": float(np.nanmean(iou)),
            "iou": [None if np.isnan(v) else float(v) for v in iou],
            "pixel_accuracy": float(np.trace(cm) / total),
            "mean_class_accuracy": float(np.nanmean(acc)),
        }


def matched_relabel(pred: np.ndarray, ref: np.ndarray) -> tuple[np.ndarray, int]:
    """Relabel ``pred`` so each of its regions takes the id of the ``ref`` region it is matched to.

    Region partitions have arbitrary ids, so segmentations of two images are compared after a
    one-to-one matching that maximises the total IoU (Hungarian algorithm on the region-overlap
    matrix). Unmatched ``pred`` regions get fresh ids ``>= K_ref``. Returns (relabelled map, number of
    classes to give a confusion matrix).
    """
    from scipy.optimize import linear_sum_assignment

    ref = ref.astype(np.int64)
    pred = pred.astype(np.int64)
    kr, kp = int(ref.max()) + 1, int(pred.max()) + 1
    inter = np.bincount(ref.ravel() * kp + pred.ravel(), minlength=kr * kp).reshape(kr, kp).astype(np.float64)
    union = inter.sum(1, keepdims=True) + inter.sum(0, keepdims=True) - inter
    iou = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
    rows, cols = linear_sum_assignment(-iou)
    lut = np.full(kp, -1, dtype=np.int64)
    for r, c in zip(rows, cols):
        if iou[r, c] > 0:
            lut[c] = r
    spare = np.flatnonzero(lut < 0)
    lut[spare] = kr + np.arange(len(spare))
    return lut[pred].astype(np.int32), kr + len(spare)


def matched_miou(pred: np.ndarray, ref: np.ndarray) -> float:
    """mIoU of segmentation ``pred`` against ``ref`` after :func:`matched_relabel` (:class:`ConfusionMatrix`)."""
    relabelled, k = matched_relabel(pred, ref)
    cm = ConfusionMatrix(num_classes=k, ignore_index=None)
    cm.update(relabelled, ref)
    return cm.compute()["miou"]


def _binary_pair(pred, gt) -> tuple[np.ndarray, np.ndarray]:
    p, g = _to_numpy(pred, "pred"), _to_numpy(gt, "gt")
    if p.shape != g.shape:
        raise ValueError(f"pred and gt masks differ in shape: {p.shape} vs {g.shape}")
    if p.size == 0:
        raise ValueError("masks are empty arrays (no pixels)")
    return p.astype(bool), g.astype(bool)


def mask_iou(pred: torch.Tensor | np.ndarray, gt: torch.Tensor | np.ndarray) -> float:
    """IoU of two binary masks of equal shape (1.0 if both are empty)."""
    p, g = _binary_pair(pred, gt)
    union = np.count_nonzero(p | g)
    return 1.0 if union == 0 else np.count_nonzero(p & g) / union


def mask_dice(pred: torch.Tensor | np.ndarray, gt: torch.Tensor | np.ndarray) -> float:
    """Dice coefficient of two binary masks of equal shape (1.0 if both are empty)."""
    p, g = _binary_pair(pred, gt)
    s = np.count_nonzero(p) + np.count_nonzero(g)
    return 1.0 if s == 0 else 2.0 * np.count_nonzero(p & g) / s


def mask_pixel_accuracy(pred: torch.Tensor | np.ndarray, gt: torch.Tensor | np.ndarray) -> float:
    """Fraction of pixels where the binary masks agree."""
    p, g = _binary_pair(pred, gt)
    return float(np.count_nonzero(p == g)) / p.size


def mask_metrics(pred: torch.Tensor | np.ndarray, gt: torch.Tensor | np.ndarray) -> dict[str, float]:
    """``{"iou", "dice", "pa"}`` of one prompt's predicted mask against its ground-truth mask."""
    return {"iou": mask_iou(pred, gt), "dice": mask_dice(pred, gt), "pa": mask_pixel_accuracy(pred, gt)}


@dataclass
class PromptMetrics:
    """Accumulator of per-prompt IoU/Dice/PA, averaged over prompts (RobustSAM protocol).

    ``update(pred, gt)`` adds one prompt; ``update_many`` a stack ``(N, H, W)``; ``compute()`` gives
    ``{"iou", "dice", "pa", "count"}``.
    """

    values: dict[str, list[float]] = field(default_factory=lambda: {"iou": [], "dice": [], "pa": []})

    def reset(self) -> None:
        for v in self.values.values():
            v.clear()

    def update(self, pred: torch.Tensor | np.ndarray, gt: torch.Tensor | np.ndarray) -> dict[str, float]:
        m = mask_metrics(pred, gt)
        for k, v in m.items():
            self.values[k].append(v)
        return m

    def update_many(self, preds: torch.Tensor | np.ndarray, gts: torch.Tensor | np.ndarray) -> None:
        if len(preds) != len(gts):
            raise ValueError(f"{len(preds)} predicted masks for {len(gts)} ground-truth masks")
        for p, g in zip(preds, gts):
            self.update(p, g)

    def compute(self) -> dict[str, float]:
        n = len(self.values["iou"])
        if n == 0:
            raise ValueError("PromptMetrics.compute: no prompts were accumulated")
        out = {k: float(np.mean(v)) for k, v in self.values.items()}
        out["count"] = n
        return out
