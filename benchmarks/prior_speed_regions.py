"""Seconds per 1024x1024 image for the weight-free ``regions`` prior (and per 4000x3000 image).

The default restoration models use this prior and must reach >= 1 megapixel/s end to end on 2 CPU
cores, so the prior's budget is well under 0.3 s per megapixel. The prior runs end to end as the
library calls it (input check, area downscale to the working size, contrast stretch, scikit-image
segmentation, nearest upsampling to the input size).

    python -m benchmarks.prior_speed_regions [--images DIR] [--repeats 5] [--threads 2]   # from the repo root

Images: every image file in ``--images`` (default: the shared real test images when present, else
scikit-image's bundled ``astronaut``), each resized to 1024x1024 and to 4000x3000.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

DEFAULT_IMAGES = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "real"


def load_images(folder: Path | None) -> list[tuple[str, torch.Tensor]]:
    from robustsam_prior.core.io import is_image_file, read_image, to_tensor

    if folder is not None and folder.is_dir():
        files = sorted(p for p in folder.rglob("*") if p.is_file() and is_image_file(p))
        return [(p.name, to_tensor(read_image(p).pixels)) for p in files]
    from skimage import data

    return [("astronaut", to_tensor(data.astronaut().astype(np.float32) / 255.0))]


def time_call(fn, x: torch.Tensor, repeats: int) -> float:
    fn(x)  # warm-up (imports, allocations)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn(x)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    from robustsam_prior.prior import build_prior

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=Path, default=DEFAULT_IMAGES)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    images = load_images(args.images)
    print(f"{len(images)} images, torch threads {torch.get_num_threads()}, median of {args.repeats} runs")
    priors = {
        "regions (slic, default)": build_prior("regions"),
        "regions (felzenszwalb)": build_prior("regions", method="felzenszwalb"),
    }
    for label, prior in priors.items():
        for size in [(1024, 1024), (3000, 4000)]:
            secs = []
            regions = []
            for _, img in images:
                x = F.interpolate(img, size=size, mode="bilinear", align_corners=False).clamp(0, 1).contiguous()
                secs.append(time_call(prior, x, args.repeats))
                regions.append(int(prior(x).labels.max()) + 1)
            mp = size[0] * size[1] / 1e6
            s = statistics.median(secs)
            print(
                f"{label:26s} {size[1]}x{size[0]}: {s:.3f} s/image  {s / mp:.3f} s/MP  "
                f"{mp / s:.1f} MP/s  (regions per image: median {int(statistics.median(regions))})"
            )


if __name__ == "__main__":
    main()
