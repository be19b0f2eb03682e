"""segment_image: prompted masks equal the predictor's, automatic masks form a 16-bit label map, the files it
writes, and its errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from robustsam_prior.automatic import RobustSamAutomaticMaskGenerator, masks_to_label_map
from robustsam_prior.io import read_image
from robustsam_prior.modeling.build import build_robustsam_model
from robustsam_prior.predictor import RobustSamPredictor
from robustsam_prior.segment import SegmentationResult, palette, segment_image

TINY = dict(img_size=64, patch=8, enc_dim=32, enc_depth=2, enc_heads=2, global_attn=[1], window=4,
            prompt_dim=64, dec_depth=1, dec_mlp=64, dec_heads=2, iou_hidden=32, mask_in_chans=8)


@pytest.fixture(scope="module")
def model(randomize_weights):
    torch.manual_seed(0)
    return randomize_weights(build_robustsam_model(TINY), 11)


@pytest.fixture(scope="module")
def pixels():
    rng = np.random.default_rng(0)
    img = np.full((40, 56, 3), 0.2, np.float32)
    img[5:30, 10:40] = (0.9, 0.8, 0.1)
    return np.clip(img + rng.normal(0, 0.03, img.shape), 0, 1).astype(np.float32)


def test_prompted_masks_are_the_predictors(model, pixels, tmp_path):
    res = segment_image(model, pixels, points=[[20.0, 15.0], [50.0, 35.0]], point_labels=[1, 0],
                        box=[8.0, 4.0, 42.0, 32.0], path="sam", multimask=True, image_name="scene.png")
    p = RobustSamPredictor(model, path="sam")
    p.set_image(np.clip(np.rint(pixels * 255), 0, 255).astype(np.uint8))
    masks, iou, _ = p.predict(point_coords=np.array([[20.0, 15.0], [50.0, 35.0]], np.float32),
                              point_labels=np.array([1, 0]), box=np.array([8.0, 4.0, 42.0, 32.0], np.float32))
    s = res.scores
    assert (s["image"], s["size"], s["path"], s["bn_mode"], s["mode"]) == ("scene.png", [40, 56], "sam", "running",
                                                                          "prompted")
    assert s["prompts"] == {"points": [[20.0, 15.0], [50.0, 35.0]], "point_labels": [1, 0], "box": [8.0, 4.0, 42.0, 32.0]}
    assert list(res.images) == ["mask_0.png", "mask_1.png", "mask_2.png", "overlay.png"]
    for i in range(3):
        assert np.array_equal(res.images[f"mask_{i}.png"][0] > 0.5, masks[i]) and res.images[f"mask_{i}.png"][1] == 8
        assert s["masks"][i] == {"file": f"mask_{i}.png", "iou_prediction": float(iou[i]), "area": int(masks[i].sum())}
    overlay = pixels.copy()
    for i in range(3):
        overlay[masks[i]] = 0.5 * overlay[masks[i]] + 0.5 * palette(3)[i]
    np.testing.assert_array_equal(res.images["overlay.png"][0], np.clip(overlay, 0, 1))
    res.write(tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted([*res.images, "scores.json"])
    assert json.loads((tmp_path / "out" / "scores.json").read_text()) == json.loads(res.to_json())
    assert np.array_equal(read_image(tmp_path / "out" / "mask_1.png").pixels[..., 0] > 0.5, masks[1])


def test_automatic_masks_make_a_16_bit_label_map(model, pixels):
    res = segment_image(model, pixels, auto=True, points_per_side=3, pred_iou_thresh=0, stability_score_thresh=0)
    gen = RobustSamAutomaticMaskGenerator(model, points_per_side=3, pred_iou_thresh=0, stability_score_thresh=0)
    records = gen.generate(np.clip(np.rint(pixels * 255), 0, 255).astype(np.uint8))
    labels, sources = masks_to_label_map(records, (40, 56), return_sources=True)
    s = res.scores
    assert s["mode"] == "auto" and s["label_map"] == "labels.png" and s["num_regions"] == len(sources)
    assert list(res.images) == ["labels.png", "overlay.png"] and res.images["labels.png"][1] == 16
    assert np.array_equal(np.rint(res.images["labels.png"][0] * 65535).astype(int), labels)
    assert [m["area"] for m in s["masks"]] == [int(r["area"]) for r in records]
    assert {m["region"] for m in s["masks"]} - {None} <= set(range(len(sources)))


def test_errors(model, pixels):
    with pytest.raises(ValueError, match="take no prompts"):
        segment_image(model, pixels, auto=True, box=[0, 0, 4, 4])
    with pytest.raises(ValueError, match="give points and/or a box"):
        segment_image(model, pixels)
    with pytest.raises(ValueError, match=r"masks\[0\]\.iou_prediction is nan"):
        SegmentationResult(scores={"masks": [{"iou_prediction": float("nan")}]}).to_json()
