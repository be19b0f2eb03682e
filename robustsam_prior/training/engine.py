"""The training engine: everything a training run does besides its model, data and losses.

Both trainers (restoration, :mod:`restore.training.trainer`; RobustSAM, :mod:`.trainer`) run on it:

- the device (``train.device`` through :func:`robustsam_prior.core.devices.resolve_device`) and, under
  ``torchrun`` (``WORLD_SIZE > 1``), the process group: gloo on the CPU, NCCL on ``cuda:$LOCAL_RANK``
  (:func:`setup_distributed`, :class:`Distributed`);
- the process-wide torch settings a run changes (thread count, deterministic algorithms), put back when
  it ends (:func:`kept_torch_settings`), and the lock of the output folder (:func:`output_lock`);
- the training-state file ``state/latest.pt`` for exact resume: model, optimizer, scheduler, step and
  the RNG states of Python, numpy and torch, with the fingerprint of the resolved config it was trained
  with (:class:`StateFormat`, :class:`TrainingRun`);
- periodic weight files and their rotation (the last ``keep_checkpoints`` kept), the JSONL log and the
  TensorBoard events (:class:`RunLog`), and ``summary.json``.

What each trainer's files are called inside (state keys, log keys, weight file names) is its own
:class:`StateFormat` and arguments, so that runs written by earlier versions of the trainers resume.

Errors. A problem with a run's inputs raises one of :data:`RUN_ERRORS`, which the ``train`` command
turns into a one-line error for both kinds of training.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import random
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..core.checkpoint import CheckpointError
from ..core.devices import local_device, resolve_device
from ..core.fileio import FolderLockedError

logger = logging.getLogger(__name__)

#: What a training run raises for a problem with its inputs, each with a message that names the setting
#: or file: ``CheckpointError`` (starting weights or a state file unreadable or not fitting),
#: ``FileNotFoundError`` (a file the run needs), ``ValueError`` (bad data or settings, an unavailable
#: device; ``DataError`` and ``ConfigError`` are ``ValueError``), ``FloatingPointError`` (the loss or
#: the gradients stopped being finite) and ``FolderLockedError`` (another run writes into the folder).
RUN_ERRORS: tuple[type[Exception], ...] = (CheckpointError, FileNotFoundError, FloatingPointError, ValueError,
                                           FolderLockedError)

STATE_FILE = Path("state") / "latest.pt"


# ---------------------------------------------------------------------------------------------
# process settings, lock, devices and processes
# ---------------------------------------------------------------------------------------------


@contextlib.contextmanager
def kept_torch_settings() -> Iterator[None]:
    """Put torch's thread count and deterministic-algorithms setting back as they were when the block
    ends, so that a run called from a larger program (or a test) leaves no trace."""
    threads = torch.get_num_threads()
    deterministic = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)


def apply_torch_settings(*, threads: int | None = None, deterministic: bool = False,
                         device: torch.device | None = None) -> None:
    """``threads`` CPU threads (``None``: torch's default); ``deterministic``: deterministic algorithms
    where torch has them (a warning where not), with cuBLAS's fixed workspace on a CUDA ``device``."""
    if threads:
        torch.set_num_threads(threads)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        if device is not None and device.type == "cuda":
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")


def is_main_process() -> bool:
    """Rank 0 under ``torchrun`` (read from ``RANK``, before any process group exists), or no torchrun."""
    return int(os.environ.get("RANK", "0")) == 0


def output_lock(output_dir: str | os.PathLike) -> contextlib.AbstractContextManager:
    """The lock of a run's output folder (``robustsam_prior.core.fileio.folder_lock``), held by rank 0 alone:
    a second run into the same folder fails at once with ``FolderLockedError`` naming the holder."""
    from ..core.fileio import folder_lock

    return folder_lock(output_dir) if is_main_process() else contextlib.nullcontext()


@dataclass
class Distributed:
    """This process's place in a run: ``rank`` of ``world`` processes, its ``device``, and whether the
    process group was started here (``owned``; :meth:`close` then ends it)."""

    rank: int
    world: int
    device: torch.device
    owned: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def reduce_device(self) -> torch.device:
        """Where collective operations run: the GPU under NCCL, the CPU under gloo."""
        return self.device if self.device.type == "cuda" else torch.device("cpu")

    def all_reduce_sum(self, values: Sequence[float]) -> list[float]:
        """The sum of ``values`` over the processes (float64), on every process."""
        t = torch.tensor(list(values), dtype=torch.float64, device=self.reduce_device)
        if self.world > 1:
            import torch.distributed as dist

            dist.all_reduce(t)
        return t.tolist()

    def gather(self, obj: Any) -> list[Any]:
        """Every process's ``obj`` in rank order (``[obj]`` in one process)."""
        if self.world <= 1:
            return [obj]
        import torch.distributed as dist

        out: list[Any] = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def barrier(self) -> None:
        if self.world > 1:
            import torch.distributed as dist

            dist.barrier()

    def close(self) -> None:
        """End the process group if this run started it."""
        if self.owned:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()
            self.owned = False


def setup_distributed(device: str | torch.device | None, *, what: str = "train.device") -> Distributed:
    """Resolve ``device`` (``what`` names the setting in errors) and, under torchrun (``WORLD_SIZE > 1``),
    join the process group: NCCL with ``cuda:$LOCAL_RANK`` for a CUDA device, gloo on the CPU."""
    dev = resolve_device(device, what=what)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Distributed(0, 1, dev)
    import torch.distributed as dist

    dev = local_device(dev)
    owned = not dist.is_initialized()
    if owned:
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
    return Distributed(dist.get_rank(), dist.get_world_size(), dev, owned)


def parameter_digest(module: nn.Module) -> str:
    """sha256 of every parameter and buffer (name, dtype, bytes): equal digests = equal weights."""
    h = hashlib.sha256()
    for k, v in module.state_dict().items():
        h.update(k.encode())
        h.update(str(v.dtype).encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------
# random number generators
# ---------------------------------------------------------------------------------------------


def rng_state(generator: np.random.Generator | None = None) -> dict[str, Any]:
    """The global RNG states, as tensors and primitives (what ``weights_only`` loading reads back).

    ``torch`` (CPU), ``cuda`` (every GPU's, ``[]`` until CUDA is initialised), ``python``, and ``numpy``:
    the numpy state the run's data are drawn from: ``generator``'s bit-generator state as JSON text
    (its 128-bit integers are not tensors) when the run has its own generator, else numpy's legacy
    global state.
    """
    if generator is not None:
        numpy_state: Any = json.dumps(generator.bit_generator.state, allow_nan=False)
    else:
        legacy = np.random.get_state()  # noqa: NPY002 (the legacy global state some code still uses)
        numpy_state = {"keys": torch.from_numpy(legacy[1].astype(np.int64)), "pos": int(legacy[2]),
                       "has_gauss": int(legacy[3]), "gauss": float(legacy[4])}
    py_version, py_internal, py_gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else [],
        "python": {"version": py_version, "internal": list(py_internal), "gauss": py_gauss},
        "numpy": numpy_state,
    }


def set_rng_state(state: Mapping[str, Any], generator: np.random.Generator | None = None) -> None:
    """Undo :func:`rng_state` into the process (and ``generator``). Entries a file does not hold (the
    ``cuda`` and ``python`` states, which earlier versions of one trainer or the other did not save)
    are left as they are."""
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if "python" in state:
        p = state["python"]
        random.setstate((p["version"], tuple(p["internal"]), p["gauss"]))
    n = state["numpy"]
    if isinstance(n, str):  # a generator's state
        if generator is None:
            raise ValueError("the saved numpy state is a generator's, but this run has no generator to put it in")
        generator.bit_generator.state = json.loads(n)
    else:
        legacy = ("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"])
        np.random.set_state(legacy)  # noqa: NPY002


