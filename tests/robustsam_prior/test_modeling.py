"""RobustSAM model: equivalence with the official implementation's reference vectors, key manifests of
the official variants, another tiny shape, and the components against independent formulas."""

from __future__ import annotations

import copy
import json
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from robustsam_prior import fast_encoder
from robustsam_prior.loading import build_robustsam
from robustsam_prior.modeling.build import RobustSamConfig, build_robustsam_model, resolve_config
from robustsam_prior.modeling.components import FGMBlock, SelectiveConv, TokenBlock, check_bn_mode
from robustsam_prior.predictor import RobustSamPredictor


@pytest.fixture(scope="module")
def ref(robustsam_reference_dir):
    return torch.load(robustsam_reference_dir / "tiny_robustsam_reference.pth", weights_only=True)


@pytest.fixture(scope="module")
def tiny(robustsam_reference_dir):
    d = robustsam_reference_dir
    cfg = json.loads((d / "tiny_config.json").read_text())
    return build_robustsam(cfg, d / "tiny_robustsam_state_dict.pth")


@pytest.fixture(scope="module")
def predictor(tiny, ref):
    p = RobustSamPredictor(tiny)
    p.set_image(ref["image"].permute(1, 2, 0).numpy().astype(np.uint8))
    return p


def assert_close_rel(actual, expected, rtol=1e-5, what=""):
    actual, expected = torch.as_tensor(actual), torch.as_tensor(expected)
    assert actual.shape == expected.shape, f"{what}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    scale = float(expected.abs().max())
    err = float((actual - expected).abs().max())
    assert err <= rtol * max(scale, 1e-6), f"{what}: max abs diff {err} > {rtol} x scale {scale}"


def assert_logits(actual, expected, what=""):
    actual, expected = torch.as_tensor(actual), torch.as_tensor(expected)
    assert actual.shape == expected.shape, what
    err = float((actual - expected).abs().max())
    assert err <= 1e-4, f"{what}: logits max abs diff {err}"


def assert_masks(masks, expected, logits, what=""):
    """Thresholded masks equal except where our logit is within 1e-4 of 0."""
    masks, expected, logits = torch.as_tensor(masks), torch.as_tensor(expected), torch.as_tensor(logits)
    differ = masks != expected
    assert not bool((differ & (logits.abs() > 1e-4)).any()), f"{what}: {int(differ.sum())} mask pixels differ"


def prompts(ref, prompt):
    if prompt == "points":
        return dict(point_coords=ref["point_coords"][0].numpy(), point_labels=ref["point_labels"][0].numpy())
    return dict(box=ref["box"][0].numpy())


def test_encoder_matches_reference(tiny, ref, predictor):
    with torch.no_grad():
        emb, early = tiny.encode(tiny.preprocess(ref["image"][None]))
    assert_close_rel(emb, ref["image_embeddings"], what="image_embeddings")
    assert_close_rel(early, ref["early_features"], what="early_features")
    assert_close_rel(predictor.get_image_embedding(), ref["image_embeddings"], what="predictor embedding")
    assert_close_rel(predictor.get_early_features(), ref["early_features"], what="predictor early features")


@pytest.mark.parametrize("prompt", ["points", "box"])
@pytest.mark.parametrize("multimask", [False, True])
def test_robust_path_matches_reference(ref, predictor, prompt, multimask):
    tag = f"robust_{prompt}_{'multi' if multimask else 'single'}"
    masks, iou, low_res = predictor.predict(**prompts(ref, prompt), multimask_output=multimask)
    logits, _, _ = predictor.predict(**prompts(ref, prompt), multimask_output=multimask, return_logits=True)
    assert isinstance(masks, np.ndarray) and isinstance(iou, np.ndarray) and isinstance(low_res, np.ndarray)
    n = 3 if multimask else 1  # sane multimask = official channels 1, 2, 3 (first 3 of the 15)
    assert masks.shape == (n, 256, 256) and iou.shape == (n,) and low_res.shape == (n, 64, 64)
    assert_logits(low_res, ref[f"{tag}_low_res_logits"][0, :n], tag)
    assert_close_rel(iou, ref[f"{tag}_iou_predictions"][0], what=f"{tag} iou")
    assert_masks(masks, ref[f"{tag}_masks"][0, :n], logits, tag)

    # the official output (15 channels against 3 IoU scores when multimask), through the lower-level call
    if prompt == "points":
        kw = dict(point_coords=ref["point_coords"], point_labels=ref["point_labels"])
    else:
        kw = dict(boxes=ref["box"])
    out = predictor.decode(**kw)
    off_logits, off_iou = out.select(multimask, official=True)
    assert_logits(off_logits, ref[f"{tag}_low_res_logits"], f"{tag} official")
    assert_close_rel(off_iou, ref[f"{tag}_iou_predictions"], what=f"{tag} official iou")
    assert_close_rel(out.robust_embeddings, ref[f"{tag}_robust_embeddings"], what=f"{tag} robust_embeddings")
    assert_close_rel(out.tokens, ref[f"{tag}_robust_token"], what=f"{tag} robust_token")
    coords, labels = kw.get("point_coords"), kw.get("point_labels")
    full_masks, full_iou, full_low = predictor.predict_torch(
        coords, labels, kw.get("boxes"), multimask_output=multimask, official_multimask=True
    )
    assert_close_rel(full_iou, ref[f"{tag}_iou_predictions"], what=f"{tag} official iou (predict_torch)")
    full_logits = tiny_postprocess(predictor, full_low)
    assert_masks(full_masks, ref[f"{tag}_masks"], full_logits, f"{tag} official masks")


