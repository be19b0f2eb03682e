"""A fast forward for ``segment_anything``'s ``ImageEncoderViT``: same weights, same results.

:func:`accelerate` switches every ViT block of an encoder to :class:`FastBlock` (a subclass of
``segment_anything``'s ``Block`` that only overrides ``forward``). Nothing else changes: the module
tree, the parameters (the same objects) and therefore the state-dict keys are untouched, forward
hooks on blocks still fire (the early-feature tap of RobustSAM keeps working), and checkpoints load
either way. :func:`stock` switches back, so the stock path stays available for checking.
``robustsam_prior.build_robustsam`` and ``build_robustsam_model`` apply it to every model they build
unless called with ``fast=False`` (``--stock-encoder`` on the command line).

``benchmarks/prior_speed.py`` times both paths against the machine's matmul floor and checks that their
outputs agree; README.md (Benchmarks) gives its figures.

Where the stock block spends its time, and what the fast block does instead:

- Global-attention blocks materialise ``(B*heads, 4096, 4096)`` attention maps (805 MB per block
  for vit_b), add the decomposed relative-position terms to them (MViTv2's ``rel_h[..., None] +
  rel_w[..., None, :]``), run an unfused softmax and a third full-size pass for ``attn @ v``. The
  fast block calls ``F.scaled_dot_product_attention`` (a fused, flash-style kernel on CPU and GPU)
  with the relative-position terms given as the additive attention bias, built chunk by chunk over
  query rows so the bias of a chunk stays in cache instead of 805 MB of memory traffic.
- Windowed blocks pad the 64x64 token grid to 70x70 before the qkv projection and project the
  padded tokens back with ``proj``: 20% more work in both linear layers. The fast block projects
  only the real tokens; the padded tokens' q/k/v are exactly the qkv bias (the stock block projects
  zero vectors, ``W @ 0 + b == b``), which it writes into the padding. Partition, head split and the
  q/k/v split are one copy; un-partition, head merge and crop one more.
- q, k, v are handed to the attention kernel as strided views of the qkv projection (no copies).

On GPU the same code runs under ``torch.autocast`` (bf16/fp16): SDPA picks its fused
memory-efficient kernel, which accepts an additive bias; the bias chunking is then sized for GPU
memory (see :func:`accelerate`'s ``bias_budget``).

Blocks take a whole-tensor path with nothing in place (standard modules, so autocast picks each
op's precision) with autograd enabled (gradients equal the stock ones, tested), under autocast
(``out=`` ops bypass autocast's casts: the in-place MLP failed on an H200 with "Expected out tensor
to have dtype float, but got BFloat16") and on any device but the CPU (the band-by-band loop keeps
a CPU cache warm; on a GPU it only adds kernel launches: on an H200, vit_b fp32 ran at 0.047 s with
it against the stock 0.038 s). Otherwise, on the CPU, windowed blocks run band by band and the MLP
in place.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

if TYPE_CHECKING:  # pragma: no cover
    from torch import nn

logger = logging.getLogger(__name__)

# Elements of the per-chunk attention bias: 2**22 floats (16 MiB; 16 query rows of one head for
# vit_b's global blocks). On the machine of the module docstring (vit_b, 1024x1024, medians in
# benchmarks/prior_speed.py) this was as fast as 2**20 single-threaded (12.1 vs 12.8-13.2 s CPU
# time) and clearly faster with 2 threads under load (fewer, larger parallel regions).
CPU_BIAS_BUDGET = 1 << 22
# On a GPU the bias only has to fit in memory: 2**28 floats (1 GiB in fp32).
GPU_BIAS_BUDGET = 1 << 28


def _stock_block_cls():
    from segment_anything.modeling.image_encoder import Block

    return Block


def _fast_block_cls():
    # Defined lazily so that importing this module does not import segment_anything.
    global _FAST_BLOCK
    if _FAST_BLOCK is None:
        Block = _stock_block_cls()

        class FastBlock(Block):
            """``segment_anything`` ``Block`` with a faster ``forward`` (same parameters, same output).

            Input and output ``(B, H, W, C)`` channels-last token grids.
            """

            # plain attribute (not a buffer: the state dict stays the stock one)
            bias_budget: int | None = None

            def forward(self, x: torch.Tensor) -> torch.Tensor:
                return fast_block_forward(self, x, bias_budget=self.bias_budget)

        FastBlock.__qualname__ = "FastBlock"
        FastBlock.__module__ = __name__
        _FAST_BLOCK = FastBlock
    return _FAST_BLOCK


_FAST_BLOCK = None


def __getattr__(name: str):
    if name == "FastBlock":
        return _fast_block_cls()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _blocks(encoder: nn.Module):
    blocks = getattr(encoder, "blocks", None)
    if blocks is None:
        raise TypeError(
            f"accelerate() expects a segment_anything ImageEncoderViT (with .blocks), got {type(encoder).__name__}"
        )
    Block = _stock_block_cls()
    for i, blk in enumerate(blocks):
        if not isinstance(blk, Block):
            raise TypeError(
                f"encoder.blocks[{i}] is a {type(blk).__name__}, not a segment_anything Block: "
                "the fast path only knows the stock block"
            )
    return blocks


def accelerate(encoder: nn.Module, *, bias_budget: int | None = None) -> nn.Module:
    """Switch ``encoder``'s ViT blocks to the fast forward, in place; return ``encoder``.

    ``encoder``: a ``segment_anything`` ``ImageEncoderViT`` (or a subclass, e.g. one with an
    early-feature tap). Parameters, buffers, module names and hooks are unchanged, so state dicts
    are interchangeable with the stock encoder. Calling it twice is harmless.

    ``bias_budget``: the most elements of the additive attention bias materialised at once (the
    attention is chunked over query rows to respect it). ``None``: :data:`CPU_BIAS_BUDGET` on CPU,
    :data:`GPU_BIAS_BUDGET` on CUDA, chosen per call from the input's device.
    """
    if bias_budget is not None and bias_budget < 1:
        raise ValueError(f"bias_budget must be a positive number of elements, got {bias_budget}")
    FastBlock = _fast_block_cls()
    for blk in _blocks(encoder):
        blk.__class__ = FastBlock
        blk.bias_budget = bias_budget
    return encoder


def stock(encoder: nn.Module) -> nn.Module:
    """Undo :func:`accelerate`: switch the blocks back to ``segment_anything``'s forward; return ``encoder``."""
    Block = _stock_block_cls()
    for blk in _blocks(encoder):
        if type(blk) is _FAST_BLOCK:
            blk.__class__ = Block
            blk.__dict__.pop("bias_budget", None)
    return encoder


