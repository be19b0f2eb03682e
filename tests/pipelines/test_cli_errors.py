"""Bad weight files and full disks end a command with one line naming the file and exit status 1, never a
traceback: eval --lpips-weights, a recipe's model.init, restoration --resume, benchmark segmentation
--checkpoint, a manifest.json or pipeline.yml that cannot be written; also through ``python -m pipelines.cli``."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from pipelines.cli import main

REPO = Path(__file__).resolve().parents[2]


class _Evil:
    def __reduce__(self):
        return (os.system, (f"touch {os.environ['EVIL_MARKER']}",))


@pytest.fixture
def bad_weights(tmp_path, monkeypatch):
    """{what: path}: a text file named .pth, a code-executing pickle, a torch file cut in half, a bad safetensors."""
    marker = tmp_path / "pwned"
    monkeypatch.setenv("EVIL_MARKER", str(marker))
    files = {"garbage": tmp_path / "garbage.pth", "evil": tmp_path / "evil.pth", "truncated": tmp_path / "cut.pth",
             "safetensors": tmp_path / "bad.safetensors"}
    files["garbage"].write_text("these are not weights\n")
    torch.save({"features.0.weight": torch.zeros(1), "x": _Evil()}, files["evil"])
    torch.save({"features.0.weight": torch.zeros(64, 3, 11, 11)}, files["truncated"])
    files["truncated"].write_bytes(files["truncated"].read_bytes()[:5000])
    files["safetensors"].write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}......")
    yield files
    assert not marker.exists(), "pickled code ran"


def _one_line_error(res, path: Path) -> str:
    assert res.exit_code == 1 and isinstance(res.exception, SystemExit), res.output
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"Error: {path}: "), res.output
    return lines[0]


def _image(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (24, 32, 3), dtype=np.uint8)).save(path)
    return path


def test_eval_lpips_weights_that_are_refused_or_corrupt(tmp_path, bad_weights):
    _image(tmp_path / "pred" / "a.png")
    _image(tmp_path / "gt" / "a.png")
    messages = {"garbage": "not a PyTorch checkpoint (neither a zip archive nor a pickle)",
                "evil": "refused to load: the file contains pickled objects other than tensors",
                "truncated": "not a readable PyTorch checkpoint, truncated or corrupt"}
    for what, message in messages.items():
        res = CliRunner().invoke(main, ["eval", "--pred", str(tmp_path / "pred"), "--gt", str(tmp_path / "gt"),
                                        "--metrics", "psnr,lpips", "--lpips-weights", str(bad_weights[what])])
        assert message in _one_line_error(res, bad_weights[what])


def test_benchmark_segmentation_checkpoint_that_is_refused(tmp_path, bad_weights):
    for what in ("evil", "garbage"):
        res = CliRunner().invoke(main, ["benchmark", "segmentation", "--segmenters", "robustsam", "--model-config",
                                        "vit_b", "--checkpoint", str(bad_weights[what]), "--shapes-count", "1",
                                        "--degradations", "none", "--out", str(tmp_path / "r.jsonl")])
        _one_line_error(res, bad_weights[what])
    assert not (tmp_path / "r.jsonl").exists()


def test_training_with_bad_init_weights_or_resume_state(tmp_path, bad_weights, recipe_factory):
    recipe = recipe_factory(tmp_path, iterations=10, checkpoint_every=0)
    out = tmp_path / "run"
    for what, message in (("evil", "refused to load"), ("safetensors", "not a readable safetensors file")):
        res = CliRunner().invoke(main, ["train", str(recipe), f"model.init={bad_weights[what]}"])
        assert message in _one_line_error(res, bad_weights[what])
    from restore.training.state import STATE_FORMAT

    state = out / "state" / "latest.pt"
    state.parent.mkdir(parents=True)
    for content, message in ((b"PK\x03\x04 cut short", "unreadable training state"),
                             ({"format": STATE_FORMAT, "iteration": 3}, "does not fit this run (no 'model' entry)"),
                             ({"format": "other"}, "not a robustsam-restore training state")):
        if isinstance(content, bytes):
            state.write_bytes(content)
        else:
            torch.save(content, state)
        res = CliRunner().invoke(main, ["train", str(recipe), "--resume"])
        assert message in _one_line_error(res, state)
    # the same for a RobustSAM run's state
    from robustsam_prior.training.trainer import STATE_FORMAT as ROBUSTSAM_STATE

    rs_state = tmp_path / "rs" / "state" / "latest.pt"
    rs_state.parent.mkdir(parents=True)
    torch.save({"format": ROBUSTSAM_STATE, "trainer": {"step": 2}, "rng": {}}, rs_state)
    res = CliRunner().invoke(main, ["train", str(REPO / "pipelines/train_robustsam_smoke.yml"),
                                    f"output_dir={tmp_path / 'rs'}", "--resume"])
    line = _one_line_error(res, rs_state)
    assert line.endswith("an incomplete RobustSAM training state (no init_sha256, fingerprint, trainer.model, "
                         "trainer.optimizer)")
    # a loss that overflows float32 stops the run at its first step, in one line
    res = CliRunner().invoke(main, ["train", str(recipe), f"output_dir={tmp_path / 'nan'}",
                                    "train.losses=[{type: l1, weight: 1e300}]"])
    assert res.exit_code == 1 and res.output.splitlines()[-1].endswith("Error: non-finite loss inf at iteration 0"), res.output
    assert not (tmp_path / "nan" / "models" / "final.safetensors").exists()


def test_training_on_a_device_this_machine_lacks_is_one_line_for_both_kinds(tmp_path, recipe_factory, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # a machine without CUDA, wherever this runs
    recipe = recipe_factory(tmp_path, iterations=4, checkpoint_every=0)
    for args in ([str(recipe)], [str(REPO / "pipelines/train_robustsam_smoke.yml"), f"output_dir={tmp_path / 'rs'}"]):
        res = CliRunner().invoke(main, ["train", *args, "train.device=cuda"])
        assert res.exit_code == 1 and isinstance(res.exception, SystemExit), res.output
        assert res.output.strip().splitlines() == [
            "Error: train.device: 'cuda' was asked for but CUDA is not available (torch reports no CUDA GPU is "
            "available on this machine); use cpu or auto"]
        res = CliRunner().invoke(main, ["train", *args, "train.device=gpu"])
        assert res.exit_code == 1 and "train.device: expected cpu, cuda, cuda:N or auto, got 'gpu'" in res.output


def _disk_full_for(monkeypatch, folder: Path, head: bytes) -> None:
    """Make ``os.fsync`` fail as on a full disk for files in ``folder`` that begin with ``head`` (the
    temporary file of the manifest or config being written, whatever its name); others are untouched."""
    real = os.fsync

    def fsync(fd):
        path = Path(os.readlink(f"/proc/self/fd/{fd}"))
        if path.parent == folder and path.read_bytes()[: len(head)] == head:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(fd)

    monkeypatch.setattr(os, "fsync", fsync)


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc to tell files apart")
def test_full_disk_while_writing_manifest_or_pipeline_config(tmp_path, monkeypatch):
    src = _image(tmp_path / "in" / "a.png")
    out = tmp_path / "out"
    out.mkdir()
    (out / "manifest.json").write_text('{"earlier": true}\n')
    _disk_full_for(monkeypatch, out, b"{")
    res = CliRunner().invoke(main, ["degrade", str(src.parent), str(out), "--type", "haze", "--severity", "2"])
    line = _one_line_error(res, out / "manifest.json")
    assert line.endswith("could not write the file: No space left on device (any previous version is kept)")
    assert (out / "manifest.json").read_text() == '{"earlier": true}\n'
    assert not [p for p in out.iterdir() if p.name.startswith(".")], "temporary file left behind"
    monkeypatch.undo()

    yml = tmp_path / "p.yml"
    yml.write_text("steps:\n  - {step: degrade, kind: haze}\n")
    run_out = tmp_path / "run"
    _disk_full_for(monkeypatch, run_out, b"# resolved configuration")
    res = CliRunner().invoke(main, ["run", str(yml), f"input={src.parent}", f"output_dir={run_out}"])
    _one_line_error(res, run_out / "pipeline.yml")
    assert sorted(p.name for p in run_out.iterdir()) == []


def test_python_dash_m_runs_the_cli(tmp_path):
    import subprocess
    import sys

    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    bad = tmp_path / "bad.yml"
    bad.write_bytes(b"name: caf\xe9\n")
    res = subprocess.run([sys.executable, "-m", "pipelines.cli", "train", str(bad)], capture_output=True, text=True,
                         env=env, cwd=tmp_path)
    assert res.returncode == 1 and res.stderr.strip() == f"Error: {bad}: not UTF-8 text (byte 0xe9 at offset 9); " \
                                                         "save the file as UTF-8", res.stderr