# ---------------------------------------------------------------------------------------------
# state files and the config fingerprint
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StateFormat:
    """How one trainer's state file is laid out and named.

    ``tag`` is the file's ``format`` entry and ``title`` how messages name such a file ("RobustSAM
    training state"). ``step``, ``model``, ``optimizer`` and ``scheduler`` are where those parts are kept
    (dotted key paths; no ``scheduler`` for a run without one). ``required``: entries (dotted) whose
    absence makes :func:`load_state` refuse the file as incomplete; any other missing entry is found
    when the state is put back (:meth:`TrainingRun.unpack_state`). ``fingerprint``: the parts of the
    resolved config that must not change across a resume, as ``{name: dotted config key}``.
    """

    tag: str
    title: str
    fingerprint: Mapping[str, str]
    step: str = "step"
    model: str = "model"
    optimizer: str = "optimizer"
    scheduler: str | None = None
    required: tuple[str, ...] = ()


def _lookup(tree: Any, path: str) -> Any:
    """``tree[a][b]`` for ``path`` ``"a.b"``; ``KeyError(path)`` where an entry is missing."""
    value = tree
    for part in path.split("."):
        if not isinstance(value, Mapping) or part not in value:
            raise KeyError(path)
        value = value[part]
    return value


def _place(tree: dict[str, Any], path: str, value: Any) -> None:
    *parents, last = path.split(".")
    for part in parents:
        tree = tree.setdefault(part, {})
    tree[last] = value


