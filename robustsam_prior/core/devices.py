"""Device names: the one place where ``"auto"``, ``"cpu"``, ``"cuda"`` and ``"cuda:N"`` become a
``torch.device``.

Every command, pipeline, prior and trainer that takes a device name resolves it here, so that each
accepts the same names and refuses an unavailable device with the same message, before any model is
built: ``"auto"`` is CUDA where torch sees a GPU and the CPU elsewhere; ``"cuda"`` or ``"cuda:N"`` on a
machine without CUDA (or ``N`` past the last GPU) is a ``ValueError`` naming the setting.
"""

from __future__ import annotations

import os
import re

import torch

#: The device names accepted (``cuda:N`` stands for any GPU index).
DEVICE_NAMES = ("auto", "cpu", "cuda", "cuda:N")

_NAME = re.compile(r"auto|cpu|cuda(:\d+)?")


def is_device_name(name: str) -> bool:
    """Whether ``name`` is one of :data:`DEVICE_NAMES` (whether or not this machine has that device): what
    a config checks, so that a recipe for a GPU machine validates anywhere."""
    return bool(_NAME.fullmatch(str(name)))


def resolve_device(spec: str | torch.device | None = "auto", *, what: str = "device") -> torch.device:
    """The ``torch.device`` that ``spec`` names (``None`` is ``"auto"``).

    ``what`` names the setting in error messages (``"train.device"``, ``"--device"``). Raises
    ``ValueError`` for a name other than :data:`DEVICE_NAMES` and for a CUDA device this machine does
    not have.
    """
    if spec is None:
        spec = "auto"
    name = str(spec)
    if not is_device_name(name):
        raise ValueError(f"{what} must be one of {', '.join(DEVICE_NAMES)}, got {name!r}")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"{what}: {name!r} was asked for but CUDA is not available (torch reports no CUDA "
                             "GPU is available on this machine); use cpu or auto")
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise ValueError(f"{what}: {name!r} was asked for but this machine has {count} CUDA "
                             f"device{'s' if count != 1 else ''} (cuda:0 .. cuda:{count - 1})")
    return device


def local_device(device: torch.device) -> torch.device:
    """The device of this process under ``torchrun``: ``cuda:$LOCAL_RANK`` (made the current CUDA device)
    for a CUDA ``device``, ``device`` itself otherwise."""
    if device.type != "cuda":
        return device
    local = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    torch.cuda.set_device(local)
    return local
