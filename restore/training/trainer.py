"""The restoration training loop: AdamW + warm-up/cosine, grad clipping, EMA, validation, checkpoints,
exact resume and DDP.

:func:`train_restoration` runs one :class:`~restore.training.options.TrainConfig`. Files under
``output_dir``::

    models/iter_0000500.safetensors   periodic weights (the last ``keep_checkpoints`` are kept)
    models/final.safetensors          weights at the end (EMA weights when EMA is on)
    state/latest.pt                   training state for exact resume (torch.save, tensors/primitives only)
    log.jsonl                         one JSON record per log/validation step (cut back to the state's
                                      iteration on resume: the steps after it are logged again); keys
                                      in :data:`LOG_KEYS`
    summary.json                      iterations, wall time, final validation metrics
    tb/                               TensorBoard events (with ``train.tensorboard``)

Weight files are this project's restoration checkpoints (``save_checkpoint``: safetensors + JSON
metadata with ``format``, ``arch``, ``arch_kwargs``, ``task``, ``prior``, ``config``, ``metrics``),
loadable by ``restore.inference.Restorer``. Every file is written atomically (temp file + rename), so a
run killed at any moment leaves the previous good file in place.

The device, processes, state file, weight-file rotation and logs are the training engine's
(:mod:`robustsam_prior.training.engine`); this module holds the restoration network, its data, losses,
EMA and validation.

Exactness. Each step's data depend only on ``(seed, step)`` (see :mod:`restore.training.data`), the
global torch RNG is re-seeded from ``(seed, step)`` before each step (region dropout and similar), and
the state file holds model, EMA, optimizer, scheduler and RNG states. On CPU with
``deterministic: true`` a resumed run therefore reaches bit-identical parameters.

Distributed. Under ``torchrun`` (``WORLD_SIZE > 1``) the engine starts the process group (gloo on CPU,
NCCL on CUDA), the model is wrapped in DDP, each rank takes its contiguous ``B / W`` slice of every
global batch (same global order as one process), validation is sharded and summed across ranks, and
rank 0 alone logs and writes files.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from robustsam_prior.prior import PriorOutput
from robustsam_prior.training.engine import (  # noqa: F401 (save_state: part of this module's interface)
    TrainingRun,
    apply_torch_settings,
    kept_torch_settings,
    output_lock,
    parameter_digest,
    save_state,
)

from .data import DataError, MixedDataset, PairDataset, PositionBatches, collate, prior_of_whole_image
from .losses import PixelLoss
from .options import TrainConfig
from .schedule import Ema, lr_factor
from .state import FORMAT, load_state

logger = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "robustsam-restore/restoration"
MetricFn = Callable[[torch.Tensor, torch.Tensor], float]

# The keys of a training record in log.jsonl (and the TensorBoard tags). A record is written every
# ``train.log_every`` iterations and at the last one; "the interval" is the iterations since the previous
# record, and its means are over those iterations and every rank. Validation records hold ``iteration``
# and ``val/psnr``, ``val/input_psnr`` (and ``val_<name>/...`` for each extra validation set).
LOG_KEYS = {
    "iteration": "iterations done when the record was written",
    "loss_mean": "the loss that is minimised (the weighted sum of the terms), mean over the interval",
    "loss_mean/<term>": "one term of train.losses (l1, fft, ...; a second of one type is <type>_2), unweighted, "
                        "mean over the interval",
    "grad_norm_mean": "the gradients' norm before clipping, mean over the interval (with train.grad_clip only)",
    "lr": "the learning rate after the record's iteration",
    "it_per_s": "iterations per second over the interval (this process's wall time)",
}


def psnr(pred: torch.Tensor, gt: torch.Tensor) -> float:
    """PSNR in dB of ``(1,3,H,W)`` images in [0, 1] (data range 1), unrounded: the fallback for library
    callers that pass no metric (this layer cannot import ``eval``). The ``train`` command passes
    ``eval.metrics``' PSNR under the reporting convention (8-bit), so logged and shipped numbers use that."""
    mse = float((pred.clamp(0, 1) - gt).pow(2).mean())
    return 10.0 * math.log10(1.0 / max(mse, 1e-12))


def _prior_cache(root: str | None) -> Any:
    if root is None:
        return None
    from robustsam_prior.cache import PriorCache

    return PriorCache(root)


