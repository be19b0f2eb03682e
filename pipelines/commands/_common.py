"""Shared plumbing for commands that process a file or a folder of images.

The files themselves are processed by :mod:`robustsam_prior.batch` (``process_files``, and
``process_files_sharded`` under ``torchrun``); :func:`report_and_exit` prints the ``RunSummary`` it
returns as one line, lists the failures and exits non-zero if anything failed, and :func:`reports_here`
lets rank 0 alone report a sharded run while every rank shares its exit status.

Before a folder command writes anything: :func:`plan_inputs` refuses an OUTPUT that is the INPUT and
leaves an output folder inside the input out of a ``--recursive`` walk; :func:`refuse_overwrites`
refuses a run in which any output would be written over an input file;
:func:`refuse_collisions` refuses one in which two inputs would write the same output; and
:func:`start_output` removes temporary files a killed earlier run left in the output folder.
:func:`max_pixels_option` is the ``--max-pixels`` option of every command that reads images.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:  # pragma: no cover
    from robustsam_prior.batch import RunSummary, ShardedRun

logger = logging.getLogger(__name__)


def report_and_exit(summary: RunSummary) -> None:
    """Print ``summary``'s line (and each failure) and raise ``SystemExit(1)`` if anything failed.

    A run that found no image at all also exits 1: a typo in a folder name must not look like success.
    """
    click.echo(summary.line())
    for rel, message in summary.failed:
        click.echo(f"  FAILED {rel}: {message}", err=True)
    if summary.failed:
        raise SystemExit(1)
    if not summary.processed:
        click.echo("  no image files were found", err=True)
        raise SystemExit(1)


def reports_here(run: ShardedRun) -> bool:
    """Whether this process prints the report of a sharded run: rank 0 does. Another rank prints nothing
    and shares rank 0's exit status: it exits 1 when a file failed on any rank or nothing was done."""
    if run.rank == 0:
        return True
    if not run.ok:
        raise SystemExit(1)
    return False


# robustsam_prior.core.io.DEFAULT_MAX_PIXELS, spelled out so that --help does not import the reader
DEFAULT_MAX_PIXELS = 200_000_000


def _set_max_pixels(ctx: click.Context, param: click.Parameter, value: int) -> int:
    from robustsam_prior.core.io import set_max_pixels

    set_max_pixels(value)
    return value


def max_pixels_option(f: Callable) -> Callable:
    """``--max-pixels N``: the pixel limit of every image the command reads (``robustsam_prior.core.io``)."""
    return click.option(
        "--max-pixels",
        type=click.IntRange(min=1),
        default=DEFAULT_MAX_PIXELS,
        show_default=True,
        metavar="N",
        expose_value=False,
        callback=_set_max_pixels,
        help="Refuse images of more than N pixels (width x height, read from the file header before "
        "anything is decoded), whatever the format: a small compressed file can decode to gigabytes. "
        "A refused file is named with the limit, and the rest of a folder is still processed.",
    )(f)


def plan_inputs(input: Path, output: Path, *, recursive: bool) -> list[tuple[Path, Path]]:
    """``collect_inputs(input)`` after the output-location checks, as one-line click errors.

    OUTPUT must not be INPUT; an output folder inside INPUT is left out of a ``--recursive`` walk,
    so that a re-run does not read the previous outputs as new inputs. A FIFO or device given as
    INPUT is refused without being opened.
    """
    from robustsam_prior.core.io import ImageReadError
    from robustsam_prior.inputs import check_output_location, collect_inputs

    try:
        exclude = check_output_location(input, output, recursive=recursive)
        items = collect_inputs(input, recursive=recursive, exclude=exclude)
    except (ImageReadError, FileNotFoundError, ValueError) as e:
        raise click.ClickException(str(e)) from None
    for folder in exclude:
        logger.info("not reading %s: it is the output folder, inside the input", folder)
    return items


