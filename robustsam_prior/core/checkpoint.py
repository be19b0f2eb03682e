"""The project's one checkpoint loader and writer.

Every weight file goes through :func:`read_checkpoint` (``torch.load(map_location="cpu",
weights_only=True)``; pickled code is never executed) or, for this project's own files, safetensors.
:func:`load_strict` loads a state dict into a module strictly and, on mismatch, raises a
:class:`CheckpointError` that names the missing, unexpected and mis-shaped keys and, where a
``describe`` hook recognises the file, what it looks like (a SAM checkpoint where a RobustSAM one
was expected, say).

This project's own checkpoints are single ``.safetensors`` files whose header metadata holds a JSON
document under the key ``robustsam_restore`` (architecture, task, prior, config, metrics, ...).
"""

from __future__ import annotations

import json
import os
import pickle
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .fileio import atomic_path, json_dumps, jsonable, sha256_file

METADATA_KEY = "robustsam_restore"
# wrapper keys other toolkits put around a state dict (BasicSR: params/params_ema)
_WRAPPER_KEYS = ("state_dict", "model", "params_ema", "params", "module")


class CheckpointError(RuntimeError):
    """A weight file that cannot be read or does not fit the model; the message names the file."""


@dataclass
class LoadedCheckpoint:
    """A state dict read from ``path`` plus what we know about the file."""

    state_dict: dict[str, torch.Tensor]
    path: Path
    sha256: str
    metadata: dict[str, Any] = field(default_factory=dict)


def read_checkpoint(path: str | os.PathLike) -> LoadedCheckpoint:
    """Read a ``.pth``/``.pt``/``.safetensors`` weight file into CPU tensors.

    A ``module.`` prefix (DDP) is stripped where every key has it. Wrapper dicts used by other
    toolkits (``{"params": ...}``, ``{"state_dict": ...}``) are unwrapped. Raises
    :class:`CheckpointError` for a missing, empty, truncated or non-tensor file, and for a pickle that
    would execute code.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file not found")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: checkpoint file is empty (0 bytes)")
    metadata: dict[str, Any] = {}
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(path), framework="pt", device="cpu") as f:
                header = f.metadata() or {}
                state = {k: f.get_tensor(k) for k in f.keys()}
        except (SafetensorError, OSError, ValueError) as e:
            raise CheckpointError(f"{path}: not a readable safetensors file ({e})") from e
        metadata = _header_metadata(path, header)
    else:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except MemoryError:
            raise
        except Exception as e:  # a malformed pickle fails in many ways (IndexError, KeyError, ...), all reported
            if not _torch_file_header(path):  # no zip archive, no pickle: the unpickler's complaint would mislead
                raise CheckpointError(f"{path}: not a PyTorch checkpoint (neither a zip archive nor a pickle); "
                                      "corrupt, or another kind of file") from e
            if isinstance(e, pickle.UnpicklingError):
                raise CheckpointError(
                    f"{path}: refused to load: the file contains pickled objects other than tensors, "
                    f"which could execute code ({str(e).splitlines()[0]})"
                ) from e
            why = " ".join(str(e).split()) or type(e).__name__
            raise CheckpointError(f"{path}: not a readable PyTorch checkpoint, truncated or corrupt ({why})") from e
        state, metadata = _unwrap(obj, path)
    return LoadedCheckpoint(strip_prefix(state), path, sha256_file(path), metadata)


def read_checkpoint_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The project metadata of a ``.safetensors`` checkpoint, read from its header without the tensors
    (``{}`` for other files, whose metadata needs the whole file, and for a header without it). Raises
    :class:`CheckpointError` for an unreadable file or corrupt metadata."""
    path = Path(path)
    if path.suffix != ".safetensors":
        return {}
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            header = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path}: not a readable safetensors file ({e})") from e
    return _header_metadata(path, header)


def _header_metadata(path: Path, header: dict[str, str]) -> dict[str, Any]:
    """The project metadata in a safetensors header (``{}`` where it has none); ``CheckpointError`` if corrupt."""
    if METADATA_KEY not in header:
        return {}
    try:
        return json.loads(header[METADATA_KEY])
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path}: corrupt metadata in safetensors header ({e})") from e


def _torch_file_header(path: Path) -> bool:
    """Whether ``path`` starts as ``torch.save`` files do: a zip archive, or (the legacy format) a pickle
    of protocol 2 or later (first byte 0x80)."""
    with open(path, "rb") as f:
        head = f.read(4)
    return head.startswith(b"PK\x03\x04") or head[:1] == b"\x80"


def _unwrap(obj: Any, path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    metadata: dict[str, Any] = {}
    if isinstance(obj, Mapping) and isinstance(obj.get("metadata"), Mapping):
        metadata = dict(obj["metadata"])
    if isinstance(obj, Mapping) and not all(isinstance(v, torch.Tensor) for v in obj.values()):
        for key in _WRAPPER_KEYS:
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not obj:
        raise CheckpointError(f"{path}: expected a state dict (name -> tensor), got {type(obj).__name__}")
    bad = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"{path}: not a state dict: entries {bad[:5]} are not tensors")
    return dict(obj), metadata


