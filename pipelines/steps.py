"""Pipeline steps: ``degrade``, ``prior``, ``restore``, ``segment``, ``eval``, ``report``.

Each step has a frozen options dataclass (its YAML mapping, told apart by ``step: NAME``, its ``TAG``) and
an implementation, a :class:`Step` with ``setup(run)`` (load models once), ``process(item, run)`` (one
image) and ``finish(run)`` (aggregate); ``run`` is a :class:`RunContext`. :data:`STEPS` is the registry
(name -> step class).

An :class:`Item` carries one image through the steps: ``input`` (the degraded image, ``(1,3,H,W)`` in
[0, 1]), ``image`` (the current one: after ``restore`` the restored image), ``gt`` (clean reference or
None), ``prior`` (:class:`~robustsam_prior.prior.PriorOutput` of the current image), ``labels``
(segmentations ``(H, W)`` int32 keyed by ``input``/``restored``/``clean``) and ``metrics``.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Literal, Protocol, TypeVar, Union

import numpy as np

from robustsam_prior.core.fields import option_field as _f
from robustsam_prior.core.registry import Registry

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from robustsam_prior.prior import Prior, PriorOutput

logger = logging.getLogger(__name__)

STEPS: Registry[type[Step]] = Registry("pipeline step")


# ---------------------------------------------------------------------------------------------
# options (the YAML format of each step)
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DegradeStep:
    """Degrade each (clean) input with robustsam_prior.degradations; the clean input becomes the reference."""

    TAG: ClassVar[str] = "degrade"
    TAG_FIELD: ClassVar[str] = "step"
    kind: str = _f("haze", "degradation name (robustsam-restore degrade --list)")
    severity: int = _f(3, "severity 1..5", min=1, max=5)
    seed: int = _f(0, "base seed (0 .. 2**31 - 1); each image's seed also depends on its relative path", min=0,
                   max=2**31 - 1)
    save: bool = _f(False, "write the degraded images to OUTPUT_DIR/degraded")


@dataclass(frozen=True)
class PriorStep:
    """Compute (or read from a PriorCache) the prior of the current image; reused by ``restore``."""

    TAG: ClassVar[str] = "prior"
    TAG_FIELD: ClassVar[str] = "step"
    name: str = _f("regions", "prior name: robustsam, sam, regions, none")
    options: dict[str, Any] = _f(dict, "keyword arguments of build_prior")
    cache_dir: str | None = _f(None, "PriorCache folder (each image is encoded once per prior)")


@dataclass(frozen=True)
class RestoreStep:
    """Restore the current image with restore.inference.Restorer (the library call behind dehaze/deblur)."""

    TAG: ClassVar[str] = "restore"
    TAG_FIELD: ClassVar[str] = "step"
    task: Literal["dehaze", "deblur"] = _f("dehaze", "restoration task")
    model: str | None = _f(None, "model name or checkpoint path (null = the task's default model)")
    prior: str | None = _f(None, "override the checkpoint's prior (name)")
    prior_checkpoint: str | None = _f(None, "RobustSAM/SAM weights for the robustsam/sam priors", exists="file")
    prior_config: str | None = _f(
        None, "architecture of prior_checkpoint: vit_b, vit_l, vit_h or a JSON file of sizes (null = from the file)")
    stock_encoder: bool = _f(
        False, "run the RobustSAM/SAM image encoder with segment_anything's stock forward instead of the fast one")
    tile: int | None = _f(None, "tile size (null = automatic, 0 = never tile, else at least 128)", min=0)
    local_pool: int | None = _f(
        None, "channel-attention statistics window in pixels (TLC; null = the model's own, 0 = whole image)", min=0
    )
    self_ensemble: Literal["none", "flip", "x8"] = _f(
        "none", "average over the mirrored image (flip, 2x time) or all 8 rotations/mirrors (x8, 8x time)"
    )
    save: bool = _f(True, "write restored images to OUTPUT_DIR/restored (same name, size, bit depth, alpha)")

    def check(self) -> None:
        if self.prior_config is not None:
            from robustsam_prior.modeling.build import read_config_argument

            try:
                read_config_argument(self.prior_config)
            except ValueError as e:
                raise ValueError(f"prior_config: {e}") from None


@dataclass(frozen=True)
class SegmentStep:
    """Segment the degraded input, the restored image and the clean reference with a prior's label map."""

    TAG: ClassVar[str] = "segment"
    TAG_FIELD: ClassVar[str] = "step"
    name: str = _f("regions", "prior whose label map is the segmentation")
    options: dict[str, Any] = _f(dict, "keyword arguments of build_prior")
    targets: tuple[Literal["input", "restored", "clean"], ...] = _f(
        ("input", "restored", "clean"), "which images to segment (those available)", min_len=1
    )
    save: bool = _f(False, "write label maps as 16-bit PNGs to OUTPUT_DIR/segments")


