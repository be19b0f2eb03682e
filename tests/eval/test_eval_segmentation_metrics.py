"""Hand-worked confusion matrices, mIoU with an ignore index, and per-prompt IoU/Dice/PA edge cases."""

import math

import numpy as np
import pytest
import torch

from eval.metrics.segmentation import (
    ConfusionMatrix,
    PromptMetrics,
    confusion_matrix,
    iou_from_confusion,
    mask_dice,
    mask_iou,
    mask_metrics,
    mask_pixel_accuracy,
    matched_miou,
    matched_relabel,
)


def test_hand_worked_confusion_matrix_and_miou():
    gt = np.array([[0, 0, 1], [1, 2, 255]])
    pred = np.array([[0, 1, 1], [1, 1, 0]])
    cm = confusion_matrix(pred, gt, 3, ignore_index=255)
    # rows gt, cols pred; the ignored pixel (gt 255, pred 0) is not counted
    expected = np.array([[1, 1, 0], [0, 2, 0], [0, 1, 0]])
    assert np.array_equal(cm, expected)
    iou = iou_from_confusion(cm)
    # class 0: TP 1, FP 0, FN 1 -> 1/2; class 1: TP 2, FP 2, FN 0 -> 1/2; class 2: TP 0, FN 1 -> 0
    assert np.allclose(iou, [0.5, 0.5, 0.0])
    acc = ConfusionMatrix(num_classes=3, ignore_index=255)
    acc.update(torch.from_numpy(pred), torch.from_numpy(gt))
    r = acc.compute()
    assert r["miou"] == pytest.approx(1 / 3)
    assert r["pixel_accuracy"] == pytest.approx(3 / 5)
    assert r["mean_class_accuracy"] == pytest.approx((0.5 + 1.0 + 0.0) / 3)


def test_accumulates_over_images_not_averaging_per_image():
    acc = ConfusionMatrix(num_classes=2, ignore_index=None)
    acc.update(np.array([1, 1]), np.array([1, 1]))  # image 1: class-1 IoU 1
    acc.update(np.array([0, 0, 0, 0]), np.array([1, 0, 0, 0]))  # image 2: class-1 IoU 0
    r = acc.compute()
    # pooled: class 0 TP 3 FN 0 FP 1 -> 3/4; class 1 TP 2 FN 1 -> 2/3
    assert r["iou"] == pytest.approx([3 / 4, 2 / 3])
    assert r["miou"] == pytest.approx((3 / 4 + 2 / 3) / 2)
    acc.reset()
    with pytest.raises(ValueError, match="no \\(non-ignored\\) pixels"):
        acc.compute()


def test_absent_class_is_nan_and_left_out_of_the_mean():
    acc = ConfusionMatrix(num_classes=3)
    acc.update(np.array([0, 1]), np.array([0, 1]))
    r = acc.compute()
    assert r["iou"] == [1.0, 1.0, None]
    assert r["miou"] == 1.0


def test_confusion_matrix_errors():
    with pytest.raises(ValueError, match="label 3 outside"):
        confusion_matrix(np.array([3]), np.array([0]), 3)
    with pytest.raises(ValueError, match="gt has label -1"):
        confusion_matrix(np.array([0]), np.array([-1]), 3, ignore_index=None)
    with pytest.raises(ValueError, match="differ in shape"):
        confusion_matrix(np.zeros(2), np.zeros(3), 3)
    with pytest.raises(ValueError, match="num_classes"):
        confusion_matrix(np.zeros(2), np.zeros(2), 0)
    with pytest.raises(TypeError, match="numpy"):
        confusion_matrix([0], [0], 2)


def test_per_prompt_metrics_hand_worked():
    gt = np.zeros((4, 4), bool)
    gt[:2, :2] = True  # 4 pixels
    pred = np.zeros((4, 4), bool)
    pred[:2, 1:3] = True  # 4 pixels, 2 overlap
    assert mask_iou(pred, gt) == pytest.approx(2 / 6)
    assert mask_dice(pred, gt) == pytest.approx(4 / 8)
    assert mask_pixel_accuracy(pred, gt) == pytest.approx(12 / 16)


def test_empty_prediction_and_empty_ground_truth():
    gt = np.zeros((3, 3), bool)
    gt[1, 1] = True
    empty = np.zeros((3, 3), bool)
    assert mask_metrics(empty, gt) == {"iou": 0.0, "dice": 0.0, "pa": pytest.approx(8 / 9)}
    assert mask_metrics(gt, empty) == {"iou": 0.0, "dice": 0.0, "pa": pytest.approx(8 / 9)}
    assert mask_metrics(empty, empty) == {"iou": 1.0, "dice": 1.0, "pa": 1.0}


def test_prompt_accumulator_means_over_prompts():
    acc = PromptMetrics()
    a = np.ones((2, 2), bool)
    b = np.zeros((2, 2), bool)
    b[0, 0] = True
    acc.update(a, a)  # iou 1
    acc.update_many(
        torch.from_numpy(np.stack([b])), torch.from_numpy(np.stack([a]))
    )  # iou 1/4, dice 2/5, pa 1/4
    r = acc.compute()
    assert r["count"] == 2
    assert r["iou"] == pytest.approx((1 + 0.25) / 2)
    assert r["dice"] == pytest.approx((1 + 0.4) / 2)
    assert r["pa"] == pytest.approx((1 + 0.25) / 2)
    # dice = 2 iou / (1 + iou) per prompt, so mean dice <= 2 mean iou
    assert r["dice"] <= 2 * r["iou"]
    with pytest.raises(ValueError, match="2 predicted masks for 1"):
        acc.update_many(np.stack([a, a]), np.stack([a]))
    acc.reset()
    with pytest.raises(ValueError, match="no prompts"):
        acc.compute()


def test_mask_errors():
    with pytest.raises(ValueError, match="differ in shape"):
        mask_iou(np.zeros((2, 2)), np.zeros((2, 3)))
    with pytest.raises(ValueError, match="no pixels"):
        mask_dice(np.zeros((0, 2)), np.zeros((0, 2)))
    assert not math.isnan(mask_iou(np.zeros((1, 1)), np.zeros((1, 1))))


def test_matched_miou_hand_worked():
    ref = np.array([[0, 0, 1, 1],
                    [0, 0, 1, 1]])
    same_regions_other_ids = np.array([[7, 7, 2, 2],
                                       [7, 7, 2, 2]])
    assert matched_miou(same_regions_other_ids, ref) == 1.0
    # pred splits region 1 into two: region 0 matches exactly (IoU 1); region 1 matches the larger
    # half {(0,2),(0,3),(1,2)} -> IoU 3/4; the leftover pred region (1,3) has no partner -> IoU 0
    pred = np.array([[0, 0, 1, 1],
                     [0, 0, 1, 2]])
    relabelled, k = matched_relabel(pred, ref)
    assert k == 3 and relabelled.tolist() == [[0, 0, 1, 1], [0, 0, 1, 2]]
    assert matched_miou(pred, ref) == pytest.approx((1 + 0.75 + 0) / 3)
