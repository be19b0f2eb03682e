"""``robustsam-restore segment`` with a tiny RobustSAM checkpoint saved with its config as metadata."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from pipelines.cli import main
from robustsam_prior.core.io import read_image, write_image
from robustsam_prior.loading import build_robustsam, save_robustsam
from robustsam_prior.modeling.build import build_robustsam_model
from robustsam_prior.predictor import RobustSamPredictor

TINY = dict(img_size=64, patch=8, enc_dim=32, enc_depth=2, enc_heads=2, global_attn=[1], window=4,
            prompt_dim=64, dec_depth=1, dec_mlp=64, dec_heads=2, iou_hidden=32, mask_in_chans=8)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("segment")
    torch.manual_seed(0)
    model = build_robustsam_model(TINY)
    g = torch.Generator().manual_seed(11)
    with torch.no_grad():
        for k, v in model.state_dict().items():
            if v.dtype.is_floating_point and not k.endswith("running_var"):
                v.copy_(torch.randn(v.shape, generator=g) * (0.5 / max(1, v.shape[-1]) ** 0.5 if v.dim() > 1 else 0.1))
    ckpt = root / "tiny.safetensors"
    save_robustsam(model, ckpt)
    rng = np.random.default_rng(0)
    pixels = np.full((40, 56, 3), 0.2, np.float32)
    pixels[5:30, 10:40] = (0.9, 0.8, 0.1)
    pixels = np.clip(pixels + rng.normal(0, 0.03, pixels.shape), 0, 1).astype(np.float32)
    image = root / "scene.png"
    write_image(image, pixels)
    return ckpt, image


def run(args):
    return CliRunner().invoke(main, ["segment", *map(str, args)], catch_exceptions=False)


def test_points_and_box(files, tmp_path):
    ckpt, image = files
    out = tmp_path / "out"
    res = run([image, out, "--points", "20,15,1; 50,35,0", "--box", "8,4,42,32", "--prior-checkpoint", ckpt, "--json"])
    assert res.exit_code == 0, res.output
    scores = json.loads((out / "scores.json").read_text())
    assert json.loads(res.output[res.output.index("{"):]) == scores
    assert scores["mode"] == "prompted" and scores["path"] == "robust" and len(scores["masks"]) == 1
    assert scores["checkpoint"]["sha256"] and scores["prompts"]["point_labels"] == [1, 0]
    mask = read_image(out / "mask_0.png").pixels[..., 0] > 0.5
    overlay = read_image(out / "overlay.png")
    assert mask.shape == (40, 56) and overlay.pixels.shape == (40, 56, 3)
    # the same numbers as the library call
    model = build_robustsam(None, ckpt)
    p = RobustSamPredictor(model)
    p.set_image(np.clip(np.rint(read_image(image).pixels * 255), 0, 255).astype(np.uint8))
    masks, iou, _ = p.predict(point_coords=np.array([[20.0, 15.0], [50.0, 35.0]]), point_labels=np.array([1, 0]),
                              box=np.array([8.0, 4.0, 42.0, 32.0]), multimask_output=False)
    np.testing.assert_array_equal(mask, masks[0])
    assert scores["masks"][0]["iou_prediction"] == pytest.approx(float(iou[0]), abs=1e-6)
    assert scores["masks"][0]["area"] == int(masks[0].sum())


def test_multimask_sam_path(files, tmp_path):
    ckpt, image = files
    out = tmp_path / "out"
    res = run([image, out, "--points", "20,15,1", "--multimask", "--path", "sam", "--prior-checkpoint", ckpt])
    assert res.exit_code == 0, res.output
    scores = json.loads((out / "scores.json").read_text())
    assert scores["path"] == "sam" and [m["file"] for m in scores["masks"]] == ["mask_0.png", "mask_1.png", "mask_2.png"]


def test_auto_label_map(files, tmp_path):
    ckpt, image = files
    out = tmp_path / "auto"
    res = run([image, out, "--auto", "--points-per-side", "3", "--pred-iou-thresh", "0", "--stability-thresh", "0",
               "--prior-checkpoint", ckpt])
    assert res.exit_code == 0, res.output
    scores = json.loads((out / "scores.json").read_text())
    assert scores["mode"] == "auto" and scores["label_map"] == "labels.png"
    import cv2

    labels = cv2.imread(str(out / "labels.png"), cv2.IMREAD_UNCHANGED)
    assert labels.dtype == np.uint16 and labels.shape == (40, 56)
    assert set(np.unique(labels)) == set(range(scores["num_regions"]))
    assert {m["region"] for m in scores["masks"]} - {None} <= set(range(scores["num_regions"]))


def test_usage_errors(files, tmp_path):
    ckpt, image = files
    out = tmp_path / "x"
    for args, msg in [
        ([], "give --points and/or --box, or --auto"),
        (["--auto", "--box", "1,2,3,4"], "--auto cannot be combined"),
        (["--points", "1,2"], "expected x,y,label"),
        (["--points", "a,2,1"], "expected numbers"),
        (["--points", "1,2,3"], "label must be 1"),
        (["--points", ";"], "no points given"),
        (["--box", "1,2,3"], "x1 > x0"),
        (["--box", "1,b,3,4"], "four numbers"),
        (["--box", "1,2,3,4", "--config", str(tmp_path / "missing.json")], "missing.json: file not found"),
        # non-finite numbers and prompts off the 56x40 image
        (["--points", "nan,nan,1"], "x and y must be finite numbers"),
        (["--points", "20,15,1;inf,3,0"], "x and y must be finite numbers"),
        (["--box", "0,0,inf,30"], "box coordinates must be finite numbers"),
        (["--box", "nan,0,30,30"], "box coordinates must be finite numbers"),
        (["--points", "56,10,1"], "point 56,10 lies outside the 56x40 image"),
        (["--points", "20,15,1;-0.5,10,0"], "point -0.5,10 lies outside the 56x40 image"),
        (["--points", "10,40,1"], "outside the 56x40 image"),
        (["--box", "0,0,57,30"], "box 0,0,57,30 reaches outside the 56x40 image"),
        (["--box", "-1,0,20,30"], "reaches outside the 56x40 image"),
        # automatic-mask sizes that would allocate without bound, and thresholds that filter nothing
        (["--auto", "--points-per-side", "100000"], "100000 is not in the range 1<=x<=128"),
        (["--auto", "--points-per-side", "0"], "0 is not in the range 1<=x<=128"),
        (["--auto", "--pred-iou-thresh", "nan"], "nan is not a number in [0, 1]"),
        (["--auto", "--stability-thresh", "1.5"], "1.5 is not a number in [0, 1]"),
        (["--auto", "--device", "gpu0"], "device must be one of"),
        *([] if torch.cuda.is_available() else [(["--auto", "--device", "cuda"], "no CUDA GPU is available")]),
    ]:
        res = CliRunner().invoke(main, ["segment", str(image), str(out), *args, "--prior-checkpoint", str(ckpt)])
        assert res.exit_code == 2, (args, res.output)
        assert msg in res.output, (args, res.output)
        assert not out.exists(), args  # a refused command writes nothing
    # the image's edges are inside: the last pixel's point and a box over the whole image
    res = run([image, out, "--points", "55.5,39.5,1", "--box", "0,0,56,40", "--prior-checkpoint", ckpt])
    assert res.exit_code == 0, res.output
    res = CliRunner().invoke(main, ["segment", str(image), str(out), "--box", "1,2,30,30",
                                    "--prior-checkpoint", str(tmp_path / "nope.pth")])
    assert res.exit_code == 1 and "checkpoint file not found" in res.output
    other = tmp_path / "other.json"
    other.write_text(json.dumps({**TINY, "enc_dim": 48}))
    res = CliRunner().invoke(main, ["segment", str(image), str(out), "--box", "1,2,30,30",
                                    "--prior-checkpoint", str(ckpt), "--config", str(other)])
    assert res.exit_code == 1 and "mis-shaped" in res.output and "encoder width 32, depth 2" in res.output
    assert f"--prior-config {other} does not fit the checkpoint" in res.output


@pytest.mark.parametrize("content", [b"not an image at all\n", "truncated"])
def test_unreadable_image_is_one_line_error(files, tmp_path, content):
    ckpt, image = files
    bad = tmp_path / "bad.png"
    bad.write_bytes(image.read_bytes()[:120] if content == "truncated" else content)
    out = tmp_path / "out"
    res = CliRunner().invoke(main, ["segment", str(bad), str(out), "--auto", "--prior-checkpoint", str(ckpt)])
    assert res.exit_code == 1, res.output
    assert res.exception is None or isinstance(res.exception, SystemExit)  # no traceback
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: cannot read image") and str(bad) in lines[0], res.output
    assert not out.exists()


def test_nan_score_is_refused_and_output_kept(files, tmp_path, monkeypatch):
    ckpt, image = files
    out = tmp_path / "out"
    out.mkdir()
    (out / "scores.json").write_text('{"old": true}\n')
    original = RobustSamPredictor.predict

    def nan_iou(self, *args, **kwargs):
        masks, iou, low = original(self, *args, **kwargs)
        return masks, np.full_like(iou, np.nan), low

    monkeypatch.setattr(RobustSamPredictor, "predict", nan_iou)
    res = CliRunner().invoke(main, ["segment", str(image), str(out), "--points", "20,15,1", "--prior-checkpoint",
                                    str(ckpt), "--json"])
    assert res.exit_code == 1, res.output
    assert "masks[0].iou_prediction is nan" in res.output and "nothing written" in res.output
    assert len(res.output.strip().splitlines()) == 1 and "{" not in res.output  # no JSON printed either
    assert sorted(p.name for p in out.iterdir()) == ["scores.json"]
    assert json.loads((out / "scores.json").read_text()) == {"old": True}


AUTO = ["--auto", "--points-per-side", "3", "--pred-iou-thresh", "0", "--stability-thresh", "0", "--box-nms-thresh", "1"]


def make_images(root, sizes):
    """Images named after ``sizes`` ({relative name: (h, w)}): the test scene cropped or padded to each size."""
    rng = np.random.default_rng(1)
    for name, (h, w) in sizes.items():
        img = np.full((h, w, 3), 0.2, np.float32)
        img[h // 8: h * 3 // 4, w // 5: w * 3 // 4] = (0.9, 0.8, 0.1)
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        write_image(root / name, np.clip(img + rng.normal(0, 0.03, img.shape), 0, 1).astype(np.float32))
    return root


def test_auto_writes_every_mask_beside_the_label_map(files, tmp_path):
    """Like amg.py: one PNG per automatic mask and a COCO RLE masks.json with SAM's fields; the overlapping
    masks are the generator's, the label map partitions them."""
    from robustsam_prior.automatic import RobustSamAutomaticMaskGenerator

    ckpt, image = files
    out = tmp_path / "auto"
    res = run([image, out, *AUTO, "--prior-checkpoint", ckpt])
    assert res.exit_code == 0, res.output
    assert f"{image}: 27 masks -> {out}\n" in res.output
    model = build_robustsam(None, ckpt)
    rgb8 = np.clip(np.rint(read_image(image).pixels * 255), 0, 255).astype(np.uint8)
    records = RobustSamAutomaticMaskGenerator(model, points_per_side=3, pred_iou_thresh=0, stability_score_thresh=0,
                                              box_nms_thresh=1.0).generate(rgb8)
    coco = json.loads((out / "masks.json").read_text())
    assert len(coco) == len(records) == 27
    from segment_anything.utils.amg import rle_to_mask

    for i, (rec, ref) in enumerate(zip(coco, records)):
        assert sorted(rec) == ["area", "bbox", "crop_box", "point_coords", "predicted_iou", "segmentation",
                               "stability_score"]
        seg = rec["segmentation"]
        if isinstance(seg["counts"], str):
            from pycocotools import mask as mask_utils

            decoded = mask_utils.decode(seg).astype(bool)
        else:
            decoded = rle_to_mask(seg)
        np.testing.assert_array_equal(decoded, ref["segmentation"])
        np.testing.assert_array_equal(read_image(out / "masks" / f"{i}.png").pixels[..., 0] > 0.5, ref["segmentation"])
        assert rec["bbox"] == ref["bbox"] and rec["area"] == ref["area"]
    scores = json.loads((out / "scores.json").read_text())
    assert scores["masks_json"] == "masks.json" and scores["filters"]["candidates"] == 27
    assert (out / "labels.png").is_file() and (out / "overlay.png").is_file()


