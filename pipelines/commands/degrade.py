"""``robustsam-restore degrade``: synthesise a degradation on an image or a folder of images.

Writes into OUTPUT (a folder; or, for a single input file, an image path):

- the degraded images, under the same relative paths and names (bit depth and alpha kept);
- ``manifest.json``: type, severity, base seed, and per image its own seed and the drawn
  parameters (and failures);
- ``transmission/<rel>.png``: the transmission map ``t`` as a 16-bit grayscale PNG for compositing
  degradations (haze, fog, rain, snow), whose airlight is in the manifest;
- ``kernel/<rel>.npy`` (float32, sums to 1) and ``kernel/<rel>.png`` (scaled to its maximum) for
  kernel blurs.

Side files are named after the input's path without its suffix (``x.jpg`` -> ``transmission/x.png``).
When inputs in one folder share a stem (``x.png``, ``x.jpg``, ``x.tif``), theirs keep the full name
instead (``transmission/x.jpg.png``), so that each image keeps its own; the manifest records every
path. Degraded images that would land on one name (``--format png`` on ``x.png`` and ``x.jpg``) are
refused before anything is written, naming the inputs; so is an output written over an input.

Each image's seed is derived from ``--seed`` and its relative path
(:func:`robustsam_prior.degradations.file_seed`, the rule every command, pipeline and trainer uses), so
a result does not depend on which other files are in the folder or on their order, and
``benchmark restoration --clean`` scores exactly the images written here.
"""

from __future__ import annotations

import logging
from pathlib import Path

import click

from robustsam_prior.core.fileio import json_dumps

from ._common import max_pixels_option

logger = logging.getLogger(__name__)

_FORMATS = ("same", "png", "jpg", "tif", "webp", "bmp")


def _print_list(as_json: bool, markdown: bool) -> None:
    from robustsam_prior.degradations.api import describe, describe_json

    if as_json:
        click.echo(json_dumps(describe_json(), indent=2))
    else:
        click.echo(describe(markdown=markdown), nl=False)


@click.command("degrade")
@click.argument("input", required=False, type=click.Path(path_type=Path))
@click.argument("output", required=False, type=click.Path(path_type=Path))
@click.option("-t", "--type", "kind", metavar="TYPE", help="Degradation name (see --list).")
@click.option(
    "-s",
    "--severity",
    type=click.IntRange(1, 5),
    default=3,
    show_default=True,
    help="Severity 1..5; selects the parameter ranges printed by --list.",
)
@click.option(
    "--seed",
    type=int,
    default=0,
    show_default=True,
    help="Base seed; each image's seed is derived from it and the image's relative path.",
)
@click.option("-r", "--recursive", is_flag=True, help="Also process images in sub-folders of INPUT.")
@click.option(
    "--format",
    "out_format",
    type=click.Choice(_FORMATS),
    default="same",
    show_default=True,
    help="Output image format (same = the input's).",
)
@click.option(
    "--list", "list_", is_flag=True, help="Print every degradation with its parameter ranges per severity."
)
@click.option("--json", "as_json", is_flag=True, help="With --list: print the tables as JSON.")
@click.option("--markdown", is_flag=True, help="With --list: print the tables as Markdown (for docs).")
@max_pixels_option
def degrade(
    input: Path | None,
    output: Path | None,
    kind: str | None,
    severity: int,
    seed: int,
    recursive: bool,
    out_format: str,
    list_: bool,
    as_json: bool,
    markdown: bool,
) -> None:
    """Degrade INPUT (an image or a folder) into OUTPUT with a synthetic degradation.

    OUTPUT gets the degraded images under their relative paths, manifest.json, and per image
    transmission/<name>.png (haze, fog, rain, snow) or kernel/<name>.npy and .png (kernel blurs),
    <name> being the input's path without its suffix, or with it when inputs in one folder share a
    stem (x.png, x.jpg -> transmission/x.png.png, transmission/x.jpg.png). Inputs whose degraded
    images would share a name (--format png on x.png and x.jpg) are refused before anything is
    written. OUTPUT must not be INPUT; an OUTPUT inside INPUT is not read by --recursive.

    \b
    Examples:
      robustsam-restore degrade --list
      robustsam-restore degrade photos/ hazy/ --type haze --severity 4 --seed 1
      robustsam-restore degrade photo.png out/ -t motion_blur
    """
    if list_:
        _print_list(as_json, markdown)
        return
    if input is None or output is None:
        raise click.UsageError("INPUT and OUTPUT are required (or use --list)")
    if kind is None:
        raise click.UsageError("--type is required; see `robustsam-restore degrade --list`")

    from pipelines.commands._common import (
        plan_inputs,
        refuse_collisions,
        refuse_overwrites,
        report_and_exit,
        start_output,
    )
    from robustsam_prior.batch import process_files
    from robustsam_prior.core.fileio import write_json
    from robustsam_prior.core.io import IMAGE_EXTENSIONS, is_image_file
    from robustsam_prior.degradations import DEGRADATIONS
    from robustsam_prior.degradations.files import DegradeLayout, degrade_manifest, write_degraded
    from robustsam_prior.inputs import shared_stems

    try:
        DEGRADATIONS.get(kind)
    except KeyError as e:
        raise click.BadParameter(str(e.args[0]), param_hint="--type") from None
    if not input.exists():
        raise click.BadParameter(f"{str(input)!r} does not exist", param_hint="INPUT")
    if input.is_dir() and output.suffix.lower() in IMAGE_EXTENSIONS:
        raise click.BadParameter(
            f"INPUT is a folder, so OUTPUT must be a folder, not {str(output)!r}", param_hint="OUTPUT"
        )
    items = plan_inputs(input, output, recursive=recursive)
    images = [rel for src, rel in items if is_image_file(src)]
    single_file = input.is_file() and output.suffix.lower() in IMAGE_EXTENSIONS
    layout = DegradeLayout.for_output(output, single_file=single_file, out_format=out_format,
                                      shared=shared_stems(images))
    planned = [(rel, path) for rel in images for path in layout.outputs(rel)]
    refuse_collisions(
        planned,
        hint="rename them, degrade them into separate folders" + ("" if out_format == "same" else
                                                                   " or use --format same"),
    )
    refuse_overwrites([(input / rel if input.is_dir() else input, dst) for rel, dst in planned])
    start_output(layout.root, recursive=not single_file)
    entries: dict[str, dict] = {}

    def run_one(src: Path, rel: Path) -> None:
        entries[rel.as_posix()] = write_degraded(src, rel, layout, kind, severity, seed=seed)

    summary = process_files(items, run_one, desc=f"degrade {kind}")
    if entries or summary.failed:
        write_json(layout.manifest, degrade_manifest(
            kind, severity, seed, entries, failed={rel.as_posix(): msg for rel, msg in summary.failed},
            skipped={rel.as_posix(): msg for rel, msg in summary.skipped}))
        logger.info("manifest written to %s", layout.manifest)
    report_and_exit(summary)
