"""Peak memory (RSS) and speed of tiled inference on a large image.

Each configuration runs in its own subprocess so its peak RSS (``ru_maxrss``) is its own:
a random-weight restoration checkpoint (default: ``fusion_nafnet`` width 16, blocks [1,1,1,1]) is
saved to a temporary folder and a synthetic ``W x H`` image is restored through
``restore.inference.Restorer`` exactly as the CLI does (the prior on the whole image, the network
in tiles). Target: a 6000x4000 input with tiling stays under 3 GB.

    python benchmarks/tiling_memory.py                       # 6000x4000, tile 1024, prior none
    python benchmarks/tiling_memory.py --size 2000x1500 --tile 0 --tile 1024   # compare
    python benchmarks/tiling_memory.py --model regions-dehaze      # the packaged default, its prior
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def child(args: argparse.Namespace) -> None:
    import numpy as np
    import torch

    sys.path.insert(0, str(REPO))
    from restore.archs import build_arch
    from restore.inference import CHECKPOINT_FORMAT, Restorer
    from robustsam_prior.core.checkpoint import save_checkpoint
    from robustsam_prior.core.cpu_memory import keep_freed_memory

    torch.set_num_threads(args.threads)
    # as the robustsam-restore command does
    malloc = "system" if args.system_malloc or not keep_freed_memory() else "keep freed"
    w, h = (int(v) for v in args.size.split("x"))
    if args.model:  # a packaged model or checkpoint, with its own prior
        r = Restorer.load(args.model, task="dehaze", device="cpu", tile=args.tile)
        args.arch, args.prior = r.metadata["arch"], r.metadata["prior"]["name"]
        args.width = r.metadata.get("arch_kwargs", {}).get("width")
    else:
        kwargs = {"width": args.width, "enc_blocks": [1, 1, 1, 1], "middle_blocks": 1, "dec_blocks": [1, 1, 1, 1]}
        net = build_arch(args.arch, **kwargs)
        with tempfile.TemporaryDirectory() as tmp:
            ck = Path(tmp) / "bench.safetensors"
            meta = {"format": CHECKPOINT_FORMAT, "arch": args.arch, "arch_kwargs": kwargs, "task": "dehaze",
                    "prior": {"name": args.prior, "options": {}}}
            save_checkpoint(ck, net.state_dict(), meta)
            del net
            r = Restorer.load(str(ck), task="dehaze", device="cpu", tile=args.tile)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    pixels = np.stack([0.5 + 0.4 * np.sin(xx / 37 + c) * np.cos(yy / 53) for c in range(3)], -1).astype(np.float32)
    del yy, xx
    from robustsam_prior.core.io import to_numpy, to_tensor

    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t0 = time.perf_counter()
    out = to_numpy(r.restore(to_tensor(pixels)))
    dt = time.perf_counter() - t0
    assert out.shape == pixels.shape
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"size": args.size, "tile": args.tile, "tiled": r.use_tiles(h, w), "model": args.model,
                      "arch": args.arch,
                      "width": args.width, "prior": args.prior, "threads": args.threads,
                      "seconds": round(dt, 2), "megapixels_per_s": round(w * h / 1e6 / dt, 3),
                      "malloc": malloc,
                      "rss_before_mb": round(rss0), "peak_rss_mb": round(peak)}, allow_nan=False))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", default="6000x4000", help="WxH of the synthetic input")
    p.add_argument("--tile", type=int, action="append", help="tile size (repeatable; 0 = whole image)")
    p.add_argument("--arch", default="fusion_nafnet")
    p.add_argument("--width", type=int, default=16)
    p.add_argument("--prior", default="none", choices=["none", "regions"])
    p.add_argument("--model", default=None,
                   help="measure this packaged model or checkpoint (e.g. regions-dehaze) instead of a random net")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--system-malloc", action="store_true",
                   help="keep the C library's malloc defaults (the CLI keeps freed memory: robustsam_prior.core.cpu_memory)")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        args.tile = args.tile[0]
        child(args)
        return
    for tile in args.tile or [1024]:
        cmd = [sys.executable, __file__, "--child", "--size", args.size, "--tile", str(tile), "--arch", args.arch,
               "--width", str(args.width), "--prior", args.prior, "--threads", str(args.threads)]
        cmd += ["--model", args.model] if args.model else []
        cmd += ["--system-malloc"] if args.system_malloc else []
        res = subprocess.run(cmd, capture_output=True, text=True)
        if res.returncode != 0:
            print(f"tile {tile}: failed\n{res.stderr[-2000:]}")
            continue
        print(res.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    main()
