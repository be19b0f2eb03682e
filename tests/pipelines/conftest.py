"""Fixtures for the pipelines tests: tiny paired hazy/clean folders and a tiny training recipe."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]


def make_pairs(root: Path, n: int, size: int, seed: int) -> tuple[Path, Path]:
    """``n`` smooth random clean images and their hazy versions I*t + A*(1-t) as 8-bit PNGs."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    lq_dir, gt_dir = root / "hazy", root / "clear"
    lq_dir.mkdir(parents=True)
    gt_dir.mkdir(parents=True)
    yy, xx = np.mgrid[0:size, 0:size] / size
    for i in range(n):
        img = np.zeros((size, size, 3))
        for c in range(3):
            for _ in range(3):
                fx, fy, ph = rng.uniform(0.5, 4, 2).tolist() + [rng.uniform(0, 6.3)]
                img[..., c] += np.sin(2 * np.pi * (fx * xx + fy * yy) + ph)
        img = (img - img.min()) / (np.ptp(img) + 1e-9)
        blocks = rng.random((4, 4, 3)).repeat(size // 4, 0).repeat(size // 4, 1)
        clean = 0.6 * img + 0.4 * blocks
        t = 0.35 + 0.4 * yy[..., None]
        hazy = clean * t + 0.85 * (1 - t)
        Image.fromarray((clean * 255).round().astype(np.uint8)).save(gt_dir / f"img{i}.png")
        Image.fromarray((hazy * 255).round().astype(np.uint8)).save(lq_dir / f"img{i}.png")
    return lq_dir, gt_dir


def tiny_recipe(tmp: Path, *, iterations: int, checkpoint_every: int, batch_size: int = 4) -> Path:
    """A paired-data recipe for a width-8, two-level NAFNet (tens of iterations per second on CPU)."""
    train_lq, train_gt = make_pairs(tmp / "train", 6, 64, seed=1)
    val_lq, val_gt = make_pairs(tmp / "val", 2, 48, seed=2)
    recipe = {
        "name": "tiny",
        "task": "dehaze",
        "seed": 3,
        "output_dir": str(tmp / "run"),
        "model": {"arch": "nafnet", "arch_kwargs": {"width": 8, "enc_blocks": [1], "middle_blocks": 1, "dec_blocks": [1]}},
        "data": {
            "train": {"type": "paired", "lq_dir": str(train_lq), "gt_dir": str(train_gt), "crop_size": 32},
            "val": {"type": "paired", "lq_dir": str(val_lq), "gt_dir": str(val_gt), "crop_size": 0},
        },
        "train": {
            "iterations": iterations,
            "batch_size": batch_size,
            "optim": {"lr": "2e-3", "weight_decay": 1e-4},
            "scheduler": {"warmup_iters": 3},
            "losses": [{"type": "charbonnier"}, {"type": "psnr", "weight": 0.01}],
            "grad_clip": 0.5,
            "ema": {"decay": 0.9},
            "checkpoint_every": checkpoint_every,
            "log_every": 5,
            "threads": 1,
            "tensorboard": False,
        },
    }
    path = tmp / "recipe.yml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def cli_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env["OMP_NUM_THREADS"] = "1"
    return env


CLI_SCRIPT = "from pipelines.cli import main\nmain()\n"


@pytest.fixture
def cli_script(tmp_path: Path) -> Path:
    """A script that runs the CLI (for subprocesses and torchrun, which take a script path)."""
    p = tmp_path / "cli_main.py"
    p.write_text(CLI_SCRIPT)
    return p


@pytest.fixture
def one_thread():
    import torch

    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


PYTHON = sys.executable


@pytest.fixture
def recipe_factory():
    """``recipe_factory(tmp, iterations=, checkpoint_every=, batch_size=) -> recipe path``."""
    return tiny_recipe


@pytest.fixture
def pairs_factory():
    """``pairs_factory(root, n, size, seed) -> (lq_dir, gt_dir)``."""
    return make_pairs


@pytest.fixture
def subprocess_env() -> dict[str, str]:
    return cli_env()


def kill_when_file_appears(cmd: list[str], env: dict[str, str], path: Path, timeout: float = 120.0) -> None:
    """Run ``cmd``, SIGKILL it as soon as ``path`` exists, and assert it was the kill that ended it."""
    import signal
    import subprocess
    import time

    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + timeout
    while not path.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    out = proc.communicate()[0].decode(errors="replace")
    assert proc.returncode == -signal.SIGKILL, f"the run ended on its own before the kill:\n{out[-2000:]}"


@pytest.fixture
def kill_when():
    """``kill_when(cmd, env, path)``: see :func:`kill_when_file_appears`."""
    return kill_when_file_appears
