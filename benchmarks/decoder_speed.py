"""How fast is RobustSAM's mask decoder per prompt? Seconds and FLOPs against the matmul floor.

Usage::

    python benchmarks/decoder_speed.py                      # vit_b, 1 thread, CPU clock, 8 prompts
    python benchmarks/decoder_speed.py --threads 2 --clock wall --repeats 5 --json out.json

What it measures, in one run (interleaved, so every figure sees the same machine load):

1. the fp32 matrix-multiply rate (median GFLOP/s of a square ``--mm-size`` matmul), measured between
   the decoder runs with the same clock;
2. the FLOPs of one prompt's decoder pass on the RobustSAM path (``torch.utils.flop_counter.
   FlopCounterMode``: matmuls, convolutions and attention; element-wise work and FFTs are not counted): the
   two-way transformer, SAM's upscaling, the mask-feature AMFG at 4h x 4w, AOTG and the logits;
   the prompt-independent robust image features are computed once per image beforehand, as the
   predictor and the automatic mask generator do, and so (without mask prompts) are the first
   transformer block's projections of the image tokens (``--prompts`` prompts share them); like the
   predictor it keeps the logits, not each prompt's robust mask feature (``keep_embeddings=False``);
3. seconds per prompt (prompts one at a time, the CPU default for vit_b), for the default path and
   for ``stock_ops`` (the transformer and SAM's upscaling run as the stock modules are written), and
   the largest difference between the two paths' logits;
4. the floor ``FLOPs / matmul rate`` of each path and each path's ratio to its floor (the target for
   the default path is <= 1.5).

``--clock cpu`` (the default) times with this process's CPU time: on a machine whose cores are
shared with other jobs, that leaves out the time the process waits for a core, so the figures and
the matmul rate stay comparable. ``--clock wall`` uses elapsed time. The 1-minute load average is
printed before and after.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch


def matmul_gflops(n: int, clock, reps: int = 3) -> float:
    """Median GFLOP/s of an ``n x n @ n x n`` fp32 matmul."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    out = torch.empty(n, n)
    torch.mm(a, b, out=out)
    times = []
    for _ in range(reps):
        t = clock()
        torch.mm(a, b, out=out)
        times.append(clock() - t)
    return 2 * n**3 / statistics.median(times) / 1e9


def count_flops(fn) -> int:
    """FLOPs of ``fn()`` as ``benchmarks/prior_speed.py`` counts them (CPU flash attention included)."""
    from prior_speed import count_flops as count

    return count(fn)


def load() -> float:
    return os.getloadavg()[0]


