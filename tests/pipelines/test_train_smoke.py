"""The shipped smoke recipe trains on CPU in seconds: loss falls and validation PSNR beats the input."""

from __future__ import annotations

import json

import pytest
import yaml
from click.testing import CliRunner

from pipelines.cli import main
from restore.archs import build_arch
from robustsam_prior.core.checkpoint import load_strict, read_checkpoint


@pytest.mark.slow
def test_smoke_recipe_learns_and_writes_a_loadable_checkpoint(tmp_path, one_thread):
    out = tmp_path / "smoke"
    res = CliRunner().invoke(
        main, ["train", "pipelines/smoke_train_dehaze.yml", f"output_dir={out}", "train.tensorboard=true", "--json"]
    )
    assert res.exit_code == 0, res.output
    summary = json.loads(res.output[res.output.index("{"):])
    assert summary["wall_time_s"] < 120
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    losses = [r["loss_mean"] for r in log if "loss_mean" in r]
    assert len(losses) == 15
    assert sum(losses[-5:]) / 5 < 0.75 * losses[0], losses
    m = summary["metrics"]
    assert m["val/psnr"] > m["val/input_psnr"] + 1.0, m
    # resolved config beside the outputs, with the override applied and recorded
    resolved_text = (out / "config.yml").read_text()
    assert "# override: output_dir=" in resolved_text
    resolved = yaml.safe_load(resolved_text)
    assert resolved["output_dir"] == str(out) and resolved["train"]["optim"]["lr"] == 2e-3
    # the checkpoint: metadata contract + loads strictly into the architecture it names
    ck = read_checkpoint(out / "models" / "final.safetensors")
    meta = ck.metadata
    assert meta["format"] == "robustsam-restore/restoration"
    assert meta["task"] == "dehaze" and meta["arch"] == "map_nafnet"
    assert meta["prior"]["name"] == "regions" and meta["prior"]["options"]["n_segments"] == 32
    assert meta["metrics"] == m and meta["config"]["name"] == "smoke_dehaze" and meta["iteration"] == 150
    assert meta["metric_conventions"] == "PSNR/SSIM: BasicSR 1.4 convention, RGB, crop 0, 8-bit"
    load_strict(build_arch(meta["arch"], **meta["arch_kwargs"]), ck.state_dict, source=ck.path)
    assert sorted(p.name for p in (out / "models").glob("iter_*")) == [
        "iter_0000050.safetensors", "iter_0000100.safetensors", "iter_0000150.safetensors"
    ]
    assert list((out / "tb").iterdir()), "no TensorBoard events"


def test_train_command_errors(tmp_path):
    runner = CliRunner()
    res = runner.invoke(main, ["train", "pipelines/smoke_train_dehaze.yml", "train.optim.lr=fast"])
    assert res.exit_code != 0 and "train.optim.lr: expected a number, got 'fast'" in res.output
    res = runner.invoke(main, ["train", "pipelines/smoke_train_dehaze.yml", f"output_dir={tmp_path}", "--resume"])
    assert res.exit_code != 0 and "no training state" in res.output
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "latest.pt").write_bytes(b"x")
    res = runner.invoke(main, ["train", "pipelines/smoke_train_dehaze.yml", f"output_dir={tmp_path}"])
    assert res.exit_code != 0 and "already holds a run" in res.output
    res = runner.invoke(main, ["train", "pipelines/smoke_train_dehaze.yml", "kind=robustsam", f"output_dir={tmp_path}/x"])
    # kind: robustsam selects the RobustSAM recipe format, which has no restoration keys
    assert res.exit_code != 0 and "task: unknown key" in res.output
    res = runner.invoke(
        main, ["train", "pipelines/smoke_train_dehaze.yml", f"output_dir={tmp_path}/y", "data.train.crop_size=4000"]
    )
    assert res.exit_code != 0 and "data.train.crop_size: 4000 is larger than image" in res.output


