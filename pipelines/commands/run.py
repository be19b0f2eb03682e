"""``robustsam-restore run PIPELINE.yml [key=value ...]``: run a YAML pipeline (see pipelines.runner)."""

from __future__ import annotations

import click

from robustsam_prior.fileio import json_dumps, jsonable

from ._common import max_pixels_option


def load_pipeline_config(path: str, overrides: tuple[str, ...] | list[str]):
    """Validated :class:`pipelines.runner.PipelineConfig` (``ConfigError`` with the key path on problems)."""
    from pipelines.config import load_config
    from pipelines.runner import PipelineConfig

    return load_config(PipelineConfig, path, overrides)


@click.command("run")
@click.argument("pipeline", type=click.Path(dir_okay=False))
@click.argument("overrides", nargs=-1)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@max_pixels_option
def run(pipeline: str, overrides: tuple[str, ...], as_json: bool) -> None:
    """Run PIPELINE.yml; OVERRIDES are key.path=value pairs (input=photos/ output_dir=out/ steps.1.tile=512).

    Non-image files in the input are skipped with a warning and counted; output_dir must not be the
    input, and one inside it is not read by recursive=true.
    """
    from pipelines.config import ConfigError
    from pipelines.runner import run_pipeline
    from robustsam_prior.checkpoint import CheckpointError

    try:
        cfg = load_pipeline_config(pipeline, overrides)
        summary = run_pipeline(cfg, resolved_source=pipeline, overrides=overrides)
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
