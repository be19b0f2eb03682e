"""The installed version of this project, for run summaries, cache entries and ``--version``."""

from __future__ import annotations

import functools

__all__ = ["DISTRIBUTION", "package_version"]

DISTRIBUTION = "robustsam-restore"


@functools.lru_cache(maxsize=1)
def package_version() -> str:
    """The installed ``robustsam-restore`` version (``"0+unknown"`` when run from a source tree that was
    not installed)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(DISTRIBUTION)
    except PackageNotFoundError:
        return "0+unknown"