@dataclass(frozen=True)
class EvalStep:
    """Score restored and input images against the reference; mIoU of segmentations against the clean one."""

    TAG: ClassVar[str] = "eval"
    TAG_FIELD: ClassVar[str] = "step"
    metrics: tuple[str, ...] = _f(("psnr", "ssim"), "image metrics (psnr, ssim, lpips, ...) and/or miou")
    optional: bool = _f(False, "skip (with a note) when there is no reference instead of failing")
    allow_missing: bool = _f(
        False, "leave out (with a warning) a metric that cannot be computed here (LPIPS without its backbone "
        "weights) instead of failing the run before any image"
    )


@dataclass(frozen=True)
class ReportStep:
    """Write per-image metrics and their means as JSON (and a Markdown table)."""

    TAG: ClassVar[str] = "report"
    TAG_FIELD: ClassVar[str] = "step"
    path: str = _f("report.json", "report file (.json), relative to OUTPUT_DIR and inside it", inside="OUTPUT_DIR")
    markdown: bool = _f(True, "also write a Markdown table beside it (the same name with .md)")

    def check(self) -> None:
        if not self.path.endswith(".json"):
            raise ValueError(f"path: must end in .json (the Markdown table takes the .md name), got {self.path!r}")
        if Path(self.path) == Path("summary.json"):
            raise ValueError("path: OUTPUT_DIR/summary.json is the run's summary; choose another name")


StepOptions = Union[DegradeStep, PriorStep, RestoreStep, SegmentStep, EvalStep, ReportStep]  # noqa: UP007


# ---------------------------------------------------------------------------------------------
# running
# ---------------------------------------------------------------------------------------------


@dataclass
class Item:
    """One image travelling through the pipeline (see module docstring)."""

    rel: Path  # the input's path relative to the pipeline's input (its name under OUTPUT_DIR)
    source: Path  # the input file
    input: torch.Tensor  # (1, 3, H, W) in [0, 1]: the image read, or its degraded version after `degrade`
    image: torch.Tensor  # the current image: `input`, then the restored image after `restore`
    gt: torch.Tensor | None = None  # the clean reference (ground_truth, or the image before `degrade`)
    alpha: np.ndarray | None = None  # (H, W) in [0, 1] from the input file, written back unchanged
    bit_depth: int = 8  # of the input file, kept by the images written
    prior: PriorOutput | None = None  # the prior step's output for `image`; None once `image` changes
    restored: torch.Tensor | None = None  # the `restore` step's output
    labels: dict[str, np.ndarray] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)


class PipelineName(Protocol):
    @property
    def name(self) -> str: ...


class RunContext(Protocol):
    """What a step sees of the run (``pipelines.runner.Run``): the device, the output folder and writers, the
    per-image ``results`` and ``failed`` lists, the ``summary`` written at the end, and ``shared``, where a
    step leaves what a later step may use (the prior step: its prior, under ``"prior"``)."""

    device: str
    output_dir: Path
    results: list[dict]
    failed: list[dict]
    shared: dict[str, Any]
    summary: dict[str, Any]

    @property
    def config(self) -> PipelineName: ...

    def write(self, item: Item, folder: str, image: torch.Tensor) -> Path: ...

    def write_labels(self, item: Item, target: str, labels: np.ndarray) -> Path: ...


def _message(e: Exception) -> str:
    """The text of an exception (a KeyError's str() adds quotes)."""
    return str(e.args[0]) if e.args else str(e)


OptionsT = TypeVar("OptionsT")


class Step(ABC, Generic[OptionsT]):
    """A step of a pipeline, built from its options: ``setup`` once, ``process`` per image, ``finish`` at the end."""

    def __init__(self, options: OptionsT, index: int) -> None:
        self.options, self.index = options, index

    @property
    def key(self) -> str:
        return f"steps[{self.index}]"

    def setup(self, run: RunContext) -> None:  # noqa: B027 - most steps load nothing
        """Load what the step needs (models, metrics) before the first image."""

    @abstractmethod
    def process(self, item: Item, run: RunContext) -> None:
        """Do the step's work on one image, reading and updating ``item``."""

    def finish(self, run: RunContext) -> None:  # noqa: B027 - most steps have nothing to aggregate
        """Aggregate over the images, after the last one."""