def tiny_postprocess(predictor, low_res):
    return predictor.model.postprocess_masks(low_res, predictor.input_size, predictor.original_size)


@pytest.mark.parametrize("prompt", ["points", "box"])
@pytest.mark.parametrize("multimask", [False, True])
def test_sam_path_matches_reference(tiny, ref, prompt, multimask):
    tag = f"clear_{prompt}_{'multi' if multimask else 'single'}"
    p = RobustSamPredictor(tiny, path="sam")
    p.set_image(ref["image"].permute(1, 2, 0).numpy().astype(np.uint8))
    _, iou, low_res = p.predict(**prompts(ref, prompt), multimask_output=multimask)
    assert_logits(low_res, ref[f"{tag}_low_res_logits"][0], tag)
    assert_close_rel(iou, ref[f"{tag}_iou_predictions"][0], what=f"{tag} iou")
    kw = dict(point_coords=ref["point_coords"], point_labels=ref["point_labels"]) if prompt == "points" else dict(boxes=ref["box"])
    out = p.decode(**kw)
    assert out.path == "sam" and out.logits.shape[1] == 4
    assert_close_rel(out.robust_embeddings, ref[f"{tag}_robust_embeddings"], what=f"{tag} robust_embeddings")


def test_model_forward_matches_reference(tiny, ref):
    """The batched-input ``forward`` (as the official ``Sam.predict``) on the robust path."""
    rec = {"image": ref["image"], "original_size": (256, 256), "boxes": ref["box"]}
    with torch.no_grad():
        out = tiny([rec], multimask_output=True, official_multimask=True)[0]
    assert_logits(out["low_res_logits"], ref["robust_box_multi_low_res_logits"], "forward")
    assert_close_rel(out["robust_token"], ref["robust_box_multi_robust_token"], what="forward token")


@pytest.mark.parametrize("variant", ["vit_b", "vit_l", "vit_h"])
def test_official_variant_keys_and_shapes(variant, robustsam_reference_dir):
    manifest = json.loads((robustsam_reference_dir / f"official_keys_{variant}.json").read_text())
    with torch.device("meta"):
        model = build_robustsam_model(variant)
    ours = {k: list(v.shape) for k, v in model.state_dict().items()}
    assert sorted(set(ours) - set(manifest)) == [] and sorted(set(manifest) - set(ours)) == []
    assert {k: v for k, v in ours.items() if manifest[k] != v} == {}
    assert model.image_size == 1024


OTHER = dict(img_size=128, patch=8, enc_dim=48, enc_depth=3, enc_heads=3, global_attn=[0, 2], window=4,
             prompt_dim=64, dec_depth=1, dec_mlp=96, dec_heads=4, iou_hidden=32, mask_in_chans=8)


@pytest.fixture(scope="module")
def other_model(randomize_weights):
    model = build_robustsam_model(OTHER)
    randomize_weights(model, 3)
    return model


def test_other_tiny_shape(other_model):
    m = other_model
    img = torch.rand(2, 3, 128, 128) * 255
    with torch.no_grad():
        emb, early = m.encode(m.preprocess(img))
        assert emb.shape == (2, 64, 16, 16) and early.shape == (2, 16, 16, 48)
        feats = m.robust_image_features(emb, early)
        assert feats.shape == (2, 8, 64, 64)
        # the tap is the first global block (index 0) of this config
        assert m.image_encoder.tap_index == 0
        out = m.decode(emb[:1], early[:1], point_coords=torch.tensor([[[10.0, 20.0]], [[90.0, 40.0]]]),
                       point_labels=torch.ones(2, 1, dtype=torch.int))
    assert out.logits.shape == (2, 16, 32 * 2, 32 * 2) and out.iou_predictions.shape == (2, 4)
    assert out.tokens.shape == (2, 4, 64) and out.robust_embeddings.shape == (2, 8, 64, 64)
    low, iou = out.select(True)
    assert low.shape == (2, 3, 64, 64) and iou.shape == (2, 3)
    assert torch.equal(low, out.logits[:, 1:4])


