"""Where RobustSAM checkpoints come from: resolution (path, environment, cache folder) and download.

Resolution order of :func:`resolve_checkpoint` (documented in the README, "Checkpoints"):

1. an explicit path (a string or ``Path`` that is not a variant name) must exist;
2. otherwise ``$ROBUSTSAM_CHECKPOINT`` if set (it must then point to an existing file);
3. otherwise the cache folder ``$ROBUSTSAM_RESTORE_CACHE/checkpoints`` (default
   ``~/.cache/robustsam-restore/checkpoints``) holding the official file name
   ``robustsam_checkpoint_{b,l,h}.pth`` of the requested variant.

A missing checkpoint raises :class:`CheckpointNotFoundError` naming the file, where it is published
(the RobustSAM README links the three files on Hugging Face) and where to put
it. :func:`download` fetches a file for users who are online: it resumes a partial ``.part`` file
with an HTTP ``Range`` request, checks size and sha256, and renames atomically.
"""

from __future__ import annotations

import http.client
import logging
import os
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path

from .checkpoint import CheckpointError
from .fileio import sha256_file

logger = logging.getLogger(__name__)

ENV_CHECKPOINT = "ROBUSTSAM_CHECKPOINT"
ENV_CACHE = "ROBUSTSAM_RESTORE_CACHE"
# the RobustSAM README ("Setup", step 6) links these files
HF_BASE = "https://huggingface.co/robustsam/robustsam/resolve/main/model_checkpoint"
VARIANT_FILES = {
    "vit_b": "robustsam_checkpoint_b.pth",
    "vit_l": "robustsam_checkpoint_l.pth",
    "vit_h": "robustsam_checkpoint_h.pth",
}
# approximate sizes from a public mirror listing, for the error message only
APPROX_SIZES = {"vit_b": "613 MB", "vit_l": "1.65 GB", "vit_h": "about 3.2 GB"}
_ALIASES = {"b": "vit_b", "l": "vit_l", "h": "vit_h", "base": "vit_b", "large": "vit_l", "huge": "vit_h"}
DEFAULT_VARIANT = "vit_b"
# variants of robustsam_prior.modeling.build.VARIANTS without an official file -> the recipes that train them
TRAINED_HERE = {"robustsam-tiny": "pipelines/train_robustsam_tiny_stage1.yml, then train_robustsam_tiny_stage2.yml"}


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """No checkpoint at the given path, in ``$ROBUSTSAM_CHECKPOINT`` or in the cache folder."""


class DownloadError(RuntimeError):
    """A download failed or the file did not match its expected size/sha256; no final file is left."""


def cache_dir() -> Path:
    """``$ROBUSTSAM_RESTORE_CACHE`` or ``~/.cache/robustsam-restore`` (the root of every cache)."""
    env = os.environ.get(ENV_CACHE)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "robustsam-restore"


def checkpoint_dir() -> Path:
    """The folder where official checkpoints are looked for: ``cache_dir() / "checkpoints"``."""
    return cache_dir() / "checkpoints"


def normalize_variant(variant: str) -> str | None:
    """``"vit_b"``/``"b"``/``"base"`` -> ``"vit_b"`` (etc.); ``None`` if not a variant name."""
    v = variant.strip().lower()
    if v in VARIANT_FILES:
        return v
    return _ALIASES.get(v)


def checkpoint_url(variant: str) -> str:
    """The published URL of the official RobustSAM checkpoint of ``variant``."""
    v = normalize_variant(variant)
    if v is None:
        raise ValueError(f"unknown RobustSAM variant {variant!r}; known: {', '.join(VARIANT_FILES)}")
    return f"{HF_BASE}/{VARIANT_FILES[v]}"


def resolve_checkpoint(path_or_variant: str | os.PathLike | Mapping | None = None) -> Path:
    """Find a RobustSAM checkpoint file (see the module docstring for the order).

    ``path_or_variant`` is a file path, a variant name (``"vit_b"``, ``"vit_l"``, ``"vit_h"``; also
    ``"b"``/``"l"``/``"h"``), ``None`` (the default variant, ``vit_b``) or a dict config (custom
    architecture: only an explicit path or ``$ROBUSTSAM_CHECKPOINT`` can name its file). Raises
    :class:`CheckpointNotFoundError` with download instructions when nothing is found.
    """
    variant: str | None = None
    if isinstance(path_or_variant, Mapping):  # a custom architecture (dict config) has no official file
        env = os.environ.get(ENV_CHECKPOINT)
        if env:
            return resolve_checkpoint(Path(env))
        raise CheckpointNotFoundError(
            f"a custom RobustSAM config (dict) needs its checkpoint: pass a file path or set ${ENV_CHECKPOINT}"
        )
    if path_or_variant is not None:
        text = os.fspath(path_or_variant)
        if text in TRAINED_HERE:
            if os.environ.get(ENV_CHECKPOINT):
                return resolve_checkpoint(Path(os.environ[ENV_CHECKPOINT]))
            raise CheckpointNotFoundError(
                f"{text} has no published checkpoint: this project trains it ({TRAINED_HERE[text]}); pass the "
                "trained file's path")
        variant = normalize_variant(text) if isinstance(path_or_variant, str) else None
        if variant is None:
            path = Path(text).expanduser()
            if path.is_file():
                return path
            if path.is_dir():
                raise CheckpointNotFoundError(f"{path}: is a folder, expected a checkpoint file")
            raise CheckpointNotFoundError(
                f"{path}: checkpoint file not found (pass an existing .pth/.safetensors file, or a variant "
                f"name {', '.join(VARIANT_FILES)} to use ${ENV_CHECKPOINT} or the cache folder)"
            )
    env = os.environ.get(ENV_CHECKPOINT)
    if env:
        path = Path(env).expanduser()
        if not path.is_file():
            raise CheckpointNotFoundError(f"{path}: checkpoint file not found (set by ${ENV_CHECKPOINT})")
        return path
    variant = variant or DEFAULT_VARIANT
    path = checkpoint_dir() / VARIANT_FILES[variant]
    if path.is_file():
        return path
    raise CheckpointNotFoundError(
        f"no RobustSAM checkpoint for {variant}: {path} does not exist and ${ENV_CHECKPOINT} is not set.\n"
        f"  Download {VARIANT_FILES[variant]} ({APPROX_SIZES[variant]}) from\n"
        f"    {checkpoint_url(variant)}\n"
        f"  (published by the RobustSAM authors) and either put it in {path.parent}, set "
        f"${ENV_CHECKPOINT} to its path, or pass the path explicitly.\n"
        f"  Online, this does it: python -c \"from robustsam_prior.hub import download_checkpoint; "
        f"download_checkpoint('{variant}')\""
    )


