"""One training per output folder: a second run (restoration or RobustSAM, CLI or library) fails at once
naming the folder and the holder's pid, writes nothing there, and a lock left by a dead process does not
block the next run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from pipelines.cli import main
from robustsam_prior.core.fileio import LOCK_NAME, FolderLockedError, folder_lock

REPO = Path(__file__).resolve().parents[2]
HOLD = ("import sys\nfrom robustsam_prior.core.fileio import folder_lock\n"
        "with folder_lock(sys.argv[1]):\n    print('held', flush=True)\n    sys.stdin.read()\n")


@pytest.fixture
def holder():
    """``holder(folder)``: a separate process that holds ``folder``'s lock until it is killed or its stdin closes."""
    procs = []

    def start(folder: Path) -> subprocess.Popen:
        env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
        proc = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, text=True, env=env)
        procs.append(proc)
        assert proc.stdout.readline().strip() == "held"
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def test_lock_is_exclusive_across_processes_nests_within_one_and_dies_with_its_holder(tmp_path, holder):
    folder = tmp_path / "run"
    proc = holder(folder)
    with pytest.raises(FolderLockedError) as e:
        with folder_lock(folder):
            pass
    assert str(e.value).startswith(f"{folder}: in use by another run (pid {proc.pid} on ")
    assert "\n" not in str(e.value)
    proc.send_signal(signal.SIGKILL)  # a killed holder cannot clean up: its lock file stays, unlocked
    proc.wait()
    assert (folder / LOCK_NAME).read_text().startswith(f"pid {proc.pid} ")
    with folder_lock(folder) as path:
        assert path.read_text().startswith(f"pid {os.getpid()} ")
        with folder_lock(folder):  # the same process again: nested, not a conflict
            pass
        assert path.exists(), "the inner release must not drop the outer lock"
    assert not (folder / LOCK_NAME).exists(), "released and removed"


@pytest.mark.parametrize("recipe", ["pipelines/smoke_train_dehaze.yml", "pipelines/train_robustsam_smoke.yml"])
def test_second_training_into_a_folder_fails_at_once(tmp_path, holder, recipe, monkeypatch):
    monkeypatch.chdir(REPO)
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.yml").write_text("# the first run's config\n")
    proc = holder(out)
    res = CliRunner().invoke(main, ["train", recipe, f"output_dir={out}", "seed=2"])
    assert res.exit_code == 1 and isinstance(res.exception, SystemExit), res.output
    assert res.output.startswith(f"Error: {out}: in use by another run (pid {proc.pid} on ")
    assert len(res.output.strip().splitlines()) == 1
    assert (out / "config.yml").read_text() == "# the first run's config\n"
    assert sorted(p.name for p in out.iterdir()) == [LOCK_NAME, "config.yml"]
    proc.stdin.close()  # the first run ends
    proc.wait()
    res = CliRunner().invoke(main, ["train", recipe, f"output_dir={out}", "--resume"])
    assert res.exit_code == 1 and "no training state" in res.output, res.output  # the lock was free
    assert not (out / LOCK_NAME).exists()


def test_library_trainers_take_the_lock_too(tmp_path, holder, recipe_factory, monkeypatch):
    from pipelines.commands.train import load_train_config
    from restore.training.trainer import train_restoration
    from robustsam_prior.training.trainer import train_from_options

    out = tmp_path / "run"
    proc = holder(out)
    cfg = load_train_config(str(recipe_factory(tmp_path, iterations=10, checkpoint_every=0)), [f"output_dir={out}"])
    with pytest.raises(FolderLockedError, match=f"pid {proc.pid} "):
        train_restoration(cfg)
    cfg = load_train_config(str(REPO / "pipelines/train_robustsam_smoke.yml"), [f"output_dir={out}"])
    with pytest.raises(FolderLockedError, match=f"pid {proc.pid} "):
        train_from_options(cfg)
    assert sorted(p.name for p in out.iterdir()) == [LOCK_NAME]
    # under torchrun only rank 0 takes it: another rank goes past the lock (here to the missing state)
    monkeypatch.setenv("RANK", "1")
    cfg = load_train_config(str(recipe_factory(tmp_path / "b", iterations=10, checkpoint_every=0)),
                            [f"output_dir={out}"])
    with pytest.raises(FileNotFoundError, match="no training state"):
        train_restoration(cfg, resume=True)
