"""``robustsam-restore prior-cache``: fill a prior cache for a folder of images.

Each image is decoded, keyed by its content and the prior's meta, and run through the prior unless a
valid entry exists (so an interrupted run resumes where it stopped; corrupt entries are recomputed).
The command parses its options, builds the prior and runs :func:`robustsam_prior.cache.fill_cache`.
Under ``torchrun`` (``WORLD_SIZE`` > 1) the sorted file list is sharded
(:func:`robustsam_prior.batch.process_files_sharded`: rank ``r`` of ``W`` takes files ``r, r + W,
r + 2W, ...``) and rank 0 prints the summary of all of them. Every rank exits non-zero if any file
failed on any rank.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import click

from robustsam_prior.core.fileio import json_dumps

from ._common import (
    PriorConfigArg,
    max_pixels_option,
    prior_config_option,
    stock_encoder_option,
)

logger = logging.getLogger(__name__)

SAM_PRIORS = ("robustsam", "sam")  # the priors that run a RobustSAM/SAM checkpoint


def parse_options(pairs: tuple[str, ...]) -> dict[str, Any]:
    """``("key=value", ...)`` -> dict; values are parsed as YAML scalars/lists (``2e-4``, ``[1, 99]``)
    with the limits of the config reader (``pipelines.config.load_yaml_text``)."""
    from pipelines.config import ConfigError, load_yaml_text

    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"{pair!r}: expected KEY=VALUE", param_hint="--prior-option")
        try:
            options[key.strip()] = load_yaml_text(value, repr(pair))
        except ConfigError as e:
            raise click.BadParameter(str(e), param_hint="--prior-option") from None
    return options


@click.command("prior-cache")
@click.argument("input", type=click.Path(exists=True, path_type=Path))
@click.option("--prior", "prior_name", required=True, help="Prior name: regions, none, robustsam, sam.")
@click.option(
    "--prior-checkpoint",
    "checkpoint",
    help="Checkpoint for robustsam/sam: a file or a Hub name (robustsam-vit-b/-l/-h, downloaded into the Hub cache) or robustsam-tiny (packaged); default: "
    "$ROBUSTSAM_CHECKPOINT, else the packaged robustsam-tiny.",
)
@prior_config_option()
@stock_encoder_option
@click.option(
    "--prior-option",
    "option_pairs",
    multiple=True,
    metavar="KEY=VALUE",
    help="A prior option, e.g. n_segments=200 or points_per_side=16 (repeatable; YAML values).",
)
@click.option("--cache", "cache_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Cache folder (created if needed).")
@click.option("-r", "--recursive", is_flag=True, help="Also take images in sub-folders.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as one JSON object.")
@max_pixels_option
def prior_cache(
    input: Path,
    prior_name: str,
    checkpoint: str | None,
    prior_config: PriorConfigArg | None,
    stock_encoder: bool,
    option_pairs: tuple[str, ...],
    cache_dir: Path,
    recursive: bool,
    as_json: bool,
) -> None:
    """Run a prior once per image of INPUT (a file or folder) and store the outputs in --cache."""
    from robustsam_prior.cache import fill_cache
    from robustsam_prior.core.io import ImageReadError
    from robustsam_prior.inputs import collect_inputs
    from robustsam_prior.prior import build_prior

    from ._common import check_prior_config, report_and_exit, reports_here

    options = parse_options(option_pairs)
    if checkpoint is not None:
        options["checkpoint"] = checkpoint
    for flag, given, key, value in (("--prior-config", prior_config is not None, "config",
                                     prior_config and prior_config.config),
                                    ("--stock-encoder", stock_encoder, "fast_encoder", False)):
        if given and prior_name not in SAM_PRIORS:
            raise click.UsageError(f"{flag} is for --prior {' or '.join(SAM_PRIORS)} (a RobustSAM/SAM "
                                   f"checkpoint), not {prior_name!r}")
        if given:
            options[key] = value
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and prior_name in SAM_PRIORS and "device" not in options:
        from robustsam_prior.core.devices import local_device, resolve_device

        options["device"] = str(local_device(resolve_device("auto")))  # cuda:$LOCAL_RANK where there are GPUs
    try:
        prior = build_prior(prior_name, **options)
    except (KeyError, ValueError, TypeError) as e:
        message = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
        if "checkpoint" in options and "unknown option 'checkpoint'" in message:
            message = f"prior {prior_name!r} takes no checkpoint (--prior-checkpoint)"
        raise click.UsageError(message) from e
    except FileNotFoundError as e:  # checkpoint not found: the message says where to get it
        raise click.ClickException(str(e)) from e
    check_prior_config(prior, prior_config)
    # a cache folder inside the input is not read as input (its entries are not images)
    inside = recursive and input.is_dir() and input.resolve() in cache_dir.resolve().parents
    try:
        items = collect_inputs(input, recursive=recursive, exclude=(cache_dir,) if inside else ())
    except (ImageReadError, FileNotFoundError) as e:
        raise click.ClickException(str(e)) from None
    run, stats = fill_cache(items, prior, cache_dir)
    summary, world = run.summary, run.world_size
    if not reports_here(run):
        return
    if as_json:
        click.echo(json_dumps({
            "images": len(summary.processed),
            "computed": stats["misses"],
            "already_cached": stats["hits"],
            "corrupt_recomputed": stats["corrupt"],
            "failed": {str(rel): msg for rel, msg in summary.failed},
            "skipped": [str(rel) for rel, _ in summary.skipped],
            "world_size": world,
            "seconds": round(summary.seconds, 3),
            "cache": str(cache_dir),
            "prior": prior.meta,
        }))
        if not summary.ok:
            raise SystemExit(1)
        return
    click.echo(
        f"cache {cache_dir}: {stats['misses']} computed, {stats['hits']} already cached, "
        f"{stats['corrupt']} corrupt entries recomputed ({world} process{'es' if world > 1 else ''})"
    )
    report_and_exit(summary)
