"""Leaderboards from benchmark JSON Lines: CSV, Markdown and one self-contained HTML page.

The tables (grouping, method names, ranking by the main metric, best values, duplicate and convention
checks) are built by :mod:`eval.leaderboard_tables`; the HTML page (click-to-sort, plots, crops) by
:mod:`eval.leaderboard_html`. Every table states its PSNR/SSIM convention and, where rows name one,
each row's checkpoint sha256 (the first 12 hex digits in Markdown and HTML, all of it in the CSV).

Results files may come from someone else, so nothing in them is trusted:

- a row's ``crops`` are paths relative to its results file; one that leads out of that file's
  folder (``../``, an absolute path, a symbolic link), is not a regular file, is over
  :data:`eval.leaderboard_tables.MAX_CROP_BYTES` or is not a PNG/JPEG/GIF/WebP image is left out of
  the page with a warning naming the file, line and path, so publishing a board cannot publish other
  files of the machine that built it (``benchmark --crops`` writes its crops into ``<results>_crops/``
  beside the file);
- text (method, task and dataset names, metric names and values that are not numbers) is escaped
  for each output: HTML escaping, Markdown escaping (a ``|`` cannot split a table cell, ``<`` cannot
  open a tag, ``[`` cannot start a link), and in the CSV a cell starting with ``=``, ``+``, ``-``,
  ``@``, a tab or a carriage return gets a leading ``'`` so that a spreadsheet shows it as text
  instead of running it as a formula (OWASP's advice on CSV injection); numbers stay numbers.
"""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Sequence
from pathlib import Path

from .leaderboard_html import to_html
from .leaderboard_tables import Table, build_tables, column_label, format_value, order_columns, view_tables

__all__ = ["Table", "build_tables", "to_csv", "to_html", "to_markdown", "write_leaderboard"]

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
    """One line per (table, method), in each table's rank order, with its checkpoint sha256 and the
    table's PSNR/SSIM convention."""
    cols = order_columns({c for t in tables for c in t.columns})
    from robustsam_prior.core.fileio import atomic_write

    with atomic_write(path, "w") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["task", "dataset", "method", *map(_csv_cell, cols), "checkpoint_sha256", "conventions"])
        for t in tables:
            for method, vals in t.rows.items():
                cells = (
                    t.task,
                    t.dataset,
                    method,
                    *(vals.get(c) for c in cols),
                    t.checkpoints.get(method),
                    t.conventions,
                )
                w.writerow([_csv_cell(v) for v in cells])


def to_markdown(tables: Sequence[Table]) -> str:
    out = ["# Leaderboard", ""]
    for title, t, cols in view_tables(tables):
        best = t.best()
        with_sha = any(t.checkpoints.get(m) for m in t.rows)
        out += [f"## {_md(title)}", ""]
        if t.conventions:
            out += [_md(t.conventions), ""]
        if t.main:
            out += [f"Ranked by {_md(column_label(t.main))}.", ""]
        out.append(
            "| method | "
            + " | ".join(_md(column_label(c)) for c in cols)
            + (" | checkpoint" if with_sha else "")
            + " |"
        )
        out.append("|---|" + "---|" * (len(cols) + with_sha))
        for method, vals in t.rows.items():
            cells = []
            for c in cols:
                s = _md(format_value(vals.get(c), c))
                cells.append(f"**{s}**" if t.marked(method, c, best) else s)
            if with_sha:
                cells.append(_md((t.checkpoints.get(method) or "-")[:12]))
            out.append(f"| {_md(method)} | " + " | ".join(cells) + " |")
        if t.notes:
            out.append("")
        out += [f"- {_md(n)}" for n in t.notes]
        out.append("")
    out.append(
        "Bold: best in column (↑ higher is better, ↓ lower is better; speed is not compared for identity, "
        "which does no work)."
    )
    return "\n".join(out) + "\n"


def write_leaderboard(results: Sequence[str | os.PathLike], out_dir: str | os.PathLike) -> dict[str, Path]:
    """Merge result files into ``out_dir/leaderboard.{csv,md,html}``; returns the written paths.

    Raises ``ValueError`` naming the file (and line) for a bad results file, and naming both rows for
    conflicting duplicates or different PSNR/SSIM conventions in one table (:func:`build_tables`);
    nothing is written then.
    """
    from robustsam_prior.core.fileio import atomic_write

    from .provenance import read_rows

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
