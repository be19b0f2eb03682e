"""The ``robustsam`` and ``sam`` priors: automatic masks and encoder features of a RobustSAM model.

Per image ``(1, 3, H, W)`` in [0, 1]:

- ``labels``: the automatic mask generator (``RobustSamAutomaticMaskGenerator``, a grid of
  ``points_per_side``² point prompts, SAM's filtering and NMS) on the uint8 RGB image, turned into a
  partition with :func:`robustsam_prior.masks_to_label_map` (H, W) int32 at input resolution. With
  ``mask_side`` set, the generator runs on a copy whose longest side is at most ``mask_side`` pixels
  (area-averaged) and the label map is brought back to (H, W) by nearest neighbour: the model sees
  ``model.image_size`` pixels whatever the input, so masks at full resolution are only its low-resolution
  logits interpolated, and on a CPU that upsampling, its thresholds and the run-length encoding cost far
  more than the network (most of the time at 1024² for a 256-pixel model);
- ``features["image_embedding"]`` (1, D, h, w): the encoder's neck output (D = 256, h = w = 64 for the
  official 1024-pixel models); ``features["robust_mask_features"]`` (1, D/8, 4h, 4w): the
  prompt-independent part of the robust mask feature, ``model.robust_image_features`` (on the
  ``sam`` path: the same up-projections without the degradation-suppression blocks).
  Both live in the model's frame: the image resized so its longest side is ``model.image_size``
  (``ResizeLongestSide``) and zero-padded at the bottom/right to a square.

``robustsam`` runs the RobustSAM path (``path="robust"``), ``sam`` the vanilla SAM path of the
same model (``path="sam"``). The ``sam`` prior also accepts a Meta SAM checkpoint
(``sam_vit_{b,l,h}_*.pth``, the paper's "SAM as prior" baseline): its labels and
``image_embedding`` are then vanilla SAM's, and ``robust_mask_features`` is left out (those modules
are not in the file). The ``robustsam`` prior refuses a SAM checkpoint with the loader's error. Both need a checkpoint: ``checkpoint=`` a path, else
the official file of the config's variant from the Hugging Face Hub cache where a variant is named, else
``$ROBUSTSAM_CHECKPOINT``, else the packaged ``robustsam-tiny`` (:func:`robustsam_prior.hub.resolve_checkpoint`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..core.devices import resolve_device
from ..prior import PRIORS, Prior, PriorOutput

logger = logging.getLogger(__name__)


class _SegmentAnythingPrior(Prior):
    """Shared implementation; see the module docstring. ``default_path`` is set by the subclasses.

    Options: ``config`` ("vit_b"/"vit_l"/"vit_h", a dict like the reference ``tiny_config.json``, the
    path of such a JSON file, or ``None`` to take it from the checkpoint); ``checkpoint`` (a path or name; ``None``
    resolves the variant of ``config`` through the Hub cache, or without one ``$ROBUSTSAM_CHECKPOINT``, else the
    packaged ``robustsam-tiny``);
    ``points_per_side`` (automatic-mask grid); ``path`` ("robust" | "sam"); ``bn_mode``
    ("running" | "batch"); ``pred_iou_thresh``/``stability_score_thresh`` (the generator's
    filters; ``None``: the model's own, :func:`robustsam_prior.automatic.score_filters_for` its architecture,
    from ``config`` or else the checkpoint's metadata: Meta's 0.88 / 0.95, none for the packaged
    ``robustsam-tiny``); ``mask_side`` (longest side of the image the masks are computed on, ``None``
    = the input's own size); ``points_per_batch``, ``device`` and ``fast_encoder`` (speed only, not
    in the meta; ``fast_encoder=False`` runs ``segment_anything``'s stock encoder forward instead of
    ``robustsam_prior.fast_encoder``'s, whose outputs are the same).
    """

    default_path = "robust"

    def __init__(
        self,
        *,
        config: str | dict | None = None,
        checkpoint: str | Path | None = None,
        points_per_side: int = 16,
        path: str | None = None,
        bn_mode: str = "running",
        pred_iou_thresh: float | None = None,
        stability_score_thresh: float | None = None,
        mask_side: int | None = None,
        points_per_batch: int = 64,
        device: str | None = None,
        fast_encoder: bool = True,
    ) -> None:
        from ..automatic_limits import check_generator_options
        from ..core.fileio import sha256_file
        from ..hub import resolve_checkpoint

        path = path or self.default_path
        if path not in ("robust", "sam"):
            raise ValueError(f"{self.name} prior: path must be 'robust' or 'sam', got {path!r}")
        if not isinstance(fast_encoder, bool):
            raise ValueError(f"{self.name} prior: fast_encoder must be true or false, got {fast_encoder!r}")
        if bn_mode not in ("running", "batch"):
            raise ValueError(f"{self.name} prior: bn_mode must be 'running' or 'batch', got {bn_mode!r}")
        thresholds = {"pred_iou_thresh": pred_iou_thresh, "stability_score_thresh": stability_score_thresh}
        check_generator_options(
            f"{self.name} prior",
            points_per_side=points_per_side,
            points_per_batch=points_per_batch,
            **{k: v for k, v in thresholds.items() if v is not None},  # None: the model's own (below)
        )
        if mask_side is not None and (isinstance(mask_side, bool) or not isinstance(mask_side, int) or mask_side < 16):
            raise ValueError(f"{self.name} prior: mask_side must be an integer >= 16 or null, got {mask_side!r}")
        if config is not None and not isinstance(config, (str, dict)):
            raise ValueError(f"{self.name} prior: config must be 'vit_b'/'vit_l'/'vit_h' or a dict, got {config!r}")
        if isinstance(config, str):  # a variant name, or a JSON file whose sizes are kept (the meta has no path)
            from ..modeling.build import read_config_argument

            try:
                config = read_config_argument(config)
            except ValueError as e:
                raise ValueError(f"{self.name} prior: config: {e}") from None
        # no checkpoint: the variant's official file (or $ROBUSTSAM_CHECKPOINT); a dict config needs one
        ckpt = resolve_checkpoint(checkpoint if checkpoint is not None else config)
        if pred_iou_thresh is None or stability_score_thresh is None:
            from ..automatic import score_filters_for
            from ..core.checkpoint import read_checkpoint_metadata

            arch = config if config is not None else read_checkpoint_metadata(ckpt).get("config")
            thresholds = score_filters_for(arch, **thresholds)
            pred_iou_thresh, stability_score_thresh = thresholds["pred_iou_thresh"], thresholds["stability_score_thresh"]
        super().__init__(
            config=config,
            points_per_side=int(points_per_side),
            path=path,
            bn_mode=bn_mode,
            pred_iou_thresh=float(pred_iou_thresh),
            stability_score_thresh=float(stability_score_thresh),
            **({} if mask_side is None else {"mask_side": mask_side}),
        )
        self.checkpoint = Path(ckpt)
        self.checkpoint_sha256 = sha256_file(self.checkpoint)
        self.fast_encoder = fast_encoder
        self.points_per_batch = int(points_per_batch)
        self.device = resolve_device(device, what=f"{self.name} prior: device")
        self._model = None
        self._generator = None
        self.robust_features_available = True  # False once a Meta SAM checkpoint is loaded (sam path)

    @property
    def meta(self) -> dict[str, Any]:
        # the checkpoint is identified by its content, not by where it lies
        return {**super().meta, "checkpoint_sha256": self.checkpoint_sha256}

    @property
    def model(self):
        """The RobustSAM model, built and loaded on first use (eval mode, on ``self.device``)."""
        if self._model is None:
            from ..core.checkpoint import read_checkpoint
            from ..loading import build_robustsam, detect_checkpoint

            logger.info("loading the %s prior's model from %s", self.name, self.checkpoint)
            loaded = read_checkpoint(self.checkpoint)
            if loaded.sha256 != self.checkpoint_sha256:
                raise RuntimeError(f"{self.checkpoint}: the file changed since the prior was built")
            # the vanilla path also runs on Meta's SAM checkpoints (the paper's "SAM as prior"); the
            # robust modules then stay untrained, so no robust feature is returned
            sam_only = self.options["path"] == "sam" and detect_checkpoint(loaded.state_dict).kind == "sam"
            model = build_robustsam(
                self.options["config"], loaded, bn_mode=self.options["bn_mode"], fresh_robust_modules=sam_only,
                fast=self.fast_encoder,
            )
            self.robust_features_available = not sam_only
            self._model = model.to(self.device).eval()
        return self._model

    @property
    def generator(self):
        """The automatic mask generator, built on first use (no crops: its one ``set_image`` is the whole
        image). Its predictor keeps that image's encoder outputs (``keep_encoding``), so the features
        come from the same single encoder pass as the masks."""
        if self._generator is None:
            from .. import RobustSamAutomaticMaskGenerator

            o = self.options
            self._generator = RobustSamAutomaticMaskGenerator(
                self.model,
                path=o["path"],
                points_per_side=o["points_per_side"],
                points_per_batch=self.points_per_batch,
                pred_iou_thresh=o["pred_iou_thresh"],
                stability_score_thresh=o["stability_score_thresh"],
                crop_n_layers=0,
                keep_encoding=True,
            )
        return self._generator

    @staticmethod
    def to_uint8(image: torch.Tensor) -> np.ndarray:
        """``(1, 3, H, W)`` float [0, 1] -> ``HxWx3`` uint8 RGB, what SAM's generator takes."""
        rgb = (image[0].detach().float().clamp(0, 1) * 255.0).round().to(torch.uint8)
        return np.ascontiguousarray(rgb.permute(1, 2, 0).cpu().numpy())

    def run_one(self, image: torch.Tensor) -> PriorOutput:
        """The prior's output for one image ``(1, 3, H, W)`` in [0, 1] (see the module docstring)."""
        from .. import masks_to_label_map

        h, w = image.shape[-2:]
        predictor = self.generator.predictor
        predictor.last_encoding = None
        side = self.options.get("mask_side")
        work = image
        if side is not None and max(h, w) > side:
            scale = side / max(h, w)
            size = (max(1, round(h * scale)), max(1, round(w * scale)))
            work = torch.nn.functional.interpolate(image.float(), size=size, mode="area")
        masks = self.generator.generate(self.to_uint8(work))
        labels = np.asarray(masks_to_label_map(masks, tuple(work.shape[-2:])), dtype=np.int32)
        if work is not image:
            index = torch.from_numpy(labels)[None, None].float()
            labels = torch.nn.functional.interpolate(index, size=(h, w), mode="nearest-exact")[0, 0]
            labels = labels.to(torch.int32).numpy()
        if predictor.last_encoding is None:  # pragma: no cover - segment_anything always sets the image
            raise RuntimeError("the mask generator did not encode the image")
        embeddings, early = predictor.last_encoding
        predictor.last_encoding = None
        features = {"image_embedding": embeddings.float().cpu()}
        if self.robust_features_available:
            robust = self.model.robust_image_features(embeddings, early, self.options["path"])
            features["robust_mask_features"] = robust.float().cpu()
        return PriorOutput(torch.from_numpy(labels)[None], features, self.meta)

    def forward(self, images: torch.Tensor) -> PriorOutput:
        outs = [self.run_one(images[i : i + 1]) for i in range(images.shape[0])]
        return PriorOutput.cat(outs).to(images.device)


@PRIORS.register("robustsam")
class RobustSamPrior(_SegmentAnythingPrior):
    """RobustSAM path (the default prior of the paper's Table 8 "RobustSAM as prior")."""

    name = "robustsam"
    default_path = "robust"


@PRIORS.register("sam")
class SamPrior(_SegmentAnythingPrior):
    """Vanilla SAM path of the same model (Table 8 "SAM as prior")."""

    name = "sam"
    default_path = "sam"
