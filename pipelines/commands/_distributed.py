"""Folder commands under ``torchrun``: each process takes a share of the files.

With ``WORLD_SIZE`` > 1 (torchrun sets it), :func:`distributed_context` starts a gloo process group
(it carries only small Python objects, so it works on CPUs and GPUs alike) and, where CUDA is present,
makes ``cuda:$LOCAL_RANK`` the current device, so ``cuda`` in a command means this process's GPU. The
sorted file list is sharded by :func:`shard` (rank ``r`` of ``W`` takes files ``r, r + W, r + 2W, ...``),
:func:`gather` collects what every rank returns, and rank 0 alone reports; every rank exits non-zero
if any file failed on any rank (:func:`exit_other_rank`).
"""

from __future__ import annotations

import os
from typing import Any, TypeVar

T = TypeVar("T")


def distributed_context() -> tuple[int, int, bool]:
    """``(rank, world_size, initialised_here)``; starts a gloo process group when ``WORLD_SIZE`` > 1."""
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


def close(owned: bool) -> None:
    """Destroy the process group if :func:`distributed_context` started it."""
    if owned:
        import torch.distributed as dist

        dist.destroy_process_group()


def shard(items: list[T], rank: int, world: int) -> list[T]:
    """Rank ``rank``'s files: ``items[rank::world]``."""
    return items[rank::world]


def barrier(world: int) -> None:
    """Wait for every rank (nothing to wait for in one process)."""
    if world > 1:
        import torch.distributed as dist

        dist.barrier()


def gather(obj: Any, world: int) -> list[Any]:
    """Every rank's ``obj``, in rank order, on every rank (``[obj]`` in one process)."""
    if world <= 1:
        return [obj]
    import torch.distributed as dist

    out: list[Any] = [None] * world
    dist.all_gather_object(out, obj)
    dist.barrier()
    return out


def merge_summaries(summaries: list[Any], desc: str) -> Any:
    """One ``RunSummary`` for the ranks' summaries (the run took as long as the slowest rank)."""
    from ._common import RunSummary

    merged = RunSummary(desc=desc)
    for s in summaries:
        merged.processed += s.processed
        merged.skipped += s.skipped
        merged.failed += s.failed
        merged.seconds = max(merged.seconds, s.seconds)
    return merged


def exit_other_rank(summary: Any) -> None:
    """On a rank other than 0, after :func:`gather`: exit 1 if the merged ``summary`` failed anywhere
    or found no image, else return (rank 0 prints the report)."""
    if summary.failed or not summary.processed:
        raise SystemExit(1)
