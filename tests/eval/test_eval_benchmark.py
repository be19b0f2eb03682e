"""Restoration and segmentation-robustness benchmarks: values, provenance, failures, determinism."""

import json

import numpy as np
import pytest
import torch

from eval.benchmark import (
    BoxSegmenter,
    Method,
    RegionsSegmenter,
    SyntheticPairs,
    draw_prompts,
    jsonable,
    mask_box,
    read_rows,
    resolve_method,
    run_restoration_benchmark,
    run_segmentation_benchmark,
    seed_for,
    write_rows,
)
from eval.datasets import SegmentationDataset, pair_folders
from eval.metrics.psnr_ssim import psnr, ssim

# the tiny architecture of the official reference vectors (tiny_config.json), random weights
TINY = {
    "img_size": 256, "patch": 16, "enc_dim": 32, "enc_depth": 2, "enc_heads": 2, "global_attn": [1], "window": 4,
    "prompt_dim": 64, "dec_depth": 2, "dec_mlp": 128, "dec_heads": 2, "iou_hidden": 64, "mask_in_chans": 16,
}  # fmt: skip


def _write_pairs(root, n=3, size=(40, 48)):
    from skimage import data

    from robustsam_prior.core.io import write_image

    full = data.astronaut().astype(np.float32) / 255
    rng = np.random.default_rng(0)
    for i in range(n):
        gt = full[60 * i : 60 * i + size[0], 100 : 100 + size[1]]
        lq = np.clip(gt + rng.normal(0, 0.05, gt.shape), 0, 1)
        write_image(root / "lq" / f"im{i}.png", lq)
        write_image(root / "gt" / f"im{i}.png", gt)
    return root / "lq", root / "gt"


def _tensor(p):
    from robustsam_prior.core.io import read_image, to_tensor

    return to_tensor(read_image(p).pixels)


def test_restoration_benchmark_values_rows_and_crops(tmp_path):
    lq, gt = _write_pairs(tmp_path)
    data = pair_folders(lq, gt, name="astro")
    half = Method("half", lambda x: x * 0.5, checkpoint_sha256="abc", prior={"name": "none"})
    out = tmp_path / "results" / "r.jsonl"
    rows = run_restoration_benchmark(
        methods=["identity", half], data=data, metrics=["psnr", "ssim", "lpips"], task="other",
        lpips_weights=tmp_path / "no-such-weights.pth", crops_dir=tmp_path / "results" / "crops", num_crops=1, out=out,
    )  # fmt: skip
    assert [r["method"] for r in rows] == ["identity", "half"]
    ident = rows[0]
    for it in data:
        x, y = _tensor(it.lq), _tensor(it.gt)
        # the project's convention: outputs rounded to 8 bits (x * 0.5 falls between levels); the ground
        # truth is scored at its exact 8-bit levels (float64), hence approx
        assert ident["per_image"][it.name]["psnr"] == pytest.approx(psnr(x, y, quantize=True).item(), abs=1e-5)
        want = ssim(x * 0.5, y, quantize=True).item()
        assert rows[1]["per_image"][it.name]["ssim"] == pytest.approx(want, abs=1e-6)
        assert abs(want - ssim(x * 0.5, y).item()) > 1e-5  # unrounded would differ
    assert ident["metrics"]["psnr"] == pytest.approx(
        np.mean([v["psnr"] for v in ident["per_image"].values()])
    )
    # LPIPS without weights: unavailable with a reason, never a number
    assert "lpips" not in ident["metrics"] and "no-such-weights.pth" in ident["unavailable"]["lpips"]
    assert ident["metrics"]["images_per_s"] > 0 and ident["count"] == 3
    assert rows[1]["checkpoint_sha256"] == "abc" and rows[1]["prior"] == {"name": "none"}
    assert ident["dataset"]["name"] == "astro" and len(ident["dataset"]["file_list_sha256"]) == 64
    assert set(ident["provenance"]) >= {"package_version", "git_rev", "date"}
    assert ident["conventions"]["quantize"] is True
    assert ident["conventions"]["crop_border"] == 0 and ident["conventions"]["metrics"] == [
        "psnr",
        "ssim",
        "lpips",
    ]
    # crops: paths relative to the results file, all three written
    crop = rows[1]["crops"]["im0.png"]
    for key in ("degraded", "gt", "output"):
        assert (out.parent / crop[key]).is_file()
    back = read_rows(out)
    assert [r["method"] for r in back] == ["identity", "half"] and back[0]["per_image"] == ident["per_image"]


