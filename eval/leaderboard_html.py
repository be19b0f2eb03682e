"""The leaderboard's self-contained HTML page: sortable tables, bar plots and embedded crops.

The page has no external resources: tables sort on a header click (inline script), bar plots and
image crops are embedded as base64 data. The first click on a column sorts it best first
(higher-is-better columns descending, lower-is-better ones ascending, names alphabetically); the next
click reverses it. A link can ask for an order: ``leaderboard.html#sort=table-0:2`` clicks column 2 of
``table-0`` once, ``#sort=table-0:2,2`` twice, ``#sort=table-0:2:asc`` (or ``:desc``) sorts it that way.
"""

from __future__ import annotations

import base64
import html
import io
import logging
import math
from collections.abc import Sequence

from .leaderboard_tables import (
    MAX_CROP_BYTES,
    Table,
    column_label,
    format_value,
    mime_type,
    not_embeddable,
    view_tables,
)
from .metrics.info import is_lower_better

logger = logging.getLogger(__name__)

__all__ = ["to_html"]


def _crop_data_uri(path: str) -> str | None:
    """``data:image/...;base64,...`` for a crop the tables accepted; None (with a warning) if the file
    no longer passes :func:`eval.leaderboard_tables.not_embeddable`."""
    problem = not_embeddable(path)
    if problem is None:
        try:
            with open(path, "rb") as f:
                data = f.read(MAX_CROP_BYTES + 1)
        except OSError as e:
            problem = f"cannot be read ({e.strerror or e})"
        else:
            if len(data) > MAX_CROP_BYTES or not mime_type(data):
                problem = "changed while the report was written"
    if problem:
        logger.warning("crop %s %s; left out of the report", path, problem)
        return None
    return f"data:{mime_type(data)};base64," + base64.b64encode(data).decode("ascii")


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
    cols = [c for c in cols if any(_finite(r.get(c)) for r in t.rows.values())][:4]
    if not cols:
        return None
    fig, axes = plt.subplots(1, len(cols), figsize=(3.2 * len(cols), 2.6), squeeze=False)
    methods = [_plain(m) for m in t.rows]
    for ax, c in zip(axes[0], cols):
        vals = [r.get(c) for r in t.rows.values()]
        vals = [v if _finite(v) else 0.0 for v in vals]
        ax.bar(range(len(methods)), vals, color="#4a7ab5")
        ax.set_xticks(range(len(methods)))
        ax.set_xticklabels(methods, rotation=30, ha="right", fontsize=8)
        ax.set_title(
            _plain(c) + (" (lower is better)" if is_lower_better(c.split("@")[0]) else ""), fontsize=9
        )
    fig.tight_layout()
    data = _png_b64(fig)
    plt.close(fig)
    return data


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


_SCRIPT = r"""
// data-better on a header: 'high' (sorted descending first), 'low' (ascending first) or 'text'
function sortTable(th, dir){
  const table = th.closest('table'); const idx = Array.from(th.parentNode.children).indexOf(th);
  if (!dir) dir = th.dataset.dir ? (th.dataset.dir === 'asc' ? 'desc' : 'asc')
                                 : (th.dataset.better === 'high' ? 'desc' : 'asc');
  Array.from(th.parentNode.children).forEach(o => { delete o.dataset.dir; });
  th.dataset.dir = dir; const asc = dir === 'asc';
  const body = table.tBodies[0]; const rows = Array.from(body.rows);
  const val = r => { const c = r.cells[idx]; const v = c.dataset.v;
    return v === undefined ? c.textContent : (v === '' ? NaN : parseFloat(v)); };
  rows.sort((a, b) => { const x = val(a), y = val(b);
    if (typeof x === 'string') return asc ? x.localeCompare(y) : y.localeCompare(x);
    if (isNaN(x)) return 1; if (isNaN(y)) return -1; return asc ? x - y : y - x; });
  rows.forEach(r => body.appendChild(r));
}
// #sort=table-0:2 clicks header 2 once, #sort=table-0:2,2 twice, #sort=table-0:2:asc|desc sorts that way
window.addEventListener('DOMContentLoaded', () => {
  const m = location.hash.match(/^#sort=([\w-]+):([\d,]+)(?::(asc|desc))?$/);
  const table = m && document.getElementById(m[1]);
  if (!table) return;
  const cells = table.tHead.rows[0].cells;
  for (const i of m[2].split(',')) {
    const th = cells[+i];
    if (!th) return;
    if (m[3]) sortTable(th, m[3]); else th.click();
  }
});
"""

_STYLE = """
body{font-family:sans-serif;margin:2em;color:#222} table{border-collapse:collapse;margin:1em 0}
th,td{border:1px solid #bbb;padding:4px 8px;text-align:right} th{cursor:pointer;background:#eef}
td.method,td.checkpoint{text-align:left} td.checkpoint{font-family:monospace}
td.best{font-weight:bold;background:#dfd} .crops td{text-align:center}
.crops img{width:128px;image-rendering:pixelated} .note{color:#a33;font-size:90%} .conventions{color:#555}
"""


def _header(c: str) -> str:
    better = "low" if is_lower_better(c.split("@")[0]) else "high"
    return (
        f"<th onclick='sortTable(this)' data-better='{better}' title='{html.escape(c)}'>"
        f"{html.escape(column_label(c))}</th>"
    )


def to_html(tables: Sequence[Table], *, title: str = "robustsam-restore leaderboard") -> str:
    h = html.escape
    out = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'>",
        f"<title>{h(title)}</title><style>{_STYLE}</style><script>{_SCRIPT}</script></head><body>",
        f"<h1>{h(title)}</h1>",
        "<p>Rows are ranked by each table's main metric. Click a column header to sort, best first; click again "
        "to reverse. Highlighted: best in column (↑ higher is better, ↓ lower is better; speed is not compared "
        "for identity, which does no work).</p>",
    ]
    shown: set[int] = set()
    for ti, (view_title, t, cols) in enumerate(view_tables(tables)):
        best = t.best()
        with_sha = any(t.checkpoints.get(m) for m in t.rows)
        out.append(f"<h2>{h(view_title)}</h2>")
        if t.conventions:
            out.append(f"<p class='conventions'>{h(t.conventions)}</p>")
        out.append(
            f"<table class='leaderboard' id='table-{ti}' data-task='{h(t.task)}' data-dataset='{h(t.dataset)}' "
            f"data-main='{h(t.main or '')}'>"
        )
        out.append("<thead><tr><th onclick='sortTable(this)' data-better='text'>method</th>")
        out += [_header(c) for c in cols]
        if with_sha:
            out.append(
                "<th onclick='sortTable(this)' data-better='text' title='checkpoint sha256'>checkpoint</th>"
            )
        out.append("</tr></thead><tbody>")
        for method, vals in t.rows.items():
            out.append(f"<tr class='method-row'><td class='method'>{h(method)}</td>")
            for c in cols:
                v = vals.get(c)
                cls = " class='best'" if t.marked(method, c, best) else ""
                dv = "" if not _number(v) else ("1e308" if math.isinf(v) and v > 0 else repr(float(v)))
                out.append(f"<td{cls} data-v='{dv}'>{h(format_value(v, c))}</td>")
            if with_sha:
                sha = t.checkpoints.get(method) or ""
                out.append(f"<td class='checkpoint' title='{h(sha)}'>{h(sha[:12]) or '-'}</td>")
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


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and not math.isnan(v)
