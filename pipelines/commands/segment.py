"""``robustsam-restore segment``: prompted or automatic RobustSAM masks for an image or a folder of
images, the way segment-anything's ``scripts/amg.py`` is used. The command parses its options and runs
:mod:`robustsam_prior.segment` (:class:`~robustsam_prior.segment.Prompts`,
:func:`~robustsam_prior.segment.load_model`, :func:`~robustsam_prior.segment.segment_file`) over the files.

For one image, writes into the OUTPUT folder (for a folder INPUT, into ``OUTPUT/<name>/`` per image,
``<name>`` the image's relative path without its suffix, or with it where two images share a stem):

- ``overlay.png``: the image with each mask (or region) tinted in its own colour and the prompts marked
  (green/red discs for foreground/background points, a blue box outline; ``--auto``: small white discs
  on the grid points whose masks were kept);
- prompted mode: ``mask_<i>.png`` (8-bit grayscale, 255 inside) per returned mask;
  ``--auto``: ``labels.png``, a 16-bit grayscale PNG whose sample value is the region id
  (:func:`robustsam_prior.masks_to_label_map`: non-overlapping regions 0..K-1), and beside it the
  overlapping masks: ``masks/<i>.png`` per mask and ``masks.json``, a list of segment-anything's records
  (``segmentation`` as COCO RLE, compressed when pycocotools is installed, ``area``, ``bbox`` XYWH,
  ``predicted_iou``, ``stability_score``, ``point_coords``, ``crop_box``);
- ``scores.json``: predicted IoU per mask (plus area, and for ``--auto`` the record fields, region ids
  and how many candidates each filter kept), the checkpoint's path and sha256 and the settings used.

``--auto`` with no mask left says which filter removed the candidates (``pred_iou_thresh``,
``stability_score_thresh``, the crop edge, box NMS or the minimum region area) with the counts.

Prompts are checked against every image before the model is loaded: coordinates must be finite and
points must lie on the image (x in [0, W), y in [0, H)), a box inside [0, W] x [0, H]. An image that
cannot be read is a one-line error naming the file (in a folder, that file fails and the others go on).
Nothing of an image is written until all of its results are known, so a bad prompt, an unreadable image
or a score JSON cannot hold (NaN) leaves its output as it was. Under ``torchrun`` the images of a folder
are sharded over the processes (:func:`robustsam_prior.batch.process_files_sharded`) and rank 0 prints
the summary of all of them.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from robustsam_prior.automatic_limits import MAX_POINTS_PER_SIDE

from ._common import (
    PriorConfigArg,
    max_pixels_option,
    prior_config_mismatch,
    prior_config_option,
    stock_encoder_option,
)

logger = logging.getLogger(__name__)


def _prompt_option_errors(fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)``, a prompt error becoming a usage error of the option it came from (--points, --box)."""
    from robustsam_prior.segment import PromptError

    try:
        return fn(*args)
    except PromptError as e:
        raise click.BadParameter(str(e), param_hint=f"--{e.prompt}") from None


def _unit_interval(ctx: click.Context, param: click.Parameter, value: float | None) -> float | None:
    """A threshold in [0, 1] (``None``: not given); click's FloatRange lets NaN through."""
    if value is None:
        return None
    if not (math.isfinite(value) and 0.0 <= value <= 1.0):
        raise click.BadParameter(f"{value} is not a number in [0, 1]")
    return value


@click.command("segment")
@click.argument("input", type=click.Path(exists=True, path_type=Path))
@click.argument("output", type=click.Path(file_okay=False, path_type=Path))
@click.option("--points", "points_text", help='Point prompts "x,y,label;..." (label 1 foreground, 0 background).')
@click.option("--box", "box_text", help="Box prompt x0,y0,x1,y1 in image pixels.")
@click.option("--auto", is_flag=True, help="Automatic masks over a point grid: one PNG per mask, COCO RLE "
              "masks.json and one label map.")
@click.option("--recursive", is_flag=True, help="A folder INPUT: also take images in sub-folders.")
@click.option("--prior-checkpoint", "checkpoint", help="RobustSAM checkpoint file or Hub name (robustsam-vit-b/-l/-h, downloaded into the Hub cache) or robustsam-tiny (packaged); "
              "default: $ROBUSTSAM_CHECKPOINT, else the packaged robustsam-tiny.")
@prior_config_option("--config")
@stock_encoder_option
@click.option("--path", "path", type=click.Choice(["robust", "sam"]), default="robust", show_default=True,
              help="Decoder path: RobustSAM or vanilla SAM tokens/MLPs.")
@click.option("--multimask", is_flag=True, help="Prompted mode: return 3 candidate masks instead of 1.")
@click.option("--bn-mode", type=click.Choice(["running", "batch"]), default="running", show_default=True,
              help="BatchNorm statistics of the robust blocks (batch = the official demo's per-image statistics).")
@click.option("--points-per-side", type=click.IntRange(1, MAX_POINTS_PER_SIDE), default=32, show_default=True,
              help=f"--auto: grid size, 1..{MAX_POINTS_PER_SIDE} (points-per-side² prompts).")
@click.option("--pred-iou-thresh", type=float, default=None, callback=_unit_interval,
              help="--auto: min predicted IoU, in [0, 1]; default: Meta's 0.88 for the official checkpoints, 0 for "
              "the packaged robustsam-tiny (its predicted IoUs are not calibrated like SAM's).")
@click.option("--stability-thresh", type=float, default=None, callback=_unit_interval,
              help="--auto: min stability score, in [0, 1]; default: Meta's 0.95 for the official checkpoints, 0 "
              "for the packaged robustsam-tiny.")
