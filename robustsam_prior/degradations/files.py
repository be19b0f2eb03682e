"""One path for degrading image files, with one seeding rule.

``robustsam-restore degrade``, ``benchmark restoration --clean``, the pipelines' ``degrade`` step and
the restoration trainers' fixed synthetic variants all go through :func:`degrade_file`, so the same
kind, severity, seed and file give the same image everywhere.

Seeding rule: the file at relative path ``REL`` (POSIX separators, relative to the folder given; for a
single file, its name) degraded with base seed ``SEED`` is degraded with

    file_seed(SEED, REL) = int.from_bytes(sha256(f"{SEED}:{REL}").digest()[:8], "little") >> 1

(:func:`file_seed`; variant ``v > 0`` of a training image uses ``REL#v`` in place of ``REL``). It
depends on nothing else: not on the other files in the folder or their order, not on worker processes,
DDP ranks or where a run resumed, and not on the kind or severity (one photo at severities 2 and 4 gets
the same random draws, scaled differently).

The degraded image is then rounded to the file's bit depth (8 or 16 bits), as :func:`degrade_file`'s
callers store or score it: what ``degrade`` writes is exactly what ``benchmark --clean`` scores.
"""

from __future__ import annotations

import hashlib
from pathlib import PurePath

import torch

from .batch import Degraded

__all__ = ["SEED_RULE", "degrade_file", "file_seed", "quantise"]

#: the rule as recorded in manifests and results
SEED_RULE = "sha256('<seed>:<relative path>')[:8] little-endian >> 1; variant v > 0: '<relative path>#v'"


def file_seed(seed: int, rel: str | PurePath, variant: int = 0) -> int:
    """The 63-bit degradation seed of the file at relative path ``rel`` (module docstring)."""
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an integer, got {seed!r}")
    if variant < 0:
        raise ValueError(f"variant must be >= 0, got {variant}")
    name = PurePath(rel).as_posix() if isinstance(rel, PurePath) else str(rel).replace("\\", "/")
    if variant:
        name = f"{name}#{variant}"
    digest = hashlib.sha256(f"{seed}:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def quantise(image: torch.Tensor, bit_depth: int = 8) -> torch.Tensor:
    """``image`` in [0, 1] rounded to ``bit_depth``-bit levels (8 or 16) with the arithmetic of
    :func:`robustsam_prior.core.io.write_image` (clip, multiply in the image's dtype, round half to even)."""
    if bit_depth not in (8, 16):
        raise ValueError(f"bit_depth must be 8 or 16, got {bit_depth}")
    top = 255.0 if bit_depth == 8 else 65535.0
    return (image.clamp(0, 1) * top).round() / top


def degrade_file(
    image: torch.Tensor,
    kind: str,
    severity: int,
    *,
    seed: int,
    rel: str | PurePath,
    bit_depth: int | None = 8,
    variant: int = 0,
) -> Degraded:
    """Degrade the pixels of one file: ``degrade(image, kind, severity, seed=file_seed(seed, rel, variant))``.

    ``image`` is ``(1, 3, H, W)`` float in [0, 1] as read from the file. The result's ``image`` is
    clamped to [0, 1] and rounded to ``bit_depth`` bits (``None``: not rounded, for callers that work
    in another space first, such as the trainers' linear light); its side outputs (transmission,
    kernel, parameters) are :func:`~robustsam_prior.degradations.degrade`'s.
    """
    from .api import degrade

    out = degrade(image, kind, severity, seed=file_seed(seed, rel, variant))
    out.image = out.image.clamp(0, 1)
    if bit_depth is not None:
        out.image = quantise(out.image, bit_depth)
    return out
