"""Restoration training: options, datasets (paired / synthetic with on-the-fly degradation), losses and
the training loop (EMA, checkpoints, exact resume, DDP). Nothing heavy is imported here."""

from __future__ import annotations

from robustsam_prior.core.lazy import lazy_exports

_EXPORTS = {"TrainConfig": "options", "Trainer": "trainer", "train_restoration": "trainer"}

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
