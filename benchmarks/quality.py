"""Quality benchmark of the default restoration models: prints PSNR/SSIM tables and speed.

    python benchmarks/quality.py                        # both tasks, shipped models, real pairs from --real-dir
    python benchmarks/quality.py --task dehaze --default-dehaze runs/default_dehaze/models/final.safetensors
    python benchmarks/quality.py --json results.json --skip-speed
    python benchmarks/quality.py --task deblur --skip-speed --local-pool 0   # whole-image statistics
    python benchmarks/quality.py --task deblur --self-ensemble x8   # adds the default model with x8 self-ensemble

Sets (each row is the mean over the set's images):

- ``synthetic``: the held-out clean images (scikit-image ``chelsea``/``coffee``, matplotlib
  ``grace_hopper``; none is in the training sets of ``pipelines/train_default_*.yml``) degraded through
  the project's one degradation path (``robustsam_prior.degradations.degrade_file``, base seed 7000, each
  photo's seed from its file name) and rounded to 8 bits: haze severities 2, 3, 4 (dehaze); camera shake
  2 and 3, defocus 2, linear motion 2 (deblur). ``robustsam-restore benchmark restoration --clean``
  makes the same images (``--held-out-dir`` below).
- ``real``: the real pairs in ``--real-dir`` (default ``../shared/data/real`` beside the checkout): O-HAZE image 35
  (``dehaze/hazy`` vs ``dehaze/gt``) and the two GoPro examples (``deblur/blur`` vs ``deblur/gt``).
- ``video`` (deblur): the video validation of the deblurring recipes, the held-out last fifth of a 240-fps
  GoPro sequence (``--video-dir``, default ``data/train/gopro0477/val`` as laid out by
  ``scripts/layout_training_data.py``), every 4th frame the centre of a mean of 7-13 frames in linear light
  against that frame, as ``type: video`` data makes it (fixed seed).
- ``video`` (dehaze): the same held-out frames, every 10th one hazed by the synthetic-haze data code
  (``type: synthetic``, the scattering model on its synthetic ground-plane depth) at severities 2, 3 and 4
  (fixed seeds): outdoor frames with large uniform surfaces, which the package photos lack.
- ``photos``: held-out photos of other scenes (``--photos-dir``, default ``data/train/photos/val``, laid out by
  ``scripts/layout_training_data.py --layout ffdnet_photos``: Berkeley, Kodak and McMaster photos), through
  the training data code: frame-average blur of severity 4 (deblur), haze of severity 3 (dehaze), fixed seed.
- ``depth`` (dehaze): the depth-haze validation of the dehazing recipes, held-out NYU-Depth-v2 photos hazed
  through their measured depth (``--depth-dir``, default ``data/train/nyu/val``), as ``type: depth_haze``
  makes it, three fixed hazes of each.

Choose runs and iterations on ``video``, ``photos``, ``depth`` and the validation photos of ``synthetic`` (chelsea,
coffee); ``real`` is a test set, reported and never selected on. Each table is followed by per-image PSNR
and, for every method, the worst image's gain over the input.

Methods: the degraded ``input``; the classical baseline (``dcp``: dark channel prior with the standard
settings, dehazing only; for blur the classical baseline is the identity, i.e. the input row); the
no-prior ablation (``nafnet``, same size and training budget); the default model with the ``regions``
prior; the same network on the packaged ``robustsam-tiny`` prior (``--robustsam-dehaze``, the packaged
``robustsam-dehaze`` by default; ``--robustsam-deblur`` where such a deblurrer exists), which also gets a
speed row. The networks run with their packaged inference settings (the deblurrers: channel-attention
statistics over 144-px windows, ``restore/weights/zoo.json``); ``--local-pool`` overrides them and the
row labels say which ran. ``--self-ensemble flip|x8`` adds a row (and a speed row) for the default model
with that self-ensemble (``Restorer.self_ensemble``). PSNR/SSIM are the project's one convention
(``eval.metrics.MetricConventions()``: BasicSR 1.4's ``calculate_psnr``/``calculate_ssim``, RGB, no
border crop, both images rounded to 8 bits), the same functions ``eval`` and ``benchmark`` use; the
tables' header names it.

Reproducing a table with the command line: ``--held-out-dir DIR`` (with the same ``--task``,
``--local-pool``, ``--self-ensemble`` and model options) copies the held-out photos into DIR and prints
the ``robustsam-restore benchmark restoration`` commands whose rows give the same per-image PSNR/SSIM:
per set, one command for the rows without self-ensemble and one for the self-ensemble row (a synthetic
column is the mean over its kinds and severities, one command each with equal image counts; the real
column is one command on ``--real-dir``).

Speed: megapixels per second of the default model on a 1024x1024 image (the O-HAZE photo resized),
prior included, with ``--threads`` torch threads (median of ``--repeats`` runs after a warm-up); the
prior's and the network's shares are printed separately, with the CPU seconds of one restore and the
load average (on a machine shared with other work the wall time measures the load, not the model).
Like the ``robustsam-restore`` command, the script keeps freed memory for reuse
(``robustsam_prior.core.cpu_memory``); ``ROBUSTSAM_RESTORE_MALLOC=system`` measures the C library's defaults.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

logger = logging.getLogger("quality")

# --real-dir's default: the data folder beside the checkout (../shared/data/real)
REAL_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "real"
# task -> (kind, severity) of the held-out synthetic set
SYNTHETIC = {
    "dehaze": (("haze", 2), ("haze", 3), ("haze", 4)),
    "deblur": (("camera_shake_blur", 2), ("camera_shake_blur", 3), ("defocus_blur", 2), ("motion_blur", 2)),
}
REAL = {"dehaze": ("dehaze/hazy", "dehaze/gt"), "deblur": ("deblur/blur", "deblur/gt")}
BASE_SEED = 7000  # different from the training (recipe seed 0) and example (100+, 200+) seeds
ROOT = Path(__file__).resolve().parents[1]
VIDEO_DIR = ROOT / "data" / "train" / "gopro0477" / "val"
DEPTH_DIR = ROOT / "data" / "train" / "nyu" / "val"
PHOTOS_DIR = ROOT / "data" / "train" / "photos" / "val"
# task -> (kind, severity) of the photos set
PHOTOS = {"dehaze": ("haze", 3), "deblur": ("frame_average_blur", 4)}


@dataclass
class Pair:
    name: str
    lq: np.ndarray  # HxWx3 float32 [0, 1]
    gt: np.ndarray


def conventions():
    """The PSNR/SSIM convention of every table: the project's one (``MetricConventions()``)."""
    from eval.metrics import MetricConventions

    return MetricConventions()


