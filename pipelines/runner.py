"""The pipeline runner: ``robustsam-restore run PIPELINE.yml [key=value ...]``.

A pipeline YAML (:class:`PipelineConfig`) names an ``input`` (an image or a folder), optionally a
``ground_truth`` folder (matched by relative path, then by file stem), an ``output_dir`` and a list
of ``steps`` (see :mod:`pipelines.steps`). Every image goes through the steps in order; a failing image
is logged and recorded, the others go on; a non-image file in ``input`` is skipped with a warning and
listed under ``skipped``. The resolved config is written to ``OUTPUT_DIR/pipeline.yml`` and a summary
to ``OUTPUT_DIR/summary.json``.

As with the folder commands, ``output_dir`` must not be ``input``, an ``output_dir`` (or a prior step's
``cache_dir``) inside ``input`` is left out of a ``recursive`` walk, and a run in which a saved image
would be written over an input is
refused before anything is written. Label maps are saved as ``segments/<target>/<name>.png``, <name>
being the input's path without its suffix, or with it when inputs in one folder share a stem.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from robustsam_prior.core.fields import option_field as _f

from .steps import STEPS, Item, Step, StepOptions

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    import torch

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PipelineConfig:
    """A pipeline: ``input`` -> steps -> ``output_dir``."""

    kind: Literal["pipeline"] = _f("pipeline", "file type marker")
    name: str = _f("pipeline", "pipeline name (in reports)")
    input: str | None = _f(None, "an image or a folder of images (required; e.g. input=photos/)", exists="any")
    ground_truth: str | None = _f(None, "folder of reference images matched by relative path or stem", exists="dir")
    gt_match: Literal["stem", "prefix"] = _f(
        "stem",
        "how an input finds its reference: same relative path or stem; 'prefix' also tries the stem up to "
        "the first '_' (RESIDE/SOTS: hazy 0001_0.8_0.2.jpg -> clear 0001.png)",
    )
    output_dir: str = _f("runs/pipeline", "where outputs, the resolved config and reports go")
    recursive: bool = _f(False, "also read sub-folders of input")
    device: str = _f("auto", "auto, cpu, cuda or cuda:N")
    steps: tuple[StepOptions, ...] = _f((), "the steps, in order", min_len=1)

    def check(self) -> None:
        if self.input is None:
            raise ValueError("input: missing (pass input=PATH on the command line)")
        if not self.steps:
            raise ValueError("steps: needs at least 1 item(s), got 0")
        names = [s.TAG for s in self.steps]
        if "restore" in names and "segment" in names and names.index("segment") < names.index("restore"):
            raise ValueError("steps: 'segment' must come after 'restore' to see the restored image")
        for i, s in enumerate(self.steps):
            if s.TAG in ("eval", "report", "segment") and s.TAG in names[:i]:
                raise ValueError(f"steps[{i}]: only one {s.TAG!r} step is allowed")
        if "report" in names and names.index("report") != len(names) - 1:
            raise ValueError("steps: 'report' must be the last step")


@dataclass
class Run:
    """State shared by the steps of one pipeline run."""

    config: PipelineConfig
    output_dir: Path
    input_root: Path
    device: str
    results: list[dict] = field(default_factory=list)
    failed: list[dict] = field(default_factory=list)
    shared: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    shared_stems: set[Path] = field(default_factory=set)  # inputs whose stem another input in its folder has

    def out_path(self, folder: str, rel: Path, suffix: str | None = None) -> Path:
        """``OUTPUT_DIR/folder/rel``; with ``suffix`` the input's suffix is replaced, or kept before it
        when another input in the same folder has the same stem (``x.png`` beside ``x.jpg``)."""
        return self.out_path_for(self.output_dir, folder, rel, suffix, self.shared_stems)

    @staticmethod
    def out_path_for(output_dir: Path, folder: str, rel: Path, suffix: str | None, shared: set[Path]) -> Path:
        p = output_dir / folder / rel
        if not suffix:
            return p
        return p.with_name(p.name + suffix) if rel in shared else p.with_suffix(suffix)

    def write(self, item: Item, folder: str, image: torch.Tensor) -> Path:
        """Write ``image (1,3,H,W)`` as ``OUTPUT_DIR/folder/REL`` keeping the input's bit depth and alpha."""
        from robustsam_prior.core.io import to_numpy, write_image

        return write_image(self.out_path(folder, item.rel), to_numpy(image), alpha=item.alpha,
                           bit_depth=item.bit_depth)

    def write_labels(self, item: Item, target: str, labels: np.ndarray) -> Path:
        import numpy as np
        from PIL import Image

        from robustsam_prior.core.fileio import atomic_path

        dst = self.out_path(f"segments/{target}", item.rel, ".png")
        with atomic_path(dst) as tmp:
            Image.fromarray(labels.astype(np.uint16)).save(tmp)
        return dst


