"""RobustSAM anti-degradation training (paper Sect. 3.2.4; official ``engine.py``), imported lazily."""

from __future__ import annotations

import importlib

_EXPORTS = {
    "sigmoid_focal_loss": "losses",
    "dice_loss": "losses",
    "LossWeights": "losses",
    "anti_degradation_losses": "losses",
    "TrainingPair": "data",
    "make_pair": "data",
    "PairSampler": "data",
    "AntiDegradationConfig": "trainer",
    "AntiDegradationTrainer": "trainer",
    "set_trainable": "trainer",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
