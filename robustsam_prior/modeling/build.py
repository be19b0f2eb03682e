"""Builders: the variant table and :func:`build_robustsam_model` (random initialisation).

Loading weights (:func:`robustsam_prior.build_robustsam`) lives in ``robustsam_prior/loading.py``.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
from segment_anything.modeling import PromptEncoder, TwoWayTransformer

from ..core.registry import did_you_mean
from ..fast_encoder import accelerate
from .image_encoder import ImageEncoderViTWithTap
from .mask_decoder import RobustMaskDecoder
from .robustsam import RobustSam

# Bounds on the architecture (inclusive, each at least 1): far above the official ViT-H (width 1280, depth
# 32, 64x64 tokens of 16 px) yet low enough that a mistyped or hostile config (a checkpoint's metadata)
# fails at once instead of building a network of terabytes; the whole model is also limited to
# MAX_PARAMETERS, counted on the meta device before it is built.
LIMITS = {
    "img_size": 8192, "patch": 64, "enc_dim": 4096, "enc_depth": 128, "enc_heads": 128, "window": 256,
    "prompt_dim": 4096, "dec_depth": 32, "dec_mlp": 32768, "dec_heads": 128, "iou_hidden": 8192,
    "mask_in_chans": 4096, "num_multimask_outputs": 64,
}  # fmt: skip
MAX_EMBEDDING_SIZE = 512  # tokens per side (img_size / patch; 64 in the official models)
MAX_PARAMETERS = 2_000_000_000  # 3x ViT-H's 641 M


@dataclass(frozen=True)
class RobustSamConfig:
    """Architecture hyper-parameters; field names are those of the reference ``tiny_config.json``.

    ``img_size`` encoder input side (px); ``patch`` patch size; ``enc_dim``/``enc_depth``/``enc_heads``
    ViT width/depth/heads; ``global_attn`` indexes of global-attention blocks (the first one is the
    early-feature tap); ``window`` window size of the others; ``prompt_dim`` prompt/transformer width D;
    ``dec_depth``/``dec_mlp``/``dec_heads`` two-way transformer; ``iou_hidden`` IoU head width;
    ``mask_in_chans`` prompt-encoder mask channels; ``num_multimask_outputs`` (3 in every official model).
    """

    img_size: int
    patch: int
    enc_dim: int
    enc_depth: int
    enc_heads: int
    global_attn: tuple[int, ...]
    window: int
    prompt_dim: int
    dec_depth: int
    dec_mlp: int
    dec_heads: int
    iou_hidden: int
    mask_in_chans: int
    num_multimask_outputs: int = 3

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> RobustSamConfig:
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = [k for k in d if k not in names]
        if unknown:
            raise ValueError(f"unknown RobustSAM config key {unknown[0]!r}{did_you_mean(unknown[0], names)}")
        required = [f.name for f in dataclasses.fields(cls) if f.default is dataclasses.MISSING]
        missing = [k for k in required if k not in d]
        if missing:
            raise ValueError(f"RobustSAM config is missing keys {missing}")
        values = dict(d)
        values["global_attn"] = tuple(int(i) for i in values["global_attn"])
        cfg = cls(**values)
        cfg.validate()
        return cfg

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["global_attn"] = list(self.global_attn)
        return d

    def validate(self) -> None:
        for f in dataclasses.fields(self):
            values = getattr(self, f.name)
            for v in values if f.name == "global_attn" else (values,):
                if isinstance(v, bool) or not isinstance(v, int):
                    raise ValueError(f"{f.name} must be an integer, got {v!r}")
            if f.name in LIMITS and not 1 <= values <= LIMITS[f.name]:
                raise ValueError(f"{f.name} must be in 1..{LIMITS[f.name]}, got {values}")
        if self.img_size % self.patch:
            raise ValueError(f"img_size {self.img_size} is not a multiple of patch {self.patch}")
        if not self.global_attn or not all(0 <= i < self.enc_depth for i in self.global_attn):
            raise ValueError(f"global_attn {self.global_attn} must name blocks in 0..{self.enc_depth - 1}")
        if self.enc_dim % self.enc_heads or self.prompt_dim % self.dec_heads:
            raise ValueError("enc_dim / prompt_dim must be divisible by enc_heads / dec_heads")
        if self.embedding_size > MAX_EMBEDDING_SIZE:
            raise ValueError(
                f"img_size / patch = {self.embedding_size} tokens per side, more than {MAX_EMBEDDING_SIZE}")
        if len(self.global_attn) > self.enc_depth:
            raise ValueError(
                f"global_attn names {len(self.global_attn)} blocks, more than enc_depth {self.enc_depth}")

    @property
    def embedding_size(self) -> int:
        return self.img_size // self.patch


_SAM_DECODER = dict(prompt_dim=256, dec_depth=2, dec_mlp=2048, dec_heads=8, iou_hidden=256, mask_in_chans=16)
# Meta's build_sam.py values, which the official build_sam.py keeps
VARIANTS: dict[str, RobustSamConfig] = {
    "vit_b": RobustSamConfig(1024, 16, 768, 12, 12, (2, 5, 8, 11), 14, **_SAM_DECODER),
    "vit_l": RobustSamConfig(1024, 16, 1024, 24, 16, (5, 11, 17, 23), 14, **_SAM_DECODER),
    "vit_h": RobustSamConfig(1024, 16, 1280, 32, 16, (7, 15, 23, 31), 14, **_SAM_DECODER),
    # CPU-sized, trained in this project (pipelines/train_robustsam_tiny_stage{1,2}.yml): the same modules
    # at 256 px (16x16 tokens of 16 px), a 6-block ViT of width 192 with global attention in blocks 2 and 5
    # like vit_b's every third block, windows of 8 tokens, and a 128-wide prompt encoder and decoder
    "robustsam-tiny": RobustSamConfig(256, 16, 192, 6, 6, (2, 5), 8, prompt_dim=128, dec_depth=2, dec_mlp=512,
                                      dec_heads=4, iou_hidden=128, mask_in_chans=16),
}


def resolve_config(config: str | Mapping[str, Any] | RobustSamConfig) -> RobustSamConfig:
    """A variant name (``"vit_b"``/``"vit_l"``/``"vit_h"``/``"robustsam-tiny"``), a dict like ``tiny_config.json``
    or a config."""
    if isinstance(config, RobustSamConfig):
        return config
    if isinstance(config, str):
        if config not in VARIANTS:
            raise ValueError(f"unknown RobustSAM variant {config!r}{did_you_mean(config, list(VARIANTS))}")
        return VARIANTS[config]
    if isinstance(config, Mapping):
        return RobustSamConfig.from_dict(config)
    raise TypeError(f"config must be a variant name, a dict or a RobustSamConfig, got {type(config).__name__}")


# a JSON architecture file holds a dozen numbers; anything much larger is not one
MAX_CONFIG_FILE_BYTES = 1 << 16


def read_config_argument(text: str) -> str | dict[str, Any]:
    """What a user typed to name an architecture: a :data:`VARIANTS` name, or the path of a JSON file
    holding the :class:`RobustSamConfig` keys (as the reference ``tiny_config.json``).

    Returns the variant name, or the file's (validated) architecture dict. ``ValueError`` names
    the file and what is wrong with it, or lists the variant names.
    """
    if text in VARIANTS:
        return text
    path = Path(text).expanduser()
    if not (path.suffix.lower() == ".json" or path.exists() or any(sep in text for sep in ("/", os.sep))):
        raise ValueError(
            f"{text!r} is neither a RobustSAM variant ({', '.join(VARIANTS)}){did_you_mean(text, list(VARIANTS))} "
            "nor a .json file with the architecture's sizes"
        )
    if not path.is_file():
        raise ValueError(f"{text}: " + ("is a folder, not a JSON file" if path.is_dir() else "file not found"))
    try:
        if path.stat().st_size > MAX_CONFIG_FILE_BYTES:
            raise ValueError(f"{text}: {path.stat().st_size} bytes, too large for an architecture file "
                             f"(at most {MAX_CONFIG_FILE_BYTES})")
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise ValueError(f"{text}: cannot read it ({e.strerror or e})") from None
    except UnicodeDecodeError:
        raise ValueError(f"{text}: not a text file (not UTF-8)") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{text}: not valid JSON (line {e.lineno}, column {e.colno}: {e.msg})") from None
    keys = ", ".join(f.name for f in dataclasses.fields(RobustSamConfig))
    if not isinstance(data, dict):
        raise ValueError(f"{text}: holds a JSON {type(data).__name__}, not an object with the keys {keys}")
    try:
        RobustSamConfig.from_dict(data)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{text}: not a RobustSAM architecture ({e}; keys: {keys})") from None
    return data  # as written, so that it equals the same sizes given as a dict (a prior's meta)


def config_name(cfg: RobustSamConfig) -> str | None:
    """The variant name of ``cfg`` if it is one of :data:`VARIANTS`."""
    return next((name for name, v in VARIANTS.items() if v == cfg), None)


def build_robustsam_model(
    config: str | Mapping[str, Any] | RobustSamConfig, *, bn_mode: str = "running", fast: bool = True
) -> RobustSam:
    """A randomly initialised :class:`RobustSam` in eval mode (works under ``torch.device("meta")``).

    The image encoder runs ``robustsam_prior.fast_encoder``'s faster forward
    (:func:`~robustsam_prior.fast_encoder.accelerate`: same parameters, state-dict keys and outputs);
    ``fast=False`` keeps ``segment_anything``'s stock forward. ``ValueError`` for a config outside
    :data:`LIMITS` or one whose model would have more than :data:`MAX_PARAMETERS` parameters (counted
    on the meta device, before anything is allocated).
    """
    from ..core.checkpoint import count_parameters, on_meta_device

    cfg = resolve_config(config)
    n = count_parameters(on_meta_device(lambda: _build(cfg, bn_mode)))
    if n > MAX_PARAMETERS:
        raise ValueError(f"a RobustSAM of {n:,} parameters, more than the {MAX_PARAMETERS:,} allowed ({cfg})")
    model = _build(cfg, bn_mode)
    if fast:
        accelerate(model.image_encoder)
    return model.eval()


def _build(cfg: RobustSamConfig, bn_mode: str) -> RobustSam:
    emb = cfg.embedding_size
    image_encoder = ImageEncoderViTWithTap(
        tap_index=cfg.global_attn[0],
        depth=cfg.enc_depth,
        embed_dim=cfg.enc_dim,
        img_size=cfg.img_size,
        mlp_ratio=4,
        norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
        num_heads=cfg.enc_heads,
        patch_size=cfg.patch,
        qkv_bias=True,
        use_rel_pos=True,
        global_attn_indexes=cfg.global_attn,
        window_size=cfg.window,
        out_chans=cfg.prompt_dim,
    )
    prompt_encoder = PromptEncoder(
        embed_dim=cfg.prompt_dim,
        image_embedding_size=(emb, emb),
        input_image_size=(cfg.img_size, cfg.img_size),
        mask_in_chans=cfg.mask_in_chans,
    )
    mask_decoder = RobustMaskDecoder(
        transformer_dim=cfg.prompt_dim,
        transformer=TwoWayTransformer(
            depth=cfg.dec_depth, embedding_dim=cfg.prompt_dim, mlp_dim=cfg.dec_mlp, num_heads=cfg.dec_heads
        ),
        vit_dim=cfg.enc_dim,
        num_multimask_outputs=cfg.num_multimask_outputs,
        iou_head_depth=3,
        iou_head_hidden_dim=cfg.iou_hidden,
        bn_mode=bn_mode,
    )
    model = RobustSam(
        image_encoder=image_encoder, prompt_encoder=prompt_encoder, mask_decoder=mask_decoder, bn_mode=bn_mode
    )
    model.config = cfg
    return model
