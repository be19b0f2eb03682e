"""RobustSamPredictor: many prompts in one call == one at a time, numpy API, image sizes, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from robustsam_prior.modeling.build import build_robustsam_model
from robustsam_prior.predictor import RobustSamPredictor

TINY = dict(img_size=64, patch=8, enc_dim=32, enc_depth=2, enc_heads=2, global_attn=[1], window=4,
            prompt_dim=64, dec_depth=2, dec_mlp=64, dec_heads=2, iou_hidden=32, mask_in_chans=8)


@pytest.fixture(scope="module")
def model(randomize_weights):
    torch.manual_seed(0)
    m = build_robustsam_model(TINY)
    randomize_weights(m, 5)
    return m


@pytest.fixture(scope="module")
def image():
    rng = np.random.default_rng(0)
    img = np.zeros((50, 80, 3), np.uint8)
    img[10:35, 20:60] = (200, 40, 40)
    return np.clip(img + rng.integers(0, 40, img.shape), 0, 255).astype(np.uint8)


POINTS = np.array([[[30.0, 20.0], [70.0, 45.0]], [[5.0, 5.0], [40.0, 25.0]], [[60.0, 10.0], [10.0, 40.0]]])
LABELS = np.array([[1, 0], [0, 1], [1, 1]])
BOXES = np.array([[15.0, 8.0, 62.0, 37.0], [0.0, 0.0, 30.0, 49.0], [40.0, 20.0, 79.0, 49.0]])


def check_same(batched, single, what):
    (bm, bi, bl), (sm, si, sl) = batched, single
    np.testing.assert_allclose(bl, sl, rtol=0, atol=1e-5, err_msg=what)
    np.testing.assert_allclose(bi, si, rtol=0, atol=1e-6, err_msg=what)
    assert bm.shape == sm.shape


@pytest.mark.parametrize("path", ["robust", "sam"])
@pytest.mark.parametrize("bn_mode", ["running", "batch"])
@pytest.mark.parametrize("multimask", [False, True])
def test_batched_prompts_equal_one_at_a_time(model, image, path, bn_mode, multimask):
    model.set_bn_mode(bn_mode)
    try:
        p = RobustSamPredictor(model, path=path)
        p.set_image(image)
        for kind in ("points", "boxes", "both"):
            kw = {}
            if kind in ("points", "both"):
                kw.update(point_coords=POINTS, point_labels=LABELS)
            if kind in ("boxes", "both"):
                kw.update(boxes=BOXES)
            bm, bi, bl = p.predict_batch(**kw, multimask_output=multimask)
            logits, _, _ = p.predict_batch(**kw, multimask_output=multimask, return_logits=True)
            n = 3 if multimask else 1
            assert bm.shape == (3, n, 50, 80) and bi.shape == (3, n) and bl.shape == (3, n, 32, 32)
            assert bm.dtype == bool
            for i in range(3):
                single = p.predict(
                    point_coords=POINTS[i] if "point_coords" in kw else None,
                    point_labels=LABELS[i] if "point_coords" in kw else None,
                    box=BOXES[i] if "boxes" in kw else None,
                    multimask_output=multimask,
                )
                check_same((bm[i], bi[i], bl[i]), single, f"{kind} prompt {i}")
                differ = bm[i] != single[0]
                assert not (differ & (np.abs(logits[i]) > 1e-4)).any()
    finally:
        model.set_bn_mode("running")


def test_predict_numpy_outputs_and_mask_input(model, image):
    p = RobustSamPredictor(model)
    assert p.path == "robust"
    p.set_image(image)
    emb = p.get_image_embedding()
    assert emb.shape == (1, 64, 8, 8)
    assert p.get_early_features().shape == (1, 8, 8, 32)
    assert p.get_robust_image_features().shape == (1, 8, 32, 32)
    masks, iou, low = p.predict(point_coords=POINTS[0], point_labels=LABELS[0])
    assert isinstance(masks, np.ndarray) and masks.shape == (3, 50, 80) and iou.shape == (3,) and low.shape == (3, 32, 32)
    best = low[np.argmax(iou)][None]
    m2, i2, l2 = p.predict(point_coords=POINTS[0], point_labels=LABELS[0], mask_input=best, multimask_output=False)
    assert m2.shape == (1, 50, 80)
    assert not np.allclose(l2[0], low[0])  # the mask prompt changes the result
    # the robust and sam paths give different masks on the same image and prompt
    ps = RobustSamPredictor(model, path="sam")
    ps.set_image(image)
    _, _, ls = ps.predict(point_coords=POINTS[0], point_labels=LABELS[0])
    assert not np.allclose(ls, low)
    # a path can also be chosen per call
    out = p.decode(point_coords=torch.tensor(POINTS[:1] * 0.8, dtype=torch.float),
                   point_labels=torch.tensor(LABELS[:1]), path="sam")
    assert out.path == "sam" and out.logits.shape == (1, 4, 32, 32)


def test_keep_encoding_keeps_the_last_encoder_outputs_past_reset_image(model, image):
    plain = RobustSamPredictor(model)
    plain.set_image(image)
    assert plain.last_encoding is None
    p = RobustSamPredictor(model, keep_encoding=True)
    assert p.last_encoding is None
    p.set_image(image)
    features, early = p.features, p.early_features
    p.reset_image()
    assert p.features is None and p.early_features is None
    assert p.last_encoding[0] is features and p.last_encoding[1] is early
    torch.testing.assert_close(features, plain.features, rtol=0, atol=0)
    torch.testing.assert_close(early, plain.early_features, rtol=0, atol=0)


def test_errors(model, image):
    with pytest.raises(TypeError, match="RobustSam"):
        RobustSamPredictor(torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="path"):
        RobustSamPredictor(model, path="clear")
    p = RobustSamPredictor(model)
    with pytest.raises(RuntimeError, match="set_image"):
        p.predict(point_coords=POINTS[0], point_labels=LABELS[0])
    with pytest.raises(RuntimeError, match="set_image"):
        p.predict_batch(boxes=BOXES)
    with pytest.raises(RuntimeError, match="set_image"):
        p.get_early_features()
    with pytest.raises(RuntimeError, match="set_image"):
        p.get_robust_image_features()
    with pytest.raises(ValueError, match="long side 64"):
        p.set_torch_image(torch.zeros(1, 3, 32, 32), (32, 32))
    p.set_image(image)
    with pytest.raises(ValueError, match="point_labels"):
        p.predict_batch(point_coords=POINTS)
    with pytest.raises(ValueError, match="point_labels"):
        p.predict_torch(torch.zeros(1, 1, 2), None)
    with pytest.raises(ValueError, match=r"\(N, P, 2\)"):
        p.predict_batch(point_coords=POINTS[0], point_labels=LABELS[0])
    with pytest.raises(ValueError, match=r"\(N, 4\)"):
        p.predict_batch(boxes=BOXES[0])
    with pytest.raises(ValueError, match="early_features or robust_image_features"):
        model.mask_decoder.decode(torch.zeros(1, 64, 8, 8), torch.zeros(1, 64, 8, 8), torch.zeros(1, 2, 64),
                                  torch.zeros(1, 64, 8, 8))
    with pytest.raises(ValueError, match="expected 1 or the number of prompt sets"):
        model.mask_decoder.decode(torch.zeros(2, 64, 8, 8), torch.zeros(1, 64, 8, 8), torch.zeros(3, 2, 64),
                                  torch.zeros(3, 64, 8, 8), robust_image_features=torch.zeros(1, 8, 32, 32))
