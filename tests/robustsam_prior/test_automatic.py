"""Automatic masks on the robust path and ``masks_to_label_map`` (a hand-worked example + partition checks)."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

from robustsam_prior.automatic import RobustSamAutomaticMaskGenerator, masks_to_label_map
from robustsam_prior.modeling.build import build_robustsam_model
from robustsam_prior.predictor import RobustSamPredictor

TINY = dict(img_size=64, patch=8, enc_dim=32, enc_depth=2, enc_heads=2, global_attn=[1], window=4,
            prompt_dim=64, dec_depth=1, dec_mlp=64, dec_heads=2, iou_hidden=32, mask_in_chans=8)


def rect(shape, r0, r1, c0, c1):
    m = np.zeros(shape, bool)
    m[r0:r1, c0:c1] = True
    return m


def hand_masks():
    a = rect((4, 4), 0, 3, 0, 4)  # area 12
    b = rect((4, 4), 0, 2, 0, 2)  # area 4, iou 0.5
    c = rect((4, 4), 1, 3, 1, 3)  # area 4, iou 0.9: wins the shared pixel (1, 1) over b
    return [{"segmentation": a, "predicted_iou": 0.99}, {"segmentation": b, "predicted_iou": 0.5},
            {"segmentation": c, "predicted_iou": 0.9}]


EXPECTED = np.array([[0, 0, 1, 1], [0, 2, 2, 1], [1, 2, 2, 1], [3, 3, 3, 3]], np.int32)


def test_label_map_hand_worked():
    labels, sources = masks_to_label_map(hand_masks(), return_sources=True)
    assert labels.dtype == np.int32
    np.testing.assert_array_equal(labels, EXPECTED)
    assert sources == [1, 0, 2, -1]  # region 0 <- mask b, 1 <- a, 2 <- c, 3 <- uncovered pixels
    # the input order does not matter; a mask completely hidden by a smaller or better one gets no region
    masks = hand_masks()[::-1] + [{"segmentation": rect((4, 4), 1, 3, 1, 3), "predicted_iou": 0.1}]
    np.testing.assert_array_equal(masks_to_label_map(masks), EXPECTED)
    # a plain bool array: no scores, ties broken by index (b before c now owns (1, 1))
    arr = np.stack([m["segmentation"] for m in hand_masks()])
    got = masks_to_label_map(arr)
    assert got[1, 1] == got[0, 0] and got[2, 2] != got[0, 0]


def test_label_map_edge_cases():
    np.testing.assert_array_equal(masks_to_label_map([], (3, 5)), np.zeros((3, 5), np.int32))
    full = np.ones((1, 3, 3), bool)
    np.testing.assert_array_equal(masks_to_label_map(full), np.zeros((3, 3), np.int32))
    with pytest.raises(ValueError, match="no masks and no shape"):
        masks_to_label_map([])
    with pytest.raises(ValueError, match="mask 1 has shape"):
        masks_to_label_map([np.zeros((4, 4), bool), np.zeros((4, 5), bool)])
    with pytest.raises(ValueError, match="without a 'segmentation'"):
        masks_to_label_map([{"area": 3}], (2, 2))
    with pytest.raises(ValueError, match="HxW mask"):
        masks_to_label_map([np.zeros(4, bool)], (2, 2))
    if importlib.util.find_spec("pycocotools") is None:
        with pytest.raises(ValueError, match="pycocotools"):
            masks_to_label_map([{"segmentation": {"size": [2, 2], "counts": "abc"}}], (2, 2))


@pytest.fixture(scope="module")
def model(randomize_weights):
    torch.manual_seed(0)
    m = build_robustsam_model(TINY)
    randomize_weights(m, 7)
    return m


@pytest.fixture(scope="module")
def image():
    rng = np.random.default_rng(1)
    img = np.full((48, 64, 3), 30, np.uint8)
    img[8:30, 10:40] = (220, 200, 30)
    img[25:45, 35:60] = (20, 90, 230)
    return np.clip(img.astype(int) + rng.integers(-10, 10, img.shape), 0, 255).astype(np.uint8)


def test_generator_runs_robust_path_and_gives_a_partition(model, image):
    gen = RobustSamAutomaticMaskGenerator(model, points_per_side=4, points_per_batch=8, pred_iou_thresh=0.0,
                                          stability_score_thresh=0.0, box_nms_thresh=0.9)
    assert isinstance(gen.predictor, RobustSamPredictor) and gen.predictor.path == "robust"
    records = gen.generate(image)
    assert records, "expected some masks with all filters off"
    for r in records:
        assert r["segmentation"].shape == (48, 64) and set(r) >= {"area", "bbox", "predicted_iou", "stability_score"}
    labels, sources = masks_to_label_map(records, (48, 64), return_sources=True)
    assert labels.shape == (48, 64) and labels.dtype == np.int32
    k = len(sources)
    assert set(np.unique(labels)) == set(range(k))  # ids 0..K-1, all used
    covered = np.zeros((48, 64), bool)
    for r in records:
        covered |= r["segmentation"]
    for rid, src in enumerate(sources):
        region = labels == rid
        if src < 0:
            np.testing.assert_array_equal(region, ~covered)
        else:
            assert records[src]["segmentation"][region].all()
    # the same masks as uncompressed RLE give the same label map
    gen_rle = RobustSamAutomaticMaskGenerator(model, points_per_side=4, points_per_batch=8, pred_iou_thresh=0.0,
                                              stability_score_thresh=0.0, box_nms_thresh=0.9,
                                              output_mode="uncompressed_rle")
    np.testing.assert_array_equal(masks_to_label_map(gen_rle.generate(image), (48, 64)), labels)


def test_generator_sam_path_differs(model, image):
    kw = dict(points_per_side=2, pred_iou_thresh=0.0, stability_score_thresh=0.0)
    robust = RobustSamAutomaticMaskGenerator(model, **kw).generate(image)
    sam = RobustSamAutomaticMaskGenerator(model, path="sam", **kw).generate(image)
    assert [r["predicted_iou"] for r in robust] != [r["predicted_iou"] for r in sam] or not all(
        np.array_equal(a["segmentation"], b["segmentation"]) for a, b in zip(robust, sam)
    )


def test_generator_progress_counts_every_prompt_and_changes_nothing(model, image, capsys):
    kw = dict(points_per_side=3, points_per_batch=4, pred_iou_thresh=0.0, stability_score_thresh=0.0,
              crop_n_layers=1)  # crops: 1 + 4, 9 points each -> 45 prompts in batches of <= 4
    plain = RobustSamAutomaticMaskGenerator(model, **kw).generate(image)
    gen = RobustSamAutomaticMaskGenerator(model, progress=True, **kw)
    counted = []
    original = gen._process_batch

    def spy(points, *args, **kwargs):
        counted.append(len(points))
        return original(points, *args, **kwargs)

    gen._process_batch = spy
    shown = gen.generate(image)
    assert sum(counted) == 45 and max(counted) == 4
    err = capsys.readouterr().err
    assert "automatic masks" in err and "/45 [" in err  # the bar knows the total up front
    assert len(shown) == len(plain)
    for a, b in zip(shown, plain):
        np.testing.assert_array_equal(a["segmentation"], b["segmentation"])


def test_generator_refuses_unbounded_sizes_before_allocating(model, monkeypatch):
    import segment_anything.automatic_mask_generator as amg

    from robustsam_prior.automatic_limits import MAX_CROP_N_LAYERS, MAX_POINTS_PER_BATCH, MAX_POINTS_PER_SIDE

    def no_grids(*args, **kwargs):
        raise AssertionError("a point grid was built for options that must be refused")

    monkeypatch.setattr(amg, "build_all_layer_point_grids", no_grids)
    for bad, msg in [
        ({"points_per_side": 100000}, f"points_per_side must be an integer in 1..{MAX_POINTS_PER_SIDE}"),
        ({"points_per_side": 0}, "points_per_side must be"),
        ({"points_per_side": 4.5}, "points_per_side must be"),
        ({"points_per_side": None}, "points_per_side must be"),
        ({"points_per_batch": 10**6}, f"points_per_batch must be an integer in 1..{MAX_POINTS_PER_BATCH}"),
        ({"points_per_batch": 0}, "points_per_batch must be"),
        ({"crop_n_layers": 12}, f"crop_n_layers must be an integer in 0..{MAX_CROP_N_LAYERS}"),
        ({"crop_n_layers": -1}, "crop_n_layers must be"),
        ({"crop_n_points_downscale_factor": 0}, "crop_n_points_downscale_factor must be an integer >= 1"),
        ({"points_per_side": 4, "crop_n_layers": 2, "crop_n_points_downscale_factor": 4},
         "leaves crop layer 2 without points"),
        ({"crop_overlap_ratio": 1.0}, "crop_overlap_ratio must be a number in \\[0, 1\\)"),
        ({"pred_iou_thresh": float("nan")}, "pred_iou_thresh must be a number in \\[0, 1\\]"),
        ({"stability_score_thresh": 2.0}, "stability_score_thresh must be"),
        ({"box_nms_thresh": float("inf")}, "box_nms_thresh must be"),
        ({"stability_score_offset": float("nan")}, "stability_score_offset must be"),
        ({"min_mask_region_area": -5}, "min_mask_region_area must be"),
        ({"points_per_side": None, "point_grids": [np.full((3, 2), 2.0)]}, "point_grids\\[0\\] must hold"),
        ({"points_per_side": None, "point_grids": [np.zeros((3, 3))]}, "point_grids\\[0\\] must be an \\(N, 2\\)"),
    ]:
        with pytest.raises(ValueError, match=msg):
            RobustSamAutomaticMaskGenerator(model, **bad)
    monkeypatch.undo()
    # the bounds themselves are accepted
    gen = RobustSamAutomaticMaskGenerator(model, points_per_side=MAX_POINTS_PER_SIDE,
                                          points_per_batch=MAX_POINTS_PER_BATCH, crop_n_layers=1)
    assert [len(g) for g in gen.point_grids] == [MAX_POINTS_PER_SIDE**2] * 2


def test_default_score_filters_follow_the_variant():
    """The official sizes (and custom ones) get Meta's thresholds; the trained-here robustsam-tiny, whose
    predicted IoUs are not calibrated like SAM's, none."""
    import torch

    from robustsam_prior.automatic import score_filters_for
    from robustsam_prior.modeling.build import build_robustsam_model

    with torch.device("meta"):
        tiny = build_robustsam_model("robustsam-tiny")
        vit_b = build_robustsam_model("vit_b")
    assert score_filters_for(tiny.config) == {"pred_iou_thresh": 0.0, "stability_score_thresh": 0.0}
    assert score_filters_for(vit_b.config) == {"pred_iou_thresh": 0.88, "stability_score_thresh": 0.95}
