"""The ``robustsam`` and ``sam`` priors: automatic masks and encoder features of a RobustSAM model.

Per image ``(1, 3, H, W)`` in [0, 1]:

- ``labels``: the automatic mask generator (``RobustSamAutomaticMaskGenerator``, a grid of
  ``points_per_side``² point prompts, SAM's filtering and NMS) on the uint8 RGB image, turned into a
  partition with :func:`robustsam_prior.masks_to_label_map` (H, W) int32 at input resolution;
- ``features["image_embedding"]`` (1, D, h, w): the encoder's neck output (D = 256, h = w = 64 for the
  official 1024-pixel models); ``features["robust_mask_features"]`` (1, D/8, 4h, 4w): the
  prompt-independent part of the robust mask feature, ``model.robust_image_features`` (on the
  ``sam`` path: the same up-projections without the degradation-suppression blocks).
  Both live in the model's frame: the image resized so its longest side is ``model.image_size``
  (``ResizeLongestSide``) and zero-padded at the bottom/right to a square.

``robustsam`` runs the RobustSAM path (``path="robust"``), ``sam`` the vanilla SAM path of the
same model (``path="sam"``). Both need a checkpoint: ``checkpoint=`` a path, else
``$ROBUSTSAM_CHECKPOINT``, else the cache folder (:func:`robustsam_prior.hub.resolve_checkpoint`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..prior import PRIORS, Prior, PriorOutput

logger = logging.getLogger(__name__)


def _config_variant(config: str | dict) -> str | None:
    return config if isinstance(config, str) else None


class _SegmentAnythingPrior(Prior):
    """Shared implementation; see the module docstring. ``default_path`` is set by the subclasses."""

    default_path = "robust"

    def __init__(
        self,
        *,
        config: str | dict = "vit_b",
        checkpoint: str | Path | None = None,
        points_per_side: int = 16,
        path: str | None = None,
        bn_mode: str = "running",
        pred_iou_thresh: float = 0.88,
        stability_score_thresh: float = 0.95,
        points_per_batch: int = 64,
        device: str | None = None,
    ) -> None:
        from ..fileio import sha256_file
        from ..hub import resolve_checkpoint

        path = path or self.default_path
        if path not in ("robust", "sam"):
            raise ValueError(f"{self.name} prior: path must be 'robust' or 'sam', got {path!r}")
        if int(points_per_side) < 1:
            raise ValueError(f"{self.name} prior: points_per_side must be >= 1, got {points_per_side}")
        if not isinstance(config, (str, dict)):
            raise ValueError(f"{self.name} prior: config must be 'vit_b'/'vit_l'/'vit_h' or a dict, got {config!r}")
        ckpt = resolve_checkpoint(checkpoint if checkpoint is not None else _config_variant(config))
        super().__init__(
            config=config,
            points_per_side=int(points_per_side),
            path=path,
            bn_mode=bn_mode,
            pred_iou_thresh=float(pred_iou_thresh),
            stability_score_thresh=float(stability_score_thresh),
        )
        self.checkpoint = Path(ckpt)
        self.checkpoint_sha256 = sha256_file(self.checkpoint)
        self.points_per_batch = int(points_per_batch)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self._model = None
        self._generator = None

    @property
    def meta(self) -> dict[str, Any]:
        # the checkpoint is identified by content, not by where it lies
        return {**super().meta, "checkpoint_sha256": self.checkpoint_sha256}

    @property
    def model(self):
        """The RobustSAM model, built and loaded on first use (eval mode, on ``self.device``)."""
        if self._model is None:
            from .. import build_robustsam

            logger.info("loading %s prior from %s", self.name, self.checkpoint)
            model = build_robustsam(self.options["config"], self.checkpoint, bn_mode=self.options["bn_mode"])
            self._model = model.to(self.device).eval()
        return self._model

    @property
    def generator(self):
        if self._generator is None:
            from .. import RobustSamAutomaticMaskGenerator

            o = self.options
            self._generator = RobustSamAutomaticMaskGenerator(
                self.model,
                points_per_side=o["points_per_side"],
                points_per_batch=self.points_per_batch,
                pred_iou_thresh=o["pred_iou_thresh"],
                stability_score_thresh=o["stability_score_thresh"],
                path=o["path"],
            )
        return self._generator

    def encode(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        """Features of one image ``(1, 3, H, W)`` in [0, 1] (see the module docstring)."""
        from segment_anything.utils.transforms import ResizeLongestSide

        model = self.model
        x = image.to(self.device, torch.float32) * 255.0
        x = ResizeLongestSide(model.image_size).apply_image_torch(x)
        embeddings, early = model.encode(model.preprocess(x))
        robust = model.robust_image_features(embeddings, early, path=self.options["path"])
        return {"image_embedding": embeddings.float().cpu(), "robust_mask_features": robust.float().cpu()}

    def labels(self, image: torch.Tensor) -> np.ndarray:
        """Region label map ``(H, W)`` int32 of one image ``(1, 3, H, W)`` from automatic masks."""
        from .. import masks_to_label_map

        h, w = image.shape[-2:]
        rgb = (image[0].clamp(0, 1) * 255.0).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
        masks = self.generator.generate(np.ascontiguousarray(rgb))
        return np.asarray(masks_to_label_map(masks, (h, w)), dtype=np.int32)

    def forward(self, images: torch.Tensor) -> PriorOutput:
        outs = []
        for i in range(images.shape[0]):
            image = images[i : i + 1]
            labels = torch.from_numpy(self.labels(image))[None]
            outs.append(PriorOutput(labels, self.encode(image), self.meta))
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