def psnr_ssim(pred: np.ndarray, gt: np.ndarray) -> tuple[float, float]:
    """PSNR (dB) and SSIM of ``HxWx3`` images in [0, 1] with ``eval.metrics`` under :func:`conventions`."""
    from eval.metrics import psnr, ssim

    kw = conventions().kwargs()
    p, g = np.clip(pred, 0.0, 1.0), np.clip(gt, 0.0, 1.0)
    return float(psnr(p, g, **kw)[0]), float(ssim(p, g, **kw)[0])


def held_out_files() -> dict[str, Path]:
    """name -> file of the held-out photos (restore.zoo.HELD_OUT_PHOTOS)."""
    from restore.zoo import HELD_OUT_PHOTOS
    from robustsam_prior.core.fileio import package_path

    return {name: package_path(url) for name, url in HELD_OUT_PHOTOS.items()}


def synthetic_pairs(task: str) -> list[Pair]:
    """The held-out synthetic set of ``task``: each photo through ``degrade_file`` (seed :data:`BASE_SEED`,
    its file name as the relative path), 8-bit, as ``benchmark restoration --clean`` makes it."""
    import torch

    from robustsam_prior.core.io import read_image, to_numpy, to_tensor
    from robustsam_prior.degradations import degrade_file

    pairs = []
    for name, path in held_out_files().items():
        img = read_image(path)
        for kind, severity in SYNTHETIC[task]:
            with torch.no_grad():
                lq = degrade_file(to_tensor(img.pixels), kind, severity, seed=BASE_SEED, rel=path.name,
                                  bit_depth=img.bit_depth).image
            pairs.append(Pair(f"{name}/{kind}{severity}", to_numpy(lq), img.pixels))
    return pairs


