"""Procedural dead-leaves training images and their use as clean images in synthetic training data."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from restore.training.data import PairDataset
from restore.training.options import DatasetOptions, DegradationOptions
from restore.training.procedural import DeadLeavesImage, _radii, dead_leaves


def test_radii_follow_the_power_law():
    r = _radii(np.random.default_rng(0), 200_000, 2.0, 200.0, 3.0)
    assert r.min() >= 2.0 and r.max() <= 200.0
    # P(r > x) for p(r) ~ r^-3 on [a, b]: (x^-2 - b^-2) / (a^-2 - b^-2)
    for x in (3.0, 5.0, 20.0):
        expected = (x**-2 - 200.0**-2) / (2.0**-2 - 200.0**-2)
        assert abs((r > x).mean() - expected) < 0.005


def test_dead_leaves_image_is_seeded_covered_and_piecewise_flat():
    a = dead_leaves(96, np.random.default_rng(3))
    assert a.shape == (96, 96, 3) and a.dtype == np.float32 and 0 <= a.min() and a.max() <= 1
    np.testing.assert_array_equal(a, dead_leaves(96, np.random.default_rng(3)))
    assert not np.array_equal(a, dead_leaves(96, np.random.default_rng(4)))
    # flat disks with sharp (anti-aliased, 2x2-averaged) edges: most pixels equal their right neighbour,
    # yet there are edges at many places
    same = np.all(a[:, 1:] == a[:, :-1], axis=2)
    assert 0.5 < same.mean() < 0.99
    # many distinct regions of many sizes (scale invariance): count the flat regions of one colour each
    labels, n = ndimage.label(np.pad(same, ((0, 0), (0, 1)), constant_values=False))
    sizes = np.bincount(labels.ravel())[1:]
    assert n > 50 and sizes.max() > 20 * np.median(sizes)
    with pytest.raises(ValueError, match="rmin <= rmax"):
        dead_leaves(32, np.random.default_rng(0), rmin=5, rmax=2)


def test_dataset_adds_dead_leaves_to_the_clean_images(tmp_path, pairs_factory):
    _, gt = pairs_factory(tmp_path, 2, 64, seed=0)
    deg = DegradationOptions(kinds=("camera_shake_blur",), severity=(2, 2))
    opts = DatasetOptions(clean_dir=str(gt), degradation=deg, crop_size=32, variants=1, dead_leaves=3,
                          dead_leaves_size=48)
    data = PairDataset(opts, key="data.train", seed=5, train=True)
    assert data.num_images == 5
    procedural = [gt_path for _, gt_path in data.pairs[2:]]
    assert procedural == [DeadLeavesImage(i, 48, 5) for i in range(3)]
    names = {data[p].name for p in range(20)}
    assert {"dead_leaves_0000", "dead_leaves_0001", "dead_leaves_0002"} <= names
    _, clean = data._load(3)
    np.testing.assert_array_equal(clean, DeadLeavesImage(1, 48, 5).render())
    # a crop larger than the procedural images is refused like one larger than a file
    with pytest.raises(ValueError, match="dead_leaves_0000"):
        PairDataset(DatasetOptions(clean_dir=str(gt), degradation=deg, crop_size=56, dead_leaves=1,
                                   dead_leaves_size=48), key="data.train", seed=0, train=True)
    with pytest.raises(ValueError, match="dead_leaves: only for type 'synthetic'"):
        DatasetOptions(type="paired", lq_dir=str(gt), gt_dir=str(gt), dead_leaves=2).check()
