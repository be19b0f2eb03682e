"""Restoration training: options, datasets (paired / synthetic with on-the-fly degradation), losses and
the training loop (EMA, checkpoints, exact resume, DDP). Nothing heavy is imported here."""

from __future__ import annotations

from typing import Any

__all__ = ["TrainConfig", "Trainer", "train_restoration"]


def __getattr__(name: str) -> Any:
    if name == "TrainConfig":
        from .options import TrainConfig

        return TrainConfig
    if name in ("Trainer", "train_restoration"):
        from . import trainer

        return getattr(trainer, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
