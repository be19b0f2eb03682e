"""``robustsam-restore eval``: PSNR/SSIM/LPIPS of a folder of restored images against ground truth."""

from __future__ import annotations

import logging

import click

from robustsam_prior.core.fileio import json_dumps

from ._common import max_pixels_option

logger = logging.getLogger(__name__)


def parse_metrics(text: str) -> list[str]:
    """``--metrics``: comma-separated names of :data:`eval.metrics.IMAGE_METRICS`, each once, in order."""
    names = [m.strip().lower() for m in text.split(",") if m.strip()]
    if not names:
        raise click.BadParameter("no metric given", param_hint="--metrics")
    from eval.metrics import IMAGE_METRICS

    for n in names:
        if n not in IMAGE_METRICS:
            from robustsam_prior.core.registry import did_you_mean

            raise click.BadParameter(
                f"unknown metric {n!r}{did_you_mean(n, IMAGE_METRICS.names())}", param_hint="--metrics"
            )
    return list(dict.fromkeys(names))


def refuse_missing_metrics(names: list[str], lpips_weights: str | None, allow_missing: bool) -> None:
    """A requested metric that cannot be computed (LPIPS without its backbone weights) ends the command
    with exit status 1 before anything is scored, unless ``--allow-missing``: then it is reported as
    unavailable and the others are scored."""
    from eval.metrics import missing_metrics

    missing = missing_metrics(names, lpips_weights=lpips_weights)
    if missing and not allow_missing:
        raise click.ClickException(
            "\n".join(f"{m}: cannot be computed: {reason}" for m, reason in missing.items())
            + "\n(--allow-missing scores the other metrics without it; or leave it out of --metrics)"
        )


def conventions_from(crop_border: int, y_channel: bool, quantize: bool):
    from eval.metrics.psnr_ssim import MetricConventions

    return MetricConventions(
        crop_border=crop_border, test_y_channel=y_channel, quantize=quantize, data_range=1.0
    )


def metric_options(f):
    """The metric-convention options shared by ``eval`` and ``benchmark restoration``."""
    for opt in reversed(
        [
            click.option(
                "--metrics",
                "metrics",
                default="psnr,ssim,lpips",
                show_default=True,
                help="Comma-separated: psnr, ssim, lpips (= lpips_alex), lpips_vgg.",
            ),
            click.option(
                "--crop-border",
                type=click.IntRange(min=0),
                default=0,
                show_default=True,
                help="Pixels dropped at each edge before PSNR/SSIM.",
            ),
            click.option(
                "--y-channel", is_flag=True, help="PSNR/SSIM on the Y channel (BT.601, as BasicSR)."
            ),
            click.option(
                "--quantize/--no-quantize",
                default=True,
                show_default=True,
                help="Round both images to 8-bit levels first (BasicSR's tensor2img; 8-bit files already "
                "are), the project's convention; --no-quantize scores float outputs and 16-bit files as they are.",
            ),
            click.option(
                "--lpips-weights",
                type=click.Path(exists=False),
                help="torchvision backbone weights for LPIPS (alexnet-owt-7be5be79.pth / vgg16-397923af.pth) "
                "or a folder holding them; default: the torch.hub cache.",
            ),
            click.option(
                "--allow-missing",
                is_flag=True,
                help="Report a requested metric that cannot be computed here (LPIPS without its backbone "
                "weights) as unavailable and go on; without it the command fails before scoring.",
            ),
            click.option("--device", default="cpu", show_default=True,
                         help="Device for LPIPS and models: cpu, cuda, cuda:N or auto."),
        ]
    ):
        f = opt(f)
    return f


