"""The paper's downstream protocol recipes end to end, through the command line: RobustSAM masks cached once
per image with ``prior-cache`` on GoPro-/RESIDE-layout folders, then ``train`` reading only that cache
(``prior.cache_only``), with a tiny random-weights RobustSAM checkpoint and tiny images made here."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from pipelines.cli import main
from robustsam_prior.core.io import write_image

REPO = Path(__file__).resolve().parents[2]
TINY = {
    "img_size": 64, "patch": 16, "enc_dim": 32, "enc_depth": 1, "enc_heads": 2, "global_attn": [0],
    "window": 2, "prompt_dim": 64, "dec_depth": 1, "dec_mlp": 64, "dec_heads": 2, "iou_hidden": 32,
    "mask_in_chans": 16,
}  # fmt: skip
# the full-size recipes shrunk to CPU seconds; data, prior and cache settings stay the recipe's
SMALL = [
    "model.arch_kwargs={width: 8, enc_blocks: [1], middle_blocks: 1, dec_blocks: [1], region_dropout: 0.5}",
    "data.train.crop_size=32", "train.iterations=2", "train.batch_size=2", "train.val_every=2",
    "train.checkpoint_every=2", "train.log_every=1", "train.num_workers=0", "train.device=cpu", "train.threads=1",
    "train.tensorboard=false", "train.ema.decay=0.9", "train.scheduler.warmup_iters=0",
]
PRIOR = ["--prior", "robustsam", "--prior-option", "points_per_side=4"]


@pytest.fixture
def tiny_checkpoint(tmp_path):
    from robustsam_prior import build_robustsam
    from robustsam_prior.core.checkpoint import save_checkpoint

    torch.manual_seed(0)
    path = tmp_path / "tiny_robustsam.safetensors"
    save_checkpoint(path, build_robustsam(TINY).state_dict(), {"config": TINY})
    return path


def _scene(rng: np.random.Generator, h: int = 48, w: int = 64) -> np.ndarray:
    img = rng.uniform(0.1, 0.9, (4, 4, 3)).repeat(h // 4, 0).repeat(w // 4, 1)
    return np.clip(img + rng.normal(0, 0.02, img.shape), 0, 1).astype(np.float32)


def make_gopro(root: Path, n_train: int = 3, n_test: int = 2) -> None:
    """NAFNet's prepared GoPro layout: blur_crops/sharp_crops and test input/target, same file names."""
    rng = np.random.default_rng(1)
    for split, lq_name, gt_name, n in (("train", "blur_crops", "sharp_crops", n_train),
                                       ("test", "input", "target", n_test)):
        for i in range(n):
            sharp = _scene(rng)
            blurred = (sharp + np.roll(sharp, 2, axis=1) + np.roll(sharp, 4, axis=1)) / 3
            name = f"GOPR0372_07_00-{i:06d}_s001.png"
            write_image(root / "datasets/GoPro" / split / gt_name / name, sharp)
            write_image(root / "datasets/GoPro" / split / lq_name / name, blurred)


def make_reside(root: Path) -> None:
    """RESIDE's naming: ITS/hazy/<id>_<k>_<beta>.png against ITS/clear/<id>.png; SOTS/indoor/hazy and gt."""
    rng = np.random.default_rng(2)
    base = root / "datasets/RESIDE"
    for folder, gt_folder, ids, per_id in (("ITS/hazy", "ITS/clear", (1, 2), 2),
                                           ("SOTS/indoor/hazy", "SOTS/indoor/gt", (1400,), 1)):
        for i in ids:
            clear = _scene(rng)
            write_image(base / gt_folder / f"{i}.png", clear)
            for k in range(1, per_id + 1):
                t = 0.4 + 0.1 * k
                write_image(base / folder / f"{i}_{k}_0.{k}5.png", clear * t + 0.9 * (1 - t))


def _cli(args: list[str]):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def _cache(folder: str, cache: str, ckpt: Path) -> dict:
    res = _cli(["prior-cache", folder, *PRIOR, "--prior-checkpoint", ckpt, "--cache", cache, "--json"])
    assert res.exit_code == 0, res.output
    return json.loads(res.output.strip().splitlines()[-1])


def _entries(cache: Path) -> list[Path]:
    return sorted(p for p in cache.rglob("*.safetensors") if not p.name.startswith("."))


@pytest.fixture
def prior_never_runs(monkeypatch):
    """During training the RobustSAM prior must only be read from the cache."""
    from robustsam_prior.priors.segment_anything_prior import _SegmentAnythingPrior

    def refuse(self, image):
        raise AssertionError("the prior ran during training; it should have been read from the cache")

    def arm():
        monkeypatch.setattr(_SegmentAnythingPrior, "run_one", refuse)

    return arm


def _train(recipe: str, ckpt: Path, out: str, *extra: str):
    return _cli(["train", REPO / "pipelines" / recipe, *SMALL, f"output_dir={out}",
                 f"prior.options.checkpoint={ckpt}", "prior.options.points_per_side=4", *extra])


