"""RobustSAM's two training stages and the recipe runner (``kind: robustsam``, by ``train.stage``).

Stage 2 (``train.stage: robust``, :class:`AntiDegradationTrainer`) is the paper's training of the new
modules on a frozen SAM, described below; stage 1 (``sam``, :class:`SamStageTrainer`) trains that SAM from
scratch on clean images where no SAM weights exist.

The anti-degradation training loop for RobustSAM's new modules.

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
tokens). The image and prompt encoders are always frozen.

NaN safety: the official code zeroes NaN gradients every step; their cause is ``torch.angle``'s
gradient at ``|Z| = 0`` in the Fourier block, which :class:`~robustsam_prior.modeling.components.FGMBlock`
avoids. A non-finite loss or gradient here is an error naming the parameters, never silently zeroed.

BatchNorm: ``bn_mode="batch"`` while training (per-image statistics, as the official training,
which decodes one image at a time in train mode); running statistics are updated for later
``bn_mode="running"`` inference. :meth:`AntiDegradationTrainer.train` puts the model back in eval
mode with the BN mode it had before.

Several processes: under ``torchrun`` the same loop trains with DDP, each rank on its share of every
global batch (:mod:`.distributed` says how that equals the single-process run); rank 0 alone writes files.
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
from .engine import STATE_FILE, TrainingRun, apply_torch_settings, kept_torch_settings, output_lock
from .losses import LossWeights, anti_degradation_losses, sam_stage_losses
from .state import FINGERPRINT_KEYS, FORMAT, STATE_FORMAT, load_training_state  # noqa: F401 (this module's interface)

logger = logging.getLogger(__name__)

PROMPTS = ("points", "box", "both", "mixed")
# what ``prompt: mixed`` gives on successive steps (a function of the step count, so a resumed run draws the same)
MIXED_PROMPTS = ("points", "box")
# SAM's own decoder parts that the official code trains too
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
    """Trains a :class:`~robustsam_prior.modeling.robustsam.RobustSam` in place (see module docstring).

    ``rank``/``world_size`` > 1 (a started process group, :func:`.engine.setup_distributed`): the model
    trains in DDP and :meth:`step` takes the global batch, of which this rank trains on its share.
    """

    progress_name = "robustsam anti-degradation"

    def __init__(
        self,
        model: torch.nn.Module,
        config: AntiDegradationConfig = AntiDegradationConfig(),
        *,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.model = model
        self.config = config
        self.rank, self.world = rank, world_size
        self.trainable = self.select_trainable()
        params = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
        self.transform = ResizeLongestSide(model.image_size)
        self.step_count = 0
        self.inference_bn_mode = model.bn_mode  # restored by train() when it finishes
        self._ddp = None
        if world_size > 1:
            from .distributed import wrap_ddp

            self._ddp = wrap_ddp(model, self.compute_losses, find_unused=config.train_sam_decoder)

    def select_trainable(self) -> list[str]:
        """Set ``requires_grad`` on the model (:func:`set_trainable`); the names of the trainable parameters."""
        return set_trainable(self.model, train_sam_decoder=self.config.train_sam_decoder)

    @property
    def device(self) -> torch.device:
        return self.model.device

    def step_prompt(self, cycle: tuple[str, ...] = MIXED_PROMPTS) -> str:
        """The prompt kind of the current step: ``config.prompt``, or for ``"mixed"`` the entry of ``cycle``
        at the step count."""
        if self.config.prompt != "mixed":
            return self.config.prompt
        return cycle[self.step_count % len(cycle)]

    def prompt_tensors(self, batch: list[TrainingPair], sizes: list[tuple[int, int]], kind: str) -> dict[str, torch.Tensor]:
        """``decode`` keyword arguments for prompt ``kind`` (``points``: every point of each pair; ``point``:
        its first point; ``box``; ``both``: points and box), mapped from each image's ``sizes`` (h, w) to the
        model's input frame."""
        dev = self.device
        prompts: dict[str, torch.Tensor] = {}
        if kind in ("points", "point", "both"):
            k = 1 if kind == "point" else None
            prompts["point_coords"] = torch.cat([
                self.transform.apply_coords_torch(p.points[None, :k].to(dev), sizes[i]) for i, p in enumerate(batch)])
            prompts["point_labels"] = torch.stack([p.point_labels[:k] for p in batch]).to(dev)
        if kind in ("box", "both"):
            prompts["boxes"] = torch.cat([
                self.transform.apply_boxes_torch(p.box[None].to(dev), sizes[i]) for i, p in enumerate(batch)])
        if not prompts:
            raise ValueError(f"unknown prompt kind {kind!r}")
        return prompts

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
        prompts = self.prompt_tensors(batch, sizes, self.step_prompt())

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
        """One optimisation step (BatchNorm in ``config.bn_mode``) on the global ``batch``; returns the loss
        terms as floats (under DDP, averaged over the ranks)."""
        import math

        from . import distributed

        self.model.train()
        if self.model.bn_mode != self.config.bn_mode:
            self.model.set_bn_mode(self.config.bn_mode)
        if self._ddp is None:
            losses = self.compute_losses(batch)
            terms = {k: float(v.detach()) for k, v in losses.items()}
        else:
            losses = self._ddp(distributed.local_share(batch, self.rank, self.world))
            terms = distributed.average_terms(losses, self.world)  # the same on every rank: all stop together
        if not math.isfinite(terms["total"]):
            raise FloatingPointError(f"non-finite loss at step {self.step_count}: {terms}")
        self.optimizer.zero_grad(set_to_none=True)
        losses["total"].backward()
        bad = [n for n, p in self.model.named_parameters() if p.grad is not None and not torch.isfinite(p.grad).all()]
        if bad:
            raise FloatingPointError(f"non-finite gradients at step {self.step_count} in {bad[:5]}")
        torch.nn.utils.clip_grad_norm_([p for p in self.model.parameters() if p.requires_grad], self.config.grad_clip)
        self.optimizer.step()
        if self._ddp is not None:
            with torch.no_grad():
                distributed.average_running_stats(self.model, self.world)
        self.step_count += 1
        return terms

    def train(
        self,
        batches: Iterable[list[TrainingPair]],
        *,
        steps: int | None = None,
        callback: Callable[[int, dict[str, float]], None] | None = None,
        progress: bool = True,
    ) -> list[dict[str, float]]:
        """Run ``steps`` (default ``config.steps``) steps over ``batches``; returns the loss history."""
        from robustsam_prior.core.progress import progress_bar

        total = self.config.steps if steps is None else steps
        history = []
        with progress_bar(total=self.step_count + total, initial=self.step_count,
                          desc=self.progress_name, disable=not progress, unit="step") as bar:
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

    def mutable_state(self) -> dict[str, torch.Tensor]:
        """What training changes: the trainable parameters and every buffer (BatchNorm statistics).
        The frozen rest comes back from the starting checkpoint when a run is rebuilt."""
        state = self.model.state_dict()
        buffers = {name for name, _ in self.model.named_buffers()}
        return {k: v for k, v in state.items() if k in buffers or k in self.trainable}

    def load_mutable_state(self, saved: dict[str, torch.Tensor], *, source: str = "training state") -> None:
        """Put :meth:`mutable_state` back; a set of trained parameters other than this trainer's (another
        ``train_sam_decoder``, another architecture) raises a ``CheckpointError`` naming the keys."""
        from ..core.checkpoint import CheckpointError, load_strict

        mine = self.mutable_state()
        if set(saved) != set(mine):
            missing, unexpected = sorted(set(mine) - set(saved)), sorted(set(saved) - set(mine))
            raise CheckpointError(
                f"{source}: trains other parameters than this config (train.train_sam_decoder or the model "
                f"changed?): missing {missing[:5]}{' ...' if len(missing) > 5 else ''}, unexpected "
                f"{unexpected[:5]}{' ...' if len(unexpected) > 5 else ''}"
            )
        full = self.model.state_dict()
        full.update(saved)
        load_strict(self.model, full, source=source)

    def save(self, path: str | os.PathLike, *, metadata: dict[str, Any] | None = None) -> str:
        """Save the model (this project's RobustSAM format) with the training settings; sha256."""
        from ..loading import save_robustsam

        meta = {"training": {"config": self.config.to_dict(), "steps_done": self.step_count}}
        meta.update(metadata or {})
        return save_robustsam(self.model, path, metadata=meta)