def test_zero_masks_say_which_threshold_removed_them(files, tmp_path):
    ckpt, image = files
    out = tmp_path / "none"
    res = run([image, out, "--auto", "--points-per-side", "3", "--prior-checkpoint", ckpt])
    assert res.exit_code == 0, res.output
    line = res.output[res.output.index(f"{image}: 0 masks"):].strip()  # after the progress bar
    assert line.startswith(f"{image}: 0 masks: pred_iou_thresh 0.88 removed all 27 of the 27 candidate masks "
                           "(best predicted_iou "), line
    assert line.endswith("; lower --pred-iou-thresh)")
    assert json.loads((out / "masks.json").read_text()) == []
    assert json.loads((out / "scores.json").read_text())["no_masks"] == line.split(": 0 masks: ")[1]
    res = run([image, tmp_path / "none2", "--auto", "--points-per-side", "3", "--pred-iou-thresh", "0",
               "--stability-thresh", "0.99", "--prior-checkpoint", ckpt])
    assert "0 masks: stability_score_thresh 0.99 removed all 27 of the 27 candidate masks" in res.output


def test_prompt_markers_on_the_overlay(files, tmp_path):
    from robustsam_prior.segment import BACKGROUND, BOX, FOREGROUND

    ckpt, image = files
    out = tmp_path / "out"
    res = run([image, out, "--points", "20,15,1;50,35,0", "--box", "8,4,42,32", "--prior-checkpoint", ckpt])
    assert res.exit_code == 0, res.output
    overlay = read_image(out / "overlay.png").pixels
    q = lambda c: np.round(np.asarray(c) * 255) / 255  # noqa: E731 - 8-bit PNG
    np.testing.assert_allclose(overlay[15, 20], q(FOREGROUND), atol=1e-6)
    np.testing.assert_allclose(overlay[35, 50], q(BACKGROUND), atol=1e-6)
    np.testing.assert_allclose(overlay[4, 25], q(BOX), atol=1e-6)


