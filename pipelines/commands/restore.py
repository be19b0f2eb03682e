"""``robustsam-restore dehaze|deblur INPUT OUTPUT``: restore a file or a folder of images.

INPUT is an image file or a folder (``--recursive`` walks sub-folders and keeps the tree under
OUTPUT). OUTPUT is a folder; for a single input file it may also be a file name with an image
suffix. Each output keeps its input's name, format, size, bit depth and alpha. Existing outputs
are skipped unless ``--overwrite``, so an interrupted run resumes where it stopped. A file that
fails is reported and the others are still processed; the command exits 1 if any failed.

No output is ever written over an input, ``--overwrite`` or not: OUTPUT must not be INPUT (nor, for
a single file, the folder holding it), through links included. An OUTPUT folder inside INPUT is
left out of the ``--recursive`` walk, so re-runs do not restore earlier outputs again.

Under ``torchrun`` the files are sharded over the processes
(:func:`robustsam_prior.batch.process_files_sharded`; each process on its own GPU where there are GPUs)
and rank 0 prints the summary of all of them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import click

from ._common import (
    PriorConfigArg,
    max_pixels_option,
    prior_config_option,
    stock_encoder_option,
)

logger = logging.getLogger(__name__)

PRIOR_CHOICES = ("regions", "robustsam", "sam", "none")
DEVICE_CHOICES = ("auto", "cpu", "cuda")
SELF_ENSEMBLE_CHOICES = ("none", "flip", "x8")  # restore.inference.SELF_ENSEMBLES (not imported here: torch)
MIN_TILE = 128  # restore.inference.MIN_TILE


def _check_tile(ctx: click.Context, param: click.Parameter, tile: int | None) -> int | None:
    if tile is not None and tile < 0:
        raise click.BadParameter("must be >= 0 (0 = never tile)")
    if tile is not None and 0 < tile < MIN_TILE:
        raise click.BadParameter(
            f"{tile} is too small: use 0 (never tile) or at least {MIN_TILE} pixels (smaller tiles give the "
            "network too little context: slower, and far from the untiled result)")
    return tile


def _pixels(zero: str) -> Callable[[click.Context, click.Parameter, int | None], int | None]:
    """The check of a size in pixels that must be >= 0; ``zero`` says what 0 means."""

    def check(ctx: click.Context, param: click.Parameter, value: int | None) -> int | None:
        if value is not None and value < 0:
            raise click.BadParameter(f"must be >= 0 pixels (0 = {zero})")
        return value

    return check


def run_restore(
    task: str,
    input: Path,
    output: Path,
    *,
    model: str | None,
    prior: str | None,
    prior_checkpoint: str | None,
    tile: int | None,
    overwrite: bool,
    local_pool: int | None = None,
    self_ensemble: str = "none",
    guided_radius: int | None = None,
    force_prior: bool = False,
    prior_config: PriorConfigArg | None = None,
    stock_encoder: bool = False,
    recursive: bool,
    device: str,
) -> None:
    """The body of ``dehaze``/``deblur`` (see the module docstring); exits through click."""
    from restore.inference import Restorer
    from robustsam_prior.batch import process_files_sharded
    from robustsam_prior.core.checkpoint import CheckpointError
    from robustsam_prior.core.io import is_image_file

    from ._common import (
        check_prior_config,
        plan_inputs,
        refuse_overwrites,
        report_and_exit,
        reports_here,
        start_output,
    )

    items = plan_inputs(input, output, recursive=recursive)
    single_target = input.is_file() and is_image_file(output)  # file -> file: OUTPUT is the file itself

    def output_path(rel: Path) -> Path:
        return output if single_target else output / rel

    refuse_overwrites((src, output_path(rel)) for src, rel in items if is_image_file(src))

    def setup(rank: int, world: int):  # in each process, on its own GPU where there are GPUs
        try:
            restorer = Restorer.load(
                model, task=task, prior=prior, prior_checkpoint=prior_checkpoint, device=device, tile=tile,
                local_pool=local_pool, self_ensemble=self_ensemble, guided_radius=guided_radius,
                force_prior=force_prior, prior_config=prior_config and prior_config.config,
                fast_encoder=not stock_encoder,
            )
        except (CheckpointError, ValueError, KeyError, FileNotFoundError) as e:
            raise click.ClickException(str(e).strip("'\"")) from e
        check_prior_config(restorer.prior, prior_config)
        logger.info("%s with model %s (prior %s, device %s, self-ensemble %s)", task, restorer.name,
                    getattr(restorer.prior, "name", None), restorer.device, self_ensemble)

        def restore_one(src: Path, rel: Path) -> None:
            dst = output_path(rel)
            dst.parent.mkdir(parents=True, exist_ok=True)
            restorer.restore_file(src, dst)

        return restore_one

    run = process_files_sharded(
        items, setup=setup, desc=task,
        skip=None if overwrite else lambda src, rel: output_path(rel).exists(),
        skip_reason="output exists (use --overwrite)",
        prepare=lambda: start_output(output.parent if single_target else output, recursive=not single_target),
    )
    if not reports_here(run):
        return
    if run.existing and not run.summary.failed and not run.summary.processed:
        click.echo(run.summary.line() + " (all outputs exist; --overwrite to redo)")
        return
    report_and_exit(run.summary)


def _command(task: str) -> click.Command:
    classical = "dcp|identity" if task == "dehaze" else "identity"

    @click.command(task, help=f"{task.capitalize()} INPUT (an image or a folder) into the folder OUTPUT (for one "
                         "image also a file name). OUTPUT must not be INPUT: originals are never overwritten.")
    @click.argument("input", type=click.Path(exists=True, path_type=Path))
    @click.argument("output", type=click.Path(path_type=Path))
    @click.option("--model", "model", default=None, metavar="NAME|PATH",
                  help=f"Model: {classical}, a packaged model name (see `robustsam-restore models`), a "
                       "restoration checkpoint, or a public BasicSR NAFNet / SAM-Deblur MAP-NAFNet .pth "
                       "(architecture read from the weights); default: the packaged default model.")
    @click.option("--prior", type=click.Choice(PRIOR_CHOICES), default=None,
                  help="Segmentation prior; default: the one the model was trained with. Another one is "
                       "an error unless --force-prior.")
    @click.option("--force-prior", is_flag=True,
                  help="Run the model on --prior even though it was trained with another prior.")
    @click.option("--prior-checkpoint", default=None, metavar="PATH|NAME",
                  help="RobustSAM/SAM weights for --prior robustsam|sam: a file or a Hub name "
                       "(robustsam-vit-b/-l/-h) or robustsam-tiny (packaged); default: $ROBUSTSAM_CHECKPOINT, else the packaged robustsam-tiny.")
    @prior_config_option()
    @stock_encoder_option
    @click.option("--tile", type=int, default=None, callback=_check_tile,
                  help=f"Tile size in pixels for large images: 0 = never tile, else at least {MIN_TILE} "
                       "(default: tiles of 1024 above 4 megapixels).")
    @click.option("--local-pool", type=int, default=None, metavar="PX", callback=_pixels("the whole image"),
                  help="Channel-attention statistics over a PX-wide window around each pixel instead of the "
                       "whole image (TLC, Chu et al. ECCV 2022), for blur that varies across the image; "
                       "0 = the whole image. Default: the model's own setting (144 for the packaged "
                       "deblurrers, the whole image otherwise).")
    @click.option("--guided-radius", type=int, default=None, metavar="PX", callback=_pixels("off"),
                  help="Pass the output through a guided filter of this radius with the input as guide, so it "
                       "stays a local affine map of the input (no grid or streaks on flat sky); 0 = off. "
                       "Default: the model's own setting (16 for the packaged dehazers, off otherwise).")
    @click.option("--self-ensemble", type=click.Choice(SELF_ENSEMBLE_CHOICES), default="none", show_default=True,
                  help="Average the outputs over the mirrored image (flip: 2x the time) or over all 8 "
                       "rotations and mirrors (x8: 8x the time), each restored and turned back (EDSR+'s "
                       "self-ensemble): slower, usually a little better.")
    @click.option("--overwrite", is_flag=True,
                  help="Redo outputs that already exist (never an input: OUTPUT must not be INPUT).")
    @click.option("--recursive", is_flag=True,
                  help="Also process sub-folders (the tree is kept); an OUTPUT inside INPUT is not read.")
    @max_pixels_option
    @click.option("--device", type=click.Choice(DEVICE_CHOICES), default="auto", show_default=True,
                  help="Where the network runs (half precision on CUDA).")
    def command(input, output, model, prior, force_prior, prior_checkpoint, prior_config, stock_encoder, tile,
                local_pool, guided_radius, self_ensemble, overwrite, recursive, device) -> None:
        run_restore(task, input, output, model=model, prior=prior, prior_checkpoint=prior_checkpoint,
                    tile=tile, overwrite=overwrite, recursive=recursive, device=device, local_pool=local_pool,
                    self_ensemble=self_ensemble, guided_radius=guided_radius, force_prior=force_prior,
                    prior_config=prior_config, stock_encoder=stock_encoder)

    return command


dehaze = _command("dehaze")
deblur = _command("deblur")
