"""Blur kernels (linear motion, camera-shake trajectories, defocus disks) and kernel convolution.

Kernels are ``kxk`` float32 numpy arrays with odd ``k``, non-negative, summing to 1, centred on
``(k // 2, k // 2)``. :func:`blur_with_kernel` is a true convolution (the kernel is flipped before
OpenCV's correlation) with symmetric ("reflect", ``d c b a | a b c d``) borders, i.e. the same as
``scipy.ndimage.convolve(..., mode="reflect")`` per channel.

Numpy images and CPU tensors are convolved by OpenCV (``cv2.filter2D``, which switches to a DFT for large
kernels). Tensors on another device (a GPU) are convolved where they are, the whole batch at once with one
kernel per image, by ``kornia.filters.filter2d`` after the same symmetric padding: the result equals
OpenCV's within float32 rounding, without a copy to the host and back. On the CPU kornia's direct
convolution is slower (7x for a 31x31 kernel at 512x512, ``benchmarks/kornia_fit.py``), hence OpenCV there.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    import torch


def rasterize_trajectory(points: np.ndarray) -> np.ndarray:
    """Splat 2-D points (``Nx2`` as (x, y), pixels, origin = kernel centre) into a kernel.

    Each point spreads unit mass bilinearly onto its four neighbouring pixels, so a densely
    sampled curve becomes an anti-aliased kernel; the result is normalised to sum 1.
    """
    points = np.asarray(points, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != 2 or len(points) == 0:
        raise ValueError(f"points must be Nx2 with N > 0, got shape {points.shape}")
    half = int(math.ceil(np.abs(points).max() + 1e-9))
    k = 2 * half + 1
    xy = points + half
    base = np.floor(xy).astype(np.int64)
    frac = xy - base
    kernel = np.zeros((k + 1, k + 1), dtype=np.float64)  # +1: a point exactly on the edge
    for dy in (0, 1):
        for dx in (0, 1):
            w = (frac[:, 0] if dx else 1 - frac[:, 0]) * (frac[:, 1] if dy else 1 - frac[:, 1])
            np.add.at(kernel, (base[:, 1] + dy, base[:, 0] + dx), w)
    kernel = kernel[:k, :k]
    return (kernel / kernel.sum()).astype(np.float32)


def line_kernel(length: float, angle: float) -> np.ndarray:
    """Linear motion blur: a segment of ``length`` pixels through the centre at ``angle`` degrees.

    The angle is counter-clockwise from the image x axis as displayed (rows grow downwards).
    ``length <= 1`` gives the identity kernel.
    """
    if length <= 1:
        return np.ones((1, 1), np.float32)
    t = np.linspace(-(length - 1) / 2, (length - 1) / 2, max(2, int(math.ceil(length * 4))))
    a = math.radians(angle)
    return rasterize_trajectory(np.stack([t * math.cos(a), -t * math.sin(a)], axis=1))


def camera_shake_trajectory(
    size: float, rng: np.random.Generator, *, anxiety: float = 0.5, steps: int = 96
) -> np.ndarray:
    """A random camera-shake path (``steps x 2``, pixels, centred, extent ``size``).

    Our own version of the random-walk-with-inertia model of Boracchi & Foi, "Modeling the
    performance of image restoration from motion blur" (IEEE TIP 2012): the velocity keeps its
    speed, is perturbed by Gaussian "anxiety", pulled back towards the start (centripetal term) and
    occasionally jerked (impulsive shake). The path is then scaled so that its largest extent
    (max of width and height) is ``size`` pixels.
    """
    if size <= 0:
        raise ValueError(f"camera-shake size must be > 0, got {size}")
    if not 0 <= anxiety <= 1:
        raise ValueError(f"anxiety must be in [0, 1], got {anxiety}")
    centripetal = 0.7 * rng.uniform()
    prob_big_shake = 0.2 * rng.uniform()
    gaussian_term = 10.0 * anxiety * rng.uniform()
    v = complex(math.cos(a := rng.uniform(0, 2 * math.pi)), math.sin(a))
    x = np.zeros(steps, dtype=np.complex128)
    # the walk is sequential by nature: ``steps`` iterations per kernel, not per pixel
    for t in range(1, steps):
        jerk = 0j
        if rng.uniform() < prob_big_shake * anxiety:
            jerk = 2 * v * complex(math.cos(b := rng.uniform(0, 2 * math.pi)), math.sin(b))
        dv = (
            jerk
            - centripetal * x[t - 1] / max(steps, 1)
            + gaussian_term * complex(rng.standard_normal(), rng.standard_normal()) / steps
        )
        v = v + dv
        v = v / (abs(v) + 1e-12)
        x[t] = x[t - 1] + v
    pts = np.stack([x.real, x.imag], axis=1)
    pts -= (pts.max(axis=0) + pts.min(axis=0)) / 2
    extent = (pts.max(axis=0) - pts.min(axis=0)).max()
    if extent > 0:
        pts *= (size - 1) / extent if size > 1 else 0.0
    return pts


def camera_shake_kernel(size: float, rng: np.random.Generator, *, anxiety: float = 0.5) -> np.ndarray:
    """Kernel of a random camera-shake trajectory of extent ``size`` px (see :func:`camera_shake_trajectory`)."""
    traj = camera_shake_trajectory(size, rng, anxiety=anxiety)
    # densify: 8 samples per pixel of path length so the splat is continuous
    seg = np.linalg.norm(np.diff(traj, axis=0), axis=1)
    total = seg.sum()
    if total == 0:
        return np.ones((1, 1), np.float32)
    s = np.concatenate([[0.0], np.cumsum(seg)])
    u = np.linspace(0, total, int(math.ceil(total * 8)) + 2)
    dense = np.stack([np.interp(u, s, traj[:, 0]), np.interp(u, s, traj[:, 1])], axis=1)
    # Centre the kernel's mass, not the path's bounding box: a kernel whose centroid is off the
    # centre also shifts the image, and a restoration net trained on such pairs must learn the shift.
    # The splat preserves the first moment, so the kernel's centroid is then exactly its centre.
    dense -= dense.mean(axis=0)
    return rasterize_trajectory(dense)


def defocus_kernel(radius: float, *, supersample: int = 8) -> np.ndarray:
    """Defocus (pill-box) kernel: a disk of ``radius`` px, anti-aliased by pixel coverage.

    Each pixel's weight is the fraction of its area inside the disk (estimated on a
    ``supersample x supersample`` grid). ``radius < 0.5`` gives the identity kernel.
    """
    if radius < 0:
        raise ValueError(f"defocus radius must be >= 0, got {radius}")
    if radius < 0.5:
        return np.ones((1, 1), np.float32)
    half = int(math.ceil(radius - 0.5))
    k = 2 * half + 1
    sub = (np.arange(supersample) + 0.5) / supersample - 0.5
    coords = (np.arange(k) - half)[:, None] + sub[None, :]  # (k, s)
    yy = coords[:, None, :, None]
    xx = coords[None, :, None, :]
    inside = (xx**2 + yy**2) <= radius**2  # (k, k, s, s)
    kernel = inside.mean(axis=(2, 3))
    return (kernel / kernel.sum()).astype(np.float32)


def _check_kernel(kernel: np.ndarray) -> np.ndarray:
    kernel = np.asarray(kernel, dtype=np.float32)
    if kernel.ndim != 2 or kernel.shape[0] != kernel.shape[1] or kernel.shape[0] % 2 == 0:
        raise ValueError(f"a blur kernel must be square with an odd size, got shape {kernel.shape}")
    if not np.isfinite(kernel).all():
        raise ValueError("blur kernel contains NaN or infinity")
    return kernel


def convolve_np(image: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Convolve an ``HxW[xC]`` float32 array with ``kernel`` (reflect borders); same size out."""
    import cv2

    kernel = _check_kernel(kernel)
    if kernel.shape == (1, 1):
        return (image * kernel[0, 0]).astype(np.float32)
    flipped = np.ascontiguousarray(kernel[::-1, ::-1])
    return cv2.filter2D(
        np.ascontiguousarray(image, dtype=np.float32), -1, flipped, borderType=cv2.BORDER_REFLECT
    )


