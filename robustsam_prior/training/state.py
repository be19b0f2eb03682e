"""The RobustSAM training run's state file (``state/latest.pt``) in the training engine's terms: its
format tag, where it keeps each part, the entries it must hold and the settings fingerprint.

Entries: ``format``, ``trainer`` (``step``, ``model``: the trained parameters and every buffer,
``optimizer``), ``rng`` (torch, CUDA, Python and the ``PairSampler`` generator's states), ``init_sha256``
(the starting checkpoint) and ``fingerprint``; read with ``weights_only=True``
(:mod:`.engine`).
"""

from __future__ import annotations

import os
from typing import Any

from .engine import StateFormat, load_state

STATE_FORMAT = "robustsam-restore/robustsam-training-state"

# what must not change across a resume for it to be exact (compared as JSON; a difference is a warning,
# as for restoration runs: changing e.g. the learning rate of a resumed run can be deliberate)
FINGERPRINT_KEYS = ("seed", "model", "data", "losses", "optim", "train.batch_size", "train.train_sam_decoder",
                    "train.detach_targets", "train.bn_mode", "train.stage")

FORMAT = StateFormat(
    tag=STATE_FORMAT,
    title="RobustSAM training state",
    fingerprint={key: key for key in FINGERPRINT_KEYS},
    step="trainer.step",
    model="trainer.model",
    optimizer="trainer.optimizer",
    required=("trainer", "rng", "init_sha256", "fingerprint", "trainer.model", "trainer.optimizer", "trainer.step"),
)


def load_training_state(path: str | os.PathLike) -> dict[str, Any]:
    """Read a RobustSAM training state. ``FileNotFoundError`` when absent; ``CheckpointError`` naming the
    file when it is unreadable, not a RobustSAM training state, or incomplete."""
    return load_state(path, FORMAT)