def is_accelerated(encoder: nn.Module) -> bool:
    """True when every block of ``encoder`` runs the fast forward."""
    blocks = _blocks(encoder)
    return len(blocks) > 0 and all(type(b) is _FAST_BLOCK for b in blocks)


# ----------------------------------------------------------------------------------------------
# the fast forward (functional, on a stock Block's parameters)


def fast_block_forward(blk: nn.Module, x: torch.Tensor, *, bias_budget: int | None = None) -> torch.Tensor:
    """The forward of a ``segment_anything`` ``Block`` computed the fast way.

    ``x``: ``(B, H, W, C)`` tokens; returns ``(B, H, W, C)``, equal to ``Block.forward(x)`` up to
    float rounding.

    On the CPU without autograd or autocast, windowed blocks run band by band (one row of windows at a time: attention,
    residual and MLP), and the MLP runs in place over chunks of :data:`MLP_CHUNK` tokens with one
    reused hidden buffer: the working set stays in cache and no 36-50 MB temporaries are allocated
    (large allocations are fresh pages from the kernel: page faults on every block).
    """
    if torch.is_grad_enabled() or x.device.type != "cpu" or torch.is_autocast_enabled(x.device.type):
        h = blk.norm1(x)
        if blk.window_size > 0:
            h = windowed_attention(blk.attn, h, blk.window_size, bias_budget=bias_budget)
        else:
            h = global_attention(blk.attn, h, bias_budget=bias_budget)
        x = x + h
        return x + blk.mlp(blk.norm2(x))
    if blk.window_size == 0:
        h = global_attention(blk.attn, blk.norm1(x), bias_budget=bias_budget)
        return _add_mlp_(blk, h.add_(x))  # h is a fresh tensor (output of proj)
    ws, H = blk.window_size, x.shape[1]
    out = torch.empty_like(x, memory_format=torch.contiguous_format)
    for r0 in range(0, H, ws):  # windows never straddle bands: same windows as the whole grid
        xb = x[:, r0 : r0 + ws]
        h = windowed_attention(blk.attn, blk.norm1(xb), ws, bias_budget=bias_budget)
        out[:, r0 : r0 + ws] = _add_mlp_(blk, h.add_(xb))
    return out


