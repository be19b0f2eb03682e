"""Two-process DDP (torchrun, gloo, CPU) equals a single-process run with the same global batch."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from pipelines.commands.train import load_train_config
from pipelines.config import to_dict
from restore.training.state import load_state
from restore.training.trainer import train_restoration
from robustsam_prior.core.checkpoint import read_checkpoint


@pytest.mark.slow
def test_torchrun_two_ranks_match_single_process(tmp_path, recipe_factory, cli_script, subprocess_env, one_thread):
    recipe = recipe_factory(tmp_path, iterations=12, checkpoint_every=0, batch_size=4)
    ddp_dir = tmp_path / "ddp"
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone",
        str(cli_script), "train", str(recipe), f"output_dir={ddp_dir}", "--json",
    ]
    res = subprocess.run(cmd, env=subprocess_env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    summary = json.loads((ddp_dir / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["iterations"] == 12
    digests = summary["rank_parameter_sha256"]
    assert len(digests) == 2 and digests[0] == digests[1], "ranks hold different parameters"

    cfg = load_train_config(str(recipe), [f"output_dir={tmp_path / 'single'}"])
    single = train_restoration(cfg, resolved_config=to_dict(cfg))
    assert single["world_size"] == 1
    a = load_state(ddp_dir / "state" / "latest.pt")["model"]
    b = load_state(tmp_path / "single" / "state" / "latest.pt")["model"]
    assert a.keys() == b.keys()
    for k in b:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5, msg=k)
    wa = read_checkpoint(ddp_dir / "models" / "final.safetensors").state_dict
    wb = read_checkpoint(tmp_path / "single" / "models" / "final.safetensors").state_dict
    for k in wb:
        torch.testing.assert_close(wa[k], wb[k], rtol=1e-4, atol=1e-5, msg=k)
    # validation covered the whole set on both runs (sharded and summed across ranks)
    for k, v in single["metrics"].items():
        assert summary["metrics"][k] == pytest.approx(v, abs=1e-3), k
    # and the parameters actually moved (the comparison is not between two untrained nets)
    from restore.archs import build_arch

    torch.manual_seed(cfg.seed)
    init = build_arch(cfg.model.arch, **cfg.model.arch_kwargs).state_dict()
    moved = max(float((a[k] - init[k]).abs().max()) for k in init)
    assert moved > 1e-3
