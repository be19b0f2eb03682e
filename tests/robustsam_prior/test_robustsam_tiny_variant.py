"""The ``robustsam-tiny`` variant: in the variants table at CPU size, the official module structure, saved
and found again by name, and the fast encoder path equal to the stock one on it."""

from __future__ import annotations

import pytest
import torch

from robustsam_prior import build_robustsam
from robustsam_prior.modeling.build import VARIANTS, build_robustsam_model, config_name, resolve_config


def test_tiny_variant_is_cpu_sized_and_named():
    cfg = resolve_config("robustsam-tiny")
    assert cfg is VARIANTS["robustsam-tiny"]
    assert cfg.img_size == 256 and 128 <= cfg.enc_dim <= 192 and 4 <= cfg.enc_depth <= 6
    assert 64 <= cfg.prompt_dim <= 128 and cfg.embedding_size == 16
    assert config_name(cfg) == "robustsam-tiny"
    with pytest.raises(ValueError, match="did you mean 'robustsam-tiny'"):
        resolve_config("robustsam-tiny2")


def test_tiny_variant_has_the_official_module_tree():
    """Same top-level key families as vit_b (built on the meta device: nothing allocated)."""
    def families(model):
        return {".".join(k.split(".")[:2]) for k in model.state_dict()}

    with torch.device("meta"):
        tiny, vit_b = build_robustsam_model("robustsam-tiny"), build_robustsam_model("vit_b")
    assert families(tiny) == families(vit_b)
    assert len(tiny.image_encoder.blocks) == 6 and tiny.image_encoder.tap_index == 2
    n = sum(p.numel() for p in tiny.parameters())
    assert 2_000_000 < n < 20_000_000, n


def test_tiny_checkpoint_round_trip_names_the_variant(tmp_path):
    from robustsam_prior.core.checkpoint import read_checkpoint
    from robustsam_prior.loading import save_robustsam

    torch.manual_seed(0)
    model = build_robustsam("robustsam-tiny")
    path = tmp_path / "tiny.safetensors"
    save_robustsam(model, path)
    assert read_checkpoint(path).metadata["variant"] == "robustsam-tiny"
    again = build_robustsam(None, path)
    assert again.config == VARIANTS["robustsam-tiny"]
    x = torch.rand(1, 3, 256, 256) * 255
    with torch.no_grad():
        a, b = model.encode(model.preprocess(x)), again.encode(again.preprocess(x))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_fast_encoder_equals_stock_on_tiny_variant():
    from robustsam_prior.fast_encoder import accelerate, is_accelerated, stock

    torch.manual_seed(0)
    model = build_robustsam("robustsam-tiny")
    enc = model.image_encoder
    with torch.no_grad():  # relative positions and biases start at 0: make them matter
        for name, p in enc.named_parameters():
            if "rel_pos" in name or name == "pos_embed":
                p.normal_(0.0, 0.5)
            elif name.endswith(".bias"):
                p.normal_(0.0, 0.2)
    x = torch.randn(2, 3, 256, 256)
    with torch.no_grad():
        stock(enc)
        ref_emb, ref_early = enc(x)
        accelerate(enc)
        assert is_accelerated(enc)
        emb, early = enc(x)
    assert ref_emb.shape == (2, 128, 16, 16) and ref_early.shape == (2, 16, 16, 192)
    for ref, out in ((ref_emb, emb), (ref_early, early)):
        assert ((ref - out).abs().max() / ref.abs().max()).item() < 1e-5
    # and build_robustsam(fast=True) gives the same model as accelerating it afterwards
    assert is_accelerated(build_robustsam("robustsam-tiny", fast=True).image_encoder)


def test_resolving_tiny_by_name_without_packaged_weights_says_it_is_trained_here(monkeypatch, tmp_path):
    from robustsam_prior import hub
    from robustsam_prior.hub import CheckpointNotFoundError, resolve_checkpoint

    monkeypatch.delenv("ROBUSTSAM_CHECKPOINT", raising=False)
    monkeypatch.setattr(hub, "PACKAGED_DIR", tmp_path)
    with pytest.raises(CheckpointNotFoundError, match="no published checkpoint.*train_robustsam_tiny_stage1.yml"):
        resolve_checkpoint("robustsam-tiny")


def test_the_packaged_robustsam_tiny_is_the_default_checkpoint_and_loads(monkeypatch):
    """The shipped weights: float16 on disk, the default of every RobustSAM prior, built as robustsam-tiny in
    float32 from its own metadata, with the recipe and source file recorded."""
    from robustsam_prior.core.checkpoint import read_checkpoint
    from robustsam_prior.hub import PACKAGED_DIR, resolve_checkpoint

    monkeypatch.delenv("ROBUSTSAM_CHECKPOINT", raising=False)
    path = resolve_checkpoint()
    assert path == PACKAGED_DIR / "robustsam-tiny.safetensors" == resolve_checkpoint("robustsam-tiny")
    loaded = read_checkpoint(path)
    assert {t.dtype for t in loaded.state_dict.values() if t.is_floating_point()} == {torch.float16}
    meta = loaded.metadata
    assert meta["variant"] == "robustsam-tiny" and meta["recipe"]["train"]["stage"] == "robust"
    assert len(meta["shipped_from"]["sha256"]) == 64
    model = build_robustsam(None, loaded)
    assert model.config == VARIANTS["robustsam-tiny"]
    assert next(model.parameters()).dtype == torch.float32