def save_state(path: str | os.PathLike, state: Mapping[str, Any]) -> None:
    """``torch.save`` atomically: a kill mid-write leaves the previous file intact. Tensors and
    primitives only, so :func:`load_state` reads it with ``weights_only=True``."""
    from ..core.fileio import atomic_write

    with atomic_write(path, "wb") as f:
        torch.save(dict(state), f)


def load_state(path: str | os.PathLike, fmt: StateFormat) -> dict[str, Any]:
    """Read a state file with ``weights_only=True`` (no pickled code runs). ``FileNotFoundError`` when
    absent; ``CheckpointError`` naming the file when it is unreadable, of another format, or lacks a
    ``fmt.required`` entry."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no training state to resume from")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated, corrupt, or holding pickled objects
        raise CheckpointError(f"{path}: unreadable training state ({' '.join(str(e).split())})") from e
    if not isinstance(state, dict) or state.get("format") != fmt.tag:
        raise CheckpointError(f"{path}: not a {fmt.title} (format {fmt.tag!r})")
    missing: list[str] = []
    for key in fmt.required:
        if any(key.startswith(m + ".") for m in missing):
            continue  # its parent is already named
        try:
            _lookup(state, key)
        except KeyError:
            missing.append(key)
    if missing:
        raise CheckpointError(f"{path}: an incomplete {fmt.title} (no {', '.join(missing)})")
    return state


def fingerprint(config: Mapping[str, Any] | None, keys: Mapping[str, str]) -> dict[str, Any]:
    """``{name: the value at its dotted key in config}`` (``None`` where absent) for ``keys``."""
    out: dict[str, Any] = {}
    for name, key in keys.items():
        value: Any = config or {}
        for part in key.split("."):
            value = value.get(part) if isinstance(value, Mapping) else None
        out[name] = value
    return out


def fingerprint_text(config: Mapping[str, Any] | None, keys: Mapping[str, str]) -> str:
    """The fingerprint as a state file keeps it: JSON text, tuples as lists, other objects as strings (a
    comparison key, never read as a JSON document, so a config's ``.inf`` may stay in it)."""
    return json.dumps(fingerprint(config, keys), sort_keys=True, default=str)


def changed_settings(saved: str | None, config: Mapping[str, Any] | None, keys: Mapping[str, str]) -> list[str]:
    """The fingerprint names whose values differ between a state's ``saved`` fingerprint and ``config``
    (none when either is missing: a run started from Python without a resolved config)."""
    if saved is None or not config:
        return []
    was, now = json.loads(saved), json.loads(fingerprint_text(config, keys))
    # an option added since the state was saved is resolved to null, which is what its absence meant
    return [name for name in keys if _without_nulls(was.get(name)) != _without_nulls(now.get(name))]


def _without_nulls(value: Any) -> Any:
    """``value`` with every mapping entry whose value is null left out, at any depth."""
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_nulls(v) for v in value]
    return value


