"""The restoration trainer's log: keys that say what they are; TensorBoard on by default in the shipped
recipes, off with --no-tensorboard; tensorboard is a dependency of the package, needed only when it is on."""

from __future__ import annotations

import json
import sys

import pytest
import yaml
from click.testing import CliRunner

from pipelines.cli import main


def _recipe(recipe_factory, tmp_path, **train):
    path = recipe_factory(tmp_path, iterations=10, checkpoint_every=0)
    cfg = yaml.safe_load(path.read_text())
    cfg["train"].pop("tensorboard")  # the default
    cfg["train"].update(val_every=0, **train)
    path.write_text(yaml.safe_dump(cfg))
    return path


def _train(*args):
    res = CliRunner().invoke(main, ["train", *map(str, args), "--json"])
    assert res.exit_code == 0, res.output
    return res


def test_log_records_hold_interval_means_under_names_that_say_so(tmp_path, recipe_factory, one_thread):
    # losses: charbonnier (weight 1) + psnr (weight 0.01); grad_clip 0.5; a record every 5 iterations
    _train(_recipe(recipe_factory, tmp_path), "--no-tensorboard")
    records = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    train_records = [r for r in records if "loss_mean" in r]
    assert [r["iteration"] for r in train_records] == [5, 10]
    for r in train_records:
        assert set(r) == {"iteration", "loss_mean", "loss_mean/charbonnier", "loss_mean/psnr", "grad_norm_mean",
                          "lr", "it_per_s"}
        # the terms are means over the same iterations as the total: the weighted sum of the means is its mean
        assert r["loss_mean"] == pytest.approx(r["loss_mean/charbonnier"] + 0.01 * r["loss_mean/psnr"], rel=1e-6)
    from restore.training.trainer import LOG_KEYS

    documented = {k.replace("<term>", "charbonnier") for k in LOG_KEYS} | {"loss_mean/psnr"}
    assert set(train_records[0]) <= documented


def test_tensorboard_is_on_by_default_and_no_tensorboard_turns_it_off(tmp_path, recipe_factory, one_thread):
    from pathlib import Path

    from pipelines.config import read_yaml
    from restore.training.options import LoopOptions

    assert LoopOptions().tensorboard is True
    recipes = sorted(Path("pipelines").glob("train_*.yml"))
    restoration = [p for p in recipes if read_yaml(p).get("kind", "restoration") == "restoration"]
    assert len(restoration) >= 10  # the defaults, their stages and ablations, reside and gopro
    for p in restoration:  # with its base merged in (the stage recipes)
        assert read_yaml(p)["train"].get("tensorboard", True) is True, p
    recipe = _recipe(recipe_factory, tmp_path / "a")
    _train(recipe)
    assert list((tmp_path / "a" / "run" / "tb").glob("events.out.tfevents.*"))
    recipe = _recipe(recipe_factory, tmp_path / "b")
    _train(recipe, "--no-tensorboard")
    assert not (tmp_path / "b" / "run" / "tb").exists()
    saved = (tmp_path / "b" / "run" / "config.yml").read_text()
    assert "# override: train.tensorboard=false" in saved and yaml.safe_load(saved)["train"]["tensorboard"] is False
    res = CliRunner().invoke(main, ["train", "pipelines/train_robustsam_smoke.yml", "--no-tensorboard"])
    assert res.exit_code == 1 and "kind 'robustsam' training writes no TensorBoard logs" in res.output


def test_tensorboard_is_a_dependency_needed_only_when_its_logs_are_on(tmp_path, recipe_factory, one_thread,
                                                                    monkeypatch):
    from pathlib import Path

    setup = (Path(__file__).resolve().parents[2] / "setup.py").read_text()
    assert '"tensorboard>=' in setup  # install_requires: an installed package has it
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # `import` raises ImportError
    _train(_recipe(recipe_factory, tmp_path / "off"), "--no-tensorboard")  # never imported
    assert (tmp_path / "off" / "run" / "models" / "final.safetensors").is_file()
    res = CliRunner().invoke(main, ["train", str(_recipe(recipe_factory, tmp_path / "on"))])
    assert res.exit_code == 1 and isinstance(res.exception, ImportError), res.output  # a broken install shows
