"""Image I/O: exact round trips, mode conversions, EXIF orientation and named errors.

Reference files are written with independent encoders (OpenCV, tifffile, Pillow directly) wherever
the thing under test is the reader.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import cv2
import numpy as np
import pytest
import tifffile
import torch
from PIL import Image, ImageFile, ImageOps

from robustsam_prior.core.io import (
    DEFAULT_MAX_PIXELS,
    IMAGE_EXTENSIONS,
    ImageReadError,
    apply_exif_orientation,
    get_max_pixels,
    is_image_file,
    read_image,
    set_max_pixels,
    to_numpy,
    to_tensor,
    write_image,
)
from robustsam_prior.inputs import collect_inputs


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def _u8(rng, shape):
    return rng.integers(0, 256, size=shape, dtype=np.uint8)


def _u16(rng, shape):
    return rng.integers(0, 65536, size=shape, dtype=np.uint16)


# ------------------------------------------------------------------------------------------- reading


def test_read_8bit_rgb_png_exact(tmp_path, rng):
    ref = _u8(rng, (7, 9, 3))
    Image.fromarray(ref, "RGB").save(tmp_path / "a.png")
    img = read_image(tmp_path / "a.png")
    assert img.pixels.dtype == np.float32 and img.pixels.shape == (7, 9, 3)
    assert img.bit_depth == 8 and img.alpha is None and img.format == "PNG"
    np.testing.assert_array_equal(img.pixels, ref.astype(np.float32) / 255)


def test_read_16bit_rgb_png_exact(tmp_path, rng):
    ref = _u16(rng, (6, 5, 3))
    assert cv2.imwrite(str(tmp_path / "a.png"), ref[..., ::-1])  # OpenCV wants BGR
    img = read_image(tmp_path / "a.png")
    assert img.bit_depth == 16 and img.alpha is None
    np.testing.assert_array_equal(img.pixels, ref.astype(np.float32) / 65535)


def test_read_16bit_rgba_png_exact(tmp_path, rng):
    ref = _u16(rng, (6, 5, 4))
    assert cv2.imwrite(str(tmp_path / "a.png"), ref[..., [2, 1, 0, 3]])
    img = read_image(tmp_path / "a.png")
    np.testing.assert_array_equal(img.pixels, ref[..., :3].astype(np.float32) / 65535)
    np.testing.assert_array_equal(img.alpha, ref[..., 3].astype(np.float32) / 65535)


def test_read_16bit_gray_png_exact(tmp_path, rng):
    ref = _u16(rng, (4, 8))
    assert cv2.imwrite(str(tmp_path / "g.png"), ref)
    img = read_image(tmp_path / "g.png")
    assert img.bit_depth == 16
    for c in range(3):
        np.testing.assert_array_equal(img.pixels[..., c], ref.astype(np.float32) / 65535)


def test_read_16bit_tiff_exact_with_planar_layout(tmp_path, rng):
    ref = _u16(rng, (5, 6, 3))
    tifffile.imwrite(tmp_path / "c.tif", ref, photometric="rgb")
    tifffile.imwrite(tmp_path / "p.tif", np.moveaxis(ref, -1, 0), photometric="rgb", planarconfig="separate")
    for name in ("c.tif", "p.tif"):
        img = read_image(tmp_path / name)
        assert img.bit_depth == 16 and img.format == "TIFF"
        np.testing.assert_array_equal(img.pixels, ref.astype(np.float32) / 65535)


def test_read_gray_la_rgba_palette(tmp_path, rng):
    gray = _u8(rng, (5, 5))
    Image.fromarray(gray, "L").save(tmp_path / "l.png")
    img = read_image(tmp_path / "l.png")
    assert img.alpha is None
    np.testing.assert_array_equal(img.pixels, np.repeat(gray[..., None], 3, 2) / np.float32(255))

    la = _u8(rng, (5, 5, 2))
    Image.fromarray(la, "LA").save(tmp_path / "la.png")
    img = read_image(tmp_path / "la.png")
    np.testing.assert_array_equal(img.pixels[..., 1], la[..., 0] / np.float32(255))
    np.testing.assert_array_equal(img.alpha, la[..., 1] / np.float32(255))

    rgba = _u8(rng, (5, 5, 4))
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    img = read_image(tmp_path / "rgba.png")
    np.testing.assert_array_equal(img.pixels, rgba[..., :3] / np.float32(255))
    np.testing.assert_array_equal(img.alpha, rgba[..., 3] / np.float32(255))

    # palette with index 1 transparent
    palette = [10, 20, 30, 200, 100, 50, 0, 255, 0] + [0] * (256 * 3 - 9)
    idx = np.array([[0, 1, 2], [2, 1, 0]], dtype=np.uint8)
    p = Image.fromarray(idx, "P")
    p.putpalette(palette)
    p.save(tmp_path / "p.png", transparency=1)
    img = read_image(tmp_path / "p.png")
    expected = np.array(palette[:9], dtype=np.float32).reshape(3, 3)[idx] / 255
    np.testing.assert_array_equal(img.pixels, expected)
    np.testing.assert_array_equal(img.alpha, (idx != 1).astype(np.float32))

    # palette without transparency: no alpha
    p.save(tmp_path / "p2.png")
    img = read_image(tmp_path / "p2.png")
    assert img.alpha is None
    np.testing.assert_array_equal(img.pixels, expected)


def test_read_jpeg_matches_pillow_decode(tmp_path, rng):
    Image.fromarray(_u8(rng, (16, 16, 3))).save(tmp_path / "a.jpg", quality=90)
    img = read_image(tmp_path / "a.jpg")
    ref = np.asarray(Image.open(tmp_path / "a.jpg").convert("RGB"), dtype=np.float32) / 255
    np.testing.assert_array_equal(img.pixels, ref)
    assert img.format == "JPEG" and img.bit_depth == 8


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_applied_like_pillow(tmp_path, rng, orientation):
    ref = _u8(rng, (4, 7, 3))  # non-square so rotations change the shape
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(ref).save(tmp_path / "o.png", exif=exif)
    img = read_image(tmp_path / "o.png")
    expected = np.asarray(ImageOps.exif_transpose(Image.open(tmp_path / "o.png")).convert("RGB"))
    np.testing.assert_array_equal(img.pixels, expected / np.float32(255))
    # the numpy version (used for 16-bit and TIFF files) against Pillow's transposes
    np.testing.assert_array_equal(apply_exif_orientation(ref, orientation), expected)
    if orientation in (5, 6, 7, 8):
        assert img.pixels.shape[:2] == (7, 4)


def test_exif_rotation_jpeg(tmp_path, rng):
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    Image.fromarray(_u8(rng, (8, 16, 3))).save(tmp_path / "r.jpg", exif=exif, quality=95)
    assert read_image(tmp_path / "r.jpg").pixels.shape == (16, 8, 3)


# ----------------------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("suffix", [".png", ".tif", ".bmp", ".webp"])
def test_8bit_round_trip_lossless_formats(tmp_path, rng, suffix):
    pixels = _u8(rng, (9, 11, 3)).astype(np.float32) / 255
    write_image(tmp_path / f"a{suffix}", pixels)
    img = read_image(tmp_path / f"a{suffix}")
    assert img.bit_depth == 8
    np.testing.assert_array_equal(img.pixels, pixels)


@pytest.mark.parametrize("suffix", [".png", ".tif", ".tiff"])
def test_16bit_round_trip_with_alpha(tmp_path, rng, suffix):
    pixels = _u16(rng, (9, 11, 3)).astype(np.float32) / 65535
    alpha = _u16(rng, (9, 11)).astype(np.float32) / 65535
    out = write_image(tmp_path / f"a{suffix}", pixels, alpha=alpha, bit_depth=16)
    img = read_image(out)
    assert img.bit_depth == 16
    np.testing.assert_array_equal(img.pixels, pixels)
    np.testing.assert_array_equal(img.alpha, alpha)
    if suffix == ".png":  # an independent decoder sees 16-bit RGBA
        raw = cv2.imread(str(out), cv2.IMREAD_UNCHANGED)
        assert raw.dtype == np.uint16 and raw.shape == (9, 11, 4)


@pytest.mark.parametrize("suffix,bit_depth", [(".png", 8), (".png", 16), (".tif", 16), (".tif", 8)])
def test_grayscale_write_and_gray_alpha(tmp_path, rng, suffix, bit_depth):
    top = 255 if bit_depth == 8 else 65535
    gray = rng.integers(0, top + 1, size=(5, 6)).astype(np.float32) / top
    write_image(tmp_path / f"g{suffix}", gray, bit_depth=bit_depth)
    img = read_image(tmp_path / f"g{suffix}")
    assert img.bit_depth == bit_depth
    np.testing.assert_array_equal(img.pixels, np.repeat(gray[..., None], 3, 2))
    alpha = rng.integers(0, top + 1, size=(5, 6)).astype(np.float32) / top
    write_image(tmp_path / f"ga{suffix}", gray, alpha=alpha, bit_depth=bit_depth)
    img = read_image(tmp_path / f"ga{suffix}")
    np.testing.assert_array_equal(img.alpha, alpha)
    np.testing.assert_array_equal(img.pixels[..., 2], gray)


def test_rgba_webp_lossless_round_trip(tmp_path, rng):
    pixels = _u8(rng, (8, 8, 3)).astype(np.float32) / 255
    alpha = _u8(rng, (8, 8)).astype(np.float32) / 255
    alpha[0, 0] = 0.0  # the colour under fully transparent pixels is kept too
    write_image(tmp_path / "a.webp", pixels, alpha=alpha)
    img = read_image(tmp_path / "a.webp")
    np.testing.assert_array_equal(img.alpha, alpha)
    np.testing.assert_array_equal(img.pixels, pixels)


def test_jpeg_write_quality_and_warnings(tmp_path, rng, caplog):
    pixels = _u8(rng, (16, 16, 3)).astype(np.float32) / 255
    with caplog.at_level(logging.WARNING, logger="robustsam_prior.core.io"):
        write_image(tmp_path / "a.jpg", pixels, alpha=np.ones((16, 16), np.float32), bit_depth=16, quality=80)
    messages = " ".join(r.getMessage() for r in caplog.records)
    assert "8-bit only" in messages and "transparency dropped" in messages
    # the bytes equal Pillow's own encoding at quality 80
    ref = tmp_path / "ref.jpg"
    Image.fromarray(np.round(pixels * 255).astype(np.uint8)).save(ref, quality=80)
    assert (tmp_path / "a.jpg").read_bytes() == ref.read_bytes()
    assert read_image(tmp_path / "a.jpg").bit_depth == 8


def test_write_clips_and_leaves_no_temp_files(tmp_path):
    pixels = np.full((3, 3, 3), 1.5, np.float32)
    pixels[0, 0] = -0.2
    write_image(tmp_path / "sub" / "c.png", pixels)
    img = read_image(tmp_path / "sub" / "c.png")
    assert img.pixels[0, 0, 0] == 0 and img.pixels[1, 1, 1] == 1
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["c.png"]


def test_write_errors(tmp_path):
    good = np.zeros((4, 4, 3), np.float32)
    with pytest.raises(ValueError, match=r"x\.gif.*unsupported suffix"):
        write_image(tmp_path / "x.gif", good)
    with pytest.raises(ValueError, match="bit_depth must be 8 or 16"):
        write_image(tmp_path / "x.png", good, bit_depth=12)
    with pytest.raises(ValueError, match="HxWx3 or HxW"):
        write_image(tmp_path / "x.png", np.zeros((4, 4, 2), np.float32))
    with pytest.raises(ValueError, match="empty image"):
        write_image(tmp_path / "x.png", np.zeros((0, 4, 3), np.float32))
    bad = good.copy()
    bad[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="pixels contain NaN"):
        write_image(tmp_path / "x.png", bad)
    with pytest.raises(ValueError, match="alpha shape"):
        write_image(tmp_path / "x.png", good, alpha=np.ones((3, 4), np.float32))
    with pytest.raises(ValueError, match="alpha contains NaN"):
        write_image(tmp_path / "x.png", good, alpha=np.full((4, 4), np.inf, np.float32))
    assert not (tmp_path / "x.png").exists()


# ---------------------------------------------------------------------------------------------- errors


def _png_bytes(rng):
    import io

    buf = io.BytesIO()
    Image.fromarray(_u8(rng, (64, 64, 3))).save(buf, format="PNG")
    return buf.getvalue()


def test_read_errors_name_file_and_reason(tmp_path, rng):
    with pytest.raises(ImageReadError, match=r"missing\.png.*file not found"):
        read_image(tmp_path / "missing.png")
    with pytest.raises(ImageReadError, match="is a directory"):
        read_image(tmp_path)
    (tmp_path / "zero.png").write_bytes(b"")
    with pytest.raises(ImageReadError, match=r"zero\.png.*empty file \(0 bytes\)"):
        read_image(tmp_path / "zero.png")
    (tmp_path / "notes.png").write_text("hello, not an image\n")
    with pytest.raises(ImageReadError, match=r"notes\.png.*not an image file") as info:
        read_image(tmp_path / "notes.png")
    assert isinstance(info.value, ValueError) and info.value.path == tmp_path / "notes.png"


def test_truncated_png_and_jpeg(tmp_path, rng):
    data = _png_bytes(rng)
    (tmp_path / "t.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageReadError, match=r"t\.png.*truncated"):
        read_image(tmp_path / "t.png")
    Image.fromarray(_u8(rng, (64, 64, 3))).save(tmp_path / "full.jpg")
    jpeg = (tmp_path / "full.jpg").read_bytes()
    (tmp_path / "t.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    with pytest.raises(ImageReadError, match=r"t\.jpg.*truncated"):
        read_image(tmp_path / "t.jpg")


def test_truncated_is_an_error_even_if_pillow_is_told_to_allow_it(tmp_path, rng):
    data = _png_bytes(rng)
    (tmp_path / "t.png").write_bytes(data[: len(data) // 2])
    previous = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = True
    try:
        with pytest.raises(ImageReadError, match="truncated"):
            read_image(tmp_path / "t.png")
        assert ImageFile.LOAD_TRUNCATED_IMAGES is True  # the global setting is restored
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = previous


def test_corrupt_png_data_and_truncated_tiff(tmp_path, rng):
    data = bytearray(_png_bytes(rng))
    start = data.index(b"IDAT") + 8
    data[start : start + 200] = bytes(200)  # garbage in the compressed stream
    (tmp_path / "c.png").write_bytes(bytes(data))
    with pytest.raises(ImageReadError, match=r"c\.png"):
        read_image(tmp_path / "c.png")
    tifffile.imwrite(tmp_path / "full.tif", _u16(rng, (64, 64, 3)), photometric="rgb")
    raw = (tmp_path / "full.tif").read_bytes()
    (tmp_path / "t.tif").write_bytes(raw[: len(raw) // 3])
    with pytest.raises(ImageReadError, match=r"t\.tif"):
        read_image(tmp_path / "t.tif")


# ---------------------------------------------------------------------------------------------- inputs


def test_is_image_file():
    assert all(is_image_file(f"a{ext.upper()}") for ext in IMAGE_EXTENSIONS)
    assert not is_image_file("a.txt") and not is_image_file("png")


def test_collect_inputs(tmp_path):
    (tmp_path / "b.png").write_bytes(b"x")
    (tmp_path / "a.txt").write_text("x")
    (tmp_path / ".hidden.png").write_bytes(b"x")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "c.jpg").write_bytes(b"x")
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "d.png").write_bytes(b"x")
    flat = collect_inputs(tmp_path)
    assert [rel.as_posix() for _, rel in flat] == ["a.txt", "b.png"]
    assert flat[1][0] == tmp_path / "b.png"
    deep = collect_inputs(tmp_path, recursive=True)
    assert [rel.as_posix() for _, rel in deep] == ["a.txt", "b.png", "sub/c.jpg"]
    assert collect_inputs(tmp_path / "sub" / "c.jpg") == [(tmp_path / "sub" / "c.jpg", Path("c.jpg"))]
    with pytest.raises(FileNotFoundError, match="nope"):
        collect_inputs(tmp_path / "nope")


# --------------------------------------------------------------------------------------------- tensors


def test_tensor_conversions(rng):
    pixels = rng.random((5, 7, 3), dtype=np.float32)
    t = to_tensor(pixels)
    assert t.shape == (1, 3, 5, 7) and t.dtype == torch.float32
    assert t[0, 1, 2, 3] == pixels[2, 3, 1]
    np.testing.assert_array_equal(to_numpy(t), pixels)
    np.testing.assert_array_equal(to_numpy(t[0].to(torch.float64)), pixels)
    with pytest.raises(ValueError, match="HxWx3"):
        to_tensor(pixels[..., 0])
    with pytest.raises(ValueError, match="batch of one"):
        to_numpy(torch.zeros(2, 3, 4, 4))
    with pytest.raises(ValueError, match=r"\(1, 3, H, W\)"):
        to_numpy(torch.zeros(4, 4))


# ------------------------------------------------------------------------------ limits and file types


def _write_every_format(folder: Path, rng, h: int, w: int) -> list[Path]:
    paths = []
    for name in ("a.png", "a.jpg", "a.bmp", "a.webp"):
        Image.fromarray(_u8(rng, (h, w, 3))).save(folder / name)
        paths.append(folder / name)
    cv2.imwrite(str(folder / "b16.png"), _u16(rng, (h, w, 3)))
    tifffile.imwrite(folder / "c.tif", _u16(rng, (h, w, 3)), photometric="rgb")
    return [*paths, folder / "b16.png", folder / "c.tif"]


def test_one_pixel_limit_for_every_format(tmp_path, rng):
    paths = _write_every_format(tmp_path, rng, 20, 30)
    for p in paths:
        assert read_image(p, max_pixels=600).pixels.shape == (20, 30, 3)
        with pytest.raises(ImageReadError, match=rf"{p.name}.*30x20 .*over the pixel limit.*599 pixels.*--max-pixels"):
            read_image(p, max_pixels=599)
    set_max_pixels(599)  # the process default, what --max-pixels sets
    try:
        assert get_max_pixels() == 599
        for p in paths:
            with pytest.raises(ImageReadError, match="over the pixel limit"):
                read_image(p)
    finally:
        set_max_pixels(None)
    assert get_max_pixels() == DEFAULT_MAX_PIXELS == 200_000_000
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="positive number of pixels"):
            set_max_pixels(bad)


def test_pillow_own_pixel_limit_is_not_a_second_limit(tmp_path, rng, monkeypatch):
    import warnings

    (path,) = [p for p in _write_every_format(tmp_path, rng, 20, 30) if p.name == "a.png"]
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # Pillow would warn above 100 and refuse above 200
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert read_image(path).pixels.shape == (20, 30, 3)
    assert Image.MAX_IMAGE_PIXELS == 100  # restored for everyone else


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header says width x height, with no image data at all."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


def test_pixel_limit_is_checked_from_the_header_before_decoding(tmp_path):
    # no pixel data: a reader that decoded first would report a truncated file instead
    (tmp_path / "huge.png").write_bytes(_png_header_only(12000, 12000))
    with pytest.raises(ImageReadError, match=r"12000x12000 is 144 megapixels, over the pixel limit of 100 megapixels"):
        read_image(tmp_path / "huge.png", max_pixels=100_000_000)
    with pytest.raises(ImageReadError, match="truncated|corrupt"):
        read_image(tmp_path / "huge.png")  # under the default limit it is decoded, and fails as it is
    # a tiled, compressed TIFF of 20000x20000 (1.8 MB) that would decode to 400 MB
    tiles = (np.zeros((1024, 1024), np.uint8) for _ in range(20 * 20))
    tifffile.imwrite(tmp_path / "bomb.tif", tiles, shape=(20000, 20000), dtype=np.uint8, tile=(1024, 1024),
                     compression="zlib", compressionargs={"level": 1})
    assert (tmp_path / "bomb.tif").stat().st_size < 3_000_000
    with pytest.raises(ImageReadError, match=r"bomb\.tif.*20000x20000 is 400 megapixels, over the pixel limit "
                                             r"of 200 megapixels \(200000000 pixels"):
        read_image(tmp_path / "bomb.tif")


def test_animated_and_multi_page_files_are_refused_not_cut(tmp_path, rng):
    frames = [Image.fromarray(_u8(rng, (8, 10, 3))) for _ in range(3)]
    frames[0].save(tmp_path / "anim.png", save_all=True, append_images=frames[1:])
    frames[0].save(tmp_path / "anim.webp", save_all=True, append_images=frames[1:], lossless=True)
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    (tmp_path / "gif_named.png").write_bytes((tmp_path / "anim.gif").read_bytes())
    with tifffile.TiffWriter(tmp_path / "pages.tif") as tw:
        for _ in range(2):
            tw.write(_u8(rng, (8, 10, 3)), photometric="rgb")
    for name, what in [("anim.png", "animated PNG (3 frames)"), ("anim.webp", "animated WEBP (3 frames)"),
                       ("gif_named.png", "animated GIF (3 frames)"), ("pages.tif", "multi-page TIFF (2 pages)")]:
        with pytest.raises(ImageReadError, match=rf"{name}.*{re.escape(what)}.*lose the rest"):
            read_image(tmp_path / name)
    # still images in the same containers are read; a TIFF's reduced-resolution copy is not a second image
    frames[0].save(tmp_path / "one.png", save_all=True, append_images=[])
    frames[0].save(tmp_path / "one.webp", save_all=True, append_images=[], lossless=True)
    image = _u8(rng, (8, 10, 3))
    with tifffile.TiffWriter(tmp_path / "thumb.tif") as tw:
        tw.write(image, photometric="rgb")
        tw.write(image[::2, ::2], photometric="rgb", subfiletype=1)
    for name in ("one.png", "one.webp"):
        np.testing.assert_array_equal(read_image(tmp_path / name).pixels, np.asarray(frames[0]) / np.float32(255))
    np.testing.assert_array_equal(read_image(tmp_path / "thumb.tif").pixels, image / np.float32(255))


def test_fifos_and_devices_are_refused_without_opening(tmp_path, make_fifo):
    fifo = make_fifo(tmp_path / "pipe.png")
    with pytest.raises(ImageReadError, match=r"pipe\.png.*is a FIFO \(named pipe\), not an image file"):
        read_image(fifo)
    with pytest.raises(ImageReadError, match=r"/dev/zero.*is a character device, not an image file$"):
        read_image("/dev/zero")
    with pytest.raises(ImageReadError, match=r"/dev/zero.*character device, not an image file or a folder"):
        collect_inputs("/dev/zero")
    with pytest.raises(ImageReadError, match=r"pipe\.png.*FIFO.*not an image file or a folder"):
        collect_inputs(fifo)
    # in a folder, special files are listed (and then refused by name) rather than silently dropped
    (tmp_path / "a.png").write_bytes(b"x")
    (tmp_path / "gone.png").symlink_to(tmp_path / "missing.png")
    assert [rel.as_posix() for _, rel in collect_inputs(tmp_path)] == ["a.png", "gone.png", "pipe.png"]
    with pytest.raises(ImageReadError, match=r"gone\.png.*file not found"):
        read_image(tmp_path / "gone.png")


def test_collect_inputs_leaves_out_excluded_trees(tmp_path):
    (tmp_path / "a.png").write_bytes(b"x")
    (tmp_path / "out" / "out").mkdir(parents=True)
    (tmp_path / "out" / "a.png").write_bytes(b"x")
    (tmp_path / "out" / "out" / "a.png").write_bytes(b"x")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.png").write_bytes(b"x")
    (tmp_path / "outlink").symlink_to(tmp_path / "out")  # links to folders are not followed
    everything = [rel.as_posix() for _, rel in collect_inputs(tmp_path, recursive=True)]
    assert everything == ["a.png", "out/a.png", "out/out/a.png", "sub/b.png"]
    left = [rel.as_posix() for _, rel in collect_inputs(tmp_path, recursive=True, exclude=[tmp_path / "out"])]
    assert left == ["a.png", "sub/b.png"]


def test_output_location_checks(tmp_path):
    from robustsam_prior.inputs import check_output_location, refuse_overwriting_inputs

    d = tmp_path / "in"
    (d / "sub").mkdir(parents=True)
    (d / "x.png").write_bytes(b"x")
    (tmp_path / "link").symlink_to(d)
    (tmp_path / "hard.png").hardlink_to(d / "x.png")
    for output in (d, tmp_path / "link", tmp_path / "in" / "sub" / ".."):
        with pytest.raises(ValueError, match=r"OUTPUT .* is the INPUT folder .*originals would be overwritten"):
            check_output_location(d, output)
    with pytest.raises(ValueError, match="is the INPUT file"):
        check_output_location(d / "x.png", tmp_path / "link" / "x.png")
    assert check_output_location(d, d / "out") == ()  # not walked without recursion
    assert check_output_location(d, d / "out", recursive=True) == (d / "out",)
    assert check_output_location(d, tmp_path / "elsewhere", recursive=True) == ()
    with pytest.raises(ValueError, match=r"output '.*in/x\.png' is the input file '.*in/x\.png'"):
        refuse_overwriting_inputs([(d / "x.png", d / "x.png")])
    with pytest.raises(ValueError, match="is the input file"):
        refuse_overwriting_inputs([(tmp_path / "hard.png", d / "x.png")])  # another name, the same inode
    with pytest.raises(ValueError, match="is the input file"):  # one input's output over another input
        refuse_overwriting_inputs([(d / "x.png", d / "y.png"), (d / "y.png", d / "z.png")])
    refuse_overwriting_inputs([(d / "x.png", tmp_path / "out" / "x.png")])
