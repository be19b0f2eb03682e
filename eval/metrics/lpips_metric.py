"""LPIPS (Zhang et al., CVPR 2018) through the ``lpips`` package, without any download.

LPIPS v0.1 needs two sets of weights:

- the linear calibration layers, which the ``lpips`` package ships (``lpips/weights/v0.1/{alex,vgg}.pth``);
- the ImageNet backbone (AlexNet or VGG16), which ``lpips`` would fetch through torchvision. Here it
  is never fetched: the ``lpips.LPIPS`` object is built with a randomly initialised trunk
  (``pnet_rand=True``) and the torchvision weight file is loaded into it from disk with the project's
  one checkpoint loader (``weights_only=True``), strictly.

Where the torchvision file is found: an explicit ``weights`` path (a file, or a folder holding the
file), else torch.hub's cache, ``$TORCH_HOME/hub/checkpoints/`` (``torch.hub.get_dir()``), which is
where torchvision stores it after a download. When it is missing, :func:`lpips_status` says so and
:func:`build_lpips` raises :class:`LpipsUnavailable` naming the file to provide: LPIPS is then
reported as unavailable, never as a number.

Inputs are RGB in [0, 1], validated, and mapped to [-1, 1] exactly once. Lower is better. The usual
reported variant is ``alex``.
"""

from __future__ import annotations

import logging
import os
import re
import warnings
from pathlib import Path

import torch
from torch import nn

from robustsam_prior.core.checkpoint import load_strict, read_checkpoint

logger = logging.getLogger(__name__)

__all__ = [
    "BACKBONE_FILES",
    "LPIPS",
    "LpipsUnavailable",
    "backbone_search_paths",
    "build_lpips",
    "find_backbone_weights",
    "lpips_status",
]

# torchvision's file names for the ImageNet weights lpips uses (torchvision.models AlexNet_Weights.IMAGENET1K_V1,
# VGG16_Weights.IMAGENET1K_V1).
BACKBONE_FILES = {"alex": "alexnet-owt-7be5be79.pth", "vgg": "vgg16-397923af.pth"}
BACKBONE_URL = "https://download.pytorch.org/models/{}"


class LpipsUnavailable(RuntimeError):
    """LPIPS cannot be computed here; ``reason`` says why and what file to provide."""

    def __init__(self, net: str, reason: str) -> None:
        super().__init__(f"LPIPS ({net}) unavailable: {reason}")
        self.net = net
        self.reason = reason


def _check_net(net: str) -> None:
    if net not in BACKBONE_FILES:
        raise ValueError(f"unknown LPIPS network {net!r}; choose one of {sorted(BACKBONE_FILES)}")


def backbone_search_paths(net: str, weights: str | os.PathLike | None = None) -> list[Path]:
    """Candidate paths of the torchvision backbone file, in the order they are tried."""
    _check_net(net)
    name = BACKBONE_FILES[net]
    out: list[Path] = []
    if weights is not None:
        p = Path(weights).expanduser()
        out.append(p / name if p.is_dir() else p)
    hub = Path(torch.hub.get_dir())
    out.append(hub / "checkpoints" / name)
    return out


def find_backbone_weights(net: str, weights: str | os.PathLike | None = None) -> Path:
    """The backbone weight file to use, or :class:`LpipsUnavailable` naming where it was looked for.

    An explicit ``weights`` path that does not exist is an error even if the cache has the file:
    a typo must not silently fall back to a different file.
    """
    paths = backbone_search_paths(net, weights)
    if weights is not None:
        if not paths[0].is_file():
            raise LpipsUnavailable(
                net, f"backbone weights {paths[0]} not found (from --lpips-weights {weights})"
            )
        return paths[0]
    for p in paths:
        if p.is_file():
            return p
    name = BACKBONE_FILES[net]
    raise LpipsUnavailable(
        net,
        f"torchvision backbone weights {name} not found (looked in {', '.join(map(str, paths))}); "
        f"provide the file {name} ({BACKBONE_URL.format(name)}) with --lpips-weights or put it in "
        f"{paths[-1].parent}",
    )


def _linear_weights_path(net: str) -> Path:
    import lpips

    p = Path(lpips.__file__).parent / "weights" / "v0.1" / f"{net}.pth"
    if not p.is_file():
        raise LpipsUnavailable(net, f"the lpips package does not ship its linear-layer weights ({p} missing)")
    return p


