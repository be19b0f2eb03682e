"""The RobustSAM model: Meta's ``Sam`` with the tapped encoder and the robust mask decoder."""

from __future__ import annotations

from typing import Any

import torch
from segment_anything.modeling import PromptEncoder, Sam

from .components import check_bn_mode, set_bn_mode
from .image_encoder import ImageEncoderViTWithTap
from .mask_decoder import DecoderOutput, RobustMaskDecoder, check_path

PIXEL_MEAN = (123.675, 116.28, 103.53)
PIXEL_STD = (58.395, 57.12, 57.375)


class RobustSam(Sam):
    """RobustSAM (Chen et al., CVPR 2024) on top of ``segment_anything``.

    State-dict keys equal the official model's (``image_encoder.*``, ``prompt_encoder.*``,
    ``mask_decoder.*``; ``pixel_mean``/``pixel_std`` are non-persistent buffers).
    """

    def __init__(
        self,
        *,
        image_encoder: ImageEncoderViTWithTap,
        prompt_encoder: PromptEncoder,
        mask_decoder: RobustMaskDecoder,
        pixel_mean: tuple[float, ...] = PIXEL_MEAN,
        pixel_std: tuple[float, ...] = PIXEL_STD,
        bn_mode: str = "running",
    ) -> None:
        super().__init__(
            image_encoder=image_encoder,
            prompt_encoder=prompt_encoder,
            mask_decoder=mask_decoder,
            pixel_mean=list(pixel_mean),
            pixel_std=list(pixel_std),
        )
        self.set_bn_mode(bn_mode)
        # filled by the builder: what this model was built from (config dict, checkpoint sha256/path)
        self.config: Any = None
        self.checkpoint_sha256: str | None = None
        self.checkpoint_path: str | None = None

    @property
    def image_size(self) -> int:
        """Side of the square encoder input in pixels (1024 for the official variants)."""
        return self.image_encoder.img_size

    @property
    def bn_mode(self) -> str:
        return self._bn_mode

    def set_bn_mode(self, bn_mode: str) -> None:
        """``"running"`` (eval statistics) or ``"batch"`` (per-image statistics, the official demo's)."""
        self._bn_mode = check_bn_mode(bn_mode)
        set_bn_mode(self, bn_mode)

    def encode(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``images`` (B,3,S,S) already preprocessed (see :meth:`preprocess`) ->
        ``(image_embeddings (B,D,S/16,S/16), early_features (B,S/16,S/16,Cvit) channels-last)``."""
        return self.image_encoder(images)

    def robust_image_features(
        self, image_embeddings: torch.Tensor, early_features: torch.Tensor, path: str = "robust"
    ) -> torch.Tensor:
        """``(B, D/8, 4h, 4w)`` (32x256x256 for the official variants): the prompt-independent part of
        the robust mask feature, ``AMFG_first(early) + AMFG_last(embedding)``."""
        return self.mask_decoder.robust_image_features(image_embeddings, early_features, path)

    def decode(
        self,
        image_embeddings: torch.Tensor,
        early_features: torch.Tensor | None,
        *,
        point_coords: torch.Tensor | None = None,
        point_labels: torch.Tensor | None = None,
        boxes: torch.Tensor | None = None,
        mask_input: torch.Tensor | None = None,
        robust_image_features: torch.Tensor | None = None,
        path: str = "robust",
        keep_embeddings: bool = True,
    ) -> DecoderOutput:
        """Prompts in the model's input frame: ``point_coords`` (N,P,2) xy pixels with
        ``point_labels`` (N,P); ``boxes`` (N,4) xyxy; ``mask_input`` (N,1,4h,4w) logits.
        ``keep_embeddings=False``: no ``robust_embeddings`` in the output (masks only)."""
        points = (point_coords, point_labels) if point_coords is not None else None
        sparse, dense = self.prompt_encoder(points=points, boxes=boxes, masks=mask_input)
        return self.mask_decoder.decode(
            image_embeddings,
            self.prompt_encoder.get_dense_pe(),
            sparse,
            dense,
            early_features=early_features,
            robust_image_features=robust_image_features,
            path=path,
            keep_embeddings=keep_embeddings,
        )

    def forward(  # type: ignore[override]
        self,
        batched_input: list[dict[str, Any]],
        multimask_output: bool,
        *,
        path: str = "robust",
        official_multimask: bool = False,
    ) -> list[dict[str, torch.Tensor]]:
        """Like ``segment_anything.Sam.forward`` (same input records) but on ``path`` (robust by
        default) and without ``no_grad``; each output dict also holds ``robust_embeddings`` and
        ``robust_token``."""
        check_path(path)
        images = torch.stack([self.preprocess(rec["image"]) for rec in batched_input])
        embeddings, early = self.encode(images)
        outputs = []
        for rec, emb, feat in zip(batched_input, embeddings, early):
            out = self.decode(
                emb[None],
                feat[None],
                point_coords=rec.get("point_coords"),
                point_labels=rec.get("point_labels"),
                boxes=rec.get("boxes"),
                mask_input=rec.get("mask_inputs"),
                path=path,
            )
            low_res, iou = out.select(multimask_output, official=official_multimask)
            masks = self.postprocess_masks(low_res, rec["image"].shape[-2:], rec["original_size"])
            outputs.append(
                {
                    "masks": masks > self.mask_threshold,
                    "iou_predictions": iou,
                    "low_res_logits": low_res,
                    "robust_embeddings": out.robust_embeddings,
                    "robust_token": out.tokens,
                }
            )
        return outputs
