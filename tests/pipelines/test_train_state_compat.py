"""State files in the layout each trainer wrote before the training engine existed still resume, bit for bit:
a run stopped after a checkpoint, its state rewritten as the earlier trainer wrote it, and resumed, ends with
the weights of an uninterrupted run. The current layout is the earlier one plus one RNG entry (restoration:
the CUDA states; RobustSAM: Python's state); nothing is renamed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from pipelines.commands.train import load_train_config
from pipelines.config import to_dict
from restore.training import trainer as restore_trainer
from restore.training.trainer import train_restoration
from robustsam_prior.core.checkpoint import read_checkpoint
from robustsam_prior.training import trainer as robustsam_trainer
from robustsam_prior.training.trainer import train_from_options

REPO = Path(__file__).resolve().parents[2]
SMOKE = str(REPO / "pipelines/train_robustsam_smoke.yml")
TINY = ["model.arch.img_size=64", "model.arch.patch=8", "model.arch.dec_depth=1", "model.arch.dec_mlp=64",
        "model.arch.iou_hidden=32", "model.arch.mask_in_chans=8", "train.threads=1"]


def _same_weights(a: Path, b: Path) -> None:
    wa, wb = read_checkpoint(a).state_dict, read_checkpoint(b).state_dict
    assert wa.keys() == wb.keys()
    assert not [k for k in wb if not torch.equal(wa[k], wb[k])]


def test_a_restoration_state_in_the_earlier_layout_resumes_exactly(tmp_path, recipe_factory, one_thread, monkeypatch):
    recipe = recipe_factory(tmp_path, iterations=6, checkpoint_every=2)
    ref_cfg = load_train_config(str(recipe), [f"output_dir={tmp_path / 'ref'}"])
    ref = train_restoration(ref_cfg, resolved_config=to_dict(ref_cfg))
    cfg = load_train_config(str(recipe), [])
    real = restore_trainer.Trainer.checkpoint

    def stops_after_the_step_4_checkpoint(self):
        real(self)
        if self.step == 4:
            raise KeyboardInterrupt("power cut")

    monkeypatch.setattr(restore_trainer.Trainer, "checkpoint", stops_after_the_step_4_checkpoint)
    with pytest.raises(KeyboardInterrupt):
        train_restoration(cfg, resolved_config=to_dict(cfg))
    monkeypatch.undo()
    state_file = Path(cfg.output_dir) / "state" / "latest.pt"
    state = torch.load(state_file, weights_only=True)
    earlier = ("format", "iteration", "model", "ema", "optimizer", "scheduler", "rng", "metrics", "world_size",
               "fingerprint")
    assert sorted(state) == sorted(earlier) and sorted(state["rng"]) == ["cuda", "numpy", "python", "torch"]
    resolved = to_dict(cfg)
    old = {k: state[k] for k in earlier}
    old["rng"] = {k: state["rng"][k] for k in ("torch", "numpy", "python")}
    old["fingerprint"] = json.dumps({"model": resolved["model"], "prior": resolved["prior"], "seed": resolved["seed"],
                                     "batch_size": resolved["train"]["batch_size"], "data": resolved["data"]},
                                    sort_keys=True, default=str)
    assert old["fingerprint"] == state["fingerprint"]
    torch.save(old, state_file)

    resumed = train_restoration(cfg, resume=True, resolved_config=resolved)
    assert resumed["resumed_from"] == 4 and resumed["iterations"] == 6
    assert resumed["rank_parameter_sha256"] == ref["rank_parameter_sha256"]
    _same_weights(Path(cfg.output_dir) / "models" / "final.safetensors", tmp_path / "ref" / "models" / "final.safetensors")
    assert sorted(p.name for p in (Path(cfg.output_dir) / "models").iterdir()) == sorted(
        p.name for p in (tmp_path / "ref" / "models").iterdir())


def test_a_robustsam_state_in_the_earlier_layout_resumes_exactly(tmp_path, monkeypatch, caplog):
    def cfg(out: Path):
        return load_train_config(SMOKE, [*TINY, f"output_dir={out}", "train.steps=4", "train.checkpoint_every=2",
                                         "train.log_every=1"])

    ref = cfg(tmp_path / "ref")
    train_from_options(ref, resolved_config=to_dict(ref), progress=False)
    run = cfg(tmp_path / "run")
    real = robustsam_trainer.AntiDegradationTrainer.step

    def dies_before_step_4(self, batch):
        if self.step_count == 3:
            raise KeyboardInterrupt("power cut")
        return real(self, batch)

    monkeypatch.setattr(robustsam_trainer.AntiDegradationTrainer, "step", dies_before_step_4)
    with pytest.raises(KeyboardInterrupt):
        train_from_options(run, resolved_config=to_dict(run), progress=False)
    monkeypatch.undo()
    state_file = tmp_path / "run" / "state" / "latest.pt"
    state = torch.load(state_file, weights_only=True)
    assert sorted(state) == ["fingerprint", "format", "init_sha256", "rng", "trainer"]
    assert sorted(state["trainer"]) == ["model", "optimizer", "step"] and state["trainer"]["step"] == 2
    assert sorted(state["rng"]) == ["cuda", "numpy", "python", "torch"] and isinstance(state["rng"]["numpy"], str)
    # as the trainer wrote it before: no Python RNG state, the fingerprint's keys in FINGERPRINT_KEYS order
    resolved = to_dict(run)
    del state["rng"]["python"]
    fingerprint = {}
    for key in robustsam_trainer.FINGERPRINT_KEYS:
        value = resolved
        for part in key.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        fingerprint[key] = value
    state["fingerprint"] = json.dumps(fingerprint, default=str)
    torch.save(state, state_file)

    summary = train_from_options(run, resolved_config=resolved, progress=False, resume=True)
    assert summary["resumed_from"] == 2 and summary["steps"] == 4
    assert "differ from the saved run" not in caplog.text
    _same_weights(tmp_path / "run" / "models" / "final.safetensors", tmp_path / "ref" / "models" / "final.safetensors")
    logs = [(tmp_path / d / "log.jsonl").read_text() for d in ("run", "ref")]
    assert logs[0] == logs[1]
