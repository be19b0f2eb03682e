"""On-disk prior cache: each image is run through a prior once.

Key
    sha256 of the decoded image content (its float32 ``(1, 3, H, W)`` array bytes and shape) and of
    the prior's :attr:`~robustsam_prior.prior.Prior.meta` as canonical JSON (sorted keys, no
    whitespace). Meta holds the prior's name, options, checkpoint sha256 and versions, so two
    priors (or two checkpoints) can never share an entry, while the file name or location of an
    image does not matter.
Entry
    one ``.safetensors`` file ``ROOT/<key[:2]>/<key>.safetensors`` holding the label map compressed
    with zlib (as uint16 when ids < 65536, else int32; a uint8 tensor ``labels_zlib``), every feature
    as float16 (``feature.<name>``), and in its header the key, the meta, the label shape/dtype and a
    sha256 checksum over all tensor bytes.
Writing
    through :func:`robustsam_prior.core.fileio.atomic_path` (temporary file in the same folder, fsync,
    ``os.replace``): concurrent writers of the same key each rename a complete file, the last one
    wins, a reader never sees half a file.
Reading
    a truncated or garbage file, a checksum mismatch, or a header that does not match the key is
    logged as a warning, counted in :attr:`PriorCache.stats` ``["corrupt"]`` and recomputed.

Features are returned as float32 but always pass through float16 (on a miss too), so a hit and a miss
give identical outputs.

:func:`fill_cache` runs a prior over a list of image files through the cache (what
``robustsam-restore prior-cache`` runs), sharded over the processes under ``torchrun``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from .core.fileio import atomic_path, json_dumps
from .prior import PriorOutput

if TYPE_CHECKING:  # pragma: no cover
    from .batch import ShardedRun

logger = logging.getLogger(__name__)

FORMAT = "robustsam-restore/prior-cache-entry-v1"
_KEY_DOMAIN = b"robustsam-restore/prior-cache/v1\0"


class CacheEntryError(ValueError):
    """A cache entry that cannot be used (corrupt, truncated, or not the entry of its key)."""


def canonical_json(obj: Any) -> str:
    """Deterministic JSON: sorted keys, no whitespace, tuples as lists; NaN or infinity raise ``ValueError``."""
    return json_dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, default=str)


def cache_key(meta: dict[str, Any], image: torch.Tensor) -> str:
    """Hex sha256 of ``image`` (1, 3, H, W) content as float32 and of ``meta`` (canonical JSON)."""
    if image.dim() != 4 or image.shape[0] != 1:
        raise ValueError(f"cache_key expects one image (1, 3, H, W), got {tuple(image.shape)}")
    arr = np.ascontiguousarray(image.detach().to("cpu", torch.float32).numpy())
    h = hashlib.sha256(_KEY_DOMAIN)
    h.update(canonical_json({"shape": list(arr.shape), "dtype": "float32"}).encode())
    h.update(memoryview(arr).cast("B"))
    h.update(b"\0" + canonical_json(meta).encode())
    return h.hexdigest()


def _checksum(tensors: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].contiguous()
        h.update(name.encode() + b"\0" + str(t.dtype).encode() + str(tuple(t.shape)).encode())
        h.update(t.view(torch.uint8).reshape(-1).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def _round_features(features: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu").to(torch.float16).to(torch.float32) for k, v in features.items()}


class PriorCache:
    """A folder of prior outputs keyed by image content and prior meta (see the module docstring).

    ``stats`` counts ``hits``, ``misses`` (computed and stored) and ``corrupt`` (bad entries that
    were recomputed) since construction.
    """

    def __init__(self, root: str | os.PathLike, *, compress_level: int = 6) -> None:
        self.root = Path(root)
        self.compress_level = int(compress_level)
        self.stats = {"hits": 0, "misses": 0, "corrupt": 0}

    def path_for(self, key: str) -> Path:
        """Where the entry of ``key`` lives."""
        return self.root / key[:2] / f"{key}.safetensors"

    # ------------------------------------------------------------------ low level

    def store(self, key: str, meta: dict[str, Any], output: PriorOutput) -> Path:
        """Write the single-image ``output`` (batch 1) as the entry of ``key``, atomically."""
        from safetensors.torch import save_file

        if output.batch_size != 1:
            raise ValueError(f"PriorCache.store expects a batch of 1, got {output.batch_size}")
        labels = output.labels[0].detach().to("cpu").numpy()
        if labels.size and labels.min() < 0:
            raise ValueError("PriorCache.store: label ids must be >= 0")
        dtype = "uint16" if labels.size == 0 or labels.max() < 65536 else "int32"
        packed = zlib.compress(np.ascontiguousarray(labels.astype(dtype)).tobytes(), self.compress_level)
        tensors = {"labels_zlib": torch.frombuffer(bytearray(packed), dtype=torch.uint8)}
        for name, feat in output.features.items():
            tensors[f"feature.{name}"] = feat.detach().to("cpu", torch.float16).contiguous()
        header = {
            "format": FORMAT,
            "key": key,
            "meta": canonical_json(meta),
            "labels_shape": canonical_json(list(labels.shape)),
            "labels_dtype": dtype,
            "checksum": _checksum(tensors),
        }
        path = self.path_for(key)
        with atomic_path(path, suffix=".safetensors") as tmp:
            save_file(tensors, str(tmp), metadata=header)
        return path

    def load(self, key: str, meta: dict[str, Any]) -> PriorOutput:
        """Read the entry of ``key``; raises ``FileNotFoundError`` if absent, :class:`CacheEntryError` if bad."""
        from safetensors import SafetensorError, safe_open

        path = self.path_for(key)
        if not path.is_file():
            raise FileNotFoundError(path)
        try:
            with safe_open(str(path), framework="pt", device="cpu") as f:
                header = f.metadata() or {}
                tensors = {name: f.get_tensor(name) for name in f.keys()}
        except (SafetensorError, OSError, ValueError, RuntimeError) as e:
            raise CacheEntryError(f"{path}: unreadable cache entry ({e})") from e
        if header.get("format") != FORMAT or header.get("key") != key:
            raise CacheEntryError(f"{path}: not the cache entry of key {key[:12]}... (header {header.get('key')})")
        if header.get("meta") != canonical_json(meta):
            raise CacheEntryError(f"{path}: entry was written for another prior meta")
        if header.get("checksum") != _checksum(tensors):
            raise CacheEntryError(f"{path}: checksum mismatch (corrupt cache entry)")
        try:
            shape = tuple(json.loads(header["labels_shape"]))
            raw = zlib.decompress(tensors.pop("labels_zlib").numpy().tobytes())
            labels = np.frombuffer(raw, dtype=header["labels_dtype"]).reshape(shape).astype(np.int32)
        except (KeyError, ValueError, TypeError, zlib.error) as e:
            raise CacheEntryError(f"{path}: bad label map in cache entry ({e})") from e
        features = {
            name.removeprefix("feature."): t.to(torch.float32)
            for name, t in tensors.items()
            if name.startswith("feature.")
        }
        return PriorOutput(torch.from_numpy(labels)[None], features, dict(meta))

    # ------------------------------------------------------------------ high level

    def lookup(self, prior: Any, image: torch.Tensor) -> PriorOutput | None:
        """The cached output of ``prior`` on ``image`` (1, 3, H, W), or ``None`` (absent or corrupt)."""
        meta = prior.meta
        key = cache_key(meta, image)
        try:
            return self.load(key, meta)
        except FileNotFoundError:
            return None
        except CacheEntryError as e:
            logger.warning("%s; it will be recomputed", e)
            self.stats["corrupt"] += 1
            return None

    def get_or_compute(self, prior: Any, image: torch.Tensor) -> PriorOutput:
        """``prior(image)`` through the cache; ``image`` is ``(B, 3, H, W)`` in [0, 1] (each image cached
        separately). The output is on ``image.device``; features are float16-rounded float32."""
        if image.dim() != 4:
            raise ValueError(f"PriorCache.get_or_compute expects (B, 3, H, W), got {tuple(image.shape)}")
        outs = []
        for i in range(image.shape[0]):
            one = image[i : i + 1]
            meta = prior.meta
            key = cache_key(meta, one)
            try:
                out = self.load(key, meta)
                self.stats["hits"] += 1
            except FileNotFoundError:
                out = None
            except CacheEntryError as e:
                logger.warning("%s; recomputing", e)
                self.stats["corrupt"] += 1
                out = None
            if out is None:
                computed = prior(one)
                out = PriorOutput(
                    computed.labels.detach().to("cpu", torch.int32),
                    _round_features(computed.features),
                    dict(meta),
                )
                self.store(key, meta, out)
                self.stats["misses"] += 1
            outs.append(out)
        return PriorOutput.cat(outs).to(image.device)


def fill_cache(
    items: Sequence[tuple[Path, Path]], prior: Any, cache_root: str | os.PathLike
) -> tuple[ShardedRun, dict[str, int]]:
    """Run ``prior`` once per image of ``items`` (``(source, rel)`` pairs from
    :func:`robustsam_prior.inputs.collect_inputs`) through the cache at ``cache_root``.

    Valid entries are kept, so an interrupted fill resumes where it stopped; corrupt ones are recomputed.
    Under ``torchrun`` each process takes its share of the files
    (:func:`robustsam_prior.batch.process_files_sharded`). Returns the run (its summary holds every
    process's files) and :attr:`PriorCache.stats` summed over the processes.
    """
    from .batch import process_files_sharded
    from .core.io import read_image, to_tensor

    cache = PriorCache(cache_root)

    def one(src: Path, rel: Path) -> None:
        cache.get_or_compute(prior, to_tensor(read_image(src).pixels))

    run = process_files_sharded(items, one, desc="prior-cache", collect=lambda: dict(cache.stats))
    stats = {key: sum(rank_stats[key] for rank_stats in run.collected) for key in cache.stats}
    return run, stats
