"""Tiled inference: equals whole-image inference for local networks; bounded for NAFNet."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from restore.archs import build_arch
from restore.archs.fusion import SFTFusion
from restore.tiling import TileSpec, axis_weights, crop_prior, tile_starts, tiled_forward
from robustsam_prior.prior import PriorOutput


class LocalNet(nn.Module):
    """Purely convolutional (receptive radius 3) net that also uses labels and image-aligned features."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Sequential(
            nn.Conv2d(4, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
            nn.Conv2d(8, 3, 3, padding=1),
        )
        self.fusion = SFTFusion(feature_channels={"f": 5}, level_channels=[3], hidden=4)
        for p in self.fusion.parameters():
            nn.init.normal_(p, 0, 0.3)

    def forward(self, image, prior):
        x = torch.cat([image, prior.labels[:, None].float() / 10], 1)
        y = self.body(x)
        h, w = image.shape[-2:]
        regions = prior.meta.get("regions") or [(0, 0, h, w)] * image.shape[0]
        return self.fusion.modulate(0, y, self.fusion.prepare(prior.features), regions)


def _prior(h, w, seed=0):
    g = torch.Generator().manual_seed(seed)
    return PriorOutput(
        torch.randint(0, 9, (1, h, w), generator=g, dtype=torch.int32),
        {"f": torch.randn(1, 5, 7, 6, generator=g)},
        {"name": "test"},
    )


def test_tile_starts_cover_and_overlap():
    assert tile_starts(50, 64, 8) == [0]
    for length, tile, ov in [(100, 32, 8), (257, 64, 16), (65, 64, 0), (1000, 512, 32)]:
        s = tile_starts(length, tile, ov)
        assert s[0] == 0 and s[-1] == length - tile
        assert all(b - a <= tile - ov for a, b in zip(s, s[1:]))


def test_axis_weights_partition_of_unity():
    starts = tile_starts(150, 40, 12)
    ws = axis_weights(starts, 40, 150)
    total = torch.zeros(150, dtype=torch.float64)
    for s, w in zip(starts, ws):
        total[s : s + 40] += w
    torch.testing.assert_close(total, torch.ones(150, dtype=torch.float64))
    assert ws[0][0] == 1 and ws[-1][-1] == 1  # no ramp at the image borders
    assert ws[1][0] == 0  # dead margin next to a cut edge


@pytest.mark.parametrize("size,tile,overlap,batch", [((70, 53), 36, 16, 3), ((33, 90), 32, 12, 1), ((20, 20), 64, 16, 2)])
def test_tiled_equals_whole_for_local_net(size, tile, overlap, batch):
    net = LocalNet().eval()
    h, w = size
    x = torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(1))
    prior = _prior(h, w)
    with torch.no_grad():
        whole = net(x, prior)
    tiled = tiled_forward(net, x, prior, TileSpec(tile=tile, overlap=overlap, batch_size=batch, multiple=1))
    assert tiled.shape == whole.shape
    # receptive radius 3 <= margin = overlap // 4: equal in tile interiors and at the seams
    torch.testing.assert_close(tiled, whole, atol=1e-5, rtol=0)


def test_tiled_seam_error_when_margin_too_small():
    # overlap 4 -> margin 1 < receptive radius 3: the seams differ, the interiors still agree
    net = LocalNet().eval()
    x = torch.rand(1, 3, 40, 40, generator=torch.Generator().manual_seed(2))
    prior = _prior(40, 40)
    with torch.no_grad():
        whole = net(x, prior)
    tiled = tiled_forward(net, x, prior, TileSpec(tile=16, overlap=4, multiple=1))
    diff = (tiled - whole).abs()[0].amax(0)
    assert diff.max() > 1e-4
    starts = tile_starts(40, 16, 4)
    interior = torch.ones(40, dtype=torch.bool)
    for s in starts[1:]:
        interior[s - 4 : s + 4] = False
    for e in [s + 16 for s in starts[:-1]]:
        interior[e - 4 : e + 4] = False
    mask = interior[:, None] & interior[None, :]
    assert diff[mask].max() < 1e-5


def test_nafnet_tiling_bound():
    """NAFNet's global SCA pooling: tiled != whole; the documented bound (see restore/tiling.py)."""
    torch.manual_seed(0)
    net = build_arch("nafnet", width=8, enc_blocks=[1, 1], middle_blocks=1, dec_blocks=[1, 1]).eval()
    with torch.no_grad():
        for n, p in net.named_parameters():
            if n.endswith(("beta", "gamma")):
                p.normal_(0, 0.1)
    x = torch.rand(1, 3, 96, 80, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        whole = net(x, None)
    tiled = tiled_forward(net, x, None, TileSpec(tile=48, overlap=16, multiple=net.multiple))
    err = (tiled - whole).abs().max().item()
    assert 0 < err < 2e-3, err  # measured 5.7e-4


def test_crop_prior_and_errors():
    prior = _prior(10, 12)
    cp = crop_prior(prior, [(0, 4, 2, 6), (6, 10, 8, 12)], (10, 12))
    assert torch.equal(cp.labels[1], prior.labels[0, 6:10, 8:12])
    assert cp.features["f"].shape == (2, 5, 7, 6)
    assert cp.meta["regions"] == [(0, 2, 10, 12), (6, 8, 10, 12)]
    with pytest.raises(ValueError, match="overlap"):
        TileSpec(tile=16, overlap=8, multiple=1)
    with pytest.raises(ValueError, match=">= 1"):
        TileSpec(tile=0)
    with pytest.raises(ValueError, match="do not match"):
        tiled_forward(LocalNet(), torch.rand(1, 3, 10, 13), prior)
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        tiled_forward(LocalNet(), torch.rand(3, 10, 13), None)
    assert TileSpec(tile=100, multiple=16).padded_tile == 112
