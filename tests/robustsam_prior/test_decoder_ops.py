"""The mask decoder's fast per-prompt path (``modeling.decoder_ops``) against the stock modules it replaces:
same outputs and gradients, the first block's image projections computed once per image, and the
fallbacks where the structure is not the one it knows."""

from __future__ import annotations

import copy

import pytest
import torch
from segment_anything.modeling.common import LayerNorm2d
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from robustsam_prior.modeling import decoder_ops
from robustsam_prior.modeling.build import build_robustsam_model
from robustsam_prior.modeling.components import ChannelLayerNorm2d, Selector

OTHER = dict(img_size=128, patch=8, enc_dim=48, enc_depth=3, enc_heads=3, global_attn=[0, 2], window=4,
             prompt_dim=64, dec_depth=2, dec_mlp=96, dec_heads=4, iou_hidden=32, mask_in_chans=8)


@pytest.fixture(scope="module")
def model(randomize_weights):
    m = build_robustsam_model(OTHER)
    randomize_weights(m, 5)
    return m.eval()


@pytest.fixture(scope="module")
def encoded(model):
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        return model.encode(model.preprocess(torch.rand(1, 3, 128, 128, generator=g) * 255))


def _prompts(n: int, seed: int = 4):
    g = torch.Generator().manual_seed(seed)
    coords = torch.rand(n, 2, 2, generator=g) * 128
    labels = torch.tensor([[1, 0]] * n, dtype=torch.int)
    boxes = torch.sort(torch.rand(n, 2, 2, generator=g) * 128, dim=1).values.reshape(n, 4)
    masks = torch.randn(n, 1, 64, 64, generator=g)
    return coords, labels, boxes, masks


def _decode(m, encoded, *, stock: bool, **prompts):
    emb, early = encoded
    m.mask_decoder.stock_ops = stock
    try:
        return m.decode(emb, early, **prompts)
    finally:
        m.mask_decoder.stock_ops = False


