"""Shared plumbing for commands that process a file or a folder of images.

:func:`process_files` runs one function per input with a progress bar, keeps going when a file
fails (the error is logged and recorded), skips non-image files with a warning, and returns a
:class:`RunSummary` whose :meth:`RunSummary.report_and_exit` prints one summary line, lists the
failures and exits non-zero if anything failed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import click

logger = logging.getLogger(__name__)


@dataclass
class RunSummary:
    """What happened to each input of a folder command (paths are relative to the input root)."""

    desc: str = "processed"
    processed: list[Path] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """True when no file failed and at least one image was processed."""
        return not self.failed and bool(self.processed)

    def line(self) -> str:
        rate = len(self.processed) / self.seconds if self.seconds > 0 else 0.0
        return (
            f"{self.desc}: {len(self.processed)} ok, {len(self.failed)} failed, "
            f"{len(self.skipped)} skipped in {self.seconds:.1f} s ({rate:.2f} images/s)"
        )

    def report_and_exit(self) -> None:
        """Print the summary (and each failure) and raise ``SystemExit(1)`` if anything failed.

        A run that found no image at all also exits 1: a typo in a folder name must not look like
        success.
        """
        click.echo(self.line())
        for rel, message in self.failed:
            click.echo(f"  FAILED {rel}: {message}", err=True)
        if self.failed:
            raise SystemExit(1)
        if not self.processed:
            click.echo("  no image files were found", err=True)
            raise SystemExit(1)


def process_files(
    items: Sequence[tuple[Path, Path]],
    fn: Callable[[Path, Path], object],
    *,
    desc: str,
) -> RunSummary:
    """Call ``fn(source, rel)`` for each ``(source, rel)`` from ``robustsam_prior.io.collect_inputs``.

    Non-image files (by suffix) are skipped with a warning. An exception from ``fn`` is logged with
    the file's relative path and recorded; the remaining files are still processed.
    ``KeyboardInterrupt`` is not caught.
    """
    from tqdm import tqdm

    from robustsam_prior.io import is_image_file

    summary = RunSummary(desc=desc)
    start = time.perf_counter()
    images = []
    for src, rel in items:
        if is_image_file(src):
            images.append((src, rel))
        else:
            logger.warning("skipping %s: not an image file (suffix %r)", rel, Path(src).suffix)
            summary.skipped.append((Path(rel), "not an image file"))
    bar = tqdm(images, desc=desc, unit="img", disable=len(images) <= 1, leave=False)
    for src, rel in bar:
        try:
            fn(Path(src), Path(rel))
        except Exception as exc:  # one bad file must not stop the folder
            message = str(exc) or type(exc).__name__
            logger.error("%s failed: %s", rel, message)
            logger.debug("traceback for %s", rel, exc_info=True)
            summary.failed.append((Path(rel), message))
        else:
            summary.processed.append(Path(rel))
    summary.seconds = time.perf_counter() - start
    return summary
