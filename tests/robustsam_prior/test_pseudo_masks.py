"""Pseudo-instance masks on clean images: hand-made scenes whose objects are known, the folder layout the
trainer and the benchmark read, and every error."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from robustsam_prior.data.pseudo_masks import (
    PseudoMaskSource,
    colour_objects,
    depth_regions,
    relabel_by_area,
    write_pseudo_mask_set,
    write_shapes_set,
)


def _two_colour_scene(h=64, w=96, seed=0):
    """Left third red, the rest blue, with a green square in the blue part; mild noise."""
    rng = np.random.default_rng(seed)
    img = np.zeros((h, w, 3))
    img[:, : w // 3] = (0.8, 0.1, 0.1)
    img[:, w // 3 :] = (0.1, 0.2, 0.8)
    img[16:48, 56:88] = (0.1, 0.8, 0.2)
    truth = np.full((h, w), 2)
    truth[:, : w // 3] = 1
    truth[16:48, 56:88] = 3
    return np.clip(img + rng.normal(0, 0.02, img.shape), 0, 1), truth


def _same_partition(a, b, tolerance=0.005):
    """Label maps equal up to renaming, but for at most ``tolerance`` of the pixels (corners that
    Felzenszwalb's smoothing rounds off): each label of ``a`` maps to a different label of ``b``."""
    ids_a, ids_b = np.unique(a), np.unique(b)
    if len(ids_a) != len(ids_b):
        return False
    match = {int(i): np.bincount(b[a == i]).argmax() for i in ids_a}
    if len(set(match.values())) != len(ids_a):
        return False
    agree = sum(int(((a == i) & (b == j)).sum()) for i, j in match.items())
    return agree >= (1 - tolerance) * a.size


def test_relabel_by_area_orders_by_size_and_drops_small_regions():
    labels = np.array([[5, 5, 5, 7], [5, 5, 9, 7], [5, 5, 9, 7], [0, 0, 0, 0]])
    # areas: 5 -> 7 px, 0 -> 4, 7 -> 3, 9 -> 2 (of 16); min_area 3/16 keeps the first three
    out = relabel_by_area(labels, 3 / 16)
    expected = np.array([[1, 1, 1, 3], [1, 1, 0, 3], [1, 1, 0, 3], [2, 2, 2, 2]])
    np.testing.assert_array_equal(out, expected)
    assert out.dtype == np.int32


def test_colour_objects_finds_the_three_regions():
    img, truth = _two_colour_scene()
    labels = colour_objects(img)
    assert labels.max() == 3 and (labels > 0).all()
    assert _same_partition(labels, truth)
    # largest first: blue without the square (3072 px), red (2048), green (1024)
    areas = [int((labels == k).sum()) for k in (1, 2, 3)]
    assert areas == sorted(areas, reverse=True)


def test_colour_objects_merge_threshold_decides_merging():
    img, _ = _two_colour_scene()
    # a huge threshold merges every neighbour into one object
    assert colour_objects(img, merge_threshold=1000.0).max() == 1


def test_depth_regions_split_at_depth_jumps_only():
    depth = np.full((40, 60), 5.0)
    depth[:, 30:] = 2.0  # a jump of 60%: two regions
    depth[:20, :30] += np.linspace(0, 0.01, 30)  # a smooth ramp: no boundary
    labels = depth_regions(depth)
    truth = np.where(np.arange(60)[None] < 30, 1, 2).repeat(40, 0)
    assert _same_partition(labels, truth)
    # the same jump under the threshold is no boundary
    assert depth_regions(depth, jump=2.0).max() == 1


def test_depth_regions_split_big_regions_by_colour():
    img, truth = _two_colour_scene()
    flat = np.full(truth.shape, 3.0)
    assert depth_regions(flat).max() == 1
    assert _same_partition(depth_regions(flat, img, split_above=0.15), truth)
    assert depth_regions(flat, img, split_above=1.0).max() == 1  # no region is above 100%


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: colour_objects(np.zeros((8, 8))), r"\(H, W, 3\)"),
        (lambda: colour_objects(np.full((8, 8, 3), 2.0)), r"\[0, 1\]"),
        (lambda: depth_regions(np.zeros((8, 8))), "positive"),
        (lambda: depth_regions(np.ones((8, 8, 1))), r"\(H, W\)"),
        (lambda: depth_regions(np.ones((8, 8)), np.zeros((4, 4, 3))), "differ in size"),
    ],
)
def test_bad_inputs_raise(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_written_set_is_read_by_trainer_and_benchmark(tmp_path):
    from eval.datasets import open_segmentation_dataset
    from robustsam_prior.training.data import FolderDataset

    img, truth = _two_colour_scene(h=80, w=120)
    src = tmp_path / "src"
    src.mkdir()
    Image.fromarray((img * 255).round().astype(np.uint8)).save(src / "scene.png")
    depth = np.where(truth == 3, 1.0, 4.0).astype(np.float32)
    np.save(src / "scene.npy", depth)
    out = tmp_path / "set"
    recs = write_pseudo_mask_set(PseudoMaskSource("photo", (src / "scene.png",)), out, size=60, crops=2, seed=3)
    assert [r["name"] for r in recs] == ["photo_scene", "photo_scene_c1", "photo_scene_c2"]
    recs2 = write_pseudo_mask_set(PseudoMaskSource("depth", (src / "scene.png",), "depth", (src / "scene.npy",)),
                                  out, size=60)
    assert recs2[0]["objects"] >= 2
    write_shapes_set(out, count=2, size=32, seed=0)
    assert {p.name for p in out.glob("manifest_*.json")} == {"manifest_photo.json", "manifest_depth.json",
                                                          "manifest_shapes.json"}
    # the whole image, resized to longest side 60 (SAM's rounding: 40 x 60), segmented like the function says
    labels = np.asarray(Image.open(out / "masks" / "photo_scene.png"))
    assert labels.shape == (40, 60) and labels.max() == 3
    again = colour_objects(np.asarray(Image.open(out / "images" / "photo_scene.png")) / 255.0)
    np.testing.assert_array_equal(labels, again)
    # crops are squares of half the shorter side, resized to 60
    assert np.asarray(Image.open(out / "images" / "photo_scene_c1.png")).shape == (60, 60, 3)
    # same seed, same crops
    before = (out / "images" / "photo_scene_c2.png").read_bytes()
    write_pseudo_mask_set(PseudoMaskSource("photo", (src / "scene.png",)), out, size=60, crops=2, seed=3)
    assert (out / "images" / "photo_scene_c2.png").read_bytes() == before

    folder = FolderDataset(out / "images", out / "masks", size=60)
    assert len(folder) == 6 and folder[0].masks.shape[0] >= 1
    seg = open_segmentation_dataset(out)
    assert len(seg) == 6
    shapes_masks = next(i for i in seg.items if i.name == "shapes_00000").load_masks()
    from robustsam_prior.data.shapes import ShapesDataset

    np.testing.assert_array_equal(shapes_masks, ShapesDataset(length=2, height=32, width=32, seed=0)[0].masks)


def test_write_errors(tmp_path):
    img = tmp_path / "a.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(img)
    with pytest.raises(ValueError, match="unknown pseudo-mask method 'sift'"):
        write_pseudo_mask_set(PseudoMaskSource("x", (img,), "sift"), tmp_path / "o")
    with pytest.raises(ValueError, match="one depth map per image"):
        write_pseudo_mask_set(PseudoMaskSource("x", (img,), "depth"), tmp_path / "o")
    np.save(tmp_path / "a.npy", np.ones((4, 4), np.float32))
    with pytest.raises(ValueError, match=r"a\.npy: shape \(4, 4\) but its image"):
        write_pseudo_mask_set(PseudoMaskSource("x", (img,), "depth", (tmp_path / "a.npy",)), tmp_path / "o")
    (tmp_path / "b.npy").write_bytes(b"not numpy")
    with pytest.raises(ValueError, match=r"depth map .*b\.npy: unreadable"):
        write_pseudo_mask_set(PseudoMaskSource("x", (img,), "depth", (tmp_path / "b.npy",)), tmp_path / "o")
    with pytest.raises(ValueError, match="size >= 16"):
        write_pseudo_mask_set(PseudoMaskSource("x", (img,)), tmp_path / "o", size=8)
    with pytest.raises(ValueError, match="count >= 1"):
        write_shapes_set(tmp_path / "o", count=0)