def write_held_out(folder: Path, args: argparse.Namespace) -> list[str]:
    """Copy the held-out photos into ``folder`` (atomically) and return the ``robustsam-restore`` commands
    that reproduce each table's rows (module docstring)."""
    from robustsam_prior.core.fileio import atomic_write

    for path in held_out_files().values():
        with atomic_write(folder / path.name, "wb") as f:
            f.write(path.read_bytes())
    lines = []
    tasks = ("dehaze", "deblur") if args.task == "all" else (args.task,)
    pool = "" if args.local_pool is None else f" --local-pool {args.local_pool}"
    for task in tasks:
        calls: dict[str, list[str]] = {}  # self-ensemble -> NAME=SPEC of its rows (one command each)
        for name, ref, _, ensemble in methods(task, args):
            label = name.replace(" ", "") + ("" if ensemble == "none" else f"+{ensemble}")
            calls.setdefault(ensemble, []).append(f"{label}={ref or 'identity'}")
        for ensemble, specs in calls.items():
            head = (f"robustsam-restore benchmark restoration --task {task} --methods {','.join(specs)}{pool}"
                    + ("" if ensemble == "none" else f" --self-ensemble {ensemble}"))
            for kind, severity in SYNTHETIC[task]:
                lines.append(f"{head} --clean {folder} --degradation {kind} --severity {severity} "
                             f"--seed {BASE_SEED} --metrics psnr,ssim --out {task}_synthetic.jsonl")
            lq, gt = (args.real_dir / d for d in REAL[task])
            lines.append(f"{head} --lq {lq} --gt {gt} --metrics psnr,ssim --out {task}_real.jsonl")
    return lines


def real_pairs(task: str, real_dir: Path) -> list[Pair]:
    from robustsam_prior.core.io import read_image

    lq_dir, gt_dir = (real_dir / d for d in REAL[task])
    if not lq_dir.is_dir():
        logger.warning("no real %s pairs: %s is not a folder", task, lq_dir)
        return []
    pairs = []
    for lq in sorted(lq_dir.iterdir()):
        gt = gt_dir / lq.name
        if not gt.is_file():
            raise FileNotFoundError(f"{lq}: no ground truth {gt}")
        pairs.append(Pair(lq.stem, read_image(lq).pixels, read_image(gt).pixels))
    return pairs


def dataset_pairs(opts, key: str, seed: int, suffix: str = "") -> list[Pair]:
    """Every pair of the training data code's validation dataset for ``opts`` (``seed``), named
    ``<sample name><suffix>``."""
    from restore.training.data import PairDataset

    ds = PairDataset(opts, key=key, seed=seed, train=False)
    return [Pair(f"{s.name}{suffix}", s.lq.permute(1, 2, 0).numpy(), s.gt.permute(1, 2, 0).numpy())
            for s in (ds[i] for i in range(len(ds)))]


def degraded_folder_pairs(folder: Path, kind: str, severity: int, key: str, seed: int, **opts) -> list[Pair]:
    """Every image of ``folder`` (whole, rounded to 8 bits) degraded by ``kind`` at ``severity`` by the
    training data code (``type: synthetic``, seed ``seed``), named ``<file>/<kind><severity>``; ``opts``:
    more ``DatasetOptions`` (``recursive``, ``include``)."""
    from restore.training.options import DatasetOptions, DegradationOptions

    data = DatasetOptions(type="synthetic", clean_dir=str(folder), quantise=True, crop_size=0,
                          degradation=DegradationOptions(kinds=(kind,), severity=(severity, severity)), **opts)
    return dataset_pairs(data, key, seed, f"/{kind}{severity}")


