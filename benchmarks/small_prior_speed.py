"""How fast is a small RobustSAM prior (e.g. ``robustsam-tiny``) on a 1024x1024 photo, and the restorers with it?

Usage::

    python benchmarks/small_prior_speed.py --checkpoint runs/robustsam_tiny_stage2/models/final.safetensors
    python benchmarks/small_prior_speed.py --checkpoint FILE --grids 6,8,12 --mask-sides 256,512 --restorers

For each automatic-mask grid (``points_per_side``) and ``mask_side`` (the longest side the masks are computed
on; ``robustsam_prior.priors.segment_anything_prior``), the ``robustsam`` prior runs on a 1024x1024 photo
(``skimage.data.astronaut``, resized) and the median seconds per image over ``--repeats`` runs are printed with
the number of regions it found. ``--restorers`` also times the packaged deblurrer and dehazer fed by that
prior (``Restorer.with_prior``; the networks were trained with another prior, so this measures speed, not
quality) and prints end-to-end megapixels per second. The machine is shared: the 1-minute load average is
printed before and after, and ``--clock cpu`` reports CPU seconds of this process instead of wall time.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time


def _photo(size: int):
    import numpy as np
    import torch
    from PIL import Image
    from skimage import data

    rgb = np.asarray(Image.fromarray(data.astronaut()).resize((size, size), Image.BICUBIC))
    return torch.from_numpy(rgb.copy()).permute(2, 0, 1)[None].float() / 255.0


def _timed(fn, repeats: int, clock: str) -> float:
    now = time.process_time if clock == "cpu" else time.perf_counter
    fn()  # warm-up: model load, allocator
    times = []
    for _ in range(repeats):
        t = now()
        fn()
        times.append(now() - t)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", default="robustsam-tiny",
                   help="RobustSAM checkpoint of the small model (default: the packaged robustsam-tiny)")
    p.add_argument("--grids", default="6,8,12", help="points_per_side values, comma-separated")
    p.add_argument("--mask-sides", default="256", help="mask_side values, comma-separated (0 = full size)")
    p.add_argument("--pred-iou-thresh", type=float, default=0.88)
    p.add_argument("--stability-score-thresh", type=float, default=0.95)
    p.add_argument("--path", choices=["robust", "sam"], default="robust")
    p.add_argument("--size", type=int, default=1024)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--clock", choices=["wall", "cpu"], default="wall")
    p.add_argument("--restorers", action="store_true", help="also time regions-deblur and regions-dehaze with it")
    a = p.parse_args(argv)

    import torch

    from robustsam_prior.prior import build_prior

    torch.set_num_threads(a.threads)
    image = _photo(a.size)
    mp = a.size * a.size / 1e6
    print(f"load average before: {os.getloadavg()[0]:.2f}; {a.threads} threads; {a.size}x{a.size}; clock {a.clock}")
    print(f"{'grid':>5} {'mask_side':>9} {'s/image':>8} {'regions':>7}")
    priors = []
    for side in (int(s) for s in a.mask_sides.split(",")):
        for grid in (int(g) for g in a.grids.split(",")):
            prior = build_prior(
                "robustsam", checkpoint=a.checkpoint, points_per_side=grid, path=a.path,
                mask_side=side or None, pred_iou_thresh=a.pred_iou_thresh,
                stability_score_thresh=a.stability_score_thresh,
            )
            seconds = _timed(lambda: prior(image), a.repeats, a.clock)  # noqa: B023 - called at once
            regions = int(prior(image).labels.max()) + 1
            print(f"{grid:>5} {side:>9} {seconds:>8.2f} {regions:>7}")
            priors.append((grid, side, prior))
    if a.restorers:
        from restore.inference import Restorer

        print(f"{'model':>15} {'grid':>5} {'mask_side':>9} {'s/image':>8} {'MP/s':>6}")
        for model, task in (("regions-deblur", "deblur"), ("regions-dehaze", "dehaze")):
            base = Restorer.load(model, task=task, device="cpu")
            for grid, side, prior in priors:
                restorer = base.with_prior(prior)
                seconds = _timed(lambda: restorer.restore(image), a.repeats, a.clock)  # noqa: B023
                print(f"{model:>15} {grid:>5} {side:>9} {seconds:>8.2f} {mp / seconds:>6.2f}")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
