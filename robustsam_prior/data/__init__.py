"""Built-in datasets that need no download (procedural scenes with exact ground truth)."""

from __future__ import annotations

from .shapes import SHAPE_KINDS, ShapesDataset, ShapesScene, make_shapes_scene

__all__ = ["SHAPE_KINDS", "ShapesDataset", "ShapesScene", "make_shapes_scene"]
