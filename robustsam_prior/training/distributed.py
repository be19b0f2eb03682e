"""Data-parallel RobustSAM training under ``torchrun``: the pieces :mod:`.trainer` uses (the process
group itself is started and ended by the training engine, :mod:`.engine`).

Every rank draws the same global batch from the same seeded :class:`~.data.PairSampler` and trains on
its contiguous share (rank ``r`` of ``W`` takes pairs ``r*b .. r*b+b-1``, ``b = B / W``). The loss of a
rank is the mean over its pairs, and DDP averages the gradients over the ranks, so each step applies the
gradient of the mean over all ``B`` pairs: the step of a single process on the whole batch, up to float
rounding. Drawing the whole batch on every rank keeps the numpy generator (and so ``--resume``) the same
on all of them; the pairs of the other ranks cost only their degradation on the CPU.

BatchNorm running statistics (``bn_mode="batch"``) are updated by each rank from its own pairs; running
statistics move linearly in the batch means, so averaging them over the ranks after each step gives the
single-process values. Logged loss terms are averaged over the ranks too.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


def local_share(batch: list[Any], rank: int, world: int) -> list[Any]:
    """Rank ``rank``'s contiguous share of a global ``batch``; ``ValueError`` unless ``world`` divides it."""
    if len(batch) % world:
        raise ValueError(
            f"train.batch_size: the global batch of {len(batch)} pairs does not split evenly over {world} "
            f"processes; use a multiple of {world}"
        )
    b = len(batch) // world
    return batch[rank * b:(rank + 1) * b]


class LossModule(nn.Module):
    """``forward(batch) -> loss terms`` of a trainer, as a module DDP can wrap (DDP synchronises the
    gradients of what runs through its ``forward``)."""

    def __init__(self, model: nn.Module, compute_losses: Any) -> None:
        super().__init__()
        self.model = model
        self._compute = compute_losses

    def forward(self, batch: list[Any]) -> dict[str, torch.Tensor]:
        return self._compute(batch)


def wrap_ddp(model: nn.Module, compute_losses: Any, *, find_unused: bool) -> nn.Module:
    """A :class:`LossModule` in ``DistributedDataParallel``. Buffers are not broadcast from rank 0 at each
    forward (:func:`average_running_stats` keeps them equal). ``find_unused``: some trainable parameters
    get no gradient (with ``train_sam_decoder``, SAM's IoU head and the hypernetwork MLPs of the masks
    the losses do not use), so DDP must look for them each step."""
    from torch.nn.parallel import DistributedDataParallel

    dev = next(model.parameters()).device
    return DistributedDataParallel(
        LossModule(model, compute_losses),
        device_ids=[dev.index] if dev.type == "cuda" else None,
        broadcast_buffers=False,
        find_unused_parameters=find_unused,
    )


def average_terms(terms: dict[str, torch.Tensor], world: int) -> dict[str, float]:
    """The mean over the ranks of each (detached) loss term, as floats."""
    import torch.distributed as dist

    keys = list(terms)
    t = torch.stack([terms[k].detach().to(torch.float64) for k in keys])
    dist.all_reduce(t)
    return {k: float(v) for k, v in zip(keys, (t / world).tolist())}


def average_running_stats(model: nn.Module, world: int) -> None:
    """Average every BatchNorm ``running_mean``/``running_var`` over the ranks, in place."""
    import torch.distributed as dist

    bufs = [b for n, b in model.named_buffers() if n.endswith(("running_mean", "running_var"))]
    if not bufs:
        return
    flat = torch.cat([b.reshape(-1) for b in bufs])
    dist.all_reduce(flat)
    flat /= world
    offset = 0
    for b in bufs:
        b.copy_(flat[offset:offset + b.numel()].view_as(b))
        offset += b.numel()
