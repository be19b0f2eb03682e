"""Stage 1 (the SAM stage): SAM's losses against hand-worked values, what trains and what gets gradients,
the prompt cycle, and a few steps that lower the loss while the RobustSAM modules stay bit-identical."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from robustsam_prior.data.shapes import ShapesDataset
from robustsam_prior.loading import is_robust_key
from robustsam_prior.modeling.build import build_robustsam_model
from robustsam_prior.training.data import PairSampler
from robustsam_prior.training.losses import LossWeights, sam_stage_losses
from robustsam_prior.training.trainer import SAM_MIXED_PROMPTS, AntiDegradationConfig, SamStageTrainer

TINY = dict(img_size=64, patch=8, enc_dim=32, enc_depth=2, enc_heads=2, global_attn=[1], window=4,
            prompt_dim=64, dec_depth=1, dec_mlp=64, dec_heads=2, iou_hidden=32, mask_in_chans=8)


def test_sam_stage_losses_hand_worked():
    gt = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    zeros = torch.zeros(1, 2, 2)  # p = 0.5 everywhere
    terms = sam_stage_losses(zeros, torch.tensor([0.3]), gt)
    # focal: 0.25 * 0.5^2 * ln 2 per pixel; Dice: 1 - (2 * 0.5) / (2 + 1); IoU of an empty mask: 0
    assert terms["focal"].item() == pytest.approx(20 * 0.25 * 0.25 * math.log(2), rel=1e-6)
    assert terms["dice"].item() == pytest.approx(2 / 3, rel=1e-5)
    assert terms["iou"].item() == pytest.approx(0.3**2, rel=1e-6)
    assert terms["total"].item() == pytest.approx(sum(terms[k].item() for k in ("focal", "dice", "iou")))

    # three masks: the mask loss is the best channel's (the exact one), the IoU loss covers all three
    exact = torch.where(gt > 0, 20.0, -20.0)
    logits = torch.stack([zeros[0], exact, -exact])
    terms = sam_stage_losses(logits, torch.tensor([1.0, 1.0, 1.0]), gt, LossWeights(iou=2.0))
    assert terms["focal"].item() < 1e-6 and terms["dice"].item() < 1e-6
    # IoU targets (0, 1, 0): 2 * mean((1-0)^2, 0, (1-0)^2)
    assert terms["iou"].item() == pytest.approx(2 * 2 / 3, rel=1e-6)
    with pytest.raises(ValueError, match="do not match"):
        sam_stage_losses(zeros, torch.tensor([0.3, 0.1]), gt)
    with pytest.raises(ValueError, match="do not match"):
        sam_stage_losses(zeros, torch.tensor([0.3]), torch.zeros(3, 2))


def _trainer(prompt="mixed", lr=1e-3):
    torch.manual_seed(0)
    model = build_robustsam_model(TINY)
    return SamStageTrainer(model, AntiDegradationConfig(lr=lr, prompt=prompt, bn_mode="batch"))


def _batches(seed=0):
    data = ShapesDataset(length=4, height=64, width=64, seed=seed)
    return iter(PairSampler(data, batch_size=2, seed=seed, degradations=(), include_identity=True, num_points=3))


def test_stage1_trains_everything_but_the_robust_modules_and_every_trainable_part_gets_gradients():
    trainer = _trainer()
    names = dict(trainer.model.named_parameters())
    assert set(trainer.trainable) == {n for n in names if not is_robust_key(n)}
    assert any(n.startswith("image_encoder.") for n in trainer.trainable)
    batches = _batches()
    got = set()
    for step, kind in enumerate(SAM_MIXED_PROMPTS):  # one of each prompt kind
        trainer.step_count = step
        assert trainer.step_prompt(SAM_MIXED_PROMPTS) == kind
        trainer.model.zero_grad(set_to_none=True)
        trainer.compute_losses(next(batches))["total"].backward()
        got |= {n for n, p in names.items() if p.grad is not None and p.grad.abs().sum() > 0}
    assert not {n for n in got if is_robust_key(n)}
    # no mask prompt and no negative point are given, so the prompt encoder's mask branch and negative-point
    # embedding go without a gradient; of the three multimask outputs (hypernetwork MLPs 1-3) only the best
    # one of each prompt trains (2 prompts here)
    unused = ("prompt_encoder.mask_downscaling.", "prompt_encoder.point_embeddings.0.")
    missing = set(trainer.trainable) - got
    assert {n for n in missing if n.startswith(unused[0])} and "prompt_encoder.point_embeddings.0.weight" in missing
    rest = {n for n in missing if not n.startswith(unused)}
    mlps = {n.split(".")[2] for n in rest if n.startswith("mask_decoder.output_hypernetworks_mlps.")}
    assert len(rest) == 6 * len(mlps) and mlps <= {"1", "2", "3"} and len(mlps) <= 2, sorted(rest)


def test_stage1_steps_lower_the_loss_and_leave_robust_modules_untouched():
    trainer = _trainer(prompt="box", lr=3e-3)
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    batch = next(_batches())
    history = trainer.train(itertools.repeat(batch), steps=12, progress=False)  # fit one batch
    assert all(math.isfinite(h["total"]) for h in history)
    assert set(history[0]) == {"focal", "dice", "iou", "total"}
    assert history[-1]["total"] < 0.6 * history[0]["total"], [round(h["total"], 3) for h in history]
    after = trainer.model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and not {k for k in changed if is_robust_key(k)}
    assert "image_encoder.patch_embed.proj.weight" in changed
    assert not trainer.model.training  # back in eval mode


def test_mixed_prompt_cycle_depends_only_on_the_step():
    trainer = _trainer()
    kinds = []
    for step in range(7):
        trainer.step_count = step
        kinds.append(trainer.step_prompt(SAM_MIXED_PROMPTS))
    assert kinds == ["point", "box", "points", "point", "box", "points", "point"]
    trainer.step_count = 5
    assert trainer.step_prompt() == "box"  # stage 2's cycle: points, box
    assert _trainer(prompt="box").step_prompt(SAM_MIXED_PROMPTS) == "box"
    with pytest.raises(ValueError, match="prompt must be one of"):
        AntiDegradationConfig(prompt="scribble")


def test_several_instances_per_image_are_distinct_and_each_prompted():
    from robustsam_prior.training.data import make_pair

    scene = ShapesDataset(length=1, height=64, width=64, seed=2)[0]
    assert len(scene.masks) >= 3
    rng = np.random.default_rng(0)
    pair = make_pair(scene.image, scene.masks, degradations=(), include_identity=True, instances=3, rng=rng)
    assert len(pair.others) == 2
    chosen = [pair.mask.numpy()] + [m.numpy() for m, _, _ in pair.others]
    index = [next(i for i, s in enumerate(scene.masks) if np.array_equal(s, c > 0)) for c in chosen]
    assert len(set(index)) == 3  # without replacement
    for m, pts, box in pair.others:
        assert all(m[int(y), int(x)] for x, y in pts)
        ys, xs = np.nonzero(m.numpy())
        assert box[0] <= xs.max() and box[2] >= xs.min()
    many = make_pair(scene.image, scene.masks, degradations=(), instances=50, rng=rng)
    assert len(many.others) == len(scene.masks) - 1  # at most every instance once
    one = make_pair(scene.image, scene.masks, degradations=(), rng=np.random.default_rng(0))
    assert one.others == []
    with pytest.raises(ValueError, match="no degradations"):
        make_pair(scene.image, scene.masks, degradations=("fog",), instances=2, rng=rng)

    # stage 1's loss is the mean over every prompt of the batch: here the pair's three instances
    trainer = _trainer(prompt="box")
    with torch.no_grad():
        together = trainer.compute_losses([pair])["total"]
        alone = []
        for m, pts, box in [(pair.mask, pair.points, pair.box), *pair.others]:
            single = make_pair(scene.image, scene.masks, degradations=(), rng=np.random.default_rng(0))
            single.mask, single.points, single.box = m, pts, box
            alone.append(trainer.compute_losses([single])["total"])
    torch.testing.assert_close(together, torch.stack(alone).mean())
