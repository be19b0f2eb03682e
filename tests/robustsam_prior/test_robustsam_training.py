"""RobustSAM anti-degradation training: losses against hand formulas, pairs, and a smoke run that lowers the
loss, keeps SAM bit-identical and stays finite."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from robustsam_prior.data.shapes import ShapesDataset
from robustsam_prior.loading import build_robustsam, is_robust_key
from robustsam_prior.modeling.build import build_robustsam_model
from robustsam_prior.training.data import PairSampler, make_pair, mask_box, sample_points
from robustsam_prior.training.losses import (
    LossWeights,
    anti_degradation_losses,
    dice_loss,
    sigmoid_focal_loss,
)
from robustsam_prior.training.trainer import AntiDegradationConfig, AntiDegradationTrainer, set_trainable

TINY = dict(img_size=64, patch=8, enc_dim=32, enc_depth=2, enc_heads=2, global_attn=[1], window=4,
            prompt_dim=64, dec_depth=1, dec_mlp=64, dec_heads=2, iou_hidden=32, mask_in_chans=8)


def test_losses_match_hand_formulas():
    logits = torch.tensor([[2.0, -1.0], [0.5, -3.0]])
    target = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    p = torch.sigmoid(logits)
    p_t = torch.where(target > 0, p, 1 - p)
    expected_focal = (0.25 * (1 - p_t) ** 2 * -torch.log(p_t)).mean()
    torch.testing.assert_close(sigmoid_focal_loss(logits, target), expected_focal)
    d0 = 1 - (2 * p[0, 0] + 1e-6) / (p[0].sum() + 1 + 1e-6)
    d1 = 1 - (2 * p[1, 1] + 1e-6) / (p[1].sum() + 1 + 1e-6)
    torch.testing.assert_close(dice_loss(logits, target), (d0 + d1) / 2)
    t1, t2, f1, f2 = torch.randn(2, 4, 8), torch.randn(2, 4, 8), torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
    terms = anti_degradation_losses(logits[:, None, None], target[:, None, None], t1, t2, f1, f2)
    torch.testing.assert_close(terms["token"], 2 * F.mse_loss(t1, t2))
    torch.testing.assert_close(terms["feature"], 100 * F.mse_loss(f1, f2))
    torch.testing.assert_close(terms["total"], terms["focal"] + terms["dice"] + terms["token"] + terms["feature"])
    assert LossWeights() == LossWeights(focal=20, dice=1, token=2, feature=100)


def test_pairs_and_prompts():
    rng = np.random.default_rng(0)
    mask = np.zeros((10, 12), bool)
    mask[2:5, 3:9] = True
    pts = sample_points(mask, 3, rng)
    assert pts.shape == (3, 2) and all(mask[int(y), int(x)] for x, y in pts)
    box = mask_box(mask, rng, jitter=0.0)
    np.testing.assert_array_equal(box, [3, 2, 9, 5])
    with pytest.raises(ValueError, match="empty mask"):
        sample_points(np.zeros((3, 3), bool), 1, rng)
    with pytest.raises(ValueError, match="empty mask"):
        mask_box(np.zeros((3, 3), bool), rng)
    scene = ShapesDataset(length=1, height=48, width=40, seed=1)[0]
    pair = make_pair(scene.image, scene.masks, degradations=["gaussian_noise"], include_identity=False, rng=rng,
                     instance="largest")
    assert pair.degradation == "gaussian_noise" and pair.clear.shape == pair.degraded.shape == (3, 48, 40)
    assert not torch.equal(pair.clear, pair.degraded)
    largest = scene.masks[np.argmax(scene.masks.reshape(len(scene.masks), -1).sum(1))]
    np.testing.assert_array_equal(pair.mask.numpy() > 0, largest)
    ident = make_pair(scene.image, scene.masks, degradations=[], rng=rng)
    assert ident.degradation == "identity" and torch.equal(ident.clear, ident.degraded)
    warped = make_pair(scene.image, scene.masks, degradations=["elastic_transform"], include_identity=False, rng=rng)
    assert warped.mask.shape == (48, 40) and warped.mask.sum() > 0
    for kwargs, msg in [(dict(degradations=[], include_identity=False), "no degradations"),
                        (dict(degradations=["fog"], instance="smallest"), "instance")]:
        with pytest.raises(ValueError, match=msg):
            make_pair(scene.image, scene.masks, rng=rng, **kwargs)
    with pytest.raises(ValueError, match="no non-empty instance"):
        make_pair(scene.image, np.zeros((1, 48, 40), bool), degradations=["fog"], rng=rng)
    with pytest.raises(ValueError, match="batch_size"):
        PairSampler([scene], batch_size=0)
    with pytest.raises(ValueError, match="empty"):
        PairSampler([], batch_size=1)


def test_set_trainable():
    model = build_robustsam_model(TINY)
    names = set(set_trainable(model))
    assert names and all(is_robust_key(n) for n in names)
    both = set(set_trainable(model, train_sam_decoder=True))
    assert names < both and all(n.startswith("mask_decoder.") for n in both)
    assert not any(p.requires_grad for n, p in model.named_parameters() if n.startswith(("image_encoder", "prompt_encoder")))
    with pytest.raises(ValueError, match="prompt"):
        AntiDegradationConfig(prompt="scribble")
    with pytest.raises(ValueError, match="lr > 0"):
        AntiDegradationConfig(lr=0)


def test_smoke_training_from_sam_checkpoint(tmp_path):
    torch.manual_seed(0)
    sam_source = build_robustsam_model(TINY)
    sam_file = tmp_path / "sam_tiny.pth"
    torch.save({k: v for k, v in sam_source.state_dict().items() if not is_robust_key(k)}, sam_file)
    model = build_robustsam(TINY, sam_file, fresh_robust_modules=True)
    before = copy.deepcopy(model.state_dict())
    data = ShapesDataset(length=2, height=64, width=64, seed=0)
    batch = next(iter(PairSampler(data, batch_size=2, seed=0, degradations=["fog", "gaussian_noise"],
                                  include_identity=False)))
    trainer = AntiDegradationTrainer(model, AntiDegradationConfig(steps=10, lr=1e-3, prompt="both"))
    history = trainer.train([batch] * 10, progress=False)  # overfit one batch: the loss must fall
    assert all(np.isfinite(h["total"]) for h in history)
    assert model.bn_mode == "running" and not model.training  # inference settings restored
    assert history[-1]["total"] < 0.8 * history[0]["total"], [round(h["total"], 4) for h in history]
    assert history[-1]["focal"] < 0.8 * history[0]["focal"], [round(h["focal"], 4) for h in history]
    after = model.state_dict()
    frozen = [k for k in before if not is_robust_key(k)]
    assert all(torch.equal(before[k], after[k]) for k in frozen)  # SAM bit-identical
    trained = [k for k in trainer.trainable]
    assert sum(not torch.equal(before[k], after[k]) for k in trained) > 0.9 * len(trained)
    assert not torch.equal(before["mask_decoder.fourier_mask_features.dnc_block_combined.SEMBlock.maxpool_conv.0.BN"
                                  ".running_mean"], after["mask_decoder.fourier_mask_features.dnc_block_combined"
                                                          ".SEMBlock.maxpool_conv.0.BN.running_mean"])
    path = tmp_path / "trained.safetensors"
    trainer.save(path)
    reloaded = build_robustsam(None, path)
    assert all(torch.equal(reloaded.state_dict()[k], after[k]) for k in after)


def test_trainer_resizes_by_height_and_width_not_batch_and_channels():
    """segment_anything's ResizeLongestSide.apply_image_torch sizes its output from (B, C); a batch of
    four 64x64 images came out 64x48, with the prompts still mapped for 64x64."""
    model = build_robustsam_model(TINY)
    trainer = AntiDegradationTrainer(model)
    images = torch.rand(4, 3, 64, 64)
    x, size = trainer._inputs(images)
    assert size == (64, 64)
    torch.testing.assert_close(x, model.preprocess(images * 255.0), rtol=0, atol=0)
    x, size = trainer._inputs(torch.rand(2, 3, 30, 40))  # longest side to 64, SAM's rounding
    assert size == (48, 64) and x.shape == (2, 3, 64, 64)
    assert (x[..., 48:, :] == 0).all()  # padded below, as SAM's preprocess does


def test_official_mode_trains_sam_decoder_and_detached_targets():
    torch.manual_seed(0)
    model = build_robustsam_model(TINY)
    before = copy.deepcopy(model.state_dict())
    data = ShapesDataset(length=2, height=64, width=64, seed=3)
    batches = PairSampler(data, batch_size=1, seed=0, degradations=["low_light"])
    trainer = AntiDegradationTrainer(model, AntiDegradationConfig(steps=2, train_sam_decoder=True, detach_targets=True,
                                                                  prompt="box"))
    trainer.train(batches, progress=False)
    after = model.state_dict()
    assert not torch.equal(before["mask_decoder.transformer.layers.0.mlp.lin1.weight"],
                           after["mask_decoder.transformer.layers.0.mlp.lin1.weight"])
    assert torch.equal(before["image_encoder.patch_embed.proj.weight"], after["image_encoder.patch_embed.proj.weight"])
    with pytest.raises(ValueError, match="pair 1 of the batch: clear and degraded images differ in size"):
        pair = next(iter(batches))[0]
        small = copy.copy(pair)
        small.clear = pair.clear[:, :32]
        trainer.compute_losses([pair, small])


def test_train_from_options_writes_the_weights_and_a_summary(tmp_path):
    from robustsam_prior.training.options import (
        RobustSamArchOptions,
        RobustSamDataOptions,
        RobustSamLoopOptions,
        RobustSamModelOptions,
        RobustSamTrainConfig,
    )
    from robustsam_prior.training.trainer import train_from_options

    cfg = RobustSamTrainConfig(
        output_dir=str(tmp_path / "run"),
        model=RobustSamModelOptions(arch=RobustSamArchOptions(**{**TINY, "global_attn": (1,)})),
        data=RobustSamDataOptions(degradations=("contrast",)),
        train=RobustSamLoopOptions(steps=2, batch_size=1),
    )
    summary = train_from_options(cfg, progress=False)
    out = tmp_path / "run" / "models" / "final.safetensors"
    assert summary["steps"] == 2 and summary["weights"] == str(out) and out.is_file()
    assert set(summary["last_losses"]) == {"focal", "dice", "token", "feature", "total"}
    model = build_robustsam(None, out)
    assert model.checkpoint_sha256 == summary["sha256"] and model.config.img_size == 64


def test_robust_tokens_start_from_sams_when_asked(tmp_path):
    """model.robust_tokens_from_sam: the robust output tokens and robust_mlp begin as SAM's mask tokens and
    first hypernetwork MLP, so the robust head's single mask starts from SAM's; without it they are the
    official random draw."""
    from robustsam_prior.training.options import (
        RobustSamArchOptions,
        RobustSamDataOptions,
        RobustSamLoopOptions,
        RobustSamModelOptions,
        RobustSamOptimOptions,
        RobustSamTrainConfig,
    )
    from robustsam_prior.training.trainer import train_from_options

    torch.manual_seed(0)
    model = build_robustsam_model(TINY)
    dec = model.mask_decoder
    assert not torch.equal(dec.custom_robust_token.weight, dec.mask_tokens.weight)
    dec.init_robust_tokens_from_sam()
    assert torch.equal(dec.custom_robust_token.weight, dec.mask_tokens.weight)
    sam_mlp, robust_mlp = dec.output_hypernetworks_mlps[0].state_dict(), dec.robust_mlp.state_dict()
    assert sam_mlp.keys() == robust_mlp.keys() and all(torch.equal(sam_mlp[k], robust_mlp[k]) for k in sam_mlp)
    dec.robust_mlp.layers[0].weight.data.add_(1.0)  # a copy, not shared parameters
    assert not torch.equal(dec.robust_mlp.layers[0].weight, dec.output_hypernetworks_mlps[0].layers[0].weight)

    # through a recipe: a vanishing learning rate, so the final weights are the initial ones within 1e-6
    for flag in (True, False):
        out = tmp_path / str(flag)
        cfg = RobustSamTrainConfig(
            output_dir=str(out),
            model=RobustSamModelOptions(arch=RobustSamArchOptions(**{**TINY, "global_attn": (1,)}),
                                        robust_tokens_from_sam=flag),
            data=RobustSamDataOptions(degradations=("contrast",)),
            train=RobustSamLoopOptions(steps=1, batch_size=1),
            optim=RobustSamOptimOptions(lr=1e-9, weight_decay=0.0),
        )
        train_from_options(cfg, progress=False)
        dec = build_robustsam(None, out / "models" / "final.safetensors").mask_decoder
        assert torch.allclose(dec.custom_robust_token.weight, dec.mask_tokens.weight, atol=1e-6) is flag
