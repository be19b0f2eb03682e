"""Loading RobustSAM weights: official RobustSAM files, Meta SAM files and this project's own files.

All files are read by :func:`robustsam_prior.core.checkpoint.read_checkpoint` (``weights_only=True``,
``module.`` stripped where every key has it, sha256 recorded) and loaded strictly by
:func:`~robustsam_prior.core.checkpoint.load_strict`.

- Official RobustSAM (``robustsam_checkpoint_{b,l,h}.pth``): every key of the official model;
  the variant is recognised from the tensor shapes, so no config is needed.
- Meta SAM (``sam_vit_{b,l,h}_*.pth``): the SAM part only. Loading one is an error ("this is a SAM
  checkpoint, not RobustSAM") unless the caller passes ``fresh_robust_modules=True`` (training from
  SAM), in which case the six robust modules keep their fresh random initialisation.
- This project's files (:func:`save_robustsam`): one safetensors file whose metadata holds
  ``{"format": "robustsam-restore/robustsam", "config": {...}, "variant": name|None}``, so the
  right architecture is built from the file alone.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .core.checkpoint import (
    CheckpointError,
    LoadedCheckpoint,
    build_for_state,
    load_strict,
    read_checkpoint,
    save_checkpoint,
)

if TYPE_CHECKING:
    import torch

    from .modeling.build import RobustSamConfig
    from .modeling.robustsam import RobustSam

logger = logging.getLogger(__name__)

FORMAT = "robustsam-restore/robustsam"
# the six modules RobustSAM adds to SAM's mask decoder
ROBUST_MODULES = (
    "custom_robust_token",
    "robust_mlp",
    "custom_token_block",
    "fourier_mask_features",
    "fourier_first_layer_features",
    "fourier_last_layer_features",
)
ROBUST_PREFIXES = tuple(f"mask_decoder.{m}." for m in ROBUST_MODULES)
# encoder width and depth of the official variants (Meta's build_sam.py)
_VARIANT_SHAPES = {(768, 12): "vit_b", (1024, 24): "vit_l", (1280, 32): "vit_h"}


def is_robust_key(key: str) -> bool:
    """True for state-dict keys of the RobustSAM-only modules (absent from SAM checkpoints)."""
    return key.startswith(ROBUST_PREFIXES)


@dataclass(frozen=True)
class CheckpointKind:
    """What a state dict looks like: ``kind`` in {"robustsam", "sam", "hq-sam", "unknown"};
    ``variant`` "vit_b"/"vit_l"/"vit_h" when the encoder shapes match an official one."""

    kind: str
    variant: str | None = None

    def describe(self) -> str:
        v = f" ({self.variant})" if self.variant else ""
        return {
            "robustsam": f"a RobustSAM checkpoint{v}",
            "sam": f"a Meta SAM checkpoint{v}, not RobustSAM: it has none of the RobustSAM modules "
            f"({', '.join(ROBUST_MODULES)}); pass fresh_robust_modules=True to start them from random "
            "initialisation (training from SAM)",
            "hq-sam": f"an HQ-SAM checkpoint{v}, not RobustSAM",
            "unknown": "not a SAM-family state dict",
        }[self.kind]


def detect_variant(state: Mapping[str, torch.Tensor]) -> str | None:
    """``"vit_b"``/``"vit_l"``/``"vit_h"`` from the encoder's width and depth, else ``None``."""
    proj = state.get("image_encoder.patch_embed.proj.weight")
    if proj is None:
        return None
    blocks = {k.split(".")[2] for k in state if k.startswith("image_encoder.blocks.")}
    return _VARIANT_SHAPES.get((int(proj.shape[0]), len(blocks)))


def detect_checkpoint(state: Mapping[str, torch.Tensor]) -> CheckpointKind:
    """Classify a (prefix-stripped) state dict."""
    variant = detect_variant(state)
    if any(is_robust_key(k) for k in state):
        return CheckpointKind("robustsam", variant)
    if any(k.startswith("mask_decoder.hf_") for k in state):
        return CheckpointKind("hq-sam", variant)
    if "mask_decoder.mask_tokens.weight" in state and "image_encoder.patch_embed.proj.weight" in state:
        return CheckpointKind("sam", variant)
    return CheckpointKind("unknown", None)


