"""NAFNet (Chen et al., "Simple Baselines for Image Restoration", ECCV 2022, arXiv 2204.04676).

Written from the paper's description:

- ``LayerNorm2d`` normalises each pixel over its channels (eps 1e-6, per-channel affine);
- ``SimpleGate`` splits the channels in two halves and multiplies them;
- simplified channel attention (SCA): ``x * conv1x1(global_avg_pool(x))``, no sigmoid;
- ``NAFBlock(c)``: ``y = x + beta * conv1x1(SCA(SG(dwconv3x3(conv1x1_{c->2c}(LN(x))))))`` then
  ``out = y + gamma * conv1x1(SG(conv1x1_{c->2c}(LN(y))))``; beta and gamma start at 0, so every
  block starts as the identity;
- a U-Net: ``intro`` 3x3 conv, encoder stages (blocks, then a 2x2 stride-2 conv doubling the
  channels), middle blocks, decoder stages (1x1 conv + PixelShuffle(2) halving the channels, an
  additive skip, blocks), ``ending`` 3x3 conv and a global residual ``+ input``. The input is
  zero-padded right/bottom to a multiple of ``2 ** levels`` and the output cropped back.

Output heads (``head=``): ``"residual"`` (NAFNet's: ``ending(x) + input``) or ``"scattering"``, an
inverted atmospheric scattering model for dehazing, ``J = (I - A) / t + A``: ``ending`` predicts a
full-resolution transmission ``t = t_min + (1 - t_min) sigmoid(z)`` and a 1x1 conv on the bottleneck
features an airlight ``A = sigmoid(.)`` at 1/``2 ** levels`` resolution, upsampled bilinearly (smooth,
and local, so overlapping tiles agree). The output can then only rescale the input's contrast around
a smooth airlight per pixel, not paint new colours or textures: the model that the haze follows
(AOD-Net, Li et al. ICCV 2017, and DehazeNet, Cai et al. TIP 2016, predict the same quantities).

Guided output (``guided_radius > 0``, used by the dehazers): the output is passed through a guided
filter (He et al., "Guided Image Filtering", TPAMI 2013) with the input as guide, channel by channel,
so that it becomes a local affine function of the input, ``out_c = a_c(p) in_c + b_c(p)`` with ``a``
and ``b`` smooth over about ``2 * guided_radius`` pixels: the form the scattering model gives haze
removal (``J = I / t + A (1 - 1 / t)`` with smooth ``t`` and ``A``). Structure that is not in the input,
such as the periodic traces of the strided and pixel-shuffle resampling which dehazing's contrast
gain amplifies on flat sky, cannot pass it. :func:`guided_filter` computes the coefficients on a
4x coarser grid and upsamples them bilinearly (the fast guided filter, He and Sun, arXiv 1505.00996).

Local statistics (``NAFNet.set_local_pool``; off unless set, as the packaged deblurrers do): SCA's
global average is taken over a training crop (96 px here) but over the whole image at inference. TLC
(Chu et al., "Improving Image Restoration by Revisiting Global Information Aggregation", ECCV 2022)
replaces it at test time by the mean over a window of about the training crop's size around each
pixel, so that each pixel sees the statistics it was trained with. :func:`box_mean` computes that
mean in O(1) per pixel (running sums, the window clipped at the image border); the blocks take it on
a grid of cells about 1/8 of the window wide (:data:`LOCAL_POOL_CELLS`), upsampled bilinearly, which
costs a fraction of the exact mean and changes the restored images by a few hundredths of a dB.

The backbone accepts extra input channels (a prior map concatenated to the RGB image) and an
optional per-level ``modulate`` hook applied after each encoder stage's blocks (used by the
feature-fusion variant). It knows nothing of optimisers, datasets or YAML.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

if TYPE_CHECKING:
    from robustsam_prior.prior import PriorOutput

# modulate(level, features (B,C,h,w)) -> features of the same shape
Modulate = Callable[[int, torch.Tensor], torch.Tensor]

HEADS = ("residual", "scattering")
# a local-statistics window spans about this many cells (NAFBlock._attention); 1 cell = exact box_mean
LOCAL_POOL_CELLS = 8
# lowest transmission the scattering head can predict (the library's severity-5 haze reaches ~0.05)
T_MIN = 0.03
# the scattering head starts near t = 0.9 (close to the identity, as NAFNet's residual head does)
T_INIT_LOGIT = 2.2


class LayerNorm2d(nn.Module):
    """Layer norm over the channel axis of ``(B, C, H, W)`` (equals ``F.layer_norm`` channels-last)."""

    def __init__(self, channels: int, *, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # one fused op on the channels-last view (a zero-copy permute for channels_last inputs)
        y = F.layer_norm(x.permute(0, 2, 3, 1), (x.shape[1],), self.weight, self.bias, self.eps)
        return y.permute(0, 3, 1, 2)


def _channels_last(x: torch.Tensor) -> bool:
    """True for a 4-D tensor stored channels-last (and not also plain contiguous, e.g. 1x1 maps)."""
    return x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()


class Conv1x1(nn.Conv2d):
    """A 1x1 ``nn.Conv2d`` (same parameters and state-dict keys) that runs as one matrix product
    (``F.linear`` on the zero-copy channels-last view) when its input is channels-last. PyTorch's
    CPU convolution otherwise takes a slow path for 1x1 kernels on one thread (a bias fill plus a
    copy per call); the result is the same up to float rounding."""

    def __init__(self, in_channels: int, out_channels: int, *, bias: bool = True) -> None:
        super().__init__(in_channels, out_channels, 1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 4 and _channels_last(x):
            y = F.linear(x.permute(0, 2, 3, 1), self.weight.reshape(self.out_channels, -1), self.bias)
            return y.permute(0, 3, 1, 2)
        return super().forward(x)


class SimpleGate(nn.Module):
    """``(B, 2C, H, W) -> (B, C, H, W)``: product of the two channel halves."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = x.chunk(2, dim=1)
        return a * b


