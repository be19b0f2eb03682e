"""RobustSAM's anti-degradation blocks: AMFG (mask-feature generation) and AOTG (output tokens).

Attribute names follow the official ``robust_segment_anything/modeling/components.py`` exactly
(``dnc_block_combined``, ``SEMBlock.maxpool_conv.0``, ``selector.fc.0``, ``excitation.0/2``,
``fgm_block.conv_layer``, ``upsample_layer.0/1/3``, ``downsample_layer.0/1/3``, ``BN``, ``IN``...),
so an official state dict loads strictly.

Paper (Chen et al., CVPR 2024, Sect. 3.2) <-> module:

- AMFG = :class:`DNCBlockCombined` (IN || BN branches fused by a 4x4 spatial attention
  :class:`Selector`, concatenated with the input, then squeeze-and-excitation :class:`CABlock`) ->
  :class:`FGMBlock` (Fourier degradation suppression: a 1x1 conv on the FFT amplitude, phase kept) ->
  3x3 conv back to ``C`` channels -> an HQ-SAM style up/down projection to ``transformer_dim // 8``
  channels. On the vanilla-SAM ("clear") path only the projection runs.
- AOTG = :class:`TokenBlock` (two parameter-free instance norms over each token, then an MLP applied
  to the token cut into ``num_mask_tokens`` chunks).

BatchNorm policy (``bn_mode`` of :class:`SelectiveConv`, the only module with BatchNorm):

- ``"running"``: normalise with the stored running statistics, as ``model.eval()`` does in the
  official code (the tiny reference vectors were made so). Deterministic, per-sample.
- ``"batch"``: normalise each sample with its own spatial statistics (then BN's affine). This is what
  the official demo does by accident (``build_sam`` never calls ``eval()``, so BN runs in train mode
  on a batch of one image). Implemented per sample, so batching prompts does
  not mix their statistics; running statistics are updated only while the module is in training mode.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from segment_anything.modeling.common import LayerNorm2d
from torch import nn

from .decoder_ops import layer_norm_2d, to_channels_last

BN_MODES = ("running", "batch")


def check_bn_mode(bn_mode: str) -> str:
    if bn_mode not in BN_MODES:
        raise ValueError(f"bn_mode must be one of {BN_MODES}, got {bn_mode!r}")
    return bn_mode


class CABlock(nn.Module):
    """Squeeze-and-excitation channel attention on ``(B, C, H, W)`` (paper: SEC)."""

    def __init__(self, channels: int, reduction_ratio: int = 16) -> None:
        super().__init__()
        self.squeeze = nn.AdaptiveAvgPool2d(1)
        hidden = channels // reduction_ratio
        self.excitation = nn.Sequential(
            nn.Linear(channels, hidden), nn.ReLU(), nn.Linear(hidden, channels), nn.Sigmoid()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weights = self.excitation(self.squeeze(x).flatten(1))
        return x * weights[:, :, None, None]

    def channel_weights(self, parts: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """``(B, C)``: the weights :meth:`forward` applies to ``cat(parts, 1)``, without building the
        concatenation (the mean over each channel is the same)."""
        return self.excitation(torch.cat([p.mean(dim=(2, 3)) for p in parts], dim=1))


def _cell_means(x: torch.Tensor, g: int) -> torch.Tensor:
    """``(B, C, g, g)``: the means of contiguous ``x`` (B, C, H, W) over a g x g grid of cells (H, W % g == 0),
    as ``adaptive_avg_pool2d(x, g)``. Summed along the contiguous rows first, then across them: one
    reduction over two strided axes at once costs about 4x more (32 x 256 x 256 fp32: 0.9 -> 0.25 ms)."""
    b, c, h, w = x.shape
    sums = x.view(b, c, g, h // g, g, w // g).sum(dim=-1).sum(dim=3)
    return sums / ((h // g) * (w // g))


class Selector(nn.Module):
    """Two-branch spatial attention: ``(B, C, H, W)`` -> two ``(B, C, H, W)`` maps summing to 1.

    Pools to a 4x4 grid, squeezes ``16C -> 16C/reduction``, predicts one 4x4 attention grid per
    branch and channel, takes a softmax across the two branches and upsamples (nearest) to H x W.
    """

    grid = 4

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        pooled = channels * self.grid**2
        hidden = pooled // reduction
        self.avg_pool = nn.AdaptiveAvgPool2d((self.grid, self.grid))
        self.fc = nn.Sequential(nn.Linear(pooled, hidden, bias=False), nn.ReLU())
        self.att_conv1 = nn.Linear(hidden, pooled)
        self.att_conv2 = nn.Linear(hidden, pooled)

    def grid_weights(self, x: torch.Tensor, pooled: torch.Tensor | None = None) -> torch.Tensor:
        """``(2, B, C, 4, 4)``: the two branches' attention on the 4x4 grid (softmax across branches);
        ``pooled``: ``avg_pool(x)`` when the caller has it (``x`` is then only read for its shape)."""
        b, c = x.shape[:2]
        z = self.fc((self.avg_pool(x) if pooled is None else pooled).reshape(b, -1))
        logits = torch.stack(
            [self.att_conv1(z).view(b, c, self.grid, self.grid), self.att_conv2(z).view(b, c, self.grid, self.grid)]
        )
        return torch.softmax(logits, dim=0)

    def blend(self, out1: torch.Tensor, out2: torch.Tensor) -> torch.Tensor:
        """``out1 * att1 + out2 * att2`` with the attention maps of ``forward(out1 + out2)``; ``(B, C, H, W)``.

        Where H and W divide by 4 and the inputs are contiguous, the 4x4 grid cells are views of the
        inputs: the pooled input is ``mean(out1) + mean(out2)`` over each cell (pooling is linear, so
        the sum is never built), and since the two weights sum to 1 the result is
        ``lerp(out2, out1, att1)`` with each cell's weight broadcast over its block, in one pass and
        without building the upsampled maps."""
        b, c, h, w = out1.shape
        g = self.grid
        if h % g or w % g or not (out1.is_contiguous() and out2.is_contiguous()):
            att1, att2 = self(out1 + out2)
            return out1 * att1 + out2 * att2
        pooled = _cell_means(out1, g) + _cell_means(out2, g)
        att1 = self.grid_weights(out1, pooled)[0]
        # rows of one grid cell row: (B*C*4, H/4, 4, W/4), weight (B*C*4, 1, 4, 1)
        rows = (b * c * g, h // g, g, w // g)
        out = torch.lerp(out2.view(rows), out1.view(rows), att1.reshape(b * c * g, 1, g, 1))
        return out.view(b, c, h, w)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h, w = x.shape[-2:]
        att = self.grid_weights(x)
        # the official code upsamples by the factor (H/4, W/4); same result as size=(H, W) for H, W % 4 == 0
        scale = (h / self.grid, w / self.grid)
        return (
            F.interpolate(att[0], scale_factor=scale, mode="nearest"),
            F.interpolate(att[1], scale_factor=scale, mode="nearest"),
        )


def _instance_norm(
    x: torch.Tensor, eps: float, weight: torch.Tensor | None = None, bias: torch.Tensor | None = None
) -> torch.Tensor:
    """``F.instance_norm(x, weight=weight, bias=bias, eps=eps)`` for ``x`` (B, C, H, W).

    Without autograd on the CPU, each channel's mean is subtracted first and its biased variance is the
    mean of the squared centred values (a two-pass variance, as precise as PyTorch's), which then scale
    the centred values in place: about 3x faster than ``F.instance_norm`` there, whose statistics pass
    is slow for one sample of few channels (vit_b's mask feature, 32 x 256 x 256 fp32, 1 thread, CPU clock,
    interleaved: 4.1 -> 1.7 ms)."""
    needs_grad = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (x, weight, bias))
    if needs_grad or x.device.type != "cpu" or x.dim() != 4 or not x.is_contiguous() or x.shape[2] * x.shape[3] < 2:
        return F.instance_norm(x, weight=weight, bias=bias, eps=eps)
    b, c, h, w = x.shape
    flat = x.view(b * c, 1, h * w)
    centred = flat - flat.mean(dim=-1, keepdim=True)
    scale = centred.square().sum(dim=-1, keepdim=True).div_(h * w).add_(eps).rsqrt_()  # (B*C, 1, 1)
    if weight is not None:
        scale = scale * weight.repeat(b)[:, None, None]
    centred.mul_(scale)
    if bias is not None:
        centred.add_(bias.repeat(b)[:, None, None])
    return centred.view(b, c, h, w)


class SelectiveConv(nn.Module):
    """BN branch || IN branch, each LeakyReLU + 3x3 conv, fused by :class:`Selector` attention.

    ``(B, C, H, W) -> (B, C, H, W)``. ``bn_mode`` chooses the BatchNorm statistics (module docstring).
    """

    def __init__(self, channels: int, *, reduction: int = 16, bn_mode: str = "running") -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.selector = Selector(channels, reduction=reduction)
        self.IN = nn.InstanceNorm2d(channels)
        self.BN = nn.BatchNorm2d(channels)
        self.relu = nn.LeakyReLU(0.01)
        self.bn_mode = check_bn_mode(bn_mode)

    def _batch_norm(self, x: torch.Tensor) -> torch.Tensor:
        bn = self.BN
        if self.bn_mode == "running":
            return F.batch_norm(x, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps)
        # per-sample statistics = BatchNorm in train mode on a batch of one
        if self.training and bn.track_running_stats:
            with torch.no_grad():
                n = x.shape[2] * x.shape[3]
                mean = x.mean(dim=(2, 3)).mean(0)
                var = x.var(dim=(2, 3), unbiased=n > 1).mean(0)
                bn.running_mean.lerp_(mean, bn.momentum)
                bn.running_var.lerp_(var, bn.momentum)
                bn.num_batches_tracked.add_(1)
        return _instance_norm(x, bn.eps, bn.weight, bn.bias)

    def _instance_norm(self, x: torch.Tensor) -> torch.Tensor:
        norm = self.IN
        if norm.affine or norm.track_running_stats:  # not the official layer: as it is written
            return norm(x)
        return _instance_norm(x, norm.eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out1 = self.conv1(self.relu(self._batch_norm(x)))
        out2 = self.conv2(self.relu(self._instance_norm(x)))
        return self.selector.blend(out1, out2)


class SKDown(nn.Module):
    """Holder kept for the official key path ``SEMBlock.maxpool_conv.0`` (there is no max-pool)."""

    def __init__(self, channels: int, *, reduction: int = 16, bn_mode: str = "running") -> None:
        super().__init__()
        self.maxpool_conv = nn.Sequential(SelectiveConv(channels, reduction=reduction, bn_mode=bn_mode))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.maxpool_conv(x)


class DNCBlockCombined(nn.Module):
    """``(B, C, H, W) -> (B, 2C, H, W)``: ``SE(cat[x, SelectiveConv(x)])`` (official ``DNCBlock_combined``)."""

    def __init__(self, channels: int, *, bn_mode: str = "running") -> None:
        super().__init__()
        self.channel_attention = CABlock(2 * channels)
        self.SEMBlock = SKDown(channels, bn_mode=bn_mode)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.channel_attention(torch.cat([x, self.SEMBlock(x)], dim=1))


def _magnitude(z: torch.Tensor) -> torch.Tensor:
    """``|z|`` of a complex tensor. Without autograd as ``sqrt(re^2 + im^2)`` in two passes (``abs`` on
    complex numbers computes ``hypot``, twice as slow here); with autograd ``abs``, whose gradient at
    ``z = 0`` is 0 where the square root's is not finite."""
    if torch.is_grad_enabled():
        return z.abs()
    re, im = torch.view_as_real(z).unbind(-1)
    return torch.addcmul(re.square(), im, im).sqrt_()


# half-spectrum values per inverse FFT on the CPU when no gradient is needed (complex64: 1 MiB): the
# inverse 2-D FFT moves its spectrum twice through memory (a transposed copy for the column transform,
# another for the row transform), so a few channels at a time stay in cache. vit_b's mask-feature
# AMFG (64 channels at 256 x 256, 33024 values each), 1 thread, CPU clock, interleaved runs on a shared
# 2-core machine: all channels at once 35.7 ms per Fourier block, 2 at a time 31.3 ms, 4 at a time
# 31.2 ms, 8 at a time 31.7 ms; the values are bit-identical
INVERSE_FFT_VALUES = 2**17


def _phase_kept_inverse(z: torch.Tensor, mag: torch.Tensor, amp: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``irfft2(Z * A'/|Z|)`` (real, ``(B, C, *size)``) for the half spectrum ``z``, its magnitude ``mag``
    and the new amplitude ``amp``, with ``A'`` itself where ``|Z| = 0`` (:class:`FGMBlock`)."""
    if bool(mag.amin() == 0):  # Z = 0 there: a phasor of 1 (Z and |Z| replaced by 1) gives A' itself
        zero = mag == 0
        z = torch.where(zero, torch.ones_like(z), z)
        mag = torch.where(zero, torch.ones_like(mag), mag)
    if z.device.type != "cpu" or (torch.is_grad_enabled() and (z.requires_grad or amp.requires_grad)):
        return torch.fft.irfft2(z * (amp / mag), s=size, dim=(-2, -1))
    ratio = amp.div_(mag)  # amp is not needed afterwards
    b, c = z.shape[:2]
    out = torch.empty(b, c, *size, dtype=ratio.dtype, device=z.device)
    step = max(1, INVERSE_FFT_VALUES // z[0, 0].numel())
    for i in range(0, c, step):
        j = min(c, i + step)
        out[:, i:j] = torch.fft.irfft2(z[:, i:j] * ratio[:, i:j], s=size, dim=(-2, -1))
    return out


class FGMBlock(nn.Module):
    """Fourier degradation suppression on ``(B, 2C, H, W)``, same shape out.

    Official: ``Z = fft2(x)`` (norm "backward", i.e. unnormalised: the 1x1 conv was trained on raw
    magnitudes), ``A' = conv1x1(|Z|)``, output ``Re(ifft2(A' cos(angle Z) + i A' sin(angle Z)))``.

    Computed here as ``irfft2(Z * A'/|Z|)`` on the half spectrum (``rfft2``), plus ``A'`` itself where
    ``|Z| = 0`` (where ``angle`` is 0). The value is the same: ``|Z|`` is symmetric under k -> -k,
    so is ``A'`` (a per-frequency channel mix), hence the modified spectrum stays Hermitian and its
    inverse is real. It avoids ``angle``'s NaN gradient at ``|Z| = 0`` (the reason the official
    training zeroes NaN gradients) and halves the FFT work.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv_layer = nn.Conv2d(2 * channels, 2 * channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        # contiguous NCHW: the FFT then runs over unit-stride rows
        z = torch.fft.rfft2(x.float().contiguous(), dim=(-2, -1))
        mag = _magnitude(z)
        # the 1x1 convolution as one matrix product per image over the half spectrum
        weight = self.conv_layer.weight.reshape(c, c).float()
        amp = torch.matmul(weight, mag.reshape(b, c, -1))
        if self.conv_layer.bias is not None:
            amp = amp + self.conv_layer.bias.float()[:, None]
        return _phase_kept_inverse(z, mag, amp.view_as(mag), (h, w)).to(x.dtype)

    def forward_scaled(self, parts: tuple[torch.Tensor, ...], weights: torch.Tensor) -> torch.Tensor:
        """``forward(cat(parts, 1) * weights[:, :, None, None])`` with ``weights`` (B, 2C) > 0 (the SE
        weights of :class:`CABlock`), without building the weighted input.

        With ``Z`` the spectrum of the unweighted input and ``w`` a channel's weight, the weighted
        channel's spectrum is ``wZ``, its magnitude ``w|Z|``, so ``A' = conv1x1(w|Z|)`` is the 1x1 conv
        with ``w`` folded into its input columns applied to ``|Z|``, and ``wZ A'/(w|Z|) = Z A'/|Z|``
        (``|wZ| = 0`` exactly where ``|Z| = 0``). A zero weight breaks the last step: then the weighted
        input is built after all."""
        if bool((weights <= 0).any()):
            return self(torch.cat(parts, dim=1) * weights[:, :, None, None])
        first = parts[0]
        b, _, h, w = first.shape
        c = sum(p.shape[1] for p in parts)
        if b == 1 and not torch.is_grad_enabled():  # each part's spectrum straight into its channels
            z = torch.empty(1, c, h, w // 2 + 1, dtype=torch.complex64, device=first.device)
            start = 0
            for p in parts:
                torch.fft.rfft2(p.float().contiguous(), dim=(-2, -1), out=z[:, start : start + p.shape[1]])
                start += p.shape[1]
        else:
            z = torch.fft.rfft2(torch.cat(parts, dim=1).float(), dim=(-2, -1))
        mag = _magnitude(z)
        weight = self.conv_layer.weight.reshape(c, c).float() * weights.float()[:, None, :]  # (B, out, in)
        if self.conv_layer.bias is not None:  # the bias added by the matrix product itself
            amp = torch.baddbmm(self.conv_layer.bias.float()[:, None].expand(b, c, 1), weight, mag.reshape(b, c, -1))
        else:
            amp = torch.bmm(weight, mag.reshape(b, c, -1))
        return _phase_kept_inverse(z, mag, amp.view_as(mag), (h, w)).to(first.dtype)


class _AMFGBlock(nn.Module):
    """Shared skeleton: on the robust path DNC -> FGM -> 3x3 conv (C channels back), then the tail."""

    def __init__(self, channels: int, *, bn_mode: str = "running") -> None:
        super().__init__()
        self.dnc_block_combined = DNCBlockCombined(channels, bn_mode=bn_mode)
        self.fgm_block = FGMBlock(channels)
        self.conv_layer = nn.Conv2d(2 * channels, channels, kernel_size=3, padding=1)

    def suppress(self, x: torch.Tensor) -> torch.Tensor:
        """The degradation-suppression part, ``(B, C, H, W)`` -> same shape. The SE-weighted
        concatenation between the DNC block and the Fourier block is never built
        (:meth:`FGMBlock.forward_scaled`)."""
        dnc = self.dnc_block_combined
        parts = (x, dnc.SEMBlock(x))
        weights = dnc.channel_attention.channel_weights(parts)
        return self.conv_layer(self.fgm_block.forward_scaled(parts, weights))

    def tail(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor, clear: bool = False) -> torch.Tensor:
        """``clear=True`` is the vanilla-SAM path: only the up/down projection runs."""
        return self.tail(x if clear else self.suppress(x))


class ChannelLayerNorm2d(LayerNorm2d):
    """SAM's ``LayerNorm2d`` (same parameters); on a channels-last input one ``F.layer_norm`` pass."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return layer_norm_2d(x, self)


def _upsample_x4(in_dim: int, mid_dim: int, out_dim: int) -> nn.Sequential:
    return nn.Sequential(
        nn.ConvTranspose2d(in_dim, mid_dim, kernel_size=2, stride=2),
        ChannelLayerNorm2d(mid_dim),
        nn.GELU(),
        nn.ConvTranspose2d(mid_dim, out_dim, kernel_size=2, stride=2),
    )


class MaskFeatureBlock(_AMFGBlock):
    """AMFG on SAM's upscaled mask feature: ``(B, D/8, 4h, 4w)`` -> same shape (D = transformer dim)."""

    def __init__(self, transformer_dim: int, *, bn_mode: str = "running") -> None:
        c = transformer_dim // 8
        super().__init__(c, bn_mode=bn_mode)
        # "downsample" in the official name only; resolution is unchanged (HQ-SAM's embedding_maskfeature)
        self.downsample_layer = nn.Sequential(
            nn.Conv2d(c, 2 * c, 3, 1, 1), ChannelLayerNorm2d(2 * c), nn.GELU(), nn.Conv2d(2 * c, c, 3, 1, 1)
        )

    def tail(self, x: torch.Tensor) -> torch.Tensor:
        # channels-last: the layer norm between the two convolutions then normalises contiguous channels
        return self.downsample_layer(to_channels_last(x))


class FirstLayerFeatureBlock(_AMFGBlock):
    """AMFG on the first global-attention block's output: ``(B, Cvit, h, w)`` -> ``(B, D/8, 4h, 4w)``."""

    def __init__(self, vit_dim: int, transformer_dim: int, *, bn_mode: str = "running") -> None:
        super().__init__(vit_dim, bn_mode=bn_mode)
        self.upsample_layer = _upsample_x4(vit_dim, transformer_dim, transformer_dim // 8)

    def tail(self, x: torch.Tensor) -> torch.Tensor:
        return self.upsample_layer(x)


class LastLayerFeatureBlock(_AMFGBlock):
    """AMFG on the encoder's neck output: ``(B, D, h, w)`` -> ``(B, D/8, 4h, 4w)``."""

    def __init__(self, transformer_dim: int, *, bn_mode: str = "running") -> None:
        super().__init__(transformer_dim, bn_mode=bn_mode)
        self.upsample_layer = _upsample_x4(transformer_dim, transformer_dim, transformer_dim // 8)

    def tail(self, x: torch.Tensor) -> torch.Tensor:
        return self.upsample_layer(x)


class TokenBlock(nn.Module):
    """AOTG: ``(N, D)`` tokens -> ``(N, num_chunks, D)``.

    Each token is standardised over its D dims twice (the official ``InstanceNorm1d`` layers see a
    2-D input as unbatched ``(C=N, L=D)``: eps 1e-5, no affine), cut into ``num_chunks`` consecutive
    chunks of ``D/num_chunks`` dims, and each chunk goes through ``mlp`` back to D dims. The official
    code does ``view(num_chunks, -1)``, which only works for one token at a time (issue #18 of the official
    RobustSAM GitHub repository); this is the batched form of the same computation.
    """

    def __init__(self, input_dim: int, mlp_dim: int) -> None:
        super().__init__()
        self.input_dim = input_dim  # number of chunks (= number of mask tokens)
        self.mlp = nn.Sequential(nn.Linear(mlp_dim, mlp_dim), nn.ReLU(), nn.Linear(mlp_dim, mlp_dim * input_dim))
        self.IN_layer_I = nn.InstanceNorm1d(input_dim)
        self.IN_layer_II = nn.InstanceNorm1d(input_dim)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        n, d = tokens.shape
        x = tokens.unsqueeze(1)  # (N, 1, D): per-token statistics
        x = F.instance_norm(x, eps=self.IN_layer_I.eps)
        x = F.instance_norm(x, eps=self.IN_layer_II.eps)
        return self.mlp(x.reshape(n, self.input_dim, d // self.input_dim))


def set_bn_mode(module: nn.Module, bn_mode: str) -> None:
    """Set the BatchNorm policy of every :class:`SelectiveConv` inside ``module``."""
    check_bn_mode(bn_mode)
    for m in module.modules():
        if isinstance(m, SelectiveConv):
            m.bn_mode = bn_mode
