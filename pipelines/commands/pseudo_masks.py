"""``robustsam-restore pseudo-masks``: write a folder of images and pseudo-instance label masks.

The folder (``OUT/images/*.png``, ``OUT/masks/*.png``, ``OUT/manifest_<prefix>.json``) is what
``kind: robustsam`` recipes read with ``data.source: folder`` and what ``benchmark segmentation --dataset``
scores against. Run it once per source; each call adds its scenes under its own ``--prefix``.
"""

from __future__ import annotations

from pathlib import Path

import click


@click.command("pseudo-masks")
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@click.option("--images", "images_dir", help="Folder of clean images (pkg://module/folder allowed).")
@click.option("--include", multiple=True, help="Glob of image file names to use (repeatable; default all).")
@click.option("--exclude", multiple=True, help="Glob of image file names to leave out (repeatable).")
@click.option("--depth", "depth_dir", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Folder of <stem>.npy depth maps: regions bounded by depth jumps (else colour objects).")
@click.option("--shapes", type=click.IntRange(min=1), help="Instead of --images: this many procedural scenes.")
@click.option("--prefix", required=True, help="Start of every written file name (e.g. div2k, nyu, shapes).")
@click.option("--size", type=click.IntRange(min=16), default=256, show_default=True,
              help="Longest side of the written images.")
@click.option("--crops", type=click.IntRange(min=0), default=0, show_default=True,
              help="Random square crops per image written besides the whole image.")
@click.option("--crop-fraction", type=click.FloatRange(0, 1, min_open=True), default=0.5, show_default=True,
              help="Crop side as a fraction of the image's shorter side.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the crops and shapes.")
def pseudo_masks(out, images_dir, include, exclude, depth_dir, shapes, prefix, size, crops, crop_fraction, seed):
    """Write images and label masks (0 = no object) computed on the clean images into OUT."""
    import fnmatch

    from robustsam_prior.core.fileio import package_path
    from robustsam_prior.core.io import is_image_file
    from robustsam_prior.data.pseudo_masks import PseudoMaskSource, write_pseudo_mask_set, write_shapes_set

    if (images_dir is None) == (shapes is None):
        raise click.UsageError("give either --images or --shapes")
    if shapes is not None:
        records = write_shapes_set(out, count=shapes, size=size, seed=seed, prefix=prefix)
    else:
        try:
            images_dir = package_path(images_dir)
        except FileNotFoundError as e:
            raise click.BadParameter(str(e), param_hint="--images") from None
        if not images_dir.is_dir():
            raise click.BadParameter(f"{images_dir}: not a folder", param_hint="--images")
        files = sorted(
            p for p in images_dir.iterdir()
            if p.is_file() and is_image_file(p) and (not include or any(fnmatch.fnmatch(p.name, g) for g in include))
            and not any(fnmatch.fnmatch(p.name, g) for g in exclude)
        )
        if not files:
            raise click.ClickException(f"{images_dir}: no image files match --include/--exclude")
        depths = None
        if depth_dir is not None:
            depths = tuple(depth_dir / f"{p.stem}.npy" for p in files)
            missing = [d for d in depths if not d.is_file()]
            if missing:
                raise click.ClickException(f"{missing[0]}: no depth map for image {missing[0].stem}")
        source = PseudoMaskSource(prefix, tuple(files), "depth" if depths else "felzenszwalb", depths)
        try:
            records = write_pseudo_mask_set(source, out, size=size, crops=crops, crop_fraction=crop_fraction,
                                            seed=seed)
        except ValueError as e:
            raise click.ClickException(str(e)) from None
    objects = sum(r["objects"] for r in records)
    click.echo(f"{len(records)} scenes, {objects} objects written to {out}")
