"""The ``robustsam-restore`` command line: a thin click group over library functions.

Sub-commands live in ``pipelines/commands/*.py`` and are imported only when invoked (or listed in
``--help``), so ``robustsam-restore --version`` does not pay for importing torch.
"""

from __future__ import annotations

import importlib
import logging

import click

from robustsam_prior.core.versions import package_version

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
    "basicsr": "pipelines.commands.basicsr_run:basicsr",
    "pseudo-masks": "pipelines.commands.pseudo_masks:pseudo_masks",
}


def set_log_level(ctx: click.Context, *, verbose: int = 0, quiet: bool = False) -> None:
    """Add ``-v`` counts and ``-q`` given at any level of the command line (kept in the root context) and
    set the root logger's level from them: ``-q`` ERROR (also hiding progress bars, see
    :mod:`robustsam_prior.core.progress`), else WARNING, ``-v`` INFO, ``-vv`` DEBUG."""
    meta = ctx.find_root().meta
    meta["log.verbose"] = meta.get("log.verbose", 0) + verbose
    meta["log.quiet"] = meta.get("log.quiet", False) or quiet
    levels = (logging.WARNING, logging.INFO, logging.DEBUG)
    level = logging.ERROR if meta["log.quiet"] else levels[min(meta["log.verbose"], 2)]
    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s")  # a handler, unless there is one
    logging.getLogger().setLevel(level)


def _global_option_callback(ctx: click.Context, param: click.Parameter, value) -> None:
    if value:
        set_log_level(ctx, **{param.name: value})


def _global_options() -> list[click.Option]:
    """``-v``/``-q`` for a sub-command, so that they work after it too (``robustsam-restore run x -q``)."""
    return [
        click.Option(["-v", "--verbose"], count=True, expose_value=False, callback=_global_option_callback,
                     help="More log output (-v info, -vv debug); as before the command."),
        click.Option(["-q", "--quiet"], is_flag=True, expose_value=False, callback=_global_option_callback,
                     help="Only errors, no progress bars; as before the command."),
    ]


def _add_global_options(command: click.Command) -> click.Command:
    if getattr(command, "_has_global_options", False):
        return command
    taken = {opt for p in command.params for opt in getattr(p, "opts", ())}
    command.params.extend(o for o in _global_options() if not taken & set(o.opts))
    if isinstance(command, click.Group):
        for sub in command.commands.values():
            _add_global_options(sub)
    command._has_global_options = True  # type: ignore[attr-defined]
    return command


class LazyGroup(click.Group):
    """A click group whose sub-commands are imported on first use.

    Every sub-command (and sub-group command) also takes ``-v``/``-q``, which add to those given before it.
    An ``OSError`` that a command lets through (a disk that is full while a manifest or the resolved
    config is written, a folder without write permission) ends the command with its one-line message
    (the project's writers name the file: ``robustsam_prior.core.fileio.WriteError``) and exit status 1, not a
    traceback; ``-vv`` logs the traceback. The root logger's level is put back when the command ends, so
    a program (or a test) that calls the group several times starts each call from its own level.
    """

    def invoke(self, ctx: click.Context):
        import errno

        root_level = logging.getLogger().level
        try:
            return super().invoke(ctx)
        except OSError as e:
            if e.errno == errno.EPIPE:  # a closed stdout (| head): click's own handling
                raise
            logging.getLogger(__name__).debug("traceback", exc_info=True)
            raise click.ClickException(str(e)) from None
        finally:
            logging.getLogger().setLevel(root_level)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None:
            return None
        module_name, attr = target.split(":")
        return _add_global_options(getattr(importlib.import_module(module_name), attr))


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(version=package_version(), prog_name="robustsam-restore")
@click.option("-v", "--verbose", count=True, help="More log output (-v info, -vv debug); also after the command.")
@click.option("-q", "--quiet", is_flag=True, help="Only errors, no progress bars; also after the command.")
def main(verbose: int, quiet: bool) -> None:
    """RobustSAM as a degradation-invariant prior for image restoration."""
    set_log_level(click.get_current_context(), verbose=verbose, quiet=quiet)
    # full-size activations reuse freed memory instead of page-faulting fresh mappings (the module says why)
    from robustsam_prior.core.cpu_memory import keep_freed_memory

    keep_freed_memory()


if __name__ == "__main__":  # python -m pipelines.cli, the same as the console script
    main()
