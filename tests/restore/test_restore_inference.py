"""Inference engine: model resolution, checkpoint loading, prior choice, tiling, files."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import restore.zoo as zoo
from restore.archs import build_arch
from restore.inference import CHECKPOINT_FORMAT, Restorer, load_restoration_checkpoint, resolve_device
from restore.tiling import TileSpec, tiled_forward
from restore.zoo import ModelNotFoundError, resolve_model
from robustsam_prior.core.checkpoint import CheckpointError, save_checkpoint
from robustsam_prior.prior import Prior, PriorOutput

TINY = {"width": 8, "enc_blocks": [1, 1], "middle_blocks": 1, "dec_blocks": [1, 1]}


def make_checkpoint(path, arch="map_nafnet", task="dehaze", prior=None, seed=0, **meta_extra):
    torch.manual_seed(seed)
    net = build_arch(arch, **TINY)
    with torch.no_grad():  # non-trivial output: beta/gamma away from 0
        for n, p in net.named_parameters():
            if n.endswith(("beta", "gamma")):
                p.normal_(0, 0.1)
    meta = {
        "format": CHECKPOINT_FORMAT, "arch": arch, "arch_kwargs": TINY, "task": task,
        "prior": prior or {"name": "regions", "options": {"n_segments": 20, "working_size": 64}},
        "metrics": {"psnr": 20.5}, **meta_extra,
    }
    save_checkpoint(path, net.state_dict(), meta)
    return net.eval()


def test_resolve_model_names_and_errors(tmp_path, monkeypatch):
    monkeypatch.setattr(zoo, "ZOO_FILE", tmp_path / "none.json")
    assert resolve_model("dcp", "dehaze").kind == "classical"
    assert resolve_model("identity", "deblur").name == "identity"
    with pytest.raises(ModelNotFoundError, match=r"--model dcp\|identity\|PATH"):
        resolve_model(None, "dehaze")
    with pytest.raises(ModelNotFoundError, match=r"--model identity\|PATH"):
        resolve_model(None, "deblur")
    with pytest.raises(ModelNotFoundError, match="does not do deblur"):
        resolve_model("dcp", "deblur")
    with pytest.raises(ModelNotFoundError, match="did you mean 'dcp'"):
        resolve_model("dpc", "dehaze")
    with pytest.raises(ValueError, match="unknown task"):
        resolve_model("dcp", "denoise")
    ck = tmp_path / "m.safetensors"
    ck.write_bytes(b"x")
    assert resolve_model(str(ck), "dehaze").path == ck


def test_zoo_table(tmp_path, monkeypatch):
    weights = tmp_path / "weights"
    weights.mkdir()
    (weights / "zoo.json").write_text(json.dumps({
        "regions-dehaze": {"task": "dehaze", "file": "a.safetensors"},
        "other": {"task": "deblur", "file": "b.safetensors"},
    }))
    monkeypatch.setattr(zoo, "WEIGHTS_DIR", weights)
    monkeypatch.setattr(zoo, "ZOO_FILE", weights / "zoo.json")
    with pytest.raises(ModelNotFoundError, match="weight file .* is missing"):
        resolve_model(None, "dehaze")
    (weights / "a.safetensors").write_bytes(b"x")
    assert resolve_model(None, "dehaze").path == weights / "a.safetensors"
    with pytest.raises(ModelNotFoundError, match="is a deblur model"):
        resolve_model("other", "dehaze")
    (weights / "zoo.json").write_text("{not json")
    with pytest.raises(ValueError, match="malformed"):
        zoo.load_zoo(weights / "zoo.json")


def test_packaged_guided_output_is_the_default_and_can_be_turned_off(tmp_path, monkeypatch):
    """A zoo entry's guided_radius turns on the guided output of weights trained without it; an explicit
    value wins (0 = off); a checkpoint file keeps its own setting; the CLI flag reaches the model."""
    from restore.archs.nafnet_arch import NAFNet, guided_filter

    weights = tmp_path / "weights"
    weights.mkdir()
    make_checkpoint(weights / "h.safetensors", task="dehaze")
    (weights / "zoo.json").write_text(json.dumps({
        "regions-dehaze": {"task": "dehaze", "file": "h.safetensors", "guided_radius": 8}}))
    monkeypatch.setattr(zoo, "WEIGHTS_DIR", weights)
    monkeypatch.setattr(zoo, "ZOO_FILE", weights / "zoo.json")
    assert resolve_model(None, "dehaze").guided_radius == 8

    def radii(r):
        return {m.guided_radius for m in r.net.modules() if isinstance(m, NAFNet)}

    packaged = Restorer.load(None, task="dehaze", device="cpu")
    plain = Restorer.load(None, task="dehaze", device="cpu", guided_radius=0)
    assert radii(packaged) == {8} and radii(plain) == {0}
    assert radii(Restorer.load(str(weights / "h.safetensors"), task="dehaze", device="cpu")) == {0}
    x = torch.rand(1, 3, 40, 44, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        prior = packaged.prior(x)
        torch.testing.assert_close(packaged.net(x, prior), guided_filter(x, plain.net(x, prior), 8, 1e-5),
                                   atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="guided_radius must be >= 0"):
        Restorer.load(None, task="dehaze", device="cpu", guided_radius=-1)
    with pytest.raises(ValueError, match="is not a NAFNet"):
        Restorer.load("dcp", task="dehaze", device="cpu", guided_radius=4)
    from click.testing import CliRunner

    from pipelines.cli import main
    from robustsam_prior.core.io import read_image, write_image

    (tmp_path / "in").mkdir()
    write_image(tmp_path / "in" / "a.png", x[0].permute(1, 2, 0).numpy())
    outs = {}
    for flag in ("0", "8"):
        res = CliRunner().invoke(main, ["dehaze", str(tmp_path / "in"), str(tmp_path / f"out{flag}"),
                                        "--guided-radius", flag, "--device", "cpu"])
        assert res.exit_code == 0, res.output
        outs[flag] = read_image(tmp_path / f"out{flag}" / "a.png").pixels
    assert abs(outs["0"] - outs["8"]).max() > 1 / 255
    res = CliRunner().invoke(main, ["dehaze", str(tmp_path / "in"), str(tmp_path / "o"), "--guided-radius", "-1"])
    assert res.exit_code == 2 and "--guided-radius" in res.output


def test_packaged_local_pool_is_the_default_and_can_be_overridden(tmp_path, monkeypatch):
    """A zoo entry's local_pool is applied at load; an explicit value (0 = whole image) wins; a
    checkpoint file has none unless asked."""
    from restore.archs.nafnet_arch import NAFBlock

    weights = tmp_path / "weights"
    weights.mkdir()
    make_checkpoint(weights / "d.safetensors", task="deblur")
    (weights / "zoo.json").write_text(json.dumps({
        "regions-deblur": {"task": "deblur", "file": "d.safetensors", "local_pool": 16}}))
    monkeypatch.setattr(zoo, "WEIGHTS_DIR", weights)
    monkeypatch.setattr(zoo, "ZOO_FILE", weights / "zoo.json")
    assert resolve_model(None, "deblur").local_pool == 16

    def windows(r):
        return {b.pool_window for b in r.net.modules() if isinstance(b, NAFBlock)}

    packaged = Restorer.load(None, task="deblur", device="cpu")
    assert packaged.local_pool == 16 and windows(packaged) == {17, 9, 5}  # 16 px at levels 0, 1, 2
    assert windows(Restorer.load(None, task="deblur", device="cpu", local_pool=32)) == {33, 17, 9}
    whole = Restorer.load(None, task="deblur", device="cpu", local_pool=0)
    assert whole.local_pool is None and windows(whole) == {0}
    assert windows(Restorer.load(str(weights / "d.safetensors"), task="deblur", device="cpu")) == {0}
    x = torch.rand(1, 3, 40, 44, generator=torch.Generator().manual_seed(1))
    x[..., :20] *= 0.2  # halves with different statistics
    assert (packaged.restore(x) - whole.restore(x)).abs().max() > 1e-4
    from click.testing import CliRunner

    from pipelines.cli import main

    res = CliRunner().invoke(main, ["models", "--task", "deblur"])
    assert res.exit_code == 0 and "local pool 16 px" in res.output


def test_load_checkpoint_and_restore_matches_direct_call(tmp_path):
    ck = tmp_path / "m.safetensors"
    net = make_checkpoint(ck)
    r = Restorer.load(str(ck), task="dehaze", device="cpu")
    assert r.prior.name == "regions" and r.prior.options["n_segments"] == 20
    x = torch.rand(1, 3, 37, 29, generator=torch.Generator().manual_seed(0))
    out = r.restore(x)
    assert out.shape == x.shape and out.dtype == torch.float32
    with torch.no_grad():
        ref = net(x, r.prior(x)).clamp(0, 1)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)
    assert torch.equal(out, r.restore(x))  # deterministic on the CPU
    # forced tiling: the prior on the whole image, the network through tiled_forward
    r.tile, r.overlap = 16, 4
    assert r.use_tiles(37, 29)
    tiled = r.restore(x)
    with torch.no_grad():
        prepared = net.prepare_prior(x, r.prior(x))  # whole-image MAP region means for every tile
        ref = tiled_forward(net, x, prepared, TileSpec(tile=16, overlap=4, batch_size=1, multiple=4))
    torch.testing.assert_close(tiled, ref.clamp(0, 1), atol=1e-5, rtol=0)
    r.tile = 0
    assert not r.use_tiles(10_000, 10_000)


def test_with_prior_conditions_a_copy_on_another_prior(tmp_path):
    ck = tmp_path / "m.safetensors"
    net = make_checkpoint(ck)
    r = Restorer.load(str(ck), task="dehaze", device="cpu", tile=0)
    x = torch.rand(1, 3, 24, 20, generator=torch.Generator().manual_seed(1))
    fixed = r.prior(x)
    spy = _FixedPrior(fixed)
    other = r.with_prior(spy)
    assert other.net is r.net and other.tile == 0 and other.metadata is r.metadata and r.prior.name == "regions"
    out = other.restore(x)
    with torch.no_grad():
        ref = net(x, fixed).clamp(0, 1)
    assert spy.seen == [x.shape]
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)
    assert r.with_prior(None).prior is None


def test_a_known_prior_output_is_used_instead_of_running_the_prior(tmp_path):
    ck = tmp_path / "m.safetensors"
    make_checkpoint(ck)
    r = Restorer.load(str(ck), task="dehaze", device="cpu", tile=0)
    x = torch.rand(1, 3, 24, 20, generator=torch.Generator().manual_seed(1))
    spy = _SpyPrior()
    known = r.prior(x)
    torch.testing.assert_close(r.with_prior(spy).restore(x, known_prior=known), r.restore(x), atol=0, rtol=0)
    assert spy.seen == []
    # a self-ensemble runs the prior on the mirrored copy only
    flip = Restorer(net=r.net, task="dehaze", name="m", prior=spy, tile=0, self_ensemble="flip")
    flip.restore(x, known_prior=known)
    assert len(spy.seen) == 1 and torch.equal(spy.seen[0], x.flip(-1))
    with pytest.raises(ValueError, match="uses no prior"):
        r.with_prior(None).restore(x, known_prior=known)


def test_prior_override_and_checkpoint_errors(tmp_path):
    ck = tmp_path / "m.safetensors"
    make_checkpoint(ck)
    # another prior than the one the model was trained with: an error naming both, unless forced
    with pytest.raises(ValueError, match=r"trained with the 'regions' prior, not 'none'.*--force-prior"):
        Restorer.load(str(ck), task="dehaze", prior="none", device="cpu")
    r = Restorer.load(str(ck), task="dehaze", prior="none", device="cpu", force_prior=True)
    assert r.prior.name == "none"
    assert Restorer.load(str(ck), task="dehaze", prior="regions", device="cpu").prior.name == "regions"
    with pytest.raises(ValueError, match="prior-checkpoint applies"):
        Restorer.load(str(ck), task="dehaze", prior_checkpoint=tmp_path / "x.pth", device="cpu")
    with pytest.raises(ValueError, match="cannot deblur"):
        Restorer.load(str(ck), task="deblur", device="cpu")
    plain = tmp_path / "plain.safetensors"
    make_checkpoint(plain, arch="nafnet")
    assert Restorer.load(str(plain), task="dehaze", prior="regions", device="cpu").prior is None
    bad = tmp_path / "bad.safetensors"
    save_checkpoint(bad, {"w": torch.zeros(1)}, {"format": "other"})
    with pytest.raises(CheckpointError, match="not a robustsam-restore restoration checkpoint"):
        load_restoration_checkpoint(bad)
    noarch = tmp_path / "noarch.safetensors"
    save_checkpoint(noarch, {"w": torch.zeros(1)}, {"format": CHECKPOINT_FORMAT, "task": "dehaze"})
    with pytest.raises(CheckpointError, match="lacks 'arch'"):
        load_restoration_checkpoint(noarch)
    unknown = tmp_path / "unknown.safetensors"
    save_checkpoint(unknown, {"w": torch.zeros(1)}, {"format": CHECKPOINT_FORMAT, "task": "dehaze", "arch": "unet"})
    with pytest.raises(CheckpointError, match="cannot build"):
        load_restoration_checkpoint(unknown)
    wrong = tmp_path / "wrong.safetensors"
    save_checkpoint(wrong, {"w": torch.zeros(1)}, {"format": CHECKPOINT_FORMAT, "task": "dehaze", "arch": "nafnet", "arch_kwargs": TINY})
    with pytest.raises(CheckpointError, match="missing keys"):
        load_restoration_checkpoint(wrong)
    with pytest.raises(ValueError, match=">= 0"):
        Restorer.load("identity", task="deblur", tile=-1)


def test_checkpoint_metadata_cannot_make_it_build_a_huge_network(tmp_path, monkeypatch):
    import restore.archs as archs

    small = tmp_path / "small.safetensors"
    make_checkpoint(small)
    state = load_restoration_checkpoint(small)[0].state_dict()

    def with_kwargs(name, **kwargs):
        path = tmp_path / f"{name}.safetensors"
        save_checkpoint(path, state, {"format": CHECKPOINT_FORMAT, "task": "dehaze", "arch": "map_nafnet",
                                      "arch_kwargs": {**TINY, **kwargs}})
        return path

    # size arguments out of bounds: refused before anything is built
    for kwargs, message in (({"width": 100_000}, "arch_kwargs.width: must be in 2..1024, got 100000"),
                            ({"middle_blocks": 10**9}, "arch_kwargs.middle_blocks: must be in 0..256"),
                            ({"enc_blocks": [1] * 20, "dec_blocks": [1] * 20}, "arch_kwargs.enc_blocks: at most 8"),
                            ({"seg_channels": "2"}, "arch_kwargs.seg_channels: expected an integer, got '2'")):
        path = with_kwargs("bounds", **kwargs)
        with pytest.raises(CheckpointError) as e:
            load_restoration_checkpoint(path)
        assert str(e.value).startswith(f"{path}: cannot build its architecture (") and message in str(e.value)
    # within bounds, but not what the file holds: compared on the meta device, never allocated
    built_on = []
    real_build = archs.build_arch

    def spy(name, **kwargs):
        built_on.append(torch.empty(0).device.type)
        return real_build(name, **kwargs)

    monkeypatch.setattr(archs, "build_arch", spy)
    path = with_kwargs("wide", width=512, middle_blocks=8)
    with pytest.raises(CheckpointError, match=rf"^{path}: does not fit MapNAFNet\n  missing keys"):
        load_restoration_checkpoint(path)
    assert built_on == ["meta"]
    load_restoration_checkpoint(small)
    assert built_on == ["meta", "meta", "cpu"], "a fitting file is checked on meta, then built"
    # the whole network is bounded too, counted before it is built
    with pytest.raises(ValueError, match=r"architecture 'nafnet': [\d,]+ parameters, more than the 500,000,000"):
        real_build("nafnet", width=1024, enc_blocks=[1, 1, 1, 1], middle_blocks=4, dec_blocks=[1, 1, 1, 1])


def test_recipe_arch_kwargs_are_bounded_with_their_key_path():
    from pipelines.config import ConfigError, build
    from restore.training.options import ModelOptions

    with pytest.raises(ConfigError, match=r"^arch_kwargs.width: must be in 2..1024, got 100000$"):
        build(ModelOptions, {"arch_kwargs": {"width": 100_000}})
    with pytest.raises(ConfigError, match=r"^arch_kwargs.feature_channels.image_embedding: must be in 1..8192"):
        build(ModelOptions, {"arch": "fusion_nafnet", "arch_kwargs": {"feature_channels": {"image_embedding": 10**6}}})
    assert build(ModelOptions, {"arch_kwargs": {"width": 64, "enc_blocks": [2, 2, 4, 8]}}).arch_kwargs["width"] == 64


def test_devices_and_classical():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="one of"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA"):
            resolve_device("cuda")
    r = Restorer.load("identity", task="deblur", prior="regions")
    assert r.prior is None and not r.use_tiles(5000, 5000)
    x = torch.rand(1, 3, 8, 9)
    assert torch.equal(r.restore(x), x)
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        r.restore(x[0])


class _RampNet(torch.nn.Module):
    """Adds a ramp from 0 to 0.5 along the width: not equivariant to any flip or rotation."""

    def forward(self, x, prior=None):
        w = x.shape[-1]
        return x + torch.linspace(0, 0.5, w)


class _SpyPrior(Prior):
    """One region; records every image it is run on."""

    name = "spy"

    def __init__(self):
        super().__init__()
        self.seen = []

    def forward(self, x):
        self.seen.append(x.clone())
        return PriorOutput(torch.zeros(x.shape[0], *x.shape[-2:], dtype=torch.int32))


class _FixedPrior(Prior):
    """Answers every image with ``output``; records the shapes it is run on."""

    name = "fixed"

    def __init__(self, output):
        super().__init__()
        self.output, self.seen = output, []

    def forward(self, x):
        self.seen.append(x.shape)
        return self.output


@pytest.mark.parametrize("ensemble", ["none", "flip", "x8"])
def test_self_ensemble_turns_back_and_averages(ensemble):
    """Each pass is transformed back before averaging: on a non-square image an equivariant model's output
    is unchanged, and a ramp along the width averages, over each transform and its mirror, to its mean
    0.25. The prior runs on each transformed image."""
    x = torch.rand(1, 3, 6, 9) * 0.5
    identity = Restorer(net=Restorer.load("identity", task="deblur").net, task="deblur", name="identity",
                        self_ensemble=ensemble)
    torch.testing.assert_close(identity.restore(x), x, rtol=0, atol=1e-7)
    spy = _SpyPrior()
    ramp = Restorer(net=_RampNet(), task="deblur", name="ramp", prior=spy, self_ensemble=ensemble)
    out = ramp.restore(x)
    assert out.shape == x.shape
    if ensemble == "none":
        torch.testing.assert_close(out, x + torch.linspace(0, 0.5, 9))
    else:
        torch.testing.assert_close(out, x + 0.25)
    passes = {"none": 1, "flip": 2, "x8": 8}[ensemble]
    assert len(spy.seen) == passes
    if ensemble != "none":
        torch.testing.assert_close(spy.seen[1], x.flip(-1))
    if ensemble == "x8":
        assert [t.shape[-2:] for t in spy.seen].count((9, 6)) == 4
        torch.testing.assert_close(spy.seen[2], torch.rot90(x, 1, (-2, -1)))


def test_self_ensemble_checks_name_and_training_augmentation(tmp_path, caplog):
    with pytest.raises(ValueError, match="self_ensemble must be one of none, flip, x8"):
        Restorer.load("identity", task="deblur", self_ensemble="x4")
    ck = tmp_path / "m.safetensors"
    make_checkpoint(ck, arch="nafnet", config={"data": {"train": {"augment": {"hflip": True, "rot90": False}}}})
    with caplog.at_level("WARNING", logger="restore.inference"):
        assert Restorer.load(str(ck), self_ensemble="flip").self_ensemble == "flip"
        assert not caplog.records
        Restorer.load(str(ck), self_ensemble="x8")
    assert len(caplog.records) == 1 and "trained without rot90 augmentation" in caplog.text


def test_restore_file_keeps_depth_and_alpha(tmp_path):
    from robustsam_prior.core.io import read_image, write_image

    rng = np.random.default_rng(0)
    src = tmp_path / "in.png"
    alpha = rng.random((12, 10)).astype(np.float32)
    write_image(src, rng.random((12, 10, 3)).astype(np.float32), alpha=alpha, bit_depth=16)
    r = Restorer.load("dcp", task="dehaze", device="cpu")
    r.restore_file(src, tmp_path / "out.png")
    out = read_image(tmp_path / "out.png")
    assert out.pixels.shape == (12, 10, 3) and out.bit_depth == 16
    np.testing.assert_allclose(out.alpha, read_image(src).alpha)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.gpu
def test_cuda_half_close_to_cpu(tmp_path):
    ck = tmp_path / "m.safetensors"
    make_checkpoint(ck, arch="nafnet")
    x = torch.rand(1, 3, 64, 48)
    cpu = Restorer.load(str(ck), task="dehaze", device="cpu").restore(x)
    gpu = Restorer.load(str(ck), task="dehaze", device="cuda").restore(x)
    assert (cpu - gpu).abs().max() < 1e-2


@pytest.mark.slow
def test_fusion_model_with_tiny_robustsam_prior(tmp_path, monkeypatch, caplog):
    """End to end with the real robustsam prior on a tiny random RobustSAM (no reference files). The model
    records the sha256 of its prior's weights; another file is run, with a warning that says so."""
    from robustsam_prior import build_robustsam
    from robustsam_prior.hub import ENV_CHECKPOINT

    monkeypatch.delenv(ENV_CHECKPOINT, raising=False)
    sam_cfg = {
        "img_size": 256, "patch": 16, "enc_dim": 32, "enc_depth": 2, "enc_heads": 2, "global_attn": [1],
        "window": 4, "prompt_dim": 64, "dec_depth": 2, "dec_mlp": 128, "dec_heads": 2, "iou_hidden": 64,
        "mask_in_chans": 16,
    }  # fmt: skip
    torch.manual_seed(1)
    sam_ck = tmp_path / "tiny_sam.safetensors"
    save_checkpoint(sam_ck, build_robustsam(sam_cfg).state_dict(), {"config": sam_cfg})
    kwargs = {**TINY, "feature_channels": {"image_embedding": 64, "robust_mask_features": 8}}
    net = build_arch("fusion_nafnet", **kwargs)
    with torch.no_grad():
        for n, p in net.named_parameters():
            if "fusion.scale" in n or "fusion.shift" in n:
                p.normal_(0, 0.2)
    ck = tmp_path / "fusion.safetensors"
    prior = {"name": "robustsam", "options": {"config": sam_cfg, "points_per_side": 2, "pred_iou_thresh": 0.0,
                                              "stability_score_thresh": 0.0, "checkpoint": "/elsewhere/x.pth"},
             "checkpoint_sha256": "ab" * 32}
    save_checkpoint(ck, net.state_dict(), {"format": CHECKPOINT_FORMAT, "arch": "fusion_nafnet",
                                           "arch_kwargs": kwargs, "task": "deblur", "prior": prior})
    with caplog.at_level("WARNING", logger="restore.inference"):
        r = Restorer.load(str(ck), task="deblur", prior_checkpoint=sam_ck, device="cpu")
    assert r.prior.name == "robustsam"
    assert "trained on the robustsam prior of checkpoint sha256 abababababab" in caplog.text
    assert str(sam_ck) in caplog.text
    x = torch.rand(1, 3, 40, 56, generator=torch.Generator().manual_seed(0))
    out = r.restore(x)
    p = r.prior(x)
    assert set(p.features) == {"image_embedding", "robust_mask_features"}
    with torch.no_grad():
        ref = net.eval()(x, p).clamp(0, 1)
        labels_only = net(x, type(p)(p.labels, {}, {})).clamp(0, 1)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)
    assert (out - labels_only).abs().max() > 1e-3  # the features do condition the output
    r.tile = 32
    assert r.restore(x).shape == x.shape


