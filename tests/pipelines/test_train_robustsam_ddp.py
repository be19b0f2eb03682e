"""RobustSAM anti-degradation training under torchrun: two gloo processes on the CPU train the smoke recipe
to the weights, BatchNorm statistics, Adam state and losses of one process on the same global batch, and
a two-process ``--resume`` of that run ends where an uninterrupted single-process run does."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pipelines.commands.train import load_train_config
from pipelines.config import to_dict
from robustsam_prior.core.checkpoint import read_checkpoint
from robustsam_prior.training.trainer import load_training_state, train_from_options

REPO = Path(__file__).resolve().parents[2]
SMOKE = "pipelines/train_robustsam_smoke.yml"


def torchrun(cli_script: Path, env: dict, *args: str) -> None:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone",
           str(cli_script), "train", SMOKE, *args]
    res = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]


def single(out: Path, *overrides: str) -> dict:
    cfg = load_train_config(str(REPO / SMOKE), [f"output_dir={out}", *overrides])
    return train_from_options(cfg, resolved_config=to_dict(cfg), progress=False)


def assert_same_run(a: Path, b: Path, *, steps: int) -> None:
    """Two runs agree within float tolerance: losses at every logged step, BatchNorm statistics, Adam's
    moments (to 0.1% of each tensor's scale) and the trained parameters (state/latest.pt and the weight file).

    Their gradients agree to about 1e-6 relative, but Adam divides each gradient by its own RMS: an
    element whose gradient is at rounding level (near Adam's eps, 1e-8) moves by up to ``lr`` per step in
    a direction that rounding decides. A handful of the 505k elements therefore differ by more than 1e-5,
    never by more than ``2 * lr * steps``; every other element agrees to 1e-5.
    """
    lr = load_train_config(str(REPO / SMOKE), []).optim.lr
    sa, sb = load_training_state(a / "state" / "latest.pt"), load_training_state(b / "state" / "latest.pt")
    assert sa["trainer"]["step"] == sb["trainer"]["step"] == steps
    la = [json.loads(line) for line in (a / "log.jsonl").read_text().splitlines()]
    lb = [json.loads(line) for line in (b / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in la] == [r["step"] for r in lb] == list(range(1, steps + 1))
    for ra, rb in zip(la, lb):
        for k in rb:
            assert ra[k] == pytest.approx(rb[k], rel=1e-5, abs=1e-7), (ra["step"], k)
    oa, ob = sa["trainer"]["optimizer"]["state"], sb["trainer"]["optimizer"]["state"]
    assert oa.keys() == ob.keys()
    for i in ob:
        for k in ("exp_avg", "exp_avg_sq"):
            ref = ob[i][k]
            # within 0.1% of the tensor's scale: the few parameters Adam moved apart feed back into the gradients
            torch.testing.assert_close(oa[i][k], ref, rtol=1e-3, atol=1e-3 * float(ref.abs().max()), msg=f"{i}.{k}")
    wa = read_checkpoint(a / "models" / "final.safetensors").state_dict
    wb = read_checkpoint(b / "models" / "final.safetensors").state_dict
    for ma, mb in [(sa["trainer"]["model"], sb["trainer"]["model"]), (wa, wb)]:
        assert ma.keys() == mb.keys()
        total = off = 0
        for k in mb:
            diff = (ma[k].double() - mb[k].double()).abs()
            if "running" in k or "num_batches" in k:  # buffers: averaged over the ranks, no Adam
                torch.testing.assert_close(ma[k], mb[k], rtol=1e-5, atol=1e-6, msg=k)
            assert float(diff.max()) <= 2 * lr * steps, k
            total += diff.numel()
            off += int((diff > 1e-5).sum())
        assert off <= total * 1e-4, f"{off} of {total} elements differ by more than 1e-5"


@pytest.mark.slow
def test_two_gloo_ranks_equal_one_process_and_resume(tmp_path, cli_script, subprocess_env, one_thread):
    ddp, one = tmp_path / "ddp", tmp_path / "one"
    torchrun(cli_script, subprocess_env, f"output_dir={ddp}", "train.steps=3", "--json")
    summary = json.loads((ddp / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["steps"] == 3
    reference = single(one, "train.steps=3")
    assert reference["world_size"] == 1
    assert_same_run(ddp, one, steps=3)

    # the comparison is between trained runs: parameters and BatchNorm statistics moved from their start
    cfg = load_train_config(str(REPO / SMOKE), [])
    from robustsam_prior.loading import build_robustsam

    torch.manual_seed(cfg.seed)
    init = build_robustsam(cfg.model.model_config(), None).state_dict()
    trained = load_training_state(ddp / "state" / "latest.pt")["trainer"]["model"]
    assert max(float((trained[k] - init[k]).abs().max()) for k in trained if "running" not in k) > 1e-3
    stats = [k for k in trained if k.endswith("running_mean")]
    assert stats and max(float((trained[k] - init[k]).abs().max()) for k in stats) > 1e-4

    # exact resume under torchrun: continue the two-process run to step 5; it ends where one uninterrupted
    # process does
    torchrun(cli_script, subprocess_env, f"output_dir={ddp}", "train.steps=5", "--resume")
    assert json.loads((ddp / "summary.json").read_text())["resumed_from"] == 3
    single(tmp_path / "five", "train.steps=5")
    assert_same_run(ddp, tmp_path / "five", steps=5)


@pytest.mark.slow
def test_two_gloo_ranks_with_sam_decoder_training(tmp_path, cli_script, subprocess_env, one_thread):
    """The official mode also trains SAM's decoder, whose IoU head and unused mask MLPs get no gradient:
    DDP looks for such parameters, and the run still equals one process."""
    ddp, one = tmp_path / "ddp", tmp_path / "one"
    torchrun(cli_script, subprocess_env, f"output_dir={ddp}", "train.steps=2", "train.train_sam_decoder=true")
    single(one, "train.steps=2", "train.train_sam_decoder=true")
    assert_same_run(ddp, one, steps=2)
    state = load_training_state(ddp / "state" / "latest.pt")["trainer"]["model"]
    assert "mask_decoder.iou_prediction_head.layers.0.weight" in state  # SAM's decoder was trained
