"""The inference engine: a restoration model + its prior, restoring images of any size.

``Restorer.load(model, task=..., prior=..., device=...)`` takes a classical method name (``dcp``,
``identity``), a zoo name or a checkpoint path (see :mod:`restore.zoo`). A checkpoint is read with
the project's one loader (``robustsam_prior.core.checkpoint.read_checkpoint``); its metadata
(``format: robustsam-restore/restoration``, ``arch``, ``arch_kwargs``, ``task``, ``prior``) says
what to build. The prior is the checkpoint's own unless overridden.

``restorer.restore(image (1,3,H,W) float [0,1]) -> (1,3,H,W)`` float32 on the CPU, clamped to
[0, 1]. The prior runs once on the whole image; the network runs on the whole image or, above
``tile_threshold`` pixels (or when ``tile`` is set), on overlapping tiles (``restore/tiling.py``)
so that peak memory stays bounded. On CUDA it runs in float16 autocast unless ``half=False``; on
the CPU it runs in float32 channels-last and is deterministic (same input, same output).
:meth:`Restorer.restore_file` keeps the input's size, bit depth and alpha (passed through).

``self_ensemble`` trades speed for quality: the output is the mean over transformed copies of the
input (``flip``: the image and its mirror, 2 passes; ``x8``: the 8 rotations and mirrors, 8 passes),
each restored (prior included) and transformed back. This is the geometric self-ensemble of EDSR+
(Lim et al., CVPRW 2017). It suits models trained with the same flips and rotations as augmentation;
:meth:`Restorer.load` warns when a checkpoint's training config shows otherwise.
"""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from robustsam_prior.core.devices import resolve_device  # noqa: F401 (also this module's interface)
from robustsam_prior.prior import Prior, PriorOutput

from .tiling import TileSpec, tiled_forward
from .zoo import ModelRef, resolve_model

logger = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "robustsam-restore/restoration"
#: The smallest tile (pixels) ``Restorer.load`` accepts; 0 means never tile. Smaller tiles give the
#: network too little context and most of each tile goes to the overlap: on a 384x256 crop of
#: examples/hazy/coffee.png the packaged dehazer's output is 19.6 dB (PSNR) from the untiled one with
#: 64-px tiles and 26 dB with 128-px tiles.
MIN_TILE = 128
PRIORS_WITH_CHECKPOINT = ("robustsam", "sam")
# self-ensemble name -> the (quarter turns, mirror) transforms whose outputs are averaged
SELF_ENSEMBLES: dict[str, tuple[tuple[int, bool], ...]] = {
    "none": ((0, False),),
    "flip": ((0, False), (0, True)),
    "x8": tuple((k, mirror) for k in range(4) for mirror in (False, True)),
}
# the training augmentations (data.train.augment) that show a model each self-ensemble's transforms
_ENSEMBLE_NEEDS = {"flip": ("hflip",), "x8": ("rot90", "hflip")}


def _classical(name: str) -> nn.Module:
    from .baselines import ClassicalRestorer, dark_channel_prior, identity

    fn = {"dcp": dark_channel_prior, "identity": identity}[name]
    return ClassicalRestorer(fn=fn, name=name)


def load_restoration_checkpoint(path: str | os.PathLike, task: str | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """Build and load the network of a restoration checkpoint; returns ``(net in eval mode, metadata)``.

    The architecture in the metadata is checked against the size bounds of ``restore.archs`` and, built
    on the meta device, against the file's keys and shapes before the network is built for real, so the
    metadata of a small file cannot make it allocate a huge network.

    Public BasicSR-style NAFNet and SAM-Deblur checkpoints (no metadata; :mod:`restore.public_weights`)
    are accepted too: their architecture is read from the tensors, their task is ``task`` (they do not
    record one) and their prior is the one they were trained with (none; SAM's masks for SAM-Deblur).
    """
    from robustsam_prior.core.checkpoint import CheckpointError, build_for_state, load_strict, read_checkpoint

    from .archs import build_arch
    from .public_weights import convert_public_nafnet, looks_public_nafnet, prior_record

    ckpt = read_checkpoint(path)
    meta = ckpt.metadata
    state = ckpt.state_dict
    describe = None
    if not meta.get("format") and looks_public_nafnet(state):
        public = convert_public_nafnet(state, path)
        if task is None:
            raise CheckpointError(f"{path}: {public.describe()}, which does not say whether it dehazes or deblurs")
        meta = {"format": CHECKPOINT_FORMAT, "arch": public.arch, "arch_kwargs": public.arch_kwargs, "task": task,
                "prior": prior_record(public.arch), "source_format": public.describe()}
        state = public.state_dict
        describe = public.describe
        logger.info("%s: %s", path, public.describe())
    if meta.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"{path}: not a robustsam-restore restoration checkpoint (metadata format "
            f"{meta.get('format')!r}, expected {CHECKPOINT_FORMAT!r}), nor a BasicSR NAFNet or SAM-Deblur one"
        )
    for key in ("arch", "task"):
        if key not in meta:
            raise CheckpointError(f"{path}: restoration checkpoint metadata lacks {key!r}")
    kwargs = meta.get("arch_kwargs") or {}
    try:
        if not isinstance(kwargs, dict):
            raise TypeError(f"arch_kwargs is a {type(kwargs).__name__}, not a mapping")
        net = build_for_state(lambda: build_arch(meta["arch"], **kwargs), state, source=path,
                              describe=describe and (lambda _state: describe()))
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: cannot build its architecture ({_message(e)})") from e
    load_strict(net, state, source=path)
    net.eval()
    meta = {**meta, "sha256": ckpt.sha256}
    return net, meta


