"""Image files in and out: the one place where uint8/uint16, grayscale, palette and alpha exist.

Everything inside the library works on float32 RGB in [0, 1] (``HxWx3`` numpy arrays here,
``(B, 3, H, W)`` tensors elsewhere, see :func:`to_tensor`). This module converts once at the file
boundary:

* reading: PNG, JPEG, TIFF, BMP, WebP (and whatever else Pillow opens), 8- and 16-bit, grayscale /
  LA / RGBA / palette (with transparency) -> RGB plus a separate alpha plane; EXIF orientation
  applied; the whole file is decoded so truncated or corrupt files fail here with an
  :class:`ImageReadError` that names the file and the reason, never later in a network.
  Before anything is decoded the file must be a regular file (a FIFO or a device is refused without
  being opened, so nothing blocks), its header's width x height must be within the pixel limit
  (:data:`DEFAULT_MAX_PIXELS`, changed per call or with :func:`set_max_pixels`; the same limit for
  every format, so a small compressed file that would decode to gigabytes is refused while it is
  still a few kilobytes of header), and it must hold one image: animated PNG/WebP/GIF and multi-page
  TIFF are refused rather than silently cut to their first frame (a camera JPEG's embedded preview
  and a TIFF's reduced-resolution pages do not count).
* writing: atomic (temporary file + fsync + rename, :mod:`robustsam_prior.core.fileio`), keeping the bit
  depth that was asked for where the format has it (16-bit PNG and TIFF), alpha written back where
  the format has it (PNG, TIFF, WebP).

Listing a command's input files and checking where its outputs go is :mod:`robustsam_prior.inputs`.

Pillow cannot hold 16-bit colour images (it silently reduces 48-bit PNG and TIFF to 8 bits), so
16-bit PNGs are decoded with OpenCV and TIFFs with tifffile; both read the samples exactly
(value / 65535). :func:`read_tiff_samples` gives a TIFF's samples as stored, before that conversion
(what a label map needs), and :func:`is_tiff` tells a TIFF by its signature.
"""

from __future__ import annotations

import io
import logging
import os
import stat
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    import torch

logger = logging.getLogger(__name__)

#: Suffixes (lower case) that folder commands treat as images.
IMAGE_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp")

# suffix -> (format name, supports 16 bit, supports alpha)
_WRITE_FORMATS: dict[str, tuple[str, bool, bool]] = {
    ".png": ("PNG", True, True),
    ".jpg": ("JPEG", False, False),
    ".jpeg": ("JPEG", False, False),
    ".tif": ("TIFF", True, True),
    ".tiff": ("TIFF", True, True),
    ".bmp": ("BMP", False, False),
    ".webp": ("WEBP", False, True),
}

_EXIF_ORIENTATION = 0x0112
# the first four bytes of a TIFF and of a BigTIFF, little- and big-endian
_TIFF_SIGNATURES = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
# guards Pillow's process-global settings (LOAD_TRUNCATED_IMAGES, MAX_IMAGE_PIXELS) while we change them
_PILLOW_GLOBALS_LOCK = threading.Lock()

#: The default pixel limit: width x height of an image (of one frame), checked from the file's header
#: before decoding. 200 megapixels decode to 2.4 GB of float32 RGB.
DEFAULT_MAX_PIXELS = 200_000_000
_max_pixels = DEFAULT_MAX_PIXELS


def set_max_pixels(limit: int | None) -> None:
    """Set the pixel limit :func:`read_image` uses when it is given none (None = the default)."""
    global _max_pixels
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ValueError(f"max_pixels must be a positive number of pixels, got {limit!r}")
    _max_pixels = DEFAULT_MAX_PIXELS if limit is None else limit


def get_max_pixels() -> int:
    """The pixel limit :func:`read_image` uses when it is given none."""
    return _max_pixels


def _pixels(n: int) -> str:
    """``n`` pixels in words: megapixels (3 significant digits) from 0.1 MP, else the count."""
    return f"{n / 1e6:.3g} megapixels" if n >= 100_000 else f"{n} pixels"


