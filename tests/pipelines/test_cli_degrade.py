"""Folder processing (robustsam_prior.batch, reported by pipelines.commands._common) and the ``degrade`` command."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from pipelines.commands._common import report_and_exit
from robustsam_prior.batch import RunSummary, process_files
from robustsam_prior.core.io import read_image, write_image
from robustsam_prior.inputs import collect_inputs


def _folder_with_one_corrupt(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    for name in ("a.png", "c.png"):
        write_image(root / name, rng.random((12, 16, 3), dtype=np.float32))
    (root / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")  # PNG signature, broken body
    (root / "notes.txt").write_text("not an image")
    return root


def test_process_files_continues_after_failure(tmp_path, caplog, capsys):
    root = _folder_with_one_corrupt(tmp_path / "in")
    seen = []

    def fn(src: Path, rel: Path) -> None:
        read_image(src)
        seen.append(rel.as_posix())

    with caplog.at_level(logging.WARNING):
        summary = process_files(collect_inputs(root), fn, desc="test")
    assert seen == ["a.png", "c.png"]
    assert summary.processed == [Path("a.png"), Path("c.png")]
    assert [rel for rel, _ in summary.failed] == [Path("b.png")]
    assert "b.png" in summary.failed[0][1]
    assert summary.skipped == [(Path("notes.txt"), "not an image file")]
    assert "skipping notes.txt" in caplog.text and "b.png failed" in caplog.text
    assert not summary.ok
    with pytest.raises(SystemExit) as info:
        report_and_exit(summary)
    assert info.value.code == 1
    out, err = capsys.readouterr()
    assert "test: 2 ok, 1 failed, 1 skipped" in out and "FAILED b.png" in err


def test_report_ok_and_empty():
    ok = RunSummary(desc="x", processed=[Path("a.png")], seconds=0.5)
    report_and_exit(ok)  # no SystemExit
    assert ok.ok and "2.00 images/s" in ok.line()
    with pytest.raises(SystemExit):
        report_and_exit(RunSummary(desc="x", skipped=[(Path("a.txt"), "not an image file")]))


def test_keyboard_interrupt_is_not_swallowed(tmp_path):
    root = _folder_with_one_corrupt(tmp_path / "in")

    def fn(src: Path, rel: Path) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        process_files(collect_inputs(root), fn, desc="test")


# ------------------------------------------------------------------------------------- degrade CLI


def _run(*args: str):
    from click.testing import CliRunner

    from pipelines.cli import main

    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_list_prints_every_type_with_its_table():
    from robustsam_prior.degradations import DEGRADATIONS

    result = _run("degrade", "--list")
    assert result.exit_code == 0
    blocks = {b.split(" ", 1)[0]: b.splitlines() for b in result.output.strip().split("\n\n")}
    assert sorted(blocks) == DEGRADATIONS.names()
    for name, lines in blocks.items():
        spec = DEGRADATIONS.get(name)
        assert lines[0].startswith(f"{name} ({spec.family})")
        for p in spec.params:
            line = next(ln for ln in lines[1:] if ln.split()[0] == p.name)
            for severity in (1, 2, 3, 4, 5):
                assert f"{severity}: {p.format_range(severity)} " in line + " "
    assert "sigma" in " ".join(blocks["gaussian_noise"]) and "[Robust-Seg]" in blocks["fog"][0]


def test_list_json_and_markdown_come_from_the_tables():
    import json

    from robustsam_prior.degradations import DEGRADATIONS

    data = json.loads(_run("degrade", "--list", "--json").output)
    assert [d["name"] for d in data] == DEGRADATIONS.names()
    jpeg = next(d for d in data if d["name"] == "jpeg_compression")
    assert jpeg["params"]["quality"]["ranges"]["3"] == [5, 10]  # the official quality 5..10
    assert jpeg["params"]["quality"]["bounds"] == [1, 100]
    md = _run("degrade", "--list", "--markdown").output
    assert "| `quality` | 30..50 | 15..25 | 5..10 | 3..5 | 1..2 |" in md


def test_folder_with_one_corrupt_file_processes_the_rest_and_fails(tmp_path):
    import json

    root = _folder_with_one_corrupt(tmp_path / "in")
    result = _run("degrade", str(root), str(tmp_path / "out"), "--type", "gaussian_noise", "--seed", "3")
    assert result.exit_code == 1
    assert "2 ok, 1 failed, 1 skipped" in result.output and "FAILED b.png" in result.output
    for name in ("a.png", "c.png"):
        out = read_image(tmp_path / "out" / name)
        assert not np.array_equal(out.pixels, read_image(root / name).pixels)
    assert not (tmp_path / "out" / "b.png").exists()
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["type"] == "gaussian_noise" and manifest["severity"] == 3 and manifest["seed"] == 3
    assert sorted(manifest["images"]) == ["a.png", "c.png"]
    assert "b.png" in manifest["failed"] and "notes.txt" in manifest["skipped"]
    assert "sigma" in manifest["images"]["a.png"]["params"]


def test_results_do_not_depend_on_the_other_files(tmp_path):
    import shutil

    root = _folder_with_one_corrupt(tmp_path / "in")
    (root / "b.png").unlink()
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copy(root / "c.png", alone / "c.png")
    for src, dst in ((root, "o1"), (alone, "o2"), (root, "o3")):
        assert _run("degrade", str(src), str(tmp_path / dst), "-t", "snow", "--seed", "5").exit_code == 0
    c1, c2 = (tmp_path / "o1" / "c.png").read_bytes(), (tmp_path / "o2" / "c.png").read_bytes()
    assert c1 == c2 == (tmp_path / "o3" / "c.png").read_bytes()
    assert (tmp_path / "o1" / "a.png").read_bytes() != c1
    assert _run("degrade", str(alone), str(tmp_path / "o4"), "-t", "snow", "--seed", "6").exit_code == 0
    assert (tmp_path / "o4" / "c.png").read_bytes() != c1


def test_haze_writes_16bit_transmission_matching_the_image(tmp_path):
    import json

    import cv2

    rng = np.random.default_rng(0)
    clean = rng.integers(0, 65536, size=(24, 32, 3)).astype(np.float32) / 65535
    write_image(tmp_path / "x.png", clean, bit_depth=16)
    assert _run("degrade", str(tmp_path / "x.png"), str(tmp_path / "out"), "-t", "haze").exit_code == 0
    entry = json.loads((tmp_path / "out" / "manifest.json").read_text())["images"]["x.png"]
    raw = cv2.imread(str(tmp_path / "out" / entry["transmission"]), cv2.IMREAD_UNCHANGED)
    assert raw.dtype == np.uint16 and raw.shape == (24, 32)
    t = raw.astype(np.float32)[..., None] / 65535
    hazy = read_image(tmp_path / "out" / "x.png")
    assert hazy.bit_depth == 16  # the input's depth is kept
    expected = clean * t + np.array(entry["airlight"], np.float32) * (1 - t)
    np.testing.assert_allclose(hazy.pixels, expected, atol=3e-5)


def test_kernel_outputs_single_file_target_and_alpha(tmp_path):
    import json

    rng = np.random.default_rng(1)
    write_image(tmp_path / "x.png", rng.random((20, 20, 3), dtype=np.float32), alpha=np.full((20, 20), 0.5))
    out = tmp_path / "res" / "blurred.png"
    assert _run("degrade", str(tmp_path / "x.png"), str(out), "-t", "motion_blur", "-s", "2").exit_code == 0
    entry = json.loads(out.with_suffix(".json").read_text())["images"]["x.png"]
    kernel = np.load(tmp_path / "res" / entry["kernel"])
    assert kernel.shape == (entry["kernel_size"],) * 2 and abs(kernel.sum() - 1) < 1e-5
    assert read_image(tmp_path / "res" / entry["kernel_png"]).pixels.max() == 1.0
    assert read_image(out).alpha is not None


def test_usage_errors(tmp_path):
    write_image(tmp_path / "x.png", np.zeros((4, 4, 3), np.float32))
    result = _run("degrade", str(tmp_path / "x.png"), str(tmp_path / "o"))
    assert result.exit_code == 2 and "--type is required" in result.output
    assert "INPUT and OUTPUT are required" in _run("degrade", "-t", "fog").output
    result = _run("degrade", str(tmp_path / "x.png"), str(tmp_path / "o"), "-t", "fgo")
    assert result.exit_code == 2 and "did you mean 'fog'" in result.output
    result = _run("degrade", str(tmp_path / "nope"), str(tmp_path / "o"), "-t", "fog")
    assert result.exit_code == 2 and "does not exist" in result.output
    result = _run("degrade", str(tmp_path), str(tmp_path), "-t", "fog")
    assert result.exit_code == 1 and "is the INPUT folder" in result.output
    result = _run("degrade", str(tmp_path), str(tmp_path / "o.png"), "-t", "fog")
    assert result.exit_code == 2 and "must be a folder" in result.output
    result = _run("degrade", str(tmp_path / "x.png"), str(tmp_path / "o"), "-t", "fog", "-s", "6")
    assert result.exit_code == 2
    assert _run("degrade", "--help").exit_code == 0


def test_empty_folder_exits_nonzero(tmp_path):
    (tmp_path / "in").mkdir()
    result = _run("degrade", str(tmp_path / "in"), str(tmp_path / "out"), "-t", "fog")
    assert result.exit_code == 1 and "no image files" in result.output
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_recursive_and_format(tmp_path):
    root = tmp_path / "in"
    write_image(root / "sub" / "deep.png", np.full((8, 8, 3), 0.5, np.float32))
    write_image(root / "top.png", np.full((8, 8, 3), 0.5, np.float32))
    assert _run("degrade", str(root), str(tmp_path / "flat"), "-t", "low_light").exit_code == 0
    assert not (tmp_path / "flat" / "sub").exists()
    args = ("degrade", str(root), str(tmp_path / "deep"), "-t", "low_light", "-r", "--format", "tif")
    assert _run(*args).exit_code == 0
    assert read_image(tmp_path / "deep" / "sub" / "deep.tif").pixels.mean() < 0.5


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_inputs_sharing_a_stem_keep_their_own_outputs(tmp_path):
    import json

    root = tmp_path / "in"
    rng = np.random.default_rng(4)
    for name in ("x.png", "x.jpg", "x.tif", "y.png"):
        write_image(root / name, rng.random((12, 16, 3), dtype=np.float32))
    for kind, side in (("haze", "transmission"), ("motion_blur", "kernel")):
        out = tmp_path / kind
        result = _run("degrade", str(root), str(out), "-t", kind)
        assert result.exit_code == 0 and "4 ok, 0 failed" in result.output, result.output
        manifest = json.loads((out / "manifest.json").read_text())["images"]
        assert sorted(manifest) == ["x.jpg", "x.png", "x.tif", "y.png"]
        sides = {rel: entry[side] for rel, entry in manifest.items()}
        suffix = ".png" if side == "transmission" else ".npy"
        assert sides == {"x.jpg": f"{side}/x.jpg{suffix}", "x.png": f"{side}/x.png{suffix}",
                         "x.tif": f"{side}/x.tif{suffix}", "y.png": f"{side}/y{suffix}"}
        assert all((out / p).is_file() for p in sides.values())
        assert all((out / name).is_file() for name in manifest)
    # each transmission map belongs to its own image: hazy = clean * t + A * (1 - t) (lossless formats)
    maps = {}
    for name in ("x.png", "x.tif"):
        entry = json.loads((tmp_path / "haze" / "manifest.json").read_text())["images"][name]
        maps[name] = t = read_image(tmp_path / "haze" / entry["transmission"]).pixels[..., :1]
        expected = read_image(root / name).pixels * t + np.array(entry["airlight"], np.float32) * (1 - t)
        np.testing.assert_allclose(read_image(tmp_path / "haze" / name).pixels, expected, atol=0.6 / 255)
    assert np.abs(maps["x.png"] - maps["x.tif"]).max() > 0.01  # two images, two drawn hazes


def test_degraded_images_that_would_share_a_name_are_refused_before_writing(tmp_path):
    root = tmp_path / "in"
    for name in ("x.png", "x.jpg", "x.tif", "y.png"):
        write_image(root / name, np.full((8, 8, 3), 0.5, np.float32))
    result = _run("degrade", str(root), str(tmp_path / "out"), "-t", "haze", "--format", "png")
    assert result.exit_code == 1
    assert f"inputs x.jpg, x.png, x.tif would be written to the same file {tmp_path / 'out' / 'x.png'}" in result.output
    assert "--format same" in result.output
    assert not (tmp_path / "out").exists()
    # an input's degraded image where another input's side file goes is refused as well
    write_image(root / "transmission" / "y.png", np.full((8, 8, 3), 0.5, np.float32))
    result = _run("degrade", str(root), str(tmp_path / "out"), "-t", "fog", "-r")
    assert result.exit_code == 1 and "transmission/y.png, y.png would be written to the same file" in result.output


def test_output_is_never_an_input(tmp_path):
    root = tmp_path / "in"
    write_image(root / "x.png", np.full((8, 8, 3), 0.5, np.float32))
    write_image(root / "y.png", np.full((8, 8, 3), 0.25, np.float32))
    (tmp_path / "link").symlink_to(root)
    before = _snapshot(root)
    for args in ((root, root), (root, tmp_path / "link"), (tmp_path / "link" / "x.png", root),
                 (root / "x.png", root / "x.png"), (root / "x.png", tmp_path / "link" / "x.png")):
        result = _run("degrade", *map(str, args), "-t", "haze")
        assert result.exit_code == 1, (args, result.output)
        assert "is the INPUT" in result.output or "is the input file" in result.output
        assert _snapshot(root) == before
    # an output folder inside the input: written, and not read again by a recursive re-run
    for _ in range(2):
        result = _run("degrade", str(root), str(root / "out"), "-t", "haze", "-r")
        assert result.exit_code == 0 and "2 ok, 0 failed, 0 skipped" in result.output, result.output
    assert sorted(p.relative_to(root).as_posix() for p in root.rglob("*.png")) == [
        "out/transmission/x.png", "out/transmission/y.png", "out/x.png", "out/y.png", "x.png", "y.png"]


IMAGE_COMMANDS = [("dehaze",), ("deblur",), ("degrade",), ("eval",), ("prior-cache",), ("run",),
                  ("benchmark", "restoration"), ("benchmark", "segmentation")]


@pytest.mark.parametrize("command", IMAGE_COMMANDS, ids=" ".join)
def test_every_command_that_reads_images_has_the_pixel_limit(command):
    from pipelines.commands._common import DEFAULT_MAX_PIXELS
    from robustsam_prior.core.io import DEFAULT_MAX_PIXELS as READER_DEFAULT

    assert DEFAULT_MAX_PIXELS == READER_DEFAULT  # spelled out for --help, which does not import the reader
    help_text = " ".join(_run(*command, "--help").output.split())
    assert "--max-pixels N" in help_text and "[default: 200000000; x>=1]" in help_text


def test_pixel_limit_in_degrade_eval_and_prior_cache(tmp_path):
    root = tmp_path / "in"
    write_image(root / "small.png", np.full((10, 10, 3), 0.5, np.float32))
    write_image(root / "large.png", np.full((12, 20, 3), 0.5, np.float32))
    limit = ("--max-pixels", "100")
    result = _run("degrade", str(root), str(tmp_path / "out"), "-t", "haze", *limit)
    assert result.exit_code == 1 and "1 ok, 1 failed" in result.output
    assert "FAILED large.png" in result.output and "20x12 is 240 pixels, over the pixel limit of 100 pixels" in result.output
    result = _run("eval", "--pred", str(root), "--gt", str(root), "--metrics", "psnr", *limit)
    assert result.exit_code == 1 and "FAILED large.png" in result.output and "over the pixel limit of 100" in result.output
    result = _run("prior-cache", str(root), "--prior", "regions", "--cache", str(tmp_path / "cache"), *limit)
    assert result.exit_code == 1 and "FAILED large.png" in result.output and "over the pixel limit of 100" in result.output
    assert _run("degrade", str(root), str(tmp_path / "out2"), "-t", "haze").exit_code == 0  # the default again


@pytest.mark.parametrize("make_args", [
    lambda src, out: ("dehaze", src, out, "--model", "identity"),
    lambda src, out: ("deblur", src, out, "--model", "identity"),
    lambda src, out: ("degrade", src, out, "-t", "haze"),
    lambda src, out: ("prior-cache", src, "--prior", "regions", "--cache", out),
    lambda src, out: ("eval", "--pred", src, "--gt", out.parent),
    lambda src, out: ("run", "pipelines/dehaze.yml", f"input={src}", f"output_dir={out}"),
], ids=["dehaze", "deblur", "degrade", "prior-cache", "eval", "run"])
def test_a_device_or_fifo_as_input_is_a_one_line_error(make_args, tmp_path, make_fifo):
    fifo = make_fifo(tmp_path / "pipe.png")
    for src in ("/dev/zero", str(fifo)):
        result = _run(*map(str, make_args(src, tmp_path / "out")))  # catch_exceptions=False: no traceback hides
        assert result.exit_code != 0 and result.output.startswith("Error: "), result.output
        assert result.output.count("\n") == 1 and src in result.output
