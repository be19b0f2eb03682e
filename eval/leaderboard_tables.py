"""Leaderboard tables from benchmark rows: grouping, names, ranking, best values and the crop checks.

Rows (from :mod:`eval.benchmark`, read with :func:`eval.provenance.read_rows`) are grouped into one
:class:`Table` per (task, dataset):

- restoration tables: one row per method, columns = its mean metrics (PSNR, SSIM, LPIPS, ..., images/s);
- segmentation tables: one row per segmenter and prompt type, columns ``iou@clear``, ``iou@haze-3``,
  ..., plus ``iou@degraded`` (mean over the degraded conditions) and ``iou@average`` (mean over all
  conditions, clear included: the paper's (15 Degrade + 1 Clear) / 16 when there are 15 degradations).

Rows are ranked by the table's main metric (:attr:`Table.main`: PSNR, else the average IoU), best
first. The best value of every column is marked, lower being better where the metric says so (LPIPS,
times; :func:`eval.metrics.is_lower_better`); speed is never marked for ``identity``, which does no work.

One method name in one table:

- rows of one name measured with different checkpoints are kept apart as ``name@<sha256[:8]>``;
- a later row of the same name and checkpoint in the same results file is a re-run appended to it and
  replaces the earlier one (with a warning);
- the same name and checkpoint in two results files is shown once if both measured the same quality
  values (a baseline such as ``identity`` benchmarked beside each method), and is otherwise an error
  naming both rows (file:line).

Rows of one table measured under different PSNR/SSIM conventions are an error naming both rows;
:attr:`Table.conventions` names the one they share.
"""

from __future__ import annotations

import logging
import math
import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .metrics.info import describe_conventions, is_lower_better

logger = logging.getLogger(__name__)

__all__ = [
    "MAX_CROP_BYTES",
    "SPEED_COLUMNS",
    "Table",
    "build_tables",
    "column_label",
    "format_value",
    "is_best",
    "mime_type",
    "not_embeddable",
    "view_tables",
]

# a crop is a small centre cut (128 px by default); anything this large is not one
MAX_CROP_BYTES = 16 * 1024 * 1024
_CROP_KEYS = ("degraded", "gt", "output")
_IMAGE_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
)

_PREFERRED = ["psnr", "ssim", "lpips", "lpips_alex", "lpips_vgg", "iou", "dice", "pa", "images_per_s"]
#: columns that measure speed: not compared between rows that do no work (identity)
SPEED_COLUMNS = frozenset({"images_per_s", "seconds"})
# the fields of a row's "conventions" that change PSNR/SSIM values
_CONVENTION_KEYS = ("crop_border", "test_y_channel", "quantize", "data_range")


