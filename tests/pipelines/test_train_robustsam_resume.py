"""``kind: robustsam`` runs lose nothing when stopped: the log is appended as steps are logged,
checkpoints rotate, and a run interrupted (in process, or by a real SIGKILL) and resumed with
``--resume`` ends with the same weights, bit for bit, as an uninterrupted one. On folder data with
images of three sizes, one mask without an instance, and a geometric degradation."""

from __future__ import annotations

import json
import logging
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from pipelines.cli import main
from pipelines.commands.train import load_train_config
from pipelines.config import to_dict
from robustsam_prior.core.checkpoint import CheckpointError, read_checkpoint
from robustsam_prior.training import trainer as trainer_mod
from robustsam_prior.training.trainer import load_training_state, train_from_options

REPO = Path(__file__).resolve().parents[2]
SMOKE = str(REPO / "pipelines/train_robustsam_smoke.yml")
TINY = ["model.arch.img_size=64", "model.arch.patch=8", "model.arch.dec_depth=1", "model.arch.dec_mlp=64",
        "model.arch.iou_hidden=32", "model.arch.mask_in_chans=8", "data.degradations=[gaussian_noise, elastic_transform]",
        "train.threads=1"]


@pytest.fixture(scope="module")
def folder_data(tmp_path_factory) -> list[str]:
    """Three images (40x30, 32x32, 24x36) with label masks, and one whose mask is all background."""
    root = tmp_path_factory.mktemp("scenes")
    (root / "images").mkdir()
    (root / "masks").mkdir()
    rng = np.random.default_rng(5)
    for name, (h, w) in {"a": (30, 40), "b": (32, 32), "c": (36, 24), "d": (20, 20)}.items():
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(root / "images" / f"{name}.png")
        labels = np.zeros((h, w), np.uint16)
        if name != "d":
            labels[h // 4:, : w // 2] = 1000
            labels[: h // 2, w // 2:] = 7
        Image.fromarray(labels).save(root / "masks" / f"{name}.png")
    return ["data.source=folder", f"data.images_dir={root / 'images'}", f"data.masks_dir={root / 'masks'}"]


def _cfg(out: Path, data: list[str], *extra: str):
    return load_train_config(SMOKE, [*TINY, *data, f"output_dir={out}", "train.steps=6", "train.checkpoint_every=2",
                                     "train.keep_checkpoints=2", "train.log_every=1", *extra])


def _run(cfg, **kwargs):
    return train_from_options(cfg, resolved_config=to_dict(cfg), progress=False, **kwargs)


def _log(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]


def _assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = read_checkpoint(a).state_dict, read_checkpoint(b).state_dict
    assert wa.keys() == wb.keys()
    different = [k for k in wb if not torch.equal(wa[k], wb[k])]
    assert not different, different[:5]


@pytest.fixture(scope="module")
def reference(tmp_path_factory, folder_data) -> Path:
    out = tmp_path_factory.mktemp("ref") / "run"
    summary = _run(_cfg(out, folder_data))
    assert summary["steps"] == 6 and summary["resumed_from"] is None
    return out


def test_interrupted_run_resumes_bit_identical(tmp_path, folder_data, reference, monkeypatch):
    out = tmp_path / "run"
    real_step = trainer_mod.AntiDegradationTrainer.step

    def dies_before_step_4(self, batch):
        if self.step_count == 3:
            raise KeyboardInterrupt("power cut")
        return real_step(self, batch)

    monkeypatch.setattr(trainer_mod.AntiDegradationTrainer, "step", dies_before_step_4)
    with pytest.raises(KeyboardInterrupt):
        _run(_cfg(out, folder_data))
    monkeypatch.undo()
    # what the stopped run left: every logged step, the step-2 checkpoint and its state, no final weights
    assert [r["step"] for r in _log(out)] == [1, 2, 3]
    assert sorted(p.name for p in (out / "models").iterdir()) == ["step_0000002.safetensors"]
    assert load_training_state(out / "state" / "latest.pt")["trainer"]["step"] == 2
    assert not (out / "summary.json").exists()
    with open(out / "log.jsonl", "a") as f:
        f.write('{"step": 4, "focal": 0.')  # a line cut short by the kill

    summary = _run(_cfg(out, folder_data), resume=True)
    assert summary["resumed_from"] == 2 and summary["steps"] == 6
    _assert_same_weights(out / "models" / "final.safetensors", reference / "models" / "final.safetensors")
    assert _log(out) == _log(reference)  # step 3 logged once, and every loss term identical
    a, b = load_training_state(out / "state" / "latest.pt"), load_training_state(reference / "state" / "latest.pt")
    for i, s in b["trainer"]["optimizer"]["state"].items():
        assert torch.equal(a["trainer"]["optimizer"]["state"][i]["exp_avg_sq"], s["exp_avg_sq"])
    assert a["rng"]["numpy"] == b["rng"]["numpy"]
    # rotation: the last keep_checkpoints=2 periodic files, each the weights of its step
    assert sorted(p.name for p in (out / "models").iterdir()) == [
        "final.safetensors", "step_0000004.safetensors", "step_0000006.safetensors"]
    _assert_same_weights(out / "models" / "step_0000006.safetensors", out / "models" / "final.safetensors")
    step4 = read_checkpoint(out / "models" / "step_0000004.safetensors")
    assert step4.metadata["step"] == 4 and step4.metadata["training"]["steps_done"] == 4
    final = read_checkpoint(out / "models" / "final.safetensors").state_dict
    assert any(not torch.equal(v, final[k]) for k, v in step4.state_dict.items())


def test_resume_checks_the_state_and_the_config(tmp_path, folder_data, reference, caplog):
    run = tmp_path / "run"
    shutil.copytree(reference, run)
    with pytest.raises(CheckpointError, match="trains other parameters than this config"):
        _run(_cfg(run, folder_data, "train.train_sam_decoder=true"), resume=True)
    other = run / "models" / "step_0000004.safetensors"
    with pytest.raises(CheckpointError, match=r"the run started from weights with sha256 None, but model.checkpoint is "
                                              r"now .*step_0000004.safetensors"):
        _run(_cfg(run, folder_data, f"model.checkpoint={other}", "model.arch=null"), resume=True)
    with caplog.at_level(logging.WARNING, logger="robustsam_prior.training.trainer"):
        summary = _run(_cfg(run, folder_data, "seed=1", "train.steps=7"), resume=True)  # a finished run goes on
    assert any("differ from the saved run (seed)" in r.getMessage() for r in caplog.records)
    assert summary["resumed_from"] == 6 and summary["steps"] == 7
    assert [r["step"] for r in _log(run)] == list(range(1, 8))

    state = run / "state" / "latest.pt"
    state.write_bytes(b"PK\x03\x04 torn")
    with pytest.raises(CheckpointError, match=r"latest.pt: unreadable training state"):
        load_training_state(state)
    torch.save({"step": 3}, state)
    with pytest.raises(CheckpointError, match=r"latest.pt: not a RobustSAM training state"):
        load_training_state(state)
    with pytest.raises(FileNotFoundError, match="no training state to resume from"):
        load_training_state(tmp_path / "nowhere.pt")


def test_cli_refuses_to_overwrite_and_needs_a_state_to_resume(tmp_path, folder_data, reference, monkeypatch):
    monkeypatch.chdir(REPO)
    runner = CliRunner()
    r = runner.invoke(main, ["train", SMOKE, *TINY, *folder_data, f"output_dir={reference}"])
    assert r.exit_code == 1 and "already holds a run (state/latest.pt); pass --resume to continue it" in r.output
    old = tmp_path / "old"  # a run from before states were written: only its final weights
    (old / "models").mkdir(parents=True)
    shutil.copy(reference / "models" / "final.safetensors", old / "models")
    r = runner.invoke(main, ["train", SMOKE, f"output_dir={old}"])
    assert r.exit_code == 1 and "already holds a run (models/final.safetensors)" in r.output
    r = runner.invoke(main, ["train", SMOKE, f"output_dir={tmp_path / 'new'}", "--resume"])
    assert r.exit_code == 1 and f"--resume: no training state at {tmp_path / 'new' / 'state' / 'latest.pt'}" in r.output
    r = runner.invoke(main, ["train", SMOKE, *TINY, "data.source=folder", f"data.images_dir={tmp_path}",
                             f"data.masks_dir={tmp_path}", f"output_dir={tmp_path / 'empty'}"])
    assert r.exit_code == 1 and f"images folder {tmp_path}: no image files match" in r.output
    assert "Traceback" not in r.output


@pytest.mark.slow
def test_sigkill_and_resume_reaches_identical_weights(tmp_path, folder_data, cli_script, subprocess_env, kill_when):
    out, ref = tmp_path / "killed", tmp_path / "ref"
    args = ["train", SMOKE, *TINY, *folder_data, "train.steps=12", "train.checkpoint_every=2", "train.log_every=1"]
    state = out / "state" / "latest.pt"
    kill_when([sys.executable, str(cli_script), *args, f"output_dir={out}"], subprocess_env, state)
    killed_at = load_training_state(state)["trainer"]["step"]
    assert 2 <= killed_at < 12 and killed_at % 2 == 0
    assert [r["step"] for r in _log(out)][:killed_at] == list(range(1, killed_at + 1))  # flushed as it went

    runner = CliRunner()
    r = runner.invoke(main, [*args, f"output_dir={out}", "--resume"])
    assert r.exit_code == 0 and f"(resumed at step {killed_at})" in r.output, r.output
    r = runner.invoke(main, [*args, f"output_dir={ref}"])
    assert r.exit_code == 0, r.output
    _assert_same_weights(out / "models" / "final.safetensors", ref / "models" / "final.safetensors")
    assert _log(out) == _log(ref)