@STEPS.register("degrade")
class Degrade(Step[DegradeStep]):
    """Degrades each image as ``robustsam-restore degrade`` does (same seeding rule, rounded to the
    file's bit depth), so a pipeline restores and scores the images that command writes."""

    def process(self, item: Item, run: RunContext) -> None:
        from robustsam_prior.degradations import degrade_file

        o = self.options
        if item.gt is None:
            item.gt = item.image
        out = degrade_file(item.image, o.kind, o.severity, seed=o.seed, rel=item.rel, bit_depth=item.bit_depth)
        item.input = item.image = out.image
        if o.save:
            run.write(item, "degraded", item.image)


@STEPS.register("prior")
class PriorStepImpl(Step[PriorStep]):
    """Computes the prior of the current image into ``item.prior`` (through a ``PriorCache`` with
    ``cache_dir``) and shares its prior as ``run.shared["prior"]``, so that a ``restore`` step on the same
    prior uses this output instead of computing it again."""

    def setup(self, run: RunContext) -> None:
        from robustsam_prior.prior import build_prior

        o = self.options
        try:
            self.prior = build_prior(o.name, **o.options)
        except (KeyError, ValueError) as e:
            raise ValueError(f"{self.key}: {_message(e)}") from None
        self.cache = None
        if o.cache_dir:
            from robustsam_prior.cache import PriorCache

            self.cache = PriorCache(o.cache_dir)
        run.shared["prior"] = self.prior

    def process(self, item: Item, run: RunContext) -> None:
        if self.cache is not None:
            item.prior = self.cache.get_or_compute(self.prior, item.image)
        else:
            item.prior = self.prior(item.image)


@STEPS.register("restore")
class Restore(Step[RestoreStep]):
    """Restores the current image with a ``Restorer``; where a ``prior`` step computed the model's own
    prior (same meta) for this image, its output is handed to the restorer instead of being computed again."""

    def setup(self, run: RunContext) -> None:
        from restore.inference import Restorer
        from robustsam_prior.modeling.build import read_config_argument

        o = self.options
        self.restorer = Restorer.load(o.model, task=o.task, prior=o.prior, prior_checkpoint=o.prior_checkpoint,
                                      prior_config=read_config_argument(o.prior_config) if o.prior_config else None,
                                      fast_encoder=not o.stock_encoder, device=run.device, tile=o.tile,
                                      local_pool=o.local_pool, self_ensemble=o.self_ensemble)
        shared: Prior | None = run.shared.get("prior")
        own = self.restorer.prior
        self.reuse_prior = own is not None and shared is not None and shared.meta == own.meta
        if own is not None and shared is not None and not self.reuse_prior:
            logger.info("%s: the model's prior differs from the prior step's; computing it again", self.key)

    def process(self, item: Item, run: RunContext) -> None:
        known = item.prior if self.reuse_prior else None
        out = self.restorer.restore(item.image, known_prior=known)
        item.restored = item.image = out
        item.prior = None  # the prior of the old image no longer describes the current one
        if self.options.save:
            run.write(item, "restored", out)


@STEPS.register("segment")
class Segment(Step[SegmentStep]):
    """Segments the images of ``targets`` with a prior's label map into ``item.labels``."""

    def setup(self, run: RunContext) -> None:
        from robustsam_prior.prior import build_prior

        o = self.options
        try:
            self.prior = build_prior(o.name, **o.options)
        except (KeyError, ValueError) as e:
            raise ValueError(f"{self.key}: {_message(e)}") from None

    def process(self, item: Item, run: RunContext) -> None:
        images = {"input": item.input, "restored": item.restored, "clean": item.gt}
        for t in self.options.targets:
            if images[t] is None:
                continue
            item.labels[t] = self.prior(images[t]).labels[0].cpu().numpy()
            if self.options.save:
                run.write_labels(item, t, item.labels[t])


