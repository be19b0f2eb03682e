"""benchmarks/quality.py (the README's quality tables) scores what `robustsam-restore benchmark` scores."""

from __future__ import annotations

import argparse
import importlib.util
import json
import shlex
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from pipelines.cli import main

ROOT = Path(__file__).resolve().parents[2]


def _quality():
    spec = importlib.util.spec_from_file_location("quality_script", ROOT / "benchmarks" / "quality.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


def test_quality_header_names_the_one_convention():
    q = _quality()
    records = [{"task": "dehaze", "set": "s", "method": "input", "n": 1, "psnr": 10.0, "ssim": 0.5,
                "per_image": {"a": {"psnr": 10.0, "ssim": 0.5}}}]  # fmt: skip
    assert q.markdown(records, []).splitlines()[0] == "PSNR/SSIM: BasicSR 1.4 convention, RGB, crop 0, 8-bit"


def test_the_printed_benchmark_command_reproduces_the_synthetic_rows(tmp_path):
    q = _quality()
    args = argparse.Namespace(task="dehaze", real_dir=tmp_path / "real", default_dehaze="regions-dehaze",
                              ablation_dehaze="dehaze-noprior", self_ensemble="none", local_pool=None)  # fmt: skip
    lines = q.write_held_out(tmp_path / "held", args)
    assert sorted(p.name for p in (tmp_path / "held").iterdir()) == ["chelsea.png", "coffee.png", "grace_hopper.jpg"]
    cmd = next(line for line in lines if "--severity 3" in line)
    argv = shlex.split(cmd)[1:]
    assert argv[argv.index("--methods") + 1].startswith("input=identity,dcp=dcp,nafnet=dehaze-noprior,")
    argv[argv.index("--methods") + 1] = "input=identity,dcp=dcp"  # the rows that need no network weights
    argv[argv.index("--out") + 1] = str(tmp_path / "r.jsonl")
    r = CliRunner().invoke(main, [*argv, "--crops", "0"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    rows = {row["method"]: row for row in map(json.loads, (tmp_path / "r.jsonl").read_text().splitlines())}
    pairs = [p for p in q.synthetic_pairs("dehaze") if p.name.endswith("/haze3")]
    assert len(pairs) == 3
    for method, ref in (("input", None), ("dcp", "dcp")):
        fn = q.restore_fn(ref, "dehaze")
        for p in pairs:
            file = next(f for f in rows[method]["per_image"] if f.startswith(p.name.split("/")[0] + "."))
            want = q.psnr_ssim(fn(p.lq), p.gt)
            got = rows[method]["per_image"][file]
            assert (got["psnr"], got["ssim"]) == pytest.approx(want, abs=1e-9), (method, p.name)


def test_dehaze_video_set_hazes_every_tenth_held_out_frame(tmp_path):
    """The dehazing view of the video validation: frames whose names end in 0, searched below the folder,
    each hazed at severities 2, 3 and 4 (8-bit inputs), the same pairs on every call."""
    import numpy as np

    from robustsam_prior.core.io import write_image

    q = _quality()
    seq = tmp_path / "val" / "SEQ"
    seq.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(240, 252):
        write_image(seq / f"{i:06d}.png", rng.random((24, 32, 3), dtype=np.float32))
    pairs = q.video_haze_pairs(tmp_path / "val")
    assert sorted(p.name for p in pairs) == sorted(f"{n}.png/haze{s}" for n in ("000240", "000250") for s in (2, 3, 4))
    again = q.video_haze_pairs(tmp_path / "val")
    for p, p2 in zip(pairs, again):
        assert np.array_equal(p.lq, p2.lq) and np.array_equal(p.gt, p2.gt)
        assert np.allclose(p.lq * 255, np.round(p.lq * 255), atol=1e-3)  # rounded to 8 bits
        assert q.psnr_ssim(p.lq, p.gt)[0] < 40  # hazed
    assert q.video_haze_pairs(tmp_path / "missing") == []


def test_photos_set_degrades_each_held_out_photo_once_per_task(tmp_path):
    """The photos set: every photo of the folder (PNG and TIFF) blurred by frame averaging (deblur) or
    hazed (dehaze) at one severity, 8-bit inputs, the same pairs on every call; no folder, no pairs."""
    import numpy as np

    from robustsam_prior.core.io import write_image

    q = _quality()
    rng = np.random.default_rng(1)
    write_image(tmp_path / "a.png", rng.random((40, 48, 3), dtype=np.float32))
    write_image(tmp_path / "b.tif", rng.random((48, 40, 3), dtype=np.float32))
    for task, label in (("deblur", "frame_average_blur4"), ("dehaze", "haze3")):
        pairs = q.photo_pairs(task, tmp_path)
        assert [p.name for p in pairs] == [f"a.png/{label}", f"b.tif/{label}"]
        again = q.photo_pairs(task, tmp_path)
        for p, p2 in zip(pairs, again):
            assert p.lq.shape == p.gt.shape and np.array_equal(p.lq, p2.lq)
            assert np.allclose(p.lq * 255, np.round(p.lq * 255), atol=1e-3)
            assert q.psnr_ssim(p.lq, p.gt)[0] < 30  # degraded
    assert q.photo_pairs("deblur", tmp_path / "missing") == []
