"""The fast encoder path equals segment_anything's stock ImageEncoderViT (tiny configs, random weights)."""

from __future__ import annotations

import json
from functools import partial

import pytest
import torch

from robustsam_prior.fast_encoder import (
    accelerate,
    fast_block_forward,
    global_attention,
    is_accelerated,
    stock,
    windowed_attention,
)


def _encoder(
    *,
    img_size: int = 64,
    patch_size: int = 8,
    embed_dim: int = 32,
    depth: int = 2,
    num_heads: int = 2,
    global_attn_indexes: tuple[int, ...] = (1,),
    window_size: int = 4,
    use_rel_pos: bool = True,
    qkv_bias: bool = True,
    seed: int = 0,
):
    """A stock encoder with random weights; rel-pos and abs-pos tables made non-zero (they init to 0)."""
    from segment_anything.modeling import ImageEncoderViT

    torch.manual_seed(seed)
    enc = ImageEncoderViT(
        img_size=img_size,
        patch_size=patch_size,
        embed_dim=embed_dim,
        depth=depth,
        num_heads=num_heads,
        mlp_ratio=4.0,
        out_chans=16,
        qkv_bias=qkv_bias,
        norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
        use_rel_pos=use_rel_pos,
        global_attn_indexes=global_attn_indexes,
        window_size=window_size,
    ).eval()
    with torch.no_grad():
        for name, p in enc.named_parameters():
            if "rel_pos" in name or name == "pos_embed":
                p.normal_(0.0, 0.5)
            elif name.endswith(".bias"):
                p.normal_(0.0, 0.2)  # non-zero qkv bias: padded tokens carry it
    return enc


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    """Max abs difference relative to the reference's max abs value."""
    return ((a - b).abs().max() / b.abs().max()).item()


def _run_both(enc, x, tap: int | None = None, **accel_kwargs):
    """(stock embedding, fast embedding, stock tap, fast tap): tap = output of blocks[tap] via a hook."""
    feats: list[torch.Tensor] = []
    handle = enc.blocks[tap].register_forward_hook(lambda m, i, o: feats.append(o)) if tap is not None else None
    with torch.no_grad():
        stock(enc)
        ref = enc(x)
        accelerate(enc, **accel_kwargs)
        out = enc(x)
    if handle is not None:
        handle.remove()
    return ref, out, (feats[0] if feats else None), (feats[1] if feats else None)


@pytest.mark.parametrize(
    ("img_size", "window_size", "padded"),
    [
        (64, 4, False),  # 8x8 tokens, 2x2 windows of 4: no padding
        (64, 3, True),  # 8x8 tokens, windows of 3: padded to 9x9
        (72, 5, True),  # 9x9 tokens, windows of 5: padded to 10x10
    ],
)
def test_fast_equals_stock_windowed_and_global(img_size, window_size, padded):
    enc = _encoder(img_size=img_size, window_size=window_size, depth=3, global_attn_indexes=(1,))
    grid = img_size // 8
    assert ((grid % window_size) != 0) == padded
    x = torch.randn(2, 3, img_size, img_size)
    ref, out, ref_tap, out_tap = _run_both(enc, x, tap=1)
    assert out.shape == ref.shape == (2, 16, grid, grid)
    assert _rel(out, ref) < 1e-5
    # the early-feature tap (first global block, channels-last) through a forward hook
    assert out_tap.shape == ref_tap.shape == (2, grid, grid, 32)
    assert _rel(out_tap, ref_tap) < 1e-5


def test_each_block_kind_equals_stock():
    """Block by block (windowed padded, windowed unpadded, global), not only the end result."""
    enc = _encoder(img_size=72, window_size=4, depth=3, global_attn_indexes=(2,))
    x = torch.randn(1, 9, 9, 32)
    with torch.no_grad():
        for blk in enc.blocks:
            ref = blk(x)
            assert _rel(fast_block_forward(blk, x), ref) < 1e-5
            h = blk.norm1(x)
            if blk.window_size:
                from segment_anything.modeling.image_encoder import window_partition, window_unpartition

                win, pad_hw = window_partition(h, blk.window_size)
                ref_attn = window_unpartition(blk.attn(win), blk.window_size, pad_hw, (9, 9))
                assert _rel(windowed_attention(blk.attn, h, blk.window_size), ref_attn) < 1e-5
            else:
                assert _rel(global_attention(blk.attn, h), blk.attn(h)) < 1e-5


