"""``robustsam-restore basicsr``: BasicSR's own train and test pipelines with the project's MAP-NAFNet, the
prior dataset and the prior-passing model, on the shipped smoke options files and pairs the test makes."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
import torch
import yaml
from click.testing import CliRunner

from pipelines.cli import main

from .conftest import REPO, make_pairs

SMOKE = REPO / "pipelines" / "basicsr" / "smoke_map_nafnet.yml"
SMOKE_TEST = REPO / "pipelines" / "basicsr" / "smoke_map_nafnet_test.yml"


@pytest.fixture
def smoke_dir(tmp_path, monkeypatch, one_thread) -> Path:
    """The current folder is ``tmp_path``, holding ``smoke_data/{lq,gt}``: four 64x64 hazy/clean pairs."""
    lq, gt = make_pairs(tmp_path / "smoke_data", 4, 64, seed=3)
    lq.rename(tmp_path / "smoke_data" / "lq")
    gt.rename(tmp_path / "smoke_data" / "gt")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _options(tmp_path: Path, source: Path, edit) -> Path:
    opt = yaml.safe_load(source.read_text())
    edit(opt)
    path = tmp_path / f"edited_{source.name}"
    path.write_text(yaml.safe_dump(opt))
    return path


def test_basicsr_trains_map_nafnet_with_its_own_loop_then_tests_it(smoke_dir):
    runner = CliRunner()
    res = runner.invoke(main, ["basicsr", "-opt", str(SMOKE), "--root", "runs/basicsr"])
    assert res.exit_code == 0, res.output
    exp = smoke_dir / "runs" / "basicsr" / "experiments" / "smoke_map_nafnet"
    assert not (smoke_dir / "experiments").exists()  # everything under --root
    models = exp / "models"
    assert sorted(p.name for p in models.iterdir()) == ["net_g_2.pth", "net_g_4.pth", "net_g_latest.pth"]
    assert (exp / "training_states" / "4.state").is_file()
    # the prior was computed once per input image and read back for later samples
    assert len(list((smoke_dir / "smoke_data" / "prior_cache").rglob("*.safetensors"))) == 4

    after2 = torch.load(models / "net_g_2.pth", weights_only=True)["params"]
    latest = torch.load(models / "net_g_latest.pth", weights_only=True)["params"]
    assert set(after2) == set(latest) and any(k.startswith("map.") for k in latest)  # MAP-NAFNet's MAP unit
    assert all(torch.isfinite(v).all() for v in latest.values())
    changed = [k for k in latest if not torch.equal(after2[k], latest[k])]
    assert len(changed) > len(latest) // 2  # iterations 3 and 4 moved the weights
    assert any(not torch.equal(after2[k], latest[k]) for k in latest if k.startswith("map."))  # prior path trained

    log = next(exp.glob("train_smoke_map_nafnet_*.log")).read_text()
    losses = [float(v) for v in re.findall(r"l_pix: (\S+)", log)]
    assert len(losses) == 4 and all(math.isfinite(v) for v in losses)
    assert re.search(r"# psnr: \d+\.\d+", log)  # BasicSR's validation ran, on the prior dataset too

    res = runner.invoke(main, ["basicsr", "-opt", str(SMOKE_TEST), "--test", "--root", "runs/basicsr"])
    assert res.exit_code == 0, res.output
    results = smoke_dir / "runs" / "basicsr" / "results" / "smoke_map_nafnet_test"
    assert len(list((results / "visualization" / "smoke_test").glob("*.png"))) == 4
    log = next(results.glob("test_smoke_map_nafnet_test_*.log")).read_text()  # its own log, same process
    assert "Loading MapNAFNet model from" in log and re.search(r"# psnr: \d+\.\d+", log)


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda o: o["network_g"].update(type="MapNafNet"), "network_g.type: BasicSR has no 'MapNafNet' (did you mean 'MapNAFNet'?)"),
        (lambda o: o.update(model_type="PriorModel"), "model_type: BasicSR has no 'PriorModel'"),
        (lambda o: o.pop("datasets"), "missing key(s) datasets that BasicSR needs"),
        (lambda o: o["datasets"]["train"].update(prior_cahce="x"),
         "datasets.train (smoke_train): unknown key 'prior_cahce' (did you mean 'prior_cache'?)"),
        (lambda o: o["datasets"]["train"].update(dataroot_gt="nowhere"), "datasets.train (smoke_train).dataroot_gt: "
         "folder not found: nowhere"),
        (lambda o: o["train"]["optim_g"].update(type="Lion"), "NotImplementedError: optimizer Lion is not supperted yet."),
        # BasicSR's own dataset yields no prior: the model says which dataset to use
        (lambda o: o["datasets"]["train"].update(type="PairedImageDataset", prior=None, prior_cache=None, scale=1),
         "network MapNAFNet needs a prior, but the batch has no 'prior_labels'"),
        (lambda o: o["train"]["optim_g"].update(lr=1e37), "the loss is not finite"),
    ],
)
def test_basicsr_errors_are_one_line_naming_the_file(smoke_dir, edit, message):
    def and_clean(o):
        edit(o)
        if o.get("datasets", {}).get("train", {}).get("type") == "PairedImageDataset":
            for key in ("prior", "prior_cache"):
                o["datasets"]["train"].pop(key)
            o.pop("val")
            o["datasets"].pop("val")

    opt = _options(smoke_dir, SMOKE, and_clean)
    res = CliRunner().invoke(main, ["basicsr", "-opt", str(opt), "--root", "runs"])
    assert res.exit_code == 1, res.output
    assert f"Error: {opt}" in res.output and message in res.output
    assert "Traceback" not in res.output


def test_basicsr_refuses_python_tags_other_shapes_and_gpus_it_does_not_have(smoke_dir):
    tagged = smoke_dir / "tagged.yml"
    tagged.write_text(SMOKE.read_text() + "\nextra: !!python/object/apply:os.getcwd []\n")
    res = CliRunner().invoke(main, ["basicsr", "-opt", str(tagged)])
    assert res.exit_code == 1 and str(tagged) in res.output and "yaml.safe_load" in res.output
    assert not (smoke_dir / "experiments").exists()
    listed = smoke_dir / "list.yml"
    listed.write_text("- name: x\n")
    res = CliRunner().invoke(main, ["basicsr", "-opt", str(listed)])
    assert res.exit_code == 1 and f"{listed}: the top level must be a mapping, got list" in res.output
    opt = _options(smoke_dir, SMOKE, lambda o: o.update(datasets={}))
    res = CliRunner().invoke(main, ["basicsr", "-opt", str(opt)])
    assert res.exit_code == 1 and "datasets must map phases" in res.output
    if not torch.cuda.is_available():
        opt = _options(smoke_dir, SMOKE, lambda o: o.update(num_gpu=1))
        res = CliRunner().invoke(main, ["basicsr", "-opt", str(opt)])
        assert res.exit_code == 1 and "num_gpu is 1 but no CUDA device is available" in res.output
