"""Atomic file writing, and ``pkg://`` paths to folders inside installed packages.

Atomic writing: a reader never sees a half-written file, and a failure leaves the old one.

Everything this project writes (images, JSON manifests, checkpoints, cache entries) goes through
:func:`atomic_write`: data goes to a temporary file in the destination folder, is flushed and
fsync'ed, then renamed over the destination with ``os.replace`` (atomic on POSIX and Windows).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import math
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import numpy as np


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
    """Open a temporary file beside ``path``; on success rename it to ``path``, on error delete it."""
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_write supports modes 'w' and 'wb', not {mode!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
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

    The temporary file keeps ``suffix`` (default: the destination's suffix) as its last extension so
    that format-sniffing writers pick the right encoder. Renamed over ``path`` on success.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.tmp.", suffix=suffix or path.suffix)
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