def box_mean(
    x: torch.Tensor,
    window: int,
    *,
    cell: int = 1,
    pointwise: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """Mean of ``x (B, C, H, W)`` over the ``window x window`` square centred on each pixel; near the
    border, over the part of the square inside the image. ``window`` must be odd.

    ``cell > 1`` approximates it on a coarser grid: ``x`` is averaged over ``cell x cell`` cells
    (partial cells at the border over their pixels), the cells over the odd window nearest
    ``window / cell`` cells, and the result is upsampled bilinearly to ``x``'s size.
    ``pointwise`` (a per-pixel affine map, e.g. a 1x1 convolution) is applied to the means; on the
    coarse grid it goes before the upsampling, which gives the same result (bilinear weights sum to
    one) on 1/cell**2 of the pixels.

    Separable running sums (cumulative sums along H, then W) of ``x`` minus its global mean, which
    keeps the float32 sums small; cost O(1) per pixel whatever the window, but about ten passes over
    the tensor, so the blocks use cells.
    """
    if window < 1 or window % 2 == 0:
        raise ValueError(f"box_mean: window must be an odd number >= 1, got {window}")
    if cell < 1:
        raise ValueError(f"box_mean: cell must be >= 1, got {cell}")
    if cell > 1:
        cells = max(1, round(window / cell))
        coarse = box_mean(F.avg_pool2d(x, cell, ceil_mode=True), cells + 1 - cells % 2, pointwise=pointwise)
        out = F.interpolate(coarse, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return out.contiguous(memory_format=torch.channels_last) if _channels_last(x) else out
    mean = x.mean((2, 3), keepdim=True)
    y = (x - mean).contiguous()
    r = window // 2
    for dim in (2, 3):
        n = y.shape[dim]
        run = y.cumsum(dim)
        # running sums padded so that the window sum at i is padded[i + 2r + 1] - padded[i]:
        # r + 1 zeros in front (windows starting before the image), r copies of the total behind
        zero = torch.zeros_like(run.narrow(dim, 0, 1))
        total = run.narrow(dim, n - 1, 1)
        padded = torch.cat([zero.repeat_interleave(r + 1, dim), run, total.repeat_interleave(r, dim)], dim)
        idx = torch.arange(n, device=x.device)
        count = (idx + r + 1).clamp(max=n) - (idx - r).clamp(min=0)
        count = count.to(y.dtype).view([n if d == dim else 1 for d in range(4)])
        y = (padded.narrow(dim, 2 * r + 1, n) - padded.narrow(dim, 0, n)) / count
    y = y + mean
    if pointwise is not None:
        y = pointwise(y.contiguous(memory_format=torch.channels_last) if _channels_last(x) else y)
    return y


def guided_filter(guide: torch.Tensor, src: torch.Tensor, radius: int, eps: float, *, subsample: int = 4) -> torch.Tensor:
    """Guided filter of ``src`` with ``guide`` (both ``(B, C, H, W)``), channel ``c`` guided by channel ``c``:
    ``mean(a) * guide + mean(b)`` where ``a = cov(guide, src) / (var(guide) + eps)`` and
    ``b = mean(src) - a mean(guide)`` over ``(2 radius + 1)``-pixel squares (clipped at the border, as
    :func:`box_mean`). With ``subsample > 1`` the statistics and coefficients are taken on the
    ``subsample``-times average-pooled images and the coefficients upsampled bilinearly."""
    h, w = guide.shape[-2:]
    if subsample > 1:
        g, p = F.avg_pool2d(guide, subsample, ceil_mode=True), F.avg_pool2d(src, subsample, ceil_mode=True)
    else:
        g, p = guide, src
    window = 2 * max(1, round(radius / subsample)) + 1
    mean_g, mean_p = box_mean(g, window), box_mean(p, window)
    var = box_mean(g * g, window) - mean_g * mean_g
    a = (box_mean(g * p, window) - mean_g * mean_p) / (var + eps)
    b = mean_p - a * mean_g
    a, b = box_mean(a, window), box_mean(b, window)
    if subsample > 1:
        a = F.interpolate(a, size=(h, w), mode="bilinear", align_corners=False)
        b = F.interpolate(b, size=(h, w), mode="bilinear", align_corners=False)
    return a * guide + b


class NAFBlock(nn.Module):
    """One NAFNet block on ``(B, channels, H, W)``; shape-preserving.

    ``pool_window``: 0 (NAFNet's SCA over the whole feature map) or an odd window in feature pixels
    for local statistics (:func:`box_mean`; set through :meth:`NAFNet.set_local_pool`).
    """

    def __init__(self, channels: int, *, dw_expand: int = 2, ffn_expand: int = 2) -> None:
        super().__init__()
        c, dw = channels, channels * dw_expand
        self.norm1 = LayerNorm2d(c)
        self.conv1 = Conv1x1(c, dw)
        self.conv2 = nn.Conv2d(dw, dw, 3, padding=1, groups=dw)
        self.gate = SimpleGate()
        self.sca = Conv1x1(dw // 2, dw // 2)
        self.conv3 = Conv1x1(dw // 2, c)
        ffn = channels * ffn_expand
        self.norm2 = LayerNorm2d(c)
        self.conv4 = Conv1x1(c, ffn)
        self.conv5 = Conv1x1(ffn // 2, c)
        self.beta = nn.Parameter(torch.zeros(1, c, 1, 1))
        self.gamma = nn.Parameter(torch.zeros(1, c, 1, 1))
        self.pool_window = 0

    def _attention(self, y: torch.Tensor) -> torch.Tensor:
        """``sca`` of the mean of ``y``: global, or local (``pool_window``)."""
        w = self.pool_window
        if w == 0 or (w // 2 >= y.shape[2] - 1 and w // 2 >= y.shape[3] - 1):
            return self.sca(y.mean((2, 3), keepdim=True))  # a window over the whole map: the global mean
        return box_mean(y, w, cell=max(1, w // LOCAL_POOL_CELLS), pointwise=self.sca)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.gate(self.conv2(self.conv1(self.norm1(x))))
        y = y * self._attention(y)
        x = torch.addcmul(x, self.conv3(y), self.beta)  # x + beta * y in one pass
        y = self.conv5(self.gate(self.conv4(self.norm2(x))))
        return torch.addcmul(x, y, self.gamma)


class NAFNet(nn.Module):
    """NAFNet U-Net. As a restoration network (``nafnet``, the no-prior ablation) it ignores the prior.

    ``forward(image (B,3,H,W) in [0,1], prior=None) -> (B,3,H,W)``, any H, W.
    """

    needs_prior = False
    uses_features: tuple[str, ...] = ()

    def __init__(
        self,
        *,
        in_channels: int = 3,
        out_channels: int = 3,
        width: int = 16,
        enc_blocks: Sequence[int] = (1, 1, 1, 1),
        middle_blocks: int = 1,
        dec_blocks: Sequence[int] = (1, 1, 1, 1),
        head: str = "residual",
        guided_radius: int = 0,
        guided_eps: float = 1e-5,
    ) -> None:
        super().__init__()
        if guided_radius < 0 or guided_eps <= 0:
            raise ValueError(f"guided_radius must be >= 0 and guided_eps > 0, got {guided_radius}, {guided_eps}")
        if guided_radius and out_channels != 3:
            raise ValueError(f"the guided output filters RGB images: out_channels must be 3, got {out_channels}")
        self.guided_radius, self.guided_eps = guided_radius, guided_eps
        if head not in HEADS:
            raise ValueError(f"head must be one of {HEADS}, got {head!r}")
        if head == "scattering" and out_channels != 3:
            raise ValueError(f"the scattering head restores RGB images: out_channels must be 3, got {out_channels}")
        if len(enc_blocks) != len(dec_blocks):
            raise ValueError(f"enc_blocks {list(enc_blocks)} and dec_blocks {list(dec_blocks)} need the same length")
        if width < 2 or width % 2:
            raise ValueError(f"width must be an even number >= 2, got {width}")
        self.in_channels, self.out_channels, self.head = in_channels, out_channels, head
        self.intro = nn.Conv2d(in_channels, width, 3, padding=1)
        self.ending = nn.Conv2d(width, 1 if head == "scattering" else out_channels, 3, padding=1)
        self.encoders, self.downs = nn.ModuleList(), nn.ModuleList()
        self.level_channels: list[int] = []
        ch = width
        for n in enc_blocks:
            self.encoders.append(nn.Sequential(*[NAFBlock(ch) for _ in range(n)]))
            self.level_channels.append(ch)
            self.downs.append(nn.Conv2d(ch, 2 * ch, 2, stride=2))
            ch *= 2
        self.middle = nn.Sequential(*[NAFBlock(ch) for _ in range(middle_blocks)])
        if head == "scattering":
            self.airlight = nn.Conv2d(ch, 3, 1)
            nn.init.constant_(self.ending.bias, T_INIT_LOGIT)
        self.ups, self.decoders = nn.ModuleList(), nn.ModuleList()
        for n in dec_blocks:
            self.ups.append(nn.Sequential(Conv1x1(ch, 2 * ch, bias=False), nn.PixelShuffle(2)))
            ch //= 2
            self.decoders.append(nn.Sequential(*[NAFBlock(ch) for _ in range(n)]))
        self.multiple = 2 ** len(enc_blocks)

    def forward(self, image: torch.Tensor, prior: PriorOutput | None = None) -> torch.Tensor:
        return self.run(image, image)

    def set_local_pool(self, pixels: int | None) -> None:
        """SCA statistics over a ``pixels``-wide window of the input image (TLC, see the module
        docstring) instead of the whole image; ``None`` or 0 restores the global mean. A block at
        level ``l`` (1/2**l resolution) gets the odd window nearest ``pixels / 2**l``. The weights are
        unchanged; this is an inference setting (the TLC paper uses 1.5x the training crop)."""
        if pixels is not None and pixels < 0:
            raise ValueError(f"local pool window must be >= 0 pixels (0 = global), got {pixels}")
        levels = len(self.encoders)
        stages = [*enumerate(self.encoders), (levels, self.middle)]
        stages += [(levels - 1 - j, dec) for j, dec in enumerate(self.decoders)]
        for level, stage in stages:
            window = 0
            if pixels:
                window = max(1, round(pixels / 2**level))
                window += 1 - window % 2  # odd: centred on the pixel
            for block in stage:
                block.pool_window = window

    def run(self, x: torch.Tensor, residual: torch.Tensor, modulate: Modulate | None = None) -> torch.Tensor:
        """The U-Net on ``x (B, in_channels, H, W)``; returns ``body(x) + residual (B, out, H, W)``
        (residual head) or ``(residual - A) / t + A`` (scattering head; ``residual`` is the image).

        ``modulate(level, feats)`` (if given) transforms the encoder features of each level
        (``level_channels[level]`` channels at 1/2**level of the padded size) before the skip and
        the downsampling.
        """
        h, w = x.shape[-2:]
        ph, pw = (-h) % self.multiple, (-w) % self.multiple
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph))
        x = self.intro(x)
        skips = []
        for level, (enc, down) in enumerate(zip(self.encoders, self.downs)):
            x = enc(x)
            if modulate is not None:
                x = modulate(level, x)
            skips.append(x)
            x = down(x)
        x = self.middle(x)
        bottom = x
        for up, dec, skip in zip(self.ups, self.decoders, reversed(skips)):
            x = dec(up(x) + skip)
        out = self.ending(x)
        if self.head == "residual":
            out = out[..., :h, :w] + residual
        else:
            t = T_MIN + (1 - T_MIN) * torch.sigmoid(out[..., :h, :w])
            a = F.interpolate(torch.sigmoid(self.airlight(bottom)), size=out.shape[-2:], mode="bilinear",
                              align_corners=False)
            a = a[..., :h, :w]
            out = (residual - a) / t + a
        if self.guided_radius:
            out = guided_filter(residual[:, :3], out, self.guided_radius, self.guided_eps)
        return out
