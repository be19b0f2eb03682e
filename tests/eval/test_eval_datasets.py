"""Paired-folder matching (unmatched names reported), dataset layouts, instance-mask readers."""

import numpy as np
import pytest
from PIL import Image

from eval.datasets import (
    SegmentationDataset,
    file_list_hash,
    open_restoration_dataset,
    open_segmentation_dataset,
    pair_folders,
    read_instance_masks,
)


def _img(path, value=0.5, size=(12, 10)):
    path.parent.mkdir(parents=True, exist_ok=True)
    a = np.full((size[1], size[0], 3), int(value * 255), np.uint8)
    Image.fromarray(a).save(path)
    return path


def test_pair_by_name_then_stem_and_report_unmatched(tmp_path):
    lq, gt = tmp_path / "pred", tmp_path / "gt"
    for n in ("a.png", "b.png", "c.png", "only_pred.png"):
        _img(lq / n)
    for n in ("a.png", "b.jpg", "c.png", "only_gt.png"):
        _img(gt / n)
    (lq / "notes.txt").write_text("not an image")
    ds = pair_folders(lq, gt)
    assert [(it.name, it.lq.name, it.gt.name) for it in ds] == [
        ("a.png", "a.png", "a.png"),
        ("b.png", "b.png", "b.jpg"),
        ("c.png", "c.png", "c.png"),
    ]
    assert ds.unmatched_lq == ["only_pred.png"] and ds.unmatched_gt == ["only_gt.png"]
    assert ds.describe()["unmatched_lq"] == 1 and len(ds) == 3
    strict = pair_folders(lq, gt, match="name")
    assert [it.name for it in strict] == ["a.png", "c.png"] and "b.png" in strict.unmatched_lq
    # the file-list hash identifies the matched pairs
    assert strict.file_list_hash() != ds.file_list_hash()
    assert pair_folders(lq, gt).file_list_hash() == ds.file_list_hash()


def test_prefix_matching_for_sots(tmp_path):
    for n in ("1400_1.png", "1400_2.png", "1401_1.png", "9999_1.png"):
        _img(tmp_path / "hazy" / n)
    for n in ("1400.png", "1401.png"):
        _img(tmp_path / "gt" / n)
    ds = open_restoration_dataset(tmp_path)
    assert [(it.name, it.gt.name) for it in ds] == [
        ("1400_1.png", "1400.png"),
        ("1400_2.png", "1400.png"),
        ("1401_1.png", "1401.png"),
    ]
    assert ds.unmatched_lq == ["9999_1.png"] and ds.unmatched_gt == []


def test_gopro_and_generic_layouts(tmp_path):
    g = tmp_path / "gopro"
    for seq in ("GOPR0384_11_00", "GOPR0385_11_01"):
        for n in ("000001.png", "000002.png"):
            _img(g / seq / "blur" / n)
            _img(g / seq / "sharp" / n)
    ds = open_restoration_dataset(g)
    assert len(ds) == 4 and ds.items[0].name == "GOPR0384_11_00/000001.png" and ds.name == "gopro"
    p = tmp_path / "pairs"
    _img(p / "input" / "x.png")
    _img(p / "target" / "x.png")
    assert [it.name for it in open_restoration_dataset(p, name="mine")] == ["x.png"]
    with pytest.raises(ValueError, match="unrecognised dataset layout"):
        open_restoration_dataset(tmp_path / "gopro" / "GOPR0384_11_00" / "blur")
    with pytest.raises(ValueError, match="GoPro layout"):
        open_restoration_dataset(p, layout="gopro")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        open_restoration_dataset(tmp_path / "nope")


def test_pair_folder_errors(tmp_path):
    _img(tmp_path / "a" / "x.png")
    _img(tmp_path / "b" / "y.png")
    with pytest.raises(ValueError, match="no file names match.*'x.png' vs 'y.png'"):
        pair_folders(tmp_path / "a", tmp_path / "b")
    with pytest.raises(FileNotFoundError, match="ground-truth folder"):
        pair_folders(tmp_path / "a", tmp_path / "missing")
    with pytest.raises(NotADirectoryError, match="not a folder"):
        pair_folders(tmp_path / "a" / "x.png", tmp_path / "b")
    with pytest.raises(ValueError, match="unknown match mode"):
        pair_folders(tmp_path / "a", tmp_path / "b", match="fuzzy")


