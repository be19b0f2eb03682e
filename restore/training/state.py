"""The restoration trainer's training-state file (``state/latest.pt``) in the training engine's terms:
its format tag, where it keeps each part, and the config fingerprint a resume is checked against.

Entries: ``format``, ``iteration``, ``model`` (the network's state dict), ``ema`` (``{}`` without EMA),
``optimizer``, ``scheduler``, ``rng``, ``metrics`` (the last validation), ``world_size`` and
``fingerprint``; a ``torch.save`` of tensors and primitives only, read with ``weights_only=True``
(:mod:`robustsam_prior.training.engine`).
"""

from __future__ import annotations

import os
from typing import Any

from robustsam_prior.training.engine import StateFormat
from robustsam_prior.training.engine import load_state as _load_state

STATE_FORMAT = "robustsam-restore/training-state"

FORMAT = StateFormat(
    tag=STATE_FORMAT,
    title="robustsam-restore training state",
    # the parts of a resolved config that must not change across a resume
    fingerprint={"model": "model", "prior": "prior", "seed": "seed", "batch_size": "train.batch_size",
                 "data": "data"},
    step="iteration",
    scheduler="scheduler",
)


def load_state(path: str | os.PathLike) -> dict[str, Any]:
    """Read a restoration training state (``FileNotFoundError`` when absent, ``CheckpointError`` naming
    the file when it is unreadable or of another format)."""
    return _load_state(path, FORMAT)