# Tokens per MLP chunk (a 64x64 vit grid is 4096 tokens). 1024 was 2% faster single-threaded,
# 4096 (one reused 50 MB hidden buffer per block) faster with 2 threads under load.
MLP_CHUNK = 4096


def _add_mlp_(blk: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``x += blk.mlp(blk.norm2(x))`` in place, chunk by chunk over tokens; ``x`` contiguous ``(..., C)``."""
    from torch import nn

    mlp = blk.mlp
    flat = x.view(-1, x.shape[-1])
    n = flat.shape[0]
    lin1, lin2, act = mlp.lin1, mlp.lin2, mlp.act
    exact_gelu = isinstance(act, nn.GELU)
    hidden = flat.new_empty(min(n, MLP_CHUNK), lin1.out_features)
    for t0 in range(0, n, MLP_CHUNK):
        xc = flat[t0 : t0 + MLP_CHUNK]
        hc = hidden[: xc.shape[0]]
        if lin1.bias is not None:
            torch.addmm(lin1.bias, blk.norm2(xc), lin1.weight.t(), out=hc)
        else:
            torch.mm(blk.norm2(xc), lin1.weight.t(), out=hc)
        if exact_gelu:
            torch.ops.aten.gelu_(hc, approximate=act.approximate)
        else:
            hc = act(hc)
        xc.addmm_(hc, lin2.weight.t())  # the residual add fused into the matmul (beta=1)
        if lin2.bias is not None:
            xc.add_(lin2.bias)
    return x


def _budget(bias_budget: int | None, device: torch.device) -> int:
    if bias_budget is not None:
        return bias_budget
    return GPU_BIAS_BUDGET if device.type == "cuda" else CPU_BIAS_BUDGET


def _rel_terms(attn: nn.Module, q: torch.Tensor, hw: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Decomposed relative-position terms of MViTv2, as ``add_decomposed_rel_pos`` computes them.

    ``q``: ``(..., H*W, d)`` unscaled queries. Returns ``rel_h`` ``(..., H, W, H)`` (term of the
    key's row) and ``rel_w`` ``(..., H, W, W)`` (term of the key's column).
    """
    from segment_anything.modeling.image_encoder import get_rel_pos

    H, W = hw
    Rh = get_rel_pos(H, H, attn.rel_pos_h).to(q.dtype)  # (H, H, d), interpolated if needed
    Rw = get_rel_pos(W, W, attn.rel_pos_w).to(q.dtype)  # (W, W, d)
    r_q = q.unflatten(-2, (H, W))
    rel_h = torch.einsum("...hwc,hkc->...hwk", r_q, Rh)
    rel_w = torch.einsum("...hwc,wkc->...hwk", r_q, Rw)
    return rel_h, rel_w


def _attend(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    hw: tuple[int, int],
    attn: nn.Module,
    out: torch.Tensor,
    budget: int,
) -> None:
    """Attention with the decomposed relative-position bias, chunked over query rows.

    ``q, k, v``: ``(G, heads, H*W, d)`` (any strides); ``out``: a ``(G, heads, H*W, d)`` view that
    receives the result. The bias of a chunk, ``rel_h[..., None] + rel_w[..., None, :]``, is at most
    ``budget`` elements (at least one query row of one head).
    """
    G, nh, N, d = q.shape
    H, W = hw
    if not attn.use_rel_pos:
        out.copy_(F.scaled_dot_product_attention(q, k, v, scale=attn.scale))
        return
    rel_h, rel_w = _rel_terms(attn, q, hw)  # (G, nh, H, W, H), (G, nh, H, W, W)
    # chunk sizes: whole groups (windows) while they fit the budget, else heads, else query rows
    groups, heads, rows = 1, nh, H
    if nh * N * N <= budget:
        groups = min(G, budget // (nh * N * N))
    elif N * N <= budget:
        heads = budget // (N * N)
    else:
        heads, rows = 1, max(1, budget // (W * N))
    # One reused bias buffer: a fresh multi-MB tensor per chunk costs page faults (measured 17x slower
    # than filling a reused one on the machine of the module docstring).
    grad = torch.is_grad_enabled() and (rel_h.requires_grad or rel_w.requires_grad)
    buf = None if grad else torch.empty(groups, heads, rows, W, H, W, dtype=q.dtype, device=q.device)
    for g0 in range(0, G, groups):
        gs = slice(g0, g0 + groups)
        for h0 in range(0, nh, heads):
            hs = slice(h0, h0 + heads)
            for r0 in range(0, H, rows):
                r1 = min(H, r0 + rows)
                qs = slice(r0 * W, r1 * W)
                rh, rw = rel_h[gs, hs, r0:r1, :, :, None], rel_w[gs, hs, r0:r1, :, None, :]
                shape = (rh.shape[0], rh.shape[1], r1 - r0, W, H, W)
                if grad:  # out= does not support autograd
                    bias = rh + rw
                else:
                    bias = buf if shape == buf.shape else rh.new_empty(shape)
                    torch.add(rh, rw, out=bias)  # key index = kh*W + kw, as in the stock attention map
                out[gs, hs, qs] = F.scaled_dot_product_attention(
                    q[gs, hs, qs], k[gs, hs], v[gs, hs], attn_mask=bias.reshape(*shape[:2], -1, H * W), scale=attn.scale
                )


def global_attention(attn: nn.Module, x: torch.Tensor, *, bias_budget: int | None = None) -> torch.Tensor:
    """``segment_anything`` ``Attention.forward`` over the whole grid. ``x``: ``(B, H, W, C)`` -> same shape."""
    B, H, W, C = x.shape
    nh = attn.num_heads
    qkv = attn.qkv(x).view(B, H * W, 3, nh, C // nh)
    q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # (B, nh, N, d) strided views, no copy
    out = torch.empty(B, H * W, nh, C // nh, dtype=q.dtype, device=x.device)
    _attend(q, k, v, (H, W), attn, out.transpose(1, 2), _budget(bias_budget, x.device))
    return attn.proj(out.view(B, H, W, C))


def windowed_attention(
    attn: nn.Module, x: torch.Tensor, window: int, *, bias_budget: int | None = None
) -> torch.Tensor:
    """Window partition + ``Attention.forward`` per window + un-partition, as ``Block`` does it.

    ``x``: ``(B, H, W, C)`` (after ``norm1``) -> ``(B, H, W, C)``. The stock block zero-pads the
    grid to a multiple of ``window`` before the qkv projection; the padded tokens then carry
    q/k/v = qkv bias and take part (unmasked) in their windows' attention. Here only real tokens
    are projected and the padding is filled with the bias, which is the same thing.
    """
    B, H, W, C = x.shape
    nh, d, ws = attn.num_heads, C // attn.num_heads, window
    pad_h, pad_w = (-H) % ws, (-W) % ws
    Hp, Wp = H + pad_h, W + pad_w
    qkv = attn.qkv(x)  # (B, H, W, 3C)
    if pad_h or pad_w:
        qkv = F.pad(qkv, (0, 0, 0, pad_w, 0, pad_h))
        fill = attn.qkv.bias if attn.qkv.bias is not None else 0.0
        if pad_h:
            qkv[:, H:, :, :] = fill
        if pad_w:
            qkv[:, :H, W:, :] = fill
    nwh, nww = Hp // ws, Wp // ws
    # (B, nwh, ws, nww, ws, 3, nh, d) -> (3, B*nwh*nww, nh, ws*ws, d): partition + head split, one copy
    qkv = qkv.view(B, nwh, ws, nww, ws, 3, nh, d).permute(5, 0, 1, 3, 6, 2, 4, 7)
    q, k, v = qkv.reshape(3, B * nwh * nww, nh, ws * ws, d).unbind(0)
    out = torch.empty(B, nwh, nww, nh, ws * ws, d, dtype=q.dtype, device=x.device)
    _attend(q, k, v, (ws, ws), attn, out.view(-1, nh, ws * ws, d), _budget(bias_budget, x.device))
    # un-partition + head merge (+ crop): (B, nwh, nww, nh, ws, ws, d) -> (B, Hp, Wp, C)
    out = out.view(B, nwh, nww, nh, ws, ws, d).permute(0, 1, 4, 2, 5, 3, 6).reshape(B, Hp, Wp, C)
    if pad_h or pad_w:
        out = out[:, :H, :W]
    return attn.proj(out)