# ---------------------------------------------------------------------------------------------
# logs
# ---------------------------------------------------------------------------------------------


class RunLog:
    """A run's ``log.jsonl`` (one JSON record per line, flushed to disk as written) and, with
    ``tensorboard``, its TensorBoard events under ``tb/``.

    Opening cuts the log back to the records whose ``step_key`` is at most ``start`` (the steps after a
    resumed state are redone and logged again; so goes a line a killed run left cut short) and keeps
    those records in :attr:`kept`. TensorBoard events after ``start`` are purged the same way. On a
    process other than rank 0 (``enabled=False``) nothing is read or written.
    """

    def __init__(self, folder: Path, *, step_key: str, start: int, tensorboard: bool = False,
                 enabled: bool = True) -> None:
        from ..core.fileio import trim_jsonl

        self.path = folder / "log.jsonl"
        self.step_key = step_key
        self.kept: list[dict[str, Any]] = []
        self._file = None
        self._writer = None
        if not enabled:
            return
        folder.mkdir(parents=True, exist_ok=True)
        self.kept = trim_jsonl(self.path, step_key, start)
        self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 (closed by close())
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(str(folder / "tb"), purge_step=start or None)

    def write(self, record: Mapping[str, Any]) -> None:
        """Append ``record`` (non-finite numbers as ``jsonable`` spells them) and its numbers as scalars."""
        if self._file is None:
            return
        from ..core.fileio import json_dumps, jsonable

        self._file.write(json_dumps(jsonable(dict(record))) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())
        if self._writer is not None:
            for k, v in record.items():
                if k != self.step_key and isinstance(v, (int, float)):
                    self._writer.add_scalar(k, v, record[self.step_key])

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._writer is not None:
            self._writer.close()
            self._writer = None


# ---------------------------------------------------------------------------------------------
# one run
# ---------------------------------------------------------------------------------------------


