"""Running one function over many image files: a progress bar, failures collected, and under ``torchrun``
the files sharded over the processes.

:func:`process_files` calls ``fn(source, rel)`` for each input of
:func:`robustsam_prior.inputs.collect_inputs` with a progress bar. A file whose ``fn`` raises is logged
and recorded, and the other files are still processed; non-image files (by suffix) are skipped with a
warning. It returns a :class:`RunSummary`.

:func:`process_files_sharded` does the same in each process of a ``torchrun`` launch (``WORLD_SIZE`` > 1),
and in one process when there is no launch. Under ``torchrun`` it starts a gloo process group (it
carries only small Python objects, so it works on CPUs and GPUs alike) and, where CUDA is present, makes
``cuda:$LOCAL_RANK`` the current device, so that ``cuda`` in a ``setup`` function means this process's
GPU. Rank ``r`` of ``W`` takes files ``r, r + W, r + 2W, ...`` of the sorted list; a file whose output
already exists can be skipped; and every rank returns a :class:`ShardedRun` holding the summary of all
of them, so that one rank can report for everyone and every rank can share its exit status.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

FileFn = Callable[[Path, Path], Any]


@dataclass
class RunSummary:
    """What happened to each input of a run over files (paths are relative to the input root)."""

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
        """One line: counts, time and images per second."""
        rate = len(self.processed) / self.seconds if self.seconds > 0 else 0.0
        return (
            f"{self.desc}: {len(self.processed)} ok, {len(self.failed)} failed, "
            f"{len(self.skipped)} skipped in {self.seconds:.1f} s ({rate:.2f} images/s)"
        )

    @classmethod
    def merge(cls, summaries: Sequence[RunSummary], desc: str) -> RunSummary:
        """One summary of several processes' summaries (the run took as long as the slowest of them)."""
        merged = cls(desc=desc)
        for s in summaries:
            merged.processed += s.processed
            merged.skipped += s.skipped
            merged.failed += s.failed
            merged.seconds = max(merged.seconds, s.seconds)
        return merged


def process_files(items: Sequence[tuple[Path, Path]], fn: FileFn, *, desc: str) -> RunSummary:
    """Call ``fn(source, rel)`` for each ``(source, rel)`` from ``robustsam_prior.inputs.collect_inputs``.

    Non-image files (by suffix) are skipped with a warning. An exception from ``fn`` is logged with
    the file's relative path and recorded; the remaining files are still processed.
    ``KeyboardInterrupt`` is not caught.
    """
    from .core.io import is_image_file
    from .core.progress import progress_bar

    summary = RunSummary(desc=desc)
    start = time.perf_counter()
    images = []
    for src, rel in items:
        if is_image_file(src):
            images.append((src, rel))
        else:
            logger.warning("skipping %s: not an image file (suffix %r)", rel, Path(src).suffix)
            summary.skipped.append((Path(rel), "not an image file"))
    bar = progress_bar(images, desc=desc, unit="img", disable=len(images) <= 1, leave=False)
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


@dataclass
class ShardedRun:
    """What :func:`process_files_sharded` did, on every rank alike: the files of all ranks."""

    summary: RunSummary
    rank: int = 0
    world_size: int = 1
    existing: int = 0  # files left alone because their output exists (``skip``), over all ranks
    collected: list[Any] = field(default_factory=list)  # ``collect()`` of each rank, in rank order

    @property
    def ok(self) -> bool:
        """No file failed on any rank, and some file was processed or already had its output."""
        return not self.summary.failed and bool(self.summary.processed or self.existing)


def process_files_sharded(
    items: Sequence[tuple[Path, Path]],
    fn: FileFn | None = None,
    *,
    desc: str,
    setup: Callable[[int, int], FileFn] | None = None,
    skip: Callable[[Path, Path], bool] | None = None,
    skip_reason: str = "output exists",
    prepare: Callable[[], object] | None = None,
    collect: Callable[[], Any] | None = None,
) -> ShardedRun:
    """:func:`process_files` over this process's share of ``items`` (all of them outside ``torchrun``).

    Give either ``fn`` or ``setup``: ``setup(rank, world_size)`` is called once in each process, after the
    process group exists and its GPU is the current device, and returns the ``fn`` (load a model there).
    ``skip(source, rel)`` true leaves an image file alone (its output exists; recorded as skipped with
    ``skip_reason`` and counted in :attr:`ShardedRun.existing`). ``prepare()`` runs on rank 0 alone
    before any rank processes a file (clean the output folder: another rank's fresh temporary file is
    then never taken for a stale one). ``collect()`` runs in each process after its files; the values
    of all ranks are :attr:`ShardedRun.collected`. Under ``torchrun`` each process's progress bar is
    labelled ``desc[rank r]`` and the merged summary ``desc``.

    An exception from ``setup``, ``prepare`` or ``collect`` propagates (after the process group is
    closed); one from ``fn`` fails that file only.
    """
    if (fn is None) == (setup is None):
        raise TypeError("process_files_sharded: give either fn or setup")
    from .core.io import is_image_file

    rank, world, owned = _start_process_group()
    try:
        if setup is not None:
            fn = setup(rank, world)
        if rank == 0 and prepare is not None:
            prepare()
        _barrier(world)
        todo, existing = [], []
        for src, rel in items[rank::world]:
            if skip is not None and is_image_file(src) and skip(Path(src), Path(rel)):
                existing.append(Path(rel))
            else:
                todo.append((src, rel))
        summary = process_files(todo, fn, desc=desc if world == 1 else f"{desc}[rank {rank}]")
        summary.skipped.extend((rel, skip_reason) for rel in existing)
        value = collect() if collect is not None else None
        gathered = _gather((summary, len(existing), value), world)
    finally:
        if owned:
            import torch.distributed as dist

            dist.destroy_process_group()
    return ShardedRun(
        summary=RunSummary.merge([s for s, _, _ in gathered], desc),
        rank=rank,
        world_size=world,
        existing=sum(n for _, n, _ in gathered),
        collected=[v for _, _, v in gathered],
    )


def _start_process_group() -> tuple[int, int, bool]:
    """``(rank, world_size, started_here)``; starts a gloo process group when ``WORLD_SIZE`` > 1."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, False
    import torch
    import torch.distributed as dist

    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")) % torch.cuda.device_count())
    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size(), False
    dist.init_process_group(backend="gloo")
    return dist.get_rank(), dist.get_world_size(), True


def _barrier(world: int) -> None:
    """Wait for every rank (nothing to wait for in one process)."""
    if world > 1:
        import torch.distributed as dist

        dist.barrier()


def _gather(obj: Any, world: int) -> list[Any]:
    """Every rank's ``obj``, in rank order, on every rank (``[obj]`` in one process)."""
    if world <= 1:
        return [obj]
    import torch.distributed as dist

    out: list[Any] = [None] * world
    dist.all_gather_object(out, obj)
    dist.barrier()
    return out