def _assert_same(a, b):
    scale = float(b.logits.abs().max())
    torch.testing.assert_close(a.logits, b.logits, rtol=0, atol=1e-5 * scale)
    torch.testing.assert_close(a.robust_embeddings, b.robust_embeddings, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(a.iou_predictions, b.iou_predictions, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(a.tokens, b.tokens, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("path", ["robust", "sam"])
@pytest.mark.parametrize("prompt", ["points", "box", "points+mask"])
@pytest.mark.parametrize("prompt_batch", [None, 1])
def test_fast_path_equals_stock_modules(model, encoded, path, prompt, prompt_batch):
    coords, labels, boxes, masks = _prompts(3)
    kwargs = {"points": dict(point_coords=coords, point_labels=labels), "box": dict(boxes=boxes),
              "points+mask": dict(point_coords=coords, point_labels=labels, mask_input=masks)}[prompt]
    model.mask_decoder.prompt_batch = prompt_batch
    try:
        assert model.mask_decoder.uses_decoder_ops()
        with torch.no_grad():
            fast = _decode(model, encoded, stock=False, path=path, **kwargs)
            stock = _decode(model, encoded, stock=True, path=path, **kwargs)
    finally:
        model.mask_decoder.prompt_batch = None
    _assert_same(fast, stock)
    # the prompts' logits differ by far more than the tolerance, so a mix-up between prompt sets would show
    assert float((fast.logits[0] - fast.logits[1]).abs().max()) > 100 * 1e-5 * float(stock.logits.abs().max())


def test_fast_path_gradients_equal_stock_modules(model, encoded):
    """RobustSAM training backpropagates through the decoder: same gradients on every parameter."""
    coords, labels, _, _ = _prompts(2)
    grads = []
    for stock in (False, True):
        m = copy.deepcopy(model).train()
        m.set_bn_mode("batch")
        out = _decode(m, encoded, stock=stock, point_coords=coords, point_labels=labels)
        (out.logits.square().mean() + out.iou_predictions.sum() + out.robust_embeddings.mean()).backward()
        grads.append({k: p.grad for k, p in m.mask_decoder.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys() and "transformer.layers.0.cross_attn_token_to_image.k_proj.weight" in grads[0]
    for name, g in grads[1].items():
        torch.testing.assert_close(grads[0][name], g, rtol=1e-4, atol=1e-5 * max(1.0, float(g.abs().max())), msg=name)


def _flops(fn) -> int:
    from torch.utils import flop_counter

    # FlopCounterMode has no formula for the CPU flash-attention kernel: count it like the two bmm it replaces
    op = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
    if op not in flop_counter.flop_registry:
        flop_counter.register_flop_formula(op)(
            lambda q, k, v, *args, out_shape=None, **kwargs: flop_counter.sdpa_flop_count(q, k, v))
    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        fn()
    return int(counter.get_total_flops())


def test_first_block_image_projections_run_once_per_image(model, encoded):
    """Without a mask prompt every prompt set sees the same image tokens: the first block's three
    projections of them (k and v for the tokens' attention, q for the image's) run once, not per prompt;
    everything else costs what the stock modules cost."""
    emb, early = encoded
    rif = model.robust_image_features(emb, early)
    dec = model.mask_decoder
    hw, d = emb.shape[2] * emb.shape[3], emb.shape[1]
    ci = dec.transformer.layers[0].cross_attn_token_to_image.internal_dim
    shared = 3 * 2 * hw * d * ci  # three (h*w x D) @ (D x Ci) products

    def flops(n, stock, masks=False):
        coords, labels, _, mask = _prompts(n)
        dec.stock_ops, dec.prompt_batch = stock, 1
        try:
            return _flops(lambda: model.decode(emb, None, point_coords=coords, point_labels=labels,
                                               mask_input=mask if masks else None, robust_image_features=rif))
        finally:
            dec.stock_ops, dec.prompt_batch = False, None

    assert flops(1, stock=False) == flops(1, stock=True)
    assert flops(4, stock=True) - flops(4, stock=False) == 3 * shared
    assert flops(4, stock=True, masks=True) == flops(4, stock=False, masks=True)  # mask prompts: per prompt set


def test_upscale_tokens_equals_output_upscaling_and_fallbacks(model):
    seq = model.mask_decoder.output_upscaling
    assert decoder_ops.upscaling_matches(seq)
    g = torch.Generator().manual_seed(6)
    tokens = torch.randn(2, 16 * 12, 64, generator=g)
    with torch.no_grad():
        got = decoder_ops.upscale_tokens(seq, tokens, 16, 12)
        want = seq(tokens.transpose(1, 2).reshape(2, 64, 16, 12))
    assert got.shape == (2, 8, 64, 48) and got.is_contiguous()
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)

    m = copy.deepcopy(model)
    m.mask_decoder.output_upscaling[0] = nn.ConvTranspose2d(64, 16, kernel_size=4, stride=2, padding=1)
    assert not decoder_ops.upscaling_matches(m.mask_decoder.output_upscaling)
    assert not m.mask_decoder.uses_decoder_ops()
    m2 = copy.deepcopy(model)
    m2.mask_decoder.transformer.layers[0].self_attn = nn.Identity()
    assert not decoder_ops.transformer_matches(m2.mask_decoder.transformer)
    assert not m2.mask_decoder.uses_decoder_ops()
    m3 = copy.deepcopy(model)
    m3.mask_decoder.stock_ops = True
    assert not m3.mask_decoder.uses_decoder_ops()
    # the replaced (bigger) upscaling still decodes, through the modules
    with torch.no_grad():
        emb = torch.randn(1, 64, 16, 16)
        out = m.decode(emb, torch.randn(1, 16, 16, 48), point_coords=torch.tensor([[[5.0, 9.0]]]),
                       point_labels=torch.ones(1, 1, dtype=torch.int))
    assert out.logits.shape[-2:] == (64, 64)


@pytest.mark.parametrize("size", [(16, 20), (18, 10), "channels_last"])  # divisible by the 4x4 grid, not, strided
def test_selector_blend_equals_upsampled_attention(size):
    torch.manual_seed(7)
    sel = Selector(8)
    out1, out2 = (torch.randn(2, 8, *((16, 20) if size == "channels_last" else size)) for _ in range(2))
    if size == "channels_last":
        out1 = out1.contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        att1, att2 = sel(out1 + out2)
        torch.testing.assert_close(sel.blend(out1, out2), out1 * att1 + out2 * att2, rtol=1e-6, atol=1e-6)


def test_channel_layer_norm_equals_sam_layer_norm_in_both_memory_formats():
    torch.manual_seed(8)
    sam, ours = LayerNorm2d(6), ChannelLayerNorm2d(6)
    with torch.no_grad():
        sam.weight.normal_()
        sam.bias.normal_()
    ours.load_state_dict(sam.state_dict())
    x = torch.randn(2, 6, 5, 7) * 3 + 1
    for inp in (x, x.contiguous(memory_format=torch.channels_last)):
        with torch.no_grad():
            torch.testing.assert_close(ours(inp), sam(x), rtol=1e-5, atol=1e-5)


def test_keep_embeddings_false_drops_only_the_robust_embeddings(model, encoded):
    coords, labels, _, _ = _prompts(3)
    model.mask_decoder.prompt_batch = 1
    try:
        with torch.no_grad():
            full = _decode(model, encoded, stock=False, point_coords=coords, point_labels=labels)
            lean = _decode(model, encoded, stock=False, point_coords=coords, point_labels=labels,
                           keep_embeddings=False)
    finally:
        model.mask_decoder.prompt_batch = None
    assert full.robust_embeddings is not None and lean.robust_embeddings is None
    assert torch.equal(full.logits, lean.logits) and torch.equal(full.iou_predictions, lean.iou_predictions)
    assert torch.equal(full.tokens, lean.tokens)


@pytest.mark.parametrize("case", ["one image", "batch", "zero weight", "zero channel", "autograd"])
def test_fourier_block_on_se_weighted_parts_equals_weighting_first(case):
    """The AMFG's SE weights folded into the Fourier block's 1x1 conv (the weighted input never built)
    give the Fourier block of the weighted input."""
    from robustsam_prior.modeling.components import FGMBlock

    torch.manual_seed(9)
    block = FGMBlock(3)
    b = 2 if case == "batch" else 1
    parts = (torch.randn(b, 2, 8, 12), torch.randn(b, 4, 8, 12))
    weights = torch.rand(b, 6) * 0.9 + 0.05
    if case == "zero weight":
        weights[0, 1] = 0.0
    if case == "zero channel":
        parts[1][0, 2] = 0.0  # |Z| = 0 everywhere in that channel
    expected = block(torch.cat(parts, 1) * weights[:, :, None, None])
    if case == "autograd":
        parts = tuple(p.requires_grad_(True) for p in parts)
        got = block.forward_scaled(parts, weights)
        got.sum().backward()
        assert all(torch.isfinite(p.grad).all() for p in parts)
    else:
        with torch.no_grad():
            got = block.forward_scaled(parts, weights)
    torch.testing.assert_close(got, expected.detach(), rtol=1e-5, atol=1e-5)