def checkpoint_phrase(state: Mapping[str, torch.Tensor]) -> str:
    """One phrase saying what ``state`` looks like (for error messages)."""
    kind = detect_checkpoint(state)
    text = kind.describe()
    proj = state.get("image_encoder.patch_embed.proj.weight")
    if kind.variant is None and proj is not None:
        blocks = {k.split(".")[2] for k in state if k.startswith("image_encoder.blocks.")}
        text += f" (encoder width {proj.shape[0]}, depth {len(blocks)}, patch {proj.shape[-1]})"
    if kind.kind == "unknown":
        text += f" (first keys: {', '.join(list(state)[:3])})"
    return text


def fgm_looks_untrained(state: Mapping[str, torch.Tensor], tolerance: float = 0.05) -> list[str]:
    """Fourier blocks whose 1x1 amplitude conv still looks like PyTorch's default initialisation.

    The first public RobustSAM ``FGMBlock`` returned its input unchanged, so a checkpoint
    trained with it has ``fgm_block.conv_layer`` weights that never moved from their initialisation,
    uniform in +-1/sqrt(fan_in) (std = bound/sqrt(3)). Such weights make the FFT path of these blocks
    meaningless. Returns the block names whose weights are all inside the bound and whose std is
    within ``tolerance`` (relative) of the uniform one.
    """
    flagged = []
    for key, w in state.items():
        if not key.endswith("fgm_block.conv_layer.weight") or w.device.type == "meta" or w.numel() < 64:
            continue
        bound = 1.0 / float(w[0].numel()) ** 0.5
        w = w.float()
        if float(w.abs().max()) <= bound * (1 + 1e-6) and abs(float(w.std()) / (bound / 3**0.5) - 1) < tolerance:
            flagged.append(key[: -len(".fgm_block.conv_layer.weight")])
    return flagged


def config_from_checkpoint(loaded: LoadedCheckpoint) -> RobustSamConfig | None:
    """The architecture of a checkpoint: its metadata ``config`` (dict or variant name) or ``variant``,
    else the official variant its shapes match; ``None`` if neither tells."""
    from .modeling.build import resolve_config

    meta = loaded.metadata or {}
    for key in ("config", "variant"):
        value = meta.get(key)
        if value:
            try:
                return resolve_config(value)
            except (TypeError, ValueError) as e:
                raise CheckpointError(f"{loaded.path}: bad {key!r} in the checkpoint metadata ({e})") from e
    variant = detect_variant(loaded.state_dict)
    return resolve_config(variant) if variant else None


def _missing_keys_allowed(loaded: LoadedCheckpoint, fresh_robust_modules: bool) -> Callable[[str], bool] | None:
    """``is_robust_key`` for a Meta SAM file with ``fresh_robust_modules``; a SAM file without it is an error."""
    kind = detect_checkpoint(loaded.state_dict)
    if kind.kind != "sam":
        return None
    if not fresh_robust_modules:
        raise CheckpointError(f"{loaded.path}: this is a SAM checkpoint, not RobustSAM ({kind.describe()})")
    return is_robust_key


def load_robustsam_weights(
    model: RobustSam,
    checkpoint: str | os.PathLike | LoadedCheckpoint,
    *,
    fresh_robust_modules: bool = False,
) -> LoadedCheckpoint:
    """Load ``checkpoint`` strictly into ``model`` (see the module docstring for the accepted files).

    Records ``model.checkpoint_sha256``/``checkpoint_path``. Raises :class:`CheckpointError` naming
    the file, the missing/unexpected/mis-shaped keys and what the file looks like.
    """
    loaded = checkpoint if isinstance(checkpoint, LoadedCheckpoint) else read_checkpoint(checkpoint)
    state = loaded.state_dict
    kind = detect_checkpoint(state)
    ignore = _missing_keys_allowed(loaded, fresh_robust_modules)
    if ignore is not None:
        logger.info("%s: SAM checkpoint; the RobustSAM modules keep their fresh initialisation", loaded.path)
    load_strict(model, state, source=loaded.path, describe=checkpoint_phrase, ignore_missing=ignore)
    # a stage-1 checkpoint (train.stage sam) holds RobustSAM modules that were never trained, by design
    recipe = (loaded.metadata or {}).get("recipe")
    train = recipe.get("train") if isinstance(recipe, dict) else None
    stage1 = isinstance(train, dict) and train.get("stage") == "sam"
    untrained = fgm_looks_untrained(state) if kind.kind == "robustsam" and not stage1 else []
    if untrained:
        logger.warning(
            "%s: the Fourier amplitude convs of %s look untrained (default initialisation); the checkpoint "
            "may come from the early RobustSAM code whose FGM block was an identity",
            loaded.path, ", ".join(untrained),
        )
    model.checkpoint_sha256 = loaded.sha256
    model.checkpoint_path = str(loaded.path)
    return loaded