@dataclass
class Table:
    """One leaderboard table: ``rows[method][column] = value`` (``None`` = not available), ranked best first."""

    task: str
    dataset: str
    columns: list[str]
    rows: dict[str, dict[str, float | None]]
    unavailable: dict[str, tuple[str, list[str]]] = field(default_factory=dict)  # metric -> (reason, methods)
    crops: dict[str, dict[str, str]] = field(
        default_factory=dict
    )  # image -> {"degraded"|"gt"|method: real path, checked to lie in its results file's folder}
    checkpoints: dict[str, str | None] = field(default_factory=dict)  # method -> checkpoint sha256
    no_speed: set[str] = field(default_factory=set)  # methods whose speed is never marked best (identity)
    conventions: str | None = None  # describe_conventions() of the PSNR/SSIM rows
    main: str | None = None  # the column the rows are ranked by

    @property
    def notes(self) -> list[str]:
        """One line per unavailable metric: which methods, and why."""
        return [
            f"{m} unavailable for {', '.join(ms)}: {reason}" for m, (reason, ms) in self.unavailable.items()
        ]

    @property
    def title(self) -> str:
        return f"{self.task} / {self.dataset}"

    def best(self) -> dict[str, float]:
        """Best value per column (respecting lower-is-better; speed not counted for :attr:`no_speed` rows)."""
        out = {}
        for c in self.columns:
            speed = c.split("@")[0] in SPEED_COLUMNS
            vals = [
                v
                for m, r in self.rows.items()
                if not (speed and m in self.no_speed)
                for v in (r.get(c),)
                if _num(v)
            ]
            if vals:
                out[c] = min(vals) if is_lower_better(c.split("@")[0]) else max(vals)
        return out

    def marked(self, method: str, col: str, best: dict[str, float]) -> bool:
        """Whether ``method``'s cell in ``col`` shows the column's best value (``best`` from :meth:`best`);
        never the speed of a :attr:`no_speed` row, even where it ties."""
        if method in self.no_speed and col.split("@")[0] in SPEED_COLUMNS:
            return False
        return is_best(self.rows[method].get(col), col, best)

    def rank(self) -> None:
        """Choose :attr:`main` and order :attr:`rows` best first by it (rows without a value last)."""
        cols = [c for c in self.columns if c.split("@")[0] not in SPEED_COLUMNS]
        self.main = next((c for c in ("psnr", "iou@average") if c in cols), cols[0] if cols else None)
        if self.main is None:
            return
        lower = is_lower_better(self.main.split("@")[0])

        def key(item):
            v = item[1].get(self.main)
            if not _num(v):
                return (1, 0.0, item[0])
            return (0, v if lower else -v, item[0])

        self.rows = dict(sorted(self.rows.items(), key=key))


def _num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and not math.isnan(v)


def _value(v):
    if v == "inf":
        return math.inf
    if v == "-inf":
        return -math.inf
    return v


def order_columns(cols) -> list[str]:
    def key(c: str):
        base, _, cond = c.partition("@")
        i = _PREFERRED.index(base) if base in _PREFERRED else len(_PREFERRED)
        j = {"clear": 0, "degraded": 2, "average": 3}.get(cond, 1)
        return (i, base, j, cond)

    return sorted(cols, key=key)


def _sha(row: dict) -> str | None:
    sha = row.get("checkpoint_sha256")
    return sha if isinstance(sha, str) and sha else None


def _quality(row: dict) -> dict:
    """A row's metric values without its speed (timings differ between runs of the same thing)."""
    return {m: _value(v) for m, v in row["metrics"].items() if m.split("@")[0] not in SPEED_COLUMNS}


def _deduplicate(title: str, entries: list[tuple[str, dict]]) -> list[tuple[str, dict]]:
    """``(name, row)`` in reading order -> ``(label, row)``, one per label (rules in the module docstring)."""
    groups: dict[str, list[dict]] = {}
    for name, row in entries:
        groups.setdefault(name, []).append(row)
    out = []
    for name, group in groups.items():
        split = len({_sha(r) for r in group}) > 1
        labelled: dict[str, list[dict]] = {}
        for r in group:
            sha = _sha(r)
            labelled.setdefault(f"{name}@{sha[:8]}" if split and sha else name, []).append(r)
        for label, rows in labelled.items():
            kept = rows[0]
            for r in rows[1:]:
                if r.get("_source") == kept.get("_source"):
                    logger.warning(
                        "%s / %s: %s (a later run in the same file) replaces %s",
                        title,
                        label,
                        _where(r),
                        _where(kept),
                    )
                    kept = r
                elif _quality(r) == _quality(kept):
                    logger.info("%s / %s: %s repeats %s; shown once", title, label, _where(r), _where(kept))
                else:
                    raise ValueError(
                        f"{title}: method {label!r} is in {_where(kept)} and in {_where(r)} with different "
                        "results; name one of them differently (benchmark --methods NAME=SPEC) or leave one "
                        "file out"
                    )
            out.append((label, kept))
    return out


def _conventions(title: str, rows: Sequence[dict]) -> str | None:
    """The PSNR/SSIM convention the rows share (described), None if none records one; different
    conventions in one table are an error naming a row of each."""
    first: tuple[dict, dict] | None = None
    for r in rows:
        c = r.get("conventions")
        if not isinstance(c, dict):
            continue
        d = {k: c.get(k) for k in _CONVENTION_KEYS}
        if first is None:
            first = (d, r)
        elif d != first[0]:
            raise ValueError(
                f"{title}: {_where(first[1])} and {_where(r)} measured PSNR/SSIM under different conventions "
                f"({describe_conventions(first[0])}; {describe_conventions(d)}); benchmark them again with "
                "the same options"
            )
    return describe_conventions(first[0]) if first else None


