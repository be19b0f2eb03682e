"""Benchmarks: restoration quality/speed and segmentation robustness, written as JSON Lines with provenance.

Restoration (:func:`run_restoration_benchmark`): pairs of (degraded, ground truth) images, either
read from disk (:mod:`eval.datasets`) or synthesised from clean images with
``robustsam_prior.degradations.degrade`` (:class:`SyntheticPairs`, seeded per image so the result
does not depend on order), are run through named methods (``identity``, ``dcp``, a trained model
name or checkpoint through ``restore.inference.Restorer``, or any :class:`Method`). One row per
method: mean and per-image metrics, images/s (method time only), and provenance.

Segmentation robustness (:func:`run_segmentation_benchmark`, RobustSAM paper Tables 2-6
protocol): images with ground-truth instance masks; each instance gives one prompt
(its tight box, or N positive points drawn from the mask with a seed); each prompt's predicted mask
is scored by IoU/Dice/PA; scores are averaged over prompts, for the clear image and every
degradation/severity, for each segmenter (``robustsam``, ``sam``: RobustSAM's robust or SAM path;
``regions``: the weight-free over-segmentation, a prompt selecting the regions it covers). Prompts
are drawn from the masks of each condition (geometric degradations warp the masks with the image),
with seeds that depend only on (seed, image, instance), so every segmenter sees the same prompts.

Both are deterministic: the same spec gives identical metric values (timings aside).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import os
import subprocess
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from robustsam_prior.fileio import json_dumps, jsonable

from .datasets import PairedDataset, SegmentationDataset, file_list_hash
from .metrics.accumulator import ImageMetrics, build_image_metrics
from .metrics.psnr_ssim import MetricConventions
from .metrics.segmentation import PromptMetrics

logger = logging.getLogger(__name__)

__all__ = [
    "Method",
    "PromptSegmenter",
    "SyntheticPairs",
    "draw_prompts",
    "jsonable",
    "provenance",
    "read_rows",
    "resolve_method",
    "run_restoration_benchmark",
    "run_segmentation_benchmark",
    "seed_for",
    "write_rows",
]

ROW_FORMAT = "robustsam-restore/benchmark-row/1"


# ---------------------------------------------------------------------------------------- utilities


def seed_for(*parts: Any) -> int:
    """A 63-bit seed derived from ``parts`` (stable across runs and platforms, unlike ``hash``)."""
    h = hashlib.sha256("\x1f".join(str(p) for p in parts).encode("utf-8")).digest()
    return int.from_bytes(h[:8], "little") >> 1


def _git_rev() -> str:
    root = Path(__file__).resolve().parents[1]
    try:
        rev = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        return rev + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def provenance() -> dict[str, str]:
    """Package version, git revision, UTC date, and the torch/Python versions."""
    import platform
    from importlib.metadata import PackageNotFoundError, version

    try:
        pkg = version("robustsam-restore")
    except PackageNotFoundError:
        pkg = "0+unknown"
    return {
        "package_version": pkg,
        "git_rev": _git_rev(),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }


def write_rows(path: str | os.PathLike, rows: Iterable[dict], *, append: bool = True) -> Path:
    """Append (or write) rows to a JSON Lines file, one strict-JSON object per line."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "".join(json_dumps(jsonable(r), sort_keys=True) + "\n" for r in rows)
    if append and path.exists():
        with open(path, "a", encoding="utf-8") as f:
            f.write(text)
    else:
        from robustsam_prior.fileio import atomic_write

        with atomic_write(path, "w") as f:
            f.write(text)
    return path


def _json_type(value: Any) -> str:
    for kind, name in ((bool, "true/false"), (str, "a string"), (int, "a number"), (float, "a number"), (list, "an array")):
        if isinstance(value, kind):
            return name
    return "null" if value is None else type(value).__name__