def video_haze_pairs(folder: Path) -> list[Pair]:
    """The dehazing view of the video validation: every 10th held-out frame of ``folder`` (searched
    recursively, ``*0.png``) hazed at severities 2, 3 and 4 by the training data code."""
    if not folder.is_dir():
        logger.warning("no dehaze video validation: %s is not a folder (scripts/layout_training_data.py lays it out)",
                       folder)
        return []
    return [pair for severity in (2, 3, 4)
            for pair in degraded_folder_pairs(folder, "haze", severity, "dehaze video validation", BASE_SEED + severity,
                                              recursive=True, include=("*0.png",))]


def photo_pairs(task: str, folder: Path) -> list[Pair]:
    """The held-out photos of other scenes, degraded by the training data code (:data:`PHOTOS`)."""
    if not folder.is_dir():
        logger.warning("no photos validation: %s is not a folder (scripts/layout_training_data.py --layout "
                       "ffdnet_photos lays it out)", folder)
        return []
    kind, severity = PHOTOS[task]
    return degraded_folder_pairs(folder, kind, severity, f"{task} photos validation", BASE_SEED)


def validation_pairs(task: str, folder: Path) -> list[Pair]:
    """The video (deblur) or depth-haze (dehaze) validation set, made by the training data code."""
    from restore.training.options import DatasetOptions

    needed = folder if task == "deblur" else folder / "images"
    if not needed.is_dir():
        logger.warning("no %s validation: %s is not a folder (scripts/layout_training_data.py lays it out)",
                       task, needed)
        return []
    if task == "deblur":
        opts = DatasetOptions(type="video", video_dir=str(folder), frames=(7, 13), frame_gamma=2.2, frame_step=4,
                              crop_size=0)
    else:
        opts = DatasetOptions(type="depth_haze", clean_dir=str(folder / "images"), depth_dir=str(folder / "depth"),
                              crop_border=8, beta=(0.05, 0.35), airlight=(0.7, 1.0), crop_size=0)
    pairs = []
    # few depth photos: three hazes of each (seeds), so that one draw of beta does not decide the set
    for k in range(1 if task == "deblur" else 3):
        pairs += dataset_pairs(opts, f"{task} validation", BASE_SEED + k, "" if task == "deblur" else f"/{k}")
    return pairs


def methods(task: str, args: argparse.Namespace) -> list[tuple[str, str | None, list[str], str]]:
    """(row name, model reference for Restorer.load, notes for the label, self-ensemble) per row; a None
    reference is the degraded input."""
    rows: list[tuple[str, str | None, list[str], str]] = [("input", None, [], "none")]
    if task == "dehaze":
        rows.append(("dcp", "dcp", [], "none"))
    rows.append(("nafnet", getattr(args, f"ablation_{task}"), ["no prior", "ablation"], "none"))
    rows.append(("map_nafnet + regions", getattr(args, f"default_{task}"), ["default"], "none"))
    if getattr(args, f"robustsam_{task}", None):
        rows.append(("map_nafnet + robustsam", getattr(args, f"robustsam_{task}"), ["robustsam-tiny prior"], "none"))
    if args.self_ensemble != "none":
        ensemble = args.self_ensemble
        rows.append(("map_nafnet + regions", getattr(args, f"default_{task}"), ["default", f"{ensemble} self-ensemble"],
                     ensemble))
    return rows


def row_label(name: str, notes: list[str]) -> str:
    return f"{name} ({', '.join(notes)})" if notes else name


