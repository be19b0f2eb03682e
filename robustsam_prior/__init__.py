"""RobustSAM as a degradation-invariant segmentation prior.

Names are re-exported lazily (module ``__getattr__``): ``import robustsam_prior`` imports no torch.
"""

from __future__ import annotations

import importlib

# public name -> submodule that defines it
_EXPORTS = {
    # RobustSAM model, loading, prompted and automatic masks
    "build_robustsam": "loading",
    "save_robustsam": "loading",
    "load_robustsam_weights": "loading",
    "detect_checkpoint": "loading",
    "RobustSam": "modeling.robustsam",
    "RobustSamConfig": "modeling.build",
    "RobustSamPredictor": "predictor",
    "RobustSamAutomaticMaskGenerator": "automatic",
    "masks_to_label_map": "automatic",
    # checkpoints, priors and their cache
    "resolve_checkpoint": "hub",
    "build_prior": "prior",
    "PriorOutput": "prior",
    "PriorCache": "cache",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
