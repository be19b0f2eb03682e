"""Degradation synthesis: the paper's 15 Robust-Seg degradations plus haze and kernel blurs.

>>> from robustsam_prior.degradations import degrade
>>> out = degrade(images, "fog", severity=3, seed=0)   # images: (B, 3, H, W) float in [0, 1]
>>> out.image, out.params, out.transmission, out.airlight

Families: ``noise`` (gaussian, iso, multiplicative, impulse), ``blur`` (resampling, motion, zoom,
defocus, camera shake: uniform, or spatially varying with roll), ``weather`` (fog, rain, snow),
``digital`` (colour jitter, JPEG, low light, contrast), ``geometric`` (elastic, frosted glass; they
warp label maps too) and ``haze`` (scattering model). Each has one parameter table per severity (1..5)
in its registry entry.

Files are degraded through :func:`degrade_file` with one seeding rule (:func:`file_seed`, module
``files``), shared by every command, the pipelines and the trainers; :func:`write_degraded` writes a
degraded file and its side files where a :class:`DegradeLayout` says, as ``robustsam-restore degrade`` does.

Names are resolved lazily (module ``__getattr__``) so that importing this package does not import
torch or OpenCV.
"""

from __future__ import annotations

from ..core.lazy import lazy_exports

_EXPORTS = {
    "DEGRADATIONS": "api",  # via api so that every family is registered
    "ROBUST_SEG_SET": "api",
    "RESTORATION_SET": "api",
    "Degraded": "batch",
    "degrade": "api",
    "describe": "api",
    "describe_json": "api",
    "SEED_RULE": "files",
    "degrade_file": "files",
    "file_seed": "files",
    "quantise": "files",
    "DegradeLayout": "files",
    "write_degraded": "files",
    "degrade_manifest": "files",
    "Degradation": "base",
    "ParamRange": "base",
    "Out": "base",
    "SEVERITIES": "base",
    "add_haze": "haze",
    "synthetic_depth": "haze",
    "camera_shake_kernel": "kernels",
    "camera_shake_trajectory": "kernels",
    "defocus_kernel": "kernels",
    "line_kernel": "kernels",
    "blur_with_kernel": "kernels",
}

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
