"""The files a command processes: listing an input file or folder, refusing outputs that would
overwrite inputs, and finding inputs that share a stem (:func:`shared_stems`). Reading and writing the
images themselves is :mod:`robustsam_prior.core.io`."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Sequence
from pathlib import Path

from .core.io import ImageReadError, file_kind


def collect_inputs(
    input: str | os.PathLike, recursive: bool = False, *, exclude: Sequence[str | os.PathLike] = ()
) -> list[tuple[Path, Path]]:
    """List the files a command should process.

    A file gives ``[(file, Path(file.name))]``. A folder gives every non-hidden entry in it that is
    not a folder (in sub-folders too when ``recursive``, except the trees in ``exclude``: an output
    folder inside the input), as ``(source, path relative to the folder)`` sorted by the relative path.
    Non-image files are included: :func:`robustsam_prior.batch.process_files` skips them with a
    warning, so a stray file is reported, not silently lost; so are FIFOs, devices and broken links,
    which :func:`read_image` then refuses by name.

    Raises:
        FileNotFoundError: ``input`` does not exist.
        ImageReadError: ``input`` is neither a file nor a folder (a FIFO, a device); it is not opened.
    """
    root = Path(input)
    try:
        mode = root.stat().st_mode
    except FileNotFoundError:
        raise FileNotFoundError(f"input {str(root)!r} does not exist") from None
    if stat.S_ISREG(mode):
        return [(root, Path(root.name))]
    if not stat.S_ISDIR(mode):
        raise ImageReadError(root, f"is {file_kind(mode)}, not an image file or a folder")
    excluded = {Path(p).resolve() for p in exclude}
    items = []
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        # folders (links to folders included) are in dirnames, everything else in filenames
        dirnames[:] = [d for d in dirnames if recursive and not d.startswith(".")
                       and (here / d).resolve() not in excluded]
        for name in filenames:
            if not name.startswith("."):
                items.append((here / name, (here / name).relative_to(root)))
        if not recursive:
            break
    return sorted(items, key=lambda item: item[1].as_posix())


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """True if ``a`` and ``b`` are one file: the same path after links, or (both existing) one inode."""
    a, b = Path(a), Path(b)
    if a.resolve() == b.resolve():
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:  # either is missing
        return False


def check_output_location(
    input: str | os.PathLike, output: str | os.PathLike, *, recursive: bool = False
) -> tuple[Path, ...]:
    """Refuse an output folder that is the input; say which trees a walk of the input must leave out.

    An ``output`` that is ``input`` (after links) would overwrite the originals. An output folder
    inside an input folder is fine: without ``recursive`` the walk does not enter it, and with
    ``recursive`` it is returned, to be passed to :func:`collect_inputs` as ``exclude``, so that a
    re-run does not restore the previous outputs again (out/out/...). Files that would be written
    over an input file one by one (a single file's own folder given as output) are found by
    :func:`refuse_overwriting_inputs`.

    Raises:
        ValueError: ``output`` is ``input``; the message names both.
    """
    src, dst = Path(input), Path(output)
    if same_file(src, dst):
        kind = "folder" if src.is_dir() else "file"
        raise ValueError(
            f"OUTPUT {str(dst)!r} is the INPUT {kind} {str(src)!r}: the originals would be overwritten; "
            "choose another output"
        )
    if src.is_dir() and recursive and src.resolve() in dst.resolve().parents:
        return (dst,)
    return ()


def refuse_overwriting_inputs(pairs: Iterable[tuple[str | os.PathLike, str | os.PathLike]]) -> None:
    """Raise ``ValueError`` if any planned ``(source, destination)`` would write over an input file.

    Checked for every source, not only its own destination, so that no output replaces any input.
    """
    pairs = list(pairs)
    sources = {Path(src).resolve(): Path(src) for src, _ in pairs}
    for src, dst in pairs:
        hit = sources.get(Path(dst).resolve())
        if hit is None and Path(dst).exists() and same_file(src, dst):
            hit = Path(src)
        if hit is not None:
            raise ValueError(
                f"output {str(dst)!r} is the input file {str(hit)!r}: it would be overwritten; choose an "
                "output folder that holds no input"
            )


def shared_stems(rels: Iterable[Path]) -> set[Path]:
    """The relative paths that share their folder and stem with another one (``x.png`` beside ``x.jpg``).

    Files named after an input's stem (side files, label maps) keep the input's full name for these,
    so that each input keeps its own.
    """
    groups: dict[Path, list[Path]] = {}
    for rel in rels:
        rel = Path(rel)
        groups.setdefault(rel.parent / rel.stem, []).append(rel)
    return {rel for group in groups.values() if len(group) > 1 for rel in group}