def restore_fn(ref: str | None, task: str, local_pool: int | None = None, self_ensemble: str = "none",
               guided_radius: int | None = None):
    import torch

    from restore.inference import Restorer
    from robustsam_prior.core.io import to_numpy, to_tensor

    if ref is None:
        return lambda x: x
    restorer = Restorer.load(ref, task=task, device="cpu", local_pool=local_pool, self_ensemble=self_ensemble,
                             guided_radius=guided_radius)

    def fn(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return to_numpy(restorer.restore(to_tensor(x)))

    fn.local_pool = restorer.local_pool  # what ran: the model's own setting unless --local-pool
    return fn


def evaluate(task: str, sets: dict[str, list[Pair]], args: argparse.Namespace) -> list[dict]:
    """One record per (set, method): mean PSNR/SSIM and the per-image values."""
    from restore.zoo import CLASSICAL

    records = []
    for name, ref, notes, ensemble in methods(task, args):
        label = row_label(name, notes)
        try:
            network = ref is not None and ref not in CLASSICAL
            fn = restore_fn(ref, task, args.local_pool if network else None, ensemble,
                            args.guided_radius if network else None)
        except (ValueError, FileNotFoundError) as e:  # a missing model: say so, keep the other rows
            logger.warning("%s %s: %s", task, label, e)
            continue
        if getattr(fn, "local_pool", None):
            label = row_label(name, [*notes, f"local pool {fn.local_pool} px"])
        for set_name, pairs in sets.items():
            if not pairs:
                continue
            per_image = {}
            for p in pairs:
                per_image[p.name] = psnr_ssim(fn(p.lq), p.gt)
            vals = np.array(list(per_image.values()))
            records.append({
                "task": task, "set": set_name, "method": label, "model": ref, "n": len(pairs),
                "psnr": float(vals[:, 0].mean()), "ssim": float(vals[:, 1].mean()),
                "per_image": {k: {"psnr": v[0], "ssim": v[1]} for k, v in per_image.items()},
            })
            logger.info("%s %s %s: %.2f dB / %.3f", task, set_name, label, records[-1]["psnr"], records[-1]["ssim"])
    return records


def speed(task: str, ref: str, real_dir: Path, repeats: int, self_ensemble: str = "none") -> dict:
    """MP/s of ``ref`` on a 1024x1024 image, prior included; prior and network times apart (a self-ensemble
    runs the prior once per pass: its prior time is that many runs on the image)."""
    import cv2
    import torch

    from restore.inference import SELF_ENSEMBLES, Restorer
    from robustsam_prior.core.io import read_image, to_tensor

    src = real_dir / REAL[task][0]
    files = sorted(src.iterdir()) if src.is_dir() else []
    if files:
        img = cv2.resize(read_image(files[0]).pixels, (1024, 1024), interpolation=cv2.INTER_AREA)
    else:
        img = np.random.default_rng(0).random((1024, 1024, 3), dtype=np.float32)
    x = to_tensor(img)
    restorer = Restorer.load(ref, task=task, device="cpu", self_ensemble=self_ensemble)
    passes = len(SELF_ENSEMBLES[self_ensemble])
    totals, priors, cpu = [], [], []
    with torch.inference_mode():
        restorer.restore(x)  # warm-up
        for _ in range(repeats):
            t0 = time.perf_counter()
            for _ in range(passes if restorer.prior is not None else 0):
                restorer.prior(x)
            t1 = time.perf_counter()
            c1 = time.process_time()
            restorer.restore(x)
            cpu.append(time.process_time() - c1)
            t2 = time.perf_counter()
            priors.append(t1 - t0)
            totals.append(t2 - t1)
    total, prior = statistics.median(totals), statistics.median(priors)
    mp = 1024 * 1024 / 1e6
    # CPU seconds (all threads) of one restore: on a machine shared with other work the wall time
    # grows with the load, the CPU time much less; cpu_s / threads estimates the unloaded wall time
    model = ref if self_ensemble == "none" else f"{ref}, {self_ensemble} self-ensemble"
    return {"task": task, "model": model, "threads": torch.get_num_threads(), "s_per_image": total,
            "prior_s": prior, "network_s": max(total - prior, 0.0), "mp_per_s": mp / total,
            "cpu_s": statistics.median(cpu), "load_avg_1min": os.getloadavg()[0]}


def markdown(records: list[dict], speeds: list[dict]) -> str:
    lines = [conventions().describe(), ""] if records else []
    for task in ("dehaze", "deblur"):
        rows = [r for r in records if r["task"] == task]
        if not rows:
            continue
        sets = list(dict.fromkeys(r["set"] for r in rows))
        head = " | ".join(f"{s} PSNR / SSIM (n={next(r['n'] for r in rows if r['set'] == s)})" for s in sets)
        lines += [f"### {task}", "", f"| method | {head} |", "|---" * (len(sets) + 1) + "|"]
        for m in dict.fromkeys(r["method"] for r in rows):
            cells = []
            for s in sets:
                r = next((r for r in rows if r["method"] == m and r["set"] == s), None)
                cells.append("-" if r is None else f"{r['psnr']:.2f} dB / {r['ssim']:.3f}")
            lines.append(f"| {m} | " + " | ".join(cells) + " |")
        lines.append("")
        lines += per_image_tables(rows)
    if speeds:
        lines += ["### speed (1024x1024, CPU, prior included)", "",
                  "| task | model | threads | s/image | prior s | network s | MP/s | CPU s | load avg |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for s in speeds:
            lines.append(f"| {s['task']} | {s['model']} | {s['threads']} | {s['s_per_image']:.2f} | {s['prior_s']:.2f} | "
                         f"{s['network_s']:.2f} | {s['mp_per_s']:.2f} | {s['cpu_s']:.2f} | {s['load_avg_1min']:.1f} |")
    return "\n".join(lines)


def per_image_tables(rows: list[dict]) -> list[str]:
    """Per set: a PSNR table with one row per image and one column per method, then each method's
    mean and worst gain over the input (the ``input`` method's PSNR on the same image)."""
    lines = []
    for s in dict.fromkeys(r["set"] for r in rows):
        recs = [r for r in rows if r["set"] == s]
        inputs = next((r["per_image"] for r in recs if r["method"] == "input"), None)
        lines += [f"{s}, per image (PSNR dB):", "", "| image | " + " | ".join(r["method"] for r in recs) + " |",
                  "|---" * (len(recs) + 1) + "|"]
        for image in recs[0]["per_image"]:
            lines.append(f"| {image} | " + " | ".join(f"{r['per_image'][image]['psnr']:.2f}" for r in recs) + " |")
        lines.append("")
        if inputs is not None:
            for r in recs:
                if r["method"] == "input":
                    continue
                gains = [r["per_image"][k]["psnr"] - inputs[k]["psnr"] for k in inputs]
                worst = min(range(len(gains)), key=gains.__getitem__)
                lines.append(f"- {s}, {r['method']}: gain over the input {np.mean(gains):+.2f} dB on average, worst "
                             f"{gains[worst]:+.2f} dB ({list(inputs)[worst]})")
            lines.append("")
    return lines


def gains(records: list[dict]) -> None:
    """Add ``gain`` (mean) and ``worst_gain`` (the smallest per-image gain over the input) to each record."""
    for r in records:
        base = next((b for b in records if b["task"] == r["task"] and b["set"] == r["set"] and b["method"] == "input"),
                    None)
        if base is None:
            continue
        per = [r["per_image"][k]["psnr"] - base["per_image"][k]["psnr"] for k in base["per_image"]]
        r["gain"], r["worst_gain"] = float(np.mean(per)), float(min(per))


def main() -> None:
    from restore.inference import SELF_ENSEMBLES

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", choices=("dehaze", "deblur", "all"), default="all")
    parser.add_argument("--real-dir", type=Path, default=REAL_DIR, help="folder with dehaze/ and deblur/ pairs (default: ../shared/data/real beside the checkout)")
    parser.add_argument("--default-dehaze", default="regions-dehaze", help="zoo name or checkpoint path")
    parser.add_argument("--ablation-dehaze", default="dehaze-noprior", help="zoo name or checkpoint path")
    parser.add_argument("--default-deblur", default="regions-deblur", help="zoo name or checkpoint path")
    parser.add_argument("--ablation-deblur", default="deblur-noprior", help="zoo name or checkpoint path")
    parser.add_argument("--robustsam-dehaze", default="robustsam-dehaze",
                        help="zoo name or checkpoint path of the dehazer on the RobustSAM prior ('' = no such row)")
    parser.add_argument("--robustsam-deblur", default="",
                        help="zoo name or checkpoint path of the deblurrer on the RobustSAM prior (default: none)")
    parser.add_argument("--sets", default="synthetic,video,photos,depth,real",
                        help="comma-separated: synthetic, video, photos, depth (dehaze), real")
    parser.add_argument("--video-dir", type=Path, default=VIDEO_DIR, help="video validation frames (deblur; every 10th hazed for dehaze)")
    parser.add_argument("--photos-dir", type=Path, default=PHOTOS_DIR,
                        help="held-out photos of other scenes (the photos set)")
    parser.add_argument("--depth-dir", type=Path, default=DEPTH_DIR,
                        help="depth-haze validation: images/ and depth/ (dehaze)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs for the speed row")
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument("--local-pool", type=int, default=None, metavar="PX",
                        help="channel-attention statistics window of the networks (TLC; Restorer local_pool): "
                             "default each model's own setting, 0 = the whole image")
    parser.add_argument("--guided-radius", type=int, default=None, metavar="PX",
                        help="guided output filter of the networks (Restorer guided_radius): default each model's "
                             "own setting (the zoo's for packaged names, none for a checkpoint file), 0 = off")
    parser.add_argument("--self-ensemble", choices=tuple(SELF_ENSEMBLES), default="none",
                        help="also the default model with this self-ensemble (a table row and a speed row)")
    parser.add_argument("--json", type=Path, default=None, help="also write the records as JSON")
    parser.add_argument("--held-out-dir", type=Path, default=None,
                        help="copy the held-out photos here, print the robustsam-restore commands that reproduce "
                             "the tables, and exit")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.held_out_dir is not None:
        if args.guided_radius is not None:
            parser.error("--guided-radius has no counterpart in `robustsam-restore benchmark restoration`, so the "
                         "printed commands could not reproduce it; leave it out with --held-out-dir")
        print("\n".join(write_held_out(args.held_out_dir, args)))
        return

    import platform

    import torch

    from robustsam_prior.core.cpu_memory import keep_freed_memory

    torch.set_num_threads(args.threads)
    # as the robustsam-restore command does; ROBUSTSAM_RESTORE_MALLOC=system measures glibc's defaults
    malloc = "freed memory kept, as the CLI" if keep_freed_memory() else "C library defaults"
    tasks = ("dehaze", "deblur") if args.task == "all" else (args.task,)
    wanted = {s.strip() for s in args.sets.split(",") if s.strip()}
    records, speeds = [], []
    for task in tasks:
        sets = {}
        if "synthetic" in wanted:
            sets["synthetic"] = synthetic_pairs(task)
        if "video" in wanted:
            sets["video"] = validation_pairs(task, args.video_dir) if task == "deblur" else video_haze_pairs(args.video_dir)
        if "photos" in wanted:
            sets["photos"] = photo_pairs(task, args.photos_dir)
        if task == "dehaze" and "depth" in wanted:
            sets["depth"] = validation_pairs(task, args.depth_dir)
        if "real" in wanted:
            sets["real"] = real_pairs(task, args.real_dir)
        records += evaluate(task, sets, args)
        if not args.skip_speed:
            runs = [(getattr(args, f"default_{task}"), e) for e in dict.fromkeys(("none", args.self_ensemble))]
            if getattr(args, f"robustsam_{task}"):
                runs.append((getattr(args, f"robustsam_{task}"), "none"))
            for ref, ensemble in runs:
                try:
                    speeds.append(speed(task, ref, args.real_dir, args.repeats, ensemble))
                except (ValueError, FileNotFoundError) as e:
                    logger.warning("speed %s %s: %s", task, ref, e)
    print(f"Machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads; "
          f"malloc: {malloc}; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}\n")
    gains(records)
    print(markdown(records, speeds))
    if args.json:
        from robustsam_prior.core.fileio import atomic_write

        with atomic_write(args.json, "w") as f:
            f.write(json.dumps({"conventions": conventions().to_dict(), "records": records, "speed": speeds},
                               indent=2, allow_nan=False))


if __name__ == "__main__":
    main()
