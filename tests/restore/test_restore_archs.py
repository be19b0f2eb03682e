"""Restoration architectures: NAFNet, MAP unit, region dropout, SFT fusion, variants, BasicSR."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from restore.archs import ARCHS, build_arch, register_with_basicsr
from restore.archs.fusion import SFTFusion, aligned_grid
from restore.archs.map_unit import (
    MapUnit,
    gather_region_means,
    mask_average_pool,
    region_dropout,
    region_means,
)
from restore.archs.nafnet_arch import T_MIN, LayerNorm2d, NAFBlock, NAFNet, box_mean
from robustsam_prior.prior import PriorOutput

TINY = {"width": 8, "enc_blocks": [1, 1], "middle_blocks": 1, "dec_blocks": [1, 1]}


def naive_map(x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-sample, per-region loop with boolean masks (SAM-Deblur's semantics, binary masks)."""
    out = torch.zeros_like(x)
    for b in range(x.shape[0]):
        for k in torch.unique(labels[b]).tolist():
            m = labels[b] == k
            out[b][:, m] = x[b][:, m].mean(dim=1, keepdim=True)
    return out


# ---------------------------------------------------------------- NAFNet pieces


def test_layernorm2d_equals_channels_last_layer_norm():
    torch.manual_seed(0)
    ln = LayerNorm2d(6)
    with torch.no_grad():
        ln.weight.uniform_(0.5, 2)
        ln.bias.uniform_(-1, 1)
    x = torch.randn(2, 6, 5, 7)
    mu = x.mean(1, keepdim=True)
    var = x.var(1, unbiased=False, keepdim=True)
    ref = (x - mu) / torch.sqrt(var + 1e-6) * ln.weight.view(1, -1, 1, 1) + ln.bias.view(1, -1, 1, 1)
    torch.testing.assert_close(ln(x), ref, atol=1e-5, rtol=1e-5)


def test_nafblock_starts_as_identity_and_beta_gamma_zero():
    blk = NAFBlock(8)
    assert torch.count_nonzero(blk.beta) == 0 and torch.count_nonzero(blk.gamma) == 0
    x = torch.randn(1, 8, 9, 11)
    torch.testing.assert_close(blk(x), x)


def test_nafblock_matches_formula():
    torch.manual_seed(1)
    blk = NAFBlock(4)
    with torch.no_grad():
        blk.beta.normal_()
        blk.gamma.normal_()
    x = torch.randn(2, 4, 6, 6)

    def ln(t, m):
        return F.layer_norm(t.permute(0, 2, 3, 1), (4,), m.weight, m.bias, 1e-6).permute(0, 3, 1, 2)

    y = blk.conv2(blk.conv1(ln(x, blk.norm1)))
    y = y[:, :4] * y[:, 4:]
    y = y * blk.sca(y.mean((2, 3), keepdim=True))
    y = x + blk.beta * blk.conv3(y)
    z = blk.conv4(ln(y, blk.norm2))
    ref = y + blk.gamma * blk.conv5(z[:, :4] * z[:, 4:])
    torch.testing.assert_close(blk(x), ref, atol=1e-5, rtol=1e-5)


