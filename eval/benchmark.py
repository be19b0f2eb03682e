"""Benchmarks: restoration quality/speed and segmentation robustness, written as JSON Lines with provenance.

The implementation lives in cohesive modules; this module gathers their public names:

- :mod:`eval.provenance`: the row format, :func:`provenance`, :func:`write_rows`/:func:`read_rows`,
  :func:`seed_for`;
- :mod:`eval.restoration_benchmark`: :func:`run_restoration_benchmark` (pairs from disk or
  :class:`SyntheticPairs`, methods by name or :class:`Method`) and :func:`evaluate_pairs`;
- :mod:`eval.segmentation_benchmark`: :func:`run_segmentation_benchmark` (RobustSAM paper Tables 2-6
  protocol) and its prompts (:func:`draw_prompts`);
- :mod:`eval.segmenters`: the promptable segmenters and their registry (:func:`build_segmenters`).

Both benchmarks are deterministic: the same spec gives identical metric values (timings aside).
"""

from __future__ import annotations

from robustsam_prior.core.fileio import jsonable

from .provenance import ROW_FORMAT, provenance, read_rows, seed_for, write_rows
from .restoration_benchmark import (
    Method,
    SyntheticPairs,
    evaluate_pairs,
    resolve_method,
    run_restoration_benchmark,
)
from .segmentation_benchmark import draw_prompts, mask_box, run_segmentation_benchmark
from .segmenters import (
    SEGMENTERS,
    BoxSegmenter,
    PredictorSegmenter,
    PromptSegmenter,
    RegionsSegmenter,
    build_segmenters,
)

__all__ = [
    "ROW_FORMAT",
    "SEGMENTERS",
    "BoxSegmenter",
    "Method",
    "PredictorSegmenter",
    "PromptSegmenter",
    "RegionsSegmenter",
    "SyntheticPairs",
    "build_segmenters",
    "draw_prompts",
    "evaluate_pairs",
    "jsonable",
    "mask_box",
    "provenance",
    "read_rows",
    "resolve_method",
    "run_restoration_benchmark",
    "run_segmentation_benchmark",
    "seed_for",
    "write_rows",
]
