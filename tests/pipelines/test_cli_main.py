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