def run(args: argparse.Namespace) -> dict:
    from robustsam_prior import build_robustsam
    from robustsam_prior.core.cpu_memory import keep_freed_memory

    # as the command line runs: freed buffers are reused instead of page-faulted in again
    malloc = "system" if args.system_malloc or not keep_freed_memory() else "keep freed"
    torch.set_num_threads(args.threads)
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    torch.manual_seed(0)
    model = build_robustsam(args.variant).eval()
    dec = model.mask_decoder
    side = model.image_size // 16
    vit_dim = dec.fourier_first_layer_features.conv_layer.out_channels
    emb = torch.randn(1, dec.transformer_dim, side, side)
    early = torch.randn(1, side, side, vit_dim)
    k = args.prompts
    coords = torch.rand(k, 1, 2, generator=torch.Generator().manual_seed(2)) * model.image_size
    labels = torch.ones(k, 1, dtype=torch.int)
    dec.prompt_batch = 1
    res: dict = {"variant": args.variant, "threads": args.threads, "clock": args.clock, "prompts": k,
                 "malloc": malloc, "load_before": load()}
    with torch.inference_mode():
        rif = dec.robust_image_features(emb, early)

        def decode():  # as the predictor and the automatic mask generator call it
            return model.decode(emb, None, point_coords=coords, point_labels=labels, robust_image_features=rif,
                                keep_embeddings=False)

        res["flops_per_prompt"] = count_flops(decode) / k
        dec.stock_ops = True
        res["stock_flops_per_prompt"] = count_flops(decode) / k
        stock = decode()
        dec.stock_ops = False
        fast = decode()
        scale = float(stock.logits.abs().max())
        res["max_abs_diff_logits"] = float((fast.logits - stock.logits).abs().max())
        res["logits_scale"] = scale
        fast_t, stock_t, rates = [], [], []
        for _ in range(args.repeats):
            rates.append(matmul_gflops(args.mm_size, clock))
            for stock_ops, times in ((False, fast_t), (True, stock_t)):
                dec.stock_ops = stock_ops
                t = clock()
                decode()
                times.append((clock() - t) / k)
        dec.stock_ops = False
        rates.append(matmul_gflops(args.mm_size, clock))
    res.update(
        seconds_per_prompt=min(fast_t), seconds_per_prompt_all=fast_t,
        stock_seconds_per_prompt=min(stock_t), stock_seconds_per_prompt_all=stock_t,
        matmul_gflops=statistics.median(rates), matmul_gflops_all=rates, load_after=load(),
    )
    res["floor_s"] = res["flops_per_prompt"] / (res["matmul_gflops"] * 1e9)
    res["ratio"] = res["seconds_per_prompt"] / res["floor_s"]
    res["stock_floor_s"] = res["stock_flops_per_prompt"] / (res["matmul_gflops"] * 1e9)
    res["stock_ratio"] = res["stock_seconds_per_prompt"] / res["stock_floor_s"]
    return res


def report(res: dict) -> str:
    g = 1e9
    rows = [
        ("machine", f"{res['threads']} thread(s), {res['clock']} clock, malloc {res['malloc']}, load "
                    f"{res['load_before']:.1f} -> {res['load_after']:.1f}"),
        ("matmul rate (fp32, median)", f"{res['matmul_gflops']:.0f} GFLOP/s "
                                       f"({', '.join(f'{r:.0f}' for r in res['matmul_gflops_all'])})"),
        (f"decoder FLOPs per prompt ({res['variant']})", f"{res['flops_per_prompt'] / g:.2f} GFLOP "
                                                       f"(stock_ops {res['stock_flops_per_prompt'] / g:.2f})"),
        ("floor per prompt", f"{res['floor_s']:.3f} s (stock_ops {res['stock_floor_s']:.3f} s)"),
        ("seconds per prompt (default path, best)", f"{res['seconds_per_prompt']:.3f} s = "
                                                    f"{res['ratio']:.2f}x its floor"),
        ("seconds per prompt (stock_ops, best)", f"{res['stock_seconds_per_prompt']:.3f} s = "
                                                 f"{res['stock_ratio']:.2f}x its floor"),
        ("logits, default vs stock_ops", f"max abs diff {res['max_abs_diff_logits']:.2e} "
                                         f"(max |logit| {res['logits_scale']:.2f})"),
    ]
    width = max(len(r[0]) for r in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--variant", default="vit_b", choices=["vit_b", "vit_l", "vit_h"])
    p.add_argument("--prompts", type=int, default=8, help="prompts per timed decoder call")
    p.add_argument("--repeats", type=int, default=3, help="timed calls per path (the best is reported)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--clock", choices=["cpu", "wall"], default="cpu")
    p.add_argument("--mm-size", type=int, default=2048, help="side of the square matmul for the rate")
    p.add_argument("--system-malloc", action="store_true",
                   help="keep the C library's malloc defaults (the CLI keeps freed memory: robustsam_prior.core.cpu_memory)")
    p.add_argument("--json", default=None, help="also write the figures to this JSON file")
    args = p.parse_args()
    res = run(args)
    print(report(res))
    if args.json:
        from robustsam_prior.core.fileio import write_json

        write_json(args.json, res)


if __name__ == "__main__":
    main()
