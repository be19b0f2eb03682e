"""``robustsam-restore benchmark``: restoration and segmentation-robustness benchmarks (JSON Lines results)."""

from __future__ import annotations

import logging
from pathlib import Path

import click

from ._common import max_pixels_option, prior_config_mismatch, prior_config_option, stock_encoder_option
from .evaluate import conventions_from, metric_options, parse_metrics, refuse_missing_metrics

logger = logging.getLogger(__name__)


def _csv(text: str | None) -> list[str]:
    return [t.strip() for t in (text or "").split(",") if t.strip()]


def parse_methods(text: str) -> list[str | tuple[str, str]]:
    """``--methods`` items: ``SPEC`` or ``NAME=SPEC`` (NAME names the row). An item that is an existing
    file is a SPEC even if its path holds ``=``."""
    out: list[str | tuple[str, str]] = []
    for item in _csv(text):
        name, eq, spec = item.partition("=")
        if not eq or Path(item).expanduser().is_file():
            out.append(item)
        elif not name.strip() or not spec.strip():
            raise click.BadParameter(f"{item!r}: expected NAME=SPEC with both parts given", param_hint="--methods")
        else:
            out.append((name.strip(), spec.strip()))
    if not out:
        raise click.BadParameter("no method given", param_hint="--methods")
    return out


@click.group("benchmark")
def benchmark() -> None:
    """Benchmarks whose results (one JSON object per line, with provenance) feed `leaderboard`."""


