"""``robustsam-restore dehaze|deblur|models`` on a temporary folder of awkward files."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from pipelines.cli import main
from restore.archs import build_arch
from restore.inference import CHECKPOINT_FORMAT
from robustsam_prior.core.checkpoint import save_checkpoint
from robustsam_prior.core.io import read_image, write_image

TINY = {"width": 8, "enc_blocks": [1, 1], "middle_blocks": 1, "dec_blocks": [1, 1]}
GOOD = {"deep.png": (20, 24, 16, False), "grey.jpg": (18, 22, 8, False), "rgba.png": (16, 21, 8, True)}


@pytest.fixture
def inputs(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    d = tmp_path / "in"
    d.mkdir()
    write_image(d / "deep.png", rng.random((20, 24, 3)).astype(np.float32), bit_depth=16)
    Image.fromarray((rng.random((18, 22)) * 255).astype(np.uint8), mode="L").save(d / "grey.jpg")
    write_image(d / "rgba.png", rng.random((16, 21, 3)).astype(np.float32), alpha=rng.random((16, 21)).astype(np.float32))
    (d / "notes.txt").write_text("not an image")
    (d / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    return d


def _run(*args: str):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def _check_outputs(inputs: Path, out: Path) -> None:
    for name, (h, w, depth, has_alpha) in GOOD.items():
        src, dst = read_image(inputs / name), read_image(out / name)
        assert dst.pixels.shape == (h, w, 3) and dst.bit_depth == depth == src.bit_depth
        assert (dst.alpha is not None) == has_alpha
        if has_alpha:
            np.testing.assert_allclose(dst.alpha, src.alpha, atol=1 / 255)
    assert not (out / "broken.jpg").exists() and not (out / "notes.txt").exists()


def test_dehaze_folder_failures_and_resume(inputs: Path, tmp_path: Path):
    out = tmp_path / "out"
    res = _run("dehaze", inputs, out, "--model", "dcp", "--device", "cpu")
    assert res.exit_code == 1
    assert "3 ok, 1 failed, 1 skipped" in res.output
    assert "broken.jpg" in res.output
    _check_outputs(inputs, out)
    mtimes = {n: os.stat(out / n).st_mtime_ns for n in GOOD}
    # rerun: finished files are skipped, the broken one fails again
    res = _run("dehaze", inputs, out, "--model", "dcp")
    assert res.exit_code == 1 and "0 ok, 1 failed, 4 skipped" in res.output
    assert {n: os.stat(out / n).st_mtime_ns for n in GOOD} == mtimes
    # without the broken file a rerun succeeds and reports the skip
    (inputs / "broken.jpg").unlink()
    res = _run("dehaze", inputs, out, "--model", "dcp")
    assert res.exit_code == 0 and "all outputs exist" in res.output
    res = _run("dehaze", inputs, out, "--model", "dcp", "--overwrite")
    assert res.exit_code == 0 and "3 ok, 0 failed, 1 skipped" in res.output


def test_dehaze_dcp_output_is_the_baseline(inputs: Path, tmp_path: Path):
    from restore.baselines import dcp_dehaze_numpy

    res = _run("dehaze", inputs / "deep.png", tmp_path / "single.png", "--model", "dcp")
    assert res.exit_code == 0, res.output
    expected = dcp_dehaze_numpy(read_image(inputs / "deep.png").pixels)[0]
    np.testing.assert_allclose(read_image(tmp_path / "single.png").pixels, expected, atol=1 / 65535 + 1e-6)


def test_deblur_with_tiny_checkpoint_and_regions_prior(inputs: Path, tmp_path: Path):
    (inputs / "broken.jpg").unlink()
    sub = inputs / "sub"
    sub.mkdir()
    write_image(sub / "nested.png", np.random.default_rng(1).random((140, 17, 3)).astype(np.float32))
    torch.manual_seed(0)
    net = build_arch("fusion_nafnet", **TINY)
    ck = tmp_path / "tiny.safetensors"
    save_checkpoint(ck, net.state_dict(), {
        "format": CHECKPOINT_FORMAT, "arch": "fusion_nafnet", "arch_kwargs": TINY, "task": "deblur",
        "prior": {"name": "regions", "options": {"n_segments": 16, "working_size": 64}},
        "metrics": {"psnr": 24.25, "ssim": 0.81},
    })
    out = tmp_path / "out"
    res = _run("deblur", inputs, out, "--model", ck, "--recursive", "--tile", "128", "--device", "cpu")
    assert res.exit_code == 0, res.output
    assert "4 ok, 0 failed, 1 skipped" in res.output
    _check_outputs(inputs, out)
    assert read_image(out / "sub" / "nested.png").pixels.shape == (140, 17, 3)  # in two tiles
    # models lists the checkpoint with its metadata
    res = _run("models", "--json", ck)
    rows = json.loads(res.output)
    row = next(r for r in rows if r["kind"] == "checkpoint")
    assert row["task"] == "deblur" and row["prior"] == "regions" and row["metrics"]["psnr"] == 24.25
    assert row["params"] == sum(p.numel() for p in net.parameters())
    res = _run("models", "--task", "deblur", ck)
    assert res.exit_code == 0 and "psnr 24.25" in res.output and "dcp" not in res.output
    # a deblur checkpoint cannot dehaze
    res = _run("dehaze", inputs, out, "--model", ck)
    assert res.exit_code == 1 and "deblur model" in res.output


def test_model_errors(inputs: Path, tmp_path: Path, monkeypatch):
    import restore.zoo

    # an installation without packaged weights (the state before the default models are trained)
    monkeypatch.setattr(restore.zoo, "ZOO_FILE", tmp_path / "no-zoo.json")
    res = _run("deblur", inputs, tmp_path / "o")
    assert res.exit_code == 1 and "--model identity|PATH" in res.output
    res = _run("dehaze", inputs, tmp_path / "o")
    assert res.exit_code == 1 and "--model dcp|identity|PATH" in res.output
    res = _run("deblur", inputs, tmp_path / "o", "--model", "dcp")
    assert res.exit_code == 1 and "does not do deblur" in res.output
    res = _run("deblur", inputs, tmp_path / "o", "--model", "identity", "--tile", "-2")
    assert res.exit_code == 2 and "--tile" in res.output
    # identity uses no prior: the options are ignored (with a warning) and the folder is processed
    res = _run("dehaze", inputs, tmp_path / "o", "--model", "identity", "--prior", "regions",
               "--prior-checkpoint", "x.pth")
    assert res.exit_code == 1 and "3 ok, 1 failed, 1 skipped" in res.output
    np.testing.assert_array_equal(read_image(tmp_path / "o" / "deep.png").pixels, read_image(inputs / "deep.png").pixels)
    ck = tmp_path / "map.safetensors"
    save_checkpoint(ck, build_arch("map_nafnet", **TINY).state_dict(), {
        "format": CHECKPOINT_FORMAT, "arch": "map_nafnet", "arch_kwargs": TINY, "task": "dehaze",
        "prior": {"name": "regions", "options": {}}})
    res = _run("dehaze", inputs, tmp_path / "o2", "--model", ck, "--prior-checkpoint", "x.pth")
    assert res.exit_code == 1 and "applies to the robustsam/sam priors" in res.output
    res = _run("dehaze", inputs, tmp_path / "o2", "--model", tmp_path / "nope.safetensors")
    assert res.exit_code == 1 and "neither a known model name nor an existing file" in res.output
    res = _run("models")
    assert res.exit_code == 0 and "regions-dehaze" in res.output and "unavailable" in res.output


def _tiny_deblurrer(tmp_path: Path) -> Path:
    """A tiny no-prior NAFNet deblurring checkpoint whose blocks are not the identity (beta/gamma drawn
    away from 0), so that options which change the network's inputs or statistics change its output."""
    torch.manual_seed(0)
    net = build_arch("nafnet", **TINY)
    with torch.no_grad():
        for n, p in net.named_parameters():
            if n.endswith(("beta", "gamma")):
                p.normal_(0, 0.5)
    ck = tmp_path / "tiny.safetensors"
    save_checkpoint(ck, net.state_dict(), {"format": CHECKPOINT_FORMAT, "arch": "nafnet", "arch_kwargs": TINY,
                                           "task": "deblur", "prior": None})
    return ck