def test_folder_of_images(files, tmp_path):
    """A folder: one output folder per image (the relative path without its suffix, or with it where two
    images share a stem), a summary, and --json listing every image."""
    ckpt, _ = files
    folder = make_images(tmp_path / "in", {"a.png": (40, 56), "a.tif": (32, 48), "sub/b.png": (36, 40)})
    (folder / "notes.txt").write_text("not an image")
    out = tmp_path / "out"
    res = run([folder, out, *AUTO, "--recursive", "--prior-checkpoint", ckpt, "--json"])
    assert res.exit_code == 0, res.output
    start = res.output.index('{"images"')  # after the progress bar
    report = json.loads(res.output[start:res.output.index("\n", start)])
    assert sorted(report["images"]) == ["a.png", "a.tif", "sub/b.png"]
    assert report["failed"] == {} and report["world_size"] == 1
    assert "segment: 3 ok, 0 failed" in res.output
    for rel, sub in [("a.png", "a.png"), ("a.tif", "a.tif"), ("sub/b.png", "sub/b")]:
        assert report["images"][rel] == {"output": str(out / sub), "masks": 27}
        names = {p.name for p in (out / sub).iterdir()}
        assert names == {"labels.png", "overlay.png", "masks", "masks.json", "scores.json"}, (rel, names)
        assert len(list((out / sub / "masks").iterdir())) == 27
        assert json.loads((out / sub / "scores.json").read_text())["image"] == str(folder / rel)
    # a prompt is checked against every image before anything runs: (44, 30) lies outside sub/b.png (40x36)
    res = CliRunner().invoke(main, ["segment", str(folder), str(tmp_path / "p"), "--recursive", "--points", "44,30,1",
                                    "--prior-checkpoint", str(ckpt)])
    assert res.exit_code == 2, res.output
    assert "Invalid value for --points: point 44,30 lies outside the 40x36 image" in res.output
    assert str(folder / "sub" / "b.png") in res.output and not (tmp_path / "p").exists()
    # the same prompts on every image of the folder, where they fit
    res = run([folder, tmp_path / "p", "--recursive", "--points", "20,15,1", "--box", "2,2,30,30",
               "--prior-checkpoint", ckpt])
    assert res.exit_code == 0 and "segment: 3 ok, 0 failed" in res.output, res.output
    for sub in ("a.png", "a.tif", "sub/b"):
        assert {p.name for p in (tmp_path / "p" / sub).iterdir()} == {"mask_0.png", "overlay.png", "scores.json"}
    # one unreadable image fails alone; the others are written and the exit status says so
    (folder / "bad.png").write_bytes(b"not a png")
    res = CliRunner().invoke(main, ["segment", str(folder), str(tmp_path / "q"), *AUTO, "--prior-checkpoint", str(ckpt)])
    assert res.exit_code == 1, res.output
    assert "segment: 2 ok, 1 failed" in res.output and "FAILED bad.png" in res.output
    assert (tmp_path / "q" / "a.png" / "masks.json").is_file() and not (tmp_path / "q" / "bad").exists()


