"""Leaderboards from benchmark JSON Lines: CSV, Markdown and one self-contained HTML page.

Rows (from :mod:`eval.benchmark`, read with :func:`eval.provenance.read_rows`) are grouped into one table per (task, dataset):

- restoration tables: one row per method, columns = its mean metrics (PSNR, SSIM, LPIPS, ..., images/s);
- segmentation tables: one row per segmenter and prompt type, columns ``iou@clear``, ``iou@haze-3``,
  ..., plus ``iou@degraded`` (mean over the degraded conditions) and ``iou@average`` (mean over all
  conditions, clear included: the paper's (15 Degrade + 1 Clear) / 16 when there are 15 degradations).

The best value of every column is marked (bold in Markdown, a ``best`` cell class in HTML), lower
being better where the metric says so (LPIPS, times; :func:`eval.metrics.is_lower_better`). If the
same (table, method) appears in several files, the last one read wins (with a warning). The HTML
page has no external resources: tables sort on a header click (inline script), bar plots and image
crops are embedded as base64 data.

Results files may come from someone else, so nothing in them is trusted:

- a row's ``crops`` are paths relative to its results file; one that leads out of that file's
  folder (``../``, an absolute path, a symbolic link), is not a regular file, is over
  :data:`MAX_CROP_BYTES` or is not a PNG/JPEG/GIF/WebP image is left out of the page with a warning
  naming the file, line and path, so publishing a board cannot publish other files of the machine
  that built it (``benchmark --crops`` writes its crops into ``<results>_crops/`` beside the file);
- text (method, task and dataset names, metric names and values that are not numbers) is escaped
  for each output: HTML escaping, Markdown escaping (a ``|`` cannot split a table cell, ``<`` cannot
  open a tag, ``[`` cannot start a link), and in the CSV a cell starting with ``=``, ``+``, ``-``,
  ``@``, a tab or a carriage return gets a leading ``'`` so that a spreadsheet shows it as text
  instead of running it as a formula (OWASP's advice on CSV injection); numbers stay numbers.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import logging
import math
import os
import re
import stat
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .metrics.info import is_lower_better

logger = logging.getLogger(__name__)

__all__ = ["Table", "build_tables", "write_leaderboard"]

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


@dataclass
class Table:
    """One leaderboard table: ``rows[method][column] = value`` (``None`` = not available)."""

    task: str
    dataset: str
    columns: list[str]
    rows: dict[str, dict[str, float | None]]
    unavailable: dict[str, tuple[str, list[str]]] = field(default_factory=dict)  # metric -> (reason, methods)
    crops: dict[str, dict[str, str]] = field(
        default_factory=dict
    )  # image -> {"degraded"|"gt"|method: real path, checked to lie in its results file's folder}

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
        """Best value per column (respecting lower-is-better)."""
        out = {}
        for c in self.columns:
            vals = [v for v in (r.get(c) for r in self.rows.values()) if _num(v)]
            if vals:
                out[c] = min(vals) if is_lower_better(c.split("@")[0]) else max(vals)
        return out


def _num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and not math.isnan(v)


def _value(v):
    if v == "inf":
        return math.inf
    if v == "-inf":
        return -math.inf
    return v


def _order(cols: Sequence[str]) -> list[str]:
    def key(c: str):
        base, _, cond = c.partition("@")
        i = _PREFERRED.index(base) if base in _PREFERRED else len(_PREFERRED)
        j = {"clear": 0, "degraded": 2, "average": 3}.get(cond, 1)
        return (i, base, j, cond)

    return sorted(cols, key=key)


def build_tables(rows: Sequence[dict]) -> list[Table]:
    """Group benchmark rows into tables (see module docstring)."""
    tables: dict[tuple[str, str], Table] = {}
    seen: dict[tuple, str] = {}
    seg_cells: dict[tuple[str, str], dict[str, dict[str, dict[str, float]]]] = {}
    for r in rows:
        ds = r.get("dataset") or {}
        dname = str(ds.get("name", "?") if isinstance(ds, dict) else ds)
        kind = r.get("kind", "restoration")
        task = str(r.get("task") or kind)
        key = (task, dname)
        t = tables.setdefault(key, Table(task=task, dataset=dname, columns=[], rows={}))
        method = str(r["method"])
        if kind == "segmentation":
            prompt = r.get("prompt")
            prompt = prompt.get("type") if isinstance(prompt, dict) else None
            label = f"{method} ({prompt})" if prompt else method
            cond = r.get("degradation") or "clear"
            if r.get("severity") is not None and cond != "clear":
                cond = f"{cond}-{r['severity']}"
            ident = (key, label, cond)
            if ident in seen:
                logger.warning(
                    "%s / %s / %s: %s overrides %s", t.title, label, cond, r.get("_source"), seen[ident]
                )
            seen[ident] = str(r.get("_source"))
            seg_cells.setdefault(key, {}).setdefault(label, {})[cond] = {
                m: _value(v) for m, v in r["metrics"].items()
            }
            continue
        ident = (key, method)
        if ident in seen:
            logger.warning("%s / %s: %s overrides %s", t.title, method, r.get("_source"), seen[ident])
        seen[ident] = str(r.get("_source"))
        values = {m: _value(v) for m, v in r["metrics"].items()}
        for m, reason in (r.get("unavailable") or {}).items():
            values[m] = None
            t.unavailable.setdefault(m, (reason, []))[1].append(method)
        t.rows[method] = values
        for image, paths in (r.get("crops") or {}).items():
            if not isinstance(paths, dict):
                logger.warning("%s: crops of %r are not an object; left out of the report", _where(r), image)
                continue
            cell = t.crops.setdefault(str(image), {})
            for k, p in paths.items():
                full = _crop_path(r, method, str(image), k, p)
                if full is not None:
                    cell[method if k == "output" else k] = full
    for key, per_label in seg_cells.items():
        t = tables[key]
        for label, conds in per_label.items():
            values: dict[str, float | None] = {}
            metrics = sorted({m for c in conds.values() for m in c})
            for m in metrics:
                for cond, mv in conds.items():
                    values[f"{m}@{cond}"] = mv.get(m)
                deg = [mv[m] for c, mv in conds.items() if c != "clear" and _num(mv.get(m))]
                if deg:
                    values[f"{m}@degraded"] = sum(deg) / len(deg)
                    everything = [mv[m] for mv in conds.values() if _num(mv.get(m))]
                    values[f"{m}@average"] = sum(everything) / len(everything)
            t.rows[label] = values
    for t in tables.values():
        t.columns = _order({c for r in t.rows.values() for c in r})
    return [tables[k] for k in sorted(tables)]


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
        logger.warning("%s: unknown kind of crop (expected %s); left out of the report", what, "/".join(_CROP_KEYS))
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
    problem = _not_embeddable(full)
    if problem:
        logger.warning("%s: %r %s; left out of the report", what, path, problem)
        return None
    return full


def _mime(head: bytes) -> str | None:
    """The image type that the first bytes of a file announce (PNG, JPEG, GIF, WebP), or None."""
    mime = next((m for magic, m in _IMAGE_MAGIC if head.startswith(magic)), None)
    if mime is None and head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        mime = "image/webp"
    return mime


def _not_embeddable(path: str) -> str | None:
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
    return None if _mime(head) else "is not a PNG, JPEG, GIF or WebP image"


def _crop_data_uri(path: str) -> str | None:
    """``data:image/...;base64,...`` for a crop :func:`_crop_path` accepted; None (with a warning)
    if the file no longer passes :func:`_not_embeddable`."""
    problem = _not_embeddable(path)
    if problem is None:
        try:
            with open(path, "rb") as f:
                data = f.read(MAX_CROP_BYTES + 1)
        except OSError as e:
            problem = f"cannot be read ({e.strerror or e})"
        else:
            if len(data) > MAX_CROP_BYTES or not _mime(data):
                problem = "changed while the report was written"
    if problem:
        logger.warning("crop %s %s; left out of the report", path, problem)
        return None
    return f"data:{_mime(data)};base64," + base64.b64encode(data).decode("ascii")


def _views(tables: Sequence[Table]) -> list[tuple[str, Table, list[str]]]:
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


def _label(col: str) -> str:
    """Column heading: the condition for segmentation columns, with the better direction."""
    base, _, cond = col.partition("@")
    arrow = "↓" if is_lower_better(base) else "↑"
    return f"{cond or base} {arrow}"


def _fmt(v, col: str) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        base = col.split("@")[0]
        return f"{v:.2f}" if base in ("psnr", "images_per_s") else f"{v:.4f}"
    return str(v)


def _is_best(v, col: str, best: dict) -> bool:
    return _num(v) and col in best and v == best[col]


_LINE_BREAKS = re.compile(r"[\r\n\v\f\x1c-\x1e\x85\u2028\u2029]+")
_MD_SPECIAL = re.compile(r"([\\`*_\[\]<>|~&#])")


def _md(text) -> str:
    """``text`` for a Markdown table cell, heading or list item: line breaks become spaces (a break
    would end the table row) and the characters that end a cell (``|``) or start Markdown or HTML
    syntax (emphasis, code, links, tags, entities, headings) are backslash-escaped."""
    return _MD_SPECIAL.sub(r"\\\1", _LINE_BREAKS.sub(" ", str(text)))


# a spreadsheet runs a cell starting with one of these as a formula (full-width forms included)
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r", "\n", "\uff1d", "\uff0b", "\uff0d", "\uff20")
_PLAIN_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


def _csv_cell(v):
    """A CSV cell: numbers as they are; text that a spreadsheet would run as a formula gets a leading
    ``'`` (shown as text; a text that is just a number, such as ``-0.5``, stays as it is)."""
    if v is None:
        return ""
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return v
    text = str(v)
    if text.startswith(_FORMULA_START) and not _PLAIN_NUMBER.fullmatch(text):
        return "'" + text
    return text