def test_local_pool_option(tmp_path: Path):
    """--local-pool reaches the network (a different output from the same weights) and is refused
    where it cannot apply."""
    src = tmp_path / "in.png"
    img = np.random.default_rng(2).random((40, 48, 3)).astype(np.float32) * 0.3
    img[:, :24] += 0.6  # halves with different statistics
    write_image(src, img)
    ck = _tiny_deblurrer(tmp_path)
    outs = {}
    for pool in (None, "1000", "8"):
        dst = tmp_path / f"out_{pool}.png"
        res = _run("deblur", src, dst, "--model", ck, *(("--local-pool", pool) if pool else ()))
        assert res.exit_code == 0, res.output
        outs[pool] = read_image(dst).pixels
    np.testing.assert_array_equal(outs["1000"], outs[None])  # a window over the whole image: global
    assert np.abs(outs["8"] - outs[None]).max() > 1e-3
    res = _run("deblur", src, tmp_path / "x.png", "--model", ck, "--local-pool", "-4")
    assert res.exit_code == 2 and "--local-pool" in res.output
    res = _run("dehaze", src, tmp_path / "y.png", "--model", "dcp", "--local-pool", "144")
    assert res.exit_code == 1 and "no NAFNet channel attention" in res.output
    assert not (tmp_path / "x.png").exists() and not (tmp_path / "y.png").exists()