def test_points_per_side_and_non_finite_values_name_the_option(files, tmp_path):
    ckpt, image = files
    for args, option in [(["--auto", "--points-per-side", "129"], "--points-per-side"),
                         (["--auto", "--points-per-side", "0"], "--points-per-side"),
                         (["--points", "inf,1,1"], "--points"), (["--box", "0,0,nan,3"], "--box"),
                         (["--auto", "--box-nms-thresh", "nan"], "--box-nms-thresh")]:
        res = CliRunner().invoke(main, ["segment", str(image), str(tmp_path / "x"), *args, "--prior-checkpoint", str(ckpt)])
        assert res.exit_code == 2 and (f"Invalid value for '{option}'" in res.output
                                       or f"Invalid value for {option}:" in res.output), (args, res.output)


def test_without_a_checkpoint_the_packaged_robustsam_tiny_segments_offline(tmp_path, monkeypatch):
    """A fresh install: no --prior-checkpoint, no $ROBUSTSAM_CHECKPOINT, no network (the conftest sets
    HF_HUB_OFFLINE). The packaged robustsam-tiny runs, and its masks cover a plain object: a point inside it
    and a box around it give IoU 0.86 and 0.93 with the object (floors 0.7 and 0.8)."""
    from robustsam_prior.hub import ENV_CHECKPOINT, PACKAGED_DIR

    monkeypatch.delenv(ENV_CHECKPOINT, raising=False)
    rng = np.random.default_rng(0)
    pixels = np.full((120, 168, 3), 0.2, np.float32)
    pixels[15:90, 30:120] = (0.9, 0.8, 0.1)
    image = tmp_path / "scene.png"
    write_image(image, np.clip(pixels + rng.normal(0, 0.03, pixels.shape), 0, 1).astype(np.float32))
    truth = np.zeros((120, 168), bool)
    truth[15:90, 30:120] = True
    for prompt, floor in ((["--points", "75,50,1"], 0.7), (["--box", "25,10,125,95"], 0.8)):
        out = tmp_path / prompt[0].strip("-")
        res = run([image, out, *prompt])
        assert res.exit_code == 0, res.output
        scores = json.loads((out / "scores.json").read_text())
        assert scores["checkpoint"]["path"] == str(PACKAGED_DIR / "robustsam-tiny.safetensors")
        mask = read_image(out / "mask_0.png").pixels[..., 0] > 0.5
        assert (mask & truth).sum() / (mask | truth).sum() > floor, prompt
    # --auto with the default score filters: Meta's 0.88 / 0.95 keep no mask of this model (its predicted
    # IoUs are not calibrated), so the packaged model's own defaults (no score filter) apply; on a
    # 4x4 grid one of its masks covers the object with IoU 0.68 (floor 0.5)
    out = tmp_path / "auto"
    res = run([image, out, "--auto", "--points-per-side", "4"])
    assert res.exit_code == 0, res.output
    scores = json.loads((out / "scores.json").read_text())
    assert scores["settings"]["pred_iou_thresh"] == 0.0 and scores["settings"]["stability_score_thresh"] == 0.0
    assert "no_masks" not in scores and scores["masks"]
    best = max(((m := read_image(f).pixels[..., 0] > 0.5) & truth).sum() / (m | truth).sum()
               for f in (out / "masks").glob("*.png"))
    assert best > 0.5, best
    # an explicit threshold wins over the model's default; the other one keeps the model's
    res = run([image, tmp_path / "meta", "--auto", "--points-per-side", "4", "--pred-iou-thresh", "0.88"])
    assert res.exit_code == 0, res.output
    meta = json.loads((tmp_path / "meta" / "scores.json").read_text())
    assert meta["settings"]["pred_iou_thresh"] == 0.88 and meta["settings"]["stability_score_thresh"] == 0.0
    assert len(meta["masks"]) < len(scores["masks"])
