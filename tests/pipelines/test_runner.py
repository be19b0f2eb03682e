"""The pipeline runner: dehaze.yml gives the same images as `robustsam-restore dehaze`; restore-then-segment
reports matched mIoU; per-image failures; prior reuse."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from pipelines.cli import main
from restore.archs import build_arch
from robustsam_prior.core.checkpoint import save_checkpoint

ARCH_KWARGS = {"width": 8, "enc_blocks": [1], "middle_blocks": 1, "dec_blocks": [1], "region_dropout": 0.5}


@pytest.fixture
def tiny_model(tmp_path):
    """A (randomly initialised) prior-conditioned dehazing checkpoint in this project's format."""
    torch.manual_seed(0)
    net = build_arch("map_nafnet", **ARCH_KWARGS)
    with torch.no_grad():  # make the output depend on the input non-trivially
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    path = tmp_path / "tiny.safetensors"
    save_checkpoint(path, net.state_dict(), {
        "format": "robustsam-restore/restoration", "arch": "map_nafnet", "arch_kwargs": ARCH_KWARGS,
        "task": "dehaze", "prior": {"name": "regions", "options": {"n_segments": 16}}, "metrics": {},
    })
    return path


@pytest.fixture
def images(tmp_path):
    rng = np.random.default_rng(0)
    root = tmp_path / "in"
    (root / "sub").mkdir(parents=True)
    yy, xx = np.mgrid[0:40, 0:56] / 40
    for name in ("a.png", "sub/b.png"):
        base = np.stack([np.sin(6 * xx + rng.uniform(0, 6)), np.cos(5 * yy + rng.uniform(0, 6)), xx * yy], -1)
        img = (base - base.min()) / np.ptp(base)
        Image.fromarray((img * 255).astype(np.uint8)).save(root / name)
    (root / "notes.txt").write_text("not an image")
    return root


def _run(args):
    res = CliRunner().invoke(main, args)
    return res


def test_run_dehaze_yml_equals_the_dehaze_command(tmp_path, tiny_model, images):
    res = _run(["dehaze", str(images), str(tmp_path / "cli"), "--model", str(tiny_model), "--recursive",
                "--device", "cpu"])
    assert res.exit_code == 0, res.output
    res = _run(["run", "pipelines/dehaze.yml", f"input={images}", f"output_dir={tmp_path / 'pipe'}",
                f"steps.1.model={tiny_model}", "recursive=true", "device=cpu"])
    assert res.exit_code == 0, res.output
    for rel in ("a.png", "sub/b.png"):
        a = np.asarray(Image.open(tmp_path / "cli" / rel))
        b = np.asarray(Image.open(tmp_path / "pipe" / "restored" / rel))
        c = np.asarray(Image.open(images / rel))
        assert a.shape == b.shape == c.shape
        assert np.array_equal(a, b), rel
        assert not np.array_equal(a, c), "the model changed nothing; the comparison would be vacuous"
    # eval is optional in dehaze.yml: without ground truth the run succeeds and says so in the report
    report = json.loads((tmp_path / "pipe" / "report.json").read_text())
    assert report["images"] == 2 and report["mean"] == {}
    assert "ground_truth=" not in (tmp_path / "pipe" / "pipeline.yml").read_text()
    assert f"# override: steps.1.model={tiny_model}" in (tmp_path / "pipe" / "pipeline.yml").read_text()


def test_prior_step_result_is_reused_by_restore(tmp_path, tiny_model, images, monkeypatch):
    from robustsam_prior.priors.regions import RegionsPrior

    calls = []
    original = RegionsPrior.forward

    def counting(self, x):
        calls.append(tuple(x.shape))
        return original(self, x)

    monkeypatch.setattr(RegionsPrior, "forward", counting)
    yml = tmp_path / "p.yml"
    yml.write_text(
        "name: reuse\nsteps:\n"
        "  - {step: prior, name: regions, options: {n_segments: 16}}\n"
        f"  - {{step: restore, task: dehaze, model: {tiny_model}}}\n"
    )
    res = _run(["run", str(yml), f"input={images / 'a.png'}", f"output_dir={tmp_path / 'o'}", "device=cpu"])
    assert res.exit_code == 0, res.output
    assert len(calls) == 1, calls
    # a self-ensemble reuses it for the image as given and computes the prior of the mirrored copy
    calls.clear()
    res = _run(["run", str(yml), f"input={images / 'a.png'}", f"output_dir={tmp_path / 'o2'}", "device=cpu",
                "steps.1.self_ensemble=flip"])
    assert res.exit_code == 0, res.output
    assert len(calls) == 2, calls


