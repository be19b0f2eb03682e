"""``robustsam-restore prior-cache``: fill, resume, corrupt entries, errors, and a real 2-process torchrun."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from pipelines.cli import main
from robustsam_prior.core.io import write_image
from robustsam_prior.hub import ENV_CHECKPOINT

REPO = Path(__file__).resolve().parents[2]


def make_folder(root: Path, n: int = 4) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        h, w = 24 + 4 * i, 32
        img = np.zeros((h, w, 3), np.float32)
        img[:, : w // 2] = rng.uniform(0, 1, 3)
        img[:, w // 2 :] = rng.uniform(0, 1, 3)
        img[h // 3 : h // 2, 4:12] = rng.uniform(0, 1, 3)
        write_image(root / f"img{i}.png", img)
    return root


def entries(cache: Path) -> list[Path]:
    return sorted(p for p in cache.rglob("*.safetensors") if not p.name.startswith("."))


def run(args: list[str]):
    return CliRunner().invoke(main, args, catch_exceptions=False)


def test_fills_then_resumes_then_recomputes_corrupt(tmp_path):
    folder, cache = make_folder(tmp_path / "in"), tmp_path / "cache"
    (folder / "notes.txt").write_text("not an image")
    res = run(["prior-cache", str(folder), "--prior", "regions", "--cache", str(cache), "--json"])
    assert res.exit_code == 0, res.output
    report = json.loads(res.output.strip().splitlines()[-1])
    assert report["images"] == 4 and report["computed"] == 4 and report["already_cached"] == 0
    assert report["skipped"] == ["notes.txt"] and report["world_size"] == 1
    assert report["prior"]["name"] == "regions"
    assert len(entries(cache)) == 4
    # resumable: a second run computes nothing
    res = run(["prior-cache", str(folder), "--prior", "regions", "--cache", str(cache), "--json"])
    report = json.loads(res.output.strip().splitlines()[-1])
    assert report["computed"] == 0 and report["already_cached"] == 4
    # a damaged entry is found and recomputed; the human summary says so
    entries(cache)[0].write_bytes(b"garbage")
    res = run(["prior-cache", str(folder), "--prior", "regions", "--cache", str(cache)])
    assert res.exit_code == 0, res.output
    assert "1 computed, 3 already cached, 1 corrupt entries recomputed" in res.output
    assert "prior-cache: 4 ok, 0 failed, 1 skipped" in res.output


def test_prior_options_change_the_entries(tmp_path):
    folder, cache = make_folder(tmp_path / "in", n=2), tmp_path / "cache"
    run(["prior-cache", str(folder), "--prior", "regions", "--cache", str(cache)])
    res = run(["prior-cache", str(folder), "--prior", "regions", "--cache", str(cache),
               "--prior-option", "n_segments=7", "--prior-option", "stretch_percentiles=[2, 98]", "--json"])
    report = json.loads(res.output.strip().splitlines()[-1])
    assert report["computed"] == 2 and report["prior"]["options"]["n_segments"] == 7
    assert report["prior"]["options"]["stretch_percentiles"] == [2.0, 98.0]
    assert len(entries(cache)) == 4


def test_a_bad_image_fails_alone(tmp_path):
    folder, cache = make_folder(tmp_path / "in", n=2), tmp_path / "cache"
    (folder / "broken.png").write_bytes(b"\x89PNG not really")
    res = CliRunner().invoke(main, ["prior-cache", str(folder), "--prior", "none", "--cache", str(cache)])
    assert res.exit_code == 1
    assert "FAILED broken.png" in res.output and "2 ok, 1 failed" in res.output
    assert len(entries(cache)) == 2


def test_usage_errors(tmp_path, monkeypatch):
    folder = make_folder(tmp_path / "in", n=1)
    base = ["prior-cache", str(folder), "--cache", str(tmp_path / "c")]
    res = CliRunner().invoke(main, [*base, "--prior", "region"])
    assert res.exit_code == 2 and "did you mean 'regions'" in res.output
    res = CliRunner().invoke(main, [*base, "--prior", "regions", "--prior-checkpoint", "x.pth"])
    assert res.exit_code == 2 and "takes no checkpoint" in res.output
    res = CliRunner().invoke(main, [*base, "--prior", "regions", "--prior-option", "n_segments"])
    assert res.exit_code == 2 and "expected KEY=VALUE" in res.output
    res = CliRunner().invoke(main, [*base, "--prior", "regions", "--prior-option", "n_segments=0"])
    assert res.exit_code == 2 and "n_segments must be >= 1" in res.output
    monkeypatch.delenv(ENV_CHECKPOINT, raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty"))
    res = CliRunner().invoke(main, [*base, "--prior", "robustsam", "--prior-checkpoint", "robustsam-vit-b"])
    assert res.exit_code == 1 and "robustsam_checkpoint_b.pth" in res.output and "huggingface.co" in res.output
    empty = tmp_path / "empty-folder"
    empty.mkdir()
    res = CliRunner().invoke(main, ["prior-cache", str(empty), "--prior", "none", "--cache", str(tmp_path / "c")])
    assert res.exit_code == 1 and "no image files were found" in res.output


def test_robustsam_prior_with_a_checkpoint(tmp_path):
    from robustsam_prior import build_robustsam
    from robustsam_prior.core.checkpoint import save_checkpoint

    tiny = {
        "img_size": 64, "patch": 16, "enc_dim": 32, "enc_depth": 1, "enc_heads": 2, "global_attn": [0],
        "window": 2, "prompt_dim": 64, "dec_depth": 1, "dec_mlp": 64, "dec_heads": 2, "iou_hidden": 32,
        "mask_in_chans": 16,
    }  # fmt: skip
    torch.manual_seed(0)
    ckpt = tmp_path / "tiny.safetensors"
    save_checkpoint(ckpt, build_robustsam(tiny).state_dict(), {"config": tiny})
    folder, cache = make_folder(tmp_path / "in", n=2), tmp_path / "cache"
    args = ["prior-cache", str(folder), "--prior", "robustsam", "--prior-checkpoint", str(ckpt),
            "--prior-option", "points_per_side=2", "--cache", str(cache), "--json"]
    res = run(args)
    assert res.exit_code == 0, res.output
    report = json.loads(res.output.strip().splitlines()[-1])
    assert report["computed"] == 2 and len(report["prior"]["checkpoint_sha256"]) == 64
    assert len(entries(cache)) == 2


@pytest.mark.slow  # two interpreters importing torch and joining a gloo group: ~10 s on 2 cores
def test_torchrun_two_processes_each_image_cached_once(tmp_path):
    folder, cache = make_folder(tmp_path / "in", n=5), tmp_path / "cache"
    script = tmp_path / "cli.py"
    script.write_text("from pipelines.cli import main\nmain()\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
           "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(script), "prior-cache", str(folder), "--prior", "regions", "--cache", str(cache), "--json"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    reports = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert len(reports) == 1  # only rank 0 prints
    report = reports[0]
    assert report["world_size"] == 2 and report["images"] == 5
    assert report["computed"] == 5 and report["already_cached"] == 0  # disjoint shards: no image twice
    assert len(entries(cache)) == 5


def test_a_cache_inside_the_input_is_not_read_as_input(tmp_path):
    folder = make_folder(tmp_path / "in", n=2)
    cache = folder / "cache"
    for _ in range(2):
        res = run(["prior-cache", str(folder), "--prior", "regions", "--cache", str(cache), "-r"])
        assert res.exit_code == 0 and "prior-cache: 2 ok, 0 failed, 0 skipped" in res.output, res.output
    assert len(entries(cache)) == 2
    res = run(["prior-cache", "/dev/zero", "--prior", "regions", "--cache", str(cache)])
    assert res.exit_code == 1 and "is a character device, not an image file or a folder" in res.output