# what ``prompt: mixed`` gives on successive steps of stage 1
SAM_MIXED_PROMPTS = ("point", "box", "points")


class SamStageTrainer(AntiDegradationTrainer):
    """Stage 1 of the recipe, the SAM stage: SAM's parts of a RobustSAM trained on clean images.

    RobustSAM starts from a trained SAM and freezes it; where no SAM weights exist (a new architecture such
    as ``robustsam-tiny``) this trains them from scratch: the image encoder, the prompt encoder and SAM's mask
    decoder, on the ``path="sam"`` outputs. The six RobustSAM modules stay frozen at their initialisation
    (stage 2, :class:`AntiDegradationTrainer`, trains them on top of the frozen result). Only the clean image
    of each pair is used. Losses: :func:`~robustsam_prior.training.losses.sam_stage_losses` per prompt,
    averaged (terms ``focal``, ``dice``, ``iou``, ``total``). ``prompt: mixed`` cycles over one point
    (three masks, the best one trained, as SAM does for an ambiguous prompt), a box and all the pair's points
    (one mask) from step to step. Same loop, checkpoints and resume as :class:`AntiDegradationTrainer`.
    """

    progress_name = "robustsam stage 1 (sam)"

    def select_trainable(self) -> list[str]:
        """Everything but the RobustSAM modules trains."""
        names = []
        for name, p in self.model.named_parameters():
            p.requires_grad_(not is_robust_key(name))
            if p.requires_grad:
                names.append(name)
        return names

    def compute_losses(self, batch: list[TrainingPair]) -> dict[str, torch.Tensor]:
        """Each image is encoded once and decoded with one prompt per instance (its ``mask`` and ``others``);
        the terms are the mean over all prompts of the batch."""
        dev = self.device
        sizes = [tuple(p.clear.shape[-2:]) for p in batch]
        parts = ([self._inputs(torch.stack([p.clear for p in batch]).to(dev))] if len(set(sizes)) == 1
                 else [self._inputs(p.clear[None].to(dev)) for p in batch])
        x = torch.cat([part[0] for part in parts])
        input_sizes = [part[1] for part in parts] * (len(batch) if len(parts) == 1 else 1)
        emb, early = self.model.encode(x)
        kind = self.step_prompt(SAM_MIXED_PROMPTS)
        per_prompt = []
        for i, p in enumerate(batch):
            items = [(p.mask, p.points, p.box), *p.others]
            prompts = [TrainingPair(p.clear, p.clear, m, pts, p.point_labels, box, p.degradation) for m, pts, box in items]
            out = self.model.decode(emb[i:i + 1], early[i:i + 1], path="sam",
                                    **self.prompt_tensors(prompts, [sizes[i]] * len(prompts), kind))
            logits, iou = out.select(multimask_output=kind == "point")
            masks = self.model.postprocess_masks(logits, input_sizes[i], sizes[i])
            per_prompt += [sam_stage_losses(masks[j], iou[j], m.to(dev), self.config.weights)
                           for j, (m, _, _) in enumerate(items)]
        return {k: torch.stack([t[k] for t in per_prompt]).mean() for k in per_prompt[0]}


