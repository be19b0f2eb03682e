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

Writing degraded files, as ``robustsam-restore degrade`` does: :class:`DegradeLayout` says where each image
and its side files go (a transmission map for compositing degradations, the kernel of kernel blurs),
:func:`write_degraded` degrades one file and writes its outputs, returning its manifest entry, and
:func:`degrade_manifest` is the manifest of a run.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Any

import torch

from .batch import Degraded

__all__ = ["SEED_RULE", "DegradeLayout", "degrade_file", "degrade_manifest", "file_seed", "quantise",
           "write_degraded"]

MANIFEST_FORMAT = "robustsam-restore/degrade-manifest"

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


@dataclass(frozen=True)
class DegradeLayout:
    """Where a run of ``degrade`` writes: each image under its relative path in ``root`` (``out_format`` its
    suffix, ``same``: the input's), or the file ``single`` for one input file written to a file name.

    Side files are named after the input's path without its suffix: ``transmission/<name>.png``,
    ``kernel/<name>.npy`` and ``kernel/<name>.png``; inputs in ``shared`` (another input of their folder has
    the same stem) keep the suffix (``transmission/x.jpg.png``), so that each keeps its own. Beside a
    ``single`` target they are ``<stem>_transmission.png``, ``<stem>_kernel.npy`` and ``<stem>_kernel.png``.
    """

    root: Path
    single: Path | None = None
    out_format: str = "same"
    shared: Collection[Path] = ()

    @classmethod
    def for_output(cls, output: str | os.PathLike, *, single_file: bool, out_format: str = "same",
                   shared: Collection[Path] = ()) -> DegradeLayout:
        """The layout of ``output``: a folder, or with ``single_file`` the degraded image's own name."""
        output = Path(output)
        if single_file:
            return cls(root=output.parent, single=output, out_format=out_format, shared=shared)
        return cls(root=output, out_format=out_format, shared=shared)

    @property
    def manifest(self) -> Path:
        """``manifest.json`` in ``root``; beside a ``single`` target, its name with ``.json``."""
        return self.single.with_suffix(".json") if self.single is not None else self.root / "manifest.json"

    def target(self, rel: PurePath) -> Path:
        """The degraded image of the input at relative path ``rel``."""
        if self.single is not None:
            return self.single
        out = self.root / rel
        return out if self.out_format == "same" else out.with_suffix(f".{self.out_format}")

    def sides(self, rel: PurePath) -> dict[str, Path]:
        """Its side files: ``transmission``, ``kernel`` (.npy) and ``kernel_png``."""
        if self.single is not None:
            t = self.single
            return {"transmission": t.with_name(f"{t.stem}_transmission.png"),
                    "kernel": t.with_name(f"{t.stem}_kernel.npy"),
                    "kernel_png": t.with_name(f"{t.stem}_kernel.png")}
        rel = Path(rel)
        base = rel.parent / (rel.name if rel in self.shared else rel.stem)
        return {"transmission": self.root / "transmission" / f"{base}.png",
                "kernel": self.root / "kernel" / f"{base}.npy",
                "kernel_png": self.root / "kernel" / f"{base}.png"}

    def outputs(self, rel: PurePath) -> list[Path]:
        """Every file the input ``rel`` may write (its image and side files)."""
        return [self.target(rel), *self.sides(rel).values()]

    def relative(self, path: Path) -> str:
        """``path`` as the manifest records it: relative to ``root`` where it lies inside."""
        try:
            return path.relative_to(self.root).as_posix()
        except ValueError:
            return str(path)


def write_degraded(
    src: str | os.PathLike, rel: PurePath, layout: DegradeLayout, kind: str, severity: int, *, seed: int
) -> dict[str, Any]:
    """Degrade the image file ``src`` (``rel``: its path relative to the input, for the seeding rule) with
    :func:`degrade_file` and write the result with the file's bit depth and alpha, and its side files
    (a compositing degradation's transmission as a 16-bit PNG, a kernel blur's kernel as float32 ``.npy``
    summing to 1 and as a PNG scaled to its maximum), where ``layout`` says; returns its manifest entry
    (output, seed, drawn parameters; airlight and kernel size where they apply)."""
    import numpy as np

    from ..core.fileio import atomic_write
    from ..core.io import read_image, to_numpy, to_tensor, write_image

    image = read_image(src)
    result = degrade_file(to_tensor(image.pixels), kind, severity, seed=seed, rel=rel, bit_depth=image.bit_depth)
    target, sides = layout.target(rel), layout.sides(rel)
    write_image(target, to_numpy(result.image), alpha=image.alpha, bit_depth=image.bit_depth)
    entry: dict[str, Any] = {"output": layout.relative(target), "seed": file_seed(seed, rel), "params": result.params}
    if result.transmission is not None:
        write_image(sides["transmission"], result.transmission[0, 0].numpy(), bit_depth=16)
        entry["transmission"] = layout.relative(sides["transmission"])
        entry["airlight"] = [round(float(v), 6) for v in result.airlight[0]]
    if result.kernel is not None:
        kernel = result.kernel[0].numpy().astype(np.float32)
        with atomic_write(sides["kernel"], "wb") as f:
            np.save(f, kernel)
        write_image(sides["kernel_png"], kernel / max(float(kernel.max()), 1e-12))
        entry["kernel"] = layout.relative(sides["kernel"])
        entry["kernel_png"] = layout.relative(sides["kernel_png"])
        entry["kernel_size"] = int(kernel.shape[0])
    return entry


def degrade_manifest(
    kind: str, severity: int, seed: int, images: Mapping[str, dict], *,
    failed: Mapping[str, str] | None = None, skipped: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The manifest of a run: kind, severity, base seed and seeding rule, each image's entry
    (:func:`write_degraded`) by relative path, and the inputs that failed or were skipped, with why."""
    return {
        "format": MANIFEST_FORMAT,
        "type": kind,
        "severity": severity,
        "seed": seed,
        "seed_rule": SEED_RULE,
        "images": dict(sorted(images.items())),
        "failed": dict(failed or {}),
        "skipped": dict(skipped or {}),
    }