def _identity(row: dict) -> bool:
    info = row.get("method_info")
    return row.get("method") == "identity" or (isinstance(info, dict) and info.get("baseline") == "identity")


def build_tables(rows: Sequence[dict]) -> list[Table]:
    """Group benchmark rows into tables (see module docstring).

    Raises ``ValueError`` naming the rows for a method name with different results in two files and for
    different PSNR/SSIM conventions in one table.
    """
    tables: dict[tuple[str, str], Table] = {}
    restoration: dict[tuple[str, str], list[dict]] = {}
    segmentation: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        ds = r.get("dataset") or {}
        dname = str(ds.get("name", "?") if isinstance(ds, dict) else ds)
        kind = r.get("kind", "restoration")
        task = str(r.get("task") or kind)
        key = (task, dname)
        tables.setdefault(key, Table(task=task, dataset=dname, columns=[], rows={}))
        (segmentation if kind == "segmentation" else restoration).setdefault(key, []).append(r)
    for key, rs in restoration.items():
        t = tables[key]
        t.conventions = _conventions(t.title, rs)
        for method, r in _deduplicate(t.title, [(str(r["method"]), r) for r in rs]):
            _add_restoration_row(t, method, r)
    for key, rs in segmentation.items():
        t = tables[key]
        by_cond: dict[str, list[tuple[str, dict]]] = {}
        for r in rs:
            prompt = r.get("prompt")
            prompt = prompt.get("type") if isinstance(prompt, dict) else None
            label = f"{r['method']} ({prompt})" if prompt else str(r["method"])
            cond = r.get("degradation") or "clear"
            if r.get("severity") is not None and cond != "clear":
                cond = f"{cond}-{r['severity']}"
            by_cond.setdefault(cond, []).append((label, r))
        cells: dict[str, dict[str, dict[str, float]]] = {}
        for cond, entries in by_cond.items():
            for label, r in _deduplicate(f"{t.title} / {cond}", entries):
                cells.setdefault(label, {})[cond] = {m: _value(v) for m, v in r["metrics"].items()}
                t.checkpoints.setdefault(label, _sha(r))
        for label, conds in cells.items():
            t.rows[label] = _segmentation_values(conds)
    for t in tables.values():
        t.columns = order_columns({c for r in t.rows.values() for c in r})
        t.rank()
    return [tables[k] for k in sorted(tables)]


def _add_restoration_row(t: Table, method: str, r: dict) -> None:
    values = {m: _value(v) for m, v in r["metrics"].items()}
    for m, reason in (r.get("unavailable") or {}).items():
        values[m] = None
        t.unavailable.setdefault(m, (reason, []))[1].append(method)
    t.rows[method] = values
    t.checkpoints[method] = _sha(r)
    if _identity(r):
        t.no_speed.add(method)
    for image, paths in (r.get("crops") or {}).items():
        if not isinstance(paths, dict):
            logger.warning("%s: crops of %r are not an object; left out of the report", _where(r), image)
            continue
        cell = t.crops.setdefault(str(image), {})
        for k, p in paths.items():
            full = _crop_path(r, method, str(image), k, p)
            if full is not None:
                cell[method if k == "output" else k] = full


def _segmentation_values(conds: dict[str, dict[str, float]]) -> dict[str, float | None]:
    values: dict[str, float | None] = {}
    for m in sorted({m for c in conds.values() for m in c}):
        for cond, mv in conds.items():
            values[f"{m}@{cond}"] = mv.get(m)
        deg = [mv[m] for c, mv in conds.items() if c != "clear" and _num(mv.get(m))]
        if deg:
            values[f"{m}@degraded"] = sum(deg) / len(deg)
            everything = [mv[m] for mv in conds.values() if _num(mv.get(m))]
            values[f"{m}@average"] = sum(everything) / len(everything)
    return values


