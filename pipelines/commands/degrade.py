"""``robustsam-restore degrade``: synthesise a degradation on an image or a folder of images.

Writes into OUTPUT (a folder; or, for a single input file, an image path):

- the degraded images, under the same relative paths and names (bit depth and alpha kept);
- ``manifest.json``: type, severity, base seed, and per image its own seed and the drawn
  parameters (and failures);
- ``transmission/<rel>.png``: the transmission map ``t`` as a 16-bit grayscale PNG for compositing
  degradations (haze, fog, rain, snow), whose airlight is in the manifest;
- ``kernel/<rel>.npy`` (float32, sums to 1) and ``kernel/<rel>.png`` (scaled to its maximum) for
  kernel blurs.

Each image's seed is derived from ``--seed`` and its relative path, so a result does not depend
on which other files are in the folder or on their order.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import click

from robustsam_prior.fileio import json_dumps

logger = logging.getLogger(__name__)

_FORMATS = ("same", "png", "jpg", "tif", "webp", "bmp")


def image_seed(seed: int, rel: Path | str) -> int:
    """A 63-bit seed from the base seed and a relative path (stable across runs and platforms)."""
    digest = hashlib.sha256(f"{seed}:{Path(rel).as_posix()}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


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

    from pipelines.commands._common import process_files
    from robustsam_prior.degradations import DEGRADATIONS
    from robustsam_prior.fileio import write_json
    from robustsam_prior.io import IMAGE_EXTENSIONS, collect_inputs

    try:
        DEGRADATIONS.get(kind)
    except KeyError as e:
        raise click.BadParameter(str(e.args[0]), param_hint="--type") from None
    if not input.exists():
        raise click.BadParameter(f"{str(input)!r} does not exist", param_hint="INPUT")

    single_file_target = input.is_file() and output.suffix.lower() in IMAGE_EXTENSIONS
    if input.is_dir() and output.suffix.lower() in IMAGE_EXTENSIONS:
        raise click.BadParameter(
            f"INPUT is a folder, so OUTPUT must be a folder, not {str(output)!r}", param_hint="OUTPUT"
        )
    root = output.parent if single_file_target else output
    in_res, out_res = input.resolve(), output.resolve()
    if in_res == out_res or (input.is_dir() and in_res in out_res.parents and recursive):
        raise click.BadParameter(
            "OUTPUT must not be INPUT (or inside it with --recursive): originals would be "
            "overwritten or re-read",
            param_hint="OUTPUT",
        )

    items = collect_inputs(input, recursive=recursive)
    entries: dict[str, dict] = {}
    manifest_path = output.with_suffix(".json") if single_file_target else root / "manifest.json"

    def target_for(rel: Path) -> Path:
        if single_file_target:
            return output
        out = root / rel
        return out if out_format == "same" else out.with_suffix(f".{out_format}")

    def run_one(src: Path, rel: Path) -> None:
        entries[rel.as_posix()] = _degrade_one(
            src, rel, target_for(rel), root, kind, severity, image_seed(seed, rel), single_file_target
        )

    summary = process_files(items, run_one, desc=f"degrade {kind}")
    manifest = {
        "format": "robustsam-restore/degrade-manifest",
        "type": kind,
        "severity": severity,
        "seed": seed,
        "seed_rule": "sha256('<seed>:<relative path>')[:8] little-endian >> 1",
        "images": dict(sorted(entries.items())),
        "failed": {rel.as_posix(): msg for rel, msg in summary.failed},
        "skipped": {rel.as_posix(): msg for rel, msg in summary.skipped},
    }
    if entries or summary.failed:
        write_json(manifest_path, manifest)
        logger.info("manifest written to %s", manifest_path)
    summary.report_and_exit()


def _degrade_one(
    src: Path, rel: Path, target: Path, root: Path, kind: str, severity: int, seed: int, single: bool
) -> dict:
    """Degrade one file and write its outputs; returns its manifest entry."""
    import numpy as np

    from robustsam_prior.degradations import degrade as run_degradation
    from robustsam_prior.fileio import atomic_write
    from robustsam_prior.io import read_image, to_numpy, to_tensor, write_image

    image = read_image(src)
    result = run_degradation(to_tensor(image.pixels), kind, severity, seed=seed)
    write_image(target, to_numpy(result.image), alpha=image.alpha, bit_depth=image.bit_depth)
    entry: dict = {"output": _relative(target, root), "seed": seed, "params": result.params}
    stem = target.stem if single else None

    def side(folder: str, suffix: str) -> Path:
        if single:
            return target.with_name(f"{stem}_{folder}{suffix}")
        return root / folder / rel.with_suffix(suffix)

    if result.transmission is not None:
        t_path = side("transmission", ".png")
        write_image(t_path, result.transmission[0, 0].numpy(), bit_depth=16)
        entry["transmission"] = _relative(t_path, root)
        entry["airlight"] = [round(float(v), 6) for v in result.airlight[0]]
    if result.kernel is not None:
        kernel = result.kernel[0].numpy().astype(np.float32)
        npy_path = side("kernel", ".npy")
        with atomic_write(npy_path, "wb") as f:
            np.save(f, kernel)
        png_path = side("kernel", ".png")
        write_image(png_path, kernel / max(float(kernel.max()), 1e-12))
        entry["kernel"] = _relative(npy_path, root)
        entry["kernel_png"] = _relative(png_path, root)
        entry["kernel_size"] = int(kernel.shape[0])
    return entry


def _relative(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return str(path)
