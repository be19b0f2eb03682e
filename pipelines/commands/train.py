"""``robustsam-restore train RECIPE.yml [key=value ...] [--resume]``: train a restoration network,
or (``kind: robustsam``) RobustSAM's anti-degradation modules.

The recipe is validated into :class:`restore.training.options.TrainConfig` (key-path errors, "did you
mean"), or :class:`robustsam_prior.training.options.RobustSamTrainConfig` for ``kind: robustsam``; ``key=value`` overrides are applied first and the resolved config is written to
``OUTPUT_DIR/config.yml``. Under ``torchrun --nproc_per_node N`` (``python -m torch.distributed.run``)
the same command trains with DDP.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

import click

from robustsam_prior.core.fileio import json_dumps, jsonable

logger = logging.getLogger(__name__)


@contextlib.contextmanager
def run_errors_as_click_errors() -> Iterator[None]:
    """Both kinds of training: a problem with the recipe or the run's inputs becomes a one-line
    ``ClickException``.

    What is caught is the training engine's ``RUN_ERRORS``: ``CheckpointError`` (starting weights or a
    ``--resume`` state unreadable or not fitting), ``FileNotFoundError`` (a file the run needs),
    ``ValueError`` (``ConfigError`` and ``DataError`` among them: bad settings or data, or a device this
    machine does not have), ``FloatingPointError`` (the loss diverged) and ``FolderLockedError`` (another
    run writes into the output folder).
    """
    from robustsam_prior.training.engine import RUN_ERRORS

    try:
        yield
    except RUN_ERRORS as e:
        raise click.ClickException(str(e)) from None


def load_train_config(path: str, overrides: tuple[str, ...] | list[str]):
    """Validated :class:`TrainConfig` from a YAML file plus overrides (``ConfigError`` on problems);
    ``kind: robustsam`` recipes give a :class:`robustsam_prior.training.options.RobustSamTrainConfig`."""
    from pipelines.config import format_kinds, load_config
    from restore.training.options import TrainConfig

    return load_config(TrainConfig, path, overrides, kinds=format_kinds("train"))


# what a ``kind: robustsam`` run trains, by ``train.stage``
STAGE_WORDS = {"robust": "RobustSAM's anti-degradation modules", "sam": "SAM's encoders and mask decoder (stage 1)"}


def check_output_dir(out, *, resume: bool) -> None:
    """The rules for ``--resume`` and an existing run, the same for both kinds of training: ``--resume``
    needs ``state/latest.pt``; without it, a folder holding a run (a state or final weights) is refused."""
    state = out / "state" / "latest.pt"
    final = out / "models" / "final.safetensors"
    if resume and not state.is_file():
        raise click.ClickException(f"--resume: no training state at {state}")
    if not resume and (state.is_file() or final.is_file()):
        held = (state if state.is_file() else final).relative_to(out)
        raise click.ClickException(
            f"{out} already holds a run ({held}); pass --resume to continue it or choose another output_dir"
        )


def run_training(cfg, *, resume: bool) -> dict:
    """Train ``cfg`` with the library function of its kind (DDP under torchrun); the summary."""
    from pipelines.config import to_dict

    if cfg.kind == "robustsam":  # a RobustSamTrainConfig (load_train_config dispatches on kind)
        from robustsam_prior.training.trainer import train_from_options

        return train_from_options(cfg, resolved_config=to_dict(cfg), resume=resume)
    from restore.training.trainer import train_restoration

    return train_restoration(cfg, resume=resume, resolved_config=to_dict(cfg), metrics=eval_metrics(),
                             metric_conventions=eval_conventions())


def report(cfg, summary: dict) -> None:
    """The one-paragraph report of a finished run."""
    if cfg.kind == "robustsam":
        first, last = summary["first_losses"], summary["last_losses"]
        resumed = f" (resumed at step {summary['resumed_from']})" if summary.get("resumed_from") is not None else ""
        click.echo(
            f"trained {STAGE_WORDS[cfg.train.stage]} for {summary['steps']} steps{resumed} in "
            f"{summary['wall_time_s']:.1f} s; loss {first.get('total', float('nan')):.4f} -> "
            f"{last.get('total', float('nan')):.4f}; weights: {summary['weights']}"
        )
        return
    metrics = ", ".join(f"{k} {v:.3f}" for k, v in summary["metrics"].items())
    click.echo(
        f"trained {summary['iterations']} iterations in {summary['wall_time_s']:.1f} s"
        f"{'; ' + metrics if metrics else ''}; weights: {summary['final_weights']}"
    )
    if metrics:
        click.echo(f"validation {eval_conventions()}")


def eval_metrics() -> dict:
    """Validation metrics for the restoration trainer: ``eval.metrics``' PSNR under the project's one
    convention (``MetricConventions()``: BasicSR 1.4, RGB, crop 0, 8-bit), as ``eval`` and ``benchmark``."""
    from eval.metrics import MetricConventions, psnr

    kw = MetricConventions().kwargs()
    return {"psnr": lambda pred, gt: float(psnr(pred, gt, **kw))}


def eval_conventions() -> str:
    """The header line of :func:`eval_metrics`' convention (recorded in checkpoints, printed)."""
    from eval.metrics import MetricConventions

    return MetricConventions().describe()


@click.command("train")
@click.argument("recipe", type=click.Path(dir_okay=False))
@click.argument("overrides", nargs=-1)
@click.option("--resume", is_flag=True, help="Continue from OUTPUT_DIR/state/latest.pt (exact resume).")
@click.option("--output-dir", default=None, help="Override output_dir of the recipe.")
@click.option("--json", "as_json", is_flag=True, help="Print the final summary as JSON.")
@click.option("--no-tensorboard", is_flag=True,
              help="No TensorBoard logs under OUTPUT_DIR/tb (the same as train.tensorboard=false).")
def train(recipe: str, overrides: tuple[str, ...], resume: bool, output_dir: str | None, as_json: bool,
          no_tensorboard: bool) -> None:
    """Train a model from RECIPE.yml; OVERRIDES are key.path=value pairs (train.iterations=500).

    One run at a time per output folder: a second one fails at once, naming the process that holds it.
    """
    from pathlib import Path

    from pipelines.config import ConfigError, save_resolved
    from robustsam_prior.training.engine import is_main_process, output_lock

    overrides = tuple(overrides) + ((f"output_dir={output_dir}",) if output_dir else ())
    main_rank = is_main_process()
    with run_errors_as_click_errors():
        cfg = load_train_config(recipe, overrides)
        if no_tensorboard:
            if cfg.kind == "robustsam":
                raise ConfigError(f"{recipe}: --no-tensorboard: kind 'robustsam' training writes no TensorBoard logs")
            overrides += ("train.tensorboard=false",)  # listed in config.yml's header like any override
            cfg = load_train_config(recipe, overrides)
        # one run per output folder: the lock is held from before the existing-run checks and config.yml to
        # the end, by rank 0 alone under torchrun (the trainers take it too, for callers of the library)
        with output_lock(cfg.output_dir):
            check_output_dir(Path(cfg.output_dir), resume=resume)
            if main_rank:
                save_resolved(cfg, Path(cfg.output_dir) / "config.yml", source=recipe, overrides=overrides)
            summary = run_training(cfg, resume=resume)
    if not main_rank:
        return
    if as_json:
        click.echo(json_dumps(jsonable(summary), indent=2))
    else:
        report(cfg, summary)
