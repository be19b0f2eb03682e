"""The training engine on its own, with a tiny model: a run stopped after a checkpoint and resumed through
the engine ends bit-identical to an uninterrupted one (model, optimizer, scheduler and every RNG it
saves: Python, numpy's global state or a generator, torch), in both state layouts; checkpoints rotate;
the config fingerprint, state-file errors, the log and the device error."""

from __future__ import annotations

import json
import logging
import random

import numpy as np
import pytest
import torch
from torch import nn

from robustsam_prior.core.checkpoint import CheckpointError
from robustsam_prior.training import engine
from robustsam_prior.training.engine import RunLog, StateFormat, TrainingRun, load_state, save_state

FLAT = StateFormat(tag="test/flat", title="flat test state", fingerprint={"seed": "seed", "batch": "train.batch_size"},
                   step="iteration", scheduler="scheduler")
NESTED = StateFormat(tag="test/nested", title="nested test state", fingerprint={"seed": "seed"},
                     step="trainer.step", model="trainer.model", optimizer="trainer.optimizer",
                     required=("trainer", "rng", "fingerprint", "trainer.model", "trainer.optimizer", "trainer.step"))
CONFIG = {"seed": 3, "train": {"batch_size": 4, "lr": 0.1}}
STEPS = 6


class Tiny:
    """A two-layer net with Adam and a step schedule whose every step draws from Python's, numpy's (global
    or ``generator``) and torch's random numbers, so that a resume is exact only if all are restored."""

    def __init__(self, fmt: StateFormat, *, generator: bool) -> None:
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1))
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=0.05)
        self.scheduler = torch.optim.lr_scheduler.StepLR(self.optimizer, step_size=2, gamma=0.5)
        self.fmt = fmt
        self.rng = np.random.default_rng(11) if generator else None
        self.step = 0

    def batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        noise = self.rng.normal(size=(4, 4)) if self.rng is not None else np.random.normal(size=(4, 4))  # noqa: NPY002
        x = torch.randn(4, 4) + torch.from_numpy(noise).float() * random.random()
        return x, x.sum(1, keepdim=True)

    def train_step(self) -> float:
        x, y = self.batch()
        loss = (self.net(x) - y).pow(2).mean()
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        if self.fmt.scheduler is not None:
            self.scheduler.step()
        self.step += 1
        return float(loss.detach())

    def state(self, run: TrainingRun) -> dict:
        return run.pack_state(step=self.step, model=self.net.state_dict(), optimizer=self.optimizer,
                              scheduler=self.scheduler, extra={"note": "kept"}, generator=self.rng)

    def resume(self, run: TrainingRun, state: dict) -> None:
        self.step = run.unpack_state(state, load_model=self.net.load_state_dict, optimizer=self.optimizer,
                                     scheduler=self.scheduler, generator=self.rng)


def train(out, fmt, *, generator: bool, stop_after: int | None = None, resume: bool = False,
          keep: int = 2, config=CONFIG) -> Tiny:
    """Train to STEPS with a checkpoint every 2 steps (stopping after ``stop_after`` steps), as a trainer does."""
    model = Tiny(fmt, generator=generator)
    with TrainingRun(out, fmt, device="cpu", config=config, keep_checkpoints=keep) as run:
        if resume:
            random.seed(99), np.random.seed(99), torch.manual_seed(99)  # noqa: NPY002 (a fresh process's states)
            model.resume(run, run.read_state())
        else:
            random.seed(5), np.random.seed(5), torch.manual_seed(5)  # noqa: NPY002
        log = run.open_log(step_key="step", start=model.step)
        while model.step < (stop_after or STEPS):
            log.write({"step": model.step + 1, "loss": model.train_step()})
            if model.step % 2 == 0:
                run.checkpoint(model.step, state=lambda: model.state(run),
                               save_weights=lambda path: save_state(path, {"weights": model.net.state_dict()}))
    return model