def test_padding_uses_qkv_bias_not_zeros():
    """The stock block projects zero padding (q/k/v = qkv bias); padding q/k/v with zeros would differ."""
    enc = _encoder(img_size=72, window_size=5, depth=1, global_attn_indexes=())
    blk = enc.blocks[0]
    h = torch.randn(1, 9, 9, 32)
    with torch.no_grad():
        from segment_anything.modeling.image_encoder import window_partition, window_unpartition

        win, pad_hw = window_partition(h, 5)
        ref = window_unpartition(blk.attn(win), 5, pad_hw, (9, 9))
        assert _rel(windowed_attention(blk.attn, h, 5), ref) < 1e-5
        blk.attn.qkv.bias.zero_()
        blk.attn.qkv.bias.add_(1.0)
        ref2 = window_unpartition(blk.attn(win), 5, pad_hw, (9, 9))
        assert _rel(ref2, ref) > 1e-3  # the bias in the padding matters ...
        assert _rel(windowed_attention(blk.attn, h, 5), ref2) < 1e-5  # ... and is reproduced


@pytest.mark.parametrize("budget", [1, 100, 5000, 10**9])
def test_bias_chunking_does_not_change_the_result(budget):
    """Chunks of one query row of one head up to the whole map: same numbers."""
    enc = _encoder(img_size=64, window_size=3, depth=2, global_attn_indexes=(1,), num_heads=4)
    x = torch.randn(2, 3, 64, 64)
    ref, out, _, _ = _run_both(enc, x, bias_budget=budget)
    assert _rel(out, ref) < 1e-5


def test_mlp_chunks_and_other_activation(monkeypatch):
    """Token chunks smaller than the grid (with a ragged last chunk), and a non-GELU activation."""
    import robustsam_prior.fast_encoder as fe

    monkeypatch.setattr(fe, "MLP_CHUNK", 7)
    enc = _encoder(img_size=72, window_size=4, depth=2, global_attn_indexes=(1,))
    x = torch.randn(2, 3, 72, 72)
    ref, out, _, _ = _run_both(enc, x)
    assert _rel(out, ref) < 1e-5
    for blk in enc.blocks:
        blk.mlp.act = torch.nn.SiLU()
    ref, out, _, _ = _run_both(enc, x)
    assert _rel(out, ref) < 1e-5


def test_without_rel_pos_or_qkv_bias():
    enc = _encoder(img_size=64, window_size=3, use_rel_pos=False, qkv_bias=False)
    x = torch.randn(1, 3, 64, 64)
    ref, out, _, _ = _run_both(enc, x)
    assert _rel(out, ref) < 1e-5


def test_other_input_size_interpolates_rel_pos_like_stock():
    """Global blocks built for a 8x8 grid run on 6x6 tokens: get_rel_pos interpolates in both paths."""
    enc = _encoder(img_size=64, window_size=4, depth=2, global_attn_indexes=(1,))
    enc.pos_embed = None  # the absolute embedding has a fixed size; drop it to allow 48x48 input
    x = torch.randn(1, 3, 48, 48)
    ref, out, _, _ = _run_both(enc, x)
    assert _rel(out, ref) < 1e-5


def test_state_dict_parameters_and_hooks_unchanged():
    enc = _encoder()
    keys = list(enc.state_dict())
    params = {n: p for n, p in enc.named_parameters()}
    assert not is_accelerated(enc)
    assert accelerate(enc) is enc
    assert is_accelerated(enc)
    accelerate(enc)  # twice is harmless
    assert list(enc.state_dict()) == keys
    assert all(p is params[n] for n, p in enc.named_parameters())
    # a stock encoder loads the accelerated one's state dict strictly and vice versa
    other = _encoder(seed=1)
    other.load_state_dict(enc.state_dict(), strict=True)
    enc.load_state_dict(other.state_dict(), strict=True)
    assert stock(enc) is enc
    assert not is_accelerated(enc)
    assert type(enc.blocks[0]).__name__ == "Block"


