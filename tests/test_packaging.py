"""setup.py declares the package data: a build copies every data file the code reads and prints no
setuptools warnings about undeclared package data."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_build_copies_the_package_data_without_setuptools_warnings(tmp_path):
    out = tmp_path / "build"
    res = subprocess.run([sys.executable, "setup.py", "-q", "build_py", "-d", str(out)], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    log = res.stdout + res.stderr
    assert "absent from the `packages` configuration" not in log and "Package would be ignored" not in log, log
    assert len(log.splitlines()) <= 2, log  # at most setuptools' one-line note that byte-compiling is off
    shipped = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file() and p.suffix != ".py"}
    want = {p.relative_to(ROOT).as_posix() for pattern in ("pipelines/*.yml", "pipelines/basicsr/*.yml", "pipelines/schema/*.json",
                                                           "restore/weights/*.safetensors", "restore/weights/*.json",
                                                           "robustsam_prior/weights/*.safetensors")
            for p in ROOT.glob(pattern)}
    assert "pipelines/dehaze.yml" in want and "restore/weights/zoo.json" in want
    assert "robustsam_prior/weights/robustsam-tiny.safetensors" in want
    assert shipped == want