def check_pixel_limit(path: str | os.PathLike, width: int, height: int, limit: int | None = None) -> None:
    """Raise :class:`ImageReadError` if ``width x height`` is over ``limit`` (None = the current one)."""
    limit = _max_pixels if limit is None else limit
    if width * height > limit:
        exact = f" ({limit} pixels)" if limit >= 100_000 else ""
        raise ImageReadError(
            path,
            f"{width}x{height} is {_pixels(width * height)}, over the pixel limit of {_pixels(limit)}{exact}; "
            "raise it with --max-pixels if the image is genuine",
        )


class ImageReadError(ValueError):
    """An image file could not be read; ``path`` and ``reason`` say which and why."""

    def __init__(self, path: str | os.PathLike, reason: str) -> None:
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"cannot read image {str(self.path)!r}: {reason}")


@dataclass
class ImageData:
    """A decoded image.

    Attributes:
        pixels: ``HxWx3`` float32 RGB in [0, 1] (grayscale is replicated to three channels).
        alpha: ``HxW`` float32 in [0, 1] (1 = opaque), or None when the file has no transparency.
        bit_depth: 8 or 16, the sample depth of the file (what :func:`write_image` should keep).
        path: the file it came from.
        format: the container format, upper case as Pillow names it ("PNG", "JPEG", "TIFF", ...).
    """

    pixels: np.ndarray
    alpha: np.ndarray | None
    bit_depth: int
    path: Path
    format: str

    @property
    def height(self) -> int:
        return int(self.pixels.shape[0])

    @property
    def width(self) -> int:
        return int(self.pixels.shape[1])


def is_image_file(path: str | os.PathLike) -> bool:
    """True if the suffix is one of :data:`IMAGE_EXTENSIONS` (case-insensitive); no I/O."""
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


# ----------------------------------------------------------------------------------------- reading


def apply_exif_orientation(array: np.ndarray, orientation: int | None) -> np.ndarray:
    """Rotate/flip ``array`` (``HxW[xC]``) so that EXIF ``orientation`` (1..8) becomes 1.

    The same transforms as ``PIL.ImageOps.exif_transpose`` (EXIF 2.32, tag 0x0112), for arrays
    Pillow cannot hold (16-bit colour). Unknown values leave the array as it is.
    """
    if orientation == 2:
        array = array[:, ::-1]
    elif orientation == 3:
        array = array[::-1, ::-1]
    elif orientation == 4:
        array = array[::-1]
    elif orientation == 5:
        array = array.swapaxes(0, 1)
    elif orientation == 6:
        array = np.rot90(array, k=-1)
    elif orientation == 7:
        array = array[::-1, ::-1].swapaxes(0, 1)
    elif orientation == 8:
        array = np.rot90(array, k=1)
    return np.ascontiguousarray(array)


def _to_unit(array: np.ndarray, path: Path) -> tuple[np.ndarray, int]:
    """Integer/float samples -> float32 in [0, 1] and the bit depth they had."""
    if array.dtype == np.bool_:
        return array.astype(np.float32), 8
    if array.dtype == np.uint8:
        return array.astype(np.float32) / 255.0, 8
    if array.dtype == np.uint16:
        return array.astype(np.float32) / 65535.0, 16
    if array.dtype in (np.int32, np.int64, np.uint32):  # Pillow mode "I": 16-bit data in 32-bit ints
        if array.size and (array.min() < 0 or array.max() > 65535):
            raise ImageReadError(path, f"32-bit integer samples outside 0..65535 ({array.dtype})")
        return array.astype(np.float32) / 65535.0, 16
    if np.issubdtype(array.dtype, np.floating):
        array = array.astype(np.float32)
        if not np.isfinite(array).all():
            raise ImageReadError(path, "floating-point samples contain NaN or infinity")
        if array.size and (array.min() < 0.0 or array.max() > 1.0):
            logger.warning("%s: floating-point samples outside [0, 1] were clipped", path)
        return np.clip(array, 0.0, 1.0), 16
    raise ImageReadError(path, f"unsupported sample type {array.dtype}")


