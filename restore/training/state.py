"""Training-state files for exact resume: what they hold, writing and reading them, and the config
fingerprint a resume is checked against.

A state file is a ``torch.save`` of tensors and primitives only (model, EMA, optimizer, scheduler and the
global RNG states), so :func:`load_state` reads it with ``weights_only=True``.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

STATE_FORMAT = "robustsam-restore/training-state"


def rng_state() -> dict[str, Any]:
    """The global torch, numpy (legacy) and Python RNG states, as tensors and primitives."""
    np_state = np.random.get_state()  # noqa: NPY002 (saving the legacy global state some code still uses)
    py_version, py_internal, py_gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "gauss": float(np_state[4])},
        "python": {"version": py_version, "internal": list(py_internal), "gauss": py_gauss},
    }


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Undo :func:`rng_state`."""
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    legacy = ("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"])
    np.random.set_state(legacy)  # noqa: NPY002
    p = state["python"]
    random.setstate((p["version"], tuple(p["internal"]), p["gauss"]))


def save_state(path: Path, state: Mapping[str, Any]) -> None:
    """``torch.save`` atomically: a kill mid-write leaves the previous file intact."""
    from robustsam_prior.core.fileio import atomic_write

    with atomic_write(path, "wb") as f:
        torch.save(dict(state), f)


def load_state(path: Path) -> dict[str, Any]:
    """Load a training-state file with ``weights_only=True`` (no pickled code runs); a file that cannot be
    read or is not a training state raises ``CheckpointError`` naming it."""
    from robustsam_prior.core.checkpoint import CheckpointError

    if not path.is_file():
        raise FileNotFoundError(f"{path}: no training state to resume from")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated, corrupt or not a state file
        raise CheckpointError(f"{path}: unreadable training state ({' '.join(str(e).split())})") from e
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise CheckpointError(f"{path}: not a robustsam-restore training state")
    return state


def fingerprint(config: Mapping[str, Any]) -> dict[str, Any]:
    """The parts of a resolved config that must not change across a resume."""
    return {
        "model": config.get("model"),
        "prior": config.get("prior"),
        "seed": config.get("seed"),
        "batch_size": config.get("train", {}).get("batch_size"),
        "data": config.get("data"),
    }
