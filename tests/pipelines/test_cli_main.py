"""``python -m pipelines.cli`` runs the same command group as the ``robustsam-restore`` script."""

from __future__ import annotations

import subprocess
import sys


def test_python_m_runs_the_commands(subprocess_env):
    run = [sys.executable, "-m", "pipelines.cli"]
    res = subprocess.run([*run, "segment", "--help"], env=subprocess_env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "--points-per-side" in res.stdout and "1..128" in res.stdout
    res = subprocess.run([*run, "segmnt"], env=subprocess_env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and "No such command 'segmnt'" in res.stderr


def _two_photos(folder):
    import numpy as np
    from PIL import Image

    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in ("a.png", "b.png"):
        Image.fromarray(rng.integers(0, 255, (24, 32, 3), dtype=np.uint8)).save(folder / name)
    return folder


def test_quiet_hides_progress_bars_before_or_after_the_command(tmp_path, subprocess_env):
    """In a real process: the folder bar is drawn by default, and -q (in either place) leaves stderr empty."""
    photos = _two_photos(tmp_path / "in")
    run = [sys.executable, "-m", "pipelines.cli"]
    outputs = {}
    for i, where in enumerate(("none", "before", "after")):
        args = ["degrade", str(photos), str(tmp_path / f"out{i}"), "-t", "haze"]
        args = {"none": args, "before": ["-q", *args], "after": [*args, "-q"]}[where]
        res = subprocess.run([*run, *args], env=subprocess_env, capture_output=True, text=True, timeout=120)
        assert res.returncode == 0, res.stderr
        assert "2 ok" in res.stdout
        outputs[where] = res.stderr
    assert "degrade haze" in outputs["none"] and "img/s" in outputs["none"]  # the tqdm bar
    assert outputs["before"] == "" and outputs["after"] == ""


def test_verbose_and_quiet_work_after_the_command_and_in_sub_groups(tmp_path, caplog):
    import logging

    from click.testing import CliRunner

    from pipelines.cli import main

    photos = _two_photos(tmp_path / "in")
    root_level = logging.getLogger().level

    def messages(*args):
        caplog.clear()
        res = CliRunner().invoke(main, [str(a) for a in args])
        assert res.exit_code == 0, res.output
        assert logging.getLogger().level == root_level  # put back when the command ends
        return [r.getMessage() for r in caplog.records]

    (photos / "notes.txt").write_text("not an image")  # warned about unless -q
    out = iter(range(100))

    def degrade(*extra):
        return messages("degrade", photos, tmp_path / f"out{next(out)}", "-t", "haze", *extra)

    default = degrade()
    assert any("skipping notes.txt" in m for m in default) and not any("manifest written" in m for m in default)
    assert any("manifest written" in m for m in degrade("-v"))  # info, asked for after the command
    assert any("manifest written" in m for m in messages("-v", "degrade", photos, tmp_path / "o", "-t", "haze"))
    assert degrade("-q") == []  # not even the warning
    assert messages("-v", "degrade", photos, tmp_path / "q", "-t", "haze", "-q") == []  # -q wins
    # sub-groups' commands take them too
    res = CliRunner().invoke(main, ["benchmark", "restoration", "--help"])
    assert "-q, --quiet" in res.output and "-v, --verbose" in res.output
    res = CliRunner().invoke(main, ["benchmark", "restoration", "--methods", "identity", "--lq", photos, "--gt",
                                    photos, "--metrics", "psnr", "--crops", "0", "--out", tmp_path / "r.jsonl", "-q"])
    assert res.exit_code == 0 and res.stderr == "", res.output
