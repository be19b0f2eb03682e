"""Typed, frozen options of a restoration training run (what ``robustsam-restore train`` YAML holds).

These are plain dataclasses: ``pipelines.config`` validates YAML into them (key-path errors,
"did you mean", ``2e-4`` as a number) and the trainer consumes them; nothing here reads YAML.
Field metadata (``help``, ``min``, ``max``, ``exists``) drives validation and the JSON Schema.
``check()`` methods raise ``ValueError("key: message")`` for cross-field rules.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from robustsam_prior.core.fields import option_field as _f


@dataclass(frozen=True)
class ModelOptions:
    """The restoration network: a name from ``restore.archs`` and its keyword arguments."""

    arch: str = _f("nafnet", "architecture name in restore.archs (nafnet, map_nafnet, fusion_nafnet)")
    arch_kwargs: dict[str, Any] = _f(dict, "keyword arguments of the architecture (width, blocks, ...)")
    init: str | None = _f(None, "restoration checkpoint (.safetensors) to start from (fine-tuning), or a public "
                          "BasicSR NAFNet / SAM-Deblur MAP-NAFNet .pth for arch nafnet / map_nafnet", exists="file")

    def check(self) -> None:
        from restore.archs import check_arch_kwargs  # the size bounds of the architectures (no torch)

        check_arch_kwargs(self.arch_kwargs)


@dataclass(frozen=True)
class PriorOptions:
    """The segmentation prior fed to the network, computed on the degraded input."""

    name: str = _f("none", "prior name: robustsam, sam, regions or none")
    options: dict[str, Any] = _f(dict, "keyword arguments of build_prior (checkpoint, settings)")
    cache_dir: str | None = _f(None, "PriorCache folder for priors of whole images (paired data, variants)")
    cache_only: bool = _f(
        False,
        "read every whole-image prior (training and validation) from cache_dir, filled beforehand by "
        "robustsam-restore prior-cache; a missing entry is an error naming the image (the prior is never run)")

    def check(self) -> None:
        if self.cache_only and not self.cache_dir:
            raise ValueError("cache_only: needs cache_dir (the folder robustsam-restore prior-cache filled)")


@dataclass(frozen=True)
class DegradationOptions:
    """On-the-fly synthesis from clean images with robustsam_prior.degradations (seeded per sample)."""

    kinds: tuple[str, ...] = _f(("haze",), "degradation kinds, one drawn uniformly per sample", min_len=1)
    severity: tuple[int, int] = _f((1, 5), "inclusive severity range [low, high] drawn per sample")
    gamma: float = _f(1.0, "degrade in linear light: x**gamma, degrade, then **(1/gamma); 2.2 as GoPro's blur, "
                      "which averages frames after undoing a gamma-2.2 camera response (Nah et al., CVPR 2017); "
                      "1 = degrade the stored values", min=0.1, max=5.0)

    def check(self) -> None:
        lo, hi = self.severity
        if not 1 <= lo <= hi <= 5:
            raise ValueError(f"severity: expected 1 <= low <= high <= 5, got [{lo}, {hi}]")


@dataclass(frozen=True)
class AugmentOptions:
    """Joint augmentation: the same flip/rot90/scale is applied to input, ground truth and label map."""

    hflip: bool = _f(True, "random horizontal flip")
    vflip: bool = _f(True, "random vertical flip")
    rot90: bool = _f(True, "random rotation by k*90 degrees")
    scale: tuple[float, float] = _f((1.0, 1.0), "random rescale range [low, high] before cropping")
    color: float = _f(0.0, "strength of brightness/contrast/saturation gains (1 +- color) on ground truth and input alike", min=0.0, max=1.0)

    def check(self) -> None:
        lo, hi = self.scale
        if not 0 < lo <= hi:
            raise ValueError(f"scale: expected 0 < low <= high, got [{lo}, {hi}]")


@dataclass(frozen=True)
class DatasetOptions:
    """Training or validation images.

    ``synthetic``: clean images in ``clean_dir`` degraded on the fly (``degradation``).
    ``paired``: degraded images in ``lq_dir`` matched to ground truth in ``gt_dir`` by ``gt_match``:
    ``name`` (same file name), ``stem`` (same name without extension) or ``prefix`` (the ground truth
    is the input's stem up to the first ``_``, as RESIDE names hazy ``0001_0.8_0.2.png`` for ``0001.png``).
    ``video``: folders of consecutive sharp frames of high-frame-rate video in ``video_dir``; the input
    is the mean of ``frames`` consecutive frames (in linear light with ``frame_gamma``), the ground truth
    the middle one (the GoPro dataset's synthesis, Nah et al., CVPR 2017).
    ``depth_haze``: clean images in ``clean_dir`` with metric depth maps in ``depth_dir`` (``.npy`` or
    16-bit PNG in millimetres, matched by stem), hazed by the scattering model ``t = exp(-beta d)`` with
    ``beta`` per metre and a grey ``airlight`` drawn per variant (RESIDE's ITS recipe, Li et al., TIP 2019).
    """

    type: Literal["synthetic", "paired", "video", "depth_haze"] = _f("synthetic", "where pairs come from")
    name: str | None = _f(None, "label of this set in logs (validation metrics val_<name>/...; mixture parts)")
    weight: float = _f(1.0, "training mixture: relative share of samples drawn from this set (data.train "
                       "and each data.train_extra)", min=0.0)
    clean_dir: str | None = _f(None, "synthetic, depth_haze: folder of clean images (pkg://skimage.data allowed)",
                               exists="dir")
    extra_clean_dirs: tuple[str, ...] = _f(
        (), "synthetic: more folders of clean images, filtered by the same include/exclude (pkg:// allowed)")
    dead_leaves: int = _f(
        0, "synthetic: add this many procedural dead-leaves images (restore/training/procedural.py, seeded) to the "
        "clean images", min=0)
    dead_leaves_size: int = _f(384, "synthetic: side in pixels of each dead-leaves image", min=8)
    lq_dir: str | None = _f(None, "paired: folder of degraded images", exists="dir")
    gt_dir: str | None = _f(None, "paired: folder of ground-truth images", exists="dir")
    gt_match: Literal["name", "stem", "prefix"] = _f("stem", "paired: how input names map to ground truth")
    video_dir: str | None = _f(
        None, "video: folder of frame sequences (each sub-folder of image files is one sequence, or the folder "
        "itself when it holds the frames)", exists="dir")
    frames: tuple[int, int] = _f((7, 13), "video: inclusive range of the number N of consecutive frames averaged "
                                 "per input, drawn per variant (GoPro: 7-13); the ground truth is frame N // 2")
    frame_gamma: float = _f(2.2, "video: average in linear light, frames**gamma then mean then **(1/gamma) "
                            "(an inverse gamma-2.2 camera response as GoPro's); 1 = average the stored values",
                            min=0.1, max=5.0)
    frame_step: int = _f(1, "video: use every k-th frame as a window centre (e.g. sparser validation)", min=1)
    depth_dir: str | None = _f(None, "depth_haze: folder of metric depth maps matching clean_dir by stem",
                               exists="dir")
    beta: tuple[float, float] = _f((0.05, 0.4), "depth_haze: scattering coefficient range per metre")
    quantise: bool = _f(False, "round degraded inputs to 8 bits, as a degraded photo saved to disk is (fixed variants "
                        "are then also kept in memory as 8-bit, a quarter of the float size); video inputs always are")
    crop_border: int = _f(0, "pixels cut from each side of every image (and depth map) when it is read, e.g. "
                          "the white frame of NYU-Depth-v2 photos", min=0)
    airlight: tuple[float, float] = _f((0.7, 1.0), "depth_haze: grey airlight range")
    include: tuple[str, ...] = _f(("*",), "glob patterns of file names to use")
    exclude: tuple[str, ...] = _f((), "glob patterns of file names to leave out (e.g. held-out images)")
    recursive: bool = _f(False, "look into sub-folders")
    degradation: DegradationOptions | None = _f(None, "synthetic: how clean images are degraded")
    variants: int = _f(
        0,
        "synthetic: 0 = a fresh degradation per sample with the prior computed on the crop; N > 0 = N fixed "
        "degraded versions per image whose prior is computed once on the whole image and cropped",
        min=0,
    )
    crop_size: int = _f(128, "square crop side in pixels; 0 = whole image (validation)", min=0)
    augment: AugmentOptions = _f(AugmentOptions, "joint augmentation (training only)")
    max_images: int | None = _f(None, "use at most this many images (sorted by name)", min=1)
    grayscale_ok: bool = _f(True, "accept grayscale images (converted to RGB)")
    cache_images: int = _f(
        512, "decoded images (and degraded variants with their label maps) kept in memory, least recently used "
        "dropped first; use prior.cache_dir so dropped label maps are read back instead of recomputed", min=0)

    def check(self) -> None:
        required = {"synthetic": ("clean_dir", "degradation"), "paired": ("lq_dir", "gt_dir"),
                    "video": ("video_dir",), "depth_haze": ("clean_dir", "depth_dir")}[self.type]
        for key in required:
            if getattr(self, key) is None:
                raise ValueError(f"{key}: required for type {self.type!r}")
        owners = {"clean_dir": ("synthetic", "depth_haze"), "extra_clean_dirs": ("synthetic", "depth_haze"),
                  "degradation": ("synthetic",), "dead_leaves": ("synthetic",), "lq_dir": ("paired",),
                  "gt_dir": ("paired",), "video_dir": ("video",), "depth_dir": ("depth_haze",),
                  "variants": ("synthetic", "video", "depth_haze")}
        for key, types in owners.items():
            if self.type not in types and getattr(self, key):
                raise ValueError(f"{key}: only for type {' or '.join(repr(t) for t in types)}")
        lo, hi = self.frames
        if not 1 <= lo <= hi:
            raise ValueError(f"frames: expected 1 <= low <= high, got [{lo}, {hi}]")
        for key in ("beta", "airlight"):
            lo, hi = getattr(self, key)
            if not 0 <= lo <= hi:
                raise ValueError(f"{key}: expected 0 <= low <= high, got [{lo}, {hi}]")
        if self.airlight[1] > 1:
            raise ValueError(f"airlight: must be <= 1, got {self.airlight[1]}")


@dataclass(frozen=True)
class DataOptions:
    train: DatasetOptions = _f(None, "training pairs")
    train_extra: tuple[DatasetOptions, ...] = _f(
        (), "more training sets mixed with data.train, each sample drawn from one set with probability "
        "proportional to its weight (all share data.train's crop_size)")
    val: DatasetOptions | None = _f(None, "held-out validation pairs (fixed degradations, seeded)")
    val_extra: tuple[DatasetOptions, ...] = _f(
        (), "more validation sets, each with a name; logged as val_<name>/<metric>")
    val_seed: int | None = _f(
        None, "seed of the validation sets' fixed draws (degradations, frame counts); null = the recipe seed + "
        "1000003, so recipes with other seeds validate on other draws: give stages one val_seed to compare them")

    def check(self) -> None:
        if self.train is None:
            raise ValueError("train: missing required key")
        for i, extra in enumerate(self.train_extra):
            if extra.crop_size != self.train.crop_size:
                raise ValueError(f"train_extra[{i}].crop_size: must equal train.crop_size "
                                 f"({self.train.crop_size}), got {extra.crop_size}")
        names = [v.name for v in self.val_extra]
        for i, name in enumerate(names):
            if not name:
                raise ValueError(f"val_extra[{i}].name: required (the metrics are logged as val_<name>/...)")
            if names.index(name) != i:
                raise ValueError(f"val_extra[{i}].name: {name!r} is used twice")
        if self.train.crop_size == 0:
            raise ValueError("train.crop_size: training needs a crop size >= 8")
        if self.train.crop_size < 8:
            raise ValueError(f"train.crop_size: must be >= 8, got {self.train.crop_size}")


@dataclass(frozen=True)
class OptimOptions:
    type: Literal["adamw", "adam"] = _f("adamw", "optimizer")
    lr: float = _f(1e-3, "peak learning rate (at most 1: Adam's step is about lr per weight)", min=0.0, max=1.0)
    weight_decay: float = _f(1e-3, "decoupled weight decay (adamw)", min=0.0, max=1.0)
    betas: tuple[float, float] = _f((0.9, 0.9), "Adam betas (SAM-Deblur/NAFNet use 0.9, 0.9)")

    def check(self) -> None:
        if not all(0.0 <= b < 1.0 for b in self.betas):
            raise ValueError(f"betas: each must be in [0, 1), got {list(self.betas)}")


@dataclass(frozen=True)
class SchedulerOptions:
    type: Literal["cosine", "constant"] = _f("cosine", "learning-rate schedule after the warm-up")
    warmup_iters: int = _f(0, "linear warm-up from 0 over this many iterations", min=0)
    eta_min: float = _f(1e-7, "final learning rate of the cosine schedule", min=0.0, max=1.0)


@dataclass(frozen=True)
class LossTerm:
    type: Literal["l1", "charbonnier", "mse", "psnr", "fft"] = _f(
        "l1", "loss function (fft: L1 on the unnormalised 2-D spectrum, restore.training.losses.fft_loss)")
    weight: float = _f(1.0, "weight of this term", min=0.0)
    eps: float = _f(1e-6, "charbonnier: epsilon (added to the squared difference)", min=0.0)


@dataclass(frozen=True)
class EmaOptions:
    enabled: bool = _f(True, "keep an exponential moving average of the weights (saved and validated)")
    decay: float = _f(0.999, "EMA decay (ramped up as min(decay, (1+t)/(10+t)))", min=0.0, max=1.0)


@dataclass(frozen=True)
class LoopOptions:
    """Optimisation, logging and checkpointing."""

    iterations: int = _f(1000, "number of optimizer steps", min=1)
    batch_size: int = _f(8, "global batch size (split evenly over DDP ranks)", min=1)
    optim: OptimOptions = _f(OptimOptions, "optimizer")
    scheduler: SchedulerOptions = _f(SchedulerOptions, "learning-rate schedule")
    losses: tuple[LossTerm, ...] = _f((LossTerm(),), "weighted sum of loss terms", min_len=1)
    grad_clip: float | None = _f(None, "clip the gradient norm to this value (null = off)", min=0.0)
    ema: EmaOptions = _f(EmaOptions, "weight EMA")
    val_every: int = _f(0, "validate every N iterations (0 = only at the end)", min=0)
    checkpoint_every: int = _f(0, "write weights + training state every N iterations (0 = only at the end)", min=0)
    log_every: int = _f(10, "log losses every N iterations", min=1)
    keep_checkpoints: int = _f(3, "how many periodic weight files to keep (the final one is always kept)", min=1)
    device: str = _f("cpu", "cpu, cuda, cuda:N or auto")
    threads: int | None = _f(None, "torch CPU threads per process (null = torch's default)", min=1)
    num_workers: int = _f(0, "DataLoader worker processes", min=0)
    deterministic: bool = _f(True, "torch.use_deterministic_algorithms (exact resume on CPU)")
    channels_last: bool = _f(True, "channels-last tensors (about 20% faster NAFNet training on CPU)")
    tensorboard: bool = _f(True, "write TensorBoard logs under OUTPUT_DIR/tb")

    def check(self) -> None:
        from robustsam_prior.core.devices import is_device_name

        if not is_device_name(self.device):
            raise ValueError(f"device: expected cpu, cuda, cuda:N or auto, got {self.device!r}")
        if self.scheduler.warmup_iters >= self.iterations and self.scheduler.warmup_iters > 0:
            raise ValueError(
                f"scheduler.warmup_iters: must be < iterations ({self.iterations}), got {self.scheduler.warmup_iters}"
            )


@dataclass(frozen=True)
class TrainConfig:
    """A training recipe: ``robustsam-restore train RECIPE.yml [key=value ...] [--resume]``."""

    kind: Literal["restoration", "robustsam"] = _f("restoration", "what is trained")
    name: str = _f("run", "run name (recorded in checkpoints)")
    task: Literal["dehaze", "deblur"] = _f("dehaze", "restoration task recorded in the checkpoint")
    seed: int = _f(0, "seed of data order, crops, augmentation, degradations and initialisation (0 .. 2**31 - 1, "
                   "so that the seeds derived from it stay within numpy's and torch's range)", min=0, max=2**31 - 1)
    output_dir: str = _f("runs/run", "folder for checkpoints, logs and the resolved config")
    model: ModelOptions = _f(ModelOptions, "restoration network")
    prior: PriorOptions = _f(PriorOptions, "segmentation prior")
    data: DataOptions = _f(None, "training and validation data")
    train: LoopOptions = _f(LoopOptions, "optimisation loop")

    def check(self) -> None:
        if self.data is None:
            raise ValueError("data: missing required key")
