"""robustsam-tiny's two recipes end to end through the CLI on a tiny architecture: pseudo-masks writes the
data, stage 1 trains SAM's parts, stage 2 starts from its checkpoint and trains only the RobustSAM modules;
both resume bit-identically; the segmentation benchmark scores the result against the clean-image masks
with the regions, SAM-path and RobustSAM-path rows, and the leaderboard shows them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from pipelines.cli import main
from pipelines.commands.train import load_train_config
from pipelines.config import ConfigError
from robustsam_prior.core.checkpoint import read_checkpoint
from robustsam_prior.loading import is_robust_key

REPO = Path(__file__).resolve().parents[2]
STAGE1 = str(REPO / "pipelines/train_robustsam_tiny_stage1.yml")
STAGE2 = str(REPO / "pipelines/train_robustsam_tiny_stage2.yml")
ARCH = dict(img_size=64, patch=8, enc_dim=32, enc_depth=2, enc_heads=2, global_attn="[1]", window=4, prompt_dim=64,
            dec_depth=1, dec_mlp=64, dec_heads=2, iou_hidden=32, mask_in_chans=8)
SMALL = ["train.batch_size=2", "train.checkpoint_every=2", "train.log_every=1", "train.threads=1"]


def _invoke(*args: str) -> str:
    result = CliRunner().invoke(main, list(args))
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("pseudo") / "set"
    text = _invoke("pseudo-masks", str(root), "--shapes", "4", "--size", "64", "--prefix", "shapes")
    assert "4 scenes" in text
    _invoke("pseudo-masks", str(root), "--images", "pkg://skimage.data", "--include", "coins.png", "--size", "64",
            "--crops", "1", "--prefix", "pkg")
    assert len(list((root / "masks").glob("*.png"))) == 6
    return root


def _stage1(out: Path, data: Path, steps: int, *extra: str) -> str:
    arch = ["model.variant=null", *(f"model.arch.{k}={v}" for k, v in ARCH.items())]
    return _invoke("train", STAGE1, *arch, f"data.images_dir={data / 'images'}", f"data.masks_dir={data / 'masks'}",
                   *SMALL, f"train.steps={steps}", f"output_dir={out}", *extra)


def _stage2(out: Path, data: Path, init: Path, steps: int, *extra: str) -> str:
    return _invoke("train", STAGE2, f"model.checkpoint={init}", f"data.images_dir={data / 'images'}",
                   f"data.masks_dir={data / 'masks'}", "data.degradations=[fog, gaussian_noise, zoom_blur]",
                   *SMALL, f"train.steps={steps}", f"output_dir={out}", *extra)


def _same(a: Path, b: Path) -> None:
    wa, wb = read_checkpoint(a).state_dict, read_checkpoint(b).state_dict
    assert wa.keys() == wb.keys()
    assert not [k for k in wa if not torch.equal(wa[k], wb[k])]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, data) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("runs")
    text = _stage1(root / "s1", data, 4)
    assert "trained SAM's encoders and mask decoder (stage 1) for 4 steps" in text
    s1 = root / "s1" / "models" / "final.safetensors"
    text = _stage2(root / "s2", data, s1, 4)
    assert "trained RobustSAM's anti-degradation modules for 4 steps" in text
    return {"root": root, "s1": s1, "s2": root / "s2" / "models" / "final.safetensors"}


def test_stage1_trains_sam_parts_and_resumes_exactly(runs, data):
    log = [json.loads(line) for line in (runs["root"] / "s1" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3, 4] and set(log[0]) == {"step", "focal", "dice", "iou", "total"}
    out = runs["root"] / "s1_resumed"
    _stage1(out, data, 2)
    text = _stage1(out, data, 4, "--resume")
    assert "resumed at step 2" in text
    _same(out / "models" / "final.safetensors", runs["s1"])


def test_stage2_freezes_the_stage1_model_and_resumes_exactly(runs, data):
    s1, s2 = read_checkpoint(runs["s1"]).state_dict, read_checkpoint(runs["s2"]).state_dict
    changed = {k for k in s1 if not torch.equal(s1[k], s2[k])}
    assert changed and all(is_robust_key(k) for k in changed)  # the SAM path is the stage-1 model, bit for bit
    assert any(k.startswith("mask_decoder.fourier_first_layer_features.") for k in changed)
    recipe = read_checkpoint(runs["s2"]).metadata["recipe"]
    assert recipe["train"]["stage"] == "robust" and recipe["model"]["checkpoint"] == str(runs["s1"])
    out = runs["root"] / "s2_resumed"
    _stage2(out, data, runs["s1"], 2)
    _stage2(out, data, runs["s1"], 4, "--resume")
    _same(out / "models" / "final.safetensors", runs["s2"])


def test_benchmark_table_has_the_three_rows_and_the_box_floor_and_reaches_the_leaderboard(runs, data, tmp_path):
    results = tmp_path / "seg.jsonl"
    text = _invoke("benchmark", "segmentation", "--dataset", str(data), "--segmenters", "regions,sam,robustsam,box",
                   "--checkpoint", str(runs["s2"]), "--degradations", "fog,gaussian_noise", "--severities", "3",
                   "--out", str(results))
    rows = [json.loads(line) for line in results.read_text().splitlines()]
    got = {(r["method"], r["degradation"]) for r in rows}
    assert got == {(m, c) for m in ("regions", "sam", "robustsam", "box") for c in ("clear", "fog", "gaussian_noise")}
    assert all(0.0 <= r["metrics"]["iou"] <= 1.0 and r["count"] > 0 for r in rows)
    assert len({r["count"] for r in rows}) == 1  # every segmenter answered the same prompts
    sam_rows = [r for r in rows if r["method"] in ("sam", "robustsam")]
    assert {r["checkpoint_sha256"] for r in sam_rows} == {read_checkpoint(runs["s2"]).sha256}
    assert "robustsam" in text
    board = tmp_path / "board"
    _invoke("leaderboard", str(results), "--out", str(board))
    md = (board / "leaderboard.md").read_text()
    # the box floor: photometric degradations do not move the masks, so it scores the same everywhere
    box = [r["metrics"]["iou"] for r in rows if r["method"] == "box"]
    assert max(box) == min(box) > 0
    for label in ("regions (box)", "sam (box)", "robustsam (box)", "box (box)"):
        assert label in md
    assert "fog-3" in md and "average" in md


def test_benchmark_takes_the_tiny_variant_by_name(data, tmp_path):
    from robustsam_prior.loading import build_robustsam, save_robustsam

    torch.manual_seed(0)
    ckpt = tmp_path / "tiny.safetensors"
    save_robustsam(build_robustsam("robustsam-tiny"), ckpt)
    results = tmp_path / "seg.jsonl"
    _invoke("benchmark", "segmentation", "--dataset", str(data), "--segmenters", "sam", "--model-config",
            "robustsam-tiny", "--checkpoint", str(ckpt), "--degradations", "none", "--out", str(results))
    assert len(results.read_text().splitlines()) == 1
    result = CliRunner().invoke(main, ["benchmark", "segmentation", "--dataset", str(data), "--segmenters", "sam",
                                       "--model-config", "vit_b", "--checkpoint", str(ckpt), "--degradations",
                                       "none", "--out", str(results)])
    assert result.exit_code != 0 and "tiny.safetensors" in result.output


def test_stage1_config_refuses_degradations(data, runs):
    where = [f"data.images_dir={data / 'images'}", f"data.masks_dir={data / 'masks'}"]
    with pytest.raises(ConfigError, match=r"data\.degradations: train\.stage sam trains on clean images"):
        load_train_config(STAGE1, [*where, "data.degradations=null"])
    with pytest.raises(ConfigError, match=r"data\.degradations: train\.stage sam"):
        load_train_config(STAGE1, [*where, "data.degradations=[fog]"])
    assert load_train_config(STAGE1, where).train.stage == "sam"
    cfg = load_train_config(STAGE2, [*where, f"model.checkpoint={runs['s1']}"])
    assert cfg.train.stage == "robust" and cfg.data.degradations is None and not cfg.train.train_sam_decoder


def test_stage1_checkpoint_loads_without_the_untrained_fourier_warning(runs, caplog):
    """Its RobustSAM modules are untrained by design; the warning is for files that claim to be trained."""
    import logging

    from robustsam_prior.loading import build_robustsam

    with caplog.at_level(logging.WARNING, logger="robustsam_prior.loading"):
        build_robustsam(None, runs["s1"])
    assert not [r for r in caplog.records if "look untrained" in r.getMessage()]


def test_several_instances_only_in_stage1(data, runs):
    where = [f"data.images_dir={data / 'images'}", f"data.masks_dir={data / 'masks'}"]
    assert load_train_config(STAGE1, where).data.instances == 8
    with pytest.raises(ConfigError, match=r"data\.instances: train\.stage robust prompts one instance"):
        load_train_config(STAGE2, [*where, f"model.checkpoint={runs['s1']}", "data.instances=4"])
