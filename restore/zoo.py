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
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from robustsam_prior.core.registry import did_you_mean

logger = logging.getLogger(__name__)

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
ZOO_FILE = WEIGHTS_DIR / "zoo.json"
TASKS = ("dehaze", "deblur")
# the model each task uses when --model is not given
DEFAULT_MODELS = {"dehaze": "regions-dehaze", "deblur": "regions-deblur"}
# earlier names of packaged models -> their names now (the packaged models are named after the prior that
# conditions them: the built-in `regions` prior, not RobustSAM); an old name still works, with a warning
RENAMED = {"robustsam-dehaze": "regions-dehaze", "robustsam-deblur": "regions-deblur"}
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