def test_infinite_validation_psnr_is_logged_as_strict_json(tmp_path, recipe_factory, one_thread):
    """A validation pair whose input equals its ground truth has an infinite input PSNR: the log, the
    summary and the --json output spell it "inf", which strict JSON readers accept."""
    recipe = recipe_factory(tmp_path, iterations=4, checkpoint_every=0, batch_size=2)
    cfg = yaml.safe_load(recipe.read_text())
    cfg["data"]["val"]["lq_dir"] = cfg["data"]["val"]["gt_dir"]
    cfg["train"].update(log_every=2, val_every=0)
    recipe.write_text(yaml.safe_dump(cfg))
    res = CliRunner().invoke(main, ["train", str(recipe), "--json"])
    assert res.exit_code == 0, res.output

    def strict(text):
        return json.loads(text, parse_constant=lambda token: pytest.fail(f"not JSON: {token}"))

    out = tmp_path / "run"
    log = [strict(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["val/input_psnr"] for r in log if "val/input_psnr" in r] == ["inf"]
    assert strict((out / "summary.json").read_text())["metrics"]["val/input_psnr"] == "inf"
    assert strict(res.output[res.output.index("{"):])["metrics"]["val/input_psnr"] == "inf"


@pytest.mark.parametrize("error", [FileNotFoundError("no such file: x.png"), ValueError("bad setting"),
                                   FloatingPointError("the loss is nan"), "checkpoint"])
@pytest.mark.parametrize("recipe, entry", [
    ("pipelines/smoke_train_dehaze.yml", "restore.training.trainer.train_restoration"),
    ("pipelines/train_robustsam_smoke.yml", "robustsam_prior.training.trainer.train_from_options"),
])
def test_both_kinds_of_training_report_the_same_errors_as_one_line(tmp_path, monkeypatch, recipe, entry, error):
    from robustsam_prior.core.checkpoint import CheckpointError

    if error == "checkpoint":
        error = CheckpointError("w.pth: not a checkpoint")

    def fail(*args, **kwargs):
        raise error

    monkeypatch.setattr(entry, fail)
    res = CliRunner().invoke(main, ["train", recipe, f"output_dir={tmp_path / 'run'}"])
    assert res.exit_code == 1 and res.output.strip() == f"Error: {error}", res.output
    assert not isinstance(res.exception, type(error))  # handled, not a traceback


def test_validation_psnr_is_the_reporting_convention():
    import torch

    from eval.metrics import psnr
    from pipelines.commands.train import eval_metrics

    g = torch.Generator().manual_seed(0)
    a, b = torch.rand(1, 3, 16, 16, generator=g), torch.rand(1, 3, 16, 16, generator=g)
    got = eval_metrics()["psnr"](a, b)
    assert got == psnr(a, b, quantize=True).item() and got != psnr(a, b).item()  # rounded to 8 bits


def test_models_names_the_convention_a_checkpoint_records(tmp_path):
    from robustsam_prior.core.checkpoint import save_checkpoint

    kw = {"width": 4, "enc_blocks": [1], "middle_blocks": 1, "dec_blocks": [1]}
    state = build_arch("nafnet", **kw).state_dict()
    base = {"format": "robustsam-restore/restoration", "arch": "nafnet", "arch_kwargs": kw, "task": "dehaze",
            "prior": None, "metrics": {"val/psnr": 20.0}}  # fmt: skip
    line = "PSNR/SSIM: BasicSR 1.4 convention, RGB, crop 0, 8-bit"
    save_checkpoint(tmp_path / "new.safetensors", state, {**base, "metric_conventions": line})
    save_checkpoint(tmp_path / "old.safetensors", state, base)
    res = CliRunner().invoke(main, ["models", "--task", "dehaze", str(tmp_path / "new.safetensors"),
                                    str(tmp_path / "old.safetensors")])  # fmt: skip
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    # grouped by convention: packaged models that record the same one share the line
    assert any(x.startswith("metrics of ") and "new.safetensors" in x.split(": ")[0] and x.endswith(f": {line}")
               for x in lines), lines
    assert any(x.startswith("metrics of ") and "old.safetensors" in x and x.endswith(": convention not recorded")
               for x in lines), lines