def test_file_list_hash_is_order_independent():
    assert file_list_hash(["b", "a"]) == file_list_hash(["a", "b"]) != file_list_hash(["a"])


def test_read_instance_masks_label_maps_and_folders(tmp_path):
    lab = np.zeros((6, 8), np.uint8)
    lab[1:3, 1:3] = 7
    lab[4:6, 5:8] = 3
    Image.fromarray(lab).save(tmp_path / "lab.png")
    m = read_instance_masks(tmp_path / "lab.png")
    assert m.shape == (2, 6, 8)
    assert np.array_equal(m[0], lab == 3) and np.array_equal(m[1], lab == 7)  # increasing value order
    binary = (lab > 0).astype(np.uint8) * 255  # MSRA10K-style 0/255 map: one instance
    Image.fromarray(binary).save(tmp_path / "bin.png")
    assert read_instance_masks(tmp_path / "bin.png").shape == (1, 6, 8)
    rgb = np.zeros((6, 8, 3), np.uint8)
    rgb[0, 0] = (255, 0, 0)
    rgb[5, 7] = (0, 0, 255)
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    assert read_instance_masks(tmp_path / "rgb.png").sum(axis=(1, 2)).tolist() == [1, 1]
    Image.fromarray(np.zeros((6, 8), np.uint8)).save(tmp_path / "empty.png")
    assert read_instance_masks(tmp_path / "empty.png").shape == (0, 6, 8)
    d = tmp_path / "inst"
    d.mkdir()
    Image.fromarray(binary).save(d / "0.png")
    Image.fromarray(255 - binary).save(d / "1.png")
    f = read_instance_masks(d)
    assert f.shape == (2, 6, 8) and not (f[0] & f[1]).any()


def test_read_instance_masks_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_instance_masks(tmp_path / "none.png")
    (tmp_path / "bad.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match="not a readable mask image"):
        read_instance_masks(tmp_path / "bad.png")
    d = tmp_path / "d"
    d.mkdir()
    with pytest.raises(ValueError, match="mask folder is empty"):
        read_instance_masks(d)
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(d / "a.png")
    Image.fromarray(np.zeros((5, 4), np.uint8)).save(d / "b.png")
    with pytest.raises(ValueError, match="differs from"):
        read_instance_masks(d)
    (d / "b.png").write_bytes(b"junk")
    with pytest.raises(ValueError, match="b.png: not a readable mask image"):
        read_instance_masks(d)


def test_open_segmentation_dataset(tmp_path):
    _img(tmp_path / "images" / "one.jpg", size=(8, 6))
    _img(tmp_path / "images" / "two.png", size=(8, 6))
    _img(tmp_path / "images" / "three.png", size=(8, 6))
    (tmp_path / "masks").mkdir()
    lab = np.zeros((6, 8), np.uint8)
    lab[:3] = 1
    Image.fromarray(lab).save(tmp_path / "masks" / "one.png")
    (tmp_path / "masks" / "two").mkdir()
    Image.fromarray(lab * 255).save(tmp_path / "masks" / "two" / "m0.png")
    ds = open_segmentation_dataset(tmp_path)
    assert [it.name for it in ds] == ["one", "two"]
    assert ds.describe()["unmatched_images"] == ["three.png"]
    item = ds.items[0]
    assert item.load_image().shape == (6, 8, 3) and item.load_masks().shape == (1, 6, 8)
    with pytest.raises(FileNotFoundError, match="images/ and masks/"):
        open_segmentation_dataset(tmp_path / "images")
    empty = tmp_path / "e"
    _img(empty / "images" / "x.png")
    (empty / "masks").mkdir()
    with pytest.raises(ValueError, match="no image in images/ has masks"):
        open_segmentation_dataset(empty)


def test_shapes_wrapper():
    from robustsam_prior.data import ShapesDataset

    ds = SegmentationDataset.from_shapes(ShapesDataset(length=2, height=32, width=32, seed=1))
    assert len(ds) == 2 and ds.describe()["seed"] == 1 and len(ds.describe()["file_list_sha256"]) == 64
    assert ds.items[1].load_masks().shape[1:] == (32, 32)