def test_self_ensemble_option(tmp_path: Path):
    """--self-ensemble reaches the restorer: the identity stays the identity, a network's output changes,
    and an unknown name is refused before anything is written."""
    import typing

    from pipelines.commands.restore import SELF_ENSEMBLE_CHOICES
    from pipelines.steps import RestoreStep
    from restore.inference import SELF_ENSEMBLES

    # the names are spelled out where torch is not imported (the CLI, the pipeline step's schema)
    assert SELF_ENSEMBLE_CHOICES == tuple(SELF_ENSEMBLES)
    assert typing.get_args(typing.get_type_hints(RestoreStep)["self_ensemble"]) == tuple(SELF_ENSEMBLES)
    src = tmp_path / "in.png"
    write_image(src, np.random.default_rng(3).random((20, 28, 3)).astype(np.float32), bit_depth=16)
    res = _run("deblur", src, tmp_path / "id.png", "--model", "identity", "--self-ensemble", "x8")
    assert res.exit_code == 0, res.output
    np.testing.assert_array_equal(read_image(tmp_path / "id.png").pixels, read_image(src).pixels)
    ck = _tiny_deblurrer(tmp_path)
    outs = {}
    for ensemble in ("none", "flip"):
        res = _run("deblur", src, tmp_path / f"{ensemble}.png", "--model", ck, "--self-ensemble", ensemble)
        assert res.exit_code == 0, res.output
        outs[ensemble] = read_image(tmp_path / f"{ensemble}.png").pixels
    assert np.abs(outs["flip"] - outs["none"]).max() > 1e-3
    res = _run("deblur", src, tmp_path / "bad.png", "--model", ck, "--self-ensemble", "x4")
    assert res.exit_code == 2 and "--self-ensemble" in res.output
    assert not (tmp_path / "bad.png").exists()


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_output_is_never_an_input_even_with_overwrite(inputs: Path, tmp_path: Path):
    (tmp_path / "link").symlink_to(inputs)
    (tmp_path / "deep_link.png").symlink_to(inputs / "deep.png")
    before = _snapshot(inputs)
    cases = [
        (inputs, inputs, "is the INPUT folder"),
        (inputs, tmp_path / "link", "is the INPUT folder"),
        (tmp_path / "link", inputs, "is the INPUT folder"),
        (inputs / "deep.png", inputs / "deep.png", "is the INPUT file"),
        (tmp_path / "deep_link.png", inputs / "deep.png", "is the INPUT file"),
        (inputs / "deep.png", inputs, "is the input file"),  # the folder that holds it: OUTPUT/deep.png
        (inputs / "deep.png", tmp_path / "link", "is the input file"),
    ]
    for task in ("dehaze", "deblur"):
        for src, dst, message in cases:
            res = _run(task, src, dst, "--model", "identity", "--overwrite")
            assert res.exit_code == 1 and message in res.output, (task, src, dst, res.output)
            assert res.output.count("\n") == 1  # one line
            assert _snapshot(inputs) == before


