"""The project's networks, prior dataset and prior-passing model, registered with BasicSR on import.

``import restore.basicsr_plugin`` is the one import that changes BasicSR's registries (the rest of the
package never imports BasicSR at module level); after it a BasicSR options file can name

- ``network_g: {type: NAFNet | MapNAFNet | FusionNAFNet, ...keyword arguments}`` (``ARCH_REGISTRY``);
- ``datasets.<phase>.type: PairedImagePriorDataset`` (``DATASET_REGISTRY``,
  :mod:`restore.basicsr_dataset`), which yields the prior's region map with every pair;
- ``model_type: PriorRestorationModel`` (``MODEL_REGISTRY``): BasicSR's ``SRModel`` (losses,
  optimizers, schedulers, EMA, checkpoints, validation) calling ``net_g(lq, prior)`` instead of
  ``net_g(lq)``.

BasicSR is imported through :func:`robustsam_prior._basicsr.import_basicsr` (the torchvision rename).
Registration is idempotent and refuses to replace a different object BasicSR already holds under one of
the names. ``robustsam-restore basicsr -opt FILE.yml`` imports this module, then runs BasicSR's own
``train_pipeline`` (or ``test_pipeline``).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from typing import Any

import torch

from robustsam_prior._basicsr import import_basicsr

import_basicsr()

from basicsr.models.sr_model import SRModel  # noqa: E402  (after the torchvision alias)
from basicsr.utils.registry import DATASET_REGISTRY, MODEL_REGISTRY  # noqa: E402

from .archs import register_once, register_with_basicsr  # noqa: E402
from .basicsr_dataset import PairedImagePriorDataset  # noqa: E402

__all__ = ["PairedImagePriorDataset", "PriorRestorationModel", "register"]

PRIOR_KEY = "prior_labels"  # the batch entry PairedImagePriorDataset yields


class PriorRestorationModel(SRModel):
    """BasicSR's ``SRModel`` for the project's networks: ``forward(lq, prior)``.

    The prior is the batch's ``prior_labels`` ``(B, H, W)`` int32 as ``PriorOutput.labels`` (no
    features: a training crop of a feature map in SAM's frame would no longer be in that frame, so
    ``FusionNAFNet`` runs on labels alone here). A network without ``needs_prior`` (``NAFNet``) gets
    ``None`` and works with BasicSR's own ``PairedImageDataset`` too. A non-finite loss raises
    ``FloatingPointError`` naming the iteration instead of training on NaN.
    """

    def feed_data(self, data: dict[str, Any]) -> None:
        from robustsam_prior.prior import PriorOutput

        super().feed_data(data)
        net = self.get_bare_model(self.net_g)
        labels = data.get(PRIOR_KEY)
        if labels is None:
            if getattr(net, "needs_prior", False):
                raise ValueError(
                    f"network {type(net).__name__} needs a prior, but the batch has no {PRIOR_KEY!r} "
                    f"(keys {sorted(data)}); use the dataset type PairedImagePriorDataset"
                )
            self.prior = None
        else:
            self.prior = PriorOutput(labels.to(self.device, torch.int32), {}, {"source": "basicsr dataset"})

    def optimize_parameters(self, current_iter: int) -> None:
        self.optimizer_g.zero_grad()
        self.output = self.net_g(self.lq, self.prior)
        loss_dict: OrderedDict[str, torch.Tensor] = OrderedDict()
        l_total = 0
        if self.cri_pix:
            loss_dict["l_pix"] = self.cri_pix(self.output, self.gt)
            l_total = l_total + loss_dict["l_pix"]
        if self.cri_perceptual:
            l_percep, l_style = self.cri_perceptual(self.output, self.gt)
            for name, value in (("l_percep", l_percep), ("l_style", l_style)):
                if value is not None:
                    loss_dict[name] = value
                    l_total = l_total + value
        if not math.isfinite(float(l_total.detach())):
            losses = {k: float(v.detach()) for k, v in loss_dict.items()}
            raise FloatingPointError(f"iteration {current_iter}: the loss is not finite ({losses})")
        l_total.backward()
        self.optimizer_g.step()
        self.log_dict = self.reduce_loss_dict(loss_dict)
        if self.ema_decay > 0:
            self.model_ema(decay=self.ema_decay)

    def test(self) -> None:
        net = self.net_g_ema if hasattr(self, "net_g_ema") else self.net_g
        was_training = net.training
        net.eval()
        with torch.no_grad():
            self.output = net(self.lq, self.prior)
        net.train(was_training)


def register() -> dict[str, list[str]]:
    """Register the architectures, the dataset and the model with BasicSR; returns the names per registry.

    Idempotent; ``RuntimeError`` where BasicSR already holds a different object under one of the names.
    """
    return {"arch": register_with_basicsr(),
            "dataset": [register_once(DATASET_REGISTRY, PairedImagePriorDataset, "dataset registry")],
            "model": [register_once(MODEL_REGISTRY, PriorRestorationModel, "model registry")]}


register()
