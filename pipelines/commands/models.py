"""``robustsam-restore models``: the restoration models this installation can run.

Prints :func:`restore.zoo.list_models`: the classical methods, the packaged models
(``restore/weights/zoo.json``), the default model name of each task (marked unavailable until its
weights exist) and any checkpoint files given as arguments: name, task, architecture, prior, size and
the validation metrics from the metadata, then the PSNR/SSIM convention each model's metrics follow as
its checkpoint records it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from robustsam_prior.core.fileio import json_dumps, jsonable


def _fmt_size(row: dict[str, Any]) -> str:
    if not row.get("params"):
        return "-"
    return f"{row['params'] / 1e6:.2f}M params, {row['size_bytes'] / 1e6:.1f} MB"


@click.command("models")
@click.argument("checkpoints", nargs=-1, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--task", type=click.Choice(["dehaze", "deblur"]), default=None, help="Only this task's models.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (one list of records).")
def models(checkpoints: tuple[Path, ...], task: str | None, as_json: bool) -> None:
    """List the restoration models (plus any CHECKPOINTS given): task, prior, size, metrics."""
    from restore.zoo import list_models

    rows = list_models(checkpoints, task)
    if as_json:
        click.echo(json_dumps(jsonable(rows), indent=2))
        return
    header = f"{'name':<24} {'task':<7} {'kind':<10} {'arch':<14} {'prior':<10} {'size':<26} metrics"
    click.echo(header)
    for r in rows:
        if r.get("available"):
            metrics = ", ".join(f"{k} {v:.4g}" if isinstance(v, (int, float)) else f"{k} {v}"
                                for k, v in (r.get("metrics") or {}).items()) or "-"
        else:
            metrics = f"unavailable: {r.get('error')}"
        if r.get("local_pool"):
            metrics += f"; local pool {r['local_pool']} px"
        click.echo(f"{r['name']:<24} {str(r.get('task')):<7} {r['kind']:<10} {str(r.get('arch') or '-'):<14} "
                   f"{str(r.get('prior') or '-'):<10} {_fmt_size(r):<26} {metrics}")
    # which convention each model's validation metrics follow, as its checkpoint records it
    groups: dict[str, list[str]] = {}
    for r in rows:
        if r.get("available") and r.get("metrics"):
            groups.setdefault(r.get("metric_conventions") or "convention not recorded", []).append(r["name"])
    for conventions, names in groups.items():
        click.echo(f"metrics of {', '.join(names)}: {conventions}")
