"""Package a trained RobustSAM checkpoint as the project's built-in prior weights.

    python scripts/ship_robustsam_prior.py runs/robustsam_tiny_stage2_warm/models/step_0002000.safetensors

reads a checkpoint written by ``robustsam-restore train`` (``kind: robustsam``), stores its floating-point
tensors in float16 (half the file; the loader casts them back to the model's float32) and writes
``robustsam_prior/weights/<variant>.safetensors`` atomically. The metadata keeps the architecture, the
recipe and the training step of the source file, plus the source's path and sha256, so the shipped file
says where it came from. ``--float32`` keeps full precision.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from robustsam_prior.core.checkpoint import read_checkpoint, save_checkpoint  # noqa: E402
from robustsam_prior.hub import packaged_path  # noqa: E402
from robustsam_prior.loading import build_robustsam  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", type=Path, help="a RobustSAM checkpoint written by robustsam-restore train")
    parser.add_argument("--float32", action="store_true", help="keep float32 (default: float16)")
    parser.add_argument("--out", type=Path, default=None, help="output file (default: the packaged weights folder)")
    args = parser.parse_args(argv)

    loaded = read_checkpoint(args.checkpoint)
    meta = dict(loaded.metadata or {})
    variant = meta.get("variant")
    if not variant or "config" not in meta:
        parser.error(f"{args.checkpoint}: not a checkpoint of robustsam-restore train (no variant/config metadata)")
    build_robustsam(None, loaded)  # refuses a file whose tensors do not fit its recorded architecture
    dtype = torch.float32 if args.float32 else torch.float16
    state = {k: (v.to(dtype) if v.is_floating_point() else v).contiguous() for k, v in loaded.state_dict.items()}
    meta["shipped_from"] = {"path": str(args.checkpoint), "sha256": loaded.sha256, "dtype": str(dtype)}
    out = args.out or packaged_path(variant)
    out.parent.mkdir(parents=True, exist_ok=True)
    sha = save_checkpoint(out, state, meta)
    print(f"{out}: {out.stat().st_size / 1e6:.1f} MB, sha256 {sha}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
