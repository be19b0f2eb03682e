"""Meta's ViT image encoder, also returning the output of its first global-attention block.

RobustSAM (like HQ-SAM) feeds the output of the first global-attention block (``blocks[2/5/7]`` for
ViT-B/L/H) to its AMFG. The stock ``segment_anything`` encoder is used unchanged;
the feature is captured with a forward hook registered for the duration of each call, so code
that swaps a block's attention (``robustsam_prior.fast_encoder``) keeps working.
"""

from __future__ import annotations

import torch
from segment_anything.modeling import ImageEncoderViT


class ImageEncoderViTWithTap(ImageEncoderViT):
    """``forward(x (B,3,S,S) preprocessed) -> (neck output (B,D,S/p,S/p), early (B,S/p,S/p,Cvit))``.

    Takes the keyword arguments of ``segment_anything``'s ``ImageEncoderViT``. ``tap_index`` is the
    block whose output is returned as the early feature (default: the first block with global
    attention, ``window_size == 0``, as in the official code).
    """

    def __init__(self, *, tap_index: int | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        if tap_index is None:
            global_blocks = [i for i, blk in enumerate(self.blocks) if blk.window_size == 0]
            if not global_blocks:
                raise ValueError("the encoder has no global-attention block to take the early feature from")
            tap_index = global_blocks[0]
        if not 0 <= tap_index < len(self.blocks):
            raise ValueError(f"tap_index {tap_index} out of range for {len(self.blocks)} blocks")
        self.tap_index = tap_index

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # type: ignore[override]
        captured: list[torch.Tensor] = []
        handle = self.blocks[self.tap_index].register_forward_hook(lambda _m, _i, out: captured.append(out))
        try:
            embeddings = super().forward(x)
        finally:
            handle.remove()
        return embeddings, captured[-1]