def test_output_inside_input_is_not_read_again_by_recursive_reruns(inputs: Path):
    (inputs / "broken.jpg").unlink()
    out = inputs / "restored"
    res = _run("dehaze", inputs, out, "--model", "dcp", "--recursive")
    assert res.exit_code == 0 and "3 ok, 0 failed, 1 skipped" in res.output, res.output
    res = _run("dehaze", inputs, out, "--model", "dcp", "--recursive")  # resuming: nothing left to do
    assert res.exit_code == 0 and "all outputs exist" in res.output and "0 ok" in res.output
    res = _run("dehaze", inputs, out, "--model", "dcp", "--recursive", "--overwrite")
    assert res.exit_code == 0 and "3 ok, 0 failed, 1 skipped" in res.output
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*")) == sorted(GOOD)
    # without --recursive the output folder is not walked anyway
    res = _run("dehaze", inputs, inputs / "flat", "--model", "dcp")
    assert res.exit_code == 0 and "3 ok, 0 failed, 1 skipped" in res.output  # notes.txt; folders are not listed
    assert sorted(p.name for p in (inputs / "flat").iterdir()) == sorted(GOOD)


def test_tile_smaller_than_the_minimum_is_refused_by_the_library():
    from restore.inference import MIN_TILE, Restorer

    assert MIN_TILE == 128
    with pytest.raises(ValueError, match="tile must be 0 .never tile. or at least 128 pixels, got 64"):
        Restorer.load("identity", task="deblur", tile=64)
    assert Restorer.load("identity", task="deblur", tile=128).tile == 128
    assert Restorer.load("identity", task="deblur", tile=0).tile == 0


def test_tile_smaller_than_the_minimum_is_refused(tmp_path: Path):
    from pipelines.commands.restore import MIN_TILE
    from restore.inference import MIN_TILE as LIBRARY_MIN_TILE

    assert MIN_TILE == LIBRARY_MIN_TILE == 128  # spelled out in the CLI, which does not import torch
    src = tmp_path / "in.png"
    write_image(src, np.full((8, 8, 3), 0.5, np.float32))
    for tile in ("1", "16", "127"):
        res = _run("dehaze", src, tmp_path / "o.png", "--model", "dcp", "--tile", tile)
        assert res.exit_code == 2 and f"{tile} is too small: use 0 (never tile) or at least 128" in res.output
    assert not (tmp_path / "o.png").exists()
    for tile in ("0", "128"):
        assert _run("dehaze", src, tmp_path / f"o{tile}.png", "--model", "dcp", "--tile", tile).exit_code == 0
    assert "at least 128" in _run("deblur", "--help").output


def test_stale_temporary_files_in_the_output_are_removed_and_nothing_else(inputs: Path, tmp_path: Path):
    out = tmp_path / "out"
    (out / "sub").mkdir(parents=True)
    stale = [out / ".rsr-tmp-999999999-abcdefgh.tmp", out / "sub" / ".rsr-tmp-999999999-zyxw_987.tmp.png"]
    kept = [out / ".deep.png.abcd1234.tmp", out / "notes.tmp", out / f".rsr-tmp-{os.getpid()}-abcdefgh.tmp"]
    for p in stale + kept:
        p.write_bytes(b"x")
    res = _run("dehaze", inputs, out, "--model", "identity")
    assert res.exit_code == 1 and "3 ok" in res.output
    assert not any(p.exists() for p in stale) and all(p.exists() for p in kept)


def test_fifo_and_device_inputs_are_one_line_errors(tmp_path: Path, make_fifo):
    fifo = make_fifo(tmp_path / "pipe.png")
    for src, what in (("/dev/zero", "is a character device"), (fifo, "is a FIFO (named pipe)")):
        for task in ("dehaze", "deblur"):
            res = _run(task, src, tmp_path / "out", "--model", "identity")
            assert res.exit_code == 1 and res.output.count("\n") == 1, res.output
            assert f"{src}" in res.output and f"{what}, not an image file or a folder" in res.output
    # inside a folder it is one failure among the files, named in the summary
    write_image(tmp_path / "ok.png", np.full((8, 8, 3), 0.5, np.float32))
    res = _run("dehaze", tmp_path, tmp_path / "out", "--model", "identity")
    assert res.exit_code == 1 and "1 ok, 1 failed" in res.output
    assert "FAILED pipe.png" in res.output and "is a FIFO (named pipe), not an image file" in res.output