def _check_run(out: Path, prior_name: str = "robustsam") -> dict:
    from robustsam_prior.core.checkpoint import read_checkpoint

    assert (out / "models/final.safetensors").is_file()
    meta = read_checkpoint(out / "models/final.safetensors").metadata
    prior = meta["prior"] if isinstance(meta["prior"], dict) else json.loads(meta["prior"])
    assert prior["name"] == prior_name and prior["options"]["points_per_side"] == 4
    # the sha256 of the prior's weights, which inference compares with the weights it runs
    checkpoint = Path(prior["options"]["checkpoint"])
    assert prior["checkpoint_sha256"] == hashlib.sha256(checkpoint.read_bytes()).hexdigest()
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    val = [r for r in records if "val/psnr" in r]
    assert val and np.isfinite(val[-1]["val/psnr"])
    return meta


def test_gopro_protocol_prior_cache_then_train_from_the_cache(tmp_path, monkeypatch, tiny_checkpoint,
                                                              prior_never_runs):
    monkeypatch.chdir(tmp_path)
    make_gopro(tmp_path)
    cache = "datasets/GoPro/prior_cache_robustsam"  # the recipe's cache_dir
    assert _cache("datasets/GoPro/train/blur_crops", cache, tiny_checkpoint)["computed"] == 3
    assert _cache("datasets/GoPro/test/input", cache, tiny_checkpoint)["computed"] == 2
    before = _entries(tmp_path / cache)
    assert len(before) == 5

    prior_never_runs()
    res = _train("train_deblur_gopro_robustsam.yml", tiny_checkpoint, "runs/first")
    assert res.exit_code == 0, res.output
    _check_run(tmp_path / "runs/first")
    assert _entries(tmp_path / cache) == before  # nothing computed, nothing added

    # fine-tuning from earlier weights (model.init), the same cache
    res = _train("train_deblur_gopro_robustsam.yml", tiny_checkpoint, "runs/second",
                 f"model.init={tmp_path / 'runs/first/models/final.safetensors'}")
    assert res.exit_code == 0, res.output
    _check_run(tmp_path / "runs/second")


def test_gopro_protocol_refuses_an_image_missing_from_the_cache(tmp_path, monkeypatch, tiny_checkpoint,
                                                                prior_never_runs):
    monkeypatch.chdir(tmp_path)
    make_gopro(tmp_path)
    cache = "datasets/GoPro/prior_cache_robustsam"
    _cache("datasets/GoPro/test/input", cache, tiny_checkpoint)  # the training crops were never cached
    prior_never_runs()
    res = CliRunner().invoke(main, ["train", str(REPO / "pipelines/train_deblur_gopro_robustsam.yml"), *SMALL,
                                    "output_dir=runs/x", f"prior.options.checkpoint={tiny_checkpoint}",
                                    "prior.options.points_per_side=4"])
    assert res.exit_code == 1
    assert "data.train: datasets/GoPro/train/blur_crops/GOPR0372_07_00-" in res.output
    assert "robustsam-restore prior-cache datasets/GoPro/train/blur_crops --prior robustsam" in res.output

    # a cache made with other prior options has other keys: the same error, not another prior's masks
    _cli(["prior-cache", "datasets/GoPro/train/blur_crops", *PRIOR[:2], "--prior-option", "points_per_side=2",
          "--prior-checkpoint", tiny_checkpoint, "--cache", cache])
    res = _train("train_deblur_gopro_robustsam.yml", tiny_checkpoint, "runs/y")
    assert res.exit_code == 1 and "no robustsam prior in the prior cache" in res.output


def test_cache_only_needs_a_cache_dir(tmp_path, monkeypatch):
    from pipelines.commands.train import load_train_config
    from pipelines.config import ConfigError

    monkeypatch.chdir(tmp_path)
    make_gopro(tmp_path)
    with pytest.raises(ConfigError, match="prior.cache_only: needs cache_dir"):
        load_train_config(str(REPO / "pipelines/train_deblur_gopro_robustsam.yml"), ["prior.cache_dir=null"])


def test_reside_protocol_prior_cache_then_train_from_the_cache(tmp_path, monkeypatch, tiny_checkpoint,
                                                               prior_never_runs):
    monkeypatch.chdir(tmp_path)
    make_reside(tmp_path)
    cache = "datasets/RESIDE/prior_cache_robustsam"
    assert _cache("datasets/RESIDE/ITS/hazy", cache, tiny_checkpoint)["computed"] == 4
    assert _cache("datasets/RESIDE/SOTS/indoor/hazy", cache, tiny_checkpoint)["computed"] == 1
    before = _entries(tmp_path / cache)

    prior_never_runs()
    res = _train("train_dehaze_reside_robustsam.yml", tiny_checkpoint, "runs/dehaze")
    assert res.exit_code == 0, res.output
    meta = _check_run(tmp_path / "runs/dehaze")
    assert meta["task"] == "dehaze"
    assert _entries(tmp_path / cache) == before