def test_other_shape_early_feature_is_first_global_block(other_model):
    """An independent route to the early feature: run the stock blocks one by one."""
    m = other_model
    x = m.preprocess(torch.rand(1, 3, 128, 128) * 255)
    with torch.no_grad():
        _, early = m.encode(x)
        h = m.image_encoder.patch_embed(x) + m.image_encoder.pos_embed
        h = m.image_encoder.blocks[0](h)
    assert torch.equal(early, h)


def test_bn_modes_differ_and_batch_mode_is_per_image_train_bn(other_model):
    m = copy.deepcopy(other_model)
    conv = next(mod for mod in m.modules() if isinstance(mod, SelectiveConv))
    x = torch.randn(3, conv.conv1.in_channels, 8, 8) * 2 + 1
    m.set_bn_mode("batch")
    assert conv.bn_mode == "batch" and m.bn_mode == "batch"
    before = conv.BN.running_mean.clone()
    with torch.no_grad():
        got = conv._batch_norm(x)
    assert torch.equal(conv.BN.running_mean, before)  # eval: statistics untouched
    for i in range(3):  # the official demo: BatchNorm in train mode on one image
        bn = copy.deepcopy(conv.BN).train()
        torch.testing.assert_close(got[i : i + 1], bn(x[i : i + 1]), rtol=1e-5, atol=1e-5)
    conv.train()
    conv._batch_norm(x)
    assert not torch.equal(conv.BN.running_mean, before)  # training updates the running statistics
    m.set_bn_mode("running")
    with torch.no_grad():
        run = conv._batch_norm(x)
    torch.testing.assert_close(run, F.batch_norm(x, conv.BN.running_mean, conv.BN.running_var, conv.BN.weight,
                                                 conv.BN.bias, False, 0.0, conv.BN.eps))
    with pytest.raises(ValueError, match="bn_mode"):
        m.set_bn_mode("train")
    with pytest.raises(ValueError, match="bn_mode"):
        check_bn_mode("eval")


def test_bn_batch_mode_changes_outputs(tiny, ref):
    m = copy.deepcopy(tiny)
    m.set_bn_mode("batch")
    p = RobustSamPredictor(m)
    p.set_image(ref["image"].permute(1, 2, 0).numpy().astype(np.uint8))
    out = p.decode(boxes=ref["box"])
    assert float((out.robust_embeddings - ref["robust_box_single_robust_embeddings"]).abs().max()) > 1e-3


def test_fgm_block_matches_official_formula():
    torch.manual_seed(0)
    block = FGMBlock(3)
    x = torch.randn(2, 6, 8, 8)
    x[1, 0] = 0.0  # an all-zero channel: |Z| = 0 everywhere there
    z = torch.fft.fft2(x, dim=(-2, -1))
    amp = block.conv_layer(z.abs())
    phase = torch.angle(z)
    expected = torch.real(torch.fft.ifft2(torch.complex(amp * torch.cos(phase), amp * torch.sin(phase)), dim=(-2, -1)))
    with torch.no_grad():
        torch.testing.assert_close(block(x), expected, rtol=1e-5, atol=1e-5)
    x.requires_grad_(True)
    block(x).sum().backward()
    assert torch.isfinite(x.grad).all()


def test_token_block_batched_equals_official_one_at_a_time():
    torch.manual_seed(0)
    block = TokenBlock(input_dim=4, mlp_dim=16)
    tokens = torch.randn(5, 64) * 3 + 1
    with torch.no_grad():
        batched = block(tokens)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # InstanceNorm1d's num_features warning on 2-D input
            for i in range(5):
                t = block.IN_layer_II(block.IN_layer_I(tokens[i : i + 1]))
                torch.testing.assert_close(batched[i], block.mlp(t.view(4, -1)), rtol=1e-5, atol=1e-6)


