"""The anti-degradation losses with the official RobustSAM weights.

Official ``engine.py``: total = 20 * focal + 1 * dice (degraded-image mask vs ground truth)
+ 2 * MSE(degraded robust tokens, clear SAM tokens) + 100 * MSE(degraded robust mask feature,
clear mask feature). In the paper's notation (Eq. 3, 4): L_MFC = feature term, L_TC = token term,
L_Seg = Dice + lambda3 * Focal; the paper gives no lambda values.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


def sigmoid_focal_loss(logits: torch.Tensor, target: torch.Tensor, *, gamma: float = 2.0, alpha: float = 0.25) -> torch.Tensor:
    """Mean of ``alpha * (1 - p_t)^gamma * BCE`` over all elements.

    As in the official ``FocalLoss(gamma=2, alpha=0.25)``, ``alpha`` weights positives and negatives
    alike (not the usual alpha / 1-alpha split). ``logits`` and ``target`` (values in {0, 1}) have the
    same shape.
    """
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    p_t = torch.exp(-bce)
    return (alpha * (1.0 - p_t) ** gamma * bce).mean()


def dice_loss(logits: torch.Tensor, target: torch.Tensor, *, smooth: float = 1e-6) -> torch.Tensor:
    """``1 - (2 |P G| + s) / (|P| + |G| + s)`` per sample (P = sigmoid(logits)), averaged over the batch."""
    p = torch.sigmoid(logits).flatten(1)
    g = target.flatten(1)
    dice = (2.0 * (p * g).sum(1) + smooth) / (p.sum(1) + g.sum(1) + smooth)
    return (1.0 - dice).mean()


@dataclass(frozen=True)
class LossWeights:
    """Official weights (``engine.py``): focal 20, dice 1, token 2, feature 100; ``iou`` weighs the IoU-head
    loss of stage 1 (:func:`sam_stage_losses`; SAM's 1)."""

    focal: float = 20.0
    dice: float = 1.0
    token: float = 2.0
    feature: float = 100.0
    iou: float = 1.0


def anti_degradation_losses(
    seg_logits: torch.Tensor,
    gt_masks: torch.Tensor,
    degraded_tokens: torch.Tensor,
    clear_tokens: torch.Tensor,
    degraded_features: torch.Tensor,
    clear_features: torch.Tensor,
    weights: LossWeights = LossWeights(),
) -> dict[str, torch.Tensor]:
    """Weighted terms and their sum.

    ``seg_logits`` (B,1,H,W) mask logits on the degraded images; ``gt_masks`` (B,1,H,W) in {0,1};
    tokens (B,T,D) (robust tokens before AOTG vs SAM's mask tokens, as the official code);
    features (B,D/8,4h,4w) (the fused robust mask features of both branches).
    Returns ``{"focal", "dice", "token", "feature", "total"}`` (each already weighted).
    """
    terms = {
        "focal": weights.focal * sigmoid_focal_loss(seg_logits, gt_masks),
        "dice": weights.dice * dice_loss(seg_logits, gt_masks),
        "token": weights.token * F.mse_loss(degraded_tokens, clear_tokens),
        "feature": weights.feature * F.mse_loss(degraded_features, clear_features),
    }
    terms["total"] = terms["focal"] + terms["dice"] + terms["token"] + terms["feature"]
    return terms


def sam_stage_losses(
    logits: torch.Tensor, iou_predictions: torch.Tensor, gt_mask: torch.Tensor, weights: LossWeights = LossWeights()
) -> dict[str, torch.Tensor]:
    """SAM's losses for one prompt (Kirillov et al. 2023, appendix A), weighted.

    ``logits`` (C,H,W) the C predicted masks (1, or 3 for an ambiguous prompt); ``iou_predictions`` (C,);
    ``gt_mask`` (H,W) in {0,1}. Mask loss: ``focal * Focal + dice * Dice`` of the channel where it is lowest
    (SAM back-propagates only the best of its multiple masks); IoU loss: ``iou`` x the mean over channels of
    (predicted IoU - IoU of the mask thresholded at 0 with the ground truth)^2, the target without gradient.
    Returns ``{"focal", "dice", "iou", "total"}``.
    """
    if logits.ndim != 3 or logits.shape[1:] != gt_mask.shape or iou_predictions.shape != logits.shape[:1]:
        raise ValueError(f"logits (C,H,W) {tuple(logits.shape)}, iou_predictions (C,) "
                         f"{tuple(iou_predictions.shape)} and gt_mask (H,W) {tuple(gt_mask.shape)} do not match")
    gt = gt_mask[None].expand_as(logits)
    focal = torch.stack([sigmoid_focal_loss(c, g) for c, g in zip(logits, gt)])
    dice = torch.stack([dice_loss(c[None], g[None]) for c, g in zip(logits, gt)])
    best = int(torch.argmin(weights.focal * focal + weights.dice * dice))
    with torch.no_grad():
        hit, truth = logits > 0, gt > 0.5
        target = (hit & truth).flatten(1).sum(1).float() / (hit | truth).flatten(1).sum(1).clamp(min=1).float()
    terms = {
        "focal": weights.focal * focal[best],
        "dice": weights.dice * dice[best],
        "iou": weights.iou * torch.mean((iou_predictions - target) ** 2),
    }
    terms["total"] = terms["focal"] + terms["dice"] + terms["iou"]
    return terms
