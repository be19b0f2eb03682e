"""How fast is the prior? RobustSAM's image encoder against the machine's matrix-multiply floor.

Usage::

    python benchmarks/prior_speed.py                   # vit_b at 1024x1024, 2 threads, 3 repeats
    python benchmarks/prior_speed.py --repeats 5 --json out.json
    python benchmarks/prior_speed.py --amg --e2e       # + automatic masks, + `dehaze` images/s
    python benchmarks/prior_speed.py --device cuda --dtype bf16 --amg --e2e   # the same on a GPU

What it measures, in one run (interleaved, so both paths see the same machine load):

1. the fp32 matrix-multiply rate of this machine (median GFLOP/s of a square matmul, ``--mm-size``),
   measured between the encoder runs;
2. the FLOPs of the encoder (``torch.utils.flop_counter.FlopCounterMode``: matmuls, convolutions
   and attention; element-wise work is not counted) for the stock and the fast path;
3. seconds per image of ``segment_anything``'s stock ``ImageEncoderViT`` (vit_b hyper-parameters,
   random weights, fixed seed) and of the same module after ``robustsam_prior.fast_encoder.accelerate``,
   side by side, and the floor ``stock FLOPs / matmul rate``; fast / floor is the target ratio (<= 1.3);
4. the largest relative difference between the two paths (final embedding and the early
   global-block feature);
5. with ``--amg``: RobustSAM automatic masks (32x32 points) on a 1024 image: decoder time vs
   encoder time, the decoder's time per prompt (one at a time and batched) and the FLOPs of each
   part, which bound what any implementation can reach; with ``--e2e``: images/s of ``robustsam-restore dehaze`` on a folder of
   1-megapixel images with the ``regions`` prior.

The machine is shared: the 1-minute load average is printed before and after; timings are medians.

On a GPU (``--device cuda``) everything runs there: the matmul rate is measured in ``--dtype`` (a
square product of side ``--mm-size``, default 8192 there; TF32 off, so fp32 is fp32), the encoder
runs under ``torch.autocast`` for bf16/fp16 (the way ``robustsam_prior`` runs it on a GPU), each
timing is bracketed by ``torch.cuda.synchronize()``, and the card's name is printed. The relative
differences then compare the fast path with the stock path in the same dtype.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

logger = logging.getLogger("prior_speed")

# segment_anything's build_sam_vit_b/l/h hyper-parameters (segment_anything/build_sam.py)
VARIANTS = {
    "vit_b": dict(embed_dim=768, depth=12, num_heads=12, global_attn_indexes=(2, 5, 8, 11)),
    "vit_l": dict(embed_dim=1024, depth=24, num_heads=16, global_attn_indexes=(5, 11, 17, 23)),
    "vit_h": dict(embed_dim=1280, depth=32, num_heads=16, global_attn_indexes=(7, 15, 23, 31)),
}


def build_encoder(variant: str, img_size: int, seed: int = 0):
    """A stock ``segment_anything`` ``ImageEncoderViT`` with random weights (rel-pos tables random too)."""
    import torch
    from segment_anything.modeling import ImageEncoderViT

    torch.manual_seed(seed)
    enc = ImageEncoderViT(
        img_size=img_size,
        patch_size=16,
        mlp_ratio=4.0,
        out_chans=256,
        qkv_bias=True,
        norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
        use_rel_pos=True,
        window_size=14,
        **VARIANTS[variant],
    ).eval()
    with torch.no_grad():  # they init to zero; random values exercise the bias paths
        for name, p in enc.named_parameters():
            if "rel_pos" in name:
                p.normal_(0.0, 0.02)
    return enc


DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_gflops(n: int, reps: int = 5, clock=time.perf_counter, device=None, dtype=None) -> float:
    """Median GFLOP/s of an ``n x n @ n x n`` matmul on ``device`` in ``dtype`` (default CPU fp32)."""
    import torch

    device = torch.device("cpu") if device is None else device
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    out = torch.empty(n, n, device=device, dtype=dtype)
    torch.mm(a, b, out=out)
    times = []
    for _ in range(reps):
        _sync(device)
        t = clock()
        torch.mm(a, b, out=out)
        _sync(device)
        times.append(clock() - t)
    return 2 * n**3 / statistics.median(times) / 1e9


def autocast(device, dtype_name: str):
    """``torch.autocast`` for a GPU run in bf16/fp16; a no-op context for fp32 (and on the CPU)."""
    import contextlib

    import torch

    if dtype_name == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=getattr(torch, DTYPES[dtype_name]))


def _register_cpu_sdpa_flops() -> None:
    """FlopCounterMode misses the CPU flash-attention kernel and in-place addmm_: count them like their peers."""
    import torch
    from torch.utils import flop_counter

    op = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
    if op in flop_counter.flop_registry:
        return

    @flop_counter.register_flop_formula(op)
    def _flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
        return flop_counter.sdpa_flop_count(query_shape, key_shape, value_shape)

    # in-place addmm (the fast MLP fuses its residual add into the second matmul)
    flop_counter.register_flop_formula(torch.ops.aten.addmm_, get_raw=True)(flop_counter.addmm_flop)


def count_flops(fn) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    _register_cpu_sdpa_flops()
    counter = FlopCounterMode(display=False)
    with counter:
        fn()
    return int(counter.get_total_flops())


def load() -> float:
    return os.getloadavg()[0]


def bench_encoder(args) -> dict:
    import torch

    from robustsam_prior.fast_encoder import accelerate, stock

    device = torch.device(args.device)
    enc = build_encoder(args.variant, args.size).to(device)
    tap = VARIANTS[args.variant]["global_attn_indexes"][0]
    captured = []
    enc.blocks[tap].register_forward_hook(lambda _m, _i, out: captured.append(out.float()))
    x = torch.randn(1, 3, args.size, args.size, generator=torch.Generator().manual_seed(1)).to(device)
    mm_dtype = getattr(torch, DTYPES[args.dtype])

    clock = time.process_time if args.clock == "cpu" else time.perf_counter

    import robustsam_prior.fast_encoder as fast_encoder

    if args.mlp_chunk:
        fast_encoder.MLP_CHUNK = args.mlp_chunk

    def run(fast: bool):
        if fast:
            accelerate(enc, bias_budget=args.bias_budget)
        else:
            stock(enc)
        captured.clear()
        _sync(device)
        t = clock()
        with autocast(device, args.dtype):
            y = enc(x).float()
        _sync(device)
        return clock() - t, y, captured[0]

    res: dict = {"variant": args.variant, "size": args.size, "threads": torch.get_num_threads(), "clock": args.clock,
                 "device": str(device), "dtype": args.dtype}
    with torch.inference_mode():  # (the counted runs also warm up both paths)
        res["flops_stock"] = count_flops(lambda: run(False))
        res["flops_fast"] = count_flops(lambda: run(True))
        _, ref, ref_tap = run(False)  # warm-up + reference
        _, out, out_tap = run(True)
        res["rel_diff_embedding"] = ((out - ref).abs().max() / ref.abs().max()).item()
        res["rel_diff_early"] = ((out_tap - ref_tap).abs().max() / ref_tap.abs().max()).item()
        stock_t, fast_t, rates = [], [], []
        for i in range(args.repeats):
            rates.append(matmul_gflops(args.mm_size, clock=clock, device=device, dtype=mm_dtype))
            stock_t.append(run(False)[0])
            rates.append(matmul_gflops(args.mm_size, clock=clock, device=device, dtype=mm_dtype))
            fast_t.append(run(True)[0])
            logger.info("repeat %d: stock %.2f s, fast %.2f s, matmul %.0f/%.0f GFLOP/s (load %.1f)",
                        i, stock_t[-1], fast_t[-1], rates[-2], rates[-1], load())
    res["stock_s"] = statistics.median(stock_t)
    res["fast_s"] = statistics.median(fast_t)
    res["stock_s_all"], res["fast_s_all"], res["matmul_gflops_all"] = stock_t, fast_t, rates
    res["matmul_gflops"] = statistics.median(rates)
    res["floor_s"] = res["flops_stock"] / (res["matmul_gflops"] * 1e9)
    res["fast_over_floor"] = res["fast_s"] / res["floor_s"]
    res["stock_over_floor"] = res["stock_s"] / res["floor_s"]
    res["speedup"] = res["stock_s"] / res["fast_s"]
    return res


def bench_amg(args) -> dict:
    """Automatic masks (``--points``^2 grid) on one image: encoder vs everything after it.

    Also counts the FLOPs (the floor of each part): the encoder, the prompt-independent robust image
    features (once per image) and one prompt's decoder pass (transformer, upscaling, the mask-feature
    AMFG at 4h x 4w, logits), and times the decoder per prompt with the prompts run one at a time
    (``prompt_batch=1``, the CPU default for vit_b) and all at once (``prompt_batch=--points-per-batch``).
    On a GPU it runs in fp32 (the robust decoder's FFT block has no bf16 kernels), after a warm-up image.
    """
    import numpy as np
    import torch

    from robustsam_prior import RobustSamAutomaticMaskGenerator, build_robustsam

    torch.manual_seed(0)
    config = json.loads(Path(args.amg_config).read_text()) if args.amg_config else args.variant
    device = torch.device(args.device)
    model = build_robustsam(config, fast=True).eval().to(device)
    dec = model.mask_decoder
    gen = RobustSamAutomaticMaskGenerator(model, points_per_side=args.points, points_per_batch=args.points_per_batch)
    image = (np.random.default_rng(0).random((args.size, args.size, 3)) * 255).astype(np.uint8)
    res: dict = {"amg_points": args.points**2}

    def timed(fn):
        _sync(device)
        t = time.perf_counter()
        out = fn()
        _sync(device)
        return time.perf_counter() - t, out

    with torch.inference_mode():
        if device.type == "cuda":
            gen.predictor.set_image(image)  # warm-up: CUDA context, kernels, allocator
        res["amg_encoder_s"] = timed(lambda: gen.predictor.set_image(image))[0]
        x = torch.as_tensor(gen.predictor.transform.apply_image(image), device=device)
        x = model.preprocess(x.permute(2, 0, 1)[None].float())
        res["amg_flops_encoder"] = count_flops(lambda: model.encode(x))
        emb, early = gen.predictor.features, gen.predictor.early_features
        res["amg_flops_image_features"] = count_flops(lambda: dec.robust_image_features(emb, early))
        rif = dec.robust_image_features(emb, early)
        k = min(args.points_per_batch, 8)
        coords = (torch.rand(k, 1, 2, generator=torch.Generator().manual_seed(2)) * 1024).to(device)
        labels = torch.ones(k, 1, dtype=torch.int, device=device)

        def decode():
            return model.decode(emb, None, point_coords=coords, point_labels=labels, robust_image_features=rif)

        res["amg_flops_per_prompt"] = count_flops(decode) / k
        for batch in (1, args.points_per_batch):
            dec.prompt_batch = batch
            decode()  # warm-up
            res[f"amg_prompt_s_batch{batch}"] = timed(decode)[0] / k
        dec.prompt_batch = None  # the default
        set_image = gen.predictor.set_image
        gen.predictor.set_image = lambda *a, **k: None  # the embedding is already there
        try:
            res["amg_decoder_s"], masks = timed(lambda: gen.generate(image))
        finally:
            gen.predictor.set_image = set_image
    res["amg_masks"] = len(masks)
    res["amg_points_per_batch"] = args.points_per_batch
    return res


def bench_e2e(args) -> dict:
    """Images/s of ``robustsam-restore dehaze`` on a folder of 1-megapixel images, ``regions`` prior."""
    import numpy as np
    from click.testing import CliRunner

    from pipelines.cli import main
    from robustsam_prior.core.io import write_image

    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp, "in"), Path(tmp, "out")
        src.mkdir()
        rng = np.random.default_rng(0)
        for i in range(args.e2e_images):
            write_image(src / f"img{i}.png", rng.random((1000, 1000, 3)).astype(np.float32))
        cmd = ["dehaze", str(src), str(dst), "--prior", "regions", "--device", args.device]
        cmd += ["--model", args.e2e_model] if args.e2e_model else []
        t = time.perf_counter()
        result = CliRunner().invoke(main, cmd, catch_exceptions=False)
        secs = time.perf_counter() - t
        if result.exit_code != 0:
            raise RuntimeError(f"dehaze failed ({result.exit_code}): {result.output[-2000:]}")
    return {"e2e_images": args.e2e_images, "e2e_s": secs, "e2e_images_per_s": args.e2e_images / secs}


def print_table(res: dict) -> None:
    g = 1e9
    rows = [("machine", f"{res['threads']} threads, {res['clock']} clock, load {res['load_before']:.1f} -> "
                        f"{res['load_after']:.1f} (1-min average, {os.cpu_count()} CPUs)")]
    if res.get("gpu"):
        how = "fp32" if res["dtype"] == "fp32" else f"{res['dtype']} (autocast)"
        rows.append(("GPU", f"{res['gpu']}, encoder in {how}, automatic masks in fp32"))
    if "fast_s" in res:
        rows += [
            (f"matmul rate ({res['dtype']}, median)", f"{res['matmul_gflops']:.0f} GFLOP/s"),
            (f"encoder {res['variant']} @ {res['size']}: FLOPs stock / fast",
             f"{res['flops_stock'] / g:.0f} / {res['flops_fast'] / g:.0f} GFLOP"),
            ("floor = stock FLOPs / rate", f"{res['floor_s']:.2f} s"),
            ("stock segment_anything", f"{res['stock_s']:.2f} s/image  ({res['stock_over_floor']:.2f}x floor)"),
            ("fast (robustsam_prior.fast_encoder)",
             f"{res['fast_s']:.2f} s/image  ({res['fast_over_floor']:.2f}x floor)"),
            ("speed-up", f"{res['speedup']:.2f}x"),
            ("max rel. diff embedding / early", f"{res['rel_diff_embedding']:.1e} / {res['rel_diff_early']:.1e}"),
        ]
    if "amg_decoder_s" in res:
        n, per = res["amg_points"], res["amg_flops_per_prompt"]
        dec_flops = res["amg_flops_image_features"] + n * per
        full = res["amg_flops_image_features"] + 1024 * per
        rows += [
            (f"automatic masks ({n} points)", f"encoder {res['amg_encoder_s']:.2f} s, decoder (all after the "
                                              f"encoder) {res['amg_decoder_s']:.2f} s, {res['amg_masks']} masks"),
            ("decoder per prompt: one at a time / batch "
             f"{res['amg_points_per_batch']}", f"{res['amg_prompt_s_batch1']:.3f} / "
                                               f"{res['amg_prompt_s_batch' + str(res['amg_points_per_batch'])]:.3f} s"),
            ("FLOPs: encoder / robust image features / per prompt",
             f"{res['amg_flops_encoder'] / g:.0f} / {res['amg_flops_image_features'] / g:.0f} / {per / g:.2f} GFLOP"),
            (f"decoder FLOPs for {n} / 1024 points", f"{dec_flops / g:.0f} / {full / g:.0f} GFLOP = "
                                                     f"{dec_flops / res['amg_flops_encoder']:.1f}x / "
                                                     f"{full / res['amg_flops_encoder']:.1f}x the encoder's"),
        ]
    if "e2e_images_per_s" in res:
        rows.append(("dehaze, regions prior, 1 MP images",
                     f"{res['e2e_images_per_s']:.2f} images/s ({res['e2e_images']} in {res['e2e_s']:.1f} s)"))
    width = max(len(r[0]) for r in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--variant", choices=sorted(VARIANTS), default="vit_b")
    p.add_argument("--size", type=int, default=1024, help="input side in pixels (default 1024)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                   help="wall: elapsed time; cpu: this process's CPU time (robust to other load; use with "
                        "--threads 1, as the spin-waits of several threads count too)")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--dtype", choices=sorted(DTYPES), default="fp32",
                   help="encoder precision: bf16/fp16 run under torch.autocast (GPU only)")
    p.add_argument("--mm-size", type=int, default=None,
                   help="side of the square matmul for the rate (default 2048 on the CPU, 8192 on a GPU)")
    p.add_argument("--bias-budget", type=int, default=None, help="fast path: attention-bias chunk (elements)")
    p.add_argument("--mlp-chunk", type=int, default=None, help="fast path: tokens per MLP chunk")
    p.add_argument("--no-encoder", action="store_true", help="skip the encoder comparison")
    p.add_argument("--amg", action="store_true", help="also time automatic masks (needs robustsam_prior)")
    p.add_argument("--points", type=int, default=32, help="points per side for --amg")
    p.add_argument("--points-per-batch", type=int, default=64)
    p.add_argument("--amg-config", default=None, help="RobustSAM config JSON for --amg (default: --variant)")
    p.add_argument("--e2e", action="store_true", help="also time `robustsam-restore dehaze` end to end")
    p.add_argument("--e2e-images", type=int, default=4)
    p.add_argument("--e2e-model", default=None, help="--model for dehaze (default: the command's default)")
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = p.parse_args(argv)
    if args.device == "cpu" and args.dtype != "fp32":
        p.error("--dtype bf16/fp16 needs --device cuda (the CPU path is measured in fp32)")
    if args.device == "cuda" and args.clock == "cpu":
        p.error("--clock cpu measures this process's CPU time, not the GPU's: use --clock wall with --device cuda")
    if args.mm_size is None:
        args.mm_size = 8192 if args.device == "cuda" else 2048
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

    import torch

    torch.set_num_threads(args.threads)
    from robustsam_prior.core.devices import resolve_device

    try:
        resolve_device(args.device, what="--device")
    except ValueError as e:
        p.error(str(e))
    if args.device == "cuda":  # fp32 means fp32: no TF32 in matmuls or cuDNN convolutions
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    res = {"load_before": load(), "threads": args.threads, "clock": args.clock, "dtype": args.dtype,
           "gpu": torch.cuda.get_device_name() if args.device == "cuda" else None}
    if not args.no_encoder:
        res.update(bench_encoder(args))
    if args.amg:
        res.update(bench_amg(args))
    if args.e2e:
        res.update(bench_e2e(args))
    res["load_after"] = load()
    print_table(res)
    if args.json:
        args.json.write_text(json.dumps(res, indent=2, allow_nan=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