def test_quality_benchmark_script_on_tiny_real_pairs(tmp_path):
    """benchmarks/quality.py end to end on two tiny blur pairs: the input row is BasicSR's PSNR/SSIM of
    the files (RGB, crop 0), the rows name the window that ran, and the JSON holds per-image values."""
    import subprocess
    import sys
    from pathlib import Path

    import cv2

    from robustsam_prior._basicsr import import_basicsr
    from robustsam_prior.core.io import write_image

    import_basicsr()
    from basicsr.metrics.psnr_ssim import calculate_psnr, calculate_ssim

    rng = np.random.default_rng(0)
    for d in ("deblur/blur", "deblur/gt"):
        (tmp_path / "real" / d).mkdir(parents=True)
    for name in ("a", "b"):
        gt = rng.random((40, 48, 3), dtype=np.float32)
        write_image(tmp_path / "real/deblur/gt" / f"{name}.png", gt)
        write_image(tmp_path / "real/deblur/blur" / f"{name}.png", (gt + np.roll(gt, 2, axis=1)) / 2)
    default, ablation = tmp_path / "d.safetensors", tmp_path / "a.safetensors"
    make_checkpoint(default, task="deblur", seed=1)
    make_checkpoint(ablation, arch="nafnet", task="deblur", prior={"name": "none"}, seed=2)
    script = Path(__file__).resolve().parents[2] / "benchmarks" / "quality.py"

    def run(*extra):
        out = tmp_path / "q.json"
        res = subprocess.run(
            [sys.executable, str(script), "--task", "deblur", "--sets", "real", "--skip-speed", "--threads", "1",
             "--real-dir", str(tmp_path / "real"), "--default-deblur", str(default),
             "--ablation-deblur", str(ablation), "--json", str(out), *extra],
            capture_output=True, text=True, check=True)
        return res.stdout, {r["method"]: r for r in json.loads(out.read_text())["records"]}

    stdout, rows = run("--local-pool", "16")
    assert list(rows) == ["input", "nafnet (no prior, ablation, local pool 16 px)",
                          "map_nafnet + regions (default, local pool 16 px)"]
    files = [(cv2.imread(str(tmp_path / "real/deblur/gt" / f"{n}.png")),
              cv2.imread(str(tmp_path / "real/deblur/blur" / f"{n}.png"))) for n in ("a", "b")]  # uint8, as BasicSR
    psnr = [calculate_psnr(b, g, 0) for g, b in files]
    ssim = [calculate_ssim(b, g, 0) for g, b in files]
    assert rows["input"]["psnr"] == pytest.approx(np.mean(psnr), abs=1e-9)
    assert rows["input"]["ssim"] == pytest.approx(np.mean(ssim), abs=1e-9)
    assert stdout.splitlines()[2] == "PSNR/SSIM: BasicSR 1.4 convention, RGB, crop 0, 8-bit"
    assert rows["input"]["n"] == 2 and set(rows["input"]["per_image"]) == {"a", "b"}
    default_row = rows["map_nafnet + regions (default, local pool 16 px)"]
    assert abs(default_row["psnr"] - rows["input"]["psnr"]) > 1e-3  # the network ran
    assert "| map_nafnet + regions (default, local pool 16 px) |" in stdout
    # whole-image statistics: no window in the labels; a self-ensemble row beside the default's
    _, whole = run("--local-pool", "0", "--self-ensemble", "flip")
    assert list(whole) == ["input", "nafnet (no prior, ablation)", "map_nafnet + regions (default)",
                           "map_nafnet + regions (default, flip self-ensemble)"]
    flip = whole["map_nafnet + regions (default, flip self-ensemble)"]
    assert flip["psnr"] != whole["map_nafnet + regions (default)"]["psnr"]
    # the video validation set beside the real one: per-image rows and each method's worst gain
    frames = tmp_path / "video" / "seq"
    frames.mkdir(parents=True)
    for i in range(20):
        write_image(frames / f"{i:06d}.png", np.roll(rng.random((40, 48, 3), dtype=np.float32), i, axis=1))
    out = tmp_path / "v.json"
    res = subprocess.run(
        [sys.executable, str(script), "--task", "deblur", "--sets", "real,video", "--skip-speed", "--threads", "1",
         "--real-dir", str(tmp_path / "real"), "--video-dir", str(tmp_path / "video"), "--default-deblur",
         str(default), "--ablation-deblur", str(ablation), "--json", str(out)],
        capture_output=True, text=True, check=True)
    records = json.loads(out.read_text())["records"]
    video = {r["method"]: r for r in records if r["set"] == "video"}
    assert video["input"]["n"] == 2  # centres 6 and 10 of 20 frames (windows of up to 13, every 4th)
    assert set(video["input"]["per_image"]) == {"seq/000006.png", "seq/000010.png"}
    for r in (r for r in records if r["method"] != "input"):
        base = next(b for b in records if b["set"] == r["set"] and b["method"] == "input")
        per = [r["per_image"][k]["psnr"] - base["per_image"][k]["psnr"] for k in base["per_image"]]
        assert r["worst_gain"] == pytest.approx(min(per)) and r["gain"] == pytest.approx(np.mean(per))
    assert "video, per image (PSNR dB):" in res.stdout and "| seq/000006.png |" in res.stdout
    assert "worst" in res.stdout
