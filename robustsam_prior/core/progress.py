"""Progress bars (tqdm) that follow the log level: shown while warnings are, hidden by ``-q``.

Every progress bar of the project is made by :func:`progress_bar`. A bar is shown when the root logger
lets warnings through (its level is WARNING or lower: Python's default, ``-v`` and ``-vv``) and hidden when
it is set higher (``robustsam-restore -q`` sets ERROR), so the quiet switch of the command line, or
``logging.getLogger().setLevel(logging.ERROR)`` in a program, silences bars and log messages together.
"""

from __future__ import annotations

import logging
from typing import Any

__all__ = ["progress_bar", "progress_enabled"]


def progress_enabled() -> bool:
    """Whether progress bars are shown: the root logger's level is WARNING or lower."""
    return logging.getLogger().getEffectiveLevel() <= logging.WARNING


def progress_bar(iterable: Any = None, **kwargs: Any) -> Any:
    """``tqdm(iterable, **kwargs)``, disabled whatever ``disable`` says when :func:`progress_enabled` is false."""
    from tqdm import tqdm

    if not progress_enabled():
        kwargs["disable"] = True
    return tqdm(iterable, **kwargs)