def test_crops_outside_the_results_folder_are_warned_about(tmp_path, caplog):
    lq, gt = _write_pairs(tmp_path, n=1)
    kw = dict(methods=["identity"], data=pair_folders(lq, gt), metrics=["psnr"], num_crops=1)
    run_restoration_benchmark(**kw, crops_dir=tmp_path / "res" / "res_crops", out=tmp_path / "res" / "r.jsonl")
    assert "outside the results file's folder" not in caplog.text
    rows = run_restoration_benchmark(**kw, crops_dir=tmp_path / "elsewhere", out=tmp_path / "res" / "s.jsonl")
    assert f"crops go to {tmp_path / 'elsewhere'}, outside the results file's folder {tmp_path / 'res'}" in caplog.text
    assert all(p.startswith("../elsewhere/") for p in next(iter(rows[0]["crops"].values())).values())


def test_restoration_failures_are_recorded(tmp_path):
    lq, gt = _write_pairs(tmp_path, n=2)

    def bad(x):
        raise RuntimeError("boom")

    rows = run_restoration_benchmark(methods=["identity", Method("ok", lambda x: x)], data=pair_folders(lq, gt),
                                     metrics=["psnr"])  # fmt: skip
    assert rows[0]["failed"] == []
    out = tmp_path / "partial.jsonl"
    with pytest.raises(RuntimeError, match="bad: every image failed \\(boom\\)"):
        run_restoration_benchmark(methods=["identity", Method("bad", bad)], data=pair_folders(lq, gt),
                                  metrics=["psnr"], out=out)  # fmt: skip
    assert [r["method"] for r in read_rows(out)] == ["identity"]  # what worked is kept
    calls = []

    def second_crops(x):  # the second image comes back one column short
        calls.append(1)
        return x if len(calls) == 1 else x[..., :-1]

    row = run_restoration_benchmark(methods=[Method("half_bad", second_crops)], data=pair_folders(lq, gt),
                                    metrics=["psnr"])[0]  # fmt: skip
    assert row["count"] == 1 and list(row["per_image"]) == ["im0.png"]
    assert row["failed"] == [
        {"name": "im1.png", "error": "output shape (1, 3, 40, 47) differs from ground truth (1, 3, 40, 48)"}
    ]
    # an unreadable file fails that pair for every method; the others are still scored
    (lq / "im0.png").write_bytes(b"\x89PNG broken")
    rows = run_restoration_benchmark(methods=["identity", Method("ok", lambda x: x)], data=pair_folders(lq, gt),
                                     metrics=["psnr"])  # fmt: skip
    for r in rows:
        assert list(r["per_image"]) == ["im1.png"]
        assert [f["name"] for f in r["failed"]] == ["im0.png"] and "im0.png" in r["failed"][0]["error"]
    with pytest.raises(ValueError, match="two methods would be called 'identity' \\('identity' and 'identity'\\)"):
        run_restoration_benchmark(
            methods=["identity", "identity"], data=pair_folders(lq, gt), metrics=["psnr"]
        )
    with pytest.raises(KeyError, match="did you mean"):
        run_restoration_benchmark(methods=["identity"], data=pair_folders(lq, gt), metrics=["pnsr"])


