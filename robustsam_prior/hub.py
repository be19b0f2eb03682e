"""Where RobustSAM checkpoints come from: a file path, ``$ROBUSTSAM_CHECKPOINT``, or the Hugging Face Hub.

Resolution order of :func:`resolve_checkpoint` (documented in the README, "RobustSAM checkpoints"):

1. an explicit path (a string or ``Path`` that is not a Hub name) must exist;
2. an explicit Hub name (``robustsam-vit-b``, ``robustsam-vit-l``, ``robustsam-vit-h``; also ``vit_b``,
   ``b``, ``base`` ...) is the official file of that variant in the Hub repository :data:`HUB_REPO`
   (the files the RobustSAM README links), fetched by ``huggingface_hub.hf_hub_download`` into the Hub
   cache (``$HF_HUB_CACHE``, else ``$HF_HOME/hub``, else ``~/.cache/huggingface/hub``);
3. the name of a variant trained by this project (``robustsam-tiny``) is its packaged file,
   ``robustsam_prior/weights/<name>.safetensors`` (installed with the package; no download);
4. nothing given: ``$ROBUSTSAM_CHECKPOINT`` if set, else the packaged ``robustsam-tiny`` (so the
   ``robustsam``/``sam`` priors and ``segment`` work offline on a fresh install), else the Hub name
   ``robustsam-vit-b`` where the package lacks that file.

``huggingface_hub`` is an optional dependency (the ``hub`` extra); paths work without it. Every file
taken from the Hub is checked against its sha256: the Hub stores these files with Git LFS, whose object
id, and so the name of the blob in the Hub cache, is the sha256 of the content. A mismatch (a
truncated or altered cache) raises :class:`ChecksumError` naming both digests and the blob to delete.
With ``HF_HUB_OFFLINE=1`` or without a network, a file that is not in the Hub cache raises
:class:`CheckpointNotFoundError` naming the file, the cache folder and the ``--prior-checkpoint PATH``
alternative.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path

from .core.checkpoint import CheckpointError

logger = logging.getLogger(__name__)

ENV_CHECKPOINT = "ROBUSTSAM_CHECKPOINT"
# the RobustSAM README ("Setup", step 6) links these files:
# https://huggingface.co/robustsam/robustsam/resolve/main/model_checkpoint/robustsam_checkpoint_{b,l,h}.pth
HUB_REPO = "robustsam/robustsam"
HUB_REVISION = "main"
HUB_FILES = {
    "vit_b": "model_checkpoint/robustsam_checkpoint_b.pth",
    "vit_l": "model_checkpoint/robustsam_checkpoint_l.pth",
    "vit_h": "model_checkpoint/robustsam_checkpoint_h.pth",
}
HUB_NAMES = {"robustsam-vit-b": "vit_b", "robustsam-vit-l": "vit_l", "robustsam-vit-h": "vit_h"}
# approximate sizes (a public mirror's listing; vit_h from the parameter count), for messages only
APPROX_SIZES = {"vit_b": "613 MB", "vit_l": "1.65 GB", "vit_h": "about 3.2 GB"}
_ALIASES = {"b": "vit_b", "l": "vit_l", "h": "vit_h", "base": "vit_b", "large": "vit_l", "huge": "vit_h",
            **HUB_NAMES}
DEFAULT_VARIANT = "vit_b"
_SHA256 = re.compile(r"[0-9a-f]{64}")
_TRUE = {"1", "on", "yes", "true"}
# variants of robustsam_prior.modeling.build.VARIANTS without an official file -> the recipes that train them
TRAINED_HERE = {"robustsam-tiny": "pipelines/train_robustsam_tiny_stage1.yml, then train_robustsam_tiny_stage2.yml"}
# their trained weights as shipped in the package (scripts/ship_robustsam_prior.py writes them)
PACKAGED_DIR = Path(__file__).resolve().parent / "weights"
PACKAGED_DEFAULT = "robustsam-tiny"  # what a prior without a checkpoint runs


def packaged_path(name: str) -> Path:
    """Where the package keeps the weights of the trained-here variant ``name`` (whether or not they exist)."""
    return PACKAGED_DIR / f"{name}.safetensors"


def packaged_checkpoint(name: str) -> Path | None:
    """The packaged weight file of the trained-here variant ``name``, or ``None`` if the package lacks it."""
    path = packaged_path(name)
    return path if name in TRAINED_HERE and path.is_file() else None


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """No checkpoint at the given path, in ``$ROBUSTSAM_CHECKPOINT`` or in (or from) the Hub."""


class ChecksumError(CheckpointError):
    """A file from the Hub cache whose sha256 is not the one the Hub lists for it."""


def hub_name(variant: str) -> str:
    """``"vit_b"`` -> ``"robustsam-vit-b"`` (the name ``--prior-checkpoint`` takes)."""
    return "robustsam-" + variant.replace("_", "-")


def normalize_variant(variant: str) -> str | None:
    """``"robustsam-vit-b"``/``"vit_b"``/``"b"``/``"base"`` -> ``"vit_b"`` (etc.); ``None`` if not a
    variant name."""
    v = variant.strip().lower()
    if v in HUB_FILES:
        return v
    return _ALIASES.get(v)


def checkpoint_url(variant: str) -> str:
    """The published URL of the official RobustSAM checkpoint of ``variant``."""
    v = normalize_variant(variant)
    if v is None:
        raise ValueError(f"unknown RobustSAM variant {variant!r}; known: {', '.join(HUB_NAMES)}")
    return f"https://huggingface.co/{HUB_REPO}/resolve/{HUB_REVISION}/{HUB_FILES[v]}"


def hub_cache_dir() -> Path:
    """The Hub cache folder, read from the environment at call time (as ``huggingface_hub`` reads it at
    import): ``$HF_HUB_CACHE``, else ``$HF_HOME/hub``, else ``~/.cache/huggingface/hub``."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join("~", ".cache"), "huggingface")
    return Path(home).expanduser() / "hub"


