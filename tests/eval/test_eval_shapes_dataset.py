"""The built-in procedural shapes dataset: deterministic, exact non-overlapping masks, valid ranges."""

import numpy as np
import pytest

from robustsam_prior.data import SHAPE_KINDS, ShapesDataset, make_shapes_scene


def test_scene_invariants():
    ds = ShapesDataset(length=6, height=64, width=80, num_shapes=(2, 5), seed=3)
    assert len(ds) == 6 and ds.name(2) == "shapes_00002"
    for i in range(len(ds)):
        s = ds[i]
        assert s.image.shape == (64, 80, 3) and s.image.dtype == np.float32
        assert 0 <= s.image.min() and s.image.max() <= 1
        assert s.labels.shape == (64, 80) and s.labels.dtype == np.int32
        assert s.masks.dtype == bool and s.masks.shape[1:] == (64, 80)
        assert len(s.masks) == len(s.instance_ids) == len(s.kinds)
        assert set(s.kinds) <= set(SHAPE_KINDS)
        # each mask is exactly the visible part of its shape in the label map, so masks never overlap
        for m, k in zip(s.masks, s.instance_ids):
            assert np.array_equal(m, s.labels == k)
            assert m.sum() >= 0.01 * 64 * 80
        assert s.masks.sum(0).max() <= 1


def test_deterministic_and_seed_dependent():
    a, b = ShapesDataset(length=3, seed=5), ShapesDataset(length=3, seed=5)
    for i in range(3):
        assert np.array_equal(a[i].image, b[i].image) and np.array_equal(a[i].labels, b[i].labels)
    assert not np.array_equal(a[0].image, ShapesDataset(length=3, seed=6)[0].image)
    assert not np.array_equal(a[0].image, a[1].image)
    assert np.array_equal(a[-1].labels, a[2].labels)
    assert np.array_equal(make_shapes_scene(seed=9).image, make_shapes_scene(seed=9).image)


def test_shapes_are_textured_and_distinct_from_background():
    s = make_shapes_scene(height=96, width=96, num_shapes=4, seed=1)
    for m in s.masks:
        inside = s.image[m]
        assert inside.std(0).max() > 0.005  # textured, not flat


def test_errors():
    with pytest.raises(ValueError, match="rng or seed"):
        make_shapes_scene(seed=1, rng=np.random.default_rng(1))
    with pytest.raises(ValueError, match="at least 8x8"):
        make_shapes_scene(height=4, width=64)
    with pytest.raises(ValueError, match="num_shapes"):
        make_shapes_scene(num_shapes=(3, 2))
    with pytest.raises(ValueError, match="length"):
        ShapesDataset(length=0)
    with pytest.raises(IndexError, match="out of range"):
        ShapesDataset(length=2)[2]
    assert ShapesDataset(length=2, seed=4).describe()["seed"] == 4