@pytest.mark.parametrize(("fmt", "generator"), [(FLAT, False), (NESTED, True)], ids=["flat-global-numpy", "nested-generator"])
def test_resume_through_the_engine_is_exact(tmp_path, fmt, generator):
    ref = train(tmp_path / "ref", fmt, generator=generator)
    stopped = train(tmp_path / "run", fmt, generator=generator, stop_after=5)  # its last checkpoint: step 4
    assert stopped.step == 5 and load_state(tmp_path / "run" / "state" / "latest.pt", fmt)
    resumed = train(tmp_path / "run", fmt, generator=generator, resume=True)
    assert resumed.step == STEPS
    for k, v in ref.net.state_dict().items():
        assert torch.equal(resumed.net.state_dict()[k], v), k
    for i, s in ref.optimizer.state_dict()["state"].items():
        assert torch.equal(resumed.optimizer.state_dict()["state"][i]["exp_avg_sq"], s["exp_avg_sq"])
    assert resumed.scheduler.state_dict() == ref.scheduler.state_dict()
    logs = [[json.loads(line) for line in (tmp_path / d / "log.jsonl").read_text().splitlines()] for d in ("ref", "run")]
    assert logs[0] == logs[1] and [r["step"] for r in logs[0]] == list(range(1, STEPS + 1))  # step 5 logged once
    a, b = (load_state(tmp_path / d / "state" / "latest.pt", fmt) for d in ("ref", "run"))
    assert a["note"] == "kept" and a["rng"]["numpy"].__class__ is (str if generator else dict)
    assert engine._lookup(a, fmt.step) == engine._lookup(b, fmt.step) == STEPS


def test_checkpoints_rotate(tmp_path):
    train(tmp_path, FLAT, generator=False, keep=2)
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == ["step_0000004.safetensors",
                                                                        "step_0000006.safetensors"]
    assert load_state(tmp_path / "state" / "latest.pt", FLAT)["iteration"] == STEPS
    with pytest.raises(ValueError, match="keep_checkpoints: must be >= 1, got 0"):
        TrainingRun(tmp_path, FLAT, device="cpu", keep_checkpoints=0)


def test_the_fingerprint_warns_of_a_changed_config(tmp_path, caplog):
    train(tmp_path, FLAT, generator=False, stop_after=2)
    state = load_state(tmp_path / "state" / "latest.pt", FLAT)
    assert json.loads(state["fingerprint"]) == {"seed": 3, "batch": 4}
    changed = {**CONFIG, "seed": 4, "train": {"batch_size": 4, "lr": 1.0}}  # lr is not in the fingerprint
    assert engine.changed_settings(state["fingerprint"], changed, FLAT.fingerprint) == ["seed"]
    assert engine.changed_settings(state["fingerprint"], CONFIG, FLAT.fingerprint) == []
    assert engine.changed_settings('{"batch": 4, "seed": 3}', CONFIG, FLAT.fingerprint) == []  # key order
    assert engine.changed_settings(state["fingerprint"], None, FLAT.fingerprint) == []  # no config: no check
    # a mapping saved before an option existed equals one with that option resolved to null, at any depth;
    # a set value is a change
    data = StateFormat(tag="t", title="t", fingerprint={"data": "data"}, step="iteration")
    saved = json.dumps({"data": {"val": {"seed": 1}, "sets": [{"a": 1}]}})
    later = {"data": {"val": {"seed": 1, "new": None}, "sets": [{"a": 1, "b": None}], "val_seed": None}}
    assert engine.changed_settings(saved, later, data.fingerprint) == []
    assert engine.changed_settings(saved, {"data": {**later["data"], "val_seed": 5}}, data.fingerprint) == ["data"]
    with caplog.at_level(logging.WARNING, logger=engine.__name__):
        train(tmp_path, FLAT, generator=False, resume=True, config=changed)
    assert any("with settings that differ from the saved run (seed)" in r.getMessage() for r in caplog.records)