def hub_offline() -> bool:
    """``HF_HUB_OFFLINE`` (or ``TRANSFORMERS_OFFLINE``) set to 1/true/yes/on."""
    value = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return value.strip().lower() in _TRUE


def resolve_checkpoint(path_or_variant: str | os.PathLike | Mapping | None = None) -> Path:
    """Find a RobustSAM checkpoint file (see the module docstring for the order).

    ``path_or_variant`` is a file path, a Hub name (``"robustsam-vit-b"``, ``"robustsam-vit-l"``,
    ``"robustsam-vit-h"``; also ``"vit_b"``, ``"b"`` ...), ``None`` (``$ROBUSTSAM_CHECKPOINT``, else
    ``robustsam-vit-b``) or a dict config (custom architecture: only an explicit path or
    ``$ROBUSTSAM_CHECKPOINT`` can name its file). Raises :class:`CheckpointNotFoundError` saying where to
    get and put the file, :class:`ChecksumError` for a Hub file whose content does not match its sha256.
    """
    if isinstance(path_or_variant, Mapping):  # a custom architecture (dict config) has no official file
        env = os.environ.get(ENV_CHECKPOINT)
        if env:
            return resolve_checkpoint(Path(env))
        raise CheckpointNotFoundError(
            f"a custom RobustSAM config (dict) needs its checkpoint: pass a file path or set ${ENV_CHECKPOINT}"
        )
    if path_or_variant is not None:
        text = os.fspath(path_or_variant)
        if text in TRAINED_HERE:
            packaged = packaged_checkpoint(text)
            if packaged is not None:
                return packaged
            if os.environ.get(ENV_CHECKPOINT):
                return resolve_checkpoint(Path(os.environ[ENV_CHECKPOINT]))
            raise CheckpointNotFoundError(
                f"{text} has no published checkpoint: this project trains it ({TRAINED_HERE[text]}); pass the "
                "trained file's path")
        variant = normalize_variant(text) if isinstance(path_or_variant, str) else None
        if variant is not None:
            return hub_checkpoint(variant)
        path = Path(text).expanduser()
        if path.is_file():
            return path
        if path.is_dir():
            raise CheckpointNotFoundError(f"{path}: is a folder, expected a checkpoint file")
        raise CheckpointNotFoundError(
            f"{path}: checkpoint file not found (pass an existing .pth/.safetensors file, or a Hub name "
            f"{', '.join(HUB_NAMES)})"
        )
    env = os.environ.get(ENV_CHECKPOINT)
    if env:
        path = Path(env).expanduser()
        if not path.is_file():
            raise CheckpointNotFoundError(f"{path}: checkpoint file not found (set by ${ENV_CHECKPOINT})")
        return path
    packaged = packaged_checkpoint(PACKAGED_DEFAULT)
    if packaged is not None:
        return packaged
    return hub_checkpoint(DEFAULT_VARIANT)


