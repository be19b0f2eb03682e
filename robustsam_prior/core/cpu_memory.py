"""Keep large freed CPU buffers inside the process, so that full-image inference does not page-fault.

PyTorch's CPU allocator is the C library's ``malloc``. glibc serves every request above its mmap
threshold (at most 32 MiB on 64-bit Linux; the threshold cannot be raised further) with a fresh
``mmap`` and returns it to the kernel on ``free``. A 1024x1024 image with 16 float32 channels is
64 MiB, so at that size every activation of a restoration network or of SAM's encoder is a new
mapping whose pages the kernel faults in and zeroes on first touch (in a profile this shows as
``aten::copy_`` filling fresh outputs). ``benchmarks/quality.py`` (speed) and ``benchmarks/tiling_memory.py`` (peak memory) measure the
effect; README.md (Benchmarks) gives the figures.

:func:`keep_freed_memory` turns ``mmap`` off for ``malloc`` (``M_MMAP_MAX = 0``) and stops the heap
from being trimmed below 2 GiB of free space (``M_TRIM_THRESHOLD``), so freed activations are reused
by the next image. It changes the whole process, so the library never calls it on import: the
``robustsam-restore`` command calls it at start-up, and a script may call it too. The same effect
without code: ``GLIBC_TUNABLES=glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=2147483647``, or
preloading jemalloc/tcmalloc as PyTorch's CPU performance guide suggests. Set
``ROBUSTSAM_RESTORE_MALLOC=system`` to leave the C library's defaults alone.
"""

from __future__ import annotations

import ctypes
import logging
import os
import platform
import sys

logger = logging.getLogger(__name__)

OPT_OUT_ENV = "ROBUSTSAM_RESTORE_MALLOC"
# mallopt parameter numbers from glibc's <malloc.h>
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
TRIM_THRESHOLD = 2**31 - 1  # mallopt takes an int: keep up to 2 GiB of free heap


def keep_freed_memory() -> bool:
    """Make glibc's ``malloc`` keep large freed blocks for reuse; True when the setting was applied.

    Does nothing (False) off Linux/glibc, when ``ROBUSTSAM_RESTORE_MALLOC=system``, or when
    ``mallopt`` refuses a value. Safe to call more than once.
    """
    if os.environ.get(OPT_OUT_ENV, "").strip().lower() == "system":
        return False
    if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    # mallopt returns 1 on success, 0 on error
    applied = mallopt(M_MMAP_MAX, 0) == 1 and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
    logger.debug("malloc: mmap off, trim threshold %d bytes: %s", TRIM_THRESHOLD, "applied" if applied else "refused")
    return applied
