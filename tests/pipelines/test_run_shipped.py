"""`run`: a run's saved pipeline.yml runs again as it is; shipped pipelines run by name from any folder and
`run --list` lists them."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml
from click.testing import CliRunner
from PIL import Image

from pipelines.cli import main


@pytest.fixture
def photos(tmp_path):
    """Two small RGB photos in ``tmp_path/photos``."""
    rng = np.random.default_rng(3)
    root = tmp_path / "photos"
    root.mkdir()
    yy, xx = np.mgrid[0:36, 0:48] / 36
    for name in ("a.png", "b.png"):
        base = np.stack([np.sin(5 * xx + rng.uniform(0, 6)), np.cos(4 * yy + rng.uniform(0, 6)), xx * yy], -1)
        img = (base - base.min()) / np.ptp(base)
        Image.fromarray((img * 255).astype(np.uint8)).save(root / name)
    return root


def _run(args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_the_saved_pipeline_yml_runs_again_as_it_is(tmp_path, photos, monkeypatch):
    monkeypatch.chdir(tmp_path)
    # a pipeline written here with every kind of step that needs no model
    (tmp_path / "p.yml").write_text(
        "kind: pipeline\nname: p\noutput_dir: first\nsteps:\n"
        "  - {step: degrade, kind: haze, severity: 2, seed: 4, save: true}\n"
        "  - {step: prior, name: regions, options: {n_segments: 8}}\n"
        "  - {step: segment, name: regions, options: {n_segments: 8}, targets: [input, clean]}\n"
        "  - {step: eval, metrics: [psnr, ssim]}\n"
        "  - {step: report, path: report.json}\n"
    )
    res = _run(["run", "p.yml", "input=photos"])
    assert res.exit_code == 0, res.output
    saved = tmp_path / "first" / "pipeline.yml"
    steps = yaml.safe_load(saved.read_text())["steps"]
    assert [s["step"] for s in steps] == ["degrade", "prior", "segment", "eval", "report"]
    first = json.loads((tmp_path / "first" / "report.json").read_text())

    res = _run(["run", saved])  # as it is: no overrides
    assert res.exit_code == 0, res.output
    again = json.loads((tmp_path / "first" / "report.json").read_text())
    assert again["mean"] == pytest.approx(first["mean"]) and again["images"] == 2
    # and the copy a rerun saves is the same configuration again
    assert yaml.safe_load(saved.read_text()) == yaml.safe_load((tmp_path / "first" / "pipeline.yml").read_text())
    # elsewhere, with an override
    res = _run(["run", saved, "output_dir=second"])
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "second" / "report.json").read_text())["mean"] == pytest.approx(first["mean"])


def test_run_list_shows_the_shipped_pipelines_and_no_recipes(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    res = _run(["run", "--list"])
    assert res.exit_code == 0, res.output
    lines = {line.split()[0]: line for line in res.output.splitlines()}
    assert {"dehaze", "deblur", "restore_then_segment", "benchmark_dehaze_synthetic",
            "benchmark_deblur_synthetic", "benchmark_dehaze_paired"} == set(lines)
    assert "Dehaze a folder" in lines["dehaze"] and "Deblur a folder" in lines["deblur"]
    # the header's first sentence, joined over its comment lines, without the usage lines below it
    assert lines["benchmark_dehaze_paired"].endswith("matched by relative path or file stem.")
    assert "robustsam-restore" not in res.output


@pytest.mark.slow
def test_a_shipped_pipeline_runs_by_name_from_any_folder(tmp_path, photos, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no pipelines/ folder here
    res = _run(["run", "dehaze", "input=photos", "output_dir=out", "device=cpu"])
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in (tmp_path / "out" / "restored").iterdir()) == ["a.png", "b.png"]
    assert "# source: " in (tmp_path / "out" / "pipeline.yml").read_text()
    # pkg:// names the same file
    res = _run(["run", "pkg://pipelines/dehaze.yml", "input=photos/a.png", "output_dir=out2", "device=cpu"])
    assert res.exit_code == 0, res.output
    a = np.asarray(Image.open(tmp_path / "out" / "restored" / "a.png"))
    assert np.array_equal(a, np.asarray(Image.open(tmp_path / "out2" / "restored" / "a.png")))


def test_an_unknown_pipeline_name_is_an_error_listing_the_shipped_ones(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "dehaz").mkdir()
    res = _run(["run", "dehaz", "input=x"])
    assert res.exit_code == 1
    assert "dehaz: a folder, not a pipeline file, and not the name of a shipped pipeline" in res.output
    assert "did you mean 'dehaze'" in res.output and "benchmark_dehaze_paired" in res.output
    res = _run(["run", "pkg://pipelines/nothing.yml"])
    assert res.exit_code == 1 and "pkg://pipelines/nothing.yml: no such file" in res.output
    res = _run(["run"])
    assert res.exit_code == 2 and "run --list" in res.output