def _message(e: Exception) -> str:
    """The text of an exception (a KeyError's str() adds quotes)."""
    return str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)


@dataclass
class Restorer:
    """A restoration network (or classical method) with its prior and run settings."""

    net: nn.Module
    task: str
    name: str
    prior: Prior | None = None  # None when the network needs none
    metadata: dict[str, Any] = field(default_factory=dict)
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    tile: int | None = None  # tile size (load: 0 or >= MIN_TILE); None = automatic above tile_threshold; 0 = never
    overlap: int = 32
    tile_threshold: int = 2048 * 2048
    half: bool = True
    local_pool: int | None = None  # SCA statistics window in pixels (TLC; set on the net by load); None = whole image
    self_ensemble: str = "none"  # a SELF_ENSEMBLES name: the outputs averaged over flips/rotations

    @classmethod
    def load(
        cls,
        model: str | None = None,
        *,
        task: str = "dehaze",
        prior: str | None = None,
        prior_checkpoint: str | os.PathLike | None = None,
        device: str | torch.device = "auto",
        tile: int | None = None,
        overlap: int = 32,
        half: bool = True,
        local_pool: int | None = None,
        self_ensemble: str = "none",
        guided_radius: int | None = None,
        force_prior: bool = False,
        prior_config: str | dict | None = None,
        fast_encoder: bool = True,
    ) -> Restorer:
        """Resolve ``model`` (None = the task's default), load it and build its prior.

        ``prior`` names the checkpoint's prior again or, with ``force_prior``, overrides it (name only; the
        checkpoint's options are kept when the name is the same): a network fed maps of a prior it was not
        trained with is out of its training distribution, so a different name is an error without
        ``force_prior``; ``prior_checkpoint`` is the RobustSAM/SAM weight file for the
        ``robustsam``/``sam`` priors and ``prior_config`` its architecture (a variant name or a dict,
        :func:`robustsam_prior.modeling.build.read_config_argument`; None = from the file);
        ``fast_encoder=False`` runs their image encoder with ``segment_anything``'s stock forward.
        ``local_pool`` (pixels) gives the network's channel attention the mean over a window of that size
        around each pixel instead of the whole image (:meth:`restore.archs.nafnet_arch.NAFNet.set_local_pool`); None = the packaged model's own
        setting (``zoo.json``; the whole image for checkpoint files), 0 = the whole image.
        ``self_ensemble`` is a :data:`SELF_ENSEMBLES` name (module docstring). ``guided_radius`` (pixels)
        passes the network's output through the guided filter with the input as guide
        (:func:`restore.archs.nafnet_arch.guided_filter`); None = the packaged model's setting
        (``zoo.json``) or the checkpoint's own, 0 = off.
        """
        if self_ensemble not in SELF_ENSEMBLES:
            raise ValueError(f"self_ensemble must be one of {', '.join(SELF_ENSEMBLES)}, got {self_ensemble!r}")
        dev = resolve_device(device)
        if tile is not None and tile < 0:
            raise ValueError(f"tile must be >= 0 (0 = never tile), got {tile}")
        if tile is not None and 0 < tile < MIN_TILE:
            raise ValueError(
                f"tile must be 0 (never tile) or at least {MIN_TILE} pixels, got {tile}: smaller tiles give "
                "the network too little context (slower, and far from the untiled result)"
            )
        ref: ModelRef = resolve_model(model, task)
        if ref.kind == "classical":
            net, meta = _classical(ref.name), {"task": task, "arch": ref.name, "prior": None}
        else:
            net, meta = load_restoration_checkpoint(ref.path, task)
            if meta["task"] != task:
                raise ValueError(f"{ref.path}: a {meta['task']} model; it cannot {task}")
        if local_pool is None:
            local_pool = ref.local_pool
        if local_pool:
            _set_local_pool(net, local_pool, ref.name)
        if guided_radius is None and ref.guided_radius:
            guided_radius = ref.guided_radius
        if guided_radius is not None:
            _set_guided_radius(net, guided_radius, ref.name)
        net = net.to(dev)
        if dev.type == "cpu":
            net = net.to(memory_format=torch.channels_last)
        prior_obj = None
        if getattr(net, "needs_prior", False):
            trained = (meta.get("prior") or {}).get("name") or "none"
            if prior is not None and prior != trained and not force_prior:
                raise ValueError(
                    f"model {ref.name} was trained with the {trained!r} prior, not {prior!r}: its network has "
                    f"never seen {prior} maps. Leave --prior out to use {trained!r}, or pass --force-prior to "
                    "run it on the other prior anyway")
            prior_obj = _build_prior(meta.get("prior"), prior, prior_checkpoint, dev, prior_config, fast_encoder)
            _warn_other_prior_weights(meta.get("prior"), prior_obj, ref.name)
        elif prior is not None or prior_checkpoint is not None or prior_config is not None:
            logger.warning("model %s uses no prior; --prior/--prior-checkpoint/--prior-config ignored", ref.name)
        _warn_unseen_transforms(meta, self_ensemble, ref.name)
        return cls(net=net, task=task, name=ref.name, prior=prior_obj, metadata=meta, device=dev,
                   tile=tile, overlap=overlap, half=half, local_pool=local_pool or None,
                   self_ensemble=self_ensemble)

    def with_prior(self, prior: Prior | None) -> Restorer:
        """A restorer like this one whose network is conditioned on ``prior`` (or on none); the network
        and settings are shared, not copied, and this restorer is left as it is."""
        return replace(self, prior=prior)

    # ------------------------------------------------------------------ running

    def _autocast(self):
        if self.device.type == "cuda" and self.half:
            return torch.autocast("cuda", dtype=torch.float16)
        return contextlib.nullcontext()

    def _run(self, image: torch.Tensor, prior: PriorOutput | None) -> torch.Tensor:
        if self.device.type == "cpu":
            image = image.contiguous(memory_format=torch.channels_last)
        with self._autocast():
            return self.net(image, prior).float()

    def use_tiles(self, h: int, w: int) -> bool:
        """Tile when ``tile`` is set and the image is larger, or automatically above the threshold."""
        if self.tile == 0 or _is_classical(self.net):
            return False  # classical methods are global (DCP's airlight) and cheap
        if self.tile is not None:
            return max(h, w) > self.tile
        return h * w > self.tile_threshold

    @torch.inference_mode()
    def restore(self, image: torch.Tensor, *, known_prior: PriorOutput | None = None) -> torch.Tensor:
        """Restore ``image (1, 3, H, W)`` float in [0, 1]; returns ``(1, 3, H, W)`` float32 on the CPU.

        ``known_prior`` is the output of this restorer's prior on ``image`` when the caller has it already
        (a pipeline's ``prior`` step): it is used instead of running the prior on the image as given; the
        turned copies of a self-ensemble still get their own.
        """
        if image.dim() != 4 or image.shape[1] != 3:
            raise ValueError(f"restore: image must be (B, 3, H, W), got {tuple(image.shape)}")
        if known_prior is not None and self.prior is None:
            raise ValueError(f"restore: model {self.name} uses no prior; known_prior must be None")
        transforms = SELF_ENSEMBLES[self.self_ensemble]
        if len(transforms) == 1:
            return self._restore_once(image, known_prior)
        total = None
        for turns, mirror in transforms:
            known = known_prior if (turns, mirror) == (0, False) else None
            out = _untransform(self._restore_once(_transform(image, turns, mirror), known), turns, mirror)
            total = out if total is None else total.add_(out)
        return total.div_(len(transforms))

    def _restore_once(self, image: torch.Tensor, known_prior: PriorOutput | None = None) -> torch.Tensor:
        image = image.to(self.device, torch.float32)
        h, w = image.shape[-2:]
        prior = known_prior
        if prior is None and self.prior is not None:
            prior = self.prior(image)
        prior = prior.to(self.device) if prior is not None else None
        if self.use_tiles(h, w):
            size = self.tile or 1024
            spec = TileSpec(
                tile=size,
                overlap=min(self.overlap, size // 4),  # small tiles: keep most of each tile
                batch_size=4 if self.device.type == "cuda" else 1,
                multiple=getattr(self.net, "multiple", 1),
            )
            logger.info("restoring %dx%d in tiles of %d", w, h, spec.padded_tile)
            if prior is not None and hasattr(self.net, "prepare_prior"):  # whole-image MAP means
                with self._autocast():
                    prior = self.net.prepare_prior(image, prior)
            out = tiled_forward(self._run, image, prior, spec)
        else:
            out = self._run(image, prior)
        return out.clamp_(0, 1).cpu()

    def restore_file(self, src: str | os.PathLike, dst: str | os.PathLike) -> Path:
        """Read ``src``, restore it and write ``dst`` with the same size, bit depth and alpha."""
        from robustsam_prior.core.io import read_image, to_numpy, to_tensor, write_image

        data = read_image(src)
        out = to_numpy(self.restore(to_tensor(data.pixels)))
        return write_image(dst, out, alpha=data.alpha, bit_depth=data.bit_depth)


def _transform(x: torch.Tensor, turns: int, mirror: bool) -> torch.Tensor:
    """``turns`` quarter turns of the last two axes, then a left-right mirror."""
    x = torch.rot90(x, turns, (-2, -1)) if turns else x
    return x.flip(-1) if mirror else x


def _untransform(x: torch.Tensor, turns: int, mirror: bool) -> torch.Tensor:
    """The inverse of :func:`_transform`."""
    x = x.flip(-1) if mirror else x
    return torch.rot90(x, -turns, (-2, -1)) if turns else x


def _warn_unseen_transforms(meta: dict[str, Any], self_ensemble: str, name: str) -> None:
    """Warn when a checkpoint's training augmentation did not include a self-ensemble's transforms."""
    augment = ((meta.get("config") or {}).get("data", {}).get("train") or {}).get("augment")
    if self_ensemble == "none" or augment is None:  # classical methods and foreign checkpoints say nothing
        return
    missing = [a for a in _ENSEMBLE_NEEDS[self_ensemble] if not augment.get(a)]
    if missing:
        logger.warning("model %s was trained without %s augmentation, so self-ensemble %r shows it inputs it "
                       "has not seen", name, " / ".join(missing), self_ensemble)


def _set_local_pool(net: nn.Module, pixels: int, name: str) -> None:
    from .archs.nafnet_arch import NAFNet

    backbones = [m for m in net.modules() if isinstance(m, NAFNet)]
    if not backbones:
        raise ValueError(f"local_pool: model {name} has no NAFNet channel attention to localise")
    for backbone in backbones:
        backbone.set_local_pool(pixels)


def _set_guided_radius(net: nn.Module, radius: int, name: str) -> None:
    from .archs.nafnet_arch import NAFNet

    if radius < 0:
        raise ValueError(f"guided_radius must be >= 0 pixels (0 = off), got {radius}")
    backbones = [m for m in net.modules() if isinstance(m, NAFNet)]
    if not backbones:
        raise ValueError(f"guided_radius: model {name} is not a NAFNet; it has no guided output")
    for backbone in backbones:
        backbone.guided_radius = radius


def _is_classical(net: nn.Module) -> bool:
    from .baselines import ClassicalRestorer

    return isinstance(net, ClassicalRestorer)


def _warn_other_prior_weights(record: dict | None, prior: Prior, model_name: str) -> None:
    """Warn when the prior runs other weights than the ones the model was trained on (a RobustSAM prior
    whose checkpoint came from another file, ``$ROBUSTSAM_CHECKPOINT`` or ``--prior-checkpoint``): the
    network then sees masks unlike its training masks."""
    trained = (record or {}).get("checkpoint_sha256")
    used = getattr(prior, "checkpoint_sha256", None)
    if trained and used and trained != used and (record or {}).get("name") == prior.name:
        logger.warning(
            "model %s was trained on the %s prior of checkpoint sha256 %s...; this prior runs %s (sha256 %s...): "
            "its masks may differ from the ones the model learned from",
            model_name, prior.name, trained[:12], getattr(prior, "checkpoint", "another file"), used[:12])


def _build_prior(
    record: dict | None, override: str | None, checkpoint: str | os.PathLike | None, device: torch.device,
    config: str | dict | None = None, fast_encoder: bool = True,
) -> Prior:
    from robustsam_prior.prior import build_prior

    record = dict(record or {"name": "none", "options": {}})
    name = override or record.get("name") or "none"
    options = dict(record.get("options") or {}) if name == record.get("name") else {}
    for flag, value, key in (("--prior-checkpoint", checkpoint, "checkpoint"), ("--prior-config", config, "config")):
        if value is None:
            continue
        if name not in PRIORS_WITH_CHECKPOINT:
            raise ValueError(f"{flag} applies to the {'/'.join(PRIORS_WITH_CHECKPOINT)} priors, not {name!r}")
        options[key] = str(value) if key == "checkpoint" else value
    if name in PRIORS_WITH_CHECKPOINT:
        options["device"] = str(device)  # where the training ran does not matter (speed only)
        if not fast_encoder:
            options["fast_encoder"] = False
    return build_prior(name, **options)
