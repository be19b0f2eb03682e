"""The eval, benchmark and leaderboard commands through click's CliRunner."""

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from pipelines.cli import main


def _folders(tmp_path, n=2):
    from skimage import data

    from robustsam_prior.core.io import write_image

    full = data.chelsea().astype(np.float32) / 255
    rng = np.random.default_rng(1)
    for i in range(n):
        gt = full[40 * i : 40 * i + 36, 50:94]
        write_image(tmp_path / "gt" / f"img{i}.png", gt)
        write_image(tmp_path / "pred" / f"img{i}.png", np.clip(gt + rng.normal(0, 0.04, gt.shape), 0, 1))
    return tmp_path / "pred", tmp_path / "gt"


def _run(*args):
    result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    return result


def _expected(pred_dir, gt_dir, name, **kw):
    from eval.metrics.psnr_ssim import psnr, ssim
    from robustsam_prior.core.io import read_image, to_tensor

    p, g = (to_tensor(read_image(d / name).pixels) for d in (pred_dir, gt_dir))
    return {"psnr": psnr(p, g, **kw).item(), "ssim": ssim(p, g, **kw).item()}


def test_eval_json_is_one_object_and_unmatched_go_to_stderr(tmp_path):
    pred, gt = _folders(tmp_path)
    from robustsam_prior.core.io import write_image

    write_image(pred / "extra.png", np.zeros((8, 8, 3), np.float32))
    write_image(gt / "lonely.png", np.zeros((8, 8, 3), np.float32))
    r = _run(
        "eval",
        "--pred",
        pred,
        "--gt",
        gt,
        "--metrics",
        "psnr,ssim",
        "--json",
        "--crop-border",
        4,
        "--y-channel",
    )
    assert r.exit_code == 0, r.output
    obj = json.loads(r.stdout)  # the whole of stdout is one JSON object
    assert set(obj) == {"per_image", "mean", "conventions"}
    assert obj["conventions"]["description"] == "PSNR/SSIM: BasicSR 1.4 convention, Y channel (BT.601), crop 4, 8-bit"
    assert set(obj["per_image"]) == {"img0.png", "img1.png"}
    for name, vals in obj["per_image"].items():
        want = _expected(pred, gt, name, crop_border=4, test_y_channel=True)
        assert vals == pytest.approx(want, abs=1e-5)  # eval scores the exact 8-bit levels (float64)
    assert obj["mean"]["psnr"] == pytest.approx(np.mean([v["psnr"] for v in obj["per_image"].values()]))
    assert "extra.png" in r.stderr and "lonely.png" in r.stderr and "unmatched" in r.stderr


def test_eval_on_8bit_files_equals_basicsr_on_the_same_files(tmp_path):
    import cv2

    from robustsam_prior._basicsr import import_basicsr

    import_basicsr()
    from basicsr.metrics.psnr_ssim import calculate_psnr, calculate_ssim

    pred, gt = _folders(tmp_path)
    for y_args, y in (([], False), (["--y-channel"], True)):
        r = _run(
            "eval",
            "--pred",
            pred,
            "--gt",
            gt,
            "--metrics",
            "psnr,ssim",
            "--json",
            "--crop-border",
            4,
            *y_args,
        )
        obj = json.loads(r.stdout)
        for name, vals in obj["per_image"].items():
            a, b = cv2.imread(str(pred / name)), cv2.imread(str(gt / name))  # uint8 BGR, as BasicSR reads
            assert abs(vals["psnr"] - calculate_psnr(a, b, 4, test_y_channel=y)) < 1e-9
            assert abs(vals["ssim"] - calculate_ssim(a, b, 4, test_y_channel=y)) < 1e-9


def test_eval_fails_when_a_requested_metric_cannot_be_computed(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))  # an empty hub cache
    pred, gt = _folders(tmp_path)
    for args in (["--metrics", "psnr,lpips"], [], ["--metrics", "lpips_vgg", "--json"]):
        r = _run("eval", "--pred", pred, "--gt", gt, *args)
        assert r.exit_code == 1, (args, r.output)
        assert r.stdout == ""  # nothing scored
        net_file = "vgg16-397923af.pth" if "lpips_vgg" in args else "alexnet-owt-7be5be79.pth"
        assert "cannot be computed" in r.stderr and net_file in r.stderr and "--allow-missing" in r.stderr
    # a --lpips-weights path that does not exist is no better
    r = _run("eval", "--pred", pred, "--gt", gt, "--metrics", "psnr,lpips", "--lpips-weights", tmp_path / "none.pth")
    assert r.exit_code == 1 and "none.pth not found" in r.stderr