def test_restore_then_segment_reports_miou(tmp_path, tiny_model, images):
    out = tmp_path / "rts"
    res = _run(["run", "pipelines/restore_then_segment.yml", f"input={images}", f"output_dir={out}",
                f"steps.1.model={tiny_model}", "recursive=true", "steps.2.options={n_segments: 12}", "device=cpu",
                "--json"])
    assert res.exit_code == 0, res.output
    report = json.loads((out / "report.json").read_text())
    keys = {"psnr", "ssim", "input_psnr", "input_ssim", "miou_input_vs_clean", "miou_restored_vs_clean"}
    assert keys <= set(report["mean"]), report["mean"]
    for m in report["per_image"].values():
        assert 0.0 < m["miou_input_vs_clean"] <= 1.0 and 0.0 < m["miou_restored_vs_clean"] <= 1.0
    assert (out / "degraded" / "sub" / "b.png").is_file()
    assert "| miou_restored_vs_clean |" in (out / "report.md").read_text()
    line = "PSNR/SSIM: BasicSR 1.4 convention, RGB, crop 0, 8-bit"  # eval's and benchmark's convention
    assert report["conventions"] == line and f"\n{line}\n" in (out / "report.md").read_text()


def test_failures_are_per_image_and_exit_nonzero(tmp_path, tiny_model, images):
    gt = tmp_path / "gt"
    gt.mkdir()
    Image.open(images / "a.png").save(gt / "a.png")  # no reference for sub/b.png
    yml = tmp_path / "p.yml"
    yml.write_text(
        f"steps:\n  - {{step: restore, task: dehaze, model: {tiny_model}}}\n"
        "  - {step: eval, metrics: [psnr]}\n  - {step: report}\n"
    )
    res = _run(["run", str(yml), f"input={images}", f"ground_truth={gt}", "recursive=true",
                f"output_dir={tmp_path / 'o'}", "device=cpu"])
    assert res.exit_code == 1
    assert "1 ok, 1 failed" in res.output and "no reference for sub/b.png" in res.output
    # strict JSON (Python's reader would take NaN/Infinity): infinity is spelled "inf"
    def strict(name):
        return json.loads((tmp_path / "o" / name).read_text(), parse_constant=lambda t: pytest.fail(f"{name}: {t}"))

    report, summary = strict("report.json"), strict("summary.json")
    assert set(report["per_image"]) == {"a.png"} and report["failed"][0]["rel"] == "sub/b.png"
    # input == reference: PSNR is inf for that image, and means are taken over finite values only
    assert report["per_image"]["a.png"]["input_psnr"] == "inf" and "input_psnr" not in report["mean"]
    assert summary["mean"] == report["mean"]
    assert np.isfinite(report["mean"]["psnr"])
    # eval without any reference and not optional: each image fails with a clear message
    res = _run(["run", str(yml), f"input={images / 'a.png'}", f"output_dir={tmp_path / 'o2'}", "device=cpu"])
    assert res.exit_code == 1 and "set ground_truth or add a degrade step" in res.output


def test_run_command_config_errors(tmp_path, images, tiny_model):
    res = _run(["run", "pipelines/dehaze.yml"])
    assert res.exit_code != 0 and "input: missing (pass input=PATH" in res.output
    res = _run(["run", "pipelines/dehaze.yml", f"input={images}", "steps.1.tiel=3"])
    assert res.exit_code != 0 and "steps[1].tiel: unknown key (did you mean 'tile'?)" in res.output
    res = _run(["run", "pipelines/dehaze.yml", f"input={tmp_path / 'nope'}"])
    assert res.exit_code != 0 and "input: not found" in res.output
    res = _run(["run", "pipelines/dehaze.yml", f"input={images}", f"output_dir={tmp_path}/x",
                "steps.2.metrics=[psnrr]", "device=cpu", f"steps.1.model={tiny_model}"])
    assert res.exit_code != 0 and "steps[2].metrics: unknown metric 'psnrr' (did you mean 'psnr'?)" in res.output
    res = _run(["run", "pipelines/dehaze.yml", f"input={images}", f"output_dir={tmp_path}/y",
                "steps.0.name=regionz", "device=cpu"])
    assert res.exit_code != 0 and "steps[0]: unknown prior 'regionz' (did you mean 'regions'?)" in res.output

def _report_pipeline(tmp_path: Path, report: str) -> Path:
    yml = tmp_path / "report.yml"
    yml.write_text("steps:\n  - {step: degrade, kind: haze, severity: 2}\n  - {step: eval, metrics: [psnr]}\n"
                   f"  - {{step: report{', ' + report if report else ''}}}\n")
    return yml