def _placement_help(variant: str) -> str:
    cache = hub_cache_dir()
    return (
        f"  The file is {HUB_FILES[variant]} ({APPROX_SIZES[variant]}) of the Hub repository {HUB_REPO}:\n"
        f"    {checkpoint_url(variant)}\n"
        f"  Either put it into the Hub cache {cache} (on a machine with a network, "
        f"`hf download {HUB_REPO} {HUB_FILES[variant]}` fills {cache / _repo_folder()}; copy that folder "
        f"here), or download the file anywhere and pass --prior-checkpoint PATH (or set ${ENV_CHECKPOINT})."
    )


def _repo_folder() -> str:
    return "models--" + HUB_REPO.replace("/", "--")


def hub_checkpoint(variant: str) -> Path:
    """The official checkpoint of ``variant`` from the Hub cache, downloaded first when it is not there
    (unless offline), and checked against its sha256. See :func:`resolve_checkpoint` for the errors."""
    v = normalize_variant(variant)
    if v is None:
        raise ValueError(f"unknown RobustSAM variant {variant!r}; known: {', '.join(HUB_NAMES)}")
    name = hub_name(v)
    try:
        import huggingface_hub
    except ImportError:
        raise CheckpointNotFoundError(
            f"{name} is a Hugging Face Hub name, and huggingface_hub is not installed: install the hub extra "
            f"(pip install 'robustsam-restore[hub]') to download it, or:\n{_placement_help(v)}"
        ) from None
    offline = hub_offline()
    cache = hub_cache_dir()
    try:
        found = huggingface_hub.hf_hub_download(
            HUB_REPO, HUB_FILES[v], revision=HUB_REVISION, cache_dir=str(cache), local_files_only=offline)
    except (OSError, ValueError) as e:  # not cached offline, no network, HTTP errors: all OSErrors
        why = ("it is not in the Hub cache and HF_HUB_OFFLINE is set" if offline
               else f"it is not in the Hub cache and the download failed ({type(e).__name__}: {e})")
        raise CheckpointNotFoundError(f"{name}: {why}.\n{_placement_help(v)}") from None
    path = Path(found)
    check_hub_sha256(path, name)
    return path


_verified: dict[tuple[str, int, int], str] = {}  # (blob, size, mtime_ns) -> sha256 already checked


def expected_sha256(path: Path) -> str | None:
    """The sha256 the Hub lists for a file of the Hub cache: the name of the blob that the snapshot entry
    ``path`` points to (Git LFS object ids are sha256 digests). ``None`` where the entry is not a link
    into ``blobs/`` (a cache that copies files) or the blob is not named by a sha256 (a small, non-LFS file)."""
    blob = Path(os.path.realpath(path))
    if blob.parent.name == "blobs" and _SHA256.fullmatch(blob.name):
        return blob.name
    return None


def check_hub_sha256(path: Path, name: str) -> str:
    """Hash ``path`` (once per process and file version) and compare with :func:`expected_sha256`;
    returns the digest. ``ChecksumError`` on a mismatch."""
    from .core.fileio import sha256_file

    blob = Path(os.path.realpath(path))
    st = blob.stat()
    key = (str(blob), st.st_size, st.st_mtime_ns)
    if key in _verified:
        return _verified[key]
    expected = expected_sha256(path)
    digest = sha256_file(blob)
    if expected is None:
        logger.warning("%s: %s is not a Hub-cache blob named by its sha256; its content cannot be checked",
                       name, path)
    elif digest != expected:
        raise ChecksumError(
            f"{name}: sha256 mismatch for {path}: the content has sha256 {digest}, the Hub lists {expected} "
            f"for {HUB_REPO}/{HUB_FILES[HUB_NAMES[name]]} (a truncated or altered download); delete {blob} and "
            "run again to download it anew"
        )
    _verified[key] = digest
    return digest