def to_csv(tables: Sequence[Table], path: Path) -> None:
    cols = _order({c for t in tables for c in t.columns})
    from robustsam_prior.fileio import atomic_write

    with atomic_write(path, "w") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["task", "dataset", "method", *map(_csv_cell, cols)])
        for t in tables:
            for method, vals in t.rows.items():
                w.writerow([_csv_cell(v) for v in (t.task, t.dataset, method, *(vals.get(c) for c in cols))])


def to_markdown(tables: Sequence[Table]) -> str:
    out = ["# Leaderboard", ""]
    for title, t, cols in _views(tables):
        best = t.best()
        out += [f"## {_md(title)}", ""]
        out.append("| method | " + " | ".join(_md(_label(c)) for c in cols) + " |")
        out.append("|---|" + "---|" * len(cols))
        for method, vals in t.rows.items():
            cells = []
            for c in cols:
                s = _md(_fmt(vals.get(c), c))
                cells.append(f"**{s}**" if _is_best(vals.get(c), c, best) else s)
            out.append(f"| {_md(method)} | " + " | ".join(cells) + " |")
        if t.notes:
            out.append("")
        out += [f"- {_md(n)}" for n in t.notes]
        out.append("")
    out.append("Bold: best in column (↑ higher is better, ↓ lower is better).")
    return "\n".join(out) + "\n"