STAGES = {"sam": SamStageTrainer, "robust": AntiDegradationTrainer}


def train_from_options(
    options: Any,
    *,
    resolved_config: dict[str, Any] | None = None,
    progress: bool = True,
    resume: bool = False,
) -> dict[str, Any]:
    """Run a validated ``kind: robustsam`` recipe (see :func:`_train_from_options`) holding the lock of its
    ``output_dir`` (``robustsam_prior.core.fileio.folder_lock``; rank 0 alone under torchrun): a second run into
    the same folder fails at once with ``FolderLockedError`` naming the process that holds it."""
    with kept_torch_settings(), output_lock(options.output_dir):
        return _train_from_options(options, resolved_config=resolved_config, progress=progress, resume=resume)


def _train_from_options(
    options: Any,
    *,
    resolved_config: dict[str, Any] | None = None,
    progress: bool = True,
    resume: bool = False,
) -> dict[str, Any]:
    """Run a validated ``kind: robustsam`` recipe
    (:class:`robustsam_prior.training.options.RobustSamTrainConfig`); ``resume`` continues the run in
    ``output_dir`` from ``state/latest.pt``.

    Files under ``options.output_dir``, each written as soon as it is known (a killed run loses at most
    the steps since the last checkpoint)::

        models/step_0000500.safetensors  every train.checkpoint_every steps (the last keep_checkpoints kept)
        models/final.safetensors         at the end
        state/latest.pt                  with every checkpoint and at the end: trained parameters and
                                         buffers, Adam state, step, torch, Python and numpy (PairSampler) RNG states
        log.jsonl                        {"step", <loss terms>} appended and flushed every train.log_every
                                         steps (first and last always); cut back to the resumed step
        summary.json                     at the end

    Weight files are this project's RobustSAM checkpoints (``build_robustsam(None, path)`` loads them;
    metadata: run name, step, initial checkpoint, seed, training settings, ``recipe`` =
    ``resolved_config``). All are written atomically.

    Exactness: the model is rebuilt from the recipe (seeded torch, the same starting checkpoint,
    checked by sha256), then the saved trained parameters, buffers, optimizer and RNG states are put
    back; every random draw of the data comes from PairSampler's numpy generator, whose state is
    saved between batches. A resumed run therefore ends with the same weights, bit for bit, as an
    uninterrupted one on the same machine and thread count. A resolved config that differs from the
    saved run in :data:`FINGERPRINT_KEYS` is logged as a warning. Resuming a finished run with a larger
    ``train.steps`` continues it.

    Under torchrun (``WORLD_SIZE`` > 1) it trains with DDP (:mod:`.distributed`; the engine starts the
    process group: gloo on the CPU, NCCL on ``cuda:$LOCAL_RANK``); ``train.batch_size`` is the global batch
    and must be a multiple of the number of processes. Rank 0 alone writes files; the state it saves
    resumes runs with any number of processes. The files, the resume and the processes are the training
    engine's (:mod:`.engine`); torch's thread count is restored afterwards. Returns the summary (steps,
    resumed_from, wall time, first/last losses, weights and their sha256, log, output_dir, device,
    world_size).
    """
    import functools
    import time
    from pathlib import Path

    from ..core.checkpoint import CheckpointError
    from ..degradations import ROBUST_SEG_SET
    from ..loading import build_robustsam
    from .data import PairSampler, folder_or_shapes_dataset
    from .losses import LossWeights

    o = options
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if o.train.batch_size % world:
        raise ValueError(f"train.batch_size: {o.train.batch_size} pairs do not split evenly over {world} "
                         f"processes; use a multiple of {world}")
    saved = load_training_state(Path(o.output_dir) / STATE_FILE) if resume else None
    config = AntiDegradationConfig(
        steps=o.train.steps,
        lr=o.optim.lr,
        weight_decay=o.optim.weight_decay,
        grad_clip=o.optim.grad_clip,
        prompt=o.data.prompt,
        train_sam_decoder=o.train.train_sam_decoder,
        detach_targets=o.train.detach_targets,
        bn_mode=o.train.bn_mode,
        weights=LossWeights(focal=o.losses.focal, dice=o.losses.dice, token=o.losses.token, feature=o.losses.feature,
                            iou=o.losses.iou),
    )
    apply_torch_settings(threads=o.train.threads)
    with TrainingRun(o.output_dir, FORMAT, device=o.train.device, config=resolved_config, weights_prefix="step",
                     keep_checkpoints=o.train.keep_checkpoints) as run:
        out = run.out
        torch.manual_seed(o.seed)
        model = build_robustsam(o.model.model_config(), o.model.checkpoint,
                                fresh_robust_modules=o.model.fresh_robust_modules, fast=o.train.fast_encoder,
                                device=run.device)
        if o.model.robust_tokens_from_sam:
            model.mask_decoder.init_robust_tokens_from_sam()
        dataset = folder_or_shapes_dataset(o.data, image_size=model.image_size, seed=o.seed)
        sampler = PairSampler(
            dataset,
            batch_size=o.train.batch_size,
            seed=o.seed,
            degradations=tuple(ROBUST_SEG_SET if o.data.degradations is None else o.data.degradations),
            severities=tuple(o.data.severities),
            include_identity=o.data.identity,
            num_points=o.data.num_points,
            instance=o.data.instance,
            instances=o.data.instances,
        )
        trainer = STAGES[o.train.stage](model, config, rank=run.rank, world_size=run.world)
        if saved is not None:
            if saved["init_sha256"] != model.checkpoint_sha256:
                raise CheckpointError(
                    f"{run.state_path}: the run started from weights with sha256 {saved['init_sha256']}, but "
                    f"model.checkpoint is now {o.model.checkpoint} (sha256 {model.checkpoint_sha256}); the frozen "
                    "weights would differ"
                )
            trainer.step_count = run.unpack_state(
                saved, load_model=functools.partial(trainer.load_mutable_state, source=str(run.state_path)),
                optimizer=trainer.optimizer, generator=sampler.rng)
            logger.info("resumed %s at step %d of %d", out, trainer.step_count, o.train.steps)
        resumed_from = trainer.step_count if saved is not None else None
        # the steps after the checkpoint are redone: the log drops what the stopped run logged of them
        log = run.open_log(step_key="step", start=trainer.step_count)
        records = list(log.kept)
        meta = {"name": o.name, "initialised_from": model.checkpoint_path, "seed": o.seed,
                **({"recipe": resolved_config} if resolved_config else {})}
        steps = o.train.steps

        def state() -> dict[str, Any]:
            return run.pack_state(step=trainer.step_count, model=trainer.mutable_state(), optimizer=trainer.optimizer,
                                  extra={"init_sha256": model.checkpoint_sha256}, generator=sampler.rng)

        def after_step(step: int, terms: dict[str, float]) -> None:
            if not run.is_main:
                return
            if step == 1 or step == steps or step % o.train.log_every == 0:
                rec = {"step": step, **terms}
                log.write(rec)
                records.append(rec)
                logger.info("step %d: %s", step, ", ".join(f"{k} {v:.4g}" for k, v in terms.items()))
            every = o.train.checkpoint_every
            if every and step % every == 0:
                run.checkpoint(step, state=state, save_weights=lambda path: trainer.save(
                    path, metadata={**meta, "step": step}))

        start = time.perf_counter()
        history = trainer.train(sampler, steps=max(0, steps - trainer.step_count), progress=progress and run.is_main,
                                callback=after_step)
        final = out / "models" / "final.safetensors"
        sha = trainer.save(final, metadata={**meta, "step": trainer.step_count}) if run.is_main else None
        run.save_state(state)
        summary = {
            "steps": trainer.step_count,
            "resumed_from": resumed_from,
            "wall_time_s": time.perf_counter() - start,
            "first_losses": {k: v for k, v in records[0].items() if k != "step"} if records else {},
            "last_losses": history[-1] if history else ({k: v for k, v in records[-1].items() if k != "step"}
                                                        if records else {}),
            "weights": str(final),
            "sha256": sha,
            "output_dir": str(out),
            "log": str(log.path),
            "device": str(run.device),
            "world_size": run.world,
        }
        run.write_summary(summary)
    return summary