def test_synthetic_pairs_are_deterministic_per_image(tmp_path):
    _, gt = _write_pairs(tmp_path, n=2)
    a = SyntheticPairs(gt, "gaussian_noise", 2, seed=5)
    kw = dict(methods=["identity"], metrics=["psnr", "ssim"])
    r1 = run_restoration_benchmark(data=a, **kw)[0]
    r2 = run_restoration_benchmark(data=SyntheticPairs(gt, "gaussian_noise", 2, seed=5), **kw)[0]
    assert r1["per_image"] == r2["per_image"] and r1["metrics"]["psnr"] == r2["metrics"]["psnr"]
    r3 = run_restoration_benchmark(data=SyntheticPairs(gt, "gaussian_noise", 2, seed=6), **kw)[0]
    assert r3["per_image"] != r1["per_image"]
    from robustsam_prior.degradations import SEED_RULE

    assert r1["dataset"]["degradation"] == {"kind": "gaussian_noise", "severity": 2, "seed": 5, "seed_rule": SEED_RULE}
    lq0, gt0 = a.load(0)
    assert torch.equal(lq0, (lq0 * 255).round() / 255)  # rounded to the file's 8 bits, as `degrade` writes it
    assert lq0.dtype == torch.float32 and gt0.dtype == torch.float64  # ground truth at its exact 8-bit levels
    assert torch.allclose(gt0 * 255, (gt0 * 255).round(), rtol=0, atol=1e-9)
    # a pair does not depend on which other files are in the folder
    from robustsam_prior.core.io import write_image

    write_image(gt / "aaa_first.png", np.zeros((40, 48, 3), np.float32) + 0.3)
    r4 = run_restoration_benchmark(data=SyntheticPairs(gt, "gaussian_noise", 2, seed=5), **kw)[0]
    assert {k: r4["per_image"][k] for k in r1["per_image"]} == r1["per_image"]
    with pytest.raises(FileNotFoundError):
        SyntheticPairs(tmp_path / "none", "haze")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no image files"):
        SyntheticPairs(tmp_path / "empty", "haze")


def test_resolve_method_builtins():
    x = torch.rand(1, 3, 16, 16)
    assert resolve_method("identity").fn(x) is x
    alias = resolve_method("identity", name="input")
    assert alias.name == "input" and alias.info == {"baseline": "identity", "spec": "identity"}
    with pytest.raises(ValueError, match="an alias must not be empty"):
        resolve_method("dcp", name=" ")
    dcp = resolve_method("dcp")
    assert dcp.name == "dcp" and dcp.fn(x).shape == x.shape


def test_trained_checkpoint_method(tmp_path):
    from restore.archs import build_arch
    from robustsam_prior.core.checkpoint import save_checkpoint

    torch.manual_seed(0)
    kw = {"width": 4, "enc_blocks": [1], "middle_blocks": 1, "dec_blocks": [1]}
    net = build_arch("nafnet", **kw).eval()
    for p in net.parameters():  # NAFNet starts as an identity (zero-initialised scales); make it do something
        p.data.add_(0.05 * torch.randn_like(p))
    meta = {"format": "robustsam-restore/restoration", "arch": "nafnet", "arch_kwargs": kw, "task": "deblur",
            "prior": None, "metrics": {}}  # fmt: skip
    sha = save_checkpoint(tmp_path / "tiny.safetensors", net.state_dict(), meta)
    lq, gt = _write_pairs(tmp_path, n=2)
    row = run_restoration_benchmark(methods=[str(tmp_path / "tiny.safetensors")], data=pair_folders(lq, gt),
                                    metrics=["psnr"], task="deblur")[0]  # fmt: skip
    assert (  # a checkpoint without an alias is named <run folder>/<file stem>
        row["method"] == f"{tmp_path.name}/tiny" and row["checkpoint_sha256"] == sha
        and row["method_info"]["arch"] == "nafnet"
    )
    for name, vals in row["per_image"].items():
        with torch.no_grad():
            want = psnr(net(_tensor(lq / name)).clamp(0, 1), _tensor(gt / name), quantize=True).item()
        assert vals["psnr"] == pytest.approx(want, abs=1e-4)
    with pytest.raises(ValueError, match="cannot dehaze"):
        resolve_method(str(tmp_path / "tiny.safetensors"), task="dehaze")
    with pytest.raises(ValueError, match="neither a known model name"):
        resolve_method("no-such-model")


