"""The pipelines shipped with the package, and how a pipeline argument names a file.

The shipped pipelines are the YAML files in this package's folder whose top-level ``kind`` is ``pipeline``
(the training recipes beside them are not pipelines). Each is known by its file stem (``dehaze`` for
``dehaze.yml``) and described by the first sentence of its header comment. They are package data, so they
are found the same way in a source checkout and in an installed package, whatever the current folder.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent


@dataclass(frozen=True)
class ShippedPipeline:
    name: str  # the file stem: ``robustsam-restore run NAME``
    path: Path
    description: str  # the first sentence of the file's header comment ("" if it has none)


def _description(text: str) -> str:
    """The first sentence of the file's header comment, its lines joined; the indented usage lines
    (``#   robustsam-restore run ...``) that follow the prose are not part of it."""
    import re

    words: list[str] = []
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped.startswith("#"):
            break
        body = stripped[1:]
        if not body.strip() or body.startswith("  "):  # a blank comment line or an indented example
            break
        words.append(body.strip())
    prose = " ".join(words)
    first = re.match(r"(.*?[.?!])(\s|$)", prose)
    return first.group(1) if first else prose


def shipped_pipelines(folder: Path = PACKAGE_DIR) -> dict[str, ShippedPipeline]:
    """``{name: ShippedPipeline}`` of the pipeline files in ``folder``, sorted by name.

    A file that is not a readable mapping with ``kind: pipeline`` is not a pipeline and is left out.
    """
    from .config import ConfigError, load_yaml_text

    out: dict[str, ShippedPipeline] = {}
    for path in sorted(folder.glob("*.yml")):
        try:
            text = path.read_text(encoding="utf-8")
            data = load_yaml_text(text, str(path))
        except (OSError, UnicodeDecodeError, ConfigError):
            continue
        if isinstance(data, dict) and data.get("kind") == "pipeline":
            out[path.stem] = ShippedPipeline(path.stem, path, _description(text))
    return out


def find_pipeline(name_or_path: str) -> Path:
    """The pipeline file that ``name_or_path`` names.

    In this order: an existing file (relative to the current folder); ``pkg://module/path.yml`` (a file
    inside an installed package, ``pkg://pipelines/dehaze.yml``); a shipped pipeline's name, with or
    without ``.yml`` (``dehaze``). Anything else raises ``FileNotFoundError`` listing the shipped names.
    """
    from robustsam_prior.core.fileio import package_path
    from robustsam_prior.core.registry import did_you_mean

    path = package_path(name_or_path)  # FileNotFoundError for pkg:// of a package that is not installed
    if path.is_file():
        return path
    if name_or_path.startswith("pkg://"):
        raise FileNotFoundError(f"{name_or_path}: no such file ({path})")
    shipped = shipped_pipelines()
    stem = name_or_path[: -len(".yml")] if name_or_path.endswith(".yml") else name_or_path
    if stem in shipped:
        return shipped[stem].path
    hint = did_you_mean(stem, list(shipped)) if "/" not in stem else ""
    what = "a folder, not a pipeline file" if path.is_dir() else "no such file"
    raise FileNotFoundError(
        f"{name_or_path}: {what}, and not the name of a shipped pipeline{hint}; "
        f"shipped: {', '.join(shipped)} (robustsam-restore run --list)"
    )
