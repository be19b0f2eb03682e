"""Checkpoint loading: official RobustSAM files (with/without ``module.``), Meta SAM files, our own files,
and the bad cases (truncated, code-executing pickle, mis-shaped key). Files are made from a tiny model."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from robustsam_prior.core.checkpoint import CheckpointError, read_checkpoint
from robustsam_prior.loading import (
    FORMAT,
    ROBUST_MODULES,
    build_robustsam,
    checkpoint_phrase,
    config_from_checkpoint,
    detect_checkpoint,
    detect_variant,
    is_robust_key,
    load_robustsam_weights,
    save_robustsam,
)
from robustsam_prior.modeling.build import build_robustsam_model

TINY = dict(img_size=64, patch=16, enc_dim=32, enc_depth=2, enc_heads=2, global_attn=[1], window=2,
            prompt_dim=32 * 2, dec_depth=1, dec_mlp=64, dec_heads=2, iou_hidden=32, mask_in_chans=8)


@pytest.fixture(scope="module")
def source():
    torch.manual_seed(0)
    model = build_robustsam_model(TINY)
    with torch.no_grad():
        for v in model.state_dict().values():
            if v.dtype.is_floating_point:
                v.add_(torch.randn_like(v) * 0.01)
    return model


def equal_states(a, b, keys=None):
    sa, sb = a.state_dict(), b.state_dict()
    return all(torch.equal(sa[k], sb[k]) for k in (keys or sa))


def test_official_file_without_and_with_module_prefix(source, tmp_path):
    plain = tmp_path / "robustsam_checkpoint_tiny.pth"
    torch.save(source.state_dict(), plain)
    ddp = tmp_path / "ddp.pth"
    torch.save({f"module.{k}": v for k, v in source.state_dict().items()}, ddp)
    for path in (plain, ddp):
        model = build_robustsam(TINY, path)
        assert equal_states(model, source)
        assert model.checkpoint_sha256 == read_checkpoint(path).sha256
        assert model.checkpoint_path == str(path)
        assert not model.training


def test_sam_checkpoint_is_detected_and_refused_unless_asked(source, tmp_path):
    sam_state = {k: v for k, v in source.state_dict().items() if not is_robust_key(k)}
    assert len(sam_state) < len(source.state_dict())
    path = tmp_path / "sam_vit_tiny.pth"
    torch.save(sam_state, path)
    assert detect_checkpoint(sam_state).kind == "sam"
    with pytest.raises(CheckpointError, match="this is a SAM checkpoint, not RobustSAM") as e:
        build_robustsam(TINY, path)
    assert str(path) in str(e.value) and "fresh_robust_modules=True" in str(e.value)
    torch.manual_seed(1)
    model = build_robustsam(TINY, path, fresh_robust_modules=True)
    assert equal_states(model, source, keys=list(sam_state))
    robust = [k for k in source.state_dict() if is_robust_key(k) and source.state_dict()[k].dtype.is_floating_point
              and "running" not in k]
    assert not any(torch.equal(model.state_dict()[k], source.state_dict()[k]) for k in robust)
    # a RobustSAM file with fresh_robust_modules=True still loads all of its modules
    full = tmp_path / "full.pth"
    torch.save(source.state_dict(), full)
    assert equal_states(build_robustsam(TINY, full, fresh_robust_modules=True), source)


def test_partial_robust_file_names_missing_keys(source, tmp_path):
    state = {k: v for k, v in source.state_dict().items() if not k.startswith("mask_decoder.robust_mlp.")}
    path = tmp_path / "partial.pth"
    torch.save(state, path)
    with pytest.raises(CheckpointError, match="missing keys .*mask_decoder.robust_mlp.layers.0.bias") as e:
        build_robustsam(TINY, path)
    assert "looks like: a RobustSAM checkpoint" in str(e.value)


def test_misshaped_key_is_named(source, tmp_path):
    state = dict(source.state_dict())
    state["mask_decoder.custom_robust_token.weight"] = torch.zeros(4, 32)
    path = tmp_path / "bad_shape.pth"
    torch.save(state, path)
    with pytest.raises(CheckpointError, match=r"mis-shaped.*'mask_decoder.custom_robust_token.weight', \(4, 64\), \(4, 32\)"):
        build_robustsam(TINY, path)


def test_unexpected_key_and_unknown_file(source, tmp_path):
    state = dict(source.state_dict())
    state["mask_decoder.hf_token.weight"] = torch.zeros(1, 64)
    path = tmp_path / "extra.pth"
    torch.save(state, path)
    with pytest.raises(CheckpointError, match="unexpected keys .*hf_token"):
        build_robustsam(TINY, path)
    other = tmp_path / "other.pth"
    torch.save({"conv.weight": torch.zeros(3, 3)}, other)
    with pytest.raises(CheckpointError, match="cannot tell the architecture.*not a SAM-family state dict"):
        build_robustsam(None, other)
    with pytest.raises(CheckpointError, match="first keys: conv.weight"):
        build_robustsam(TINY, other)


def test_truncated_file_is_refused(source, tmp_path):
    path = tmp_path / "truncated.pth"
    torch.save(source.state_dict(), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated.pth"):
        build_robustsam(TINY, path)


class _Evil:
    def __reduce__(self):
        return (os.system, (f"touch {os.environ['EVIL_MARKER']}",))


def test_code_executing_pickle_is_refused(tmp_path, monkeypatch):
    marker = tmp_path / "pwned"
    monkeypatch.setenv("EVIL_MARKER", str(marker))
    path = tmp_path / "evil.pth"
    torch.save({"image_encoder.pos_embed": torch.zeros(1), "x": _Evil()}, path)
    with pytest.raises(CheckpointError, match="refused"):
        build_robustsam(TINY, path)
    assert not marker.exists()


def test_own_checkpoint_builds_from_the_file_alone(source, tmp_path):
    path = tmp_path / "mine.safetensors"
    sha = save_robustsam(source, path, metadata={"note": "test"})
    loaded = read_checkpoint(path)
    assert loaded.metadata["format"] == FORMAT and loaded.metadata["note"] == "test"
    assert loaded.metadata["config"]["enc_dim"] == 32 and loaded.metadata["variant"] is None
    model = build_robustsam(None, path)
    assert model.config == source.config and equal_states(model, source)
    assert model.checkpoint_sha256 == sha
    # a config that disagrees with the file fails strictly, naming the mis-shaped keys
    with pytest.raises(CheckpointError, match="mis-shaped"):
        build_robustsam({**TINY, "enc_dim": 64, "enc_heads": 2}, path)


def test_bad_metadata_config(source, tmp_path):
    from robustsam_prior.core.checkpoint import save_checkpoint

    path = tmp_path / "badmeta.safetensors"
    save_checkpoint(path, source.state_dict(), {"config": {"enc_dimm": 3}})
    with pytest.raises(CheckpointError, match="bad 'config'.*did you mean"):
        build_robustsam(None, path)


def test_official_variant_recognised_from_shapes():
    for variant in ("vit_b", "vit_l", "vit_h"):
        with torch.device("meta"):
            state = build_robustsam_model(variant).state_dict()
        assert detect_variant(state) == variant
        assert detect_checkpoint(state).kind == "robustsam"
        assert f"a RobustSAM checkpoint ({variant})" == checkpoint_phrase(state)
        sam_state = {k: v for k, v in state.items() if not is_robust_key(k)}
        assert checkpoint_phrase(sam_state).startswith(f"a Meta SAM checkpoint ({variant}), not RobustSAM")
    assert len(ROBUST_MODULES) == 6


def test_config_from_official_file_without_metadata(tmp_path):
    from robustsam_prior.core.checkpoint import LoadedCheckpoint

    with torch.device("meta"):
        state = build_robustsam_model("vit_b").state_dict()
    loaded = LoadedCheckpoint(state, Path("robustsam_checkpoint_b.pth"), "0" * 64, {})
    assert config_from_checkpoint(loaded).enc_dim == 768
    assert config_from_checkpoint(LoadedCheckpoint(state, Path("x"), "", {"variant": "vit_l"})).enc_dim == 1024
    assert detect_checkpoint({"mask_decoder.hf_token.weight": torch.zeros(1)}).kind == "hq-sam"


def test_build_needs_config_or_checkpoint(source, tmp_path):
    with pytest.raises(ValueError, match="needs a config"):
        build_robustsam()
    m = build_robustsam_model(TINY)
    m.config = None
    with pytest.raises(ValueError, match="model.config is not set"):
        save_robustsam(m, tmp_path / "x.safetensors")
    # load_robustsam_weights on an existing model, from a path
    path = tmp_path / "w.pth"
    torch.save(source.state_dict(), path)
    target = build_robustsam_model(TINY)
    loaded = load_robustsam_weights(target, path)
    assert loaded.sha256 == target.checkpoint_sha256 and equal_states(target, source)


def test_the_fast_encoder_is_the_default_and_fast_false_keeps_the_stock_one(source, tmp_path):
    from robustsam_prior.fast_encoder import is_accelerated

    path = tmp_path / "w.pth"
    torch.save(source.state_dict(), path)
    fast, plain = build_robustsam(TINY, path), build_robustsam(TINY, path, fast=False)
    assert is_accelerated(fast.image_encoder) and not is_accelerated(plain.image_encoder)
    assert is_accelerated(build_robustsam_model(TINY).image_encoder)
    assert not is_accelerated(build_robustsam_model(TINY, fast=False).image_encoder)
    assert fast.state_dict().keys() == plain.state_dict().keys()
    x = torch.rand(1, 3, 64, 64) * 255
    with torch.no_grad():
        (emb_fast, early_fast), (emb, early) = fast.encode(fast.preprocess(x)), plain.encode(plain.preprocess(x))
    torch.testing.assert_close(emb_fast, emb, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(early_fast, early, rtol=1e-5, atol=1e-5)


def test_untrained_fourier_blocks_are_flagged(source, tmp_path, caplog):
    from robustsam_prior.loading import fgm_looks_untrained

    torch.manual_seed(2)
    fresh = build_robustsam_model(TINY).state_dict()  # default initialisation
    assert sorted(fgm_looks_untrained(fresh)) == [
        "mask_decoder.fourier_first_layer_features",
        "mask_decoder.fourier_last_layer_features",
        "mask_decoder.fourier_mask_features",
    ]
    # same scale but Gaussian (as trained weights drift): not flagged
    g = torch.Generator().manual_seed(0)
    moved = {k: torch.randn(v.shape, generator=g) * (v.numel() / v.shape[0]) ** -0.5 / 3**0.5 if "fgm_block" in k else v
             for k, v in fresh.items()}
    assert fgm_looks_untrained(moved) == []
    path = tmp_path / "early_code.pth"
    torch.save(fresh, path)
    with caplog.at_level("WARNING"):
        build_robustsam(TINY, path)
    assert "look untrained" in caplog.text


def test_metadata_of_a_huge_network_is_refused_before_building(source, tmp_path, monkeypatch):
    import robustsam_prior.modeling.build as build_module
    from robustsam_prior.core.checkpoint import save_checkpoint

    path = tmp_path / "huge.safetensors"
    save_checkpoint(path, source.state_dict(), {"config": {**TINY, "enc_dim": 100_000, "enc_heads": 2}})
    with pytest.raises(CheckpointError, match=r"huge.safetensors: bad 'config' .*enc_dim must be in 1..4096, got 100000"):
        build_robustsam(None, path)
    save_checkpoint(path, source.state_dict(), {"config": {**TINY, "img_size": 8192, "patch": 8}})
    with pytest.raises(CheckpointError, match="1024 tokens per side, more than 512"):
        build_robustsam(None, path)
    # within bounds (ViT-H) but not the file's shapes: checked on the meta device, never allocated
    built_on = []
    real_build = build_module._build

    def spy(cfg, bn_mode):
        built_on.append(torch.empty(0).device.type)
        return real_build(cfg, bn_mode)

    monkeypatch.setattr(build_module, "_build", spy)
    save_checkpoint(path, source.state_dict(), {"variant": "vit_h"})
    with pytest.raises(CheckpointError, match=r"huge.safetensors: does not fit RobustSam\n  missing keys"):
        build_robustsam(None, path)
    assert built_on and set(built_on) == {"meta"}
    with pytest.raises(ValueError, match=r"a RobustSAM of [\d,]+ parameters, more than the 2,000,000,000"):
        build_robustsam_model({**TINY, "img_size": 4096, "patch": 8, "enc_dim": 4096, "enc_heads": 32, "enc_depth": 64})
