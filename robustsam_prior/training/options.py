"""Typed, frozen options of a RobustSAM anti-degradation training run (``kind: robustsam`` recipes).

Plain stdlib dataclasses, like ``restore.training.options``: ``pipelines.config`` validates YAML into
them (key-path errors, "did you mean", ``2e-4`` as a number, ``key=value`` overrides, the resolved
config saved) and :func:`robustsam_prior.training.trainer.train_from_options` runs them. Field
metadata (``help``, ``min``, ``max``, ``exists``, ``min_len``) drives validation and the JSON Schema;
``check()`` raises ``ValueError("key: message")`` for cross-field rules. Nothing here imports torch.

Defaults follow the official RobustSAM training code (Adam lr 1e-4, weight decay 1e-5,
gradient clip 1.0, 3 positive points, loss weights focal 20 / dice 1 / token 2 / feature 100), except
that SAM stays frozen (``train.train_sam_decoder: false``) as the paper says.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from ..core.fields import option_field as _f
from ..core.fields import required_option_field as _req

VARIANT_NAMES = ("vit_b", "vit_l", "vit_h", "robustsam-tiny")
# the paper's 15 Robust-Seg degradations (robustsam_prior.degradations.ROBUST_SEG_SET) is the default:
# ``data.degradations: null``


@dataclass(frozen=True)
class RobustSamArchOptions:
    """A custom RobustSAM architecture; keys as the reference ``tiny_config.json``
    (``robustsam_prior.modeling.build.RobustSamConfig``)."""

    img_size: int = _req("encoder input side in pixels (a multiple of patch)", min=1)
    patch: int = _req("ViT patch size", min=1)
    enc_dim: int = _req("ViT width", min=1)
    enc_depth: int = _req("ViT depth (blocks)", min=1)
    enc_heads: int = _req("ViT attention heads", min=1)
    global_attn: tuple[int, ...] = _req("indexes of global-attention blocks (the first is the early-feature tap)",
                                        min_len=1)
    window: int = _req("window size of the other ViT blocks", min=1)
    prompt_dim: int = _req("prompt / two-way transformer width", min=1)
    dec_depth: int = _req("two-way transformer depth", min=1)
    dec_mlp: int = _req("two-way transformer MLP width", min=1)
    dec_heads: int = _req("two-way transformer heads", min=1)
    iou_hidden: int = _req("IoU head width", min=1)
    mask_in_chans: int = _req("prompt-encoder mask channels", min=1)
    num_multimask_outputs: int = _f(3, "multimask outputs (3 in every official model)", min=1)

    def check(self) -> None:  # the rules of RobustSamConfig.validate, with key paths
        if self.img_size % self.patch:
            raise ValueError(f"img_size: {self.img_size} is not a multiple of patch {self.patch}")
        bad = [i for i in self.global_attn if not 0 <= i < self.enc_depth]
        if bad:
            raise ValueError(f"global_attn: {bad[0]} is not a block index in 0..{self.enc_depth - 1}")
        if self.enc_dim % self.enc_heads:
            raise ValueError(f"enc_heads: {self.enc_heads} does not divide enc_dim {self.enc_dim}")
        if self.prompt_dim % self.dec_heads:
            raise ValueError(f"dec_heads: {self.dec_heads} does not divide prompt_dim {self.prompt_dim}")


@dataclass(frozen=True)
class RobustSamModelOptions:
    """The model to train: an official size or a custom ``arch``, and the weights to start from."""

    variant: Literal["vit_b", "vit_l", "vit_h", "robustsam-tiny"] | None = _f(
        None, "a size of the variants table (the official ones, or robustsam-tiny); null = take it from the "
        "checkpoint, or use arch")
    arch: RobustSamArchOptions | None = _f(None, "custom (e.g. tiny) architecture instead of a variant")
    checkpoint: str | None = _f(
        None, "starting weights: a RobustSAM checkpoint (robustsam_checkpoint_b.pth or this project's "
        ".safetensors) or, with fresh_robust_modules, a Meta SAM one (sam_vit_b_01ec64.pth); null = random",
        exists="file")
    fresh_robust_modules: bool = _f(
        False, "accept a SAM checkpoint and initialise the six RobustSAM modules randomly")
    robust_tokens_from_sam: bool = _f(
        False, "start the robust output tokens from SAM's mask tokens and robust_mlp from SAM's first "
        "hypernetwork MLP (the paper's fine-tuned output token) instead of the official random draw; a resumed "
        "run takes them from its saved state")

    def check(self) -> None:
        if self.variant is not None and self.arch is not None:
            raise ValueError("arch: give either variant or arch, not both")
        if self.variant is None and self.arch is None and self.checkpoint is None:
            raise ValueError("variant: needs a variant, an arch or a checkpoint to build the model from")
        if self.fresh_robust_modules and self.checkpoint is None:
            raise ValueError("fresh_robust_modules: only meaningful with a (SAM) checkpoint")

    def model_config(self) -> str | dict[str, Any] | None:
        """What ``build_robustsam(config, ...)`` takes: a variant name, a dict, or None (from the file)."""
        if self.arch is not None:
            d = {k: getattr(self.arch, k) for k in self.arch.__dataclass_fields__}
            d["global_attn"] = list(d["global_attn"])
            return d
        return self.variant


@dataclass(frozen=True)
class RobustSamDataOptions:
    """Clear/degraded pairs with a ground-truth instance mask and prompts drawn from it.

    ``source: shapes``: the built-in procedural scenes (``robustsam_prior.data.shapes``, exact masks,
    no download), ``scenes`` of them at the model's input size. ``source: folder``: your images in
    ``images_dir`` with label masks of the same stem in ``masks_dir`` (8/16-bit PNG or TIFF, 0 =
    background, every other value one instance; :class:`robustsam_prior.training.data.FolderDataset`),
    resized so that the longest side is ``image_size`` (null = the model's input size), aspect ratio
    kept. Each pair's degraded image is drawn
    uniformly from ``degradations`` (+ the identity when ``identity``) at a severity drawn from
    ``severities`` — the paper's "15 degradations + identity mapping".
    """

    source: Literal["shapes", "folder"] = _f(
        "shapes", "where scenes come from: built-in procedural shapes, or images_dir + masks_dir")
    scenes: int = _f(64, "shapes: number of distinct scenes", min=1)
    images_dir: str | None = _f(None, "folder: the images", exists="dir")
    masks_dir: str | None = _f(
        None, "folder: label masks named like their images (stem), 8/16-bit PNG or TIFF, 0 = background, "
        "every other value one instance", exists="dir")
    include: tuple[str, ...] = _f(("*",), "folder: glob patterns of image file names to use", min_len=1)
    exclude: tuple[str, ...] = _f((), "folder: glob patterns of image file names to leave out")
    cache_images: int = _f(16, "folder: decoded scenes kept in memory (least recently used dropped first)", min=0)
    image_size: int | None = _f(
        None, "shapes: scene side; folder: longest side after resizing (null = the model's input size)", min=8)
    degradations: tuple[str, ...] | None = _f(
        None, "degradation names from robustsam_prior.degradations (null = the paper's 15 Robust-Seg ones)")
    severities: tuple[int, ...] = _f((1, 2, 3, 4, 5), "severities to draw from (1..5)", min_len=1)
    identity: bool = _f(True, "also draw the identity mapping (degraded = clear)")
    num_points: int = _f(3, "positive point prompts per pair (official: 3)", min=1)
    prompt: Literal["points", "box", "both", "mixed"] = _f(
        "points", "prompts given to both branches; mixed: a different kind each step (train.stage sam: one point "
        "with three masks, a box, num_points points; robust: points, box)")
    instance: Literal["random", "largest"] = _f("random", "which instance of a scene is the target")
    instances: int = _f(1, "prompts per image (train.stage sam: that many instances of each scene, each its "
                        "own prompt, for one encoding; stage robust: 1)", min=1)

    def check(self) -> None:
        if self.source == "folder":
            for key in ("images_dir", "masks_dir"):
                if getattr(self, key) is None:
                    raise ValueError(f"{key}: required for source 'folder'")
        else:
            for key in ("images_dir", "masks_dir"):
                if getattr(self, key) is not None:
                    raise ValueError(f"{key}: only for source 'folder'")
        bad = [s for s in self.severities if not 1 <= s <= 5]
        if bad:
            raise ValueError(f"severities: expected values in 1..5, got {bad[0]}")
        if self.degradations is not None:
            if not self.degradations and not self.identity:
                raise ValueError("degradations: empty, and identity is false: nothing to draw")
            from robustsam_prior.core.registry import did_you_mean
            from robustsam_prior.degradations import DEGRADATIONS  # registry names (no weights)

            known = list(DEGRADATIONS.names())
            for i, name in enumerate(self.degradations):
                if name not in known:
                    raise ValueError(f"degradations[{i}]: unknown degradation {name!r}{did_you_mean(name, known)}")


@dataclass(frozen=True)
class RobustSamLossOptions:
    """Loss weights (official RobustSAM ``engine.py``): total = focal * Focal +
    dice * Dice (degraded-image mask vs ground truth) + token * MSE(tokens) + feature * MSE(mask features)."""

    focal: float = _f(20.0, "weight of the sigmoid focal loss", min=0.0)
    dice: float = _f(1.0, "weight of the Dice loss", min=0.0)
    token: float = _f(2.0, "weight of the output-token consistency loss (L_TC)", min=0.0)
    feature: float = _f(100.0, "weight of the mask-feature consistency loss (L_MFC)", min=0.0)
    iou: float = _f(1.0, "train.stage sam: weight of the IoU-head MSE (SAM's 1)", min=0.0)

    def check(self) -> None:
        if not (self.focal or self.dice or self.token or self.feature or self.iou):
            raise ValueError("feature: every loss weight is 0")


@dataclass(frozen=True)
class RobustSamOptimOptions:
    """Adam, as the official code."""

    lr: float = _f(1e-4, "learning rate (official: 1e-4; at most 1: Adam's step is about lr per weight)",
                   min=0.0, max=1.0)
    weight_decay: float = _f(1e-5, "Adam (L2) weight decay (official: 1e-5)", min=0.0, max=1.0)
    grad_clip: float = _f(1.0, "gradient-norm clip (official: 1.0)", min=0.0)

    def check(self) -> None:
        if self.lr <= 0:
            raise ValueError(f"lr: must be > 0, got {self.lr}")
        if self.grad_clip <= 0:
            raise ValueError(f"grad_clip: must be > 0, got {self.grad_clip}")


@dataclass(frozen=True)
class RobustSamLoopOptions:
    """Steps, batch, what trains, logging and the device."""

    stage: Literal["robust", "sam"] = _f(
        "robust", "robust: stage 2, the anti-degradation modules on a frozen SAM (the paper's training); sam: "
        "stage 1, SAM's own parts from scratch on clean images (needs data.degradations: [])")
    steps: int = _f(1000, "optimizer steps", min=1)
    batch_size: int = _f(2, "pairs per step", min=1)
    train_sam_decoder: bool = _f(
        False, "also train SAM's mask decoder as the official code does (false = the paper's frozen SAM)")
    detach_targets: bool = _f(False, "no gradient through the clear (target) branch")
    bn_mode: Literal["batch", "running"] = _f("batch", "BatchNorm statistics while training (official: batch)")
    log_every: int = _f(10, "append the loss terms to log.jsonl every N steps (the first and last always)", min=1)
    checkpoint_every: int = _f(
        0, "write models/step_NNNNNNN.safetensors + state/latest.pt every N steps (0 = only at the end)", min=0)
    keep_checkpoints: int = _f(3, "periodic weight files kept (the oldest are deleted; final is always kept)", min=1)
    device: str = _f("cpu", "cpu, cuda, cuda:N or auto")
    threads: int | None = _f(None, "torch CPU threads (null = torch's default)", min=1)
    fast_encoder: bool = _f(
        True, "run the frozen image encoder through robustsam_prior.fast_encoder (same outputs, faster); "
        "false = segment_anything's stock forward")

    def check(self) -> None:
        from ..core.devices import is_device_name

        if not is_device_name(self.device):
            raise ValueError(f"device: expected cpu, cuda, cuda:N or auto, got {self.device!r}")


@dataclass(frozen=True)
class RobustSamTrainConfig:
    """A RobustSAM anti-degradation training recipe (``kind: robustsam``):
    ``robustsam-restore train RECIPE.yml [key=value ...] [--resume]``."""

    kind: Literal["robustsam"] = _f("robustsam", "what is trained")
    name: str = _f("robustsam", "run name (recorded in the checkpoint)")
    seed: int = _f(0, "seed of initialisation, scenes, pairs, degradations and prompts (0 .. 2**31 - 1, within "
                   "numpy's and torch's range)", min=0, max=2**31 - 1)
    output_dir: str = _f("runs/robustsam", "folder for the weights, training state, log and resolved config")
    model: RobustSamModelOptions = _f(RobustSamModelOptions, "the model and its starting weights")
    data: RobustSamDataOptions = _f(RobustSamDataOptions, "training pairs")
    losses: RobustSamLossOptions = _f(RobustSamLossOptions, "loss weights")
    optim: RobustSamOptimOptions = _f(RobustSamOptimOptions, "optimizer")
    train: RobustSamLoopOptions = _f(RobustSamLoopOptions, "optimisation loop")

    def check(self) -> None:
        if self.train.stage == "robust" and self.data.instances != 1:
            raise ValueError("data.instances: train.stage robust prompts one instance per pair; set 1")
        if self.train.stage == "sam" and (self.data.degradations is None or self.data.degradations):
            raise ValueError("data.degradations: train.stage sam trains on clean images only; set "
                             "data.degradations: [] (the degraded copies would be drawn and never used)")