def _png_b64(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _plain(text: str) -> str:
    """``text`` for a matplotlib label: ``$`` would start math mode (a stray one fails the plot)."""
    return str(text).replace("$", r"\$")


def _bar_plot(t: Table) -> str | None:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    cols = [
        c for c in t.columns if c.split("@")[0] != "images_per_s" and (c.endswith("@average") or "@" not in c)
    ]
    cols = [c for c in cols if any(_num(r.get(c)) and math.isfinite(r.get(c)) for r in t.rows.values())][:4]
    if not cols:
        return None
    fig, axes = plt.subplots(1, len(cols), figsize=(3.2 * len(cols), 2.6), squeeze=False)
    methods = [_plain(m) for m in t.rows]
    for ax, c in zip(axes[0], cols):
        vals = [r.get(c) for r in t.rows.values()]
        vals = [v if _num(v) and math.isfinite(v) else 0.0 for v in vals]
        ax.bar(range(len(methods)), vals, color="#4a7ab5")
        ax.set_xticks(range(len(methods)))
        ax.set_xticklabels(methods, rotation=30, ha="right", fontsize=8)
        ax.set_title(_plain(c) + (" (lower is better)" if is_lower_better(c.split("@")[0]) else ""), fontsize=9)
    fig.tight_layout()
    data = _png_b64(fig)
    plt.close(fig)
    return data


_SCRIPT = r"""
function sortTable(th){
  const table = th.closest('table'); const idx = Array.from(th.parentNode.children).indexOf(th);
  const body = table.tBodies[0]; const rows = Array.from(body.rows);
  const asc = th.dataset.dir !== 'asc'; th.dataset.dir = asc ? 'asc' : 'desc';
  const val = r => { const c = r.cells[idx]; const v = c.dataset.v;
    return v === undefined ? c.textContent : (v === '' ? NaN : parseFloat(v)); };
  rows.sort((a, b) => { const x = val(a), y = val(b);
    if (typeof x === 'string') return asc ? x.localeCompare(y) : y.localeCompare(x);
    if (isNaN(x)) return 1; if (isNaN(y)) return -1; return asc ? x - y : y - x; });
  rows.forEach(r => body.appendChild(r));
}
// a link can ask for an order: leaderboard.html#sort=table-0:2 (ascending) or #sort=table-0:2:desc
window.addEventListener('DOMContentLoaded', () => {
  const m = location.hash.match(/^#sort=([\w-]+):(\d+)(:desc)?$/);
  const table = m && document.getElementById(m[1]);
  if (!table) return;
  const th = table.tHead.rows[0].cells[+m[2]];
  if (th) { sortTable(th); if (m[3]) sortTable(th); }
});
"""

_STYLE = """
body{font-family:sans-serif;margin:2em;color:#222} table{border-collapse:collapse;margin:1em 0}
th,td{border:1px solid #bbb;padding:4px 8px;text-align:right} th{cursor:pointer;background:#eef}
td.method{text-align:left} td.best{font-weight:bold;background:#dfd} .crops td{text-align:center}
.crops img{width:128px;image-rendering:pixelated} .note{color:#a33;font-size:90%}
"""


def to_html(tables: Sequence[Table], *, title: str = "robustsam-restore leaderboard") -> str:
    h = html.escape
    out = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'>",
        f"<title>{h(title)}</title><style>{_STYLE}</style><script>{_SCRIPT}</script></head><body>",
        f"<h1>{h(title)}</h1>",
        "<p>Click a column header to sort. Highlighted: best in column (↑ higher is better, ↓ lower is better).</p>",
    ]
    shown: set[int] = set()
    for ti, (title, t, cols) in enumerate(_views(tables)):
        best = t.best()
        out.append(f"<h2>{h(title)}</h2>")
        out.append(
            f"<table class='leaderboard' id='table-{ti}' data-task='{h(t.task)}' data-dataset='{h(t.dataset)}'>"
        )
        out.append("<thead><tr><th onclick='sortTable(this)'>method</th>")
        for c in cols:
            out.append(f"<th onclick='sortTable(this)' title='{h(c)}'>{h(_label(c))}</th>")
        out.append("</tr></thead><tbody>")
        for method, vals in t.rows.items():
            out.append(f"<tr class='method-row'><td class='method'>{h(method)}</td>")
            for c in cols:
                v = vals.get(c)
                cls = " class='best'" if _is_best(v, c, best) else ""
                dv = "" if not _num(v) else ("1e308" if math.isinf(v) and v > 0 else repr(float(v)))
                out.append(f"<td{cls} data-v='{dv}'>{h(_fmt(v, c))}</td>")
            out.append("</tr>")
        out.append("</tbody></table>")
        if id(t) in shown:
            continue
        shown.add(id(t))
        out += [f"<p class='note'>{h(n)}</p>" for n in t.notes]
        plot = _bar_plot(t)
        if plot:
            out.append(f"<img alt='bar plot {h(t.title)}' src='data:image/png;base64,{plot}'>")
        if t.crops:
            methods = list(t.rows)
            out.append("<h3>Crops</h3><table class='crops'><tr><th>image</th><th>degraded</th>")
            out += [f"<th>{h(m)}</th>" for m in methods] + ["<th>ground truth</th></tr>"]
            for image, cell in sorted(t.crops.items()):
                out.append(f"<tr><td>{h(image)}</td>")
                for k in ["degraded", *methods, "gt"]:
                    uri = _crop_data_uri(cell[k]) if k in cell else None
                    out.append(f"<td><img alt='{h(k)}' src='{uri}'></td>" if uri else "<td>-</td>")
                out.append("</tr>")
            out.append("</table>")
    out.append("</body></html>")
    return "\n".join(out)


def write_leaderboard(results: Sequence[str | os.PathLike], out_dir: str | os.PathLike) -> dict[str, Path]:
    """Merge result files into ``out_dir/leaderboard.{csv,md,html}``; returns the written paths."""
    from robustsam_prior.fileio import atomic_write

    from .benchmark import read_rows

    if not results:
        raise ValueError("no result files given")
    rows = []
    for p in results:
        rows += read_rows(p)
    if not rows:
        raise ValueError(f"the result files hold no rows: {', '.join(map(str, results))}")
    tables = build_tables(rows)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"csv": out / "leaderboard.csv", "md": out / "leaderboard.md", "html": out / "leaderboard.html"}
    to_csv(tables, paths["csv"])
    with atomic_write(paths["md"], "w") as f:
        f.write(to_markdown(tables))
    with atomic_write(paths["html"], "w") as f:
        f.write(to_html(tables))
    return paths
