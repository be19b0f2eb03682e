"""Folder restoration (``dehaze``) and ``segment`` under a real 2-process torchrun (gloo, CPU): each image
is processed once, by one rank, rank 0 alone reports for all of them, and the outputs equal one process's."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from pipelines.cli import main
from robustsam_prior.core.io import write_image

TINY = dict(img_size=64, patch=8, enc_dim=32, enc_depth=2, enc_heads=2, global_attn=[1], window=4,
            prompt_dim=64, dec_depth=1, dec_mlp=64, dec_heads=2, iou_hidden=32, mask_in_chans=8)


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


@pytest.mark.slow
def test_segment_folder_sharded_over_two_ranks(tmp_path, cli_script, subprocess_env, randomize_weights):
    from robustsam_prior.loading import save_robustsam
    from robustsam_prior.modeling.build import build_robustsam_model

    torch.manual_seed(0)
    ckpt = tmp_path / "tiny.safetensors"
    save_robustsam(randomize_weights(build_robustsam_model(TINY), 11), ckpt)
    folder = make_folder(tmp_path / "in")
    args = ["--auto", "--points-per-side", "2", "--pred-iou-thresh", "0", "--stability-thresh", "0",
            "--prior-checkpoint", str(ckpt), "--json"]
    out = torchrun(cli_script, subprocess_env, "segment", str(folder), str(tmp_path / "ddp"), *args)
    assert out.count("segment: 5 ok, 0 failed") == 1, out
    reports = [json.loads(line[line.index("{"):]) for line in out.splitlines() if '{"images"' in line]
    assert len(reports) == 1 and reports[0]["world_size"] == 2  # only rank 0 prints
    assert sorted(reports[0]["images"]) == [f"img{i}.png" for i in range(5)]
    res = CliRunner().invoke(main, ["segment", str(folder), str(tmp_path / "one"), *args])
    assert res.exit_code == 0, res.output
    for i in range(5):
        for name in ("masks.json", "labels.png"):
            a, b = tmp_path / "ddp" / f"img{i}" / name, tmp_path / "one" / f"img{i}" / name
            assert a.read_bytes() == b.read_bytes(), (i, name)