def test_eval_allow_missing_scores_the_others_and_reports_lpips_unavailable(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    pred, gt = _folders(tmp_path)
    r = _run("eval", "--pred", pred, "--gt", gt, "--allow-missing")
    assert r.exit_code == 0, r.output
    assert "mean" in r.stdout and "2 images scored" in r.stdout and "lpips" not in r.stdout
    assert r.stdout.splitlines()[0] == "PSNR/SSIM: BasicSR 1.4 convention, RGB, crop 0, 8-bit"
    assert "lpips: unavailable" in r.stderr and "alexnet-owt-7be5be79.pth" in r.stderr
    r = _run("eval", "--pred", pred, "--gt", gt, "--json", "--metrics", "psnr,lpips", "--allow-missing")
    assert r.exit_code == 0, r.output
    obj = json.loads(r.stdout)
    assert "lpips" not in obj["mean"] and "lpips" not in obj["per_image"]["img0.png"]
    assert "alexnet-owt-7be5be79.pth" in obj["unavailable"]["lpips"]


def test_benchmark_restoration_fails_before_running_when_lpips_cannot_be_computed(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    pred, gt = _folders(tmp_path)
    out = tmp_path / "r.jsonl"
    args = ["benchmark", "restoration", "--methods", "identity", "--lq", pred, "--gt", gt, "--metrics", "psnr,lpips",
            "--crops", 0, "--out", out]  # fmt: skip
    r = _run(*args)
    assert r.exit_code == 1 and "lpips: cannot be computed" in r.stderr
    assert not out.exists()
    r = _run(*args, "--allow-missing")
    assert r.exit_code == 0, r.output
    row = json.loads(out.read_text())
    assert "lpips" not in row["metrics"] and "alexnet-owt-7be5be79.pth" in row["unavailable"]["lpips"]


@pytest.mark.filterwarnings("ignore:.*(pretrained|weight enum).*:UserWarning")
def test_eval_lpips_with_weights_file(tmp_path):
    import lpips

    from eval.metrics.lpips_metric import BACKBONE_FILES

    torch.manual_seed(2)
    ref = lpips.LPIPS(net="alex", pnet_rand=True, verbose=False)
    state = {}
    for k, v in ref.net.state_dict().items():
        _, i, p = k.split(".")
        state[f"features.{i}.{p}"] = v
    torch.save(state, tmp_path / BACKBONE_FILES["alex"])
    pred, gt = _folders(tmp_path)
    r = _run("eval", "--pred", pred, "--gt", gt, "--json", "--metrics", "lpips", "--lpips-weights", tmp_path)
    assert r.exit_code == 0, r.output
    obj = json.loads(r.stdout)
    from robustsam_prior.core.io import read_image, to_tensor

    p, g = (to_tensor(read_image(d / "img1.png").pixels) for d in (pred, gt))
    with torch.no_grad():
        want = ref(p, g, normalize=True).item()
    assert obj["per_image"]["img1.png"]["lpips"] == pytest.approx(want, abs=1e-6)


def test_eval_errors(tmp_path):
    pred, gt = _folders(tmp_path)
    from robustsam_prior.core.io import write_image

    write_image(pred / "img0.png", np.zeros((10, 10, 3), np.float32))  # wrong size
    r = _run("eval", "--pred", pred, "--gt", gt, "--metrics", "psnr")
    assert r.exit_code == 1 and "FAILED img0.png" in r.stderr and "ground truth img0.png" in r.stderr
    r = _run("eval", "--pred", pred, "--gt", gt, "--metrics", "pnsr")
    assert r.exit_code == 2 and "did you mean" in r.output
    other = tmp_path / "other"
    write_image(other / "zzz.png", np.zeros((8, 8, 3), np.float32))
    r = _run("eval", "--pred", other, "--gt", gt)
    assert r.exit_code == 1 and "no file names match" in r.output


def test_benchmark_restoration_synthetic_then_leaderboard(tmp_path):
    _, clean = _folders(tmp_path)
    out = tmp_path / "res" / "results.jsonl"
    args = ["benchmark", "restoration", "--methods", "identity,dcp", "--clean", clean, "--degradation", "haze",
            "--severity", 2, "--seed", 3, "--task", "dehaze", "--metrics", "psnr,ssim", "--crops", 1, "--out", out]  # fmt: skip
    r = _run(*args)
    assert r.exit_code == 0, r.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [x["method"] for x in rows] == ["identity", "dcp"]
    assert {k: rows[0]["dataset"]["degradation"][k] for k in ("kind", "severity", "seed")} == {
        "kind": "haze", "severity": 2, "seed": 3}
    r2 = _run(*args)  # the same spec again: identical metric values (appended)
    rows2 = [json.loads(line) for line in out.read_text().splitlines()][2:]
    assert [x["per_image"] for x in rows2] == [x["per_image"] for x in rows]
    r = _run("leaderboard", out, "--out", tmp_path / "lb")
    assert r.exit_code == 0, r.output
    md = (tmp_path / "lb" / "leaderboard.md").read_text()
    assert "## dehaze / gt+haze-s2" in md and md.count("| dcp |") == 1
    assert (tmp_path / "lb" / "leaderboard.html").is_file() and (
        tmp_path / "lb" / "leaderboard.csv"
    ).is_file()
    assert r2.exit_code == 0


def test_benchmark_restoration_paired_and_usage_errors(tmp_path):
    pred, gt = _folders(tmp_path)
    out = tmp_path / "r.jsonl"
    r = _run("benchmark", "restoration", "--methods", "identity", "--lq", pred, "--gt", gt, "--metrics", "psnr",
             "--crops", 0, "--out", out)  # fmt: skip
    assert r.exit_code == 0, r.output
    assert "identity: 2 images" in r.stdout
    r = _run("benchmark", "restoration", "--methods", "identity", "--out", out)
    assert r.exit_code == 2 and "exactly one of" in r.output
    r = _run("benchmark", "restoration", "--methods", "identity", "--clean", gt, "--out", out)
    assert r.exit_code == 2 and "--degradation" in r.output
    r = _run("benchmark", "restoration", "--methods", "identity", "--lq", pred, "--out", out)
    assert r.exit_code == 2 and "go together" in r.output


def test_benchmark_segmentation_regions_and_tiny_robustsam(tmp_path):
    out = tmp_path / "seg.jsonl"
    r = _run("benchmark", "segmentation", "--segmenters", "regions", "--shapes-count", 2, "--shapes-size", 48,
             "--degradations", "gaussian_noise,elastic_transform", "--severities", "1,5", "--out", out)  # fmt: skip
    assert r.exit_code == 0, r.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(x["degradation"], x["severity"]) for x in rows] == [
        ("clear", None), ("gaussian_noise", 1), ("gaussian_noise", 5), ("elastic_transform", 1), ("elastic_transform", 5)
    ]  # fmt: skip
    # a tiny RobustSAM from a JSON config and a saved checkpoint, clear images only
    from robustsam_prior import build_robustsam
    from robustsam_prior.loading import save_robustsam

    cfg = {"img_size": 256, "patch": 16, "enc_dim": 32, "enc_depth": 2, "enc_heads": 2, "global_attn": [1],
           "window": 4, "prompt_dim": 64, "dec_depth": 2, "dec_mlp": 128, "dec_heads": 2, "iou_hidden": 64,
           "mask_in_chans": 16}  # fmt: skip
    (tmp_path / "tiny.json").write_text(json.dumps(cfg))
    torch.manual_seed(0)
    sha = save_robustsam(build_robustsam(cfg), tmp_path / "tiny.safetensors")
    r = _run("benchmark", "segmentation", "--segmenters", "robustsam", "--shapes-count", 1, "--shapes-size", 48,
             "--degradations", "none", "--model-config", tmp_path / "tiny.json", "--checkpoint",
             tmp_path / "tiny.safetensors", "--prompt", "point", "--out", out)  # fmt: skip
    assert r.exit_code == 0, r.output
    last = json.loads(out.read_text().splitlines()[-1])
    assert (
        last["method"] == "robustsam"
        and last["checkpoint_sha256"] == sha
        and last["prompt"]["type"] == "point"
    )
    r = _run("benchmark", "segmentation", "--segmenters", "robustsm", "--out", out)
    assert r.exit_code == 1 and "did you mean" in r.output
    r = _run("benchmark", "segmentation", "--severities", "x", "--out", out)
    assert r.exit_code == 2
    r = _run("benchmark", "segmentation", "--dataset", tmp_path, "--out", out)
    assert r.exit_code == 1 and "images/ and masks/" in r.output


def _tiny_checkpoint(path, seed):
    from restore.archs import build_arch
    from robustsam_prior.core.checkpoint import save_checkpoint

    torch.manual_seed(seed)
    kw = {"width": 4, "enc_blocks": [1], "middle_blocks": 1, "dec_blocks": [1]}
    net = build_arch("nafnet", **kw).eval()
    for p in net.parameters():  # NAFNet starts as an identity (zero-initialised scales); make it do something
        p.data.add_(0.02 * torch.randn_like(p))
    meta = {"format": "robustsam-restore/restoration", "arch": "nafnet", "arch_kwargs": kw, "task": "dehaze",
            "prior": None, "metrics": {}}  # fmt: skip
    return save_checkpoint(path, net.state_dict(), meta)


def test_two_final_checkpoints_get_two_rows_and_aliases_name_rows(tmp_path):
    pred, gt = _folders(tmp_path)
    a, b = tmp_path / "runs" / "a" / "models" / "final.safetensors", tmp_path / "runs" / "b" / "models" / "final.safetensors"
    sha_a, sha_b = _tiny_checkpoint(a, 0), _tiny_checkpoint(b, 1)
    out = tmp_path / "res" / "r.jsonl"
    common = ["--lq", pred, "--gt", gt, "--metrics", "psnr,ssim", "--crops", 0, "--task", "dehaze", "--out", out]
    # one at a time into one results file, as two training runs finish
    for ckpt in (a, b):
        r = _run("benchmark", "restoration", "--methods", ckpt, *common)
        assert r.exit_code == 0, r.output
        assert "PSNR/SSIM: BasicSR 1.4 convention, RGB, crop 0, 8-bit" in r.stdout
    r = _run("benchmark", "restoration", "--methods", "base=identity", *common)
    assert r.exit_code == 0, r.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [x["method"] for x in rows] == ["a/final", "b/final", "base"]
    assert [x["checkpoint_sha256"] for x in rows] == [sha_a, sha_b, None]
    r = _run("leaderboard", out, "--out", tmp_path / "lb")
    assert r.exit_code == 0, r.output
    md = (tmp_path / "lb" / "leaderboard.md").read_text()
    assert md.count("| a/final |") == 1 and md.count("| b/final |") == 1 and md.count("| base |") == 1
    assert sha_a[:12] in md and sha_b[:12] in md
    # aliases; one file given twice without names is refused, naming it
    r = _run("benchmark", "restoration", "--methods", f"first={a},second={b}", *common)
    assert r.exit_code == 0 and "first: 2 images" in r.stdout and "second: 2 images" in r.stdout, r.output
    r = _run("benchmark", "restoration", "--methods", f"{a},{a}", *common)
    assert r.exit_code == 1 and f"two methods would be called 'a/final' ('{a}' and '{a}')" in r.output
    r = _run("benchmark", "restoration", "--methods", "=identity", *common)
    assert r.exit_code == 2 and "expected NAME=SPEC" in r.output
    # the same run folder name under two parents: the short sha256 tells them apart
    c = tmp_path / "elsewhere" / "a" / "final.safetensors"
    sha_c = _tiny_checkpoint(c, 2)
    r = _run("benchmark", "restoration", "--methods", f"{a},{c}", *common)
    assert r.exit_code == 0, r.output
    assert f"a/final@{sha_a[:8]}: 2 images" in r.stdout and f"a/final@{sha_c[:8]}: 2 images" in r.stdout


def test_benchmark_inference_settings_are_those_of_restorer(tmp_path):
    from eval.metrics import MetricConventions, psnr
    from restore.inference import Restorer
    from robustsam_prior.core.io import read_image, to_tensor

    pred, gt = _folders(tmp_path)
    ck = tmp_path / "runs" / "r1" / "models" / "final.safetensors"
    _tiny_checkpoint(ck, 3)
    out = tmp_path / "r.jsonl"
    common = ["--lq", pred, "--gt", gt, "--metrics", "psnr", "--crops", 0, "--task", "dehaze", "--out", out]
    r = _run("benchmark", "restoration", "--methods", ck, "--self-ensemble", "flip", "--local-pool", 16, *common)
    assert r.exit_code == 0, r.output
    row = json.loads(out.read_text().splitlines()[-1])
    assert row["method"] == "r1/final+pool16+flip"
    assert row["method_info"]["local_pool"] == 16 and row["method_info"]["self_ensemble"] == "flip"
    restorer = Restorer.load(str(ck), task="dehaze", device="cpu", local_pool=16, self_ensemble="flip")
    plain = Restorer.load(str(ck), task="dehaze", device="cpu")
    for name, vals in row["per_image"].items():
        x, y = (to_tensor(read_image(d / name).pixels) for d in (pred, gt))
        with torch.no_grad():
            want = psnr(restorer.restore(x).clamp(0, 1), y, **MetricConventions().kwargs()).item()
            other = psnr(plain.restore(x).clamp(0, 1), y, **MetricConventions().kwargs()).item()
        assert vals["psnr"] == pytest.approx(want, abs=1e-9) and abs(want - other) > 1e-6