def test_report_paths_stay_inside_output_dir(tmp_path, images):
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "notes.json").write_text('{"mine": 1}\n')
    (victim / "notes.md").write_text("# my notes\n")
    out = tmp_path / "out"
    for path, why in (("../victim/notes.json", "its '..' leads out of the folder"),
                      (str(victim / "notes.json"), "it is absolute"), ("a/../../x.json", "its '..' leads out")):
        res = _run(["run", str(_report_pipeline(tmp_path, "")), f"input={images}", f"output_dir={out}",
                    f"steps.2.path={path}"])
        assert res.exit_code == 1, res.output
        assert f"steps[2].path: must be a path inside OUTPUT_DIR, got '{path}' ({why}" in res.output
        assert len(res.output.strip().splitlines()) == 1 and not out.exists()
    for bad, message in (("notes.md", "steps[2].path: must end in .json"),
                         ("summary.json", "steps[2].path: OUTPUT_DIR/summary.json is the run's summary")):
        res = _run(["run", str(_report_pipeline(tmp_path, f"path: {bad}")), f"input={images}", f"output_dir={out}"])
        assert res.exit_code == 1 and message in res.output, res.output
    # a symbolic link inside OUTPUT_DIR does not lead out either
    out.mkdir()
    (out / "link").symlink_to(victim)
    res = _run(["run", str(_report_pipeline(tmp_path, "path: link/notes.json")), f"input={images}",
                f"output_dir={out}"])
    assert res.exit_code == 1 and "steps[2].path: 'link/notes.json' is not a path inside" in res.output, res.output
    assert f"it leads to {victim.resolve() / 'notes.json'} through a symbolic link" in res.output
    assert (victim / "notes.json").read_text() == '{"mine": 1}\n' and (victim / "notes.md").read_text() == "# my notes\n"


def test_report_never_overwrites_a_file_it_did_not_write(tmp_path, images):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.md").write_text("# my notes\n")
    args = ["run", str(_report_pipeline(tmp_path, "path: notes.json")), f"input={images}", f"output_dir={out}"]
    res = _run(args)
    assert res.exit_code == 1 and f"steps[2].path: {out / 'notes.md'} exists and is not a report" in res.output
    assert "or markdown: false" in res.output and not (out / "notes.json").exists()
    assert not (out / "summary.json").exists(), "refused at setup, before any image is processed"
    assert (out / "notes.md").read_text() == "# my notes\n"
    # asked for the JSON only, it leaves the Markdown file alone
    res = _run([*args, "steps.2.markdown=false"])
    assert res.exit_code == 0, res.output
    assert (out / "notes.md").read_text() == "# my notes\n" and json.loads((out / "notes.json").read_text())["images"] == 1
    # a JSON file that is not a report is not replaced either; an earlier report is
    (out / "data.json").write_text('{"mine": 1}\n')
    res = _run([*args, "steps.2.path=data.json", "steps.2.markdown=false"])
    assert res.exit_code == 1 and f"{out / 'data.json'} exists and is not a report" in res.output
    assert (out / "data.json").read_text() == '{"mine": 1}\n'
    (out / "notes.md").unlink()
    for _ in range(2):  # the second run replaces its own report.json and report.md
        res = _run(["run", str(_report_pipeline(tmp_path, "")), f"input={images}", f"output_dir={out}"])
        assert res.exit_code == 0, res.output
    assert "| metric | mean |" in (out / "report.md").read_text()


def test_find_reference_by_path_stem_and_sots_prefix(tmp_path):
    from pipelines.runner import find_reference

    (tmp_path / "sub").mkdir()
    for name in ("x.png", "0001.png", "sub/y.jpg"):
        Image.new("RGB", (4, 4)).save(tmp_path / name)
    assert find_reference(tmp_path, Path("x.png")) == tmp_path / "x.png"
    assert find_reference(tmp_path, Path("x.jpg")) == tmp_path / "x.png"
    assert find_reference(tmp_path, Path("sub/y.png")) == tmp_path / "sub" / "y.jpg"
    assert find_reference(tmp_path, Path("0001_0.8_0.2.jpg")) is None
    assert find_reference(tmp_path, Path("0001_0.8_0.2.jpg"), "prefix") == tmp_path / "0001.png"
    assert find_reference(tmp_path, Path("y.png")) is None


def test_non_image_files_are_warned_about_and_counted(tmp_path, images, caplog):
    yml = tmp_path / "p.yml"
    yml.write_text("steps:\n  - {step: restore, task: dehaze, model: identity}\n")
    with caplog.at_level("WARNING"):
        res = _run(["run", str(yml), f"input={images}", "recursive=true", f"output_dir={tmp_path / 'o'}"])
    assert res.exit_code == 0, res.output
    assert "2 ok, 0 failed, 1 skipped" in res.output
    assert any("skipping notes.txt: not an image file" in r.getMessage() for r in caplog.records)
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert summary["processed"] == 2 and summary["skipped"] == [{"rel": "notes.txt", "reason": "not an image file"}]
    res = _run(["run", str(yml), f"input={images}", f"output_dir={tmp_path / 'o2'}", "--json"])
    assert json.loads(res.output)["skipped"] == [{"rel": "notes.txt", "reason": "not an image file"}]


