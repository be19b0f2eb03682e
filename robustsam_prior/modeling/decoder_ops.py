"""Faster equivalents of the mask decoder's per-prompt steps, on the same parameters.

Each function computes what a stock module computes (same weights, same result within float rounding)
with fewer passes over the ``(N, C, 4h, 4w)`` tensors, which on a CPU cost more than their FLOPs:

- :func:`two_way_transformer`: SAM's ``TwoWayTransformer`` flattens the image as
  ``x.flatten(2).permute(0, 2, 1)``, a strided view of an NCHW tensor whose every add and layer norm
  walks memory with a stride of ``h*w`` floats; here the tokens are copied once to contiguous memory
  (:func:`image_tokens`). The first block's projections of the image tokens do not depend on the
  prompts (:func:`first_layer_image_projections`): with no mask prompt they are computed once for
  all prompt sets of an image. In the image's attention to the few prompt tokens the output projection
  is applied to the projected values rather than to the attention output (:func:`_attend_few_keys`),
  which is less work (vit_b: 0.32 of 12.9 GFLOP per prompt fewer) and adds the residual in the same
  product.
- :func:`upscale_tokens`: SAM's ``output_upscaling`` (two ``ConvTranspose2d`` with kernel = stride = 2,
  a ``LayerNorm2d`` and GELUs) as two matrix products on the transformer's ``(N, h*w, D)`` image tokens:
  with kernel = stride and no padding every input pixel writes its own 2x2 output block, so the
  transposed convolution is ``tokens @ W.reshape(C_in, C_out*4)`` followed by a pixel shuffle. The
  channel layer norm then runs over the contiguous last axis.
- :func:`layer_norm_2d`: SAM's ``LayerNorm2d`` on channels-last memory as one ``F.layer_norm`` over
  the contiguous channels, where SAM's formula (five element-wise passes) would walk strided memory.

The robust decoder's per-prompt AMFG (convolutions, instance norms, the FFT) runs fastest on contiguous
NCHW tensors, so :func:`upscale_tokens` returns one.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from segment_anything.modeling.common import LayerNorm2d
from torch import nn


def image_tokens(x: torch.Tensor) -> torch.Tensor:
    """``x`` (B, C, h, w) -> contiguous ``(B, h*w, C)`` tokens, row-major pixels (SAM's
    ``x.flatten(2).permute(0, 2, 1)``, copied once so that every later pass reads contiguous memory)."""
    b, c, h, w = x.shape
    return x.permute(0, 2, 3, 1).reshape(b, h * w, c)


def layer_norm_2d(x: torch.Tensor, norm: LayerNorm2d) -> torch.Tensor:
    """``norm(x)`` for ``x`` (N, C, H, W): layer norm over C at every pixel, in ``x``'s memory format.

    On channels-last memory the channels of a pixel are contiguous and ``F.layer_norm`` normalises
    them in one pass; on NCHW memory SAM's own formula is faster than copying to channels-last."""
    if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        y = F.layer_norm(x.permute(0, 2, 3, 1), (x.shape[1],), norm.weight, norm.bias, norm.eps)
        return y.permute(0, 3, 1, 2)
    return LayerNorm2d.forward(norm, x)


def to_channels_last(x: torch.Tensor) -> torch.Tensor:
    """``x.contiguous(memory_format=torch.channels_last)`` for ``x`` (N, C, H, W), the same values.

    From contiguous NCHW memory each image is copied as the transpose of a ``(C, H*W)`` matrix, which
    PyTorch's CPU copy does in cache-sized tiles; the 4-D permuted copy walks one of the two sides with
    a stride of ``H*W`` floats (vit_b's mask feature, 32 x 256 x 256 fp32, 1 thread: 4.1 -> 2.5 ms)."""
    if x.dim() != 4 or x.device.type != "cpu" or not x.is_contiguous() or x.is_contiguous(memory_format=torch.channels_last):
        return x.contiguous(memory_format=torch.channels_last)
    n, c, h, w = x.shape
    out = torch.empty(n, h, w, c, dtype=x.dtype, device=x.device)
    for i in range(n):
        out[i].view(h * w, c).copy_(x[i].view(c, h * w).t())
    return out.permute(0, 3, 1, 2)