def test_gradients_match_stock():
    enc = _encoder(img_size=64, window_size=3, depth=2, global_attn_indexes=(1,))
    enc.train()
    x = torch.randn(1, 3, 64, 64)
    grads = []
    for fast in (False, True):
        (accelerate if fast else stock)(enc)
        enc.zero_grad()
        enc(x).square().mean().backward()
        grads.append({n: p.grad.clone() for n, p in enc.named_parameters()})
    for name, g in grads[0].items():
        assert _rel(grads[1][name], g) < 1e-4, name


def test_rejects_non_encoders():
    with pytest.raises(TypeError, match="ImageEncoderViT"):
        accelerate(torch.nn.Linear(2, 2))
    enc = _encoder()
    enc.blocks[0] = torch.nn.Identity()
    with pytest.raises(TypeError, match=r"blocks\[0\] is a Identity"):
        accelerate(enc)
    with pytest.raises(ValueError, match="bias_budget"):
        accelerate(_encoder(), bias_budget=0)


def test_tiny_robustsam_reference_config(robustsam_reference_dir):
    """The tiny RobustSAM reference shape (img 256, patch 16, dim 32, depth 2, heads 2, global [1], window 4)."""
    cfg = json.loads((robustsam_reference_dir / "tiny_config.json").read_text())
    enc = _encoder(
        img_size=cfg["img_size"],
        patch_size=cfg["patch"],
        embed_dim=cfg["enc_dim"],
        depth=cfg["enc_depth"],
        num_heads=cfg["enc_heads"],
        global_attn_indexes=tuple(cfg["global_attn"]),
        window_size=cfg["window"],
    )
    x = torch.randn(1, 3, cfg["img_size"], cfg["img_size"])
    ref, out, ref_tap, out_tap = _run_both(enc, x, tap=cfg["global_attn"][0])
    assert _rel(out, ref) < 1e-5
    assert _rel(out_tap, ref_tap) < 1e-5


def test_cpu_autocast_bf16_matches_stock_under_autocast():
    # the in-place no-grad path uses out= ops that autocast does not cast; under autocast the fast
    # blocks must take the whole-tensor path (this failed on a GPU with "Expected out tensor to have
    # dtype float, but got BFloat16", and the CPU's autocast reaches the same code)
    enc = _encoder(img_size=128, window_size=5, depth=3, global_attn_indexes=(1,), embed_dim=64, num_heads=4)
    x = torch.randn(1, 3, 128, 128, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = enc(x)  # fp32, stock
    with torch.autocast("cpu", dtype=torch.bfloat16):
        bf_stock, bf_fast, _, _ = _run_both(enc, x)
    assert bf_fast.dtype == bf_stock.dtype
    assert _rel(bf_fast.float(), ref) < 5e-2 and _rel(bf_stock.float(), ref) < 5e-2
    assert _rel(bf_fast.float(), bf_stock.float()) < 5e-2


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_gpu_autocast(dtype):
    enc = _encoder(img_size=128, window_size=5, depth=3, global_attn_indexes=(1,), embed_dim=64, num_heads=4)
    x = torch.randn(2, 3, 128, 128)
    # fp32 means fp32: with cuDNN's default TF32 convolutions the embedding was 3.9e-4 off on an H200
    tf32 = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        with torch.no_grad():
            ref = enc(x)  # fp32 on CPU, stock
            enc = accelerate(enc.cuda())
            with torch.autocast("cuda", dtype=dtype, enabled=dtype != torch.float32):
                out = enc(x.cuda()).float().cpu()
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32
    assert _rel(out, ref) < (1e-4 if dtype == torch.float32 else 5e-2)
