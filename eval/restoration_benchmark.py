"""Restoration benchmark: quality and speed of restoration methods on degraded/clean pairs.

Pairs are read from disk (:mod:`eval.datasets`) or synthesised from clean images with
``robustsam_prior.degradations.degrade`` (:class:`SyntheticPairs`, seeded per image so the result does
not depend on order), and run through named methods (the classical ones in :data:`BASELINES`:
``identity``, ``dcp``; a trained model name or checkpoint through ``restore.inference.Restorer``; or any
:class:`Method`). One row per method: mean
and per-image metrics, images/s (method time only), and provenance (:mod:`eval.provenance`).
:func:`evaluate_pairs` scores existing predictions against ground truth.

Deterministic: the same spec gives identical metric values (timings aside).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from restore.baselines import dark_channel_prior
from robustsam_prior.core.registry import Registry

from .datasets import PairedDataset, file_list_hash
from .metrics.accumulator import ImageMetrics, build_image_metrics
from .metrics.psnr_ssim import MetricConventions
from .provenance import ROW_FORMAT, provenance, write_rows

logger = logging.getLogger(__name__)


@dataclass
class Method:
    """A restoration method: ``fn(image (1,3,H,W) in [0,1]) -> (1,3,H,W)`` plus what identifies it."""

    name: str
    fn: Callable[[torch.Tensor], torch.Tensor]
    checkpoint_sha256: str | None = None
    prior: dict | None = None
    info: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Baseline:
    """A classical method known by name: its function and what a row's ``method_info`` calls it."""

    fn: Callable[[torch.Tensor], torch.Tensor]
    description: str


def _identity(image: torch.Tensor) -> torch.Tensor:
    """The input itself, not a copy: no work, so its images/s is never the best of a leaderboard column."""
    return image


#: The methods :func:`resolve_method` knows by name; any other spec is a trained model or checkpoint.
BASELINES: Registry[Baseline] = Registry("baseline method")
BASELINES.add("identity", Baseline(_identity, "identity"))
BASELINES.add("dcp", Baseline(dark_channel_prior, "dark channel prior (He et al.)"))


# folders that hold a run's checkpoints rather than name the run (runs/<run>/models/final.safetensors)
_CHECKPOINT_FOLDERS = frozenset({"models", "model", "checkpoints", "checkpoint", "weights", "ckpt", "ckpts"})


def default_method_name(path: str | os.PathLike) -> str:
    """The row name of a checkpoint file given without an alias: ``<run folder>/<file stem>``.

    The run folder is the nearest parent not called ``models``, ``checkpoints``, ``weights`` (...):
    ``runs/dehaze_a/models/final.safetensors`` -> ``dehaze_a/final``. So the ``final.safetensors`` of
    two runs get two names; :func:`run_restoration_benchmark` adds the checkpoint's short sha256
    where two files still share one.
    """
    p = Path(os.path.abspath(path))
    for parent in p.parents:
        if parent.name and parent.name.lower() not in _CHECKPOINT_FOLDERS:
            return f"{parent.name}/{p.stem}"
    return p.stem