def refuse_overwrites(pairs: Iterable[tuple[Path, Path]]) -> None:
    """A one-line click error if any planned ``(source, output)`` writes over an input file."""
    from robustsam_prior.inputs import refuse_overwriting_inputs

    try:
        refuse_overwriting_inputs(pairs)
    except ValueError as e:
        raise click.ClickException(str(e)) from None


def refuse_collisions(outputs: Iterable[tuple[Path, Path]], *, hint: str) -> None:
    """A one-line click error if two inputs would write the same output.

    ``outputs`` holds ``(input rel, output path)`` pairs (an input may have several outputs);
    ``hint`` tells the user what to do. The message names the colliding inputs and the output.
    """
    writers: dict[str, set[str]] = {}
    for rel, dst in outputs:
        writers.setdefault(os.path.normpath(dst), set()).add(Path(rel).as_posix())
    clashes = {dst: sorted(rels) for dst, rels in writers.items() if len(rels) > 1}
    if clashes:
        dst, rels = min(clashes.items(), key=lambda kv: kv[1])
        more = f" (and {len(clashes) - 1} more output(s))" if len(clashes) > 1 else ""
        raise click.ClickException(f"inputs {', '.join(rels)} would be written to the same file {dst}{more}; {hint}")


def start_output(folder: Path, *, recursive: bool = True) -> None:
    """Remove what killed earlier runs left in ``folder``: this project's stale temporary files only."""
    from robustsam_prior.core.fileio import clean_stale_temp_files

    clean_stale_temp_files(folder, recursive=recursive)


@dataclass(frozen=True)
class PriorConfigArg:
    """A parsed ``--prior-config``: what was typed (``text``) and what ``build_robustsam`` takes
    (``config``: a variant name or an architecture dict)."""

    text: str
    config: str | dict


def _parse_prior_config(ctx: click.Context, param: click.Parameter, value: str | None) -> PriorConfigArg | None:
    if value is None:
        return None
    from robustsam_prior.modeling.build import read_config_argument

    try:
        return PriorConfigArg(value, read_config_argument(value))
    except ValueError as e:
        raise click.BadParameter(str(e)) from None


def prior_config_option(*names: str) -> Callable[[Callable], Callable]:
    """``--prior-config NAME|FILE.json`` (plus any older ``names``): the RobustSAM architecture, parsed
    into a :class:`PriorConfigArg` (``prior_config`` parameter) before the command runs."""
    return click.option(
        "--prior-config",
        *names,
        "prior_config",
        metavar="NAME|FILE.json",
        callback=_parse_prior_config,
        help="RobustSAM architecture: vit_b, vit_l or vit_h, or a JSON file with the sizes (the keys of "
        "tests/data/robustsam/tiny_config.json); default: from the checkpoint.",
    )


def stock_encoder_option(f: Callable) -> Callable:
    """``--stock-encoder``: run RobustSAM's image encoder with segment_anything's own forward."""
    return click.option(
        "--stock-encoder",
        is_flag=True,
        help="Run the RobustSAM image encoder with segment_anything's stock forward instead of the fast "
        "one (robustsam_prior.fast_encoder: same weights and outputs, about 2x faster on the CPU).",
    )(f)


def prior_config_mismatch(error: Exception, prior_config: PriorConfigArg | None) -> str:
    """The message of a checkpoint error, saying which ``--prior-config`` the file did not fit (other
    errors, such as an unreadable file, are about the file alone and keep their message)."""
    if prior_config is None or "does not fit" not in str(error):  # the loader's words for a key/shape mismatch
        return str(error)
    return f"--prior-config {prior_config.text} does not fit the checkpoint: {error}"


def check_prior_config(prior: Any, prior_config: PriorConfigArg | None) -> None:
    """With ``--prior-config``, build and load ``prior``'s network now (a SAM-family prior builds it on first
    use), so that a checkpoint the architecture does not fit is one error rather than one per file."""
    if prior_config is None or prior is None:
        return
    from robustsam_prior.core.checkpoint import CheckpointError

    try:
        prior.model  # noqa: B018 - builds and loads the prior's network
    except (CheckpointError, ValueError) as e:
        raise click.ClickException(prior_config_mismatch(e, prior_config)) from e