@STEPS.register("eval")
class Evaluate(Step[EvalStep]):
    """Scores the restored and input images against the reference into ``item.metrics``."""

    def setup(self, run: RunContext) -> None:
        from eval.metrics import MetricConventions, build_image_metrics

        names = [m for m in self.options.metrics if m != "miou"]
        self.want_miou = "miou" in self.options.metrics
        conventions = MetricConventions()  # the project's one convention, as eval and benchmark
        try:
            self.fns, unavailable = build_image_metrics(names, conventions=conventions, device=run.device)
        except KeyError as e:
            raise ValueError(f"{self.key}.metrics: {_message(e)}") from None
        if unavailable and not self.options.allow_missing:
            raise ValueError("; ".join(f"{self.key}.metrics: {name} cannot be computed: {why}"
                                       for name, why in unavailable.items())
                             + f" (allow_missing: true in the step, or steps.{self.index}.allow_missing=true, "
                               "leaves it out)")
        if {"psnr", "ssim"} & set(names):
            run.summary["conventions"] = conventions.describe()
        for name, why in unavailable.items():
            logger.warning("%s: metric %s unavailable (%s)", self.key, name, why)
        self.warned = False

    def process(self, item: Item, run: RunContext) -> None:
        if item.gt is None:
            if self.options.optional:
                if not self.warned:
                    logger.warning("%s: no reference images (ground_truth or a degrade step); skipped", self.key)
                    self.warned = True
                return
            raise ValueError(f"{self.key}: no reference for {item.rel} (set ground_truth or add a degrade step)")
        gt = item.gt
        for name, fn in self.fns.items():
            if item.restored is not None:
                item.metrics[name] = float(fn(item.restored, gt)[0])
            item.metrics[f"input_{name}"] = float(fn(item.input, gt)[0])
        if self.want_miou and "clean" in item.labels:
            from eval.metrics import matched_miou

            ref = item.labels["clean"]
            if "restored" in item.labels:
                item.metrics["miou_restored_vs_clean"] = matched_miou(item.labels["restored"], ref)
            if "input" in item.labels:
                item.metrics["miou_input_vs_clean"] = matched_miou(item.labels["input"], ref)


def _is_report(path: Path) -> bool:
    """Whether the existing file ``path`` is a report this step wrote (JSON or its Markdown table)."""
    import json

    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return False
    if path.suffix == ".md":
        return "| metric | mean |" in text.splitlines()
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        return False
    return isinstance(data, dict) and {"name", "images", "mean", "per_image"} <= set(data)


@STEPS.register("report")
class Report(Step[ReportStep]):
    """Writes OUTPUT_DIR/``path`` and, with ``markdown``, the same name with ``.md``; both must stay
    inside OUTPUT_DIR (symbolic links included), and an existing file there is replaced only if it is an
    earlier report, so a report never overwrites a file it was not written for."""

    def setup(self, run: RunContext) -> None:
        from robustsam_prior.core.fileio import confined_path

        try:
            path = confined_path(run.output_dir, self.options.path)
        except ValueError as e:
            raise ValueError(f"{self.key}.path: {e}") from None
        targets = [path] + ([path.with_suffix(".md")] if self.options.markdown else [])
        for target in targets:
            if target.is_dir() or (target.exists() and not _is_report(target)):
                raise ValueError(
                    f"{self.key}.path: {target} exists and is not a report; it is not overwritten (choose another "
                    f"path{', or markdown: false' if target.suffix == '.md' else ''}, or move the file away)"
                )

    def process(self, item: Item, run: RunContext) -> None:
        """Nothing per image: the report is written from ``run.results`` at the end."""

    def finish(self, run: RunContext) -> None:
        import math

        from robustsam_prior.core.fileio import atomic_write, jsonable, write_json

        rows = {str(it["rel"]): it["metrics"] for it in run.results}
        names = sorted({k for m in rows.values() for k in m})
        means = {}
        for k in names:
            vals = [m[k] for m in rows.values() if k in m and math.isfinite(m[k])]
            if vals:
                means[k] = math.fsum(vals) / len(vals)
        report = {"name": run.config.name, "images": len(rows), "failed": run.failed, "mean": means,
                  "per_image": rows}
        if "conventions" in run.summary:
            report["conventions"] = run.summary["conventions"]
        path = run.output_dir / self.options.path
        write_json(path, jsonable(report))  # a PSNR of identical images is inf
        run.summary["report"] = str(path)
        run.summary["mean"] = means
        if self.options.markdown:
            lines = [f"# {run.config.name}", "", f"{len(rows)} images", ""]
            if "conventions" in run.summary:
                lines += [run.summary["conventions"], ""]
            lines += ["| metric | mean |", "| --- | --- |"]
            lines += [f"| {k} | {v:.4f} |" for k, v in means.items()]
            with atomic_write(path.with_suffix(".md"), "w") as f:
                f.write("\n".join(lines) + "\n")
