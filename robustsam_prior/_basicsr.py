"""The one way this project imports BasicSR.

BasicSR 1.4.2 (the current PyPI release) imports ``torchvision.transforms.functional_tensor``,
a module that torchvision 0.17 renamed to ``_functional_tensor`` (BasicSR issues #533/#663; fixed
on BasicSR's master but never released). Rather than pinning an old torchvision or installing a fork
under the ``basicsr`` name, we alias the renamed module before the first ``import basicsr``. The
alias is added only when the old name is missing, so an environment with an older torchvision or a
fixed BasicSR is left untouched.

BasicSR's ``__init__`` imports every sub-package (a few seconds), so call this only inside functions
that need BasicSR, never at module import time.
"""

from __future__ import annotations

import importlib
import sys
from types import ModuleType


def import_basicsr() -> ModuleType:
    """Import and return the ``basicsr`` package, working around the torchvision rename."""
    if "basicsr" in sys.modules:
        return sys.modules["basicsr"]
    old = "torchvision.transforms.functional_tensor"
    try:
        importlib.import_module(old)
    except ModuleNotFoundError:
        sys.modules[old] = importlib.import_module("torchvision.transforms._functional_tensor")
    return importlib.import_module("basicsr")
