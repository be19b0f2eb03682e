"""RobustSAM training scenes from folders (``data.source: folder``): real PNG/TIFF files written here,
8- and 16-bit label masks, a non-square image resized with its aspect ratio kept, lazy loading, every
error naming its file, scenes without an instance skipped, and batches that mix image sizes."""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from robustsam_prior.core.io import ImageReadError
from robustsam_prior.training.data import DataError, FolderDataset, PairSampler, make_pair, read_label_mask

TINY = dict(img_size=64, patch=8, enc_dim=32, enc_depth=2, enc_heads=2, global_attn=[1], window=4,
            prompt_dim=64, dec_depth=1, dec_mlp=64, dec_heads=2, iou_hidden=32, mask_in_chans=8)


def _image(h: int, w: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _labels(h: int, w: int, values: list[int], dtype=np.uint8) -> np.ndarray:
    """Vertical bands: background then one band per value (ids not consecutive on purpose)."""
    lab = np.zeros((h, w), dtype)
    edges = np.linspace(w // 4, w, len(values) + 1).astype(int)
    for v, a, b in zip(values, edges[:-1], edges[1:]):
        lab[h // 5:, a:b] = v
    return lab


@pytest.fixture
def folders(tmp_path) -> tuple[Path, Path]:
    """a.png 40x30 (non-square) + 8-bit PNG mask {1, 5}; b.jpg 32x32 + 16-bit PNG mask {300, 65535};
    c.png 24x36 + 16-bit TIFF mask {7}."""
    import tifffile

    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir()
    masks.mkdir()
    Image.fromarray(_image(30, 40, 0)).save(images / "a.png")
    Image.fromarray(_labels(30, 40, [1, 5])).save(masks / "a.png")
    Image.fromarray(_image(32, 32, 1)).save(images / "b.jpg", quality=95)
    Image.fromarray(_labels(32, 32, [300, 65535], np.uint16)).save(masks / "b.png")
    Image.fromarray(_image(36, 24, 2)).save(images / "c.png")
    tifffile.imwrite(masks / "c.tif", _labels(36, 24, [7], np.uint16))
    (images / "notes.txt").write_text("not an image")
    return images, masks


def _nearest(labels: np.ndarray, h: int, w: int) -> np.ndarray:
    """Reference nearest-neighbour resize: Pillow's NEAREST on a 32-bit integer image."""
    return np.asarray(Image.fromarray(labels.astype(np.int32)).resize((w, h), Image.NEAREST))


def test_folder_round_trip_8_and_16_bit_masks_non_square(folders):
    images, masks = folders
    ds = FolderDataset(images, masks, size=64)
    assert [p.name for p, _ in ds.items] == ["a.png", "b.jpg", "c.png"]
    assert [m.name for _, m in ds.items] == ["a.png", "b.png", "c.tif"]

    a = ds[0]  # 40x30 -> longest side 64, aspect kept: 64x48
    assert a.image.shape == (48, 64, 3) and a.image.dtype == np.float32
    assert 0.0 <= a.image.min() and a.image.max() <= 1.0
    src = np.asarray(Image.open(images / "a.png")).astype(np.float32) / 255.0
    np.testing.assert_allclose(a.image, cv2.resize(src, (64, 48), interpolation=cv2.INTER_AREA), atol=1e-6)
    np.testing.assert_array_equal(a.instance_ids, [1, 5])
    ref = _nearest(_labels(30, 40, [1, 5]), 48, 64)
    assert a.masks.shape == (2, 48, 64) and a.masks.dtype == bool
    np.testing.assert_array_equal(a.masks[0], ref == 1)
    np.testing.assert_array_equal(a.masks[1], ref == 5)

    b = ds[1]  # 16-bit PNG: values above 255 survive (an 8-bit read would merge or clip them)
    np.testing.assert_array_equal(b.instance_ids, [300, 65535])
    np.testing.assert_array_equal(b.masks[1], _nearest(_labels(32, 32, [300, 65535], np.uint16), 64, 64) == 65535)
    c = ds[2]  # portrait 24x36 -> 43x64 (SAM's rounding: int(24 * 64 / 36 + 0.5))
    assert c.image.shape == (64, 43, 3) and c.masks.shape == (1, 64, 43)
    np.testing.assert_array_equal(c.instance_ids, [7])
    assert read_label_mask(folders[1] / "c.tif").dtype == np.int64

    # a pair from the non-square scene keeps its size; prompts fall inside the target mask
    pair = make_pair(a.image, a.masks, degradations=["gaussian_noise"], rng=np.random.default_rng(0))
    assert pair.clear.shape == pair.degraded.shape == (3, 48, 64) and pair.mask.shape == (48, 64)
    assert all(pair.mask[int(y), int(x)] == 1 for x, y in pair.points.tolist())

    assert len(FolderDataset(images, masks, size=64, exclude=["b*"])) == 2
    assert [p.name for p, _ in FolderDataset(images, masks, size=64, include=["*.png"]).items] == ["a.png", "c.png"]


def test_folder_loads_lazily_with_a_small_cache(folders, monkeypatch):
    ds = FolderDataset(*folders, size=32, cache=1)
    loaded = []
    real = ds.load
    monkeypatch.setattr(ds, "load", lambda i: loaded.append(i) or real(i))
    assert loaded == []  # nothing decoded when the dataset is made
    ds[0], ds[0], ds[1], ds[0]
    assert loaded == [0, 1, 0]  # one scene cached: 0 again is free, after 1 it was dropped


def _write(folder: Path, name: str, array: np.ndarray) -> Path:
    folder.mkdir(exist_ok=True)
    Image.fromarray(array).save(folder / name)
    return folder / name


def test_folder_errors_name_the_file(tmp_path):
    images, masks = tmp_path / "im", tmp_path / "mk"
    images.mkdir()
    masks.mkdir()
    with pytest.raises(DataError, match=r"images folder .*im: no image files match include=\['\*'\]"):
        FolderDataset(images, masks, size=32)
    with pytest.raises(DataError, match=r"masks folder .*nowhere: not found"):
        FolderDataset(images, tmp_path / "nowhere", size=32)
    _write(images, "lonely.png", _image(8, 8, 0))
    with pytest.raises(DataError, match=r"image .*lonely\.png: no mask named lonely\{\.png,\.tif,\.tiff\} in"):
        FolderDataset(images, masks, size=32)
    _write(masks, "lonely.png", _labels(8, 8, [1]))
    _write(masks, "lonely.tif", _labels(8, 8, [1]))
    with pytest.raises(DataError, match=r"lonely\.png: several masks with its stem: lonely\.png, lonely\.tif"):
        FolderDataset(images, masks, size=32)
    (masks / "lonely.tif").unlink()

    _write(masks, "lonely.png", _labels(8, 9, [1]))  # one column too many: found from the headers, up front
    with pytest.raises(DataError, match=r"mask .*lonely\.png: 9x8 pixels \(WxH\) but its image lonely\.png is 8x8"):
        FolderDataset(images, masks, size=32)
    # an image whose EXIF orientation turns it (read_image applies it): 8x9 stored, 9x8 shown, so it fits
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(_image(9, 8, 0)).save(images / "lonely.png", exif=exif)
    assert FolderDataset(images, masks, size=32)[0].masks.shape[1:] == (28, 32)
    _write(images, "lonely.png", _image(8, 8, 0))
    _write(masks, "lonely.png", _image(8, 8, 1))  # RGB
    with pytest.raises(DataError, match=r"mask .*lonely\.png: a mode RGB colour image; a mask must be a single-channel"):
        FolderDataset(images, masks, size=32)[0]
    (masks / "lonely.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(DataError, match=r"mask .*lonely\.png: not a readable image"):
        FolderDataset(images, masks, size=32)[0]
    (masks / "lonely.png").write_bytes(b"")
    with pytest.raises(DataError, match=r"mask .*lonely\.png: empty file"):
        FolderDataset(images, masks, size=32)[0]
    _write(masks, "lonely.png", _labels(8, 8, [1]))
    (images / "lonely.png").write_bytes(b"not an image at all")
    with pytest.raises(ImageReadError, match=r"lonely\.png"):
        FolderDataset(images, masks, size=32)[0]
    with pytest.raises(ValueError, match="size must be >= 1"):
        FolderDataset(images, masks, size=0)


def test_scenes_without_an_instance_are_skipped_with_a_warning(tmp_path, caplog):
    images, masks = tmp_path / "im", tmp_path / "mk"
    for name, seed in (("empty", 0), ("full", 1)):
        _write(images, f"{name}.png", _image(16, 16, seed))
    _write(masks, "empty.png", np.zeros((16, 16), np.uint8))
    _write(masks, "full.png", _labels(16, 16, [3]))
    ds = FolderDataset(images, masks, size=16)
    assert ds[0].masks.shape == (0, 16, 16)  # not an error when loading ...
    sampler = PairSampler(ds, batch_size=4, seed=0, degradations=[], include_identity=True)
    with caplog.at_level(logging.WARNING, logger="robustsam_prior.training.data"):
        batches = [b for _, b in zip(range(3), sampler)]
    # ... the sampler skips it (once warned, naming the file) and draws another scene
    assert sampler.skipped == {0}
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1 and "empty.png: no instance" in warnings[0] and "skipped" in warnings[0]
    full = torch.from_numpy(ds[1].image).permute(2, 0, 1)
    assert all(torch.equal(p.clear, full) for b in batches for p in b)

    only_empty = FolderDataset(images, masks, size=16, include=["empty*"])
    with pytest.raises(DataError, match="no scene of the 1 has an instance mask"):
        next(iter(PairSampler(only_empty, batch_size=1, seed=0, degradations=[])))


def test_a_batch_may_mix_image_sizes(folders):
    from robustsam_prior.modeling.build import build_robustsam_model
    from robustsam_prior.training.trainer import AntiDegradationConfig, AntiDegradationTrainer

    torch.manual_seed(0)
    model = build_robustsam_model(TINY)
    trainer = AntiDegradationTrainer(model, AntiDegradationConfig(prompt="both"))
    ds = FolderDataset(*folders, size=64)
    rng = np.random.default_rng(0)
    pairs = [make_pair(ds[i].image, ds[i].masks, degradations=["gaussian_noise"], rng=rng) for i in (0, 2)]
    assert pairs[0].clear.shape != pairs[1].clear.shape
    model.train()
    model.set_bn_mode("batch")
    mixed = trainer.compute_losses(pairs)
    alone = [trainer.compute_losses([p]) for p in pairs]
    for k in mixed:  # the mean over pairs of each pair's terms (BatchNorm statistics are per image)
        torch.testing.assert_close(mixed[k], (alone[0][k] + alone[1][k]) / 2, rtol=1e-4, atol=1e-5)
    assert torch.isfinite(mixed["total"])
    trainer.step(pairs)  # and a whole optimisation step runs
    with pytest.raises(ValueError, match="pair 0 of the batch: clear and degraded images differ in size"):
        bad = make_pair(ds[0].image, ds[0].masks, degradations=[], rng=rng)
        bad.degraded = bad.degraded[:, :-1]
        trainer.compute_losses([bad])