@click.command("eval")
@click.option(
    "--pred",
    "pred_dir",
    required=True,
    type=click.Path(exists=True, file_okay=False),
    help="Folder of restored/predicted images.",
)
@click.option(
    "--gt",
    "gt_dir",
    required=True,
    type=click.Path(exists=True, file_okay=False),
    help="Folder of ground-truth images (matched by file name).",
)
@metric_options
@click.option(
    "--match",
    type=click.Choice(["auto", "name", "stem", "prefix"]),
    default="auto",
    show_default=True,
    help="How names are matched: identical names, then identical stems (auto); or SOTS-style prefix.",
)
@click.option("--recursive", is_flag=True, help="Include sub-folders (names are relative paths).")
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help='Print one JSON object {"per_image": {name: {metric: v}}, "mean": {metric: v}, "conventions": {...}} '
    "on stdout.",
)
@max_pixels_option
def evaluate(
    pred_dir,
    gt_dir,
    metrics,
    crop_border,
    y_channel,
    quantize,
    lpips_weights,
    allow_missing,
    device,
    match,
    recursive,
    as_json,
):
    """Score the images in --pred against those in --gt (PSNR/SSIM as BasicSR 1.4, LPIPS v0.1).

    The PSNR/SSIM convention (by default BasicSR 1.4, RGB, crop 0, 8-bit) is printed as the first
    line of the table and is the "conventions" object of --json. Unmatched names are listed on
    standard error. A requested metric that cannot be computed (LPIPS without its backbone weights:
    --lpips-weights or the torch hub cache) fails the command, naming the file to provide; with
    --allow-missing it is reported as unavailable, never as a number. Exit status 1 if any pair failed.
    """
    from eval.datasets import pair_folders
    from eval.restoration_benchmark import evaluate_pairs
    from robustsam_prior.core.checkpoint import CheckpointError
    from robustsam_prior.core.devices import resolve_device
    from robustsam_prior.core.fileio import jsonable

    try:
        resolve_device(device)
    except ValueError as e:  # a name other than auto/cpu/cuda/cuda:N, or cuda on a machine without a GPU
        raise click.BadParameter(str(e), param_hint="--device") from None
    names = parse_metrics(metrics)
    try:
        data = pair_folders(pred_dir, gt_dir, match=match, recursive=recursive)
    except (ValueError, NotADirectoryError, FileNotFoundError) as e:  # e.g. a device given as a folder
        raise click.ClickException(str(e)) from e
    refuse_missing_metrics(names, lpips_weights, allow_missing)
    conventions = conventions_from(crop_border, y_channel, quantize)
    try:
        result = evaluate_pairs(
            data,
            metrics=names,
            conventions=conventions,
            lpips_weights=lpips_weights,
            device=device,
        )
    except CheckpointError as e:  # --lpips-weights names a file that is corrupt, refused or of another network
        raise click.ClickException(str(e)) from None
    if data.unmatched_lq:
        click.echo(
            f"unmatched: {len(data.unmatched_lq)} predicted images have no ground truth: "
            + ", ".join(data.unmatched_lq),
            err=True,
        )
    if data.unmatched_gt:
        click.echo(
            f"unmatched: {len(data.unmatched_gt)} ground-truth images have no prediction: "
            + ", ".join(data.unmatched_gt),
            err=True,
        )
    for m, reason in result["unavailable"].items():
        click.echo(f"{m}: unavailable: {reason}", err=True)
    for f in result["failed"]:
        click.echo(f"FAILED {f['name']}: {f['error']}", err=True)
    if as_json:
        obj = {
            "per_image": result["per_image"],
            "mean": result["mean"],
            "conventions": {**conventions.to_dict(), "description": conventions.describe()},
        }
        if result["unavailable"]:
            obj["unavailable"] = result["unavailable"]
        click.echo(json_dumps(jsonable(obj), sort_keys=True))
    else:
        shown = [m for m in names if m not in result["unavailable"]]
        width = max([len(n) for n in result["per_image"]] + [4])
        if {"psnr", "ssim"} & set(shown):
            click.echo(conventions.describe())
        click.echo(f"{'image':<{width}}  " + "  ".join(f"{m:>10}" for m in shown))
        for n, vals in result["per_image"].items():
            click.echo(f"{n:<{width}}  " + "  ".join(f"{vals[m]:>10.4f}" for m in shown))
        click.echo(f"{'mean':<{width}}  " + "  ".join(f"{result['mean'][m]:>10.4f}" for m in shown))
        click.echo(f"{result['count']} images scored")
    if result["failed"] or not result["per_image"]:
        raise SystemExit(1)
