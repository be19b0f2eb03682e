"""Exact resume: SIGKILL a real training process after a checkpoint, resume, compare with an
uninterrupted run; interrupted writes never replace a good checkpoint."""

from __future__ import annotations

import json
import sys

import pytest
import torch

from pipelines.commands.train import load_train_config
from pipelines.config import to_dict
from restore.training import trainer as trainer_mod
from restore.training.state import load_state
from restore.training.trainer import train_restoration
from robustsam_prior.core.checkpoint import read_checkpoint


def _log(run):
    recs = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "it_per_s"} for r in recs]


def _weights(path):
    return read_checkpoint(path).state_dict


@pytest.mark.slow
def test_kill_and_resume_reaches_identical_parameters(tmp_path, recipe_factory, cli_script, subprocess_env, one_thread,
                                                     kill_when):
    recipe = recipe_factory(tmp_path, iterations=150, checkpoint_every=10)
    # the run that gets killed: a real process, SIGKILLed as soon as its first checkpoint exists
    killed_dir = tmp_path / "killed"
    cmd = [sys.executable, str(cli_script), "train", str(recipe), f"output_dir={killed_dir}"]
    state_file = killed_dir / "state" / "latest.pt"
    kill_when(cmd, subprocess_env, state_file)
    assert not (killed_dir / "summary.json").exists()
    killed_at = load_state(state_file)["iteration"]
    assert 10 <= killed_at < 150 and killed_at % 10 == 0
    with open(killed_dir / "log.jsonl", "a") as f:  # what the killed run logged after its checkpoint
        f.write(json.dumps({"iteration": killed_at + 10, "loss_mean": 1.0}) + "\n")
        f.write('{"iteration": ' + str(killed_at + 20) + ', "loss_mean": 0.')  # a line cut short by the kill

    # resume in this process (same code path as `train --resume`)
    cfg = load_train_config(str(recipe), [f"output_dir={killed_dir}"])
    resumed = train_restoration(cfg, resume=True, resolved_config=to_dict(cfg))
    assert resumed["resumed_from"] == killed_at and resumed["iterations"] == 150

    ref_cfg = load_train_config(str(recipe), [f"output_dir={tmp_path / 'ref'}"])
    ref = train_restoration(ref_cfg, resolved_config=to_dict(ref_cfg))
    # bit-identical raw parameters, EMA weights and optimizer moments
    a, b = load_state(killed_dir / "state" / "latest.pt"), load_state(tmp_path / "ref" / "state" / "latest.pt")
    for k, v in b["model"].items():
        assert torch.equal(a["model"][k], v), k
    for k, v in b["ema"]["module"].items():
        assert torch.equal(a["ema"]["module"][k], v), k
    for i, s in b["optimizer"]["state"].items():
        assert torch.equal(a["optimizer"]["state"][i]["exp_avg_sq"], s["exp_avg_sq"])
    assert resumed["rank_parameter_sha256"] == ref["rank_parameter_sha256"]
    wa, wb = _weights(killed_dir / "models" / "final.safetensors"), _weights(tmp_path / "ref" / "models" / "final.safetensors")
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wb)
    assert resumed["metrics"] == ref["metrics"]
    # each iteration logged once, with the uninterrupted run's values (speeds aside)
    assert _log(killed_dir) == _log(tmp_path / "ref")
    assert not torch.are_deterministic_algorithms_enabled(), "process-wide torch settings leaked"


def test_interrupted_writes_keep_the_previous_good_files(tmp_path, recipe_factory, monkeypatch, one_thread):
    recipe = recipe_factory(tmp_path, iterations=20, checkpoint_every=10)
    cfg = load_train_config(str(recipe), [])
    train_restoration(cfg, resolved_config=to_dict(cfg))
    run = tmp_path / "run"
    state_file, weights = run / "state" / "latest.pt", run / "models" / "final.safetensors"
    good_state, good_weights = state_file.read_bytes(), weights.read_bytes()

    def torn_save(obj, f, *args, **kwargs):  # write half a file, then die
        f.write(b"PK\x03\x04 half a checkpoint")
        raise KeyboardInterrupt("killed while writing")

    monkeypatch.setattr(trainer_mod.torch, "save", torn_save)
    tr = trainer_mod.Trainer(cfg)
    tr.load_state_dict(load_state(state_file))
    with pytest.raises(KeyboardInterrupt):
        trainer_mod.save_state(state_file, tr.state_dict())
    assert state_file.read_bytes() == good_state
    assert load_state(state_file)["iteration"] == 20
    monkeypatch.undo()

    import safetensors.torch

    def torn_weights(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"\x00" * 10)
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.torch, "save_file", torn_weights)
    with pytest.raises(OSError, match="disk full"):
        tr.save_weights(weights)
    assert weights.read_bytes() == good_weights
    assert not [p for p in (run / "models").iterdir() if p.name.startswith(".")], "temp file left behind"


def test_resume_refuses_a_corrupt_or_missing_state(tmp_path):
    with pytest.raises(FileNotFoundError, match="no training state"):
        load_state(tmp_path / "nope.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a zip")
    with pytest.raises(RuntimeError, match="unreadable training state"):
        load_state(bad)
    other = tmp_path / "other.pt"
    torch.save({"iteration": 3}, other)
    with pytest.raises(RuntimeError, match="not a robustsam-restore training state"):
        load_state(other)
