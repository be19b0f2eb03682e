"""RobustSAM as a degradation-invariant segmentation prior.

Names are re-exported lazily (module ``__getattr__``): ``import robustsam_prior`` imports no torch.
"""

from __future__ import annotations

from .core.lazy import lazy_exports

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
    "segment_image": "segment",
    "SegmentationResult": "segment",
    # checkpoints, priors and their cache
    "resolve_checkpoint": "hub",
    "build_prior": "prior",
    "PriorOutput": "prior",
    "PriorCache": "cache",
    "fill_cache": "cache",
}

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
