"""Where kornia could replace OpenCV in this project: the difference from the current result and the time of both.

For each candidate (the DCP baseline's guided filter, the degradations' Gaussian blurs, kernel convolutions,
affine warps and hue rotation) prints the largest absolute difference between kornia's result and the
project's (whole image and away from the border) and the best-of-N seconds of each, single-threaded, on a
random image. Run from the repository root: ``python benchmarks/kornia_fit.py [--size 512]``.
"""

from __future__ import annotations

import argparse
import time

import cv2
import numpy as np
import torch


def best(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def report(name: str, ours: np.ndarray, theirs: np.ndarray, margin: int, t_ours: float, t_kornia: float) -> None:
    d = np.abs(np.asarray(ours, np.float64) - np.asarray(theirs, np.float64))
    inner = d[margin:-margin, margin:-margin] if margin else d
    print(f"{name:<44} max |diff| {d.max():.2e} (interior {inner.max():.2e})   OpenCV {t_ours * 1e3:8.1f} ms   "
          f"kornia {t_kornia * 1e3:8.1f} ms   ({t_kornia / t_ours:.1f}x)")


def main() -> None:
    import kornia

    from robustsam_prior.degradations.kernels import symmetric_pad

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    n, reps = args.size, args.repeats
    rng = np.random.default_rng(0)
    img = cv2.GaussianBlur(rng.random((n, n, 3), dtype=np.float32), (0, 0), 2)
    t = torch.from_numpy(img.transpose(2, 0, 1).copy())[None]
    print(f"kornia {kornia.__version__}, {n}x{n}, 1 thread, best of {reps}")

    # the DCP baseline's guided filter: r = 60, eps = 1e-3, grey guide, float64, BORDER_REFLECT
    from restore.baselines import guided_filter

    grey, src = img.mean(axis=2).astype(np.float64), img[..., 0].astype(np.float64)
    r = 60

    def kornia_gf() -> np.ndarray:
        g, s = (symmetric_pad(torch.from_numpy(a)[None, None], 2 * r) for a in (grey, src))
        out = kornia.filters.guided_blur(g, s, 2 * r + 1, 1e-3, separable=True)
        return out[0, 0, 2 * r : -2 * r, 2 * r : -2 * r].numpy()

    report("guided filter r=60 (DCP)", guided_filter(grey, src, r, 1e-3), kornia_gf(), 0,
           best(lambda: guided_filter(grey, src, r, 1e-3), reps), best(kornia_gf, 1))

    # Gaussian blur of the degradations (haze depth, fog blobs, elastic field, frosted glass)
    sigma = 4.0
    k = int(round(sigma * 8 + 1)) | 1  # OpenCV's size for float images
    ours = cv2.GaussianBlur(img, (0, 0), sigmaX=sigma, borderType=cv2.BORDER_REFLECT)

    def kornia_gauss() -> torch.Tensor:
        return kornia.filters.gaussian_blur2d(t, (k, k), (sigma, sigma), border_type="reflect")

    report(f"Gaussian blur sigma={sigma}", ours, kornia_gauss()[0].permute(1, 2, 0).numpy(), k,
           best(lambda: cv2.GaussianBlur(img, (0, 0), sigmaX=sigma, borderType=cv2.BORDER_REFLECT), reps),
           best(kornia_gauss, reps))

    # kernel convolution (motion/defocus/shake blur): blur_with_kernel's OpenCV path and its kornia path
    from robustsam_prior.degradations.kernels import blur_batch_kornia, blur_with_kernel, line_kernel

    kern = line_kernel(25.0, 0.4)
    kern = np.pad(kern, (31 - kern.shape[0]) // 2)[None]
    report(f"convolution {kern.shape[-1]}x{kern.shape[-1]} kernel (blur_with_kernel)", blur_with_kernel(t, kern)[0, 0],
           blur_batch_kornia(t, kern)[0, 0], 0, best(lambda: blur_with_kernel(t, kern), reps),
           best(lambda: blur_batch_kornia(t, kern), reps))

    # affine warp (zoom and non-uniform shake blur average such warps): bilinear, reflected borders
    z, c = 0.93, (n - 1) / 2
    m = np.array([[z, 0, (1 - z) * c], [0, z, (1 - z) * c]], np.float64)

    def cv_warp() -> np.ndarray:
        return cv2.warpAffine(img, m, (n, n), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)

    def kornia_warp() -> torch.Tensor:
        mt = torch.from_numpy(m).float()[None]
        return kornia.geometry.transform.warp_affine(t, mt, (n, n), mode="bilinear", padding_mode="reflection",
                                                     align_corners=False)

    report("affine warp (zoom 0.93)", cv_warp(), kornia_warp()[0].permute(1, 2, 0).numpy(), 2,
           best(cv_warp, reps), best(kornia_warp, reps))

    # hue rotation (color_jitter): OpenCV's float HSV vs kornia.enhance.adjust_hue (radians)
    from robustsam_prior.degradations.digital import adjust_hue

    def kornia_hue() -> torch.Tensor:
        return kornia.enhance.adjust_hue(t, 0.2 * 2 * np.pi).clamp(0, 1)

    report("hue rotation 0.2 turns", adjust_hue(img, 0.2), kornia_hue()[0].permute(1, 2, 0).numpy(), 0,
           best(lambda: adjust_hue(img, 0.2), reps), best(kornia_hue, reps))


if __name__ == "__main__":
    main()
