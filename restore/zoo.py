"""Named restoration models: the classical methods and packaged weight files.

``--model`` accepts a classical method (``dcp`` for dehazing; ``identity`` for both tasks; the
deblurring baselines Wiener / Richardson-Lucy need a known kernel, so blind deblurring's classical
option is ``identity``), a name from the zoo table, or a checkpoint path.

The zoo table maps a name to a weight file under ``restore/weights/`` (packaged with the project).
It is read from ``restore/weights/zoo.json`` (``{"name": {"task": ..., "file": ..., "description":
..., "local_pool": ..., "guided_radius": ...}}``) so trained default models can be added without code
changes. ``local_pool`` (optional) is the model's inference setting for its channel attention's statistics
window in pixels (``Restorer.load(local_pool=...)``; 0 or absent = the whole image); ``guided_radius``
(optional) turns on the guided output filter of that radius (``Restorer.load(guided_radius=...)``, see
:func:`restore.archs.nafnet_arch.guided_filter`; it has no weights, so it can be added to trained ones). Until they
exist the table is empty and the default names in :data:`DEFAULT_MODELS` resolve to a clear error
that names the options.

:func:`list_models` describes every model this installation can run (what ``robustsam-restore models``
prints), reading each checkpoint's metadata with :func:`describe_checkpoint`.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from robustsam_prior.core.registry import did_you_mean

logger = logging.getLogger(__name__)

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
ZOO_FILE = WEIGHTS_DIR / "zoo.json"
TASKS = ("dehaze", "deblur")
# the model each task uses when --model is not given
DEFAULT_MODELS = {"dehaze": "regions-dehaze", "deblur": "regions-deblur"}
# earlier names of packaged models -> their names now (the packaged models are named after the prior that
# conditions them); an old name still works, with a warning. `robustsam-dehaze` was once the regions-prior
# dehazer; it now names the dehazer conditioned on the packaged RobustSAM.
RENAMED = {"robustsam-deblur": "regions-deblur"}
# The photos that no default model trains on (pipelines/train_default_*.yml), by name: the bundled
# examples (examples/make_examples.py) and the held-out synthetic sets of benchmarks/quality.py are made
# from them. ``robustsam_prior.core.fileio.package_path`` resolves each to a file.
HELD_OUT_PHOTOS = {
    "chelsea": "pkg://skimage.data/chelsea.png",
    "coffee": "pkg://skimage.data/coffee.png",
    "grace_hopper": "pkg://matplotlib/mpl-data/sample_data/grace_hopper.jpg",
}
# classical method -> tasks it applies to
CLASSICAL = {"dcp": ("dehaze",), "identity": ("dehaze", "deblur")}


class ModelNotFoundError(ValueError):
    """A ``--model`` value that is neither a known name nor an existing file."""


@dataclass(frozen=True)
class ZooEntry:
    """A packaged model: ``file`` is relative to ``restore/weights/``."""

    name: str
    task: str
    file: str
    description: str = ""
    local_pool: int = 0  # inference: channel-attention statistics window in pixels (0 = whole image)
    guided_radius: int = 0  # inference: guided output filter radius in pixels (0 = the checkpoint's own)

    @property
    def path(self) -> Path:
        return ZOO_FILE.parent / self.file


@dataclass(frozen=True)
class ModelRef:
    """What a ``--model`` value resolved to: ``kind`` is "classical" or "checkpoint"."""

    kind: str
    name: str
    path: Path | None = None
    local_pool: int = 0  # the packaged model's inference setting (ZooEntry.local_pool)
    guided_radius: int = 0  # likewise (ZooEntry.guided_radius)


def load_zoo(path: Path | None = None) -> dict[str, ZooEntry]:
    """The zoo table from ``zoo.json`` (empty when the file does not exist)."""
    path = ZOO_FILE if path is None else path
    if not path.is_file():
        return {}
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        return {name: ZooEntry(name=name, **fields) for name, fields in raw.items()}
    except (json.JSONDecodeError, TypeError, AttributeError) as e:
        raise ValueError(f"{path}: malformed model table ({e})") from e


def _options(task: str) -> str:
    classical = [n for n, tasks in CLASSICAL.items() if task in tasks]
    return "--model " + "|".join([*classical, *sorted(n for n, e in load_zoo().items() if e.task == task), "PATH"])


def resolve_model(model: str | None, task: str) -> ModelRef:
    """Resolve a ``--model`` value (``None`` = the task's default) for ``task``."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; known: {', '.join(TASKS)}")
    name = model or DEFAULT_MODELS[task]
    if name in RENAMED:
        logger.warning("model %r is now called %r (it is conditioned on the regions prior, not on RobustSAM); "
                       "the old name will go", name, RENAMED[name])
        name = RENAMED[name]
    if name in CLASSICAL:
        if task not in CLASSICAL[name]:
            raise ModelNotFoundError(f"model {name!r} does not do {task}; use {_options(task)}")
        return ModelRef("classical", name)
    zoo = load_zoo()
    if name in zoo:
        entry = zoo[name]
        if entry.task != task:
            raise ModelNotFoundError(f"model {name!r} is a {entry.task} model, not {task}; use {_options(task)}")
        if not entry.path.is_file():
            raise ModelNotFoundError(f"model {name!r}: its weight file {entry.path} is missing; use {_options(task)}")
        return ModelRef("checkpoint", name, entry.path, entry.local_pool, entry.guided_radius)
    if name == DEFAULT_MODELS[task]:
        raise ModelNotFoundError(
            f"the default {task} model {name!r} has no trained weights in this installation yet; "
            f"choose one with {_options(task)}"
        )
    path = Path(name).expanduser()
    if path.is_file():
        return ModelRef("checkpoint", path.name, path)
    known = [*CLASSICAL, *zoo]
    raise ModelNotFoundError(
        f"model {name!r} is neither a known model name{did_you_mean(name, known)} nor an existing file; "
        f"use {_options(task)}"
    )


def describe_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Metadata summary of a restoration checkpoint: task, architecture, prior, parameter count, size,
    validation metrics and their conventions, sha256 (``available`` false and ``error`` set if it cannot
    be read)."""
    from robustsam_prior.core.checkpoint import CheckpointError, read_checkpoint

    path = Path(path)
    try:
        ckpt = read_checkpoint(path)
    except CheckpointError as e:
        return {"available": False, "error": str(e)}
    meta = ckpt.metadata
    return {
        "available": True,
        "task": meta.get("task"),
        "arch": meta.get("arch"),
        "prior": (meta.get("prior") or {}).get("name"),
        "params": int(sum(t.numel() for t in ckpt.state_dict.values())),
        "size_bytes": path.stat().st_size,
        "metrics": meta.get("metrics") or {},
        "metric_conventions": meta.get("metric_conventions"),
        "sha256": ckpt.sha256,
    }


def list_models(paths: Iterable[str | os.PathLike] = (), task: str | None = None) -> list[dict[str, Any]]:
    """One record per model: the classical methods, the packaged models, the default model name of each
    task without packaged weights (``available`` false) and the checkpoint files ``paths``; only
    ``task``'s when it is given. A record holds ``name``, ``kind`` (classical, packaged, default,
    checkpoint), ``task``, ``available`` and, where known, what :func:`describe_checkpoint` reads.
    """
    rows: list[dict[str, Any]] = []
    for name, tasks in CLASSICAL.items():
        for t in tasks:
            rows.append({"name": name, "kind": "classical", "task": t, "arch": name, "prior": None,
                         "params": 0, "size_bytes": 0, "metrics": {}, "available": True})
    zoo = load_zoo()
    for name, entry in zoo.items():
        info = describe_checkpoint(entry.path) if entry.path.is_file() else {
            "available": False, "error": f"weight file {entry.path} is missing"}
        rows.append({"name": name, "kind": "packaged", "task": entry.task, "path": str(entry.path),
                     "local_pool": entry.local_pool, **info})
        rows[-1]["task"] = rows[-1].get("task") or entry.task
    for t, name in DEFAULT_MODELS.items():
        if name not in zoo:
            rows.append({"name": name, "kind": "default", "task": t, "available": False,
                         "error": "no trained weights packaged yet"})
    for p in map(Path, paths):
        rows.append({"name": p.name, "kind": "checkpoint", "path": str(p), **describe_checkpoint(p)})
    if task:
        rows = [r for r in rows if r.get("task") == task]
    return rows