# an element type twice as wide, to move two adjacent values as one (bit-exact: a copy reinterprets bits)
_PAIR_DTYPES = {torch.float32: torch.int64, torch.float16: torch.int32, torch.bfloat16: torch.int32}


def _transposed_conv_2x2(
    x: torch.Tensor, conv: nn.ConvTranspose2d, h: int, w: int, *, channels_last: bool = True
) -> torch.Tensor:
    """``conv`` (kernel 2, stride 2) on tokens ``x`` (N, h*w, C_in) -> ``(N, 2h, 2w, C_out)`` contiguous,
    or with ``channels_last=False`` a contiguous ``(N, C_out, 2h, 2w)``."""
    n, _, c_in = x.shape
    c_out = conv.out_channels
    weight = conv.weight.reshape(c_in, c_out * 4)  # columns ordered (c_out, ky, kx)
    bias = conv.bias.repeat_interleave(4) if conv.bias is not None else None
    flat = x.reshape(n * h * w, c_in)
    y = flat @ weight if bias is None else torch.addmm(bias, flat, weight)
    # output pixel (2y + ky, 2x + kx) of channel c_out comes from column (c_out, ky, kx) of token (y, x)
    if channels_last:
        return y.view(n, h, w, c_out, 2, 2).permute(0, 1, 4, 2, 5, 3).reshape(n, 2 * h, 2 * w, c_out)
    pair = None if y.requires_grad else _PAIR_DTYPES.get(y.dtype)  # a dtype view has no gradient
    if pair is None:
        return y.view(n, h, w, c_out, 2, 2).permute(0, 3, 1, 4, 2, 5).reshape(n, c_out, 2 * h, 2 * w)
    # the two kx values of an output row are adjacent in both layouts: moved as one element of twice the
    # size, the copy's inner loop runs over x instead of over pairs (vit_b, 32 x 256 x 256 fp32, 1 thread:
    # 3.8 -> 2.0 ms); a bit-exact copy
    pairs = y.view(pair).view(n, h, w, c_out, 2)
    return pairs.permute(0, 3, 1, 4, 2).contiguous().view(y.dtype).view(n, c_out, 2 * h, 2 * w)