def download_checkpoint(variant: str = DEFAULT_VARIANT, *, sha256: str | None = None) -> Path:
    """Download the official checkpoint of ``variant`` into :func:`checkpoint_dir` (resumable)."""
    v = normalize_variant(variant)
    if v is None:
        raise ValueError(f"unknown RobustSAM variant {variant!r}; known: {', '.join(VARIANT_FILES)}")
    return download(checkpoint_url(v), checkpoint_dir() / VARIANT_FILES[v], sha256=sha256)


def _verify(path: Path, size: int | None, sha256: str | None, url: str) -> None:
    actual = path.stat().st_size
    if size is not None and actual != size:
        raise DownloadError(f"{url}: downloaded {actual} bytes, expected {size}")
    if sha256 is not None:
        digest = sha256_file(path)
        if digest.lower() != sha256.lower():
            raise DownloadError(f"{url}: sha256 mismatch: got {digest}, expected {sha256.lower()}")


def download(
    url: str,
    dest: str | os.PathLike,
    sha256: str | None = None,
    size: int | None = None,
    *,
    retries: int = 3,
    timeout: float = 60.0,
    chunk_size: int = 1 << 20,
    progress: bool = True,
) -> Path:
    """Download ``url`` to ``dest`` and return ``dest``.

    Bytes go to ``dest + ".part"``; an existing ``.part`` (an earlier interrupted run) is resumed
    with ``Range: bytes=N-`` (a server that ignores the range restarts it from zero). A connection
    dropped mid-transfer is resumed up to ``retries`` times. At the end the size (``size``, else the
    server's announced length) and ``sha256`` are checked: on a mismatch the partial file is deleted
    and :class:`DownloadError` is raised, leaving no ``dest``; on success the file is renamed to
    ``dest`` atomically. An existing ``dest`` that passes the checks is returned without a download;
    one that fails them raises (it is never overwritten silently).
    """
    from tqdm import tqdm

    dest = Path(dest)
    if dest.exists():
        _verify(dest, size, sha256, f"{dest} (existing file)")
        logger.info("%s already present", dest)
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    if part.exists() and size is not None and part.stat().st_size > size:
        part.unlink()  # longer than the whole file: not a prefix of it
    expected_total = size
    attempt = 0
    bar = None
    try:
        while True:
            have = part.stat().st_size if part.exists() else 0
            if size is not None and have == size:
                break
            request = urllib.request.Request(url, headers={"User-Agent": "robustsam-restore"})
            if have:
                request.add_header("Range", f"bytes={have}-")
            try:
                with urllib.request.urlopen(request, timeout=timeout) as resp:
                    status = resp.status
                    if have and status != 206:
                        logger.info("%s: server ignored the range request; restarting", url)
                        have = 0
                    length = resp.headers.get("Content-Length")
                    if length is not None and expected_total is None:
                        expected_total = have + int(length)
                    if bar is None:
                        bar = tqdm(total=expected_total, initial=have, unit="B", unit_scale=True,
                                   desc=dest.name, disable=not progress)
                    else:
                        bar.reset(total=expected_total)
                        bar.update(have)
                    with open(part, "ab" if have else "wb") as f:
                        while block := resp.read(chunk_size):
                            f.write(block)
                            bar.update(len(block))
                        f.flush()
                        os.fsync(f.fileno())
                got = part.stat().st_size
                if expected_total is not None and got < expected_total:
                    raise http.client.IncompleteRead(b"", expected_total - got)
                break
            except urllib.error.HTTPError as e:
                if e.code == 416 and have:  # range beyond the end: the .part may already be complete
                    break
                raise DownloadError(f"{url}: HTTP {e.code} {e.reason}") from e
            except (http.client.HTTPException, urllib.error.URLError, OSError, TimeoutError) as e:
                attempt += 1
                if attempt > retries:
                    raise DownloadError(
                        f"{url}: download interrupted ({type(e).__name__}: {e}); {part} keeps "
                        f"{part.stat().st_size if part.exists() else 0} bytes, run again to resume"
                    ) from e
                logger.warning("%s: interrupted (%s); resuming (attempt %d of %d)", url, e, attempt, retries)
    finally:
        if bar is not None:
            bar.close()
    try:
        _verify(part, size if size is not None else expected_total, sha256, url)
    except DownloadError:
        part.unlink(missing_ok=True)
        raise
    with open(part, "rb") as f:
        os.fsync(f.fileno())
    os.replace(part, dest)
    logger.info("downloaded %s -> %s", url, dest)
    return dest