def find_reference(gt_root: Path, rel: Path, match: str = "stem") -> Path | None:
    """The reference of input ``rel``: same relative path, else same folder and stem (any extension);
    with ``match="prefix"`` also the stem up to the first ``_`` (RESIDE/SOTS naming)."""
    from robustsam_prior.core.io import is_image_file

    direct = gt_root / rel
    if direct.is_file():
        return direct
    folder = (gt_root / rel).parent
    stems = [rel.stem] + ([rel.stem.split("_")[0]] if match == "prefix" and "_" in rel.stem else [])
    if folder.is_dir():
        candidates = sorted(p for p in folder.iterdir() if is_image_file(p))
        for stem in stems:
            for p in candidates:
                if p.stem == stem:
                    return p
    return None


def _saved_folders(config: PipelineConfig) -> list[tuple[str, str | None]]:
    """``(folder, suffix)`` of every image the steps of ``config`` save under ``output_dir``."""
    folders: list[tuple[str, str | None]] = []
    for s in config.steps:
        if s.TAG == "degrade" and s.save:
            folders.append(("degraded", None))
        elif s.TAG == "restore" and s.save:
            folders.append(("restored", None))
        elif s.TAG == "segment" and s.save:
            folders += [(f"segments/{t}", ".png") for t in s.targets]
    return folders


def build_steps(config: PipelineConfig) -> list[Step]:
    return [STEPS.get(opts.TAG)(opts, i) for i, opts in enumerate(config.steps)]


def run_pipeline(config: PipelineConfig, *, resolved_source: str | None = None, overrides=()) -> dict[str, Any]:
    """Run ``config`` over its inputs; returns the summary (also ``OUTPUT_DIR/summary.json``)."""
    from robustsam_prior.core.devices import resolve_device
    from robustsam_prior.core.fileio import clean_stale_temp_files, jsonable, write_json
    from robustsam_prior.core.io import is_image_file, read_image, to_tensor
    from robustsam_prior.core.progress import progress_bar
    from robustsam_prior.inputs import (
        check_output_location,
        collect_inputs,
        refuse_overwriting_inputs,
        shared_stems,
    )

    from .config import save_resolved

    device = str(resolve_device(config.device))  # before anything is written: a missing GPU is an error now
    out = Path(config.output_dir)
    input_root = Path(config.input)
    exclude = check_output_location(input_root, out, recursive=config.recursive)
    if config.recursive and input_root.is_dir():  # nor a prior cache kept inside the input
        caches = [Path(s.cache_dir) for s in config.steps if s.TAG == "prior" and s.cache_dir]
        exclude += tuple(c for c in caches if input_root.resolve() in c.resolve().parents)
    items, skipped = [], []
    for src, rel in collect_inputs(input_root, recursive=config.recursive, exclude=exclude):
        if is_image_file(src):
            items.append((src, rel))
        else:
            logger.warning("skipping %s: not an image file (suffix %r)", rel, src.suffix)
            skipped.append({"rel": rel.as_posix(), "reason": "not an image file"})
    if not items:
        raise ValueError(f"input: no image files in {input_root}")
    stems = shared_stems([rel for _, rel in items])
    saved = _saved_folders(config)
    refuse_overwriting_inputs(
        (src, Run.out_path_for(out, folder, rel, suffix, stems)) for src, rel in items for folder, suffix in saved
    )
    out.mkdir(parents=True, exist_ok=True)
    clean_stale_temp_files(out)
    save_resolved(config, out / "pipeline.yml", source=resolved_source, overrides=overrides)
    run = Run(config=config, output_dir=out, input_root=input_root, device=device, shared_stems=stems)
    steps = build_steps(config)
    for s in steps:
        s.setup(run)
    gt_root = Path(config.ground_truth) if config.ground_truth else None
    t0 = time.perf_counter()
    for src, rel in progress_bar(items, desc=config.name, unit="img", disable=len(items) < 2):
        try:
            data = read_image(src)
            image = to_tensor(data.pixels)
            item = Item(rel=rel, source=src, input=image, image=image, alpha=data.alpha, bit_depth=data.bit_depth)
            if gt_root is not None:
                ref = find_reference(gt_root, rel, config.gt_match)
                if ref is None:
                    raise ValueError(f"ground_truth: no reference for {rel} in {gt_root}")
                item.gt = to_tensor(read_image(ref).pixels)
                if item.gt.shape != image.shape:
                    raise ValueError(
                        f"ground_truth: {ref} is {item.gt.shape[-1]}x{item.gt.shape[-2]}, "
                        f"input {rel} is {image.shape[-1]}x{image.shape[-2]}"
                    )
            for s in steps:
                s.process(item, run)
            run.results.append({"rel": rel.as_posix(), "metrics": dict(item.metrics)})
        except Exception as e:  # one bad file must not stop a folder run
            logger.error("%s: %s", src, e)
            run.failed.append({"rel": rel.as_posix(), "error": str(e)})
    for s in steps:
        s.finish(run)
    run.summary.update({
        "name": config.name,
        "processed": len(run.results),
        "failed": run.failed,
        "skipped": skipped,
        "seconds": time.perf_counter() - t0,
        "output_dir": str(out),
    })
    write_json(out / "summary.json", jsonable(run.summary))
    return run.summary