@benchmark.command("restoration")
@click.option(
    "--methods",
    required=True,
    help="Comma-separated: identity, dcp, trained model names or checkpoint paths (restore.inference), each "
    "optionally as NAME=SPEC to name its row (ours=runs/a/models/final.safetensors). A checkpoint without a "
    "NAME is called <run folder>/<file stem> (a/final), with its short sha256 where two share that.",
)
@click.option(
    "--lq", "lq_dir", type=click.Path(exists=True, file_okay=False), help="Degraded images (with --gt)."
)
@click.option(
    "--gt", "gt_dir", type=click.Path(exists=True, file_okay=False), help="Ground truth (with --lq)."
)
@click.option(
    "--dataset",
    "dataset_root",
    type=click.Path(exists=True, file_okay=False),
    help="A dataset folder in a known layout (GoPro, SOTS, lq/gt...).",
)
@click.option(
    "--clean",
    "clean_dir",
    type=click.Path(exists=True),
    help="Clean images to degrade synthetically (with --degradation).",
)
@click.option("--degradation", help="Degradation kind for --clean (see `robustsam-restore degrade --list`).")
@click.option("--severity", type=click.IntRange(1, 5), default=3, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the synthetic degradations.")
@click.option("--name", "dataset_name", help="Dataset name in the results (default: from the folder).")
@click.option(
    "--task", type=click.Choice(["dehaze", "deblur", "other"]), help="Task label for the leaderboard."
)
@click.option("--prior", help="Prior for trained models that need one (default: the checkpoint's).")
@click.option(
    "--local-pool",
    type=click.IntRange(min=0),
    default=None,
    help="Channel-attention statistics window of trained NAFNets in pixels (TLC); default: each model's "
    "own setting, 0 = the whole image.",
)
@click.option(
    "--self-ensemble",
    type=click.Choice(["none", "flip", "x8"]),
    default="none",
    show_default=True,
    help="Average trained models' outputs over mirrors (flip) or all 8 rotations and mirrors (x8).",
)
@click.option("--prior-checkpoint", metavar="PATH",
              help="RobustSAM/SAM weights for the robustsam/sam priors (default: $ROBUSTSAM_CHECKPOINT or the cache folder).")
@prior_config_option()
@stock_encoder_option
@metric_options
@click.option(
    "--crops",
    "num_crops",
    type=click.IntRange(min=0),
    default=2,
    show_default=True,
    help="Save centre crops of this many images (degraded | output | gt) for the report.",
)
@click.option("--crop-size", type=click.IntRange(min=8), default=128, show_default=True)
@click.option(
    "--out", required=True, type=click.Path(dir_okay=False), help="Results file (JSON Lines; appended)."
)
@max_pixels_option
def restoration(
    methods,
    lq_dir,
    gt_dir,
    dataset_root,
    clean_dir,
    degradation,
    severity,
    seed,
    dataset_name,
    task,
    prior,
    local_pool,
    self_ensemble,
    prior_checkpoint,
    prior_config,
    stock_encoder,
    metrics,
    crop_border,
    y_channel,
    quantize,
    lpips_weights,
    allow_missing,
    device,
    num_crops,
    crop_size,
    out,
):
    """Run METHODS on paired images; per-image and mean metrics, images/s and provenance go to --out."""
    from eval.datasets import open_restoration_dataset, pair_folders
    from eval.restoration_benchmark import SyntheticPairs, run_restoration_benchmark

    metric_names = parse_metrics(metrics)
    sources = [bool(lq_dir or gt_dir), bool(dataset_root), bool(clean_dir)]
    if sum(sources) != 1:
        raise click.UsageError(
            "give exactly one of: --lq with --gt, --dataset, or --clean with --degradation"
        )
    try:
        if lq_dir or gt_dir:
            if not (lq_dir and gt_dir):
                raise click.UsageError("--lq and --gt go together")
            data = pair_folders(lq_dir, gt_dir, name=dataset_name)
        elif dataset_root:
            data = open_restoration_dataset(dataset_root, name=dataset_name)
        else:
            if not degradation:
                raise click.UsageError("--clean needs --degradation")
            data = SyntheticPairs(Path(clean_dir), degradation, severity, seed, name=dataset_name)
    except (ValueError, FileNotFoundError, KeyError) as e:
        raise click.ClickException(str(e)) from e
    refuse_missing_metrics(metric_names, lpips_weights, allow_missing)
    for attr, what in (
        ("unmatched_lq", "degraded images without ground truth"),
        ("unmatched_gt", "ground-truth images without a degraded partner"),
    ):
        left = getattr(data, attr, [])
        if left:
            click.echo(f"unmatched: {len(left)} {what}: {', '.join(left)}", err=True)
    out = Path(out)
    crops_dir = out.with_name(out.stem + "_crops") if num_crops else None
    conventions = conventions_from(crop_border, y_channel, quantize)
    try:
        rows = run_restoration_benchmark(
            methods=parse_methods(methods),
            data=data,
            metrics=metric_names,
            conventions=conventions,
            lpips_weights=lpips_weights,
            task=task,
            device=device,
            prior=prior,
            local_pool=local_pool,
            self_ensemble=self_ensemble,
            prior_options={"prior_checkpoint": prior_checkpoint, "prior_config": prior_config and prior_config.config,
                           "fast_encoder": not stock_encoder},
            crops_dir=crops_dir,
            num_crops=num_crops,
            crop_size=crop_size,
            out=out,
        )
    except (ValueError, KeyError, RuntimeError) as e:
        raise click.ClickException(str(e)) from e
    failed = False
    for m, reason in rows[0]["unavailable"].items():
        click.echo(f"{m}: unavailable: {reason}", err=True)
    click.echo(f"{rows[0]['dataset']['name']} ({rows[0]['count']} images); {conventions.describe()}")
    for r in rows:
        vals = ", ".join(f"{k}={v:.4f}" for k, v in r["metrics"].items() if isinstance(v, float))
        click.echo(f"{r['method']}: {r['count']} images, {vals}")
        for f in r["failed"]:
            failed = True
            click.echo(f"  FAILED {f['name']}: {f['error']}", err=True)
    click.echo(f"results appended to {out}")
    if failed:
        raise SystemExit(1)


@benchmark.command("segmentation")
@click.option(
    "--dataset",
    "dataset",
    default="shapes",
    show_default=True,
    help="'shapes' (built in, no download) or a folder with images/ and masks/.",
)
@click.option("--shapes-count", type=click.IntRange(min=1), default=16, show_default=True)
@click.option("--shapes-size", type=click.IntRange(min=16), default=128, show_default=True)
@click.option(
    "--segmenters",
    default="robustsam,sam",
    show_default=True,
    help="Comma-separated: robustsam, sam (RobustSAM's SAM path), regions (no weights), box (the filled prompt "
    "box, no image: the floor on box prompts).",
)
@prior_config_option("--model-config")
@click.option(
    "--prior-checkpoint", "--checkpoint", "checkpoint",
    help="RobustSAM checkpoint: a file or a Hub name (robustsam-vit-b/-l/-h) or robustsam-tiny (packaged); default: $ROBUSTSAM_CHECKPOINT, else the packaged robustsam-tiny.",
)
@stock_encoder_option
@click.option(
    "--degradations",
    default="robust-seg",
    show_default=True,
    help="Comma-separated kinds, 'robust-seg' (the paper's 15) or 'none' (clear images only).",
)
@click.option("--severities", default="3", show_default=True, help="Comma-separated severities 1..5.")
@click.option("--prompt", type=click.Choice(["box", "point"]), default="box", show_default=True)
@click.option("--num-points", type=click.IntRange(min=1), default=3, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--no-clear", is_flag=True, help="Skip the clear (undegraded) condition.")
@click.option(
    "--out", required=True, type=click.Path(dir_okay=False), help="Results file (JSON Lines; appended)."
)
@max_pixels_option
def segmentation(
    dataset,
    shapes_count,
    shapes_size,
    segmenters,
    prior_config,
    checkpoint,
    stock_encoder,
    degradations,
    severities,
    prompt,
    num_points,
    seed,
    no_clear,
    out,
):
    """Prompted-segmentation robustness (RobustSAM Tables 2-6 protocol): IoU/Dice/PA per degradation."""
    from eval.datasets import SegmentationDataset, open_segmentation_dataset
    from eval.segmentation_benchmark import run_segmentation_benchmark
    from eval.segmenters import build_segmenters
    from robustsam_prior.core.checkpoint import CheckpointError

    if dataset == "shapes":
        from robustsam_prior.data import ShapesDataset

        data = SegmentationDataset.from_shapes(
            ShapesDataset(length=shapes_count, height=shapes_size, width=shapes_size, seed=seed)
        )
    else:
        try:
            data = open_segmentation_dataset(dataset)
        except (ValueError, FileNotFoundError) as e:
            raise click.ClickException(str(e)) from e
    if degradations == "robust-seg":
        from robustsam_prior.degradations import ROBUST_SEG_SET

        kinds = list(ROBUST_SEG_SET)
    elif degradations == "none":
        kinds = []
    else:
        kinds = _csv(degradations)
    try:
        sevs = [int(s) for s in _csv(severities)]
    except ValueError as e:
        raise click.BadParameter(f"{severities!r}: expected integers 1..5", param_hint="--severities") from e
    try:
        segs = build_segmenters(
            _csv(segmenters), model_config=prior_config and prior_config.config, checkpoint=checkpoint,
            fast_encoder=not stock_encoder,
        )
        rows = run_segmentation_benchmark(
            dataset=data,
            segmenters=segs,
            degradations=kinds,
            severities=sevs,
            prompt=prompt,
            num_points=num_points,
            seed=seed,
            include_clear=not no_clear,
            out=out,
        )
    except CheckpointError as e:
        raise click.ClickException(prior_config_mismatch(e, prior_config)) from None
    except (ValueError, KeyError, FileNotFoundError) as e:
        raise click.ClickException(str(e)) from None
    for r in rows:
        cond = r["degradation"] + (f"-{r['severity']}" if r["severity"] is not None else "")
        m = r["metrics"]
        click.echo(
            f"{r['method']:<10} {cond:<24} IoU {m['iou']:.4f}  Dice {m['dice']:.4f}  PA {m['pa']:.4f}"
            f"  ({r['count']} prompts)"
        )
    click.echo(f"results appended to {out}")