class TrainingRun:
    """One training run in ``output_dir``: its processes and device, its state file, weight files and
    log (see the module docstring). Rank 0 alone writes files.

    ``fmt`` lays out the state file; ``config`` is the resolved config (plain data) whose fingerprint the
    state keeps; ``weights_prefix`` names the periodic weight files ``models/<prefix>_NNNNNNN.safetensors``
    of which the last ``keep_checkpoints`` are kept. :meth:`close` (or the ``with`` block) ends the log and
    a process group started here.
    """

    def __init__(self, output_dir: str | os.PathLike, fmt: StateFormat, *, device: str | torch.device | None,
                 config: Mapping[str, Any] | None = None, weights_prefix: str = "step", keep_checkpoints: int = 1,
                 what_device: str = "train.device") -> None:
        if keep_checkpoints < 1:
            raise ValueError(f"keep_checkpoints: must be >= 1, got {keep_checkpoints}")
        self.out = Path(output_dir)
        self.fmt = fmt
        self.config = dict(config or {})
        self.weights_prefix = weights_prefix
        self.keep_checkpoints = keep_checkpoints
        self.log: RunLog | None = None
        self.dist = setup_distributed(device, what=what_device)

    # -- processes ---------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self.dist.device

    @property
    def rank(self) -> int:
        return self.dist.rank

    @property
    def world(self) -> int:
        return self.dist.world

    @property
    def is_main(self) -> bool:
        return self.dist.is_main

    def close(self) -> None:
        if self.log is not None:
            self.log.close()
        self.dist.close()

    def __enter__(self) -> TrainingRun:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- state ---------------------------------------------------------------------------------------
    @property
    def state_path(self) -> Path:
        return self.out / STATE_FILE

    def read_state(self) -> dict[str, Any]:
        """This run's state file (:func:`load_state`)."""
        return load_state(self.state_path, self.fmt)

    def pack_state(self, *, step: int, model: Mapping[str, Any], optimizer: torch.optim.Optimizer,
                   scheduler: Any = None, extra: Mapping[str, Any] | None = None,
                   generator: np.random.Generator | None = None) -> dict[str, Any]:
        """A state in this run's format: ``model`` (the model's state as the trainer keeps it), the
        optimizer's and scheduler's states, ``step``, the RNG states (:func:`rng_state`) and the config
        fingerprint, plus the trainer's ``extra`` top-level entries."""
        state: dict[str, Any] = {"format": self.fmt.tag}
        _place(state, self.fmt.step, int(step))
        _place(state, self.fmt.model, model)
        _place(state, self.fmt.optimizer, optimizer.state_dict())
        if self.fmt.scheduler is not None:
            _place(state, self.fmt.scheduler, scheduler.state_dict())
        state.update(extra or {})
        state["rng"] = rng_state(generator)
        state["fingerprint"] = fingerprint_text(self.config, self.fmt.fingerprint)
        return state

    def unpack_state(self, state: Mapping[str, Any], *, load_model: Callable[[Any], None],
                     optimizer: torch.optim.Optimizer, scheduler: Any = None,
                     load_extra: Callable[[Mapping[str, Any]], None] | None = None,
                     generator: np.random.Generator | None = None) -> int:
        """Put a :meth:`pack_state` state back: ``load_model`` gets the model entry, ``load_extra`` the
        whole state (for the trainer's own entries), then the optimizer, scheduler and RNG states;
        returns the step. A config whose fingerprint differs from the saved one is a warning (changing
        e.g. the learning rate of a resumed run can be deliberate); a state that does not fit this run
        (another model, optimizer or scheduler, a missing entry) is a ``CheckpointError`` naming the file."""
        changed = changed_settings(state.get("fingerprint"), self.config, self.fmt.fingerprint)
        if changed:
            logger.warning("resuming %s with settings that differ from the saved run (%s): the result will not "
                           "match an uninterrupted run", self.out, ", ".join(changed))
        try:
            load_model(_lookup(state, self.fmt.model))
            if load_extra is not None:
                load_extra(state)
            optimizer.load_state_dict(_lookup(state, self.fmt.optimizer))
            if self.fmt.scheduler is not None:
                scheduler.load_state_dict(_lookup(state, self.fmt.scheduler))
            set_rng_state(_lookup(state, "rng"), generator)
            return int(_lookup(state, self.fmt.step))
        except CheckpointError:
            raise
        except (KeyError, TypeError, ValueError, RuntimeError) as e:
            why = f"no {e.args[0]!r} entry" if isinstance(e, KeyError) else " ".join(str(e).split())
            raise CheckpointError(f"{self.state_path}: does not fit this run ({why})") from e

    def save_state(self, state: Callable[[], Mapping[str, Any]]) -> None:
        """Rank 0: write ``state()`` to the state file (atomically)."""
        if self.is_main:
            save_state(self.state_path, state())

    # -- files ---------------------------------------------------------------------------------------
    def checkpoint(self, step: int, *, save_weights: Callable[[Path], Any],
                   state: Callable[[], Mapping[str, Any]]) -> None:
        """Rank 0: ``save_weights(models/<prefix>_<step>.safetensors)``, then the state file, then delete
        all but the last ``keep_checkpoints`` periodic weight files (each write atomic: a kill at any
        moment leaves the previous good files)."""
        if not self.is_main:
            return
        models = self.out / "models"
        save_weights(models / f"{self.weights_prefix}_{step:07d}.safetensors")
        save_state(self.state_path, state())
        for old in sorted(models.glob(f"{self.weights_prefix}_*.safetensors"))[: -self.keep_checkpoints]:
            old.unlink(missing_ok=True)
        logger.info("checkpoint at step %d", step)

    def open_log(self, *, step_key: str, start: int, tensorboard: bool = False) -> RunLog:
        """Start this run's :class:`RunLog` at step ``start``."""
        if self.log is not None:
            self.log.close()
        self.log = RunLog(self.out, step_key=step_key, start=start, tensorboard=tensorboard, enabled=self.is_main)
        return self.log

    def write_summary(self, summary: Mapping[str, Any]) -> None:
        """Rank 0: ``summary.json``."""
        if self.is_main:
            from ..core.fileio import jsonable, write_json

            write_json(self.out / "summary.json", jsonable(dict(summary)))
