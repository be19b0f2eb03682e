"""The anti-degradation training loop for RobustSAM's new modules.

Per step (paper Fig. 2 / official ``engine.py``), for a batch of clear/degraded pairs sharing the
same prompts:

1. both images are encoded by the frozen image encoder (no gradient);
2. the clear image goes through the vanilla SAM path (``path="sam"``): SAM's mask tokens give the
   target tokens T_OC, and the up/down projections give the clear mask feature;
3. the degraded image goes through the robust path: robust tokens (before AOTG, as the code) and the
   fused robust mask feature, plus the single-mask logits for the segmentation loss;
4. loss = :func:`~robustsam_prior.training.losses.anti_degradation_losses`, backward, gradient-norm
   clipping, Adam step.

What trains: the six RobustSAM modules. SAM stays frozen as the paper says, unless
``train_sam_decoder=True`` (the official code also updates SAM's decoder transformer, upscaling and
tokens, spec section 3.2). The image and prompt encoders are always frozen.

NaN safety: the official code zeroes NaN gradients every step; their cause is ``torch.angle``'s
gradient at ``|Z| = 0`` in the Fourier block, which :class:`~robustsam_prior.modeling.components.FGMBlock`
avoids. A non-finite loss or gradient here is an error naming the parameters, never silently zeroed.

BatchNorm: ``bn_mode="batch"`` while training (per-image statistics, as the official training,
which decodes one image at a time in train mode); running statistics are updated for later
``bn_mode="running"`` inference. :meth:`AntiDegradationTrainer.train` puts the model back in eval
mode with the BN mode it had before.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from segment_anything.utils.transforms import ResizeLongestSide

from ..loading import is_robust_key
from .data import TrainingPair
from .losses import LossWeights, anti_degradation_losses

logger = logging.getLogger(__name__)

PROMPTS = ("points", "box", "both")
# SAM's own decoder parts that the official code trains too (spec section 3.2)
SAM_DECODER_PREFIXES = ("mask_decoder.",)


@dataclass(frozen=True)
class AntiDegradationConfig:
    """Training settings. Defaults follow the official code (Adam lr 1e-4, weight decay 1e-5,
    clip 1.0, 3 positive points, loss weights 20/1/2/100), except that SAM stays frozen
    (``train_sam_decoder=False``) as the paper says."""

    steps: int = 1000
    lr: float = 1e-4
    weight_decay: float = 1e-5
    grad_clip: float = 1.0
    prompt: str = "points"
    train_sam_decoder: bool = False
    detach_targets: bool = False
    bn_mode: str = "batch"
    weights: LossWeights = field(default_factory=LossWeights)

    def __post_init__(self) -> None:
        if self.prompt not in PROMPTS:
            raise ValueError(f"prompt must be one of {PROMPTS}, got {self.prompt!r}")
        if self.steps < 0 or self.lr <= 0 or self.grad_clip <= 0 or self.weight_decay < 0:
            raise ValueError("steps >= 0, lr > 0, grad_clip > 0 and weight_decay >= 0 are required")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def set_trainable(model: torch.nn.Module, *, train_sam_decoder: bool = False) -> list[str]:
    """Set ``requires_grad``: the robust modules (and, if asked, SAM's mask decoder) train, the rest
    is frozen. Returns the names of the trainable parameters."""
    names = []
    for name, p in model.named_parameters():
        train = is_robust_key(name) or (train_sam_decoder and name.startswith(SAM_DECODER_PREFIXES))
        p.requires_grad_(train)
        if train:
            names.append(name)
    return names


class AntiDegradationTrainer:
    """Trains a :class:`~robustsam_prior.modeling.robustsam.RobustSam` in place (see module docstring)."""

    def __init__(self, model: torch.nn.Module, config: AntiDegradationConfig = AntiDegradationConfig()) -> None:
        self.model = model
        self.config = config
        self.trainable = set_trainable(model, train_sam_decoder=config.train_sam_decoder)
        params = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
        self.transform = ResizeLongestSide(model.image_size)
        self.step_count = 0
        self.inference_bn_mode = model.bn_mode  # restored by train() when it finishes

    @property
    def device(self) -> torch.device:
        return self.model.device

    def _inputs(self, images: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """(B,3,H,W) [0,1] -> preprocessed (B,3,S,S) and the resized size (h', w'): longest side S,
        aspect ratio kept, the rounding of ``ResizeLongestSide`` (which maps the prompts)."""
        import torch.nn.functional as F

        # not ResizeLongestSide.apply_image_torch: segment_anything 1.0 computes its target size from
        # image.shape[0], image.shape[1] (batch and channels, not height and width)
        h, w = images.shape[-2:]
        target = ResizeLongestSide.get_preprocess_shape(h, w, self.model.image_size)
        resized = images * 255.0
        if target != (h, w):
            resized = F.interpolate(resized, target, mode="bilinear", align_corners=False, antialias=True)
        return self.model.preprocess(resized), tuple(resized.shape[-2:])

    def compute_losses(self, batch: list[TrainingPair]) -> dict[str, torch.Tensor]:
        """Forward both branches for ``batch`` and return the loss terms.

        Images may differ in size between pairs (a folder of photos with several aspect ratios): each
        is resized and padded to the encoder's square input on its own, prompts are mapped with its own
        size, and the terms are then the mean over pairs of each pair's terms. For a batch of one size
        that is the same as the batched formulas (every pair has as many pixels, tokens and features).
        """
        dev = self.device
        sizes = [tuple(p.clear.shape[-2:]) for p in batch]
        bad = [i for i, p in enumerate(batch) if tuple(p.degraded.shape[-2:]) != sizes[i]]
        if bad:
            raise ValueError(f"pair {bad[0]} of the batch: clear and degraded images differ in size")
        n = len(batch)
        if len(set(sizes)) == 1:
            images = torch.stack([p.clear for p in batch] + [p.degraded for p in batch]).to(dev)
            x, input_size = self._inputs(images)
            input_sizes = [input_size] * n
        else:
            parts = [self._inputs(img[None].to(dev)) for img in [p.clear for p in batch] + [p.degraded for p in batch]]
            x = torch.cat([part[0] for part in parts])
            input_sizes = [part[1] for part in parts[:n]]
        with torch.no_grad():
            emb, early = self.model.encode(x)
        prompts: dict[str, torch.Tensor] = {}
        if self.config.prompt in ("points", "both"):
            prompts["point_coords"] = torch.cat([
                self.transform.apply_coords_torch(p.points[None].to(dev), sizes[i]) for i, p in enumerate(batch)])
            prompts["point_labels"] = torch.stack([p.point_labels for p in batch]).to(dev)
        if self.config.prompt in ("box", "both"):
            prompts["boxes"] = torch.cat([
                self.transform.apply_boxes_torch(p.box[None].to(dev), sizes[i]) for i, p in enumerate(batch)])

        with torch.set_grad_enabled(not self.config.detach_targets):
            clear = self.model.decode(emb[:n], early[:n], path="sam", **prompts)
        degraded = self.model.decode(emb[n:], early[n:], path="robust", **prompts)
        if len(set(sizes)) == 1:
            seg_logits = self.model.postprocess_masks(degraded.logits[:, :1], input_sizes[0], sizes[0])
            gt = torch.stack([p.mask for p in batch]).to(dev)[:, None]
            return anti_degradation_losses(
                seg_logits, gt, degraded.tokens, clear.tokens, degraded.robust_embeddings, clear.robust_embeddings,
                self.config.weights,
            )
        per_pair = [
            anti_degradation_losses(
                self.model.postprocess_masks(degraded.logits[i:i + 1, :1], input_sizes[i], sizes[i]),
                p.mask.to(dev)[None, None], degraded.tokens[i:i + 1], clear.tokens[i:i + 1],
                degraded.robust_embeddings[i:i + 1], clear.robust_embeddings[i:i + 1], self.config.weights,
            )
            for i, p in enumerate(batch)
        ]
        return {k: torch.stack([t[k] for t in per_pair]).mean() for k in per_pair[0]}

    def step(self, batch: list[TrainingPair]) -> dict[str, float]:
        """One optimisation step (BatchNorm in ``config.bn_mode``); returns the loss terms as floats."""
        self.model.train()
        if self.model.bn_mode != self.config.bn_mode:
            self.model.set_bn_mode(self.config.bn_mode)
        losses = self.compute_losses(batch)
        if not torch.isfinite(losses["total"]):
            raise FloatingPointError(f"non-finite loss at step {self.step_count}: { {k: float(v.detach()) for k, v in losses.items()} }")
        self.optimizer.zero_grad(set_to_none=True)
        losses["total"].backward()
        bad = [n for n, p in self.model.named_parameters() if p.grad is not None and not torch.isfinite(p.grad).all()]
        if bad:
            raise FloatingPointError(f"non-finite gradients at step {self.step_count} in {bad[:5]}")
        torch.nn.utils.clip_grad_norm_([p for p in self.model.parameters() if p.requires_grad], self.config.grad_clip)
        self.optimizer.step()
        self.step_count += 1
        return {k: float(v.detach()) for k, v in losses.items()}

    def train(
        self,
        batches: Iterable[list[TrainingPair]],
        *,
        steps: int | None = None,
        callback: Callable[[int, dict[str, float]], None] | None = None,
        progress: bool = True,
    ) -> list[dict[str, float]]:
        """Run ``steps`` (default ``config.steps``) steps over ``batches``; returns the loss history."""
        from tqdm import tqdm

        total = self.config.steps if steps is None else steps
        history = []
        with tqdm(total=total, desc="robustsam anti-degradation", disable=not progress, unit="step") as bar:
            for _, batch in zip(range(total), batches):
                terms = self.step(batch)
                history.append(terms)
                bar.update(1)
                bar.set_postfix(loss=f"{terms['total']:.4f}")
                if callback is not None:
                    callback(self.step_count, terms)
        if len(history) < total:
            logger.warning("the batches ran out after %d of %d steps", len(history), total)
        self.model.set_bn_mode(self.inference_bn_mode)
        self.model.eval()
        return history

    def save(self, path: str | os.PathLike, *, metadata: dict[str, Any] | None = None) -> str:
        """Save the model (this project's RobustSAM format) with the training settings; sha256."""
        from ..loading import save_robustsam

        meta = {"training": {"config": self.config.to_dict(), "steps_done": self.step_count}}
        meta.update(metadata or {})
        return save_robustsam(self.model, path, metadata=meta)


def train_anti_degradation(
    *,
    output: str | os.PathLike,
    model_config: Any = None,
    checkpoint: str | os.PathLike | None = None,
    fresh_robust_modules: bool = False,
    config: AntiDegradationConfig = AntiDegradationConfig(),
    dataset: Any = None,
    scenes: int = 64,
    batch_size: int = 2,
    degradations: tuple[str, ...] | None = None,
    severities: tuple[int, ...] = (1, 2, 3, 4, 5),
    include_identity: bool = True,
    num_points: int = 3,
    instance: str = "random",
    seed: int = 0,
    device: str = "cpu",
    progress: bool = True,
    callback: Callable[[int, dict[str, float]], None] | None = None,
    metadata: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One call for a whole run (what a ``kind: robustsam`` training recipe maps to).

    Builds the model (``model_config`` and/or ``checkpoint``; a Meta SAM checkpoint needs
    ``fresh_robust_modules=True``), draws pairs from ``dataset`` (default: the built-in procedural
    shapes at the model's input size, ``scenes`` of them) degraded with ``degradations`` (default: the paper's
    15 Robust-Seg degradations) plus the identity, trains ``config.steps`` steps and writes
    ``output`` (this project's RobustSAM safetensors, ``metadata`` added to its header).
    ``callback(step, losses)`` is called after every step. Returns a JSON-able summary.
    """
    import time

    from ..data.shapes import ShapesDataset
    from ..degradations import ROBUST_SEG_SET
    from ..loading import build_robustsam
    from .data import PairSampler

    torch.manual_seed(seed)
    model = build_robustsam(model_config, checkpoint, fresh_robust_modules=fresh_robust_modules, device=device)
    if dataset is None:
        dataset = ShapesDataset(length=scenes, height=model.image_size, width=model.image_size, seed=seed)
    sampler = PairSampler(
        dataset,
        batch_size=batch_size,
        seed=seed,
        degradations=tuple(ROBUST_SEG_SET if degradations is None else degradations),
        severities=severities,
        include_identity=include_identity,
        num_points=num_points,
        instance=instance,
    )
    trainer = AntiDegradationTrainer(model, config)
    start = time.perf_counter()
    history = trainer.train(sampler, progress=progress, callback=callback)
    sha = trainer.save(output, metadata={"initialised_from": model.checkpoint_path, "seed": seed, **(metadata or {})})
    return {
        "steps": trainer.step_count,
        "wall_time_s": time.perf_counter() - start,
        "first_losses": history[0] if history else {},
        "last_losses": history[-1] if history else {},
        "weights": str(output),
        "sha256": sha,
    }


def train_from_options(
    options: Any,
    *,
    resolved_config: dict[str, Any] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Run a validated ``kind: robustsam`` recipe
    (:class:`robustsam_prior.training.options.RobustSamTrainConfig`).

    Writes under ``options.output_dir``: ``models/final.safetensors`` (this project's RobustSAM
    checkpoint; metadata: run name, initial checkpoint, seed, training settings, ``recipe`` = ``resolved_config``),
    ``log.jsonl`` (one line ``{"step", <loss terms>}`` every ``train.log_every`` steps, first and last
    always) and ``summary.json``; returns the summary (see :func:`train_anti_degradation`, plus
    ``log`` and ``output_dir``). Single process; torch's thread count is restored afterwards.
    """
    import json
    from pathlib import Path

    from ..fileio import atomic_write, write_json
    from .losses import LossWeights

    o = options
    out = Path(o.output_dir)
    device = o.train.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    elif device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"train.device: {device!r} was asked for but CUDA is not available here")
    (out / "models").mkdir(parents=True, exist_ok=True)
    config = AntiDegradationConfig(
        steps=o.train.steps,
        lr=o.optim.lr,
        weight_decay=o.optim.weight_decay,
        grad_clip=o.optim.grad_clip,
        prompt=o.data.prompt,
        train_sam_decoder=o.train.train_sam_decoder,
        detach_targets=o.train.detach_targets,
        bn_mode=o.train.bn_mode,
        weights=LossWeights(focal=o.losses.focal, dice=o.losses.dice, token=o.losses.token, feature=o.losses.feature),
    )
    dataset = None
    if o.data.image_size is not None:
        from ..data.shapes import ShapesDataset

        dataset = ShapesDataset(length=o.data.scenes, height=o.data.image_size, width=o.data.image_size, seed=o.seed)

    lines: list[str] = []
    steps = o.train.steps

    def log(step: int, terms: dict[str, float]) -> None:
        if step == 1 or step == steps or step % o.train.log_every == 0:
            lines.append(json.dumps({"step": step, **terms}))
            logger.info("step %d: %s", step, ", ".join(f"{k} {v:.4g}" for k, v in terms.items()))

    threads = torch.get_num_threads()
    if o.train.threads is not None:
        torch.set_num_threads(o.train.threads)
    try:
        summary = train_anti_degradation(
            output=out / "models" / "final.safetensors",
            model_config=o.model.model_config(),
            checkpoint=o.model.checkpoint,
            fresh_robust_modules=o.model.fresh_robust_modules,
            config=config,
            dataset=dataset,
            scenes=o.data.scenes,
            batch_size=o.train.batch_size,
            degradations=o.data.degradations,
            severities=tuple(o.data.severities),
            include_identity=o.data.identity,
            num_points=o.data.num_points,
            instance=o.data.instance,
            seed=o.seed,
            device=device,
            progress=progress,
            callback=log,
            metadata={"name": o.name, **({"recipe": resolved_config} if resolved_config else {})},
        )
    finally:
        torch.set_num_threads(threads)
        if lines:
            with atomic_write(out / "log.jsonl", "w") as f:
                f.write("\n".join(lines) + "\n")
    summary.update({"output_dir": str(out), "log": str(out / "log.jsonl"), "device": device})
    write_json(out / "summary.json", summary)
    return summary
