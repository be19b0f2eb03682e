"""Public NAFNet weights: BasicSR-style checkpoints of megvii-research/NAFNet and SAM-Deblur.

Those files are ``torch.save`` dicts ``{"params": state}`` and/or ``{"params_ema": state}`` (BasicSR's
``save_network``; :func:`robustsam_prior.core.checkpoint.read_checkpoint` unwraps them, preferring the EMA
weights, and strips a ``module.`` prefix) with no metadata, so the architecture is read from the
tensors:

- official NAFNet (``NAFNet_arch.py``): ``intro``, ``encoders.<level>.<block>.*``, ``downs.<level>``,
  ``middle_blks.<block>.*``, ``ups.<level>.0``, ``decoders.<level>.<block>.*``, ``ending``; each block
  ``norm1``, ``conv1``..``conv5``, ``sca.1`` (the 1x1 conv after the pooling), ``norm2``, ``beta``,
  ``gamma``. It becomes this project's ``nafnet``: the same network, whose keys differ only in
  ``middle_blks`` -> ``middle`` and ``sca.1`` -> ``sca``.
- SAM-Deblur's SegNAFNet (MAP-NAFNet): the same plus ``pre_seg`` (3x3 conv) and ``pre_seg_in`` (1x1)
  in front, ``intro`` taking 3 + S channels. It becomes ``map_nafnet`` (``map.pre_seg*`` and
  ``backbone.*``) with ``seg_channels`` S; its masks come from SAM, so its prior is ``sam``.

``width`` is ``intro``'s output channels; the number of levels that of ``downs`` (and ``ups``); the
blocks per level, and in the middle, are counted from the block indexes. Any other key is an error
naming it, as is a network that does not restore RGB images.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from robustsam_prior.core.checkpoint import CheckpointError

_BLOCK_PARAM = r"(?:norm[12]\.(?:weight|bias)|conv[1-5]\.(?:weight|bias)|sca\.1\.(?:weight|bias)|beta|gamma)"
_KEY = re.compile(
    rf"^(?:(?P<stage>encoders|decoders)\.(?P<level>\d+)\.(?P<block>\d+)\.{_BLOCK_PARAM}"
    rf"|middle_blks\.(?P<mblock>\d+)\.{_BLOCK_PARAM}"
    r"|(?:downs\.(?P<down>\d+)|ups\.(?P<up>\d+)\.0)\.(?:weight|bias)"
    r"|(?:intro|ending|pre_seg|pre_seg_in)\.(?:weight|bias))$"
)
# what SAM-Deblur's pre_seg adds to the official keys
_MAP_KEYS = ("pre_seg.weight", "pre_seg_in.weight")
SOURCES = {"nafnet": "BasicSR NAFNet (megvii-research/NAFNet)", "map_nafnet": "SAM-Deblur MAP-NAFNet (SegNAFNet)"}


@dataclass(frozen=True)
class PublicNafnet:
    """A public checkpoint translated: ``arch``/``arch_kwargs`` for ``restore.archs.build_arch`` and
    ``state_dict`` in this project's key names."""

    arch: str
    arch_kwargs: dict[str, Any]
    state_dict: dict[str, torch.Tensor]

    def describe(self) -> str:
        k = self.arch_kwargs
        seg = f", seg_channels {k['seg_channels']}" if "seg_channels" in k else ""
        return (f"a {SOURCES[self.arch]} checkpoint: width {k['width']}, enc_blocks {list(k['enc_blocks'])}, "
                f"middle_blocks {k['middle_blocks']}, dec_blocks {list(k['dec_blocks'])}{seg}")


def looks_public_nafnet(state: Mapping[str, torch.Tensor]) -> bool:
    """True for a state dict with the official NAFNet key names (``intro``, ``ending``, ``middle_blks``
    or ``downs``), SAM-Deblur's included."""
    return "intro.weight" in state and "ending.weight" in state and any(
        k.startswith(("middle_blks.", "downs.")) for k in state)


def _count(indexes: set[int], what: str, source: str) -> int:
    """``max + 1`` of ``indexes`` after checking they run 0..max without a gap."""
    if indexes != set(range(len(indexes))):
        raise CheckpointError(f"{source}: {what} indexes {sorted(indexes)} have gaps; not a NAFNet checkpoint")
    return len(indexes)


