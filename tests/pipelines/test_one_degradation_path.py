"""One degradation path: `degrade`, `benchmark restoration --clean`, the pipelines' degrade step and the
trainers' fixed synthetic data give the same image for the same kind, severity, seed and file."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from pipelines.cli import main
from robustsam_prior.core.io import read_image, write_image


def _run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture
def photos(tmp_path) -> Path:
    """Crops of two package photos as 8-bit PNG files."""
    from skimage import data

    root = tmp_path / "clean"
    write_image(root / "chelsea.png", data.chelsea()[40:136, 100:228].astype(np.float32) / 255)
    write_image(root / "coffee.png", data.coffee()[80:176, 200:328].astype(np.float32) / 255)
    return root


def test_the_seeding_rule_is_the_documented_one():
    from robustsam_prior.degradations import file_seed

    def rule(text):
        return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") >> 1

    assert file_seed(7, "sub/coffee.png") == rule("7:sub/coffee.png")
    assert file_seed(7, Path("sub") / "coffee.png") == rule("7:sub/coffee.png")
    assert file_seed(7, "sub/coffee.png", variant=2) == rule("7:sub/coffee.png#2")
    assert file_seed(7, "a.png") != file_seed(8, "a.png")
    with pytest.raises(ValueError, match="variant must be >= 0"):
        file_seed(0, "a.png", variant=-1)


@pytest.mark.parametrize("kind", ["haze", "motion_blur"])
def test_degrade_and_benchmark_clean_score_the_same_images(tmp_path, photos, kind):
    degraded = tmp_path / "degraded"
    r = _run("degrade", photos, degraded, "--type", kind, "--severity", 3, "--seed", 0)
    assert r.exit_code == 0, r.output
    r = _run("eval", "--pred", degraded, "--gt", photos, "--metrics", "psnr,ssim", "--json")
    assert r.exit_code == 0, r.output
    scored = json.loads(r.stdout)["per_image"]
    out = tmp_path / "r.jsonl"
    r = _run("benchmark", "restoration", "--methods", "identity", "--clean", photos, "--degradation", kind,
             "--severity", 3, "--seed", 0, "--metrics", "psnr,ssim", "--crops", 0, "--out", out)  # fmt: skip
    assert r.exit_code == 0, r.output
    row = json.loads(out.read_text())
    assert sorted(row["per_image"]) == sorted(scored) == ["chelsea.png", "coffee.png"]
    for name, vals in scored.items():
        assert abs(row["per_image"][name]["psnr"] - vals["psnr"]) < 0.01  # the target; in fact equal
        assert row["per_image"][name] == vals
    # the images really are degraded, and a file alone in a folder gets the same image
    assert all(v["psnr"] < 40 for v in scored.values())
    alone = tmp_path / "alone"
    alone.mkdir()
    (alone / "coffee.png").write_bytes((photos / "coffee.png").read_bytes())
    assert _run("degrade", alone, tmp_path / "o2", "-t", kind, "--seed", 0).exit_code == 0
    assert (tmp_path / "o2" / "coffee.png").read_bytes() == (degraded / "coffee.png").read_bytes()
    manifest = json.loads((degraded / "manifest.json").read_text())
    from robustsam_prior.degradations import SEED_RULE, file_seed

    assert manifest["seed_rule"] == SEED_RULE == row["dataset"]["degradation"]["seed_rule"]
    assert manifest["images"]["coffee.png"]["seed"] == file_seed(0, "coffee.png")


def _into_subfolder(photos: Path) -> None:
    (photos / "sub").mkdir()
    (photos / "coffee.png").rename(photos / "sub" / "coffee.png")


def test_pipeline_degrade_step_writes_what_degrade_writes(tmp_path, photos):
    _into_subfolder(photos)
    r = _run("degrade", photos, tmp_path / "degraded", "--type", "haze", "--severity", 4, "--seed", 5, "-r")
    assert r.exit_code == 0, r.output
    yml = tmp_path / "p.yml"
    yml.write_text("steps:\n  - {step: degrade, kind: haze, severity: 4, seed: 5, save: true}\n"
                   "  - {step: eval, metrics: [psnr]}\n  - {step: report}\n")  # fmt: skip
    r = _run("run", yml, f"input={photos}", f"output_dir={tmp_path / 'run'}", "recursive=true", "device=cpu")
    assert r.exit_code == 0, r.output
    for rel in ("chelsea.png", "sub/coffee.png"):
        a = read_image(tmp_path / "run" / "degraded" / rel).pixels
        b = read_image(tmp_path / "degraded" / rel).pixels
        assert np.array_equal(a, b), rel


def test_trainer_validation_is_what_degrade_writes_whatever_the_other_files(tmp_path, photos):
    import torch

    from restore.training.data import PairDataset
    from restore.training.options import DatasetOptions, DegradationOptions

    _into_subfolder(photos)
    deg = DegradationOptions(kinds=("haze",), severity=(3, 3))
    opts = DatasetOptions(clean_dir=str(photos), recursive=True, degradation=deg, crop_size=0, quantise=True)
    r = _run("degrade", photos, tmp_path / "degraded", "--type", "haze", "--severity", 3, "--seed", 11, "-r")
    assert r.exit_code == 0, r.output
    val = PairDataset(opts, key="data.val", seed=11, train=False)
    names = {val.rels[i]: i for i in range(len(val))}
    assert sorted(names) == ["chelsea.png", "sub/coffee.png"]
    for rel, i in names.items():
        want = torch.from_numpy(read_image(tmp_path / "degraded" / rel).pixels).permute(2, 0, 1)
        assert torch.equal(val[i].lq, want), rel
    # another file sorted first moves every index; no image changes
    write_image(photos / "aaa.png", np.full((96, 128, 3), 0.4, np.float32))
    more = PairDataset(opts, key="data.val", seed=11, train=False)
    assert more.rels[0] == "aaa.png"
    for rel, i in names.items():
        assert torch.equal(more[more.rels.index(rel)].lq, val[i].lq), rel
    # fixed training versions: version v of a file is degraded with file_seed(seed, rel, v)
    train = PairDataset(DatasetOptions(**{**opts.__dict__, "variants": 3}), key="data.train", seed=11, train=True)
    v0, v2 = train.make_input(1, train._load(1)[1], 0), train.make_input(1, train._load(1)[1], 2)
    assert np.array_equal(v0, val[names["chelsea.png"]].lq.permute(1, 2, 0).numpy())
    assert not np.array_equal(v0, v2)