def test_state_files_that_cannot_resume(tmp_path):
    path = tmp_path / "state.pt"
    with pytest.raises(FileNotFoundError, match="state.pt: no training state to resume from"):
        load_state(path, NESTED)
    path.write_bytes(b"PK\x03\x04 torn")
    with pytest.raises(CheckpointError, match=r"state.pt: unreadable training state \("):
        load_state(path, NESTED)
    torch.save({"format": "other"}, path)
    with pytest.raises(CheckpointError, match=r"state.pt: not a nested test state \(format 'test/nested'\)$"):
        load_state(path, NESTED)
    torch.save({"format": "test/nested", "trainer": {"step": 1}, "rng": {}}, path)
    with pytest.raises(CheckpointError, match=r"an incomplete nested test state \(no fingerprint, trainer.model, "
                                              r"trainer.optimizer\)$"):
        load_state(path, NESTED)
    torch.save({"format": "test/nested"}, path)
    with pytest.raises(CheckpointError, match=r"\(no trainer, rng, fingerprint\)$"):  # trainer.* named once
        load_state(path, NESTED)
    # entries found missing or mis-shaped when put back: "does not fit this run", naming the file
    model = Tiny(FLAT, generator=False)
    with TrainingRun(tmp_path, FLAT, device="cpu") as run:
        with pytest.raises(CheckpointError, match=r"latest.pt: does not fit this run \(no 'model' entry\)$"):
            model.resume(run, {"format": FLAT.tag, "iteration": 3})
        other = nn.Linear(2, 2).state_dict()
        with pytest.raises(CheckpointError, match=r"latest.pt: does not fit this run \(Error\(s\) in loading"):
            model.resume(run, {**model.state(run), "model": other})
        generator_state = model.state(run)
        generator_state["rng"]["numpy"] = json.dumps(np.random.default_rng(0).bit_generator.state)
        with pytest.raises(CheckpointError, match="a generator's, but this run has no generator"):
            model.resume(run, generator_state)


def test_rng_states_of_earlier_files_without_cuda_or_python_entries_resume():
    """Files written before the engine: the restoration trainer saved no ``cuda`` state, the RobustSAM one
    no ``python`` state; what a file lacks is left as it is."""
    rng = np.random.default_rng(1)
    state = engine.rng_state(rng)
    del state["python"]
    expected = [rng.random(), torch.rand(1)]
    random.seed(7)
    python_before = random.getstate()
    torch.manual_seed(123)
    engine.set_rng_state(state, rng)
    assert [rng.random(), torch.rand(1)] == expected and random.getstate() == python_before
    state = engine.rng_state()
    del state["cuda"]
    expected = [np.random.random(), random.random(), torch.rand(1)]  # noqa: NPY002
    engine.set_rng_state(state)
    assert [np.random.random(), random.random(), torch.rand(1)] == expected  # noqa: NPY002


def test_the_log_is_cut_back_to_the_resumed_step(tmp_path):
    (tmp_path / "log.jsonl").write_text('{"step": 1}\n{"step": 2, "loss": 1.0}\n{"step": 3}\n{"step": 4, "lo')
    log = RunLog(tmp_path, step_key="step", start=2)
    assert log.kept == [{"step": 1}, {"step": 2, "loss": 1.0}]
    log.write({"step": 3, "loss": float("inf")})
    assert (tmp_path / "log.jsonl").read_text().splitlines()[-1] == '{"step": 3, "loss": "inf"}'
    log.close()
    assert not (tmp_path / "tb").exists()
    other = RunLog(tmp_path / "rank1", step_key="step", start=0, enabled=False)  # not rank 0: nothing happens
    other.write({"step": 1})
    other.close()
    assert not (tmp_path / "rank1").exists()


def test_an_unavailable_device_is_refused_before_anything_is_written(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match=r"^train.device: 'cuda' was asked for but CUDA is not available"):
        TrainingRun(tmp_path / "run", FLAT, device="cuda")
    with pytest.raises(ValueError, match=r"^train.device must be one of auto, cpu, cuda, cuda:N, got 'gpu'$"):
        TrainingRun(tmp_path / "run", FLAT, device="gpu")
    assert not (tmp_path / "run").exists()
    run = TrainingRun(tmp_path / "run", FLAT, device="auto")
    assert (run.device, run.rank, run.world, run.is_main) == (torch.device("cpu"), 0, 1, True)
    assert run.dist.all_reduce_sum([1.0, 2.0]) == [1.0, 2.0] and run.dist.gather("x") == ["x"]
    run.close()


def test_run_errors_are_what_the_train_command_reports():
    from robustsam_prior.core.fileio import FolderLockedError

    for e in (CheckpointError("x"), FileNotFoundError("x"), FloatingPointError("x"), ValueError("x"),
              FolderLockedError("x")):
        assert isinstance(e, engine.RUN_ERRORS)