def blur_with_kernel(image: np.ndarray | torch.Tensor, kernel: np.ndarray | torch.Tensor):
    """Blur ``image`` with ``kernel`` (true convolution, reflect borders, output clipped to [0, 1]).

    Args:
        image: ``HxWx3`` numpy float in [0, 1], or a ``(B, 3, H, W)`` tensor (off the CPU: convolved on its
            device by :func:`blur_batch_kornia`).
        kernel: ``kxk`` (odd k), or ``(B, k, k)`` with a tensor image (one kernel per image).

    Returns:
        The blurred image, same type and shape as ``image``.
    """
    if isinstance(image, np.ndarray):
        return np.clip(convolve_np(image, np.asarray(kernel)), 0.0, 1.0)
    import torch

    if image.ndim != 4 or image.shape[1] != 3:
        raise ValueError(f"blur_with_kernel expects (B, 3, H, W), got {tuple(image.shape)}")
    k = kernel.detach().cpu().numpy() if isinstance(kernel, torch.Tensor) else np.asarray(kernel)
    if k.ndim == 2:
        k = np.broadcast_to(k, (image.shape[0], *k.shape))
    if k.ndim != 3 or k.shape[0] != image.shape[0]:
        raise ValueError(f"kernel must be (k, k) or (B, k, k) with B={image.shape[0]}, got {k.shape}")
    if image.device.type != "cpu":
        return blur_batch_kornia(image, k)
    out = []
    for i in range(image.shape[0]):
        x = image[i].detach().float().cpu().permute(1, 2, 0).numpy()
        out.append(torch.from_numpy(np.clip(convolve_np(x, k[i]), 0.0, 1.0)).permute(2, 0, 1))
    return torch.stack(out).to(device=image.device, dtype=image.dtype)


def symmetric_pad(x: torch.Tensor, pad: int) -> torch.Tensor:
    """``(..., H, W)`` padded by ``pad`` pixels on each side like OpenCV's ``BORDER_REFLECT``
    (``d c b a | a b c d``, reflected again where ``pad`` exceeds the image), on ``x``'s device."""
    import torch

    def index(n: int) -> torch.Tensor:
        i = torch.arange(-pad, n + pad, device=x.device) % (2 * n)
        return torch.where(i >= n, 2 * n - 1 - i, i)

    return x.index_select(-2, index(x.shape[-2])).index_select(-1, index(x.shape[-1]))


def blur_batch_kornia(image: torch.Tensor, kernels: np.ndarray) -> torch.Tensor:
    """:func:`blur_with_kernel` of a ``(B, 3, H, W)`` tensor with ``kernels`` ``(B, k, k)`` (one per image) by
    ``kornia.filters.filter2d`` on the image's device: float32 inside, clipped, returned in ``image.dtype``."""
    import torch
    from kornia.filters import filter2d

    for kern in kernels:
        _check_kernel(kern)
    flipped = np.ascontiguousarray(np.asarray(kernels, dtype=np.float32)[:, ::-1, ::-1])
    weights = torch.from_numpy(flipped).to(image.device)
    x = symmetric_pad(image.detach().to(torch.float32), kernels.shape[-1] // 2)
    out = filter2d(x, weights, padding="valid").clamp(0.0, 1.0)
    return out.to(image.dtype)
