"""Benchmark rows: the JSON Lines results format, its provenance and the seeds that make rows reproducible.

Every benchmark row carries ``format`` (:data:`ROW_FORMAT`) and ``provenance`` (:func:`provenance`:
package version, git revision, date, torch and Python versions). :func:`write_rows` appends strict-JSON
lines, :func:`read_rows` reads them back with their file and line. :func:`seed_for` derives the seeds
of synthetic degradations and prompts from names, so a row does not depend on file order or platform.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import subprocess
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from robustsam_prior.core.fileio import json_dumps, jsonable
from robustsam_prior.core.versions import package_version

ROW_FORMAT = "robustsam-restore/benchmark-row/1"


# ---------------------------------------------------------------------------------------- utilities


def seed_for(*parts: Any) -> int:
    """A 63-bit seed derived from ``parts`` (stable across runs and platforms, unlike ``hash``)."""
    h = hashlib.sha256("\x1f".join(str(p) for p in parts).encode("utf-8")).digest()
    return int.from_bytes(h[:8], "little") >> 1


def _git_rev() -> str:
    root = Path(__file__).resolve().parents[1]
    try:
        rev = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        return rev + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def provenance() -> dict[str, str]:
    """Package version, git revision, UTC date, and the torch/Python versions."""
    import platform

    return {
        "package_version": package_version(),
        "git_rev": _git_rev(),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }


def write_rows(path: str | os.PathLike, rows: Iterable[dict], *, append: bool = True) -> Path:
    """Append (or write) rows to a JSON Lines file, one strict-JSON object per line."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "".join(json_dumps(jsonable(r), sort_keys=True) + "\n" for r in rows)
    if append and path.exists():
        with open(path, "a", encoding="utf-8") as f:
            f.write(text)
    else:
        from robustsam_prior.core.fileio import atomic_write

        with atomic_write(path, "w") as f:
            f.write(text)
    return path


def _json_type(value: Any) -> str:
    for kind, name in ((bool, "true/false"), (str, "a string"), (int, "a number"), (float, "a number"), (list, "an array")):
        if isinstance(value, kind):
            return name
    return "null" if value is None else type(value).__name__


def read_rows(path: str | os.PathLike) -> list[dict]:
    """Rows of a JSON Lines results file, each with ``_source`` (the file) and ``_line`` (its line).

    A file that is not UTF-8 text, a line that is not a JSON object, or a row without ``method`` and
    a ``metrics`` object (or whose ``unavailable``/``crops`` are not objects) raises ``ValueError``
    naming the file and line.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"results file {path} does not exist")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not a results file (not UTF-8 text: {e.reason} at byte {e.start})") from None
    rows = []
    for i, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}:{i}: not a JSON object ({e.msg})") from e
        if not isinstance(row, dict) or "method" not in row or "metrics" not in row:
            raise ValueError(f"{path}:{i}: not a benchmark row (needs 'method' and 'metrics')")
        for key in ("metrics", "unavailable", "crops"):
            if key in row and not isinstance(row[key], dict if key == "metrics" else (dict, type(None))):
                raise ValueError(f"{path}:{i}: '{key}' must be a JSON object, not {_json_type(row[key])}")
        row["_source"] = str(path)
        row["_line"] = i
        rows.append(row)
    return rows