def _where(row: dict) -> str:
    """``results.jsonl:3`` for a row from :func:`eval.provenance.read_rows`, else the method."""
    if "_source" in row and "_line" in row:
        return f"{row['_source']}:{row['_line']}"
    return f"the row of {str(row.get('method'))!r}"


def _crop_path(row: dict, method: str, image: str, key, path) -> str | None:
    """The real path of one crop of ``row``, or None (with a warning) if it may not be embedded.

    Relative paths are taken from the folder of the row's results file (the current folder for a
    row without one), and the resolved path (symbolic links followed) must lie inside that folder.
    """
    what = f"{_where(row)}: crop {str(key)!r} of image {image!r} ({method})"
    if key not in _CROP_KEYS:
        logger.warning(
            "%s: unknown kind of crop (expected %s); left out of the report", what, "/".join(_CROP_KEYS)
        )
        return None
    if not isinstance(path, str) or not path:
        logger.warning("%s: %r is not a path; left out of the report", what, path)
        return None
    folder = Path(row.get("_source", "x")).parent
    try:
        root = os.path.realpath(folder)
        full = os.path.realpath(folder / path)  # an absolute path replaces the folder
    except (OSError, ValueError) as e:  # a NUL byte in the path
        logger.warning("%s: %r cannot be resolved (%s); left out of the report", what, path, e)
        return None
    if os.path.commonpath([root, full]) != root:
        logger.warning(
            "%s: %r lies outside the results file's folder %s; left out of the report "
            "(crops are embedded only from that folder)",
            what,
            path,
            root,
        )
        return None
    problem = not_embeddable(full)
    if problem:
        logger.warning("%s: %r %s; left out of the report", what, path, problem)
        return None
    return full


def mime_type(head: bytes) -> str | None:
    """The image type that the first bytes of a file announce (PNG, JPEG, GIF, WebP), or None."""
    mime = next((m for magic, m in _IMAGE_MAGIC if head.startswith(magic)), None)
    if mime is None and head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        mime = "image/webp"
    return mime


def not_embeddable(path: str) -> str | None:
    """Why the file at ``path`` may not be embedded as a crop, or None: it must be a regular file
    (reading a FIFO or a device would block or never end) of at most :data:`MAX_CROP_BYTES` that
    starts like a PNG, JPEG, GIF or WebP image."""
    try:
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode):
            return "is not a regular file"
        if st.st_size > MAX_CROP_BYTES:
            return f"is {st.st_size} bytes, over the {MAX_CROP_BYTES} allowed for a crop"
        with open(path, "rb") as f:
            head = f.read(12)
    except OSError as e:
        return f"cannot be read ({e.strerror or e})"
    return None if mime_type(head) else "is not a PNG, JPEG, GIF or WebP image"


def view_tables(tables: Sequence[Table]) -> list[tuple[str, Table, list[str]]]:
    """What the Markdown/HTML pages show: restoration tables whole; segmentation tables one per metric
    (columns = conditions), as in the paper's tables."""
    out = []
    for t in tables:
        bases = list(dict.fromkeys(c.split("@")[0] for c in t.columns))
        if any("@" in c for c in t.columns) and len(bases) > 1:
            for b in bases:
                out.append((f"{t.title} — {b}", t, [c for c in t.columns if c.split("@")[0] == b]))
        else:
            out.append((t.title, t, list(t.columns)))
    return out


def column_label(col: str) -> str:
    """Column heading: the condition for segmentation columns, with the better direction."""
    base, _, cond = col.partition("@")
    arrow = "↓" if is_lower_better(base) else "↑"
    return f"{cond or base} {arrow}"


def format_value(v, col: str) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        base = col.split("@")[0]
        return f"{v:.2f}" if base in ("psnr", "images_per_s") else f"{v:.4f}"
    return str(v)


def is_best(v, col: str, best: dict) -> bool:
    return _num(v) and col in best and v == best[col]
