"""``robustsam-restore leaderboard``: merge benchmark results into CSV, Markdown and HTML."""

from __future__ import annotations

import click


@click.command("leaderboard")
@click.argument("results", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False),
    help="Folder for leaderboard.csv, leaderboard.md and leaderboard.html.",
)
def leaderboard(results, out_dir):
    """Merge RESULTS (JSON Lines from `benchmark`) into one table per task and dataset.

    Rows are ranked by the table's main metric (PSNR; average IoU for segmentation) and show their
    checkpoint's sha256; each table names its PSNR/SSIM convention. One name measured with two
    checkpoints gives two rows (name@<sha256[:8]>); a later run appended to the same file replaces the
    earlier one; the same name with other results in another file is an error naming both rows, as are
    two PSNR/SSIM conventions in one table. identity's speed is never marked best. In the HTML page the
    first click on a column sorts it best first.

    Crops are embedded in the HTML only from the folder of their results file, and only image
    files; any other crop path is left out with a warning naming the file, line and path.
    """
    from eval.leaderboard import write_leaderboard

    try:
        paths = write_leaderboard(list(results), out_dir)
    except (ValueError, OSError) as e:  # a bad results file (named with its line), an unwritable --out
        raise click.ClickException(str(e)) from e
    for kind, p in paths.items():
        click.echo(f"{kind}: {p}")
