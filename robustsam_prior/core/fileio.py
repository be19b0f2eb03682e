"""Atomic file writing, paths confined to a folder, folder locks, and ``pkg://`` paths to folders inside
installed packages.

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
import math
import os
import re
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import IO, Any

import numpy as np

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


class WriteError(OSError):
    """Writing a file failed (disk full, no permission, ...); the message names the file, and the previous
    version of the file, if any, is untouched. ``errno`` is the original one. :func:`atomic_write` and
    :func:`atomic_path` raise it for an ``OSError`` while the temporary file is written, synced or renamed."""

    def __str__(self) -> str:
        return str(self.args[1]) if len(self.args) > 1 else super().__str__()


def _write_error(e: OSError, path: Path) -> OSError:
    """``e`` as a :class:`WriteError` naming ``path`` when it is about writing it (no file name, or one in
    ``path``'s folder: the temporary file, ``path`` itself); other errors (creating the folder) are kept."""
    if isinstance(e, WriteError):
        return e
    if e.filename is not None and Path(os.fsdecode(e.filename)).parent != path.parent:
        return e
    why = e.strerror or str(e) or type(e).__name__
    return WriteError(e.errno, f"{path}: could not write the file: {why} (any previous version is kept)")


@contextlib.contextmanager
def _replace_on_success(tmp: str, path: Path) -> Iterator[None]:
    """Run the body that fills ``tmp``, then rename ``tmp`` over ``path``; on any error delete ``tmp``, and
    turn an ``OSError`` into a :class:`WriteError` naming ``path``."""
    try:
        yield
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(e, OSError):
            raise _write_error(e, path) from e
        raise


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
    """Open a temporary file beside ``path``; on success rename it to ``path``, on error delete it.

    An ``OSError`` while writing (disk full, no permission) becomes a :class:`WriteError` naming ``path``.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_write supports modes 'w' and 'wb', not {mode!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _mkstemp(path.parent)
    os.chmod(tmp, _umask_mode())
    with _replace_on_success(tmp, path), os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
        yield f
        f.flush()
        os.fsync(f.fileno())


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
    with _replace_on_success(tmp, path):
        yield Path(tmp)
        os.chmod(tmp, _umask_mode())  # again: some writers (safetensors) recreate the file as 0600
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())


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


def jsonable(obj: Any) -> Any:
    """``obj`` with the values strict JSON cannot hold spelled out: ``inf`` -> ``"inf"``, ``-inf`` ->
    ``"-inf"``, NaN -> ``None``; numpy scalars become Python numbers, paths strings, tuples lists.

    For measurements, where an infinite PSNR (identical images) is a result, not a bug.
    """
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, (np.floating, np.integer, np.bool_)):
        obj = obj.item()
    if isinstance(obj, float):
        if math.isnan(obj):
            return None
        if math.isinf(obj):
            return "inf" if obj > 0 else "-inf"
    if isinstance(obj, Path):
        return str(obj)
    return obj


def _non_finite(obj: Any, where: str = "") -> tuple[str, float] | None:
    """Where the first NaN or infinite float in ``obj`` is (``a.b[2]``), and its value."""
    if isinstance(obj, (float, np.floating)) and not math.isfinite(obj):
        return where or "the value", float(obj)
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, (list, tuple)) else ()
    for k, v in items:
        found = _non_finite(v, f"{where}[{k}]" if isinstance(k, int) else f"{where}.{k}" if where else str(k))
        if found:
            return found
    return None


def json_dumps(obj: Any, **kwargs: Any) -> str:
    """``json.dumps`` that refuses NaN and infinities, which are not JSON (Python writes ``NaN``, a
    token strict readers reject). The ``ValueError`` names where the value is; keyword arguments go
    to ``json.dumps``. Convert measurements with :func:`jsonable` first where infinity is a result.
    """
    try:
        return json.dumps(obj, allow_nan=False, **kwargs)
    except ValueError as e:
        found = _non_finite(obj)
        if found is None:
            raise
        raise ValueError(f"{found[0]} is {found[1]}, which JSON cannot hold (NaN and Infinity are not JSON)") from e


def _plain_or_str(obj: Any) -> Any:
    """numpy scalars as Python numbers (so a NaN among them is caught too), anything else as text."""
    return obj.item() if isinstance(obj, np.generic) else str(obj)


def write_json(path: str | os.PathLike, obj: Any, indent: int = 2) -> None:
    """Write ``obj`` as strict JSON, atomically; numpy scalars are written as numbers, other objects
    JSON has no type for as strings.

    NaN or infinity anywhere in ``obj`` raises ``ValueError`` naming the file and the key, before
    anything is written (an existing file is left as it was).
    """
    try:
        text = json_dumps(obj, indent=indent, sort_keys=False, default=_plain_or_str)
    except ValueError as e:
        raise ValueError(f"cannot write {path}: {e}") from e
    with atomic_write(path, "w") as f:
        f.write(text + "\n")


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
    # a log written before NaN/Infinity were refused may hold them: kept as jsonable() spells them
    text = "".join(json_dumps(jsonable(r)) + "\n" for r in kept)
    with atomic_write(path, "w") as f:
        f.write(text)
    return kept


def relative_path_problem(value: str | os.PathLike) -> str | None:
    """Why ``value`` cannot name a file inside a folder it is joined to (``None`` when it can):
    ``"it is empty"``, ``"it is absolute"`` or ``"its '..' leads out of the folder"``."""
    text = os.fspath(value)
    if not text.strip():
        return "it is empty"
    path = PurePosixPath(text)
    if path.is_absolute():
        return "it is absolute"
    if ".." in path.parts:
        return "its '..' leads out of the folder"
    return None


def confined_path(root: str | os.PathLike, rel: str | os.PathLike) -> Path:
    """``root / rel`` for a path ``rel`` that must stay inside folder ``root``.

    Raises ``ValueError`` saying why when ``rel`` is empty, absolute or has a ``..`` part
    (:func:`relative_path_problem`), or leads out of ``root`` through a symbolic link.
    """
    root = Path(root)
    problem = relative_path_problem(rel)
    if problem is None:
        real_root, real = root.resolve(), (root / rel).resolve()
        if real != real_root and real_root not in real.parents:
            problem = f"it leads to {real} through a symbolic link"
    if problem:
        raise ValueError(f"{os.fspath(rel)!r} is not a path inside {root}: {problem}")
    return root / rel


class FolderLockedError(RuntimeError):
    """Another process holds the lock of a folder (:func:`folder_lock`); the message names the folder and
    the holder's process id."""


LOCK_NAME = ".lock"
_held_locks: dict[Path, int] = {}  # folders this process holds -> nesting depth


@contextlib.contextmanager
def folder_lock(folder: str | os.PathLike) -> Iterator[Path]:
    """Hold an exclusive lock on ``folder`` (created if needed) for the ``with`` block, so that two runs
    cannot write into one output folder at the same time.

    The lock is ``flock`` on ``folder/.lock``, which holds the holder's process id, host and start time
    (what the error names). The operating system releases it when the holder exits however it exits, so
    a killed run leaves no lock behind that blocks the next one; the file itself is deleted on release.
    Taking it again in the process that holds it nests (the trainers take it inside the ``train``
    command, which took it first). Raises :class:`FolderLockedError` at once when another process holds
    it. Where ``fcntl`` is missing (Windows) no lock is taken.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    key = folder.resolve()
    if key in _held_locks:
        _held_locks[key] += 1
        try:
            yield folder / LOCK_NAME
        finally:
            _held_locks[key] -= 1
        return
    try:
        import fcntl
    except ImportError:  # no flock: run unlocked
        yield folder / LOCK_NAME
        return
    path = folder / LOCK_NAME
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            with os.fdopen(fd, "r", encoding="utf-8", errors="replace") as f:
                holder = " ".join(f.read().split()) or "a process that has not written its id yet"
            raise FolderLockedError(
                f"{folder}: in use by another run ({holder}); wait for it to finish or choose another folder"
            ) from None
        try:  # the file may have been deleted by a holder releasing it since we opened it: lock the new one
            same = os.path.samestat(os.fstat(fd), os.stat(path))
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    import socket
    import time

    os.ftruncate(fd, 0)
    since = time.strftime("%Y-%m-%d %H:%M:%S")
    os.write(fd, f"pid {os.getpid()} on {socket.gethostname()} since {since}\n".encode())
    _held_locks[key] = 1
    try:
        yield path
    finally:
        del _held_locks[key]
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)  # still locked here: a process that opened it before sees it gone and retries
        os.close(fd)


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
