"""keep_freed_memory: large CPU tensors come from the reusable heap, not fresh mappings (glibc)."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

import pytest

LIBC, LIBC_VERSION = platform.libc_ver()
pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux") or LIBC != "glibc"
    or tuple(int(v) for v in LIBC_VERSION.split(".")[:2]) < (2, 33),
    reason="glibc malloc only (mallinfo2 needs glibc >= 2.33)")

# growth of the mmapped bytes (mallinfo2's hblkhd) when a 64 MiB tensor is made after the setting was
# applied by a call ("call"), by the command's start-up ("cli") or not at all ("skip"); the call's return value
PROBE = """
import ctypes, json, sys
import torch
from robustsam_prior.core.cpu_memory import keep_freed_memory
from pipelines.cli import main

class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

libc = ctypes.CDLL(None)
libc.mallinfo2.restype = MallInfo2
applied = keep_freed_memory() if sys.argv[1] == "call" else None
if sys.argv[1] == "cli":
    try:
        main(["models"])
    except SystemExit:
        pass
before = libc.mallinfo2().hblkhd
x = torch.empty(64 * 2**20 // 4)
print(json.dumps({"applied": applied, "mmapped": libc.mallinfo2().hblkhd - before}))
"""


def probe(mode: str, **env: str) -> dict:
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True,
                         env={**os.environ, **env})
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_large_tensors_stop_being_fresh_mappings():
    assert probe("skip")["mmapped"] >= 64 * 2**20  # glibc's default: a mapping per large tensor
    kept = probe("call")
    assert kept == {"applied": True, "mmapped": 0}


def test_opt_out_leaves_the_c_library_defaults():
    out = probe("call", ROBUSTSAM_RESTORE_MALLOC="system")
    assert out["applied"] is False and out["mmapped"] >= 64 * 2**20


def test_the_command_applies_it_at_start_up():
    assert probe("cli")["mmapped"] == 0