def lpips_status(net: str = "alex", weights: str | os.PathLike | None = None) -> tuple[bool, str]:
    """``(True, path of the backbone file)`` if LPIPS can be computed, else ``(False, reason)``."""
    try:
        _check_net(net)
        _linear_weights_path(net)
        return True, str(find_backbone_weights(net, weights))
    except LpipsUnavailable as e:
        return False, e.reason


def _torchvision_to_lpips(state: dict[str, torch.Tensor], target: nn.Module) -> dict[str, torch.Tensor]:
    """Rename torchvision ``features.<i>.<p>`` keys to lpips' ``slice<k>.<i>.<p>`` (classifier keys dropped)."""
    where = {}
    for key in target.state_dict():
        m = re.fullmatch(r"slice\d+\.(\d+)\.(\w+)", key)
        if m:
            where[f"features.{m.group(1)}.{m.group(2)}"] = key
    return {where[k]: v for k, v in state.items() if k in where}


class LPIPS(nn.Module):
    """LPIPS distance: ``forward(pred, gt)`` with RGB ``(B, 3, H, W)`` in [0, 1] -> ``(B,)`` (lower is better).

    Build with :func:`build_lpips` (which finds the weights); the constructor takes a ready
    ``lpips.LPIPS`` module.
    """

    lower_is_better = True

    def __init__(
        self, *, model: nn.Module, net: str, backbone_path: str | None = None, backbone_sha256: str = ""
    ) -> None:
        super().__init__()
        self.model = model.eval()
        self.net = net
        self.backbone_path = backbone_path
        self.backbone_sha256 = backbone_sha256
        for p in self.model.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def forward(self, pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
        for x, what in ((pred, "pred"), (gt, "gt")):
            if not isinstance(x, torch.Tensor) or not x.is_floating_point():
                raise ValueError(f"LPIPS {what} must be a float tensor in [0, 1]")
            if x.dim() != 4 or x.shape[1] != 3:
                raise ValueError(f"LPIPS {what} must be (B, 3, H, W), got {tuple(x.shape)}")
            if torch.isnan(x).any() or float(x.min()) < 0 or float(x.max()) > 1:
                raise ValueError(
                    f"LPIPS {what} values must lie in [0, 1], got [{float(x.min()):.4g}, {float(x.max()):.4g}]"
                )
        if pred.shape != gt.shape:
            raise ValueError(f"pred and gt shapes differ: {tuple(pred.shape)} vs {tuple(gt.shape)}")
        dev = next(self.model.parameters()).device
        a = pred.to(dev, torch.float32) * 2 - 1  # the one mapping [0, 1] -> [-1, 1]
        b = gt.to(dev, torch.float32) * 2 - 1
        return self.model(a, b, normalize=False).reshape(-1).to(torch.float64).cpu()

    def extra_repr(self) -> str:
        return f"net={self.net}, backbone={self.backbone_path}"


def build_lpips(
    net: str = "alex", weights: str | os.PathLike | None = None, *, device: str | torch.device = "cpu"
) -> LPIPS:
    """An :class:`LPIPS` metric with the package's linear layers and the torchvision backbone from disk.

    Raises :class:`LpipsUnavailable` (with the reason and the file to provide) where weights are missing.
    """
    _check_net(net)
    lin_path = _linear_weights_path(net)
    bb_path = find_backbone_weights(net, weights)
    import lpips

    # pnet_rand=True: torchvision builds the trunk without weights (no download); pretrained=False: lpips
    # does not load its linear layers itself (it would with strict=False), we do it strictly below.
    with warnings.catch_warnings():  # torchvision's "'pretrained' is deprecated" from inside lpips
        warnings.simplefilter("ignore", UserWarning)
        model = lpips.LPIPS(net=net, pretrained=False, pnet_rand=True, verbose=False)
    lin = read_checkpoint(lin_path)
    lin_module = nn.ModuleDict({f"lin{i}": m for i, m in enumerate(model.lins)})
    load_strict(lin_module, lin.state_dict, source=str(lin_path))
    bb = read_checkpoint(bb_path)
    state = _torchvision_to_lpips(bb.state_dict, model.net)
    load_strict(model.net, state, source=str(bb_path))
    logger.info("LPIPS %s: backbone %s (sha256 %s)", net, bb_path, bb.sha256[:12])
    return LPIPS(model=model.to(device), net=net, backbone_path=str(bb_path), backbone_sha256=bb.sha256)