@click.option("--box-nms-thresh", type=float, default=0.7, show_default=True, callback=_unit_interval,
              help="--auto: box IoU above which the lower-scored of two masks is dropped, in [0, 1].")
@click.option("--min-mask-region-area", type=click.IntRange(min=0), default=0, show_default=True,
              help="--auto: remove islands and holes smaller than this many pixels (0 = off).")
@click.option("--device", default="cpu", show_default=True, help="torch device: cpu, cuda, cuda:N or auto.")
@click.option("--json", "as_json", is_flag=True, help="Also print scores.json (a folder: a summary) to stdout.")
@max_pixels_option
def segment(
    input: Path,
    output: Path,
    points_text: str | None,
    box_text: str | None,
    auto: bool,
    recursive: bool,
    checkpoint: str | None,
    prior_config: PriorConfigArg | None,
    stock_encoder: bool,
    path: str,
    multimask: bool,
    bn_mode: str,
    points_per_side: int,
    pred_iou_thresh: float | None,
    stability_thresh: float | None,
    box_nms_thresh: float,
    min_mask_region_area: int,
    device: str,
    as_json: bool,
) -> None:
    """Segment INPUT (an image or a folder of images) with RobustSAM; write overlay, masks and scores into
    the folder OUTPUT (one sub-folder per image for a folder)."""
    if auto and (points_text or box_text):
        raise click.UsageError("--auto cannot be combined with --points/--box")
    if not auto and not (points_text or box_text):
        raise click.UsageError("give --points and/or --box, or --auto")

    from robustsam_prior.batch import process_files_sharded
    from robustsam_prior.core.checkpoint import CheckpointError
    from robustsam_prior.core.devices import resolve_device
    from robustsam_prior.core.io import is_image_file, read_image
    from robustsam_prior.inputs import shared_stems
    from robustsam_prior.segment import Prompts, image_size, load_model, output_folder, segment_file

    from ._common import plan_inputs, report_and_exit, reports_here, start_output

    prompts = _prompt_option_errors(Prompts.parse, points_text, box_text)
    try:
        device = str(resolve_device(device))
    except ValueError as e:  # a name other than auto/cpu/cuda/cuda:N, or cuda on a machine without a GPU
        raise click.BadParameter(str(e), param_hint="--device") from None
    single = input.is_file()
    if single:
        try:  # before the model: a bad file or prompt should not wait for a checkpoint to load
            first = read_image(input)
        except (ValueError, OSError) as e:  # ImageReadError names the file and the reason
            raise click.ClickException(str(e) if str(input) in str(e) else f"cannot read image {str(input)!r}: {e}") from None
        items = [(input, Path(input.name))]
        _prompt_option_errors(prompts.check_inside, *first.pixels.shape[:2], str(input))
    else:
        items = [(src, rel) for src, rel in plan_inputs(input, output, recursive=recursive) if is_image_file(src)]
        for src, _ in items if prompts.given else ():
            size = image_size(src)
            if size is not None:
                _prompt_option_errors(prompts.check_inside, *size, str(src))
    shared = shared_stems(rel for _, rel in items)
    settings = {"path": path, "multimask": multimask, "points_per_side": points_per_side,
                "pred_iou_thresh": pred_iou_thresh, "stability_score_thresh": stability_thresh,
                "box_nms_thresh": box_nms_thresh, "min_mask_region_area": min_mask_region_area, "progress": single}
    reports: dict[str, dict] = {}

    def setup(rank: int = 0, world: int = 1) -> Callable[[Path, Path], None]:
        try:
            model = load_model(checkpoint, prior_config and prior_config.config, bn_mode=bn_mode,
                               fast=not stock_encoder, device=device)
        except (CheckpointError, ValueError) as e:
            raise click.ClickException(prior_config_mismatch(e, prior_config)) from e

        def one(src: Path, rel: Path) -> None:
            out = output_folder(output, None if single else rel, shared)
            try:
                result = segment_file(model, src, out, prompts=prompts, image=first if single else None, **settings)
            except (ValueError, OSError) as e:  # each names the file or the folder; nothing was written
                raise click.ClickException(str(e)) from None
            why = result.scores.get("no_masks")
            if why and not (single and as_json):
                click.echo(f"{src}: 0 masks: {why}", err=not single)
            reports[rel.as_posix()] = {"output": str(out), "masks": len(result.scores["masks"]),
                                       **({"no_masks": why} if why else {}),
                                       **({"text": result.to_json()} if single else {})}

        return one

    if single:  # one image: rank 0 alone under torchrun, without a process group (nothing to share)
        if int(os.environ.get("RANK", "0")) != 0:
            return
        setup()(input, items[0][1])  # an error is the command's error
        report = reports[items[0][1].as_posix()]
        if as_json:
            click.echo(report["text"])
        elif "no_masks" not in report:
            click.echo(f"{input}: {report['masks']} masks -> {output}")
        return
    run = process_files_sharded(items, setup=setup, desc="segment", prepare=lambda: start_output(output),
                                collect=lambda: reports)
    if not reports_here(run):
        return
    if as_json:
        from robustsam_prior.core.fileio import json_dumps

        everyone = {rel: report for rank_reports in run.collected for rel, report in rank_reports.items()}
        click.echo(json_dumps({
            "images": dict(sorted(everyone.items())),
            "failed": {str(rel): msg for rel, msg in run.summary.failed},
            "world_size": run.world_size,
        }))
    report_and_exit(run.summary)
