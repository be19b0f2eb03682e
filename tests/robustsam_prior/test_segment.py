"""segment_image: prompted masks equal the predictor's, automatic masks form a 16-bit label map, the files it
writes, and its errors."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from robustsam_prior.automatic import RobustSamAutomaticMaskGenerator, masks_to_label_map
from robustsam_prior.core.io import read_image, write_image
from robustsam_prior.modeling.build import build_robustsam_model
from robustsam_prior.predictor import RobustSamPredictor
from robustsam_prior.segment import (
    BACKGROUND,
    BOX,
    FOREGROUND,
    RING,
    PromptError,
    Prompts,
    SegmentationResult,
    coco_rle,
    draw_box,
    draw_point,
    output_folder,
    palette,
    segment_file,
    segment_image,
)

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
    draw_box(overlay, [8.0, 4.0, 42.0, 32.0], BOX, 1)
    draw_point(overlay, 20.0, 15.0, FOREGROUND, 2)
    draw_point(overlay, 50.0, 35.0, BACKGROUND, 2)
    got = res.images["overlay.png"][0]
    np.testing.assert_array_equal(got, np.clip(overlay, 0, 1))
    # the markers, pixel by pixel: radius 2 (1% of the 40-pixel side, at least 2), a white ring at 3, the box
    # outline 1 pixel wide along its edges
    np.testing.assert_allclose(got[15, 20], FOREGROUND)
    np.testing.assert_allclose(got[17, 20], FOREGROUND)
    np.testing.assert_allclose(got[15, 23], RING)
    np.testing.assert_allclose(got[35, 50], BACKGROUND)
    np.testing.assert_allclose(got[4, 25], BOX)
    np.testing.assert_allclose(got[20, 41], BOX)
    assert not np.allclose(got[20, 40], BOX)
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
    assert list(res.images) == ["labels.png", *(f"masks/{i}.png" for i in range(len(records))), "overlay.png"]
    assert res.images["labels.png"][1] == 16
    assert np.array_equal(np.rint(res.images["labels.png"][0] * 65535).astype(int), labels)
    assert [m["area"] for m in s["masks"]] == [int(r["area"]) for r in records]
    assert {m["region"] for m in s["masks"]} - {None} <= set(range(len(sources)))


def decode_rle(rle: dict) -> np.ndarray:
    """A COCO RLE (compressed through pycocotools, or uncompressed through segment_anything) as a mask."""
    if isinstance(rle["counts"], str):
        from pycocotools import mask as mask_utils

        return mask_utils.decode(rle).astype(bool)
    from segment_anything.utils.amg import rle_to_mask

    return rle_to_mask(rle)


def test_coco_rle_by_hand(monkeypatch):
    mask = np.array([[0, 1, 1], [0, 1, 0]], bool)  # column-major: 0 0 | 1 1 | 1 0 -> runs 2 zeros, 3 ones, 1 zero
    if importlib.util.find_spec("pycocotools") is not None:  # pycocotools' compressed string of the same runs
        rle = coco_rle(mask)
        assert rle["size"] == [2, 3] and isinstance(rle["counts"], str)
        assert np.array_equal(decode_rle(rle), mask)
        from pycocotools import mask as mask_utils

        assert mask_utils.area(rle) == 3 and mask_utils.toBbox(rle).tolist() == [1.0, 0.0, 2.0, 2.0]
    monkeypatch.setitem(sys.modules, "pycocotools", None)  # as if not installed: uncompressed runs
    rle = coco_rle(mask)
    assert rle == {"size": [2, 3], "counts": [2, 3, 1]}
    assert np.array_equal(decode_rle(rle), mask)


def test_overlapping_masks_as_amg_writes_them(model, pixels, tmp_path):
    """Every automatic mask as a PNG and as a COCO RLE record with SAM's fields, beside the label map; box NMS
    off (threshold 1) keeps all 27 candidates of the 3x3 grid, overlapping."""
    kw = dict(points_per_side=3, pred_iou_thresh=0, stability_score_thresh=0, box_nms_thresh=1.0)
    res = segment_image(model, pixels, auto=True, **kw)
    records = RobustSamAutomaticMaskGenerator(model, **kw).generate(np.clip(np.rint(pixels * 255), 0, 255).astype(np.uint8))
    assert len(records) == 27
    s, coco = res.scores, res.json_files["masks.json"]
    assert s["masks_json"] == "masks.json" and len(coco) == len(s["masks"]) == 27
    assert s["filters"] == {"candidates": 27, "pred_iou_thresh": 27, "stability_score_thresh": 27, "crop_edge": 27,
                            "box_nms": 27, "crop_nms": 27, "min_mask_region_area": 27}
    for i, (rec, entry, ref) in enumerate(zip(coco, s["masks"], records)):
        assert set(rec) == {"segmentation", "area", "bbox", "predicted_iou", "stability_score", "point_coords",
                            "crop_box"}
        assert np.array_equal(decode_rle(rec["segmentation"]), ref["segmentation"])
        assert np.array_equal(res.images[f"masks/{i}.png"][0], ref["segmentation"])
        assert rec["area"] == ref["area"] and rec["bbox"] == ref["bbox"] and rec["crop_box"] == [0, 0, 56, 40]
        assert rec["predicted_iou"] == pytest.approx(ref["predicted_iou"])
        assert rec["point_coords"] == ref["point_coords"]
        assert entry["file"] == f"masks/{i}.png" and entry["point_coords"] == rec["point_coords"]
    # the grid points of the kept masks are marked on the overlay
    overlay = res.images["overlay.png"][0]
    for rec in coco:
        (x, y), = rec["point_coords"]
        np.testing.assert_allclose(overlay[int(y), int(x)], RING)
    res.write(tmp_path / "out")
    written = json.loads((tmp_path / "out" / "masks.json").read_text())
    assert len(written) == 27 and np.array_equal(decode_rle(written[3]["segmentation"]), records[3]["segmentation"])
    assert np.array_equal(read_image(tmp_path / "out" / "masks" / "26.png").pixels[..., 0] > 0.5,
                          records[26]["segmentation"])


def test_no_masks_names_the_filter_that_removed_them(model, pixels):
    res = segment_image(model, pixels, auto=True, points_per_side=3)  # SAM's defaults: 0.88 / 0.95
    s = res.scores
    assert s["masks"] == [] and s["num_regions"] == 1 and res.json_files["masks.json"] == []
    assert s["filters"]["candidates"] == 27 and s["filters"]["pred_iou_thresh"] == 0
    assert s["no_masks"].startswith("pred_iou_thresh 0.88 removed all 27 of the 27 candidate masks (best predicted_iou ")
    assert s["no_masks"].endswith("; lower --pred-iou-thresh)")
    res = segment_image(model, pixels, auto=True, points_per_side=3, pred_iou_thresh=0, stability_score_thresh=0.99)
    assert res.scores["no_masks"].startswith("stability_score_thresh 0.99 removed all 27 of the 27 candidate masks")
    assert "lower --stability-thresh" in res.scores["no_masks"]


def test_errors(model, pixels):
    with pytest.raises(ValueError, match="take no prompts"):
        segment_image(model, pixels, auto=True, box=[0, 0, 4, 4])
    with pytest.raises(ValueError, match="give points and/or a box"):
        segment_image(model, pixels)
    with pytest.raises(ValueError, match=r"masks\[0\]\.iou_prediction is nan"):
        SegmentationResult(scores={"masks": [{"iou_prediction": float("nan")}]}).to_json()


def test_min_mask_region_area_runs_sams_clean_up_and_is_counted(model, pixels):
    kw = dict(points_per_side=3, pred_iou_thresh=0, stability_score_thresh=0, box_nms_thresh=1.0)
    res = segment_image(model, pixels, auto=True, min_mask_region_area=2000, **kw)
    gen = RobustSamAutomaticMaskGenerator(model, min_mask_region_area=2000, **kw)
    records = gen.generate(np.clip(np.rint(pixels * 255), 0, 255).astype(np.uint8))
    s = res.scores
    assert s["settings"]["min_mask_region_area"] == 2000
    assert s["filters"] == gen.filter_counts and s["filters"]["min_mask_region_area"] == len(records) == len(s["masks"])
    assert s["filters"]["crop_nms"] == 27  # what reached the clean-up
    assert [m["area"] for m in s["masks"]] == [r["area"] for r in records]


def test_prompts_from_text_and_checked_against_the_image():
    p = Prompts.parse("20,15,1; 50,35,0", "8,4,42,32")
    assert p == Prompts([[20.0, 15.0], [50.0, 35.0]], [1, 0], [8.0, 4.0, 42.0, 32.0]) and p.given
    assert not Prompts.parse(None, "").given
    p.check_inside(40, 56)
    for points, box, which, message in [("1,2", None, "points", "expected x,y,label"),
                                        ("nan,1,1", None, "points", "finite"), (";", None, "points", "no points"),
                                        (None, "1,2,3", "box", "x1 > x0"), (None, "0,0,inf,3", "box", "finite")]:
        with pytest.raises(PromptError, match=message) as e:
            Prompts.parse(points, box)
        assert e.value.prompt == which
    with pytest.raises(PromptError, match="point 56,10 lies outside the 56x40 image a.png") as e:
        Prompts.parse("56,10,1").check_inside(40, 56, "a.png")
    assert e.value.prompt == "points"
    with pytest.raises(PromptError, match="reaches outside") as e:
        Prompts.parse(None, "0,0,57,30").check_inside(40, 56)
    assert e.value.prompt == "box"


def test_segment_file_writes_what_segment_image_returns(model, pixels, tmp_path):
    src = tmp_path / "scene.png"
    write_image(src, pixels)
    out = output_folder(tmp_path / "out", "sub/scene.png")
    assert out == tmp_path / "out" / "sub" / "scene"
    assert output_folder(tmp_path / "out", "scene.png", {Path("scene.png")}).name == "scene.png"
    assert output_folder(tmp_path / "out", None) == tmp_path / "out"
    res = segment_file(model, src, out, prompts=Prompts.parse("20,15,1"), path="sam")
    ref = segment_image(model, read_image(src).pixels, points=[[20.0, 15.0]], point_labels=[1], path="sam",
                        image_name=str(src))
    assert res.scores == ref.scores and json.loads((out / "scores.json").read_text()) == json.loads(ref.to_json())
    assert sorted(p.name for p in out.iterdir()) == ["mask_0.png", "overlay.png", "scores.json"]
    auto = segment_file(model, src, tmp_path / "auto", points_per_side=3, pred_iou_thresh=0, stability_score_thresh=0)
    assert auto.scores["mode"] == "auto" and (tmp_path / "auto" / "labels.png").is_file()
    # a prompt off the image: nothing is written
    with pytest.raises(PromptError, match="lies outside"):
        segment_file(model, src, tmp_path / "off", prompts=Prompts.parse("99,1,1"))
    assert not (tmp_path / "off").exists()