# Peak memory is read from VmHWM, the high-water mark of this process's own memory map: getrusage's
# ru_maxrss is carried over through fork and exec, so a child of a large pytest process starts high.
PEAK = """
def peak_mb():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024
"""

PEAK_SCRIPT = PEAK + """
import sys
import restore.inference  # the command's heavy imports (torch) before the baseline
from pipelines.cli import main

base = peak_mb()
try:
    main()
finally:
    sys.stderr.write(f"PEAK_MB {base:.0f} {peak_mb():.0f}\\n")
"""

READ_SCRIPT = PEAK + """
import sys
from robustsam_prior.core.io import ImageReadError, read_image
try:
    read_image(sys.argv[1])
except ImageReadError as e:
    print(e)
print("PEAK_MB", peak_mb())
"""


def test_a_decompression_bomb_is_refused_from_its_header_and_the_rest_is_restored(tmp_path: Path, subprocess_env):
    """A 1.8 MB tiled zlib TIFF of 20000x20000 (400 MB decoded as 8-bit gray, 4.8 GB as float RGB) is
    refused with the limit named, without decoding it, and the folder's other images are restored."""
    import subprocess
    import sys

    import tifffile

    folder = tmp_path / "in"
    folder.mkdir()
    write_image(folder / "a.png", np.full((12, 16, 3), 0.5, np.float32))
    write_image(folder / "c.jpg", np.full((12, 16, 3), 0.25, np.float32))
    tiles = (np.zeros((1024, 1024), np.uint8) for _ in range(20 * 20))
    tifffile.imwrite(folder / "bomb.tif", tiles, shape=(20000, 20000), dtype=np.uint8, tile=(1024, 1024),
                     compression="zlib", compressionargs={"level": 1})
    assert (folder / "bomb.tif").stat().st_size < 3_000_000
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-c", PEAK_SCRIPT, "dehaze", str(folder), str(out), "--model", "dcp"],
                          env=subprocess_env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "2 ok, 1 failed, 0 skipped" in proc.stdout
    assert ("FAILED bomb.tif: cannot read image" in proc.stderr
            and "20000x20000 is 400 megapixels, over the pixel limit of 200 megapixels" in proc.stderr)
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "c.jpg"]
    base, peak = map(float, proc.stderr.split("PEAK_MB ")[1].split()[:2])
    assert peak - base < 100, (base, peak)  # decoding would take 400 MB at the very least
    # the reading alone, in a process without torch (whose import is most of the command's memory)
    proc = subprocess.run([sys.executable, "-c", READ_SCRIPT, str(folder / "bomb.tif")], env=subprocess_env,
                          capture_output=True, text=True, timeout=120)
    assert "over the pixel limit of 200 megapixels" in proc.stdout, proc.stderr[-2000:]
    assert float(proc.stdout.split("PEAK_MB ")[1]) < 200
    # a lower limit from the command line, named in the message
    proc = subprocess.run([sys.executable, "-c", PEAK_SCRIPT, "dehaze", str(folder), str(tmp_path / "o2"),
                           "--model", "dcp", "--max-pixels", "150"], env=subprocess_env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 1 and "0 ok, 3 failed" in proc.stdout
    assert "FAILED a.png" in proc.stderr and "16x12 is 192 pixels, over the pixel limit of 150 pixels" in proc.stderr


def test_a_prior_the_model_was_not_trained_with_is_refused_unless_forced(inputs: Path, tmp_path: Path):
    res = _run("dehaze", inputs, tmp_path / "o", "--prior", "none")
    assert res.exit_code == 1 and "trained with the 'regions' prior, not 'none'" in res.output
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())
    res = _run("dehaze", inputs, tmp_path / "o", "--prior", "none", "--force-prior")
    assert res.exit_code == 1 and "3 ok, 1 failed, 1 skipped" in res.output  # the inputs' one bad file
