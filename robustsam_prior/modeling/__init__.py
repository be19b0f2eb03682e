"""RobustSAM modules on top of ``segment_anything`` (imported lazily: ``torch`` is heavy)."""

from __future__ import annotations

import importlib

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


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
