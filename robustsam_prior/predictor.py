"""``RobustSamPredictor``: ``segment_anything.SamPredictor`` on the RobustSAM path.

Differences from the official RobustSAM predictor:

- the robust path runs by default (the official predictor silently runs vanilla SAM); ``path="sam"``
  selects SAM's own tokens and MLPs explicitly;
- many prompt sets per image in one call (:meth:`predict_torch`, :meth:`predict_batch`), identical to
  one at a time;
- ``predict`` returns numpy arrays ``(masks, iou_predictions, low_res_masks)``, as Meta's does;
- multimask output returns 3 masks matched to the 3 IoU scores: on the robust path these are the
  official channels 1, 2, 3 (chunk 0 of robust tokens 1..3; see
  :mod:`robustsam_prior.modeling.mask_decoder`). The official 15-channel tensor is
  ``predictor.decode(...).select(True, official=True)``.

The prompt-independent robust image features are computed once per image and path and reused by
every prompt.
"""

from __future__ import annotations

import numpy as np
import torch
from segment_anything import SamPredictor

from .modeling.mask_decoder import DecoderOutput, check_path
from .modeling.robustsam import RobustSam


class RobustSamPredictor(SamPredictor):
    """Prompted masks for one image at a time; see the module docstring.

    ``model``: a :class:`RobustSam` (its BN mode applies); ``path``: ``"robust"`` (default) or ``"sam"``.

    ``keep_encoding``: also keep the encoder outputs of the latest :meth:`set_torch_image` in
    :attr:`last_encoding`, ``(features (1, D, h, w), early_features (1, h, w, Cvit))``, where
    :meth:`reset_image` does not clear them. SAM's automatic mask generator resets the image after
    each crop it segments; a caller that wants the features of that same encoder pass reads them
    there (and sets ``last_encoding = None`` when done, so the tensors are freed).
    """

    def __init__(self, model: RobustSam, path: str = "robust", *, keep_encoding: bool = False) -> None:
        if not isinstance(model, RobustSam):
            raise TypeError(f"RobustSamPredictor needs a RobustSam model, got {type(model).__name__}")
        super().__init__(model)
        self.path = check_path(path)
        self.keep_encoding = keep_encoding
        self.last_encoding: tuple[torch.Tensor, torch.Tensor] | None = None

    @torch.no_grad()
    def set_torch_image(self, transformed_image: torch.Tensor, original_image_size: tuple[int, ...]) -> None:
        """``transformed_image`` (1,3,H,W) float 0..255 RGB with long side ``model.image_size``
        (``self.transform`` applied); ``original_image_size`` (H, W) before the transform."""
        size = self.model.image_size
        if transformed_image.dim() != 4 or transformed_image.shape[:2] != (1, 3) or max(transformed_image.shape[2:]) != size:
            raise ValueError(
                f"set_torch_image expects a 1x3xHxW tensor with long side {size}, got {tuple(transformed_image.shape)}"
            )
        self.reset_image()
        self.original_size = tuple(original_image_size)
        self.input_size = tuple(transformed_image.shape[-2:])
        self.features, self.early_features = self.model.encode(self.model.preprocess(transformed_image))
        self.is_image_set = True
        if self.keep_encoding:
            self.last_encoding = (self.features, self.early_features)

    def reset_image(self) -> None:
        super().reset_image()
        self.early_features = None
        self._robust_image_features: dict[str, torch.Tensor] = {}

    def _require_image(self) -> None:
        if not self.is_image_set:
            raise RuntimeError("An image must be set with .set_image(...) before mask prediction.")

    def get_early_features(self) -> torch.Tensor:
        """``(1, h, w, Cvit)`` output of the encoder's first global-attention block."""
        self._require_image()
        return self.early_features

    def get_robust_image_features(self, path: str | None = None) -> torch.Tensor:
        """``(1, D/8, 4h, 4w)`` prompt-independent robust features of the set image (cached)."""
        self._require_image()
        path = check_path(path or self.path)
        if path not in self._robust_image_features:
            with torch.no_grad():
                self._robust_image_features[path] = self.model.robust_image_features(
                    self.features, self.early_features, path
                )
        return self._robust_image_features[path]

    @torch.no_grad()
    def decode(
        self,
        point_coords: torch.Tensor | None = None,
        point_labels: torch.Tensor | None = None,
        boxes: torch.Tensor | None = None,
        mask_input: torch.Tensor | None = None,
        *,
        path: str | None = None,
        keep_embeddings: bool = True,
    ) -> DecoderOutput:
        """Lower-level call: every decoder output (all mask channels, in the official order) for N
        prompt sets, prompts already in the model input frame (as for :meth:`predict_torch`);
        ``keep_embeddings=False`` leaves out ``robust_embeddings``."""
        self._require_image()
        path = check_path(path or self.path)
        return self.model.decode(
            self.features,
            None,
            point_coords=point_coords,
            point_labels=point_labels,
            boxes=boxes,
            mask_input=mask_input,
            robust_image_features=self.get_robust_image_features(path),
            path=path,
            keep_embeddings=keep_embeddings,
        )

    @torch.no_grad()
    def predict_torch(
        self,
        point_coords: torch.Tensor | None,
        point_labels: torch.Tensor | None,
        boxes: torch.Tensor | None = None,
        mask_input: torch.Tensor | None = None,
        multimask_output: bool = True,
        return_logits: bool = False,
        *,
        path: str | None = None,
        official_multimask: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """N prompt sets at once, in the model input frame: ``point_coords`` (N,P,2) xy,
        ``point_labels`` (N,P) (1 foreground, 0 background), ``boxes`` (N,4) xyxy, ``mask_input``
        (N,1,4h,4w) logits. Returns ``masks`` (N,C,H,W) bool (or logits) at the original size,
        ``iou_predictions`` (N,C), ``low_res_masks`` (N,C,4h,4w) logits; C = 1 or 3 (15 with
        ``official_multimask`` on the robust path)."""
        if point_coords is not None and point_labels is None:
            raise ValueError("point_labels must be given with point_coords")
        out = self.decode(point_coords, point_labels, boxes, mask_input, path=path, keep_embeddings=False)
        low_res, iou = out.select(multimask_output, official=official_multimask)
        masks = self.model.postprocess_masks(low_res, self.input_size, self.original_size)
        if not return_logits:
            masks = masks > self.model.mask_threshold
        return masks, iou, low_res

    def predict_batch(
        self,
        point_coords: np.ndarray | None = None,
        point_labels: np.ndarray | None = None,
        boxes: np.ndarray | None = None,
        mask_input: np.ndarray | None = None,
        multimask_output: bool = True,
        return_logits: bool = False,
        *,
        path: str | None = None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Numpy form of :meth:`predict_torch` with prompts in original-image pixels:
        ``point_coords`` (N,P,2), ``point_labels`` (N,P), ``boxes`` (N,4), ``mask_input`` (N,1,4h,4w);
        ``path`` ("robust"/"sam") overrides the predictor's for this call.
        Returns ``(masks (N,C,H,W), iou (N,C), low_res (N,C,4h,4w))``."""
        self._require_image()
        coords = labels = box_t = mask_t = None
        if point_coords is not None:
            if point_labels is None:
                raise ValueError("point_labels must be given with point_coords")
            pc = np.asarray(point_coords, dtype=np.float64)
            if pc.ndim != 3 or pc.shape[-1] != 2:
                raise ValueError(f"point_coords must be (N, P, 2), got {pc.shape}")
            coords = torch.as_tensor(self.transform.apply_coords(pc, self.original_size), dtype=torch.float, device=self.device)
            labels = torch.as_tensor(np.asarray(point_labels), dtype=torch.int, device=self.device)
        if boxes is not None:
            b = np.asarray(boxes, dtype=np.float64)
            if b.ndim != 2 or b.shape[-1] != 4:
                raise ValueError(f"boxes must be (N, 4), got {b.shape}")
            box_t = torch.as_tensor(self.transform.apply_boxes(b, self.original_size), dtype=torch.float, device=self.device)
        if mask_input is not None:
            mask_t = torch.as_tensor(mask_input, dtype=torch.float, device=self.device)
        masks, iou, low_res = self.predict_torch(coords, labels, box_t, mask_t, multimask_output, return_logits,
                                                 path=path)
        return masks.cpu().numpy(), iou.cpu().numpy(), low_res.cpu().numpy()
