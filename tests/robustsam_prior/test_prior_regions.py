"""The weight-free ``regions`` prior: contrast stretch, compact ids, any size, haze invariance."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage.segmentation import slic

from robustsam_prior.core.versions import package_version
from robustsam_prior.prior import build_prior
from robustsam_prior.priors.regions import compact_labels, stretch_contrast, upsample_nearest


def shapes_image(h: int, w: int, seed: int = 0) -> torch.Tensor:
    """A (1,3,h,w) test scene: a left/right split, a disc and a bar in distinct colours, light noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w] / np.array([h, w])[:, None, None]
    img = np.empty((h, w, 3), np.float32)
    img[:] = (0.15, 0.25, 0.5)
    img[xx >= 0.5] = (0.8, 0.7, 0.2)
    img[(yy - 0.5) ** 2 + (xx - 0.25) ** 2 < 0.03] = (0.9, 0.1, 0.1)
    img[(yy > 0.7) & (yy < 0.85) & (xx > 0.55)] = (0.1, 0.6, 0.2)
    img += rng.normal(0, 0.01, img.shape).astype(np.float32)
    return torch.from_numpy(np.clip(img, 0, 1)).permute(2, 0, 1)[None].contiguous()


def is_compact(labels: torch.Tensor) -> bool:
    ids = torch.unique(labels)
    return torch.equal(ids, torch.arange(len(ids), dtype=ids.dtype))


def test_stretch_contrast_against_hand_values():
    ramp = np.linspace(0, 1, 101, dtype=np.float32)  # percentiles of 0..1 in steps of 0.01 are exact
    img = np.stack([0.2 + 0.5 * ramp, ramp, np.full_like(ramp, 0.3)], -1)[None]
    out = stretch_contrast(img, 10, 90)
    np.testing.assert_allclose(out[0, :, 0], np.clip((ramp - 0.1) / 0.8, 0, 1), atol=1e-5)
    np.testing.assert_allclose(out[0, :, 1], np.clip((ramp - 0.1) / 0.8, 0, 1), atol=1e-5)
    np.testing.assert_array_equal(out[0, :, 2], img[0, :, 2])  # flat channel untouched


def test_compact_and_upsample_helpers():
    np.testing.assert_array_equal(compact_labels(np.array([[5, 9], [9, -2]])), [[1, 2], [2, 0]])
    small = np.array([[0, 1], [2, 3]])
    np.testing.assert_array_equal(upsample_nearest(small, 4, 6), np.kron(small, np.ones((2, 3), int)))
    np.testing.assert_array_equal(upsample_nearest(small, 2, 2), small)


def test_matches_scikit_image_slic_when_no_resize_is_needed():
    x = shapes_image(64, 96)
    prior = build_prior("regions", n_segments=30, compactness=5.0)
    got = prior(x).labels[0].numpy()
    arr = stretch_contrast(x[0].permute(1, 2, 0).numpy(), 1, 99)
    ref = slic(arr, n_segments=30, compactness=5.0, start_label=0, channel_axis=-1)
    np.testing.assert_array_equal(got, compact_labels(ref))


@pytest.mark.parametrize("method", ["slic", "felzenszwalb"])
def test_regions_respect_strong_edges(method):
    x = shapes_image(120, 160)
    labels = build_prior("regions", method=method)(x).labels[0]
    assert labels.shape == (120, 160) and labels.dtype == torch.int32
    assert is_compact(labels) and int(labels.max()) >= 3
    left, right = labels[:40, :76], labels[:40, 84:]  # the split at x=80, away from disc and bar
    assert not set(left.unique().tolist()) & set(right.unique().tolist())


def test_uniform_haze_does_not_change_the_regions():
    # haze I = J t + A (1 - t) is a per-channel affine map; the percentile stretch undoes it
    clear = shapes_image(96, 128, seed=1)
    hazy = clear * 0.35 + torch.tensor([0.85, 0.88, 0.9]).view(1, 3, 1, 1) * 0.65
    prior = build_prior("regions")
    a, b = prior(clear).labels, prior(hazy).labels
    assert (a == b).float().mean() > 0.99
    # without the stretch, haze flattens the image and the graph segmentation merges regions
    felz = build_prior("regions", method="felzenszwalb")
    plain = build_prior("regions", method="felzenszwalb", contrast="none")
    assert torch.equal(felz(hazy).labels, felz(clear).labels)
    assert int(plain(hazy).labels.max()) < int(plain(clear).labels.max())


def test_gray_tiny_and_batched_inputs():
    prior = build_prior("regions")
    gray = shapes_image(40, 50).mean(1, keepdim=True).expand(1, 3, 40, 50)
    g = prior(gray).labels
    assert g.shape == (1, 40, 50) and is_compact(g) and int(g.max()) >= 1
    tiny = prior(shapes_image(8, 8)).labels
    assert tiny.shape == (1, 8, 8) and is_compact(tiny)
    flat = prior(torch.full((1, 3, 8, 8), 0.5)).labels
    assert flat.shape == (1, 8, 8) and is_compact(flat)
    batch = torch.cat([shapes_image(32, 48, seed=s) for s in range(3)])
    out = prior(batch).labels
    for i in range(3):
        assert torch.equal(out[i], prior(batch[i : i + 1]).labels[0])


def test_large_image_segmented_at_working_size():
    x = torch.nn.functional.interpolate(shapes_image(300, 400), size=(3000, 4000), mode="nearest")
    prior = build_prior("regions", working_size=256)
    assert prior.working_shape(3000, 4000) == (192, 256)
    labels = prior(x).labels[0]
    assert labels.shape == (3000, 4000) and is_compact(labels)
    # the split at x=2000 is kept, up to the working resolution (1 px there = 15.6 px here)
    left, right = labels[:1000, :1950], labels[:1000, 2050:]
    assert not set(left.unique().tolist()) & set(right.unique().tolist())


def test_meta_and_option_errors():
    prior = build_prior("regions", method="felzenszwalb", scale=50)
    m = prior.meta
    assert m["name"] == "regions" and m["version"] == package_version() and "skimage" in m
    assert m["options"]["method"] == "felzenszwalb" and m["options"]["scale"] == 50.0
    assert prior.meta != build_prior("regions").meta
    for bad, msg in [
        ({"method": "watershed"}, "method must be one of"),
        ({"contrast": "clahe"}, "contrast must be one of"),
        ({"n_segments": 0}, "n_segments must be >= 1"),
        ({"compactness": 0}, "must be > 0"),
        ({"working_size": 4}, "working_size must be >= 8"),
        ({"stretch_percentiles": (50, 10)}, "stretch_percentiles"),
    ]:
        with pytest.raises(ValueError, match=msg):
            build_prior("regions", **bad)
