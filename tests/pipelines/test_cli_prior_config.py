"""``--prior-config NAME|FILE.json`` and ``--stock-encoder`` on every command that takes a RobustSAM checkpoint
(``segment``, ``dehaze``/``deblur``, ``prior-cache``, ``benchmark``) and the ``run`` pipeline's restore step.

The checkpoint is a bare ``torch.save`` state dict of a tiny RobustSAM whose sizes match no official
variant, so its architecture can only come from ``--prior-config``.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from pipelines.cli import main
from restore.archs import build_arch
from restore.inference import CHECKPOINT_FORMAT
from robustsam_prior.core.checkpoint import save_checkpoint
from robustsam_prior.core.io import write_image
from robustsam_prior.modeling.build import build_robustsam_model

TINY = dict(img_size=64, patch=8, enc_dim=32, enc_depth=2, enc_heads=2, global_attn=[1], window=4,
            prompt_dim=64, dec_depth=1, dec_mlp=64, dec_heads=2, iou_hidden=32, mask_in_chans=8)
AUTO = ["--prior-option", "points_per_side=2", "--prior-option", "pred_iou_thresh=0",
        "--prior-option", "stability_score_thresh=0"]


@pytest.fixture(scope="module")
def files(tmp_path_factory, randomize_weights):
    root = tmp_path_factory.mktemp("prior_config")
    torch.manual_seed(0)
    ckpt = root / "tiny_robustsam.pth"
    torch.save(randomize_weights(build_robustsam_model(TINY, fast=False), 3).state_dict(), ckpt)
    config = root / "tiny.json"
    config.write_text(json.dumps(TINY))
    other = root / "other.json"
    other.write_text(json.dumps({**TINY, "enc_dim": 48}))
    rng = np.random.default_rng(0)
    pixels = np.full((40, 48, 3), 0.2, np.float32)
    pixels[5:30, 10:40] = (0.9, 0.7, 0.1)
    images = root / "images"
    images.mkdir()
    write_image(images / "scene.png", np.clip(pixels + rng.normal(0, 0.03, pixels.shape), 0, 1).astype(np.float32))
    net = build_arch("map_nafnet", width=8, enc_blocks=[1], middle_blocks=1, dec_blocks=[1], seg_channels=2)
    model = root / "robustsam_dehaze.safetensors"  # a dehazer trained with the robustsam prior
    prior = {"name": "robustsam", "options": {"points_per_side": 2, "pred_iou_thresh": 0.0,
                                              "stability_score_thresh": 0.0}}
    save_checkpoint(model, net.state_dict(), {"format": CHECKPOINT_FORMAT, "arch": "map_nafnet", "task": "dehaze",
                                              "arch_kwargs": {"width": 8, "enc_blocks": [1], "middle_blocks": 1,
                                                              "dec_blocks": [1], "seg_channels": 2},
                                              "prior": prior})
    return {"ckpt": ckpt, "config": config, "other": other, "images": images, "image": images / "scene.png",
            "model": model}


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def bad_values(f, tmp_path):
    """(``--prior-config`` value, what the usage error must say)."""
    notjson = tmp_path / "arch.json"
    notjson.write_text("{img_size: 64")
    listing = tmp_path / "list.json"
    listing.write_text("[1, 2]")
    badkey = tmp_path / "badkey.json"
    badkey.write_text(json.dumps({**TINY, "enc_dpth": 2}))
    return [
        ("vit_bb", "'vit_bb' is neither a RobustSAM variant (vit_b, vit_l, vit_h, robustsam-tiny) (did you mean 'vit_b'?)"),
        (tmp_path / "missing.json", "missing.json: file not found"),
        (notjson, "arch.json: not valid JSON (line 1, column 2"),
        (listing, "list.json: holds a JSON list, not an object with the keys img_size, patch"),
        (badkey, "badkey.json: not a RobustSAM architecture (unknown RobustSAM config key 'enc_dpth' "
                 "(did you mean 'enc_depth'?)"),
    ]


def test_segment(files, tmp_path, fast_block_calls, monkeypatch):
    from robustsam_prior.hub import ENV_CHECKPOINT

    ck, image = files["ckpt"], files["image"]
    monkeypatch.delenv(ENV_CHECKPOINT, raising=False)
    res = run("segment", image, tmp_path / "none", "--auto", "--prior-config", "vit_l")
    assert res.exit_code == 1 and "robustsam_checkpoint_l.pth" in res.output  # the variant's official file
    res = run("segment", image, tmp_path / "none", "--auto", "--prior-checkpoint", ck)
    assert res.exit_code == 1 and "cannot tell the architecture" in res.output
    outs = {}
    for flag in ([], ["--stock-encoder"]):
        n0 = fast_block_calls["n"]
        out = tmp_path / f"out{len(flag)}"
        res = run("segment", image, out, "--box", "8,4,42,32", "--prior-checkpoint", ck,
                  "--prior-config", files["config"], *flag)
        assert res.exit_code == 0, res.output
        assert (fast_block_calls["n"] > n0) == (not flag)  # the fast encoder unless --stock-encoder
        outs[len(flag)] = json.loads((out / "scores.json").read_text())["masks"]
    assert outs[0][0]["iou_prediction"] == pytest.approx(outs[1][0]["iou_prediction"], abs=1e-4)
    assert abs(outs[0][0]["area"] - outs[1][0]["area"]) <= 2
    for value, message in bad_values(files, tmp_path):
        res = run("segment", image, tmp_path / "x", "--box", "8,4,42,32", "--prior-checkpoint", ck,
                  "--prior-config", value)
        assert res.exit_code == 2 and "Invalid value for '--prior-config'" in res.output, res.output
        assert message in " ".join(res.output.split()), (value, res.output)
    res = run("segment", image, tmp_path / "x", "--box", "8,4,42,32", "--prior-checkpoint", ck,
              "--prior-config", files["other"])
    assert res.exit_code == 1 and f"--prior-config {files['other']} does not fit the checkpoint" in res.output
    assert "mis-shaped" in res.output and not (tmp_path / "x").exists()


def test_prior_cache(files, tmp_path, fast_block_calls):
    args = ["prior-cache", files["images"], "--prior", "robustsam", "--prior-checkpoint", files["ckpt"], *AUTO,
            "--json"]
    res = run(*args, "--prior-config", files["config"], "--cache", tmp_path / "c")
    assert res.exit_code == 0, res.output
    report = json.loads(res.output.strip().splitlines()[-1])
    assert report["computed"] == 1 and report["prior"]["options"]["config"]["enc_dim"] == 32
    n0 = fast_block_calls["n"]
    res = run(*args, "--prior-config", files["config"], "--cache", tmp_path / "c2", "--stock-encoder")
    assert res.exit_code == 0 and fast_block_calls["n"] == n0, res.output
    # the same outputs: the stock run's entry has the same key as the fast run's
    assert sorted(p.name for p in (tmp_path / "c").rglob("*") if p.is_file()) == \
        sorted(p.name for p in (tmp_path / "c2").rglob("*") if p.is_file())
    res = run(*args, "--prior-config", files["other"], "--cache", tmp_path / "c3")
    assert res.exit_code == 1 and f"--prior-config {files['other']} does not fit the checkpoint" in res.output
    res = run(*args, "--prior-config", "vit_x", "--cache", tmp_path / "c3")
    assert res.exit_code == 2 and "(vit_b, vit_l, vit_h, robustsam-tiny)" in res.output
    for flag in (["--prior-config", "vit_b"], ["--stock-encoder"]):
        res = run("prior-cache", files["images"], "--prior", "regions", "--cache", tmp_path / "c4", *flag)
        assert res.exit_code == 2 and f"{flag[0]} is for --prior robustsam or sam" in res.output, res.output


def test_dehaze(files, tmp_path, fast_block_calls):
    base = ["dehaze", files["image"], tmp_path / "out", "--model", files["model"], "--prior-checkpoint",
            files["ckpt"], "--device", "cpu"]
    res = run(*base, "--prior-config", files["config"])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "out" / "scene.png").is_file() and fast_block_calls["n"] > 0
    res = run(*base, "--prior-config", files["other"], "--overwrite")
    assert res.exit_code == 1 and f"--prior-config {files['other']} does not fit the checkpoint" in res.output
    assert "FAILED" not in res.output  # refused before any file, not once per file
    res = run(*base, "--prior-config", "vit-b")
    assert res.exit_code == 2 and "did you mean 'vit_b'" in res.output
    n0 = fast_block_calls["n"]
    res = run(*base, "--prior-config", files["config"], "--stock-encoder", "--overwrite")
    assert res.exit_code == 0 and fast_block_calls["n"] == n0, res.output


def test_benchmarks(files, tmp_path, fast_block_calls):
    seg = ["benchmark", "segmentation", "--shapes-count", "1", "--shapes-size", "32", "--degradations", "none",
           "--segmenters", "robustsam", "--out", tmp_path / "seg.jsonl", "--prior-checkpoint", files["ckpt"]]
    res = run(*seg, "--prior-config", files["config"])
    assert res.exit_code == 0 and fast_block_calls["n"] > 0, res.output
    res = run(*seg, "--model-config", files["config"])  # the option's earlier name
    assert res.exit_code == 0, res.output
    res = run(*seg, "--prior-config", files["other"])
    assert res.exit_code == 1 and f"--prior-config {files['other']} does not fit the checkpoint" in res.output
    res = run(*seg, "--prior-config", "vit_q")
    assert res.exit_code == 2 and "(vit_b, vit_l, vit_h, robustsam-tiny)" in res.output
    gt = tmp_path / "gt"
    gt.mkdir()
    (gt / "scene.png").write_bytes(files["image"].read_bytes())
    n0 = fast_block_calls["n"]
    rest = ["benchmark", "restoration", "--methods", files["model"], "--lq", files["images"], "--gt", gt,
            "--metrics", "psnr", "--crops", "0", "--out", tmp_path / "r.jsonl", "--prior-checkpoint", files["ckpt"],
            "--prior-config", files["config"]]
    res = run(*rest)
    assert res.exit_code == 0 and fast_block_calls["n"] > n0, res.output
    n0 = fast_block_calls["n"]
    res = run(*rest, "--stock-encoder")
    assert res.exit_code == 0 and fast_block_calls["n"] == n0, res.output


def test_run_pipeline_restore_step(files, tmp_path):
    pipe = tmp_path / "p.yml"
    pipe.write_text(
        "kind: pipeline\nname: p\nsteps:\n  - {step: prior, name: regions}\n"
        f"  - {{step: restore, task: dehaze, model: {files['model']}, prior_checkpoint: {files['ckpt']}}}\n"
    )
    common = ["run", pipe, f"input={files['images']}", f"output_dir={tmp_path / 'o'}", "device=cpu"]
    res = run(*common, "steps.1.prior_config=vit_x")
    assert res.exit_code != 0 and "steps[1].prior_config" in res.output
    assert "(vit_b, vit_l, vit_h, robustsam-tiny)" in res.output
    res = run(*common, f"steps.1.prior_config={files['config']}", "steps.1.stock_encoder=true")
    assert res.exit_code == 0, res.output
    assert (tmp_path / "o" / "restored" / "scene.png").is_file()
