"""RobustSAM modules on top of ``segment_anything`` (imported lazily: ``torch`` is heavy)."""

from __future__ import annotations

from ..core.lazy import lazy_exports

_EXPORTS = {
    "RobustSam": "robustsam",
    "RobustMaskDecoder": "mask_decoder",
    "DecoderOutput": "mask_decoder",
    "ImageEncoderViTWithTap": "image_encoder",
    "RobustSamConfig": "build",
    "VARIANTS": "build",
    "resolve_config": "build",
    "build_robustsam_model": "build",
}

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