def _split_channels(array: np.ndarray, path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """``HxW`` / ``HxWx{1,2,3,4}`` (RGB order) -> (``HxWx3``, ``HxW`` alpha or None)."""
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3 or array.shape[2] not in (1, 2, 3, 4):
        raise ImageReadError(path, f"unsupported image layout {tuple(array.shape)}")
    c = array.shape[2]
    alpha = array[..., c - 1] if c in (2, 4) else None
    color = array[..., :3] if c >= 3 else np.repeat(array[..., :1], 3, axis=2)
    return np.ascontiguousarray(color), (None if alpha is None else np.ascontiguousarray(alpha))


_FILE_TYPES = (
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def file_kind(mode: int) -> str:
    """What a non-regular, non-directory ``st_mode`` is, in words."""
    for test, words in _FILE_TYPES:
        if test(mode):
            return words
    return "not a regular file"


def _png_is_16bit(path: Path) -> bool:
    with open(path, "rb") as f:
        head = f.read(26)
    # PNG signature (8) + IHDR length (4) + b"IHDR" (4) + width (4) + height (4) + bit depth (1)
    return len(head) == 26 and head[12:16] == b"IHDR" and head[24] == 16


def _read_png16(path: Path, orientation: int | None) -> np.ndarray:
    import cv2

    data = np.fromfile(path, dtype=np.uint8)
    array = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if array is None:
        raise ImageReadError(path, "OpenCV could not decode this 16-bit PNG")
    if array.ndim == 3 and array.shape[2] == 3:
        array = array[..., ::-1]  # BGR -> RGB
    elif array.ndim == 3 and array.shape[2] == 4:
        array = array[..., [2, 1, 0, 3]]  # BGRA -> RGBA
    return apply_exif_orientation(array, orientation)


def _tiff_frames(tif) -> int:
    """How many full-resolution images a TIFF holds (reduced-resolution copies and masks not counted).

    Stops at the second one: that is enough to refuse the file.
    """
    frames = 0
    for page in tif.pages:
        if not int(getattr(page, "subfiletype", 0) or 0) & 0b101:  # bit 0: reduced resolution, bit 2: mask
            frames += 1
            if frames > 1:
                break
    return frames


def is_tiff(path: str | os.PathLike) -> bool:
    """Whether the file starts with a TIFF or BigTIFF signature (either byte order)."""
    with open(path, "rb") as f:
        return f.read(4) in _TIFF_SIGNATURES


def read_tiff_samples(path: str | os.PathLike, max_pixels: int | None = None) -> np.ndarray:
    """The image of a single-image TIFF as stored: ``(H, W)`` or ``(H, W, C)`` in the file's own sample
    type (label maps keep their integers), with its EXIF orientation applied. The pixel limit
    (``max_pixels``, None = the current one) is checked from the header before anything is decoded.

    Raises:
        ImageReadError: a multi-page, corrupt or unsupported TIFF, or one over the pixel limit.
    """
    import tifffile

    path = Path(path)
    max_pixels = _max_pixels if max_pixels is None else max_pixels

    try:
        with tifffile.TiffFile(path) as tif:
            if not tif.pages:
                raise ImageReadError(path, "TIFF has no pages")
            page = tif.pages.first if hasattr(tif.pages, "first") else tif.pages[0]
            # from the header, before a pixel is decoded
            depth = int(getattr(page, "imagedepth", 1) or 1)
            check_pixel_limit(path, int(page.imagewidth), int(page.imagelength) * depth, max_pixels)
            if len(tif.pages) > 1 and _tiff_frames(tif) > 1:
                raise ImageReadError(
                    path,
                    f"multi-page TIFF ({len(tif.pages)} pages): only single images are read, and cutting it "
                    "to its first page would lose the rest; split the pages into files first",
                )
            array = page.asarray()
            axes = page.axes
            orientation_tag = page.tags.get("Orientation")
            orientation = int(orientation_tag.value) if orientation_tag is not None else None
    except ImageReadError:
        raise
    except Exception as exc:  # tifffile raises TiffFileError, ValueError, struct.error, ...
        raise ImageReadError(path, f"corrupt or unsupported TIFF ({type(exc).__name__}: {exc})") from exc
    if array.ndim == 3 and axes.startswith("S"):  # planar configuration: samples first
        array = np.moveaxis(array, 0, -1)
    if array.ndim == 3 and array.shape[2] > 4:
        raise ImageReadError(path, f"unsupported TIFF layout {tuple(array.shape)} (axes {axes})")
    return apply_exif_orientation(array, orientation)


def _pillow_open(path: Path):
    """Open with Pillow (the header only) without Pillow's own pixel limit: ours is checked next."""
    from PIL import Image

    with _PILLOW_GLOBALS_LOCK:
        previous = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None
        try:
            return Image.open(path)
        finally:
            Image.MAX_IMAGE_PIXELS = previous


def _pillow_decode(path: Path, max_pixels: int):
    """Open, check size and frames, and fully decode with Pillow; every failure becomes an ImageReadError."""
    from PIL import ImageFile, UnidentifiedImageError

    try:
        im = _pillow_open(path)
    except UnidentifiedImageError as exc:
        raise ImageReadError(path, "not an image file (format not recognised)") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageReadError(path, f"corrupt image header ({exc})") from exc
    try:
        check_pixel_limit(path, *im.size, max_pixels)
        frames = _pillow_frames(im, path)
        if frames > 1 and im.format != "MPO":  # MPO: a JPEG with an embedded preview; the first is the photo
            raise ImageReadError(
                path,
                f"animated {im.format or 'image'} ({frames} frames): only still images are read, and "
                "cutting it to its first frame would lose the rest; extract the frames first",
            )
    except BaseException:
        im.close()
        raise
    # LOAD_TRUNCATED_IMAGES is process-global; someone (another library) may have set it. We want
    # a truncated file to be an error, so force it off while decoding.
    with _PILLOW_GLOBALS_LOCK:
        previous = ImageFile.LOAD_TRUNCATED_IMAGES
        ImageFile.LOAD_TRUNCATED_IMAGES = False
        try:
            im.load()
        except (OSError, SyntaxError, ValueError, EOFError) as exc:
            reason = str(exc) or type(exc).__name__
            if "truncated" in reason.lower() or isinstance(exc, EOFError):
                reason = f"truncated file ({reason})"
            else:
                reason = f"corrupt image data ({reason})"
            raise ImageReadError(path, reason) from exc
        finally:
            ImageFile.LOAD_TRUNCATED_IMAGES = previous
    return im


def _pillow_frames(im, path: Path) -> int:
    """The number of frames of an opened Pillow image (1 for still formats)."""
    try:
        return int(getattr(im, "n_frames", 1))
    except Exception as exc:  # counting GIF frames reads the file: any decoding error
        raise ImageReadError(path, f"corrupt image data ({exc})") from exc


def read_image(path: str | os.PathLike, *, max_pixels: int | None = None) -> ImageData:
    """Read an image file into float32 RGB [0, 1] plus an optional alpha plane.

    ``max_pixels`` is the pixel limit (width x height, read from the header before decoding); None
    means the current default (:func:`set_max_pixels`, initially :data:`DEFAULT_MAX_PIXELS`).

    Raises:
        ImageReadError: the file is missing, empty, not a regular file, not an image, over the pixel
            limit, animated or multi-page, truncated or corrupt; the message names the file and the
            reason.
    """
    path = Path(path)
    limit = _max_pixels if max_pixels is None else max_pixels
    try:
        st = path.stat()
    except FileNotFoundError:
        raise ImageReadError(path, "file not found") from None
    except OSError as exc:
        raise ImageReadError(path, f"cannot access it ({exc.strerror or exc})") from exc
    if stat.S_ISDIR(st.st_mode):
        raise ImageReadError(path, "is a directory, not a file")
    if not stat.S_ISREG(st.st_mode):  # opening a FIFO would block, a device would stream forever
        raise ImageReadError(path, f"is {file_kind(st.st_mode)}, not an image file")
    if st.st_size == 0:
        raise ImageReadError(path, "empty file (0 bytes)")

    if is_tiff(path):
        # TIFF (and BigTIFF) go to tifffile: Pillow reduces 16-bit colour to 8 bits and cannot
        # open some valid layouts (16-bit gray + alpha).
        return _image_data(read_tiff_samples(path, limit), path, "TIFF")

    im = _pillow_decode(path, limit)  # decodes the whole file: truncation and corrupt data fail here
    try:
        return _from_pillow(im, path)
    finally:
        im.close()


def _from_pillow(im, path: Path) -> ImageData:
    """A decoded Pillow image -> ImageData (EXIF orientation applied, alpha split off)."""
    from PIL import ImageOps

    fmt = (im.format or path.suffix.lstrip(".")).upper()
    try:
        orientation = im.getexif().get(_EXIF_ORIENTATION)
    except Exception:  # a broken EXIF block must not make a readable image unreadable
        logger.warning("%s: unreadable EXIF block ignored", path)
        orientation = None

    if fmt == "PNG" and _png_is_16bit(path):
        array = _read_png16(path, orientation)
    else:
        if orientation not in (None, 1):
            im = ImageOps.exif_transpose(im)
        mode = im.mode
        has_trns = "transparency" in im.info
        if mode in ("P", "PA", "RGBa", "RGBX", "CMYK", "YCbCr", "LAB", "HSV", "1", "La"):
            target = {"1": "L", "La": "LA", "CMYK": "RGB", "YCbCr": "RGB", "LAB": "RGB", "HSV": "RGB"}
            if mode in ("P", "PA", "RGBa", "RGBX"):
                target_mode = "RGBA" if (mode in ("PA", "RGBa") or has_trns) else "RGB"
            else:
                target_mode = target[mode]
            im = im.convert(target_mode)
        elif mode in ("L", "RGB") and has_trns:
            im = im.convert("LA" if mode == "L" else "RGBA")
        array = np.asarray(im)
        if im.mode.startswith("I;16"):
            array = array.astype(np.uint16)

    return _image_data(array, path, fmt)


def _image_data(array: np.ndarray, path: Path, fmt: str) -> ImageData:
    color, alpha = _split_channels(array, path)
    pixels, bit_depth = _to_unit(color, path)
    alpha_f = None if alpha is None else _to_unit(alpha, path)[0]
    return ImageData(pixels=pixels, alpha=alpha_f, bit_depth=bit_depth, path=path, format=fmt)


# ----------------------------------------------------------------------------------------- writing


def _quantize(array: np.ndarray, bit_depth: int) -> np.ndarray:
    top = 255.0 if bit_depth == 8 else 65535.0
    dtype = np.uint8 if bit_depth == 8 else np.uint16
    return np.round(np.clip(array, 0.0, 1.0) * top).astype(dtype)


def _encode(fmt: str, samples: np.ndarray, bit_depth: int, quality: int | None) -> bytes:
    """``HxWxC`` integer samples (C = 1 gray, 2 gray+alpha, 3 RGB, 4 RGBA) -> file bytes."""
    channels = samples.shape[2]
    if fmt == "TIFF":
        import tifffile

        buf = io.BytesIO()
        photometric = "rgb" if channels >= 3 else "minisblack"
        extras = ["unassalpha"] if channels in (2, 4) else None
        tifffile.imwrite(
            buf, samples if channels > 1 else samples[..., 0], photometric=photometric, extrasamples=extras
        )
        return buf.getvalue()
    if fmt == "PNG" and bit_depth == 16:
        import cv2

        if channels == 2:  # OpenCV writes 1, 3 or 4 channels: gray+alpha becomes RGBA
            samples = np.concatenate([np.repeat(samples[..., :1], 3, axis=2), samples[..., 1:]], axis=2)
            channels = 4
        order = {1: [0], 3: [2, 1, 0], 4: [2, 1, 0, 3]}[channels]
        ok, encoded = cv2.imencode(".png", np.ascontiguousarray(samples[..., order]))
        if not ok:
            raise OSError("OpenCV failed to encode a 16-bit PNG")
        return encoded.tobytes()

    from PIL import Image

    mode = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}[channels]
    im = Image.fromarray(samples if channels > 1 else samples[..., 0], mode=mode)
    buf = io.BytesIO()
    if fmt == "JPEG":
        im.save(buf, format="JPEG", quality=95 if quality is None else int(quality))
    elif fmt == "WEBP":
        if quality is None:
            im.save(buf, format="WEBP", lossless=True, exact=True)  # exact: keep RGB under alpha 0
        else:
            im.save(buf, format="WEBP", quality=int(quality))
    else:
        im.save(buf, format=fmt)
    return buf.getvalue()


def write_image(
    path: str | os.PathLike,
    pixels: np.ndarray,
    alpha: np.ndarray | None = None,
    bit_depth: int = 8,
    *,
    quality: int | None = None,
) -> Path:
    """Write an image atomically; the format comes from the suffix.

    Args:
        path: destination; suffix one of .png .jpg .jpeg .tif .tiff .bmp .webp.
        pixels: ``HxWx3`` RGB or ``HxW`` grayscale, float in [0, 1] (values outside are clipped).
        alpha: optional ``HxW`` float in [0, 1]; written for PNG, TIFF and WebP, dropped with a
            warning for JPEG and BMP.
        bit_depth: 8 or 16; 16 is kept for PNG and TIFF, other formats write 8 bits with a warning.
        quality: JPEG quality (default 95) or lossy-WebP quality (default: lossless WebP).

    Returns:
        The path written.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in _WRITE_FORMATS:
        raise ValueError(
            f"cannot write {str(path)!r}: unsupported suffix {path.suffix!r}; use one of "
            f"{', '.join(sorted(_WRITE_FORMATS))}"
        )
    fmt, has16, has_alpha = _WRITE_FORMATS[suffix]
    if bit_depth not in (8, 16):
        raise ValueError(f"cannot write {str(path)!r}: bit_depth must be 8 or 16, not {bit_depth!r}")
    pixels = np.asarray(pixels)
    if pixels.ndim == 3 and pixels.shape[2] == 1:
        pixels = pixels[..., 0]
    if not (pixels.ndim == 2 or (pixels.ndim == 3 and pixels.shape[2] == 3)):
        raise ValueError(f"cannot write {str(path)!r}: pixels must be HxWx3 or HxW, got {pixels.shape}")
    if pixels.shape[0] == 0 or pixels.shape[1] == 0:
        raise ValueError(f"cannot write {str(path)!r}: empty image {pixels.shape}")
    if not np.isfinite(pixels).all():
        raise ValueError(f"cannot write {str(path)!r}: pixels contain NaN or infinity")
    if alpha is not None:
        alpha = np.asarray(alpha)
        if alpha.shape != pixels.shape[:2]:
            raise ValueError(
                f"cannot write {str(path)!r}: alpha shape {alpha.shape} != image size {pixels.shape[:2]}"
            )
        if not np.isfinite(alpha).all():
            raise ValueError(f"cannot write {str(path)!r}: alpha contains NaN or infinity")
    if bit_depth == 16 and not has16:
        logger.warning("%s: %s is 8-bit only; writing 8 bits instead of 16", path, fmt)
        bit_depth = 8
    if alpha is not None and not has_alpha:
        logger.warning("%s: %s has no alpha channel; transparency dropped", path, fmt)
        alpha = None

    color = pixels[..., None] if pixels.ndim == 2 else pixels
    stacked = color if alpha is None else np.concatenate([color, alpha[..., None]], axis=2)
    data = _encode(fmt, _quantize(stacked.astype(np.float32), bit_depth), bit_depth, quality)

    from .fileio import atomic_write

    with atomic_write(path, "wb") as f:
        f.write(data)
    return path


# ------------------------------------------------------------------------------------------ tensors


def to_tensor(pixels: np.ndarray) -> torch.Tensor:
    """``HxWx3`` array in [0, 1] -> ``(1, 3, H, W)`` float32 tensor (a copy)."""
    import torch

    pixels = np.asarray(pixels)
    if pixels.ndim != 3 or pixels.shape[2] != 3:
        raise ValueError(f"to_tensor expects an HxWx3 array, got shape {pixels.shape}")
    return torch.from_numpy(np.ascontiguousarray(pixels, dtype=np.float32).transpose(2, 0, 1).copy())[None]


def to_numpy(tensor: torch.Tensor) -> np.ndarray:
    """``(1, 3, H, W)`` or ``(3, H, W)`` tensor -> ``HxWx3`` float32 array (on CPU, detached)."""
    if tensor.ndim == 4:
        if tensor.shape[0] != 1:
            raise ValueError(f"to_numpy expects a batch of one image, got shape {tuple(tensor.shape)}")
        tensor = tensor[0]
    if tensor.ndim != 3 or tensor.shape[0] != 3:
        raise ValueError(f"to_numpy expects (1, 3, H, W) or (3, H, W), got shape {tuple(tensor.shape)}")
    return np.ascontiguousarray(tensor.detach().float().cpu().permute(1, 2, 0).numpy())