def test_prompts_from_masks():
    m = np.zeros((10, 12), bool)
    m[2:5, 3:9] = True
    assert mask_box(m).tolist() == [3, 2, 8, 4]
    p = draw_prompts(m, prompt="point", num_points=4, rng=np.random.default_rng(0))
    assert p["points"].shape == (4, 2) and all(m[int(y), int(x)] for x, y in p["points"])
    assert len({tuple(q) for q in p["points"]}) == 4 and p["labels"].tolist() == [1, 1, 1, 1]
    tiny = np.zeros((4, 4), bool)
    tiny[1, 1] = True
    assert draw_prompts(tiny, prompt="point", num_points=3, rng=np.random.default_rng(0))["points"].shape == (
        1,
        2,
    )
    with pytest.raises(ValueError, match="empty mask"):
        draw_prompts(np.zeros((3, 3), bool), prompt="box", num_points=1, rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match="empty mask"):
        draw_prompts(np.zeros((3, 3), bool), prompt="point", num_points=1, rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match="unknown prompt type"):
        draw_prompts(m, prompt="scribble", num_points=1, rng=np.random.default_rng(0))


def _shapes(n=2, size=64, seed=0):
    from robustsam_prior.data import ShapesDataset

    return SegmentationDataset.from_shapes(ShapesDataset(length=n, height=size, width=size, seed=seed))


def test_segmentation_benchmark_hand_checked_with_box_fill():
    ds = _shapes()
    rows = run_segmentation_benchmark(dataset=ds, segmenters=[BoxSegmenter()], degradations=["gaussian_noise"])
    assert [(r["degradation"], r["severity"]) for r in rows] == [("clear", None), ("gaussian_noise", 3)]
    ious = []
    for item in ds:
        for m in item.load_masks():
            ys, xs = np.nonzero(m)
            ious.append(m.sum() / ((ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1)))
    assert rows[0]["metrics"]["iou"] == pytest.approx(np.mean(ious), abs=1e-12)
    # noise does not move the masks, so the prompts and the box-fill result are the same
    assert rows[1]["metrics"] == rows[0]["metrics"] and rows[0]["count"] == len(ious)
    assert rows[0]["method"] == "box"
    with pytest.raises(ValueError, match="unknown prompt type"):
        run_segmentation_benchmark(dataset=ds, segmenters=[BoxSegmenter()], prompt="lasso")
    with pytest.raises(ValueError, match="no segmenters"):
        run_segmentation_benchmark(dataset=ds, segmenters=[])
    with pytest.raises(ValueError, match="nothing to evaluate"):
        run_segmentation_benchmark(dataset=ds, segmenters=[BoxSegmenter()], include_clear=False)


def test_segmentation_input_errors(monkeypatch):
    from eval.datasets import SegmentationItem

    bad = SegmentationDataset("bad", [SegmentationItem("x", lambda: np.zeros((8, 8, 3), np.float32),
                                                       lambda: np.zeros((1, 8, 9), bool))])  # fmt: skip
    with pytest.raises(ValueError, match="x: masks \\(8, 9\\) do not match the image \\(8, 8\\)"):
        run_segmentation_benchmark(dataset=bad, segmenters=[BoxSegmenter()])
    import robustsam_prior.degradations as deg

    real = deg.degrade

    def cropping(image, kind, severity, **kw):  # a broken degradation that returns labels of the wrong size
        out = real(image, kind, severity, **kw)
        out.labels = out.labels[..., :-1]
        return out

    monkeypatch.setattr(deg, "degrade", cropping)
    with pytest.raises(ValueError, match="returned labels"):
        run_segmentation_benchmark(
            dataset=_shapes(n=1, size=32), segmenters=[BoxSegmenter()], degradations=["contrast"]
        )


