"""The ``robustsam-restore`` command line: a thin click group over library functions.

Sub-commands live in ``pipelines/commands/*.py`` and are imported only when invoked (or listed in
``--help``), so ``robustsam-restore --version`` does not pay for importing torch.
"""

from __future__ import annotations

import importlib
import logging

import click

# command name -> "module:attribute"; the table is the registry of commands.
COMMANDS: dict[str, str] = {
    "degrade": "pipelines.commands.degrade:degrade",
    "segment": "pipelines.commands.segment:segment",
    "prior-cache": "pipelines.commands.prior_cache:prior_cache",
    "dehaze": "pipelines.commands.restore:dehaze",
    "deblur": "pipelines.commands.restore:deblur",
    "models": "pipelines.commands.models:models",
    "eval": "pipelines.commands.evaluate:evaluate",
    "benchmark": "pipelines.commands.benchmark:benchmark",
    "leaderboard": "pipelines.commands.leaderboard:leaderboard",
    "run": "pipelines.commands.run:run",
    "train": "pipelines.commands.train:train",
    "pseudo-masks": "pipelines.commands.pseudo_masks:pseudo_masks",
}


class LazyGroup(click.Group):
    """A click group whose sub-commands are imported on first use.

    An ``OSError`` that a command lets through (a disk that is full while a manifest or the resolved
    config is written, a folder without write permission) ends the command with its one-line message
    (the project's writers name the file: ``robustsam_prior.fileio.WriteError``) and exit status 1, not a
    traceback; ``-vv`` logs the traceback.
    """

    def invoke(self, ctx: click.Context):
        import errno

        try:
            return super().invoke(ctx)
        except OSError as e:
            if e.errno == errno.EPIPE:  # a closed stdout (| head): click's own handling
                raise
            logging.getLogger(__name__).debug("traceback", exc_info=True)
            raise click.ClickException(str(e)) from None

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None:
            return None
        module_name, attr = target.split(":")
        return getattr(importlib.import_module(module_name), attr)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("robustsam-restore")
    except PackageNotFoundError:  # running from a source tree that was not installed
        return "0+unknown"


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(version=_version(), prog_name="robustsam-restore")
@click.option("-v", "--verbose", count=True, help="More log output (-v info, -vv debug).")
@click.option("-q", "--quiet", is_flag=True, help="Only errors.")
def main(verbose: int, quiet: bool) -> None:
    """RobustSAM as a degradation-invariant prior for image restoration."""
    level = logging.ERROR if quiet else (logging.WARNING, logging.INFO, logging.DEBUG)[min(verbose, 2)]
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    # full-size activations reuse freed memory instead of page-faulting fresh mappings (the module says why)
    from robustsam_prior.cpu_memory import keep_freed_memory

    keep_freed_memory()


if __name__ == "__main__":  # python -m pipelines.cli, the same as the console script
    main()