def validation_seed(cfg) -> int:
    """Seed of a recipe's validation sets: ``data.val_seed``, else the recipe seed + 1000003."""
    return cfg.data.val_seed if cfg.data.val_seed is not None else cfg.seed + 1_000_003


def _step_seed(seed: int, step: int) -> int:
    return int(np.random.SeedSequence([seed, step, 0x57E9]).generate_state(1)[0])


class Trainer:
    """Restoration training from a validated :class:`TrainConfig` (see module docstring).

    ``metrics`` maps metric names to ``fn(pred (1,3,H,W), gt (1,3,H,W)) -> float`` (higher is better
    for the first, which picks the reported metric); the default is PSNR. ``metric_conventions`` names
    the convention the metrics follow (a header line such as ``eval.metrics.MetricConventions.describe()``),
    recorded in checkpoint metadata beside ``metrics``. ``resolved_config`` is the
    config as plain data, stored in checkpoint metadata. ``output_dir`` overrides ``config.output_dir``.
    """

    def __init__(
        self,
        config: TrainConfig,
        *,
        resolved_config: Mapping[str, Any] | None = None,
        metrics: Mapping[str, MetricFn] | None = None,
        metric_conventions: str | None = None,
        output_dir: str | os.PathLike | None = None,
    ) -> None:
        if config.kind != "restoration":
            raise ValueError(f"kind: {config.kind!r} training is not handled by the restoration trainer")
        self.cfg = config
        self.resolved = dict(resolved_config or {})
        self.metrics = dict(metrics or {"psnr": psnr})
        self.metric_conventions = metric_conventions if metrics else "unrounded PSNR (the trainer's fallback)"
        loop = config.train
        self.run = TrainingRun(output_dir or config.output_dir, FORMAT, device=loop.device, config=self.resolved,
                               weights_prefix="iter", keep_checkpoints=loop.keep_checkpoints)
        self.out = self.run.out
        self.device, self.rank, self.world = self.run.device, self.run.rank, self.run.world
        apply_torch_settings(threads=loop.threads, deterministic=loop.deterministic, device=self.device)
        self._build()

    # -- construction ------------------------------------------------------------------------------
    def _build(self) -> None:
        from restore.archs import build_arch

        cfg, loop = self.cfg, self.cfg.train
        torch.manual_seed(cfg.seed)
        self.net = build_arch(cfg.model.arch, **cfg.model.arch_kwargs)
        if cfg.model.init:
            from restore.public_weights import read_init_state
            from robustsam_prior.core.checkpoint import load_strict

            load_strict(self.net, read_init_state(cfg.model.init, cfg.model.arch), source=cfg.model.init)
        self.net.to(self.device)
        self.memory_format = torch.channels_last if loop.channels_last else torch.contiguous_format
        self.net.to(memory_format=self.memory_format)
        needs_prior = bool(getattr(self.net, "needs_prior", False))
        uses_features = tuple(getattr(self.net, "uses_features", ()))
        self.prior = None
        self.prior_record = {"name": "none", "options": {}}
        if needs_prior:
            from robustsam_prior.prior import build_prior

            self.prior = build_prior(cfg.prior.name, **cfg.prior.options)
            self.prior_record = {"name": cfg.prior.name, "options": dict(cfg.prior.options)}
            sha = getattr(self.prior, "checkpoint_sha256", None)
            if sha:  # the prior's weights: inference warns when it runs other ones
                self.prior_record["checkpoint_sha256"] = sha
        elif cfg.prior.name != "none":
            logger.warning(
                "architecture %r ignores the prior; prior %r is not computed", cfg.model.arch, cfg.prior.name
            )
        if uses_features and not (cfg.data.train.type == "synthetic" and cfg.data.train.variants == 0):
            raise DataError(
                f"data.train: architecture {cfg.model.arch!r} uses prior features {list(uses_features)}, which "
                "are computed per crop; use type 'synthetic' with variants: 0"
            )
        cache = _prior_cache(cfg.prior.cache_dir) if self.prior is not None else None
        self.prior_cache, only = cache, cfg.prior.cache_only
        self.train_ds: PairDataset | MixedDataset = PairDataset(
            cfg.data.train, key="data.train", seed=cfg.seed, train=True, prior=self.prior, prior_cache=cache,
            prior_cache_only=only)
        if cfg.data.train_extra:
            parts = [self.train_ds] + [
                PairDataset(o, key=f"data.train_extra[{i}]", seed=cfg.seed, train=True, prior=self.prior,
                            prior_cache=cache, prior_cache_only=only)
                for i, o in enumerate(cfg.data.train_extra)]
            self.train_ds = MixedDataset(parts, [o.weight for o in (cfg.data.train, *cfg.data.train_extra)],
                                         seed=cfg.seed)
        # validation sets by metric prefix: data.val logs val/<metric>, data.val_extra val_<name>/<metric>
        self.val_sets: dict[str, PairDataset] = {}
        val_seed = validation_seed(cfg)
        if cfg.data.val is not None:
            self.val_sets["val"] = PairDataset(cfg.data.val, key="data.val", seed=val_seed, train=False, prior=None)
        for i, o in enumerate(cfg.data.val_extra):
            self.val_sets[f"val_{o.name}"] = PairDataset(o, key=f"data.val_extra[{i}]", seed=val_seed, train=False,
                                                         prior=None)
        self._val_priors: dict[tuple[str, int], PriorOutput | None] = {}
        self.model: nn.Module = self.net
        if self.world > 1:
            self.model = nn.parallel.DistributedDataParallel(
                self.net, device_ids=[self.device.index] if self.device.type == "cuda" else None
            )
        o = loop.optim
        opt_cls = torch.optim.AdamW if o.type == "adamw" else torch.optim.Adam
        params = [p for p in self.net.parameters() if p.requires_grad]
        self.optimizer = opt_cls(params, lr=o.lr, weight_decay=o.weight_decay, betas=tuple(o.betas))
        s = loop.scheduler
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer,
            lambda step: lr_factor(step, iterations=loop.iterations, warmup=s.warmup_iters, kind=s.type,
                                   base_lr=o.lr, eta_min=s.eta_min),
        )
        self.loss = PixelLoss(loop.losses)
        self.ema = Ema(self.net, loop.ema.decay) if loop.ema.enabled else None
        self.step = 0
        self.last_metrics: dict[str, float] = {}

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def state_path(self) -> Path:
        return self.run.state_path

    # -- checkpoints -------------------------------------------------------------------------------
    def metadata(self) -> dict[str, Any]:
        cfg = self.cfg
        return {
            "format": CHECKPOINT_FORMAT,
            "name": cfg.name,
            "arch": cfg.model.arch,
            "arch_kwargs": dict(cfg.model.arch_kwargs),
            "task": cfg.task,
            "prior": self.prior_record,
            "metrics": dict(self.last_metrics),
            "metric_conventions": self.metric_conventions,
            "iteration": self.step,
            "weights": "ema" if self.ema is not None else "raw",
            "config": self.resolved,
        }

    def inference_module(self) -> nn.Module:
        return self.ema.module if self.ema is not None else self.net

    def save_weights(self, path: Path) -> str:
        from robustsam_prior.core.checkpoint import save_checkpoint

        return save_checkpoint(path, self.inference_module().state_dict(), self.metadata())

    def state_dict(self) -> dict[str, Any]:
        """The training state (:mod:`.state`): network, EMA, optimizer, scheduler, iteration, RNG states,
        last validation metrics and the config fingerprint."""
        return self.run.pack_state(
            step=self.step, model=self.net.state_dict(), optimizer=self.optimizer, scheduler=self.scheduler,
            extra={"ema": self.ema.state_dict() if self.ema is not None else {}, "metrics": dict(self.last_metrics),
                   "world_size": self.world})

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Put :meth:`state_dict` back; ``CheckpointError`` when it does not fit this run."""

        def ema_and_metrics(state: Mapping[str, Any]) -> None:
            if self.ema is not None:
                if not state["ema"]:
                    raise RuntimeError("the saved run had no EMA but this config enables it (train.ema.enabled)")
                self.ema.load_state_dict(state["ema"])
            self.last_metrics = dict(state.get("metrics", {}))

        self.step = self.run.unpack_state(state, load_model=self.net.load_state_dict, optimizer=self.optimizer,
                                          scheduler=self.scheduler, load_extra=ema_and_metrics)

    def checkpoint(self) -> None:
        """Rank 0: periodic weights, then the training state (both atomic); prune old weight files."""
        self.run.checkpoint(self.step, save_weights=self.save_weights, state=self.state_dict)

    # -- validation --------------------------------------------------------------------------------
    def _val_prior(self, key: tuple[str, int], lq: torch.Tensor, ds: PairDataset) -> PriorOutput | None:
        """The prior of validation image ``key`` = (set, index), computed (or read from the prior cache) once."""
        if self.prior is None:
            return None
        if key not in self._val_priors:
            self._val_priors[key] = prior_of_whole_image(
                self.prior, lq, cache=self.prior_cache, cache_only=self.cfg.prior.cache_only,
                source=ds.pairs[key[1]][0] or f"validation item {key[1]} ({ds.pairs[key[1]][1]})", key=ds.key)
        return self._val_priors[key]

    @property
    def val_ds(self) -> PairDataset | None:
        """The main validation set (``data.val``), or ``None``."""
        return self.val_sets.get("val")

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        """Metrics of the inference weights (EMA if on) and of the degraded input over every
        validation set (sharded over ranks, summed): ``<prefix>/<metric>`` and ``<prefix>/input_<metric>``."""
        module = self.inference_module()
        was_training = module.training
        module.eval()
        names = list(self.metrics)
        out: dict[str, float] = {}
        for prefix, ds in self.val_sets.items():
            sums = [0.0] * (2 * len(names) + 1)
            for idx in range(self.rank, len(ds), self.world):
                s = ds[idx]
                lq, gt = s.lq[None].to(self.device), s.gt[None].to(self.device)
                prior = self._val_prior((prefix, idx), lq, ds)
                pred = module(lq.contiguous(memory_format=self.memory_format), prior).clamp(0, 1)
                for j, name in enumerate(names):
                    sums[j] += float(self.metrics[name](pred, gt))
                    sums[len(names) + j] += float(self.metrics[name](lq, gt))
                sums[-1] += 1
            sums = self.run.dist.all_reduce_sum(sums)
            n = max(sums[-1], 1)
            out.update({f"{prefix}/{k}": sums[j] / n for j, k in enumerate(names)})
            out.update({f"{prefix}/input_{k}": sums[len(names) + j] / n for j, k in enumerate(names)})
        module.train(was_training)
        return out

    # -- training ----------------------------------------------------------------------------------
    def _batches(self):
        sampler = PositionBatches(global_batch=self.cfg.train.batch_size, rank=self.rank, world_size=self.world,
                                  start_step=self.step, steps=self.cfg.train.iterations)
        if self.cfg.train.num_workers == 0:
            for positions in sampler:
                yield collate([self.train_ds[p] for p in positions])
        else:
            loader = torch.utils.data.DataLoader(self.train_ds, batch_sampler=sampler, collate_fn=collate,
                                                 num_workers=self.cfg.train.num_workers)
            yield from loader

    def _prior_for(self, batch: Mapping[str, Any], lq: torch.Tensor) -> PriorOutput | None:
        if self.prior is None:
            return None
        if batch["labels"] is not None:
            return PriorOutput(batch["labels"].to(self.device), {}, {})
        return self.prior(lq)

    def fit(self, *, resume: bool = False) -> dict[str, Any]:
        """Train to ``train.iterations``; returns the summary (also written to ``summary.json``)."""
        from robustsam_prior.core.progress import progress_bar

        loop = self.cfg.train
        if resume:
            self.load_state_dict(load_state(self.state_path))
            logger.info("resumed from %s at iteration %d", self.state_path, self.step)
        # the steps after the checkpoint are redone: the log drops what the stopped run logged of them
        log = self.run.open_log(step_key="iteration", start=self.step, tensorboard=loop.tensorboard)
        start_step, t0 = self.step, time.perf_counter()
        bar = self.progress = progress_bar(total=loop.iterations, initial=self.step, unit="it",
                                           disable=not self.is_main, dynamic_ncols=True, mininterval=1.0,
                                           desc=self.cfg.name)
        self.model.train()
        # sums over the steps since the last log record (see LOG_KEYS), and their count
        window: dict[str, float] = {}
        window_n, window_t = 0, time.perf_counter()
        for batch in self._batches():
            torch.manual_seed(_step_seed(self.cfg.seed, self.step))
            lq, gt = batch["lq"].to(self.device), batch["gt"].to(self.device)
            prior = self._prior_for(batch, lq)
            pred = self.model(lq.contiguous(memory_format=self.memory_format), prior)
            loss, parts = self.loss(pred, gt)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"non-finite loss {float(loss.detach())} at iteration {self.step}")
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = None
            if loop.grad_clip is not None:
                grad_norm = float(torch.nn.utils.clip_grad_norm_(self.net.parameters(), loop.grad_clip))
            self.optimizer.step()
            self.scheduler.step()
            if self.ema is not None:
                self.ema.update(self.net)
            self.step += 1
            bar.update(1)
            step_values = {"loss_mean": float(loss.detach()),
                           **{f"loss_mean/{k}": float(v) for k, v in parts.items()}}
            if grad_norm is not None:
                step_values["grad_norm_mean"] = grad_norm
            for k, v in step_values.items():
                window[k] = window.get(k, 0.0) + v
            window_n += 1
            if self.step % loop.log_every == 0 or self.step == loop.iterations:
                # every rank sums its own steps (the same keys in the same order), then the means are global
                *sums, count = self.run.dist.all_reduce_sum([*window.values(), window_n])
                now = time.perf_counter()
                rec = {"iteration": self.step, **{k: v / max(count, 1) for k, v in zip(window, sums)},
                       "lr": self.optimizer.param_groups[0]["lr"], "it_per_s": window_n / max(now - window_t, 1e-9)}
                log.write(rec)
                bar.set_postfix(loss=f"{rec['loss_mean']:.4f}")
                window, window_n, window_t = {}, 0, now
            end = self.step == loop.iterations
            if (loop.val_every and self.step % loop.val_every == 0) or end:
                m = self.validate()
                if m:
                    self.last_metrics = m
                    log.write({"iteration": self.step, **m})
                    logger.info("iteration %d: %s", self.step, ", ".join(f"{k} {v:.3f}" for k, v in m.items()))
            if (loop.checkpoint_every and self.step % loop.checkpoint_every == 0) or end:
                self.checkpoint()
        bar.close()
        if self.step >= loop.iterations and not self.last_metrics:
            self.last_metrics = self.validate()
        digests = self.run.dist.gather(parameter_digest(self.net))
        if len(set(digests)) != 1:
            logger.error("ranks hold different parameters after training: %s", digests)
        summary = {
            "name": self.cfg.name,
            "iterations": self.step,
            "resumed_from": start_step if resume else None,
            "wall_time_s": time.perf_counter() - t0,
            "world_size": self.world,
            "metrics": self.last_metrics,
            "rank_parameter_sha256": digests,
            "final_weights": str(self.out / "models" / "final.safetensors"),
        }
        if self.is_main:
            summary["final_weights_sha256"] = self.save_weights(self.out / "models" / "final.safetensors")
        self.run.write_summary(summary)
        log.close()
        self.run.dist.barrier()
        return summary


def train_restoration(
    config: TrainConfig,
    *,
    resume: bool = False,
    resolved_config: Mapping[str, Any] | None = None,
    metrics: Mapping[str, MetricFn] | None = None,
    metric_conventions: str | None = None,
    output_dir: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Build a :class:`Trainer` and run it (see module docstring); returns the summary.

    The process-wide torch settings the trainer changes (thread count, deterministic algorithms) are
    restored afterwards, so calling this from a larger program (or a test) leaves no trace, and a process
    group started for the run is ended. Rank 0 holds the output folder's lock
    (``robustsam_prior.core.fileio.folder_lock``) throughout: a second run into the same folder fails at once
    with ``FolderLockedError``.
    """
    with kept_torch_settings(), output_lock(output_dir or config.output_dir):
        trainer = Trainer(config, resolved_config=resolved_config, metrics=metrics,
                          metric_conventions=metric_conventions, output_dir=output_dir)
        try:
            return trainer.fit(resume=resume)
        finally:  # a run stopped by an error must not leave its progress bar open (it shifts later bars)
            if getattr(trainer, "progress", None) is not None:
                trainer.progress.close()
            trainer.run.close()