def test_segmenters_come_from_a_registry_that_suggests_a_name():
    from eval.benchmark import SEGMENTERS, build_segmenters

    assert SEGMENTERS.names() == ["box", "regions", "robustsam", "sam"]
    # the unknown name is reported before the robustsam model would be loaded from a file that does not exist
    with pytest.raises(KeyError, match=r"unknown segmenter 'robustsm' \(did you mean 'robustsam'\?\); known: box, "
                                       r"regions, robustsam, sam"):
        build_segmenters(["robustsam", "robustsm"], checkpoint="/nonexistent/robustsam.pth")
    assert [type(s).__name__ for s in build_segmenters(["regions", "box"])] == ["RegionsSegmenter", "BoxSegmenter"]


def test_box_segmenter_is_the_filled_prompt_box_and_refuses_points():
    seg = BoxSegmenter()
    with pytest.raises(RuntimeError, match="set_image"):
        seg.predict({"box": np.array([0, 0, 1, 1])})
    seg.set_image(np.zeros((5, 6, 3), np.float32))
    expected = np.zeros((5, 6), bool)
    expected[1:4, 2:6] = True  # rows 1..3, columns 2..5 (inclusive XYXY)
    assert np.array_equal(seg.predict({"box": np.array([2.0, 1.0, 5.0, 3.0])}), expected)
    with pytest.raises(ValueError, match="box prompts only"):
        seg.predict({"points": np.array([[1, 1]]), "labels": np.array([1])})


def test_regions_segmenter_rules():
    seg = RegionsSegmenter()
    seg.labels = np.array([[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 2, 2]])
    # box over columns 0..2, rows 0..1: region 0 fully inside, region 1 half inside (not more) -> only region 0
    assert np.array_equal(seg.predict({"box": np.array([0, 0, 2, 1])}), seg.labels == 0)
    pts = {"points": np.array([[3, 0], [0, 2]]), "labels": np.array([1, 1])}
    assert np.array_equal(seg.predict(pts), np.isin(seg.labels, [1, 2]))
    fresh = RegionsSegmenter()
    with pytest.raises(RuntimeError, match="set_image"):
        fresh.predict(pts)


@pytest.mark.slow
def test_segmentation_benchmark_tiny_robustsam_is_deterministic(tmp_path):
    from eval.benchmark import PredictorSegmenter, build_segmenters
    from robustsam_prior import build_robustsam

    torch.manual_seed(0)
    model = build_robustsam(TINY)
    calls = []
    encode = model.encode
    model.encode = lambda *a, **k: calls.append(1) or encode(*a, **k)
    ds = _shapes(n=1, size=64, seed=3)
    segs = build_segmenters(["robustsam", "sam"], model=model)
    kw = dict(dataset=ds, degradations=["elastic_transform"], prompt="point", num_points=2, seed=1)
    out = tmp_path / "seg.jsonl"
    a = run_segmentation_benchmark(segmenters=segs, **kw, out=out)
    assert len(calls) == 2  # one encoding per image and condition, shared by the robust and SAM paths
    b = run_segmentation_benchmark(segmenters=segs, **kw)
    assert [r["metrics"] for r in a] == [r["metrics"] for r in b]
    # separate predictors (no sharing) give the same numbers
    alone = [PredictorSegmenter(model=model, path="robust"), PredictorSegmenter(model=model, path="sam")]
    c = run_segmentation_benchmark(segmenters=alone, **kw)
    assert [r["metrics"] for r in c] == [r["metrics"] for r in a]
    assert [(r["method"], r["degradation"]) for r in a] == [
        ("robustsam", "clear"), ("robustsam", "elastic_transform"), ("sam", "clear"), ("sam", "elastic_transform"),
    ]  # fmt: skip
    assert a[0]["metrics"] != a[2]["metrics"]  # the two paths really differ
    for r in a:
        assert all(0 <= r["metrics"][k] <= 1 for k in ("iou", "dice", "pa"))
        assert r["prompt"] == {"type": "point", "num_points": 2, "seed": 1}
    assert [r["method"] for r in read_rows(out)] == [r["method"] for r in a]
    assert segs[0].predictor is segs[1].predictor and segs[0].predictor.path == "robust"  # not switched by "sam"
    # one prompt at a time (predict) gives the batched masks (predict_many), on both paths
    item = ds.items[0]
    image, masks = item.load_image(), item.load_masks()
    prompts = [draw_prompts(m, prompt=kind, num_points=2, rng=np.random.default_rng(j))
               for j, m in enumerate(masks) for kind in ("box", "point")]
    for seg in segs:
        seg.set_image(image)
        batched = [seg.predict_many([p for p in prompts if kind in p]) for kind in ("box", "points")]
        single = [[seg.predict(p) for p in prompts if kind in p] for kind in ("box", "points")]
        assert all(np.array_equal(x, y) for b, s in zip(batched, single) for x, y in zip(b, s, strict=True))
    with pytest.raises(ValueError, match="path must be"):
        PredictorSegmenter(model=model, path="clear")


