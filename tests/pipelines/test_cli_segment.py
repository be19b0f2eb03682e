"""``robustsam-restore segment`` with a tiny RobustSAM checkpoint saved with its config as metadata."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from pipelines.cli import main
from robustsam_prior.io import read_image, write_image
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