def strip_prefix(state: Mapping[str, torch.Tensor], prefix: str = "module.") -> dict[str, torch.Tensor]:
    """Remove ``prefix`` from every key, but only if every key has it (a DDP-saved file)."""
    if state and all(k.startswith(prefix) for k in state):
        return {k[len(prefix):]: v for k, v in state.items()}
    return dict(state)


def diff_state_dict(
    module_state: Mapping[str, torch.Tensor], state: Mapping[str, torch.Tensor]
) -> tuple[list[str], list[str], list[tuple[str, tuple, tuple]]]:
    """(missing, unexpected, mis-shaped as (key, expected shape, file shape)) of ``state``."""
    missing = sorted(set(module_state) - set(state))
    unexpected = sorted(set(state) - set(module_state))
    misshaped = [
        (k, tuple(module_state[k].shape), tuple(state[k].shape))
        for k in sorted(set(module_state) & set(state))
        if tuple(module_state[k].shape) != tuple(state[k].shape)
    ]
    return missing, unexpected, misshaped


def _listing(title: str, items: list, limit: int = 8) -> str:
    shown = ", ".join(str(i) for i in items[:limit])
    more = f" ... and {len(items) - limit} more" if len(items) > limit else ""
    return f"\n  {title} ({len(items)}): {shown}{more}"


def check_fits(
    module: nn.Module,
    state: Mapping[str, torch.Tensor],
    *,
    source: str | os.PathLike = "state dict",
    describe: Callable[[Mapping[str, torch.Tensor]], str | None] | None = None,
    ignore_missing: Callable[[str], bool] | None = None,
) -> None:
    """Raise :class:`CheckpointError` unless ``state`` has exactly ``module``'s keys and shapes (the test
    of :func:`load_strict`, without loading). ``module`` may live on the meta device (:func:`build_for_state`)."""
    missing, unexpected, misshaped = diff_state_dict(module.state_dict(), state)
    if ignore_missing is not None:
        missing = [k for k in missing if not ignore_missing(k)]
    if missing or unexpected or misshaped:
        msg = f"{source}: does not fit {type(module).__name__}"
        if missing:
            msg += _listing("missing keys", missing)
        if unexpected:
            msg += _listing("unexpected keys", unexpected)
        if misshaped:
            msg += _listing("mis-shaped keys (key, model shape, file shape)", misshaped)
        hint = describe(state) if describe is not None else None
        if hint:
            msg += f"\n  the file looks like: {hint}"
        raise CheckpointError(msg)


def load_strict(
    module: nn.Module,
    state: Mapping[str, torch.Tensor],
    *,
    source: str | os.PathLike = "state dict",
    describe: Callable[[Mapping[str, torch.Tensor]], str | None] | None = None,
    ignore_missing: Callable[[str], bool] | None = None,
) -> None:
    """Load ``state`` into ``module``; any key mismatch raises :class:`CheckpointError`.

    ``ignore_missing(key)`` may accept specific missing keys (used when a caller explicitly asks to
    keep some modules freshly initialised). ``describe(state)`` returns a sentence saying what the
    file looks like, added to the error.
    """
    check_fits(module, state, source=source, describe=describe, ignore_missing=ignore_missing)
    module.load_state_dict(state, strict=ignore_missing is None)


def on_meta_device(build: Callable[[], nn.Module]) -> nn.Module:
    """``build()`` on PyTorch's meta device: the module's structure, keys and shapes without allocating
    or initialising any tensor (and without drawing random numbers), so a network described by a
    file can be checked before it is built for real."""
    with torch.device("meta"):
        return build()


def build_for_state(
    build: Callable[[], nn.Module],
    state: Mapping[str, torch.Tensor],
    *,
    source: str | os.PathLike = "state dict",
    describe: Callable[[Mapping[str, torch.Tensor]], str | None] | None = None,
    ignore_missing: Callable[[str], bool] | None = None,
) -> nn.Module:
    """``build()`` for real only once its keys and shapes are known to fit ``state``.

    The architecture a checkpoint's metadata describes is first built on the meta device and checked
    with :func:`check_fits`, so a small file whose metadata names a huge network fails at once, naming
    the file, instead of allocating that network. Returns the real module (not loaded yet).
    """
    check_fits(on_meta_device(build), state, source=source, describe=describe, ignore_missing=ignore_missing)
    return build()


def count_parameters(module: nn.Module) -> int:
    """Number of parameter values of ``module`` (works on the meta device)."""
    return sum(p.numel() for p in module.parameters())


def save_checkpoint(path: str | os.PathLike, state: Mapping[str, torch.Tensor], metadata: Mapping[str, Any]) -> str:
    """Write ``state`` + ``metadata`` as one safetensors file, atomically; return its sha256."""
    from safetensors.torch import save_file

    path = Path(path)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state.items()}
    with atomic_path(path, suffix=".safetensors") as tmp:
        save_file(tensors, str(tmp), metadata={METADATA_KEY: json_dumps(jsonable(dict(metadata)), default=str)})
    return sha256_file(path)