def read_rows(path: str | os.PathLike) -> list[dict]:
    """Rows of a JSON Lines results file, each with ``_source`` (the file) and ``_line`` (its line).

    A file that is not UTF-8 text, a line that is not a JSON object, or a row without ``method`` and
    a ``metrics`` object (or whose ``unavailable``/``crops`` are not objects) raises ``ValueError``
    naming the file and line.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"results file {path} does not exist")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not a results file (not UTF-8 text: {e.reason} at byte {e.start})") from None
    rows = []
    for i, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}:{i}: not a JSON object ({e.msg})") from e
        if not isinstance(row, dict) or "method" not in row or "metrics" not in row:
            raise ValueError(f"{path}:{i}: not a benchmark row (needs 'method' and 'metrics')")
        for key in ("metrics", "unavailable", "crops"):
            if key in row and not isinstance(row[key], dict if key == "metrics" else (dict, type(None))):
                raise ValueError(f"{path}:{i}: '{key}' must be a JSON object, not {_json_type(row[key])}")
        row["_source"] = str(path)
        row["_line"] = i
        rows.append(row)
    return rows


# -------------------------------------------------------------------------------------- restoration


@dataclass
class Method:
    """A restoration method: ``fn(image (1,3,H,W) in [0,1]) -> (1,3,H,W)`` plus what identifies it."""

    name: str
    fn: Callable[[torch.Tensor], torch.Tensor]
    checkpoint_sha256: str | None = None
    prior: dict | None = None
    info: dict = field(default_factory=dict)


def resolve_method(
    spec: str | Method, *, device: str = "cpu", prior: str | None = None, task: str | None = None
) -> Method:
    """``identity``, ``dcp`` (dark channel prior), or a zoo name / checkpoint path for ``restore.inference.Restorer``.

    ``task`` (``dehaze``/``deblur``) selects the zoo's model and is checked against a checkpoint's;
    without it a checkpoint's own task is used.
    """
    if isinstance(spec, Method):
        return spec
    if spec == "identity":
        return Method("identity", lambda x: x)
    if spec == "dcp":
        from restore.baselines import dark_channel_prior

        return Method("dcp", dark_channel_prior, info={"baseline": "dark channel prior (He et al.)"})
    from restore.inference import Restorer

    tasks = [task] if task in ("dehaze", "deblur") else ["dehaze", "deblur"]
    err: Exception | None = None
    for t in tasks:
        try:
            restorer = Restorer.load(spec, task=t, prior=prior, device=device)
            break
        except ValueError as e:  # e.g. "a deblur model; it cannot dehaze": try the other task
            err = e
    else:
        raise ValueError(f"method {spec!r}: {err}") from err
    meta = dict(restorer.metadata or {})
    prior_meta = dict(restorer.prior.meta) if restorer.prior is not None else meta.get("prior")
    name = str(restorer.name)
    if name.endswith((".safetensors", ".pth", ".pt")):
        name = Path(name).stem
    if prior is not None and restorer.prior is not None:
        name = f"{name}[{prior}]"  # the same network under another prior is another leaderboard entry
    return Method(
        name=name,
        fn=restorer.restore,
        checkpoint_sha256=meta.get("sha256"),
        prior=prior_meta,
        info={"arch": meta.get("arch"), "arch_kwargs": meta.get("arch_kwargs"), "task": meta.get("task")},
    )


def _read_tensor(path: Path) -> torch.Tensor:
    """An image file as ``(1, 3, H, W)`` float32 in [0, 1] (what restoration methods take)."""
    from robustsam_prior.io import read_image, to_tensor

    return to_tensor(read_image(path).pixels)


def _read_exact(path: Path) -> torch.Tensor:
    """An image file as ``(1, 3, H, W)`` float64 holding exactly its stored levels ``k / (2^bits - 1)``.

    float32 cannot hold ``k / 255`` exactly; scoring 8-bit files from float32 would move PSNR by
    ~1e-7 dB away from BasicSR's ``calculate_psnr`` on the same files. float64 keeps it at ~1e-14.
    """
    from robustsam_prior.io import read_image

    img = read_image(path)
    top = 255.0 if img.bit_depth == 8 else 65535.0
    levels = np.round(img.pixels.astype(np.float64) * top) / top
    return torch.from_numpy(np.ascontiguousarray(levels.transpose(2, 0, 1)))[None]


@dataclass
class SyntheticPairs:
    """Degraded/clean pairs synthesised from a folder of clean images.

    Image ``name`` is degraded with ``degrade(clean, kind, severity, seed=seed_for(seed, name, kind, severity))``,
    so a pair is the same whatever else is in the folder or in which order it is read.
    """

    clean_dir: Path
    kind: str
    severity: int = 3
    seed: int = 0
    name: str | None = None

    def __post_init__(self) -> None:
        from robustsam_prior.io import collect_inputs, is_image_file

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
        from robustsam_prior.degradations import degrade

        rel, src = self.files[index]
        clean = _read_tensor(src)
        seed = seed_for(self.seed, rel, self.kind, self.severity)
        out = degrade(clean, self.kind, self.severity, seed=seed)
        return out.image.clamp(0, 1).to(torch.float32), _read_exact(src)

    def pairs(self) -> Iterable[tuple[str, torch.Tensor, torch.Tensor]]:
        for i, (rel, _) in enumerate(self.files):
            yield (rel, *self.load(i))

    def describe(self) -> dict:
        return {
            "name": self.name,
            "count": len(self.files),
            "file_list_sha256": file_list_hash([r for r, _ in self.files]),
            "degradation": {"kind": self.kind, "severity": self.severity, "seed": self.seed},
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
    device: str = "cpu",
) -> dict:
    """Score predicted images against ground truth (``data.items``: ``lq`` = prediction).

    Returns ``{"per_image", "mean", "count", "unavailable", "failed": [{"name", "error"}]}``; a pair
    that cannot be scored (unreadable file, size mismatch) is recorded in ``failed``, not in the means.
    """
    from tqdm import tqdm

    fns, unavailable = build_image_metrics(
        metrics, conventions=conventions, lpips_weights=lpips_weights, device=device
    )
    acc = ImageMetrics(metrics=fns, unavailable=unavailable)
    failed = []
    for it in tqdm(data.items, desc="eval", unit="img", leave=False, disable=len(data.items) < 2):
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
    from robustsam_prior.io import to_numpy

    h, w = x.shape[-2:]
    s = min(size, h, w)
    top, left = (h - s) // 2, (w - s) // 2
    return to_numpy(x[..., top : top + s, left : left + s])


def run_restoration_benchmark(
    *,
    methods: Sequence[str | Method],
    data: PairedDataset | SyntheticPairs,
    metrics: Sequence[str] = ("psnr", "ssim", "lpips"),
    conventions: MetricConventions = MetricConventions(),
    lpips_weights: str | os.PathLike | None = None,
    task: str | None = None,
    device: str = "cpu",
    prior: str | None = None,
    crops_dir: str | os.PathLike | None = None,
    num_crops: int = 2,
    crop_size: int = 128,
    out: str | os.PathLike | None = None,
) -> list[dict]:
    """Run every method over ``data``; one row per method (see module docstring). Appends to ``out`` if given.

    Per-image failures (unreadable files, a method error, a size mismatch) are recorded in the row's
    ``failed`` list and logged; they are not in the means.
    """
    from tqdm import tqdm

    resolved = [resolve_method(m, device=device, prior=prior, task=task) for m in methods]
    names = [m.name for m in resolved]
    if len(set(names)) != len(names):
        raise ValueError(f"method names must be unique, got {names}")
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
    for idx, (name, load) in enumerate(tqdm(_loaders(data), desc="benchmark", unit="img", leave=False)):
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
    from robustsam_prior.fileio import confined_path
    from robustsam_prior.io import write_image

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


# ------------------------------------------------------------------------------------- segmentation


def mask_box(mask: np.ndarray) -> np.ndarray:
    """Tight box ``[x0, y0, x1, y1]`` (pixel indices, inclusive max, SAM's XYXY frame) of a non-empty mask."""
    ys, xs = np.nonzero(mask)
    if ys.size == 0:
        raise ValueError("cannot draw a prompt from an empty mask")
    return np.array([xs.min(), ys.min(), xs.max(), ys.max()], dtype=np.float32)


def draw_prompts(mask: np.ndarray, *, prompt: str, num_points: int, rng: np.random.Generator) -> dict:
    """One prompt from a ground-truth mask: ``{"box": (4,)}`` or ``{"points": (N, 2) xy, "labels": (N,)}``.

    Points are distinct mask pixels drawn uniformly (pixel centres); fewer if the mask is smaller.
    """
    if prompt == "box":
        return {"box": mask_box(mask)}
    if prompt == "point":
        ys, xs = np.nonzero(mask)
        if ys.size == 0:
            raise ValueError("cannot draw a prompt from an empty mask")
        idx = rng.choice(ys.size, size=min(num_points, ys.size), replace=False)
        pts = np.stack([xs[idx], ys[idx]], axis=1).astype(np.float32)
        return {"points": pts, "labels": np.ones(len(pts), dtype=np.int64)}
    raise ValueError(f"unknown prompt type {prompt!r}; choose 'box' or 'point'")


class PromptSegmenter:
    """A promptable segmenter: ``set_image((H, W, 3) float [0, 1])``, then ``predict(prompt) -> (H, W) bool``."""

    name: str = "segmenter"
    meta: dict = {}

    def set_image(self, image: np.ndarray) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def predict(self, prompt: dict) -> np.ndarray:  # pragma: no cover - interface
        raise NotImplementedError

    def predict_many(self, prompts: Sequence[dict]) -> list[np.ndarray]:
        """Masks for several prompts on the set image (override to batch them)."""
        return [self.predict(p) for p in prompts]


class _SharedPredictor:
    """One predictor per model, shared by the ``robustsam`` and ``sam`` segmenters: the image is
    encoded once and each path's prompt-independent features are cached by the predictor."""

    def __init__(self, model) -> None:
        from robustsam_prior import RobustSamPredictor

        self.predictor = RobustSamPredictor(model)
        self.image: np.ndarray | None = None  # kept alive so that the identity check below is sound

    def set_image(self, image: np.ndarray) -> None:
        if image is not self.image:
            self.predictor.set_image((np.clip(image, 0, 1) * 255).round().astype(np.uint8))
            self.image = image


class PredictorSegmenter(PromptSegmenter):
    """RobustSAM (``path="robust"``) or SAM (``path="sam"``) through :class:`robustsam_prior.RobustSamPredictor`.

    Segmenters built on one ``shared`` predictor encode each image once; each passes its own ``path`` to
    every prediction, so sharing the predictor shares no decoder setting.
    """

    def __init__(
        self, *, model, path: str, name: str | None = None, shared: _SharedPredictor | None = None
    ) -> None:
        if path not in ("robust", "sam"):
            raise ValueError(f"path must be 'robust' or 'sam', got {path!r}")
        self.shared = shared if shared is not None else _SharedPredictor(model)
        self.path = path
        self.name = name or ("robustsam" if path == "robust" else "sam")
        sha = getattr(model, "checkpoint_sha256", None)
        self.meta = {"name": self.name, "path": path, "checkpoint_sha256": sha}

    @property
    def predictor(self):
        """The (shared) :class:`robustsam_prior.RobustSamPredictor`."""
        return self.shared.predictor

    def set_image(self, image: np.ndarray) -> None:
        self.shared.set_image(image)

    def predict(self, prompt: dict) -> np.ndarray:
        points, box = prompt.get("points"), prompt.get("box")
        masks, _, _ = self.predictor.predict_batch(
            point_coords=None if points is None else np.asarray(points)[None],
            point_labels=None if points is None else np.asarray(prompt.get("labels"))[None],
            boxes=None if box is None else np.asarray(box)[None],
            multimask_output=False,
            path=self.path,
        )
        return masks[0, 0].astype(bool)

    def predict_many(self, prompts: Sequence[dict]) -> list[np.ndarray]:
        if not prompts:
            return []
        if all("box" in p for p in prompts):
            masks, _, _ = self.predictor.predict_batch(
                boxes=np.stack([p["box"] for p in prompts]), multimask_output=False, path=self.path
            )
        elif len({len(p.get("points", ())) for p in prompts}) == 1 and all("points" in p for p in prompts):
            masks, _, _ = self.predictor.predict_batch(
                point_coords=np.stack([p["points"] for p in prompts]),
                point_labels=np.stack([p["labels"] for p in prompts]),
                multimask_output=False,
                path=self.path,
            )
        else:
            return super().predict_many(prompts)
        return [m[0].astype(bool) for m in masks]


class RegionsSegmenter(PromptSegmenter):
    """The weight-free ``regions`` prior used as a promptable segmenter.

    Box: the union of regions with more than half of their area inside the box. Points: the union
    of the regions under the positive points.
    """

    def __init__(self, **options: Any) -> None:
        from robustsam_prior import build_prior

        self.prior = build_prior("regions", **options)
        self.name = "regions"
        self.meta = dict(getattr(self.prior, "meta", {}) or {})
        self.labels: np.ndarray | None = None

    def set_image(self, image: np.ndarray) -> None:
        from robustsam_prior.io import to_tensor

        self.labels = self.prior(to_tensor(image)).labels[0].cpu().numpy()

    def predict(self, prompt: dict) -> np.ndarray:
        if self.labels is None:
            raise RuntimeError("set_image must be called before predict")
        lab = self.labels
        if "box" in prompt:
            x0, y0, x1, y1 = (int(round(v)) for v in prompt["box"])
            inside = np.zeros(lab.shape, bool)
            inside[y0 : y1 + 1, x0 : x1 + 1] = True
            total = np.bincount(lab.ravel())
            within = np.bincount(lab[inside], minlength=total.size)
            keep = np.nonzero(within * 2 > total)[0]
        else:
            pts = np.asarray(prompt["points"]).astype(int)
            keep = np.unique(lab[pts[:, 1], pts[:, 0]])
        return np.isin(lab, keep)


def build_segmenters(
    names: Sequence[str], *, model_config: str | dict | None = None, checkpoint: str | None = None, model=None
) -> list[PromptSegmenter]:
    """Segmenters by name (``robustsam``, ``sam``, ``regions``); one RobustSAM model is shared by the first two."""
    from robustsam_prior.registry import did_you_mean

    out: list[PromptSegmenter] = []
    shared = None
    for n in names:
        if n in ("robustsam", "sam"):
            if model is None:
                from robustsam_prior import build_robustsam, resolve_checkpoint

                variant = model_config if isinstance(model_config, str) else "vit_b"
                model = build_robustsam(
                    model_config, resolve_checkpoint(checkpoint if checkpoint is not None else variant)
                )
            shared = shared or _SharedPredictor(model)
            out.append(
                PredictorSegmenter(model=model, path="robust" if n == "robustsam" else "sam", shared=shared)
            )
        elif n == "regions":
            out.append(RegionsSegmenter())
        else:
            known = ["robustsam", "sam", "regions"]
            raise KeyError(f"unknown segmenter {n!r}{did_you_mean(n, known)}; known: {', '.join(known)}")
    return out


def _degrade_scene(image: np.ndarray, masks: np.ndarray, kind: str, severity: int, seed: int):
    """Degrade one image (and warp its masks for geometric degradations); returns (image, masks, params)."""
    from robustsam_prior.degradations import degrade
    from robustsam_prior.io import to_numpy, to_tensor

    labels = np.zeros(image.shape[:2], np.int64)
    for i, m in enumerate(masks, 1):
        labels[m] = i
    out = degrade(to_tensor(image), kind, severity, seed=seed, labels=torch.from_numpy(labels)[None])
    img = np.clip(to_numpy(out.image), 0, 1)
    lab = out.labels[0].cpu().numpy() if out.labels is not None else labels
    if lab.shape != img.shape[:2]:
        raise ValueError(f"degradation {kind!r} returned labels {lab.shape} for an image {img.shape[:2]}")
    return img, np.stack([lab == i for i in range(1, len(masks) + 1)]) if len(masks) else masks, out.params


def run_segmentation_benchmark(
    *,
    dataset: SegmentationDataset,
    segmenters: Sequence[PromptSegmenter],
    degradations: Sequence[str] = (),
    severities: Sequence[int] = (3,),
    prompt: str = "box",
    num_points: int = 3,
    seed: int = 0,
    include_clear: bool = True,
    out: str | os.PathLike | None = None,
) -> list[dict]:
    """One row per (segmenter, condition) with prompt-averaged IoU/Dice/PA (see module docstring)."""
    from tqdm import tqdm

    if prompt not in ("box", "point"):
        raise ValueError(f"unknown prompt type {prompt!r}; choose 'box' or 'point'")
    if not segmenters:
        raise ValueError("no segmenters given")
    conditions: list[tuple[str, int | None]] = [("clear", None)] if include_clear else []
    conditions += [(k, s) for k in degradations for s in severities]
    if not conditions:
        raise ValueError("nothing to evaluate: no degradations and include_clear=False")
    acc = {(seg.name, c): PromptMetrics() for seg in segmenters for c in conditions}
    dataset_info = dataset.describe()
    prov = provenance()
    skipped = 0
    for item in tqdm(dataset.items, desc="segmentation benchmark", unit="img", leave=False):
        image, masks = item.load_image(), item.load_masks()
        if masks.shape[1:] != image.shape[:2]:
            raise ValueError(f"{item.name}: masks {masks.shape[1:]} do not match the image {image.shape[:2]}")
        for kind, sev in conditions:
            if kind == "clear":
                img, gts = image, masks
            else:
                img, gts, _ = _degrade_scene(image, masks, kind, sev, seed_for(seed, item.name, kind, sev))
            prompts = []
            for j, m in enumerate(gts):
                if not m.any():  # an instance pushed out of the frame by a geometric degradation
                    skipped += 1
                    prompts.append(None)
                    continue
                rng = np.random.default_rng(seed_for(seed, item.name, j, "prompt", prompt, num_points))
                prompts.append(draw_prompts(m, prompt=prompt, num_points=num_points, rng=rng))
            keep = [j for j, p in enumerate(prompts) if p is not None]
            for seg in segmenters:
                seg.set_image(img)
                preds = seg.predict_many([prompts[j] for j in keep])
                for j, pred in zip(keep, preds):
                    acc[(seg.name, (kind, sev))].update(pred, gts[j])
    if skipped:
        logger.warning(
            "%d prompts skipped: their instance left the frame after a geometric degradation", skipped
        )
    rows = []
    for seg in segmenters:
        for kind, sev in conditions:
            a = acc[(seg.name, (kind, sev))]
            if not a.values["iou"]:
                logger.warning("%s / %s: no prompts", seg.name, kind)
                continue
            r = a.compute()
            rows.append(
                {
                    "format": ROW_FORMAT,
                    "kind": "segmentation",
                    "task": "segmentation",
                    "dataset": dataset_info,
                    "method": seg.name,
                    "prior": seg.meta,
                    "checkpoint_sha256": seg.meta.get("checkpoint_sha256"),
                    "degradation": kind,
                    "severity": sev,
                    "prompt": {
                        "type": prompt,
                        "num_points": num_points if prompt == "point" else None,
                        "seed": seed,
                    },
                    "metrics": {"iou": r["iou"], "dice": r["dice"], "pa": r["pa"]},
                    "count": r["count"],
                    "conventions": {"empty_both": "iou=dice=1", "pa": "fraction of equal pixels"},
                    "provenance": prov,
                }
            )
    if out is not None:
        write_rows(out, rows)
    return rows
