"""Seconds per 1024x1024 image for every registered degradation (median of a few runs).

    python benchmarks/degradations.py [--size 1024] [--runs 5] [--severity 3] [--image PATH] [--threads 2]

Times ``robustsam_prior.degradations.degrade`` on one ``(1, 3, size, size)`` image, tensor
conversions included, after one warm-up call. Target: none slower than 1 s on 2 cores.
Prints a table (and ``--json`` for machine-readable rows); exits 1 if any degradation misses the
target.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _image(size: int, path: str | None):
    import numpy as np
    import torch
    import torch.nn.functional as F

    if path:
        from robustsam_prior.core.io import read_image, to_tensor

        x = to_tensor(read_image(path).pixels)
        return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False).clamp(0, 1)
    rng = np.random.default_rng(0)  # smooth random texture, values well inside (0, 1)
    coarse = torch.from_numpy(rng.random((1, 3, size // 16, size // 16), dtype=np.float32))
    return (0.1 + 0.8 * F.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False)).clamp(
        0, 1
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--severity", type=int, default=3)
    parser.add_argument("--image", help="an image to resize to size x size (default: synthetic texture)")
    parser.add_argument("--threads", type=int, default=2, help="OpenCV/torch threads (the target is for 2)")
    parser.add_argument("--target", type=float, default=1.0, help="seconds per image not to exceed")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    if str(REPO) not in sys.path:  # runnable from a source checkout that was not pip-installed
        sys.path.insert(0, str(REPO))
    import cv2
    import torch

    from robustsam_prior.degradations import DEGRADATIONS, ROBUST_SEG_SET, degrade

    cv2.setNumThreads(args.threads)
    torch.set_num_threads(args.threads)
    x = _image(args.size, args.image)
    rows = []
    for name in DEGRADATIONS.names():
        degrade(x, name, args.severity, seed=0)  # warm-up (lazy imports, caches)
        times = []
        for run in range(args.runs):
            start = time.perf_counter()
            degrade(x, name, args.severity, seed=run + 1)
            times.append(time.perf_counter() - start)
        rows.append(
            {
                "name": name,
                "robust_seg": name in ROBUST_SEG_SET,
                "median_s": statistics.median(times),
                "min_s": min(times),
                "max_s": max(times),
            }
        )

    slow = [r["name"] for r in rows if r["median_s"] > args.target]
    if args.json:
        print(
            json.dumps(
                {
                    "size": args.size,
                    "runs": args.runs,
                    "severity": args.severity,
                    "threads": args.threads,
                    "rows": rows,
                },
                indent=2,
                allow_nan=False,
            )
        )
    else:
        print(
            f"degrade() on one {args.size}x{args.size} image, severity {args.severity}, "
            f"{args.threads} threads, median of {args.runs} runs"
        )
        print(f"{'degradation':<22}{'median s':>10}{'min s':>9}{'max s':>9}")
        for r in sorted(rows, key=lambda r: -r["median_s"]):
            mark = "  SLOW" if r["median_s"] > args.target else ""
            tag = "" if r["robust_seg"] else "  (not in the Robust-Seg set)"
            print(f"{r['name']:<22}{r['median_s']:>10.3f}{r['min_s']:>9.3f}{r['max_s']:>9.3f}{mark}{tag}")
        print(
            f"slowest: {max(r['median_s'] for r in rows):.3f} s; target <= {args.target} s: "
            f"{'all met' if not slow else 'missed by ' + ', '.join(slow)}"
        )
    return 1 if slow else 0


if __name__ == "__main__":
    sys.exit(main())
