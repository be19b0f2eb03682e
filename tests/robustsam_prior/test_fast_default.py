"""The fast encoder is the default on every path that runs RobustSAM's image encoder, and equals the stock path.

Each path is run twice on the same tiny random-weights model: as built by default and with the opt-out
(``fast=False`` / ``fast_encoder=False``). ``fast_block_calls`` counts the fast forward's calls, so a path that
silently stays on the stock encoder fails here. The token grid (10x10, windows of 4) needs padding, so
the fast windowed path's padding is exercised too.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from robustsam_prior.fast_encoder import is_accelerated
from robustsam_prior.loading import build_robustsam, save_robustsam
from robustsam_prior.modeling.build import build_robustsam_model

TINY = dict(img_size=80, patch=8, enc_dim=32, enc_depth=3, enc_heads=2, global_attn=[1], window=4,
            prompt_dim=64, dec_depth=1, dec_mlp=64, dec_heads=2, iou_hidden=32, mask_in_chans=8)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, randomize_weights):
    torch.manual_seed(0)
    model = randomize_weights(build_robustsam_model(TINY, fast=False), 7)
    with torch.no_grad():  # zero at initialisation; random, so the relative-position terms take part
        for name, p in model.image_encoder.named_parameters():
            if "rel_pos" in name:
                p.normal_(0, 0.05)
    path = tmp_path_factory.mktemp("fast") / "tiny.safetensors"
    save_robustsam(model, path)
    return path


@pytest.fixture(scope="module")
def image():
    rng = np.random.default_rng(0)
    img = np.full((60, 70, 3), 40, np.uint8)
    img[10:40, 15:50] = (210, 60, 30)
    return np.clip(img + rng.integers(0, 30, img.shape), 0, 255).astype(np.uint8)


def test_builders_default_to_the_fast_encoder(checkpoint):
    assert is_accelerated(build_robustsam(None, checkpoint).image_encoder)
    assert is_accelerated(build_robustsam_model(TINY).image_encoder)
    assert not is_accelerated(build_robustsam(None, checkpoint, fast=False).image_encoder)


def test_predictor_equals_the_stock_path(checkpoint, image, fast_block_calls):
    from robustsam_prior.predictor import RobustSamPredictor

    results = []
    for fast in (True, False):
        n0 = fast_block_calls["n"]
        predictor = RobustSamPredictor(build_robustsam(None, checkpoint, fast=fast))
        predictor.set_image(image)
        assert (fast_block_calls["n"] > n0) == fast
        masks, iou, low = predictor.predict(point_coords=np.array([[30.0, 25.0]]), point_labels=np.array([1]),
                                            multimask_output=True)
        results.append((predictor.features, predictor.early_features, masks, iou, low))
    (f1, e1, m1, i1, l1), (f2, e2, m2, i2, l2) = results
    torch.testing.assert_close(f1, f2, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(e1, e2, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(l1, l2, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(i1, i2, rtol=1e-4, atol=1e-5)
    assert (m1 != m2).sum() <= 2  # logits equal within 1e-4: only a pixel on the threshold could flip


def test_automatic_masks_equal_the_stock_path(checkpoint, image, fast_block_calls):
    from robustsam_prior.automatic import RobustSamAutomaticMaskGenerator

    outs = []
    for fast in (True, False):
        n0 = fast_block_calls["n"]
        gen = RobustSamAutomaticMaskGenerator(build_robustsam(None, checkpoint, fast=fast), points_per_side=4,
                                              pred_iou_thresh=0.0, stability_score_thresh=0.0)
        outs.append(gen.generate(image))
        assert (fast_block_calls["n"] > n0) == fast
    assert len(outs[0]) == len(outs[1]) > 0
    for a, b in zip(outs[0], outs[1]):
        assert abs(a["predicted_iou"] - b["predicted_iou"]) < 1e-4
        assert (a["segmentation"] != b["segmentation"]).sum() <= 2


def test_prior_and_its_cache_key_equal_the_stock_path(checkpoint, fast_block_calls):
    from robustsam_prior.prior import build_prior

    x = torch.rand(1, 3, 48, 56, generator=torch.Generator().manual_seed(2))
    opts = dict(checkpoint=checkpoint, points_per_side=3, pred_iou_thresh=0.0, stability_score_thresh=0.0,
                device="cpu")
    fast, stock = build_prior("robustsam", **opts), build_prior("robustsam", **opts, fast_encoder=False)
    assert fast.meta == stock.meta  # the same outputs: a prior cache does not tell them apart
    out_fast = fast(x)
    assert fast_block_calls["n"] > 0 and is_accelerated(fast.model.image_encoder)
    n0 = fast_block_calls["n"]
    out_stock = stock(x)
    assert fast_block_calls["n"] == n0 and not is_accelerated(stock.model.image_encoder)
    assert (out_fast.labels != out_stock.labels).float().mean() < 0.01
    for k in out_stock.features:
        torch.testing.assert_close(out_fast.features[k], out_stock.features[k], rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="fast_encoder must be true or false"):
        build_prior("robustsam", **opts, fast_encoder="no")


def test_restorer_passes_the_opt_out_to_its_prior(checkpoint):
    from restore.inference import _build_prior

    record = {"name": "robustsam", "options": {"points_per_side": 2}}
    assert _build_prior(record, None, checkpoint, torch.device("cpu")).fast_encoder is True
    assert _build_prior(record, None, checkpoint, torch.device("cpu"), fast_encoder=False).fast_encoder is False


def test_segmentation_benchmark_model_uses_the_fast_encoder(checkpoint):
    from eval.segmenters import SegmenterContext

    fast = SegmenterContext(checkpoint=str(checkpoint)).model()
    stock = SegmenterContext(checkpoint=str(checkpoint), fast_encoder=False).model()
    assert is_accelerated(fast.image_encoder) and not is_accelerated(stock.image_encoder)


def test_training_runs_the_frozen_encoder_fast_with_the_same_result(tmp_path, fast_block_calls):
    from pipelines.config import load_config
    from robustsam_prior.training.options import RobustSamTrainConfig
    from robustsam_prior.training.trainer import train_from_options

    recipe = Path(__file__).resolve().parents[2] / "pipelines" / "train_robustsam_smoke.yml"
    weights, losses = [], []
    for fast in (True, False):
        cfg = load_config(RobustSamTrainConfig, recipe, [f"output_dir={tmp_path / str(fast)}", "train.steps=2",
                                                         f"train.fast_encoder={str(fast).lower()}"])
        n0 = fast_block_calls["n"]
        summary = train_from_options(cfg)
        assert (fast_block_calls["n"] > n0) == fast
        weights.append(build_robustsam(None, summary["weights"], fast=False).state_dict())
        losses.append([json.loads(line)["total"] for line in Path(summary["log"]).read_text().splitlines()])
    np.testing.assert_allclose(losses[0], losses[1], rtol=1e-5)
    # Adam moves a weight by at most about lr per step whatever its gradient; where a gradient is ~0, the
    # rounding of the encoder features can flip its sign, so weights agree within 2 lr per step
    bound = 2 * cfg.optim.lr * cfg.train.steps
    for k, v in weights[0].items():
        torch.testing.assert_close(v, weights[1][k], rtol=0, atol=bound, msg=k)
