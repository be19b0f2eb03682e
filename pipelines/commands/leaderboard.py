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
