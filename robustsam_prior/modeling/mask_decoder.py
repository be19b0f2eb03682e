"""RobustSAM's mask decoder: Meta's ``MaskDecoder`` plus the six official robust sub-modules.

Two paths share the transformer:

- ``path="robust"`` (RobustSAM, the default; the official ``clear=False``): the robust output
  tokens replace SAM's mask tokens, the three AMFG blocks produce the robust mask feature
  ``F_robust = AMFG_mask(F_dec) + AMFG_first(F_early) + AMFG_last(E)`` (B, D/8, 4h, 4w), and each
  robust token goes through AOTG (:class:`TokenBlock`, T chunks) and the shared ``robust_mlp``.
  This yields ``T*T`` logit channels per prompt (T = number of mask tokens, 4): channel
  ``k = chunk * T + token`` (the official quirk).
- ``path="sam"`` (the official ``clear=True``): SAM's mask tokens, hypernetwork MLPs and upscaled
  mask feature, i.e. vanilla SAM masks; ``robust_embeddings`` is then the sum of the three
  up/down projections without the suppression blocks.

Output selection (:meth:`DecoderOutput.select`):

- single mask: channel 0 with IoU score 0 (both paths; official).
- multimask, sane (default): channels ``1..T-1`` with IoU scores ``1..T-1``. On the robust path these
  are chunk 0 of robust tokens 1..T-1, the same rule that makes channel 0 the single mask, so the
  3 masks match the 3 IoU scores as in SAM.
- multimask, ``official=True``: channels ``1..T*T-1`` (15 masks against 3 IoU scores), exactly what
  the official ``MaskDecoder.forward`` returns.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from segment_anything.modeling.mask_decoder import MLP, MaskDecoder
from torch import nn

from .components import FirstLayerFeatureBlock, LastLayerFeatureBlock, MaskFeatureBlock, TokenBlock
from .decoder_ops import (
    first_layer_image_projections,
    image_tokens,
    mask_logits,
    to_channels_last,
    transformer_matches,
    two_way_transformer,
    upscale_tokens,
    upscaling_matches,
)

PATHS = ("robust", "sam")


def check_path(path: str) -> str:
    if path not in PATHS:
        raise ValueError(f"path must be one of {PATHS}, got {path!r}")
    return path


@dataclass
class DecoderOutput:
    """Everything the decoder computes for ``N`` prompt sets on one image.

    ``logits`` (N, M, 4h, 4w): all mask channels (M = T*T on the robust path in the official channel
    order, M = T on the sam path); ``iou_predictions`` (N, T); ``robust_embeddings`` (N, D/8, 4h, 4w):
    the fused robust mask feature (``None`` when the caller asked not to keep it); ``tokens`` (N, T, D):
    the mask (or robust) tokens after the transformer, before AOTG (the official ``robust_token``).
    """

    logits: torch.Tensor
    iou_predictions: torch.Tensor
    robust_embeddings: torch.Tensor | None
    tokens: torch.Tensor
    path: str

    @property
    def num_mask_tokens(self) -> int:
        return self.iou_predictions.shape[1]

    def select(self, multimask_output: bool, *, official: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """``(logits (N, C, 4h, 4w), iou (N, C))`` for single (C=1) or multimask output (module doc)."""
        t = self.num_mask_tokens
        if not multimask_output:
            return self.logits[:, :1], self.iou_predictions[:, :1]
        if official:
            return self.logits[:, 1:], self.iou_predictions[:, 1:]
        return self.logits[:, 1:t], self.iou_predictions[:, 1:]


class RobustMaskDecoder(MaskDecoder):
    """Meta's ``MaskDecoder`` with the official RobustSAM attribute tree."""

    DENSE_BUDGET = 2**21  # elements of robust mask feature per group of prompts (vit_b: 1 prompt)
    # on a GPU the groups only have to fit in memory (vit_b: 64 prompts, 512 MB of fp32 features);
    # on an H200, vit_b, fp32: 1.7 ms per prompt in groups of 64 against 4.7 ms one at a time
    GPU_DENSE_BUDGET = 2**27

    def __init__(
        self,
        *,
        transformer_dim: int,
        transformer: nn.Module,
        vit_dim: int,
        num_multimask_outputs: int = 3,
        activation: type[nn.Module] = nn.GELU,
        iou_head_depth: int = 3,
        iou_head_hidden_dim: int = 256,
        bn_mode: str = "running",
    ) -> None:
        super().__init__(
            transformer_dim=transformer_dim,
            transformer=transformer,
            num_multimask_outputs=num_multimask_outputs,
            activation=activation,
            iou_head_depth=iou_head_depth,
            iou_head_hidden_dim=iou_head_hidden_dim,
        )
        t = self.num_mask_tokens
        if transformer_dim % t or transformer_dim % 8:
            raise ValueError(
                f"transformer_dim={transformer_dim} must be divisible by 8 and by the number of mask tokens ({t})"
            )
        self.custom_robust_token = nn.Embedding(t, transformer_dim)  # ROT
        self.robust_mlp = MLP(transformer_dim, transformer_dim, transformer_dim // 8, 3)
        self.fourier_mask_features = MaskFeatureBlock(transformer_dim, bn_mode=bn_mode)
        self.fourier_first_layer_features = FirstLayerFeatureBlock(vit_dim, transformer_dim, bn_mode=bn_mode)
        self.fourier_last_layer_features = LastLayerFeatureBlock(transformer_dim, bn_mode=bn_mode)
        self.custom_token_block = TokenBlock(input_dim=t, mlp_dim=transformer_dim // t)  # AOTG
        # prompt sets per pass through the decoder (speed only; None = default_prompt_batch())
        self.prompt_batch: int | None = None
        # True: the transformer and SAM's upscaling run exactly as the stock modules are written
        # (NCHW image tokens, ConvTranspose2d); False: the same computation through decoder_ops
        self.stock_ops = False

    @torch.no_grad()
    def init_robust_tokens_from_sam(self) -> None:
        """Start the robust output tokens as copies of SAM's mask tokens and ``robust_mlp`` as a copy of SAM's
        first hypernetwork MLP (the one behind the single mask, channel 0 on both paths).

        The paper describes the robust output token as SAM's output token, fine-tuned; the official code
        draws ``custom_robust_token`` at random instead (PyTorch's default initialisation), which is what a
        freshly built model has. AOTG and the three AMFG blocks are left as they are.
        """
        self.custom_robust_token.weight.copy_(self.mask_tokens.weight)
        self.robust_mlp.load_state_dict(self.output_hypernetworks_mlps[0].state_dict())

    def uses_decoder_ops(self) -> bool:
        """Whether the transformer and SAM's upscaling run through :mod:`.decoder_ops` (they do unless
        :attr:`stock_ops` is set or a sub-module was replaced by one it does not know)."""
        return not self.stock_ops and transformer_matches(self.transformer) and upscaling_matches(self.output_upscaling)

    def default_prompt_batch(self, robust_image_features: torch.Tensor) -> int:
        """Prompt sets per decoder pass when ``prompt_batch`` is None: as many as fit the dense budget
        of the features' device (:attr:`DENSE_BUDGET` on the CPU, :attr:`GPU_DENSE_BUDGET` elsewhere)."""
        per_prompt = robust_image_features.shape[1:].numel()
        budget = self.DENSE_BUDGET if robust_image_features.device.type == "cpu" else self.GPU_DENSE_BUDGET
        return max(1, budget // per_prompt)

    def robust_image_features(
        self, image_embeddings: torch.Tensor, early_features: torch.Tensor, path: str = "robust"
    ) -> torch.Tensor:
        """Prompt-independent part of ``robust_embeddings``: ``(B, D/8, 4h, 4w)``.

        ``image_embeddings`` (B, D, h, w) neck output; ``early_features`` (B, h, w, Cvit)
        channels-last output of the first global-attention block.
        """
        clear = check_path(path) == "sam"
        first = self.fourier_first_layer_features(early_features.permute(0, 3, 1, 2), clear=clear)
        return first + self.fourier_last_layer_features(image_embeddings, clear=clear)

    def decode(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse_prompt_embeddings: torch.Tensor,
        dense_prompt_embeddings: torch.Tensor,
        *,
        early_features: torch.Tensor | None = None,
        robust_image_features: torch.Tensor | None = None,
        path: str = "robust",
        keep_embeddings: bool = True,
    ) -> DecoderOutput:
        """Run the decoder for N prompt sets.

        ``image_embeddings`` (1 or N, D, h, w); ``image_pe`` (1, D, h, w); ``sparse_prompt_embeddings``
        (N, P, D); ``dense_prompt_embeddings`` (N, D, h, w); either ``early_features`` (1 or N, h, w,
        Cvit) or the precomputed ``robust_image_features`` (1 or N, D/8, 4h, 4w) of the same ``path``.
        ``keep_embeddings=False`` drops each group's ``robust_embeddings`` once its logits are made (masks
        only need the logits; kept, they are D/8 x 4h x 4w floats per prompt set, 8 MB for vit_b).
        """
        check_path(path)
        n = sparse_prompt_embeddings.shape[0]
        if robust_image_features is None:
            if early_features is None:
                raise ValueError("decode() needs early_features or robust_image_features")
            robust_image_features = self.robust_image_features(image_embeddings, early_features, path)
        for name, t in (("image_embeddings", image_embeddings), ("robust_image_features", robust_image_features)):
            if t.shape[0] not in (1, n):
                raise ValueError(f"{name} has batch {t.shape[0]}, expected 1 or the number of prompt sets {n}")

        # Every step below is per prompt set, so the prompts run in groups (results are the same). Small
        # groups keep the 4h x 4w tensors of the mask-feature AMFG in cache (on a CPU, vit_b runs fastest
        # one prompt at a time: benchmarks/decoder_speed.py), while small models gain from batching.
        # Default: prompts whose robust mask feature (D/8 x 4h x 4w floats each) fit in DENSE_BUDGET
        # elements (GPU_DENSE_BUDGET on a GPU), at least one.
        step = self.prompt_batch
        step = self.default_prompt_batch(robust_image_features) if step is None else max(1, int(step))
        fast = self.uses_decoder_ops()
        shared = None
        if fast and image_embeddings.shape[0] == 1 and (n == 1 or dense_prompt_embeddings.stride(0) == 0):
            # no mask prompt: every prompt set sees the same image tokens, so they and the first block's
            # projections of them are computed once for all groups
            keys = image_tokens(image_embeddings + dense_prompt_embeddings[:1])
            key_pe = image_tokens(image_pe)
            shared = (keys, key_pe, first_layer_image_projections(self.transformer, keys, key_pe))
        if fast:  # the mask-feature AMFG ends channels-last (MaskFeatureBlock.tail): add like to like
            robust_image_features = to_channels_last(robust_image_features)
        parts = []
        for i in range(0, n, step):
            j = min(n, i + step)
            parts.append(
                self._decode_prompts(
                    image_embeddings if image_embeddings.shape[0] == 1 else image_embeddings[i:j],
                    image_pe,
                    sparse_prompt_embeddings[i:j],
                    dense_prompt_embeddings[i:j],
                    robust_image_features if robust_image_features.shape[0] == 1 else robust_image_features[i:j],
                    path,
                    fast=fast,
                    shared=shared,
                )
            )
            if not keep_embeddings:
                parts[-1].robust_embeddings = None
        if len(parts) == 1:
            return parts[0]
        fields = ("logits", "iou_predictions", "robust_embeddings", "tokens")
        return DecoderOutput(
            **{f: None if getattr(parts[0], f) is None else torch.cat([getattr(o, f) for o in parts]) for f in fields},
            path=path,
        )

    def _decode_prompts(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse_prompt_embeddings: torch.Tensor,
        dense_prompt_embeddings: torch.Tensor,
        robust_image_features: torch.Tensor,
        path: str,
        *,
        fast: bool = False,
        shared: tuple[torch.Tensor, torch.Tensor, tuple[torch.Tensor, ...]] | None = None,
    ) -> DecoderOutput:
        """One group of prompt sets. ``fast``: through :mod:`.decoder_ops`, with ``shared`` the image
        tokens, their positional encoding and the first block's projections common to all groups."""
        n = sparse_prompt_embeddings.shape[0]
        mask_tokens = self.custom_robust_token if path == "robust" else self.mask_tokens
        output_tokens = torch.cat([self.iou_token.weight, mask_tokens.weight], dim=0)
        tokens = torch.cat([output_tokens.unsqueeze(0).expand(n, -1, -1), sparse_prompt_embeddings], dim=1)
        b, c, h, w = n, *image_embeddings.shape[1:]
        if fast:
            if shared is None:
                keys, key_pe, first = image_tokens(image_embeddings + dense_prompt_embeddings), image_tokens(image_pe), None
            else:
                keys, key_pe, first = shared
            hs, keys = two_way_transformer(self.transformer, keys, key_pe, tokens, first)
            decoder_features = upscale_tokens(self.output_upscaling, keys, h, w)  # F_dec
        else:
            src = image_embeddings.expand(n, -1, -1, -1) + dense_prompt_embeddings
            hs, src = self.transformer(src, image_pe.expand(n, -1, -1, -1), tokens)
            decoder_features = self.output_upscaling(src.transpose(1, 2).reshape(b, c, h, w))  # F_dec
        t = self.num_mask_tokens
        iou_token_out = hs[:, 0, :]
        mask_tokens_out = hs[:, 1 : 1 + t, :]
        robust_embeddings = self.fourier_mask_features(decoder_features, clear=path == "sam") + robust_image_features

        if path == "robust":
            chunks = self.custom_token_block(mask_tokens_out.reshape(n * t, c))  # (N*T tokens, T chunks, D)
            hyper = self.robust_mlp(chunks).view(n, t, t, -1)  # (N, token, chunk, D/8)
            hyper = hyper.transpose(1, 2).reshape(n, t * t, -1)  # channel = chunk * T + token
            features = robust_embeddings
        else:
            hyper = torch.stack([mlp(mask_tokens_out[:, i]) for i, mlp in enumerate(self.output_hypernetworks_mlps)], 1)
            features = decoder_features
        logits = mask_logits(hyper, features)
        return DecoderOutput(
            logits=logits,
            iou_predictions=self.iou_prediction_head(iou_token_out),
            robust_embeddings=robust_embeddings,
            tokens=mask_tokens_out,
            path=path,
        )

    def forward(  # type: ignore[override]
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse_prompt_embeddings: torch.Tensor,
        dense_prompt_embeddings: torch.Tensor,
        multimask_output: bool,
        early_features: torch.Tensor | None = None,
        *,
        robust_image_features: torch.Tensor | None = None,
        path: str = "robust",
        official_multimask: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Meta-compatible call returning ``(low-res logits (N, C, 4h, 4w), iou (N, C))``."""
        out = self.decode(
            image_embeddings,
            image_pe,
            sparse_prompt_embeddings,
            dense_prompt_embeddings,
            early_features=early_features,
            robust_image_features=robust_image_features,
            path=path,
        )
        return out.select(multimask_output, official=official_multimask)