def test_config_errors():
    with pytest.raises(ValueError, match="did you mean 'enc_dim'"):
        resolve_config({**OTHER, "enc_dims": 3})
    with pytest.raises(ValueError, match="missing keys"):
        resolve_config({k: v for k, v in OTHER.items() if k != "window"})
    with pytest.raises(ValueError, match="not a multiple"):
        resolve_config({**OTHER, "img_size": 100})
    with pytest.raises(ValueError, match="global_attn"):
        resolve_config({**OTHER, "global_attn": [7]})
    with pytest.raises(ValueError, match="divisible"):
        resolve_config({**OTHER, "enc_heads": 5})
    with pytest.raises(ValueError, match="did you mean 'vit_b'"):
        resolve_config("vit_bb")
    with pytest.raises(TypeError):
        resolve_config(3)
    cfg = resolve_config(OTHER)
    assert isinstance(cfg, RobustSamConfig) and resolve_config(cfg) is cfg
    assert RobustSamConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="path"):
        build_robustsam_model(OTHER).mask_decoder.robust_image_features(torch.zeros(1), torch.zeros(1), "clear")


@pytest.mark.parametrize("path", ["robust", "sam"])
def test_gradients_reach_exactly_the_modules_of_the_path(other_model, path):
    """Every decoder parameter used on ``path`` gets a finite gradient; the other path's own ones get none."""
    m = copy.deepcopy(other_model).train()
    m.set_bn_mode("batch")
    img = torch.rand(1, 3, 128, 128) * 255
    with torch.no_grad():
        emb, early = m.encode(m.preprocess(img))
    out = m.decode(emb, early, point_coords=torch.tensor([[[30.0, 40.0]], [[100.0, 20.0]]]),
                   point_labels=torch.ones(2, 1, dtype=torch.int), path=path)
    (out.logits.square().mean() + out.iou_predictions.sum() + out.robust_embeddings.mean()).backward()
    unused = ("mask_tokens", "output_hypernetworks_mlps") if path == "robust" else (
        "custom_robust_token", "robust_mlp", "custom_token_block", "dnc_block_combined", "fgm_block", "conv_layer")
    for name, p in m.mask_decoder.named_parameters():
        if any(u in name.split(".") for u in unused):
            assert p.grad is None, name
        else:
            assert p.grad is not None and torch.isfinite(p.grad).all(), name


def test_fast_encoder_option_matches_reference(ref, robustsam_reference_dir):
    d = robustsam_reference_dir
    model = build_robustsam(json.loads((d / "tiny_config.json").read_text()), d / "tiny_robustsam_state_dict.pth",
                            fast=True)
    assert fast_encoder.is_accelerated(model.image_encoder)
    with torch.no_grad():
        emb, early = model.encode(model.preprocess(ref["image"][None]))
    assert_close_rel(emb, ref["image_embeddings"], what="fast image_embeddings")
    assert_close_rel(early, ref["early_features"], what="fast early_features")


@pytest.mark.parametrize("bn_mode", ["running", "batch"])
@pytest.mark.parametrize("path", ["robust", "sam"])
def test_prompt_batch_does_not_change_results(other_model, bn_mode, path):
    """The decoder runs `prompt_batch` prompt sets at a time; only speed may depend on it."""
    m = copy.deepcopy(other_model)
    m.set_bn_mode(bn_mode)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        emb, early = m.encode(m.preprocess(torch.rand(1, 3, 128, 128, generator=g) * 255))
        coords = torch.rand(5, 2, 2, generator=g) * 128
        labels = torch.tensor([[1, 0]] * 5, dtype=torch.int)
        outs = []
        for prompt_batch in (None, 2, 1):  # None: the default grouping (all 5 at once here)
            m.mask_decoder.prompt_batch = prompt_batch
            outs.append(m.decode(emb, early, point_coords=coords, point_labels=labels, path=path))
    for out in outs[1:]:
        torch.testing.assert_close(out.logits, outs[0].logits, rtol=1e-5, atol=1e-5)
        # batched and one-at-a-time decoding round differently (up to 1.3e-5 seen on these inputs)
        torch.testing.assert_close(out.robust_embeddings, outs[0].robust_embeddings, rtol=1e-5, atol=3e-5)
        torch.testing.assert_close(out.iou_predictions, outs[0].iou_predictions, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(out.tokens, outs[0].tokens, rtol=1e-5, atol=1e-6)
    # the prompts' logits differ by more than the tolerance, so a mix-up of chunks would show
    assert not torch.allclose(outs[0].logits[0], outs[0].logits[1], rtol=1e-5, atol=1e-5)


def test_default_prompt_batch_by_device(other_model):
    # vit_b's robust mask feature per prompt: 32 x 256 x 256 floats. The CPU runs one prompt at a time
    # (cache), a GPU 64 (on an H200 1.7 ms per prompt against 4.7 ms one at a time)
    dec = other_model.mask_decoder
    assert dec.default_prompt_batch(torch.empty(1, 32, 256, 256)) == 1
    assert dec.default_prompt_batch(torch.empty(1, 32, 256, 256, device="meta")) == 64
    assert dec.default_prompt_batch(torch.empty(1, 4, 32, 32)) == 512
