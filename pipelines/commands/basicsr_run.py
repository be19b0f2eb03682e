"""``robustsam-restore basicsr -opt FILE.yml [--test] [--root DIR]``: BasicSR's own train (or test)
pipeline with the project's networks, prior dataset and model registered (:mod:`restore.basicsr_plugin`).

BasicSR writes ``experiments/<name>/`` (checkpoints, training states, log, the options file),
``tb_logger/<name>/`` and, for ``--test``, ``results/<name>/`` under its *root path*: here ``--root``,
by default the current folder (BasicSR's scripts use their clone's folder). Paths inside the options
file (``dataroot_*``, ``pretrain_network_g``) are opened as written, relative to the current folder.

Before BasicSR sees the file it is read here with ``yaml.safe_load`` (BasicSR 1.4.2's own parser
uses PyYAML's full loader, which builds arbitrary Python objects from tags), and the keys BasicSR
needs and the names it will look up in its registries are checked, so that a problem is one line
naming the file rather than a traceback from inside BasicSR.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

REQUIRED = {"train": ("name", "model_type", "num_gpu", "datasets", "network_g", "path", "train", "logger"),
            "test": ("name", "model_type", "num_gpu", "datasets", "network_g", "path", "val")}


def check_options(path: Path, test: bool) -> dict[str, Any]:
    """The options file as plain data; ``click.ClickException`` naming the file and the problem."""
    import torch

    from pipelines.config import ConfigError, read_yaml
    from robustsam_prior.core.registry import did_you_mean

    try:
        opt = read_yaml(path)  # a mapping, or ConfigError
    except ConfigError as e:
        hint = " (read with yaml.safe_load: no Python tags)" if "not valid YAML" in str(e) else ""
        raise click.ClickException(f"{e}{hint}") from None
    missing = [k for k in REQUIRED["test" if test else "train"] if k not in opt]
    if missing:
        raise click.ClickException(f"{path}: missing key(s) {', '.join(missing)} that BasicSR needs")
    if opt["num_gpu"] not in (0, "auto") and not torch.cuda.is_available():
        raise click.ClickException(f"{path}: num_gpu is {opt['num_gpu']} but no CUDA device is available; "
                                   "set num_gpu: 0 to run on the CPU")
    from basicsr.utils.registry import ARCH_REGISTRY, DATASET_REGISTRY, MODEL_REGISTRY

    lookups = [("model_type", opt["model_type"], MODEL_REGISTRY),
               ("network_g.type", (opt["network_g"] or {}).get("type"), ARCH_REGISTRY)]
    if not isinstance(opt["datasets"], dict) or not opt["datasets"]:
        raise click.ClickException(f"{path}: datasets must map phases (train, val_1, test_1 ...) to datasets")
    lookups += [(f"datasets.{phase}.type", (d or {}).get("type"), DATASET_REGISTRY) for phase, d in opt["datasets"].items()]
    for key, name, registry in lookups:
        if name not in registry:
            known = sorted(registry.keys())
            raise click.ClickException(f"{path}: {key}: BasicSR has no {name!r}{did_you_mean(str(name), known)}; "
                                       f"known: {', '.join(known)}")
    return opt


@contextlib.contextmanager
def basicsr_session(argv: list[str]) -> Iterator[None]:
    """``sys.argv`` as BasicSR's argument parser expects it, and BasicSR's logger set up afresh.

    BasicSR configures its ``basicsr`` logger once per process and adds the run's log file only then;
    clearing that state makes every run (a second one in the same process too) write its own log file,
    which is closed again afterwards.
    """
    from basicsr.utils import logger as basicsr_logger

    log = logging.getLogger("basicsr")

    def reset() -> None:
        for handler in list(log.handlers):
            log.removeHandler(handler)
            handler.close()
        basicsr_logger.initialized_logger.pop("basicsr", None)

    saved = sys.argv
    reset()
    sys.argv = argv
    try:
        yield
    finally:
        sys.argv = saved
        reset()


@click.command("basicsr")
@click.option("-opt", "--opt", "options", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="BasicSR options file (YAML).")
@click.option("--test", is_flag=True, help="Run basicsr.test's test pipeline instead of training.")
@click.option("--root", type=click.Path(file_okay=False, path_type=Path), default=Path("."), show_default=True,
              help="BasicSR's root path: experiments/, tb_logger/ and results/ are written under it.")
def basicsr(options: Path, test: bool, root: Path) -> None:
    """Train (or with --test, test) with BasicSR's own pipeline, the project's networks registered.

    Networks NAFNet, MapNAFNet, FusionNAFNet; dataset PairedImagePriorDataset (pairs plus the prior's
    region map); model PriorRestorationModel (passes the prior to the network).
    """
    import restore.basicsr_plugin  # noqa: F401  (registers with BasicSR)

    opt = check_options(options, test)
    root = root.resolve()
    root.mkdir(parents=True, exist_ok=True)
    argv = ["robustsam-restore basicsr", "-opt", str(options.resolve())]
    with basicsr_session(argv):
        try:
            if test:
                from basicsr.test import test_pipeline

                test_pipeline(str(root))
            else:
                from basicsr.train import train_pipeline

                train_pipeline(str(root))
        except (FloatingPointError, ValueError, FileNotFoundError, KeyError, NotImplementedError) as e:
            # bad data or settings (a missing folder, an optimizer or loss BasicSR does not know), or divergence
            logging.getLogger(__name__).debug("traceback", exc_info=True)
            raise click.ClickException(f"{options}: {type(e).__name__}: {e}") from None
    where = root / ("results" if test else "experiments") / str(opt["name"])
    click.echo(f"BasicSR {'test' if test else 'training'} finished; outputs in {where}")