def resolve_method(
    spec: str | Method,
    *,
    device: str | torch.device = "cpu",
    prior: str | None = None,
    task: str | None = None,
    name: str | None = None,
    local_pool: int | None = None,
    self_ensemble: str = "none",
    prior_options: Mapping[str, Any] | None = None,
) -> Method:
    """A name in :data:`BASELINES` (``identity``, ``dcp``: dark channel prior), or a zoo name / checkpoint path
    for ``restore.inference.Restorer``.

    ``task`` (``dehaze``/``deblur``) selects the zoo's model and is checked against a checkpoint's;
    without it a checkpoint's own task is used. ``name`` (an alias) names the row; without it a
    method is named after ``spec``, a checkpoint file by :func:`default_method_name`.
    ``Method.info["spec"]`` records what was given. ``local_pool`` and ``self_ensemble`` are
    ``Restorer.load``'s inference settings for trained models (classical methods ignore them); a
    default name says which ran (``a/final+pool0``, ``a/final+x8``).
    ``prior_options`` go to ``Restorer.load`` (``prior_checkpoint``, ``prior_config``, ``fast_encoder``).
    """
    if isinstance(spec, Method):
        return spec
    if name is not None and not name.strip():
        raise ValueError(f"method {spec!r}: an alias must not be empty")
    if spec in BASELINES:
        baseline = BASELINES.get(spec)
        return Method(name or spec, baseline.fn, info={"baseline": baseline.description, "spec": spec})
    from restore.inference import Restorer

    tasks = [task] if task in ("dehaze", "deblur") else ["dehaze", "deblur"]
    err: Exception | None = None
    for t in tasks:
        try:
            restorer = Restorer.load(
                spec, task=t, prior=prior, device=device, local_pool=local_pool, self_ensemble=self_ensemble,
                **dict(prior_options or {}),
            )
            break
        except ValueError as e:  # e.g. "a deblur model; it cannot dehaze": try the other task
            err = e
    else:
        raise ValueError(f"method {spec!r}: {err}") from err
    meta = dict(restorer.metadata or {})
    prior_meta = dict(restorer.prior.meta) if restorer.prior is not None else meta.get("prior")
    if name is None:
        name = default_method_name(spec) if Path(spec).expanduser().is_file() else str(restorer.name)
        if prior is not None and restorer.prior is not None:
            name = f"{name}[{prior}]"  # the same network under another prior is another leaderboard entry
        if local_pool is not None:
            name = f"{name}+pool{local_pool}"
        if self_ensemble != "none":
            name = f"{name}+{self_ensemble}"
    return Method(
        name=name,
        fn=restorer.restore,
        checkpoint_sha256=meta.get("sha256"),
        prior=prior_meta,
        info={
            "arch": meta.get("arch"),
            "arch_kwargs": meta.get("arch_kwargs"),
            "task": meta.get("task"),
            "spec": spec,
            "local_pool": restorer.local_pool,
            "self_ensemble": self_ensemble,
        },
    )


def _resolve_all(
    methods: Sequence[str | tuple[str, str] | Method],
    *,
    device: str | torch.device,
    prior: str | None,
    task: str | None,
    local_pool: int | None = None,
    self_ensemble: str = "none",
    prior_options: Mapping[str, Any] | None = None,
) -> list[Method]:
    """Resolve ``methods`` (``spec``, ``(alias, spec)`` or :class:`Method`) into uniquely named methods.

    Checkpoints named by default (no alias) that share a name with a different checkpoint get their
    sha256's first 8 hex digits (``a/final@1a2b3c4d``); names that stay equal (the same file twice, an
    alias used twice) are an error naming what was given.
    """
    resolved, aliased = [], []
    for m in methods:
        alias, spec = m if isinstance(m, tuple) else (None, m)
        resolved.append(
            resolve_method(
                spec,
                device=device,
                prior=prior,
                task=task,
                name=alias,
                local_pool=local_pool,
                self_ensemble=self_ensemble,
                prior_options=prior_options,
            )
        )
        aliased.append(alias is not None)
    shas: dict[str, set] = {}
    for m in resolved:
        shas.setdefault(m.name, set()).add(m.checkpoint_sha256)
    for i, m in enumerate(resolved):
        if len(shas[m.name]) > 1 and not aliased[i] and m.checkpoint_sha256:
            m.name = f"{m.name}@{m.checkpoint_sha256[:8]}"
    seen: dict[str, Method] = {}
    for m in resolved:
        if m.name in seen:
            first = seen[m.name]
            raise ValueError(
                f"two methods would be called {m.name!r} ({first.info.get('spec', first.name)!r} and "
                f"{m.info.get('spec', m.name)!r}); give them names with NAME=SPEC"
            )
        seen[m.name] = m
    return resolved


def _read_tensor(path: Path) -> torch.Tensor:
    """An image file as ``(1, 3, H, W)`` float32 in [0, 1] (what restoration methods take)."""
    from robustsam_prior.core.io import read_image, to_tensor

    return to_tensor(read_image(path).pixels)


