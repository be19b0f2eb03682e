"""RobustSAM anti-degradation training (paper Sect. 3.2.4; official ``engine.py``), imported lazily."""

from __future__ import annotations

from ..core.lazy import lazy_exports

_EXPORTS = {
    "sigmoid_focal_loss": "losses",
    "dice_loss": "losses",
    "LossWeights": "losses",
    "anti_degradation_losses": "losses",
    "TrainingPair": "data",
    "make_pair": "data",
    "PairSampler": "data",
    "FolderDataset": "data",
    "FolderScene": "data",
    "DataError": "data",
    "read_label_mask": "data",
    "AntiDegradationConfig": "trainer",
    "AntiDegradationTrainer": "trainer",
    "set_trainable": "trainer",
}

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
