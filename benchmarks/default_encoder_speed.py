"""The default RobustSAM encoder path against the stock ``segment_anything`` encoder, same weights.

Usage::

    python benchmarks/default_encoder_speed.py              # vit_b, 1024x1024, 1 thread, 3 repeats
    python benchmarks/default_encoder_speed.py --threads 2 --repeats 5 --json out.json

In one run:

1. ``robustsam_prior.build_robustsam("vit_b")`` with random weights (seeded; the relative-position
   tables, zero at initialisation, drawn from N(0, 0.02) so that their terms take part): the model
   every command builds, whose image encoder is the fast one by default;
2. ``segment_anything``'s own ``ImageEncoderViT`` with vit_b's hyper-parameters, loaded with that
   encoder's state dict (strict), so both hold the same weights;
3. one 1024x1024 image through both (a warm-up pass each), then ``--repeats`` interleaved timed
   passes, so that both see the same machine load; medians of wall time and of process CPU time
   (the CPU-time clock is the fairer one when other jobs share the cores and ``--threads`` is 1);
4. the speed ratio stock / default (target >= 2.1) and the largest relative difference of the final
   embeddings, ``max |default - stock| / max |stock|`` (target <= 1e-4).

The 1-minute load average is printed before and after: on a shared machine the wall-clock ratio
can be depressed by other jobs.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from functools import partial
from pathlib import Path

TARGET_RATIO = 2.1
TARGET_REL_DIFF = 1e-4


def build_pair(variant: str, seed: int):
    """``(default RobustSAM model, stock segment_anything encoder)`` with the same random weights."""
    import torch
    from segment_anything.modeling import ImageEncoderViT

    from robustsam_prior import build_robustsam
    from robustsam_prior.modeling.build import VARIANTS

    torch.manual_seed(seed)
    model = build_robustsam(variant).eval()  # the default path: what every command builds
    with torch.no_grad():
        for name, p in model.image_encoder.named_parameters():
            if "rel_pos" in name:
                p.normal_(0.0, 0.02)
    cfg = VARIANTS[variant]
    stock = ImageEncoderViT(
        img_size=cfg.img_size,
        patch_size=cfg.patch,
        embed_dim=cfg.enc_dim,
        depth=cfg.enc_depth,
        num_heads=cfg.enc_heads,
        global_attn_indexes=cfg.global_attn,
        window_size=cfg.window,
        out_chans=cfg.prompt_dim,
        mlp_ratio=4.0,
        qkv_bias=True,
        norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
        use_rel_pos=True,
    ).eval()
    stock.load_state_dict(model.image_encoder.state_dict(), strict=True)
    return model, stock


def run(args: argparse.Namespace) -> dict:
    import torch

    from robustsam_prior.fast_encoder import is_accelerated

    torch.set_num_threads(args.threads)
    model, stock = build_pair(args.variant, args.seed)
    args.size = model.image_size  # the encoder takes its own input size only (1024 for the official variants)
    x = torch.randn(1, 3, args.size, args.size, generator=torch.Generator().manual_seed(args.seed + 1))
    res: dict = {"variant": args.variant, "size": args.size, "threads": torch.get_num_threads(),
                 "default_is_fast_encoder": is_accelerated(model.image_encoder), "load_before": os.getloadavg()[0]}

    def timed(fn):
        w, c = time.perf_counter(), time.process_time()
        out = fn(x)
        return time.perf_counter() - w, time.process_time() - c, out

    with torch.inference_mode():
        _, _, ref = timed(stock)  # warm-up passes, also the outputs compared
        _, _, (out, _early) = timed(model.encode)
        res["max_rel_diff"] = ((out - ref).abs().max() / ref.abs().max()).item()
        walls = {"stock": [], "default": []}
        cpus = {"stock": [], "default": []}
        for i in range(args.repeats):
            for name, fn in (("stock", stock), ("default", model.encode)):
                w, c, _ = timed(fn)
                walls[name].append(w)
                cpus[name].append(c)
            print(f"repeat {i}: stock {walls['stock'][-1]:.2f} s wall / {cpus['stock'][-1]:.2f} s CPU, default "
                  f"{walls['default'][-1]:.2f} s wall / {cpus['default'][-1]:.2f} s CPU "
                  f"(load {os.getloadavg()[0]:.1f})", flush=True)
    for clock, table in (("wall", walls), ("cpu", cpus)):
        res[f"stock_{clock}_s"] = statistics.median(table["stock"])
        res[f"default_{clock}_s"] = statistics.median(table["default"])
        res[f"ratio_{clock}"] = res[f"stock_{clock}_s"] / res[f"default_{clock}_s"]
        res[f"{clock}_all"] = table
    res["load_after"] = os.getloadavg()[0]
    return res


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variant", default="vit_b", choices=("vit_b", "vit_l", "vit_h"))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    res = run(args)
    print(f"{args.variant} {args.size}x{args.size}, {res['threads']} thread(s), load {res['load_before']:.1f} -> "
          f"{res['load_after']:.1f}; default path uses the fast encoder: {res['default_is_fast_encoder']}")
    print(f"stock   {res['stock_wall_s']:.2f} s wall, {res['stock_cpu_s']:.2f} s CPU (median of {args.repeats})")
    print(f"default {res['default_wall_s']:.2f} s wall, {res['default_cpu_s']:.2f} s CPU")
    print(f"speed ratio stock/default: {res['ratio_wall']:.2f}x wall, {res['ratio_cpu']:.2f}x CPU time "
          f"(target >= {TARGET_RATIO})")
    print(f"max relative output difference: {res['max_rel_diff']:.2e} (target <= {TARGET_REL_DIFF:g})")
    if args.json:
        from robustsam_prior.core.fileio import write_json

        write_json(args.json, res)
    return 0


if __name__ == "__main__":
    sys.exit(main())
