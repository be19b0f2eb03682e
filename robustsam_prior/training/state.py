"""The RobustSAM training run's resume state: the state file, RNG states and the settings fingerprint."""

from __future__ import annotations

import os
from typing import Any

import torch

STATE_FORMAT = "robustsam-restore/robustsam-training-state"


def save_training_state(path: str | os.PathLike, state: dict[str, Any]) -> None:
    """``torch.save`` atomically (a kill mid-write leaves the previous file); tensors and primitives only,
    so :func:`load_training_state` reads it with ``weights_only=True``."""
    from ..core.fileio import atomic_write

    with atomic_write(path, "wb") as f:
        torch.save(state, f)


def load_training_state(path: str | os.PathLike) -> dict[str, Any]:
    """Read a :func:`save_training_state` file (``weights_only=True``: no pickled code runs).
    ``FileNotFoundError`` when absent; ``CheckpointError`` naming the file when it is unreadable or not
    a RobustSAM training state."""
    from pathlib import Path

    from ..core.checkpoint import CheckpointError

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no training state to resume from")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated, corrupt, or holding pickled objects
        raise CheckpointError(f"{path}: unreadable training state ({e})") from e
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise CheckpointError(f"{path}: not a RobustSAM training state (format {STATE_FORMAT!r})")
    trainer = state.get("trainer")
    missing = [k for k in ("trainer", "rng", "init_sha256", "fingerprint") if k not in state]
    if isinstance(trainer, dict):
        missing += [f"trainer.{k}" for k in ("model", "optimizer", "step") if k not in trainer]
    if missing or not isinstance(trainer, dict):
        what = ", ".join(missing) or "trainer"
        raise CheckpointError(f"{path}: an incomplete RobustSAM training state (no {what})")
    return state


def rng_state(generator: Any) -> dict[str, Any]:
    """torch's CPU (and CUDA, when initialised) RNG states and the numpy ``generator``'s bit-generator
    state (as JSON text: its 128-bit integers are not tensors, and ``weights_only`` loads strings)."""
    import json

    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else [],
        "numpy": json.dumps(generator.bit_generator.state, allow_nan=False),
    }


def set_rng_state(state: dict[str, Any], generator: Any) -> None:
    """Undo :func:`rng_state` into the process and ``generator``."""
    import json

    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    generator.bit_generator.state = json.loads(state["numpy"])


# what must not change across a resume for it to be exact (compared as JSON; a difference is a warning,
# as for restoration runs: changing e.g. the learning rate of a resumed run can be deliberate)
FINGERPRINT_KEYS = ("seed", "model", "data", "losses", "optim", "train.batch_size", "train.train_sam_decoder",
                    "train.detach_targets", "train.bn_mode", "train.stage")


def fingerprint(config: dict[str, Any] | None) -> dict[str, Any]:
    """The :data:`FINGERPRINT_KEYS` of a resolved config (plain data)."""
    out: dict[str, Any] = {}
    for key in FINGERPRINT_KEYS:
        value: Any = config or {}
        for part in key.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        out[key] = value
    return out