def test_jsonable_and_rows_io(tmp_path):
    assert jsonable({"a": float("inf"), "b": float("nan"), "c": np.float32(1.5), "d": (1, 2)}) == {
        "a": "inf", "b": None, "c": 1.5, "d": [1, 2],
    }  # fmt: skip
    p = write_rows(tmp_path / "r.jsonl", [{"method": "m", "metrics": {"psnr": float("inf")}}])
    write_rows(p, [{"method": "n", "metrics": {}}])
    assert [json.loads(line)["method"] for line in p.read_text().splitlines()] == ["m", "n"]
    write_rows(p, [{"method": "o", "metrics": {}}], append=False)
    assert len(read_rows(p)) == 1
    (tmp_path / "bad.jsonl").write_text('{"method": "x", "metrics": {}}\n{oops\n')
    with pytest.raises(ValueError, match="bad.jsonl:2: not a JSON object"):
        read_rows(tmp_path / "bad.jsonl")
    (tmp_path / "bad2.jsonl").write_text('{"x": 1}\n')
    with pytest.raises(ValueError, match="not a benchmark row"):
        read_rows(tmp_path / "bad2.jsonl")
    with pytest.raises(FileNotFoundError):
        read_rows(tmp_path / "missing.jsonl")
    assert seed_for(1, "a") == seed_for(1, "a") != seed_for(1, "b")


def test_crops_stay_inside_their_folder_whatever_the_names(tmp_path):
    from eval.restoration_benchmark import _safe

    assert [_safe(s) for s in ("..", ".", "a/b", "x.y", "")] == ["__", "_", "a_b", "x.y", "_"]
    lq, gt = _write_pairs(tmp_path / "d", n=1)
    crops = tmp_path / "results" / "crops"
    rows = run_restoration_benchmark(methods=[Method("..", lambda x: x)], data=pair_folders(lq, gt, name=".."),
                                     metrics=["psnr"], crops_dir=crops, num_crops=1)
    written = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*.png") if crops not in p.parents)
    assert written == [p.relative_to(tmp_path) for p in sorted((tmp_path / "d").rglob("*.png"))]
    assert {p.name for p in (crops / "__" / "im0").iterdir()} == {"degraded.png", "gt.png", "__.png"}
    assert set(rows[0]["crops"]["im0.png"]) == {"degraded", "gt", "output"}


def test_default_method_names_tell_runs_apart(tmp_path):
    from eval.restoration_benchmark import default_method_name

    assert default_method_name(tmp_path / "runs" / "dehaze_a" / "models" / "final.safetensors") == "dehaze_a/final"
    assert default_method_name(tmp_path / "runs" / "b" / "checkpoints" / "iter_100.pth") == "b/iter_100"
    assert default_method_name(tmp_path / "x" / "final.safetensors") == "x/final"
