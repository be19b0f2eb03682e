"""``robustsam-restore run PIPELINE [key=value ...]``: run a YAML pipeline (see pipelines.runner).

PIPELINE is a file, ``pkg://module/file.yml``, or the name of a shipped pipeline (``dehaze``; see
:mod:`pipelines.shipped`); ``run --list`` lists the shipped ones.
"""

from __future__ import annotations

import click

from robustsam_prior.core.fileio import json_dumps, jsonable

from ._common import max_pixels_option


def load_pipeline_config(path: str, overrides: tuple[str, ...] | list[str]):
    """Validated :class:`pipelines.runner.PipelineConfig` (``ConfigError`` with the key path on problems)."""
    from pipelines.config import load_config
    from pipelines.runner import PipelineConfig

    return load_config(PipelineConfig, path, overrides)


def print_shipped() -> None:
    """One line per shipped pipeline: its name and the first sentence of its header comment."""
    from pipelines.shipped import shipped_pipelines

    shipped = shipped_pipelines()
    width = max(len(n) for n in shipped)
    for name, p in shipped.items():
        click.echo(f"{name:<{width}}  {p.description}")


@click.command("run")
@click.argument("pipeline", required=False)
@click.argument("overrides", nargs=-1)
@click.option("--list", "list_", is_flag=True, help="List the shipped pipelines (name and description) and exit.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@max_pixels_option
def run(pipeline: str | None, overrides: tuple[str, ...], list_: bool, as_json: bool) -> None:
    """Run PIPELINE; OVERRIDES are key.path=value pairs (input=photos/ output_dir=out/ steps.1.tile=512).

    PIPELINE is a YAML file (a run's saved OUTPUT_DIR/pipeline.yml too), or the name of a shipped
    pipeline, which works from any folder: `run dehaze input=hazy/`. `run --list` shows the shipped ones.

    Non-image files in the input are skipped with a warning and counted; output_dir must not be the
    input, and one inside it is not read by recursive=true.
    """
    if list_:
        print_shipped()
        return
    if pipeline is None:
        raise click.UsageError("missing PIPELINE (a YAML file or a shipped name; run --list shows those)")
    from pipelines.config import ConfigError
    from pipelines.runner import run_pipeline
    from pipelines.shipped import find_pipeline
    from robustsam_prior.core.checkpoint import CheckpointError

    try:
        path = find_pipeline(pipeline)
        cfg = load_pipeline_config(str(path), overrides)
        summary = run_pipeline(cfg, resolved_source=str(path), overrides=overrides)
    except (ConfigError, CheckpointError, ValueError, KeyError, FileNotFoundError) as e:
        raise click.ClickException(str(e).strip("'\"")) from None
    if as_json:
        click.echo(json_dumps(jsonable(summary), indent=2, default=str))
    else:
        means = ", ".join(f"{k} {v:.3f}" for k, v in summary.get("mean", {}).items())
        click.echo(
            f"{summary['name']}: {summary['processed']} ok, {len(summary['failed'])} failed, "
            f"{len(summary.get('skipped', []))} skipped in "
            f"{summary['seconds']:.1f} s{'; ' + means if means else ''}; outputs in {summary['output_dir']}"
        )
        for f in summary["failed"]:
            click.echo(f"  failed: {f['rel']}: {f['error']}", err=True)
    if summary["failed"]:
        raise SystemExit(1)
