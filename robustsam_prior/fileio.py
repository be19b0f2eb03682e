"""Atomic file writing, and ``pkg://`` paths to folders inside installed packages.

Atomic writing: a reader never sees a half-written file, and a failure leaves the old one.

Everything this project writes (images, JSON manifests, checkpoints, cache entries) goes through
:func:`atomic_write`: data goes to a temporary file in the destination folder, is flushed and
fsync'ed, then renamed over the destination with ``os.replace`` (atomic on POSIX and Windows).

Temporary files are named ``.rsr-tmp-<pid>-<8 random characters>.tmp`` (plus the destination's
suffix for :func:`atomic_path`), whatever the destination is called, so that any name the file
system accepts (up to 255 bytes) can be written. A process killed while writing leaves its temporary
file behind; :func:`clean_stale_temp_files`, called when a folder run starts, removes the files of
that pattern whose process is gone (only that pattern, so a user's own files are never touched).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import os
import re
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

logger = logging.getLogger(__name__)

#: The prefix of every temporary file this project writes (followed by ``<pid>-``).
TEMP_PREFIX = ".rsr-tmp-"
# mkstemp's 8 random characters are drawn from [a-z0-9_]; a kept suffix is at most 32 characters
_TEMP_NAME = re.compile(r"^\.rsr-tmp-(\d{1,10})-[a-z0-9_]{8}\.tmp(\.[^./]{1,31})?$")
_MAX_KEPT_SUFFIX = 32
#: A temporary file untouched for this long is stale even if its pid is in use (pids are reused).
STALE_TEMP_SECONDS = 24 * 3600


def _mkstemp(folder: Path, suffix: str = "") -> tuple[int, str]:
    """A new temporary file in ``folder`` named by the project's pattern (module docstring)."""
    if len(suffix) > _MAX_KEPT_SUFFIX or not suffix.startswith(".") or "." in suffix[1:] or "/" in suffix:
        suffix = ""
    return tempfile.mkstemp(dir=folder, prefix=f"{TEMP_PREFIX}{os.getpid()}-", suffix=f".tmp{suffix}")


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
    """Open a temporary file beside ``path``; on success rename it to ``path``, on error delete it."""
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_write supports modes 'w' and 'wb', not {mode!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _mkstemp(path.parent)
    os.chmod(tmp, _umask_mode())
    try:
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` for writers that want a file name, not a file object.

    The temporary file keeps ``suffix`` (default: the destination's suffix; dropped if longer than 32
    characters) as its last extension so that format-sniffing writers pick the right encoder. Renamed
    over ``path`` on success.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _mkstemp(path.parent, suffix or path.suffix)
    os.close(fd)
    os.chmod(tmp, _umask_mode())
    try:
        yield Path(tmp)
        os.chmod(tmp, _umask_mode())  # again: some writers (safetensors) recreate the file as 0600
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def is_temp_file_name(name: str) -> bool:
    """True if ``name`` follows the pattern of this project's temporary files (module docstring)."""
    return _TEMP_NAME.match(name) is not None


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except PermissionError:  # a process of another user
        return True
    except (ProcessLookupError, OverflowError):
        return False
    return True


def clean_stale_temp_files(folder: str | os.PathLike, *, recursive: bool = True) -> list[Path]:
    """Delete this project's temporary files in ``folder`` that no running process will finish.

    A file counts when its name follows the project's pattern (module docstring) and either the
    process whose pid the name holds is gone (checked on this machine) or it has not been modified
    for :data:`STALE_TEMP_SECONDS`. Other files are never touched. A missing folder is fine.
    Returns the files removed.
    """
    root = Path(folder)
    if not root.is_dir():
        return []
    removed = []
    now = time.time()
    for dirpath, dirnames, filenames in os.walk(root):
        if not recursive:
            dirnames.clear()
        for name in filenames:
            m = _TEMP_NAME.match(name)
            if m is None:
                continue
            path = Path(dirpath) / name
            try:
                st = path.lstat()
                if not (_process_alive(int(m.group(1))) and now - st.st_mtime < STALE_TEMP_SECONDS):
                    path.unlink()
                    removed.append(path)
            except FileNotFoundError:  # finished (renamed) or removed by someone else meanwhile
                continue
    if removed:
        logger.info("removed %d stale temporary file(s) under %s", len(removed), root)
    return removed


@functools.cache
def _umask_mode() -> int:
    """The permission bits a newly created file would get (mkstemp always uses 0600).

    Read once per process: ``os.umask`` can only be read by setting it, which is not thread-safe.
    """
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def write_json(path: str | os.PathLike, obj: Any, indent: int = 2) -> None:
    """Write ``obj`` as JSON, atomically."""
    with atomic_write(path, "w") as f:
        json.dump(obj, f, indent=indent, sort_keys=False, default=str)
        f.write("\n")


def trim_jsonl(path: str | os.PathLike, key: str, upto: int) -> list[dict[str, Any]]:
    """Cut a training log (JSON lines) back to the records whose ``key`` (the step) is at most ``upto``.

    A run resumed from its checkpoint at step ``upto`` redoes the later steps and logs them again, so
    what the killed run logged after the checkpoint goes; so does a line it left cut short. The file is
    rewritten atomically (a missing file becomes an empty one), and the records kept are returned.
    """
    path = Path(path)
    kept: list[dict[str, Any]] = []
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:  # the half-written last line of a killed run
                continue
            if isinstance(rec, dict) and rec.get(key, upto + 1) <= upto:
                kept.append(rec)
    with atomic_write(path, "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in kept)
    return kept


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def package_path(value: str) -> Path:
    """``value`` as a path: ``pkg://module/rest`` is ``rest`` inside installed package ``module``
    (``pkg://skimage.data``, ``pkg://skimage/data``); anything else has ``~`` expanded.

    Raises ``FileNotFoundError`` naming ``value`` when the package is not installed.
    """
    if not value.startswith("pkg://"):
        return Path(os.path.expanduser(value))
    import importlib.util

    module, _, rest = value[len("pkg://"):].partition("/")
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):  # a parent package missing, or an empty/relative name
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"{value!r}: no installed package {module!r}")
    return Path(list(spec.submodule_search_locations)[0]) / rest