def test_conv1x1_channels_last_matches_conv2d():
    from restore.archs.nafnet_arch import Conv1x1

    torch.manual_seed(0)
    conv = Conv1x1(6, 10)
    x = torch.randn(2, 6, 7, 5)
    ref = F.conv2d(x, conv.weight, conv.bias)
    cl = conv(x.contiguous(memory_format=torch.channels_last))
    assert cl.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(cl, ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(conv(x), ref)
    net = NAFNet(**TINY).eval()
    with torch.no_grad():
        for n, p in net.named_parameters():
            if n.endswith(("beta", "gamma")):
                p.normal_(0, 0.1)
        y = torch.rand(1, 3, 19, 22)
        ref = net(y)
        out = net.to(memory_format=torch.channels_last)(y.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


def test_nafnet_global_residual_and_channels():
    net = NAFNet(**TINY)
    assert net.multiple == 4 and net.level_channels == [8, 16]
    x = torch.rand(1, 3, 13, 10)
    with torch.no_grad():
        net.ending.weight.zero_()
        net.ending.bias.zero_()
    torch.testing.assert_close(net(x), x)  # zero body -> identity through the global residual


def _naive_box_mean(x: torch.Tensor, window: int) -> torch.Tensor:
    r = window // 2
    out = torch.empty_like(x)
    h, w = x.shape[-2:]
    for i in range(h):
        for j in range(w):
            out[..., i, j] = x[..., max(0, i - r): i + r + 1, max(0, j - r): j + r + 1].mean((-2, -1))
    return out


@pytest.mark.parametrize("window", [1, 3, 5, 9])
def test_box_mean_is_the_mean_over_the_window_clipped_at_the_border(window):
    torch.manual_seed(0)
    x = torch.randn(2, 3, 7, 10) + 50.0  # a large offset: the running sums must stay exact enough
    torch.testing.assert_close(box_mean(x, window), _naive_box_mean(x, window), atol=1e-4, rtol=1e-5)


def test_box_mean_rejects_even_and_empty_windows():
    x = torch.zeros(1, 1, 4, 4)
    for bad in (0, 4, -3):
        with pytest.raises(ValueError, match="odd number"):
            box_mean(x, bad)
    with pytest.raises(ValueError, match="cell"):
        box_mean(x, 3, cell=0)


def test_box_mean_on_cells_approximates_the_exact_mean():
    """The cell grid (what the blocks use) stays close to the exact mean for statistics that vary
    on the scale of the window or slower, and is exact for a constant."""
    torch.manual_seed(0)
    smooth = F.interpolate(torch.randn(1, 4, 3, 3), size=(90, 101), mode="bicubic", align_corners=False)
    exact = box_mean(smooth, 33)
    err = (box_mean(smooth, 33, cell=4) - exact).abs() / (exact.max() - exact.min())
    assert err.mean() < 0.02 and err.max() < 0.1, (err.mean(), err.max())  # measured: 0.009, 0.04
    assert err.max() > 0  # it is an approximation, not the same computation
    const = torch.full((1, 2, 37, 41), 0.3)
    torch.testing.assert_close(box_mean(const, 17, cell=4), const)
    # a pointwise affine map (the blocks' 1x1 conv) on the coarse grid = the same map after upsampling
    conv = torch.nn.Conv2d(4, 3, 1)
    with torch.no_grad():
        torch.testing.assert_close(box_mean(smooth, 33, cell=4, pointwise=conv), conv(box_mean(smooth, 33, cell=4)),
                                   atol=1e-5, rtol=1e-5)
        cl = smooth.contiguous(memory_format=torch.channels_last)
        out = box_mean(cl, 33, cell=4, pointwise=conv)
        assert out.is_contiguous(memory_format=torch.channels_last)
        torch.testing.assert_close(out, conv(box_mean(smooth, 33, cell=4)), atol=1e-5, rtol=1e-5)


def _random_body(net: NAFNet) -> NAFNet:
    with torch.no_grad():
        for n, p in net.named_parameters():
            if n.endswith(("beta", "gamma")):
                p.normal_(0, 0.5)
    return net.eval()


def test_local_pool_windows_per_level_and_reset():
    net = NAFNet(width=8, enc_blocks=[1, 1, 1], middle_blocks=1, dec_blocks=[1, 1, 1])
    net.set_local_pool(96)
    enc = [blk.pool_window for stage in net.encoders for blk in stage]
    dec = [blk.pool_window for stage in net.decoders for blk in stage]
    assert enc == [97, 49, 25]  # 96, 48, 24 made odd
    assert [blk.pool_window for blk in net.middle] == [13]  # 96 / 8 = 12 -> 13
    assert dec == [25, 49, 97]  # the decoder climbs back up the levels
    net.set_local_pool(None)
    assert all(blk.pool_window == 0 for blk in net.modules() if isinstance(blk, NAFBlock))
    with pytest.raises(ValueError, match=">= 0"):
        net.set_local_pool(-1)


def test_local_pool_changes_only_what_it_should():
    torch.manual_seed(3)
    net = _random_body(NAFNet(**TINY))
    # left half bright and flat, right half dark noise: local statistics differ from the global ones
    x = torch.rand(1, 3, 32, 64) * 0.2
    x[..., :32] = 0.9
    with torch.no_grad():
        ref = net(x)
        net.set_local_pool(1000)  # windows larger than the image at every level: the global mean
        torch.testing.assert_close(net(x), ref)
        net.set_local_pool(16)
        local = net(x)
        net.set_local_pool(0)
        torch.testing.assert_close(net(x), ref)
    assert (local - ref).abs().max() > 1e-3
    # the same block with a window covering the map is the global SCA of test_nafblock_matches_formula
    blk = net.encoders[0][0]
    y = torch.randn(1, 8, 5, 6)
    blk.pool_window = 11
    torch.testing.assert_close(blk._attention(y), blk.sca(y.mean((2, 3), keepdim=True)))
    blk.pool_window = 3
    torch.testing.assert_close(blk._attention(y), blk.sca(_naive_box_mean(y, 3)), atol=1e-5, rtol=1e-5)


def test_nafnet_bad_config():
    with pytest.raises(ValueError, match="same length"):
        NAFNet(enc_blocks=[1, 1], dec_blocks=[1])
    with pytest.raises(ValueError, match="even"):
        NAFNet(width=7)
    with pytest.raises(ValueError, match="head must be one of"):
        NAFNet(head="physics")
    with pytest.raises(ValueError, match="out_channels must be 3"):
        NAFNet(out_channels=1, head="scattering")


def _set_scattering_head(net: NAFNet, t: float, a: tuple[float, float, float]) -> None:
    """Make the head predict a constant transmission ``t`` and airlight ``a`` whatever the input."""
    logit = lambda v: torch.logit(torch.as_tensor(v, dtype=torch.float32))  # noqa: E731
    with torch.no_grad():
        net.ending.weight.zero_()
        net.ending.bias.fill_(logit((t - T_MIN) / (1 - T_MIN)))
        net.airlight.weight.zero_()
        net.airlight.bias.copy_(logit(torch.tensor(a)))


@pytest.mark.parametrize("size", [(16, 16), (13, 10)])
def test_scattering_head_inverts_the_scattering_model(size):
    # a hazy image made by I = J t + A (1 - t); with the head set to predict that t and A, out == J
    g = torch.Generator().manual_seed(0)
    clear = torch.rand(2, 3, *size, generator=g)
    t, a = 0.35, (0.8, 0.85, 0.9)
    airlight = torch.tensor(a).view(1, 3, 1, 1)
    hazy = clear * t + airlight * (1 - t)
    net = NAFNet(**TINY, head="scattering")
    _set_scattering_head(net, t, a)
    torch.testing.assert_close(net(hazy), clear, atol=1e-5, rtol=1e-5)


def test_scattering_head_starts_near_identity_and_cannot_paint():
    torch.manual_seed(0)
    net = NAFNet(**TINY, head="scattering")
    x = torch.rand(1, 3, 24, 20)
    with torch.no_grad():
        out = net(x)
    # fresh head: t ~ 0.9 -> a mild contrast stretch of the input around the airlight
    assert (out - x).abs().mean() < 0.1
    # whatever t and A it predicts, out - A is the input's (I - A) scaled by 1/t >= 1: no new hue
    _set_scattering_head(net, 0.5, (0.6, 0.6, 0.6))
    with torch.no_grad():
        torch.testing.assert_close(net(x) - 0.6, (x - 0.6) * 2, atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------- MAP unit


@pytest.mark.parametrize("k", [1, 2, 7, 40])
def test_map_equals_naive_loop(k):
    g = torch.Generator().manual_seed(k)
    x = torch.randn(3, 4, 17, 13, generator=g)
    labels = torch.randint(0, k, (3, 17, 13), generator=g, dtype=torch.int32)
    labels[1] = labels[1] * 3  # gaps: ids that no pixel has
    torch.testing.assert_close(mask_average_pool(x, labels), naive_map(x, labels), atol=1e-5, rtol=1e-5)


def test_map_single_region_is_global_mean_and_empty_image():
    x = torch.randn(2, 3, 5, 6)
    out = mask_average_pool(x, torch.zeros(2, 5, 6, dtype=torch.int32))
    torch.testing.assert_close(out, x.mean((2, 3), keepdim=True).expand_as(x))
    empty = torch.zeros(2, 3, 0, 4)
    assert mask_average_pool(empty, torch.zeros(2, 0, 4, dtype=torch.int32)).shape == (2, 3, 0, 4)


def test_region_means_table_and_gather():
    x = torch.arange(8, dtype=torch.float32).reshape(1, 1, 2, 4).repeat(2, 1, 1, 1)
    labels = torch.tensor([[[0, 0, 2, 2], [0, 0, 2, 2]], [[1, 1, 1, 1], [1, 1, 1, 1]]], dtype=torch.int32)
    means = region_means(x, labels)
    assert means.shape == (2, 1, 1, 3)  # K = 3 over the batch
    torch.testing.assert_close(means[0, 0, 0], torch.tensor([2.5, 0.0, 4.5]))  # id 1 absent -> 0
    torch.testing.assert_close(means[1, 0, 0], torch.tensor([0.0, 3.5, 0.0]))
    torch.testing.assert_close(gather_region_means(means, labels), mask_average_pool(x, labels))
    with pytest.raises(ValueError, match="has no mean"):
        gather_region_means(means, labels + 1)
    with pytest.raises(ValueError, match=r"\(B=2, H, W\)"):
        gather_region_means(means, labels[0])


def test_prepare_prior_gives_tiles_whole_image_region_means():
    torch.manual_seed(0)
    net = build_arch("map_nafnet", **TINY).eval()
    x = torch.rand(1, 3, 24, 30)
    pr = _prior(1, 24, 30, features=False, k=4)
    with torch.no_grad():
        whole = net._input(x, pr)
        prepared = net.prepare_prior(x, pr)
        assert prepared.features["map_region_means"].shape == (1, 2, 1, 4)
        tile = PriorOutput(pr.labels[:, 5:17, 8:21], {k: v for k, v in prepared.features.items()}, {})
        part = net._input(x[..., 5:17, 8:21], tile)
        plain = net._input(x[..., 5:17, 8:21], PriorOutput(pr.labels[:, 5:17, 8:21], {}, {}))
    torch.testing.assert_close(part, whole[..., 5:17, 8:21])  # exact, up to the tile's edges
    with torch.no_grad():  # computed a few rows at a time (bounded memory): the same table
        chunked = net.prepare_prior(x, pr, rows=5).features["map_region_means"]
        direct = region_means(net.map.seg(x), pr.labels)
    torch.testing.assert_close(chunked, prepared.features["map_region_means"], atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(chunked, direct, atol=1e-6, rtol=1e-5)
    assert (plain - whole[..., 5:17, 8:21]).abs().max() > 1e-4  # pooling inside the tile differs


def test_map_half_precision_does_not_overflow():
    x = torch.full((1, 2, 300, 300), 0.9, dtype=torch.float16)  # region sum 81000 > float16 max
    out = mask_average_pool(x, torch.zeros(1, 300, 300, dtype=torch.int32))
    assert out.dtype == torch.float16 and torch.isfinite(out).all()
    torch.testing.assert_close(out.float(), torch.full((1, 2, 300, 300), 0.9), atol=1e-3, rtol=0)


def test_map_binary_not_divided_by_255():
    # two regions with means 0 and 1: the official /255 bug would give ~0.5 everywhere
    x = torch.cat([torch.zeros(1, 1, 4, 2), torch.ones(1, 1, 4, 2)], dim=3)
    labels = torch.cat([torch.zeros(1, 4, 2), torch.ones(1, 4, 2)], dim=2).int()
    torch.testing.assert_close(mask_average_pool(x, labels), x)


def test_map_gradient_and_errors():
    x = torch.randn(1, 2, 4, 4, requires_grad=True)
    labels = torch.tensor([[0, 0, 1, 1]] * 4, dtype=torch.int32)[None]
    mask_average_pool(x, labels)[0, 0, 0, 0].backward()
    # d out[0,0,0,0] / d x = 1/8 on region 0 (8 pixels) of channel 0, 0 elsewhere
    expected = torch.zeros(1, 2, 4, 4)
    expected[0, 0, :, :2] = 1 / 8
    torch.testing.assert_close(x.grad, expected)
    with pytest.raises(ValueError, match="integer"):
        mask_average_pool(x, labels.float())
    with pytest.raises(ValueError, match=">= 0"):
        mask_average_pool(x, labels - 1)
    with pytest.raises(ValueError, match=r"\(B, H, W\)"):
        mask_average_pool(x, labels[:, :2])
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        mask_average_pool(x[0], labels)


def test_region_dropout_merges_floor_p_k_regions():
    labels = torch.arange(10, dtype=torch.int32).repeat_interleave(3).reshape(1, 5, 6).repeat(2, 1, 1)
    out = region_dropout(labels, 0.5, generator=torch.Generator().manual_seed(0))
    assert torch.equal(labels, torch.arange(10, dtype=torch.int32).repeat_interleave(3).reshape(1, 5, 6).repeat(2, 1, 1))
    for b in range(2):
        merged = out[b] == 10  # new id = max + 1
        dropped = torch.unique(labels[b][merged])
        assert dropped.numel() == 5  # floor(0.5 * 10)
        kept = ~merged
        assert torch.equal(out[b][kept], labels[b][kept])
        assert torch.unique(out[b]).numel() == 6  # 5 kept + 1 merged
    # reproducible with a generator, different draws for different seeds
    again = region_dropout(labels, 0.5, generator=torch.Generator().manual_seed(0))
    assert torch.equal(out, again)
    other = [region_dropout(labels, 0.5, generator=torch.Generator().manual_seed(s)) for s in range(1, 6)]
    assert any(not torch.equal(out, o) for o in other)
    # p=0.1 of 10 regions drops one: merging one region into itself changes only its id
    one = region_dropout(labels, 0.1, generator=torch.Generator().manual_seed(0))
    assert torch.unique(one[0]).numel() == 10
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        region_dropout(labels, 1.5)
    with pytest.raises(ValueError, match=r"\(B, H, W\)"):
        region_dropout(labels[0], 0.5)


def test_map_unit_dropout_only_in_training():
    unit = MapUnit(seg_channels=2, dropout=0.5)
    unit.generator = torch.Generator().manual_seed(0)
    x = torch.rand(1, 3, 8, 8)
    labels = torch.arange(16, dtype=torch.int32).repeat_interleave(4).reshape(1, 8, 8)
    unit.eval()
    seg = unit.pre_seg_in(unit.pre_seg(x))
    torch.testing.assert_close(unit(x, labels), naive_map(seg, labels))
    unit.train()
    dropped = region_dropout(labels, 0.5, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(unit(x, labels), naive_map(seg, dropped))
    with pytest.raises(ValueError):
        MapUnit(dropout=-0.1)


# ---------------------------------------------------------------- fusion


def test_aligned_grid_equals_interpolate_on_whole_image():
    torch.manual_seed(0)
    f = torch.randn(1, 3, 7, 5)
    for stride in (1, 2, 4):
        h, w = 32 // stride, 24 // stride
        grid = aligned_grid((h, w), stride, [(0, 0, 32, 24)])
        s = F.grid_sample(f, grid, mode="bilinear", padding_mode="border", align_corners=False)
        ref = F.interpolate(f, (h, w), mode="bilinear", align_corners=False)
        torch.testing.assert_close(s, ref, atol=1e-5, rtol=1e-5)


def test_aligned_grid_tile_is_crop_of_whole():
    torch.manual_seed(0)
    f = torch.randn(1, 3, 9, 6)
    whole = F.grid_sample(f, aligned_grid((40, 28), 1, [(0, 0, 40, 28)]), align_corners=False)
    tile = F.grid_sample(f, aligned_grid((12, 8), 1, [(16, 8, 40, 28)]), align_corners=False)
    torch.testing.assert_close(tile, whole[..., 16:28, 8:16], atol=1e-5, rtol=1e-5)


def test_sft_identity_at_init_and_channel_error():
    fus = SFTFusion(feature_channels={"a": 4}, level_channels=[8, 16], hidden=4)
    x = torch.randn(1, 8, 6, 6)
    proj = fus.prepare({"a": torch.randn(1, 4, 3, 3)})
    torch.testing.assert_close(fus.modulate(0, x, proj, [(0, 0, 6, 6)]), x)
    assert fus.prepare({"other": torch.randn(1, 4, 3, 3)}) == []
    with pytest.raises(ValueError, match="channels"):
        fus.prepare({"a": torch.randn(1, 5, 3, 3)})
    with pytest.raises(ValueError, match="at least one"):
        SFTFusion(feature_channels={}, level_channels=[8])


# ---------------------------------------------------------------- variants


def _prior(b, h, w, features=True, k=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, k, (b, h, w), generator=g, dtype=torch.int32)
    feats = {}
    if features:
        feats = {"robust_mask_features": torch.randn(b, 32, 9, 11, generator=g),
                 "image_embedding": torch.randn(b, 256, 4, 4, generator=g)}
    return PriorOutput(labels, feats, {"name": "test"})


@pytest.mark.parametrize("name", ["nafnet", "map_nafnet", "fusion_nafnet"])
@pytest.mark.parametrize("size", [(16, 16), (13, 21), (1, 7)])
@pytest.mark.parametrize("head", ["residual", "scattering"])
def test_variants_forward_backward_any_size(name, size, head):
    torch.manual_seed(0)
    net = build_arch(name, **TINY, head=head)
    # make beta/gamma and the fusion non-zero so every parameter is on the gradient path
    with torch.no_grad():
        for n, p in net.named_parameters():
            if n.endswith(("beta", "gamma")) or "fusion.scale" in n or "fusion.shift" in n:
                p.normal_(0, 0.1)
    x = torch.rand(2, 3, *size)
    out = net(x, _prior(2, *size))
    assert out.shape == x.shape
    out.square().mean().backward()
    no_grad = [n for n, p in net.named_parameters() if p.grad is None or not torch.any(p.grad != 0)]
    # nafnet's SCA conv gets no gradient when a level's pooled input is constant; none expected here
    assert no_grad == [], no_grad


def test_fusion_accepts_any_feature_size_and_no_features():
    torch.manual_seed(0)
    net = build_arch("fusion_nafnet", **TINY).eval()
    with torch.no_grad():
        for n, p in net.named_parameters():
            if "fusion" in n:
                p.normal_(0, 0.1)
    x = torch.rand(1, 3, 20, 12)
    pr = _prior(1, 20, 12)
    for hw in [(1, 1), (5, 64), (20, 12)]:
        pr.features["robust_mask_features"] = torch.randn(1, 32, *hw)
        assert net(x, pr).shape == x.shape
    labels_only = PriorOutput(pr.labels, {}, {})
    # without features the fusion is skipped: equals map_nafnet with the same weights
    map_net = build_arch("map_nafnet", **TINY).eval()
    map_net.load_state_dict({k: v for k, v in net.state_dict().items() if not k.startswith("fusion.")})
    torch.testing.assert_close(net(x, labels_only), map_net(x, labels_only))
    assert not torch.allclose(net(x, pr), map_net(x, pr))
    assert net.uses_features == ("robust_mask_features", "image_embedding")


def test_fusion_sam_frame_samples_the_padded_square():
    # a 48x72 image: SAM's frame is the 72x72 square, so image row i samples the map at (i+.5)/72
    torch.manual_seed(0)
    net = build_arch("fusion_nafnet", **TINY, feature_channels={"f": 3}).eval()
    img_net = build_arch("fusion_nafnet", **TINY, feature_channels={"f": 3}, feature_frame="image").eval()
    f = torch.randn(1, 3, 6, 6)
    captured = {}

    def spy(net_):
        orig = net_.fusion.modulate

        def modulate(level, x, projected, regions):
            captured.setdefault(id(net_), regions)
            return orig(level, x, projected, regions)

        net_.fusion.modulate = modulate

    spy(net)
    spy(img_net)
    pr = PriorOutput(torch.zeros(1, 48, 72, dtype=torch.int32), {"f": f}, {})
    net(torch.rand(1, 3, 48, 72), pr)
    img_net(torch.rand(1, 3, 48, 72), pr)
    assert captured[id(net)] == [(0, 0, 72, 72)]
    assert captured[id(img_net)] == [(0, 0, 48, 72)]
    with pytest.raises(ValueError, match="feature_frame"):
        build_arch("fusion_nafnet", feature_frame="cropped")


def test_prior_errors():
    net = build_arch("map_nafnet", **TINY)
    x = torch.rand(1, 3, 8, 8)
    with pytest.raises(ValueError, match="needs a prior"):
        net(x, None)
    with pytest.raises(ValueError, match="do not match"):
        net(x, _prior(1, 8, 9))
    fnet = build_arch("fusion_nafnet", **TINY)
    pr = _prior(1, 8, 8)
    pr.meta["regions"] = [(0, 0, 8, 8)] * 2
    with pytest.raises(ValueError, match="regions"):
        fnet(x, pr)


def test_registry_and_build_errors():
    assert ARCHS.names() == ["fusion_nafnet", "map_nafnet", "nafnet"]
    assert build_arch("nafnet").needs_prior is False
    assert build_arch("map_nafnet").needs_prior is True
    with pytest.raises(KeyError, match="did you mean 'nafnet'"):
        build_arch("nafnett")
    with pytest.raises(TypeError, match="bad arguments"):
        build_arch("nafnet", depth=3)
    import restore.archs as archs

    with pytest.raises(AttributeError):
        archs.NOPE  # noqa: B018


def test_register_with_basicsr():
    names = register_with_basicsr()
    assert names == ["FusionNAFNet", "MapNAFNet", "NAFNet"]
    assert register_with_basicsr() == names  # idempotent
    from basicsr.archs import build_network

    net = build_network({"type": "MapNAFNet", **TINY})
    assert type(net) is ARCHS.get("map_nafnet")


def test_register_with_basicsr_refuses_a_different_class(monkeypatch):
    register_with_basicsr()
    from basicsr.utils.registry import ARCH_REGISTRY

    monkeypatch.setattr(ARCH_REGISTRY, "_obj_map", {**ARCH_REGISTRY._obj_map, "NAFNet": object})
    with pytest.raises(RuntimeError, match="different 'NAFNet'"):
        register_with_basicsr()


def test_guided_filter_matches_kornia_inside_and_removes_what_the_guide_lacks():
    from kornia.filters import guided_blur

    from restore.archs.nafnet_arch import guided_filter

    g = torch.Generator().manual_seed(0)
    guide = F.interpolate(torch.rand(1, 3, 12, 12, generator=g), size=(96, 96), mode="bicubic").clamp(0, 1)
    src = 0.6 * guide + 0.2 + 0.05 * torch.rand(1, 3, 96, 96, generator=g)
    exact = guided_filter(guide, src, 5, 1e-3, subsample=1)
    ref = guided_blur(guide.reshape(3, 1, 96, 96), src.reshape(3, 1, 96, 96), 11, 1e-3).reshape(1, 3, 96, 96)
    torch.testing.assert_close(exact[..., 10:-10, 10:-10], ref[..., 10:-10, 10:-10], atol=1e-5, rtol=0)
    # a 16-px grid that is not in the guide is removed; an affine map of the guide passes unchanged
    grid = torch.zeros(96, 96)
    grid[::16] = grid[:, ::16] = 0.1
    out = guided_filter(guide, 0.7 * guide + 0.1 + grid, 16, 1e-4)
    residual = out - (0.7 * guide + 0.1)
    assert residual[..., ::16, :].abs().mean() < 0.2 * 0.1
    torch.testing.assert_close(guided_filter(guide, 0.7 * guide + 0.1, 16, 1e-4), 0.7 * guide + 0.1,
                               atol=2e-3, rtol=0)


def test_guided_output_is_an_option_of_every_nafnet_and_needs_no_weights():
    prior = PriorOutput(torch.zeros(1, 40, 48, dtype=torch.int32), {}, {})
    x = torch.rand(1, 3, 40, 48)
    for arch in ("nafnet", "map_nafnet"):
        torch.manual_seed(0)
        plain = build_arch(arch, **TINY).eval()
        torch.manual_seed(0)
        guided = build_arch(arch, **TINY, guided_radius=8).eval()
        assert plain.state_dict().keys() == guided.state_dict().keys()
        guided.load_state_dict(plain.state_dict())
        from restore.archs.nafnet_arch import guided_filter

        with torch.no_grad():
            torch.testing.assert_close(guided(x, prior), guided_filter(x, plain(x, prior), 8, 1e-5))
    with pytest.raises(ValueError, match="guided_radius must be >= 0"):
        NAFNet(guided_radius=-1)