def mask_logits(hyper: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
    """``hyper`` (N, M, C) @ ``features`` (N, C, H, W) -> contiguous ``(N, M, H, W)``, reading channels-last
    features as they lie (M is smaller than C, so copying the product costs less than the features)."""
    n, c, h, w = features.shape
    if features.is_contiguous() or not features.is_contiguous(memory_format=torch.channels_last):
        return (hyper @ features.reshape(n, c, h * w)).view(n, -1, h, w)
    pixels = features.permute(0, 2, 3, 1).reshape(n, h * w, c)  # a view of channels-last memory
    return (pixels @ hyper.transpose(1, 2)).transpose(1, 2).reshape(n, -1, h, w)


def upscaling_matches(seq: nn.Module) -> bool:
    """True when ``seq`` is SAM's ``output_upscaling`` layout, which :func:`upscale_tokens` computes."""
    if not isinstance(seq, nn.Sequential) or len(seq) != 5:
        return False
    ct1, norm, act1, ct2, act2 = seq
    convs_ok = all(
        isinstance(c, nn.ConvTranspose2d)
        and c.kernel_size == (2, 2)
        and c.stride == (2, 2)
        and c.padding == (0, 0)
        and c.output_padding == (0, 0)
        and c.dilation == (1, 1)
        and c.groups == 1
        for c in (ct1, ct2)
    )
    acts_ok = all(isinstance(a, nn.GELU) for a in (act1, act2))
    return convs_ok and acts_ok and type(norm) is LayerNorm2d


def upscale_tokens(seq: nn.Sequential, tokens: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """``seq(tokens.transpose(1, 2).reshape(N, C, h, w))`` for SAM's ``output_upscaling`` ``seq``
    (check with :func:`upscaling_matches`). ``tokens`` (N, h*w, C) -> contiguous (N, C/8, 4h, 4w)."""
    ct1, norm, act1, ct2, act2 = seq
    y = _transposed_conv_2x2(tokens, ct1, h, w)
    y = act1(F.layer_norm(y, (y.shape[-1],), norm.weight, norm.bias, norm.eps))
    y = _transposed_conv_2x2(y.reshape(y.shape[0], 4 * h * w, -1), ct2, 2 * h, 2 * w, channels_last=False)
    return act2(y)


# --------------------------------------------------------------------------------------------------
# SAM's two-way transformer on flattened image tokens
# --------------------------------------------------------------------------------------------------


def transformer_matches(transformer: nn.Module) -> bool:
    """True when ``transformer`` is SAM's ``TwoWayTransformer`` built from its own blocks and attention,
    which :func:`two_way_transformer` computes."""
    from segment_anything.modeling.transformer import Attention, TwoWayAttentionBlock, TwoWayTransformer

    if type(transformer) is not TwoWayTransformer:
        return False
    attentions = [transformer.final_attn_token_to_image]
    for layer in transformer.layers:
        if type(layer) is not TwoWayAttentionBlock:
            return False
        attentions += [layer.self_attn, layer.cross_attn_token_to_image, layer.cross_attn_image_to_token]
    return all(type(a) is Attention for a in attentions)


def _heads(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    b, n, c = x.shape
    return x.view(b, n, num_heads, c // num_heads).transpose(1, 2)


def _attend(attention: nn.Module, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """SAM's ``Attention`` on already projected ``q`` (B, Nq, Ci), ``k``, ``v`` (B or 1, Nk, Ci):
    softmax(q k^T / sqrt(Ci / heads)) v per head, then the output projection."""
    b, nq, ci = q.shape
    k = k.expand(b, -1, -1)
    v = v.expand(b, -1, -1)
    h = attention.num_heads
    out = F.scaled_dot_product_attention(_heads(q, h), _heads(k, h), _heads(v, h))
    return attention.out_proj(out.transpose(1, 2).reshape(b, nq, ci))


def _attend_few_keys(
    attention: nn.Module, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, residual: torch.Tensor
) -> torch.Tensor:
    """``residual + attention(q, k, v)`` for many queries (the image tokens) and few keys (the prompt
    tokens); ``q`` (B, Nq, Ci), ``k``/``v`` (B, Nk, Ci), ``residual`` (1 or B, Nq, D).

    The scores are laid out (B, heads, keys, queries), so the softmax runs over the short axis across
    long contiguous rows; a softmax over rows of a handful of keys, or the flash-attention kernel's
    blocking, costs several times more on a CPU for this shape.

    With fewer keys than dims per head, the output projection is applied to the values instead of the
    attention output: ``out_proj(concat_h P_h^T V_h) = sum_h P_h^T (V_h W_h^T) + b`` with ``W_h`` the
    projection's columns of head h, i.e. one product of the (Nq, heads*Nk) probabilities with the
    (heads*Nk, D) projected values, which also adds the residual. Each probability column of a head sums
    to 1 over the keys, so the bias rides on head 0's projected values. This is less work, not the same
    work moved: for SAM's 8 heads of 16 dims and 7 tokens, 2*Nq*56*D multiply-adds instead of
    2*Nq*(7*128 + 128*D) (4096 image tokens, D = 256: 0.12 instead of 0.28 GFLOP per call), and neither
    the (B, Nq, Ci) attention output nor the residual sum is written separately."""
    b, nq, ci = q.shape
    h = attention.num_heads
    nk = k.shape[1]
    d = ci // h
    kh, vh = _heads(k, h), _heads(v, h)
    scores = torch.matmul(kh * (d**-0.5), _heads(q, h).transpose(-1, -2))  # (B, heads, Nk, Nq)
    probs = scores.softmax(dim=-2)
    proj = attention.out_proj
    if nk >= d:
        out = torch.matmul(probs.transpose(-1, -2), vh)
        return residual + proj(out.transpose(1, 2).reshape(b, nq, ci))
    dim = proj.weight.shape[0]
    head_weights = proj.weight.view(dim, h, d).permute(1, 2, 0)  # (heads, d, D)
    values = torch.matmul(vh, head_weights)  # (B, heads, Nk, D)
    if proj.bias is not None:
        values[:, 0] += proj.bias
    rows = probs.reshape(b, h * nk, nq).transpose(1, 2)  # (B, Nq, heads*Nk)
    return torch.baddbmm(residual.expand(b, -1, -1), rows, values.reshape(b, h * nk, dim))


def first_layer_image_projections(
    transformer: nn.Module, keys: torch.Tensor, key_pe: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The first block's projections of the image tokens, which no prompt changes: for the tokens'
    attention to the image ``k_proj(keys + pe)`` and ``v_proj(keys)``, and for the image's attention to
    the tokens ``q_proj(keys + pe)``; each (B, h*w, Ci). ``keys``/``key_pe`` (B or 1, h*w, D)."""
    layer = transformer.layers[0]
    k = keys + key_pe
    t2i, i2t = layer.cross_attn_token_to_image, layer.cross_attn_image_to_token
    return t2i.k_proj(k), t2i.v_proj(keys), i2t.q_proj(k)


def two_way_transformer(
    transformer: nn.Module,
    keys: torch.Tensor,
    key_pe: torch.Tensor,
    point_embedding: torch.Tensor,
    first: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``TwoWayTransformer.forward`` (check with :func:`transformer_matches`) on flattened tokens.

    ``keys`` (1 or B, h*w, D) the image tokens (prompt embedding added), ``key_pe`` (1 or B, h*w, D),
    ``point_embedding`` (B, P, D); ``first``: :func:`first_layer_image_projections` of the same
    ``keys``/``key_pe`` (computed here when ``None``). Returns ``(queries (B, P, D), keys (B, h*w, D))``.
    Image tokens of batch 1 are shared by all B prompt sets until the first block updates them.
    Besides working on contiguous tokens, it adds ``keys + key_pe`` once per block (SAM adds it twice),
    runs the tokens' attention to the image through ``F.scaled_dot_product_attention`` and the image's
    attention to the tokens through :func:`_attend_few_keys`.
    """
    queries = point_embedding
    for i, layer in enumerate(transformer.layers):
        sa = layer.self_attn
        if layer.skip_first_layer_pe:
            queries = _attend(sa, sa.q_proj(queries), sa.k_proj(queries), sa.v_proj(queries))
        else:
            q = queries + point_embedding
            queries = queries + _attend(sa, sa.q_proj(q), sa.k_proj(q), sa.v_proj(queries))
        queries = layer.norm1(queries)

        t2i, i2t = layer.cross_attn_token_to_image, layer.cross_attn_image_to_token
        if i == 0:
            k_img, v_img, q_img = first if first is not None else first_layer_image_projections(transformer, keys, key_pe)
        else:
            k = keys + key_pe
            k_img, v_img, q_img = t2i.k_proj(k), t2i.v_proj(keys), i2t.q_proj(k)
        q = queries + point_embedding
        queries = layer.norm2(queries + _attend(t2i, t2i.q_proj(q), k_img, v_img))
        queries = layer.norm3(queries + layer.mlp(queries))

        q = queries + point_embedding
        b = q.shape[0]
        keys = layer.norm4(_attend_few_keys(i2t, q_img.expand(b, -1, -1), i2t.k_proj(q), i2t.v_proj(queries), keys))

    final = transformer.final_attn_token_to_image
    q = queries + point_embedding
    k = keys + key_pe
    queries = transformer.norm_final_attn(queries + _attend(final, final.q_proj(q), final.k_proj(k), final.v_proj(keys)))
    return queries, keys.expand(queries.shape[0], -1, -1)