def _read_exact(path: Path) -> torch.Tensor:
    """An image file as ``(1, 3, H, W)`` float64 holding exactly its stored levels ``k / (2^bits - 1)``.

    float32 cannot hold ``k / 255`` exactly; scoring 8-bit files from float32 would move PSNR by
    ~1e-7 dB away from BasicSR's ``calculate_psnr`` on the same files. float64 keeps it at ~1e-14.
    """
    from robustsam_prior.core.io import read_image

    img = read_image(path)
    top = 255.0 if img.bit_depth == 8 else 65535.0
    levels = np.round(img.pixels.astype(np.float64) * top) / top
    return torch.from_numpy(np.ascontiguousarray(levels.transpose(2, 0, 1)))[None]


@dataclass
class SyntheticPairs:
    """Degraded/clean pairs synthesised from a folder of clean images.

    Image ``name`` (its path relative to ``clean_dir``) is degraded by
    :func:`robustsam_prior.degradations.degrade_file` with the project's one seeding rule and rounded to
    the clean file's bit depth: exactly the image ``robustsam-restore degrade clean_dir OUT --type kind
    --severity severity --seed seed`` writes, whatever else is in the folder or in which order it is read.
    """

    clean_dir: Path
    kind: str
    severity: int = 3
    seed: int = 0
    name: str | None = None

    def __post_init__(self) -> None:
        from robustsam_prior.core.io import is_image_file
        from robustsam_prior.inputs import collect_inputs

        self.clean_dir = Path(self.clean_dir)
        if not self.clean_dir.exists():
            raise FileNotFoundError(f"clean folder {self.clean_dir} does not exist")
        self.files = [
            (rel.as_posix(), src) for src, rel in collect_inputs(self.clean_dir) if is_image_file(src)
        ]
        if not self.files:
            raise ValueError(f"{self.clean_dir}: no image files")
        self.name = self.name or f"{self.clean_dir.name}+{self.kind}-s{self.severity}"

    def __len__(self) -> int:
        return len(self.files)

    def load(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(degraded (1,3,H,W) float32, clean (1,3,H,W) float64 exact levels)`` of image ``index``."""
        from robustsam_prior.core.io import read_image, to_tensor
        from robustsam_prior.degradations import degrade_file

        rel, src = self.files[index]
        img = read_image(src)
        out = degrade_file(to_tensor(img.pixels), self.kind, self.severity, seed=self.seed, rel=rel,
                           bit_depth=img.bit_depth)
        return out.image.to(torch.float32), _read_exact(src)

    def pairs(self) -> Iterable[tuple[str, torch.Tensor, torch.Tensor]]:
        for i, (rel, _) in enumerate(self.files):
            yield (rel, *self.load(i))

    def describe(self) -> dict:
        from robustsam_prior.degradations import SEED_RULE

        return {
            "name": self.name,
            "count": len(self.files),
            "file_list_sha256": file_list_hash([r for r, _ in self.files]),
            "degradation": {"kind": self.kind, "severity": self.severity, "seed": self.seed, "seed_rule": SEED_RULE},
        }


def _loaders(
    data: PairedDataset | SyntheticPairs,
) -> list[tuple[str, Callable[[], tuple[torch.Tensor, torch.Tensor]]]]:
    """``(name, load)`` per pair; ``load()`` reads (or synthesises) the pair only when called."""
    if isinstance(data, SyntheticPairs):
        return [(rel, (lambda i=i: data.load(i))) for i, (rel, _) in enumerate(data.files)]
    return [(it.name, (lambda it=it: (_read_tensor(it.lq), _read_exact(it.gt)))) for it in data.items]


def evaluate_pairs(
    data: PairedDataset,
    *,
    metrics: Sequence[str] = ("psnr", "ssim"),
    conventions: MetricConventions = MetricConventions(),
    lpips_weights: str | os.PathLike | None = None,
    device: str | torch.device = "cpu",
) -> dict:
    """Score predicted images against ground truth (``data.items``: ``lq`` = prediction).

    Returns ``{"per_image", "mean", "count", "unavailable", "failed": [{"name", "error"}]}``; a pair
    that cannot be scored (unreadable file, size mismatch) is recorded in ``failed``, not in the means.
    """
    from robustsam_prior.core.devices import resolve_device
    from robustsam_prior.core.progress import progress_bar

    device = resolve_device(device)
    fns, unavailable = build_image_metrics(
        metrics, conventions=conventions, lpips_weights=lpips_weights, device=device
    )
    acc = ImageMetrics(metrics=fns, unavailable=unavailable)
    failed = []
    for it in progress_bar(data.items, desc="eval", unit="img", leave=False, disable=len(data.items) < 2):
        try:
            pred, gt = _read_exact(it.lq), _read_exact(it.gt)
            if pred.shape != gt.shape:
                raise ValueError(
                    f"{it.lq.name} is {pred.shape[-1]}x{pred.shape[-2]} but its ground truth {it.gt.name} is "
                    f"{gt.shape[-1]}x{gt.shape[-2]}"
                )
            if fns:
                acc.update(pred, gt, [it.name])
            else:
                acc.per_image[it.name] = {}
        except Exception as e:  # one bad pair must not stop the evaluation
            logger.error("%s: %s", it.name, e)
            failed.append({"name": it.name, "error": str(e) or type(e).__name__})
    if acc.per_image:
        result = acc.compute()
    else:
        result = {"per_image": {}, "mean": {}, "count": 0, "unavailable": dict(unavailable)}
    result["failed"] = failed
    return result


def _center_crop(x: torch.Tensor, size: int) -> np.ndarray:
    from robustsam_prior.core.io import to_numpy

    h, w = x.shape[-2:]
    s = min(size, h, w)
    top, left = (h - s) // 2, (w - s) // 2
    return to_numpy(x[..., top : top + s, left : left + s])


def run_restoration_benchmark(
    *,
    methods: Sequence[str | tuple[str, str] | Method],
    data: PairedDataset | SyntheticPairs,
    metrics: Sequence[str] = ("psnr", "ssim", "lpips"),
    conventions: MetricConventions = MetricConventions(),
    lpips_weights: str | os.PathLike | None = None,
    task: str | None = None,
    device: str | torch.device = "cpu",
    prior: str | None = None,
    local_pool: int | None = None,
    self_ensemble: str = "none",
    prior_options: Mapping[str, Any] | None = None,
    crops_dir: str | os.PathLike | None = None,
    num_crops: int = 2,
    crop_size: int = 128,
    out: str | os.PathLike | None = None,
) -> list[dict]:
    """Run every method over ``data``; one row per method (see module docstring). Appends to ``out`` if given.

    ``methods`` items are specs (:func:`resolve_method`), ``(alias, spec)`` pairs or :class:`Method`
    objects; row names must come out unique (:func:`_resolve_all`). ``local_pool`` and ``self_ensemble``
    apply to every trained model (:func:`resolve_method`).

    Per-image failures (unreadable files, a method error, a size mismatch) are recorded in the row's
    ``failed`` list and logged; they are not in the means.
    """
    from robustsam_prior.core.devices import resolve_device
    from robustsam_prior.core.progress import progress_bar

    device = resolve_device(device)
    resolved = _resolve_all(
        methods, device=device, prior=prior, task=task, local_pool=local_pool, self_ensemble=self_ensemble,
        prior_options=prior_options,
    )
    fns, unavailable = build_image_metrics(
        metrics, conventions=conventions, lpips_weights=lpips_weights, device=device
    )
    dataset_info = data.describe()
    prov = provenance()
    crops_root = Path(crops_dir) if crops_dir is not None else None
    out_dir = Path(out).parent if out is not None else None
    if crops_root is not None and out_dir is not None:
        root, folder = os.path.realpath(crops_root), os.path.realpath(out_dir)
        if os.path.commonpath([root, folder]) != folder:
            logger.warning(
                "crops go to %s, outside the results file's folder %s: leaderboard embeds crops only "
                "from that folder",
                crops_root,
                out_dir,
            )
    # images outer, methods inner: one pair in memory at a time, read (or synthesised) once for all methods
    accs = {m.name: ImageMetrics(metrics=fns, unavailable=unavailable) for m in resolved}
    seconds = {m.name: 0.0 for m in resolved}
    failed: dict[str, list[dict]] = {m.name: [] for m in resolved}
    crops: dict[str, dict] = {m.name: {} for m in resolved}
    for idx, (name, load) in enumerate(progress_bar(_loaders(data), desc="benchmark", unit="img", leave=False)):
        try:
            lq, gt = load()
        except Exception as e:  # an unreadable pair fails for every method, and the run goes on
            logger.error("%s: %s", name, e)
            for m in resolved:
                failed[m.name].append({"name": name, "error": str(e) or type(e).__name__})
            continue
        for method in resolved:
            try:
                t0 = time.perf_counter()
                with torch.no_grad():
                    pred = method.fn(lq.to(device))
                if isinstance(pred, torch.Tensor) and pred.is_cuda:
                    torch.cuda.synchronize(pred.device)  # time the work, not the kernel launches
                seconds[method.name] += time.perf_counter() - t0
                pred = pred.detach().to("cpu").clamp(0, 1)
                if pred.shape != gt.shape:
                    raise ValueError(
                        f"output shape {tuple(pred.shape)} differs from ground truth {tuple(gt.shape)}"
                    )
                accs[method.name].update(pred, gt, [name])
            except Exception as e:  # one failing image must not lose the benchmark
                logger.error("%s on %s failed: %s", method.name, name, e)
                failed[method.name].append({"name": name, "error": str(e) or type(e).__name__})
                continue
            if crops_root is not None and idx < num_crops:
                crops[method.name][name] = _save_crops(
                    crops_root, dataset_info["name"], name, method.name, lq, pred, gt, crop_size, out_dir
                )
    rows, dead = [], []
    for method in resolved:
        acc = accs[method.name]
        if not acc.per_image:
            fails = failed[method.name]
            dead.append(f"{method.name}: every image failed ({fails[0]['error'] if fails else 'no images'})")
            continue
        result = acc.compute()
        n = result["count"]
        rows.append(
            {
                "format": ROW_FORMAT,
                "kind": "restoration",
                "task": task,
                "dataset": dataset_info,
                "method": method.name,
                "checkpoint_sha256": method.checkpoint_sha256,
                "prior": method.prior,
                "method_info": method.info,
                "metrics": {
                    **result["mean"],
                    "images_per_s": n / seconds[method.name] if seconds[method.name] > 0 else None,
                },
                "unavailable": result["unavailable"],
                "per_image": result["per_image"],
                "count": n,
                "failed": failed[method.name],
                "seconds": seconds[method.name],
                "conventions": {**conventions.to_dict(), "metrics": list(metrics)},
                "crops": crops[method.name],
                "provenance": prov,
            }
        )
    if out is not None and rows:
        write_rows(out, rows)  # the methods that worked are kept even if another one failed throughout
    if dead:
        raise RuntimeError("; ".join(dead))
    return rows


def _save_crops(root, dataset, name, method, lq, pred, gt, size, rel_to) -> dict[str, str]:
    from robustsam_prior.core.fileio import confined_path
    from robustsam_prior.core.io import write_image

    folder = confined_path(root, Path(_safe(dataset)) / _safe(Path(name).with_suffix("").as_posix()))
    paths = {}
    for key, img in (("degraded", lq), ("gt", gt), ("output", pred)):
        p = folder / (f"{_safe(method)}.png" if key == "output" else f"{key}.png")
        if key != "output" and p.exists():
            paths[key] = p
            continue
        write_image(p, np.clip(_center_crop(img, size), 0, 1))
        paths[key] = p
    out = {}
    for k, p in paths.items():
        try:
            out[k] = os.path.relpath(p, rel_to) if rel_to is not None else str(p)
        except ValueError:
            out[k] = str(p)
    return out


def _safe(s: str) -> str:
    """``s`` as one file-name component: characters other than letters, digits, ``-_.`` become ``_``, and so
    do the dots of a name made only of dots (``.``/``..`` would name the folder itself or its parent)."""
    out = "".join(c if c.isalnum() or c in "-_." else "_" for c in s)
    return out if out.strip(".") else "_" * max(len(out), 1)
