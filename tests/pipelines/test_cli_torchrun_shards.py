"""Folder restoration (``dehaze``) under a real 2-process torchrun (gloo, CPU): each image
is processed once, by one rank, rank 0 alone reports for all of them, and the outputs equal one process's."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from pipelines.cli import main
from robustsam_prior.io import write_image


def make_folder(root: Path, n: int = 5) -> Path:
    rng = np.random.default_rng(0)
    root.mkdir(parents=True)
    for i in range(n):
        h, w = 24 + 4 * i, 40
        img = np.full((h, w, 3), 0.3, np.float32)
        img[h // 4: h * 3 // 4, 8:30] = rng.uniform(0, 1, 3)
        write_image(root / f"img{i}.png", np.clip(img + rng.normal(0, 0.02, img.shape), 0, 1).astype(np.float32))
    return root


def torchrun(cli_script: Path, env: dict, *args: str) -> str:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(cli_script), *args]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout + proc.stderr


@pytest.mark.slow  # two interpreters importing torch and joining a gloo group: ~15 s on 2 cores
def test_dehaze_folder_sharded_over_two_ranks(tmp_path, cli_script, subprocess_env):
    folder = make_folder(tmp_path / "in")
    out = torchrun(cli_script, subprocess_env, "dehaze", str(folder), str(tmp_path / "ddp"), "--model", "dcp",
                   "--device", "cpu")
    assert out.count("dehaze: 5 ok, 0 failed") == 1, out  # one report, of all 5 images: disjoint shards
    res = CliRunner().invoke(main, ["dehaze", str(folder), str(tmp_path / "one"), "--model", "dcp", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    for i in range(5):
        assert (tmp_path / "ddp" / f"img{i}.png").read_bytes() == (tmp_path / "one" / f"img{i}.png").read_bytes()