def convert_public_nafnet(state: Mapping[str, torch.Tensor], source: str | os.PathLike) -> PublicNafnet:
    """Translate a public NAFNet / SAM-Deblur state dict (see the module docstring).

    ``CheckpointError`` naming ``source`` for keys that belong to neither network, gaps in the block
    indexes, or a network whose input or output is not an RGB image.
    """
    unknown = [k for k in state if not _KEY.match(k)]
    if unknown:
        raise CheckpointError(
            f"{source}: looks like a BasicSR NAFNet checkpoint but has keys that neither NAFNet nor SAM-Deblur's "
            f"MAP-NAFNet has: {', '.join(unknown[:5])}{' ...' if len(unknown) > 5 else ''}")
    levels: dict[str, dict[int, set[int]]] = {"encoders": {}, "decoders": {}}
    middle, downs, ups = set(), set(), set()
    for key in state:
        m = _KEY.match(key)
        if m["stage"]:
            levels[m["stage"]].setdefault(int(m["level"]), set()).add(int(m["block"]))
        elif m["mblock"]:
            middle.add(int(m["mblock"]))
        elif m["down"]:
            downs.add(int(m["down"]))
        elif m["up"]:
            ups.add(int(m["up"]))
    n_down, n_up = _count(downs, "downs", str(source)), _count(ups, "ups", str(source))
    if n_down != n_up:
        raise CheckpointError(f"{source}: {n_down} downsampling and {n_up} upsampling levels; a NAFNet has as many")
    # a level without blocks has no keys: its count is 0
    blocks = {stage: [_count(by_level.get(i, set()), f"{stage}.{i}", str(source)) if i in by_level else 0
                      for i in range(n_down)]
              for stage, by_level in levels.items()}
    extra = [i for stage in levels.values() for i in stage if i >= n_down]
    if extra:
        raise CheckpointError(f"{source}: block level {max(extra)} but only {n_down} downsampling levels")
    is_map = all(k in state for k in _MAP_KEYS)
    if not is_map and any(k.startswith("pre_seg") for k in state):
        raise CheckpointError(f"{source}: has {'/'.join(_MAP_KEYS)} only in part; not a SAM-Deblur checkpoint")
    intro, ending = state["intro.weight"], state["ending.weight"]
    if intro.dim() != 4 or ending.dim() != 4:
        raise CheckpointError(f"{source}: intro.weight / ending.weight are not convolution kernels")
    seg = int(state["pre_seg.weight"].shape[0]) if is_map else 0
    if int(intro.shape[1]) != 3 + seg or int(ending.shape[0]) != 3:
        raise CheckpointError(
            f"{source}: a NAFNet for {int(intro.shape[1]) - seg}-channel input and {int(ending.shape[0])}-channel "
            "output; dehaze and deblur restore RGB images (3 channels)")
    kwargs: dict[str, Any] = {"width": int(intro.shape[0]), "enc_blocks": blocks["encoders"],
                              "middle_blocks": _count(middle, "middle_blks", str(source)) if middle else 0,
                              "dec_blocks": blocks["decoders"]}
    renamed = {}
    for key, value in state.items():
        new = key.replace("middle_blks.", "middle.", 1).replace(".sca.1.", ".sca.")
        if is_map:
            new = f"map.{new}" if new.startswith("pre_seg") else f"backbone.{new}"
        renamed[new] = value
    if is_map:
        # SAM-Deblur trains with mask dropout 0.5 (only training uses it)
        kwargs.update(seg_channels=seg, region_dropout=0.5)
    return PublicNafnet("map_nafnet" if is_map else "nafnet", kwargs, renamed)


def prior_record(arch: str) -> dict[str, Any]:
    """The prior a public network was trained with: none for NAFNet, SAM's masks for SAM-Deblur."""
    return {"name": "sam", "options": {}} if arch == "map_nafnet" else {"name": "none", "options": {}}


def read_init_state(path: str | os.PathLike, arch: str) -> dict[str, torch.Tensor]:
    """The weights of ``path`` for an ``arch`` network about to be trained (``model.init`` of a recipe):
    this project's checkpoint as it is, a public NAFNet / SAM-Deblur one in this project's key names.

    ``CheckpointError`` naming the file when a public file holds another architecture than ``arch``.
    """
    from robustsam_prior.core.checkpoint import read_checkpoint

    ckpt = read_checkpoint(path)
    if ckpt.metadata.get("format") or not looks_public_nafnet(ckpt.state_dict):
        return ckpt.state_dict
    public = convert_public_nafnet(ckpt.state_dict, path)
    if public.arch != arch:
        raise CheckpointError(f"{path}: {public.describe()}, which initialises model.arch {public.arch!r}, "
                              f"not {arch!r}")
    return public.state_dict