def build_robustsam(
    config: str | Mapping[str, Any] | RobustSamConfig | None = None,
    checkpoint: str | os.PathLike | LoadedCheckpoint | None = None,
    *,
    fresh_robust_modules: bool = False,
    bn_mode: str = "running",
    fast: bool = True,
    device: str | torch.device | None = None,
) -> RobustSam:
    """Build a :class:`~robustsam_prior.modeling.robustsam.RobustSam` in eval mode.

    ``config``: ``"vit_b"``/``"vit_l"``/``"vit_h"``, a dict with the keys of the reference
    ``tiny_config.json`` (any values), or ``None`` to take it from ``checkpoint`` (its metadata, or
    the official variant its shapes match). ``checkpoint``: a file path (use
    :func:`robustsam_prior.resolve_checkpoint` to find one) or an already read checkpoint; without it
    the weights are random. ``fresh_robust_modules``: accept a Meta SAM checkpoint and keep the robust
    modules randomly initialised. ``bn_mode``: ``"running"`` (eval statistics, default) or
    ``"batch"`` (per-image statistics, what the official demo does). ``fast``: the image encoder runs
    through ``robustsam_prior.fast_encoder`` (same parameters and outputs, about 2x faster on the CPU);
    ``False`` keeps ``segment_anything``'s stock forward.
    """
    from .modeling.build import build_robustsam_model

    loaded = None
    from_file = config is None
    if checkpoint is not None:
        loaded = checkpoint if isinstance(checkpoint, LoadedCheckpoint) else read_checkpoint(checkpoint)
        if config is None:
            config = config_from_checkpoint(loaded)
            if config is None:
                raise CheckpointError(
                    f"{loaded.path}: cannot tell the architecture from the file "
                    f"({checkpoint_phrase(loaded.state_dict)}); pass config='vit_b'/'vit_l'/'vit_h' or a dict"
                )
    elif config is None:
        raise ValueError("build_robustsam needs a config (variant name or dict) or a checkpoint")
    if loaded is not None:  # the file's keys and shapes are checked before the network is allocated
        ignore = _missing_keys_allowed(loaded, fresh_robust_modules)
        try:
            model = build_for_state(lambda: build_robustsam_model(config, bn_mode=bn_mode, fast=fast), loaded.state_dict,
                                    source=loaded.path, describe=checkpoint_phrase, ignore_missing=ignore)
        except (TypeError, ValueError) as e:
            if not from_file:
                raise
            raise CheckpointError(f"{loaded.path}: cannot build the architecture of its metadata ({e})") from e
    else:
        model = build_robustsam_model(config, bn_mode=bn_mode, fast=fast)
    if loaded is not None:
        load_robustsam_weights(model, loaded, fresh_robust_modules=fresh_robust_modules)
    if device is not None:
        from .core.devices import resolve_device

        model = model.to(resolve_device(device))
    return model.eval()


def save_robustsam(
    model: RobustSam, path: str | os.PathLike, *, metadata: Mapping[str, Any] | None = None
) -> str:
    """Save ``model`` as this project's RobustSAM checkpoint (safetensors + config metadata); sha256."""
    from .modeling.build import config_name

    if model.config is None:
        raise ValueError("model.config is not set; build the model with build_robustsam()")
    meta = {"format": FORMAT, "config": model.config.to_dict(), "variant": config_name(model.config)}
    meta.update(metadata or {})
    return save_checkpoint(path, model.state_dict(), meta)