def _tree(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def test_output_dir_is_never_the_input_and_is_not_read_again(tmp_path, images):
    yml = tmp_path / "p.yml"
    yml.write_text("steps:\n  - {step: restore, task: dehaze, model: identity}\n")
    before = {p: (images / p).read_bytes() for p in _tree(images)}
    for output_dir in (images, tmp_path / "link"):
        if output_dir.name == "link":
            output_dir.symlink_to(images)
        res = _run(["run", str(yml), f"input={images}", f"output_dir={output_dir}"])
        assert res.exit_code == 1 and "is the INPUT folder" in res.output, res.output
    # restoring earlier outputs into the folder they came from would overwrite them
    res = _run(["run", str(yml), f"input={images}", "recursive=true", f"output_dir={tmp_path / 'o'}"])
    assert res.exit_code == 0
    restored = {p: (tmp_path / "o" / "restored" / p).read_bytes() for p in _tree(tmp_path / "o" / "restored")}
    res = _run(["run", str(yml), f"input={tmp_path / 'o' / 'restored'}", f"output_dir={tmp_path / 'o'}",
                "recursive=true"])
    assert res.exit_code == 1 and "is the input file" in res.output and "it would be overwritten" in res.output
    assert {p: (tmp_path / "o" / "restored" / p).read_bytes() for p in restored} == restored
    # an output_dir (and a prior cache) inside the input: re-runs restore the inputs, never earlier outputs
    yml.write_text("steps:\n  - {step: prior, name: regions, cache_dir: %s}\n"
                   "  - {step: restore, task: dehaze, model: identity}\n" % (images / "cache"))
    for _ in range(2):
        res = _run(["run", str(yml), f"input={images}", "recursive=true", f"output_dir={images / 'out'}"])
        assert res.exit_code == 0 and "2 ok, 0 failed, 1 skipped" in res.output, res.output
    assert _tree(images / "out" / "restored") == ["a.png", "sub/b.png"]
    assert len(list((images / "cache").rglob("*.safetensors"))) == 2
    assert {p: (images / p).read_bytes() for p in before} == before


def test_label_maps_of_inputs_sharing_a_stem_keep_their_own_files(tmp_path):
    root = tmp_path / "in"
    root.mkdir()
    rng = np.random.default_rng(5)
    for name in ("x.png", "x.bmp", "y.png"):
        Image.fromarray((rng.random((24, 32, 3)) * 255).astype(np.uint8)).save(root / name)
    yml = tmp_path / "p.yml"
    yml.write_text("steps:\n  - {step: segment, name: regions, options: {n_segments: 6}, targets: [input], "
                   "save: true}\n")
    res = _run(["run", str(yml), f"input={root}", f"output_dir={tmp_path / 'o'}"])
    assert res.exit_code == 0 and "3 ok" in res.output, res.output
    assert _tree(tmp_path / "o" / "segments") == ["input/x.bmp.png", "input/x.png.png", "input/y.png"]


def test_restore_step_tile_and_max_pixels(tmp_path, images):
    yml = tmp_path / "p.yml"
    yml.write_text("steps:\n  - {step: restore, task: deblur, model: identity}\n")
    res = _run(["run", str(yml), f"input={images}", f"output_dir={tmp_path / 'o'}", "steps.0.tile=1"])
    assert res.exit_code == 1 and "tile must be 0 (never tile) or at least 128 pixels, got 1" in res.output
    res = _run(["run", str(yml), f"input={images}", f"output_dir={tmp_path / 'o'}", "--max-pixels", "2000"])
    assert res.exit_code == 1 and "0 ok, 1 failed" in res.output
    assert "56x40 is 2240 pixels, over the pixel limit of 2000 pixels" in res.output


def test_an_eval_step_fails_on_a_metric_it_cannot_compute_unless_allow_missing(tmp_path, images, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))  # no LPIPS backbone weights
    args = ["run", "pipelines/restore_then_segment.yml", f"input={images}", "steps.1.model=identity",
            "steps.3.metrics=[psnr, lpips]", "steps.2.targets=[input]"]
    res = _run([*args, f"output_dir={tmp_path / 'a'}"])
    assert res.exit_code == 1
    assert "steps[3].metrics: lpips cannot be computed" in res.output and "alexnet-owt-7be5be79.pth" in res.output
    assert "steps.3.allow_missing=true" in res.output
    assert not (tmp_path / "a" / "report.json").exists()
    res = _run([*args, f"output_dir={tmp_path / 'b'}", "steps.3.allow_missing=true"])
    assert res.exit_code == 0, res.output
    report = json.loads((tmp_path / "b" / "report.json").read_text())
    assert "psnr" in report["mean"] and not any("lpips" in k for k in report["mean"])
