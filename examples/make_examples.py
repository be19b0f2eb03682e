"""Make the bundled example images from clean photos that installed packages ship.

    python examples/make_examples.py                  # writes examples/hazy/*.png, examples/blurry/*.png
    python examples/make_examples.py --before-after   # also examples/before_after/*.jpg (needs the default models)

Sources (``restore.zoo.HELD_OUT_PHOTOS``: in none of the default models' training sets, pipelines/train_default_*.yml):
scikit-image's ``chelsea.png`` (451x300) and ``coffee.png`` (600x400), the two held-out validation images,
and matplotlib's ``sample_data/grace_hopper.jpg`` (512x600). They are degraded with this project's
degradation library (``robustsam_prior.degradations.degrade``) with a fixed seed per image, so the files
are reproducible byte for byte on the same library versions:

- ``hazy/``: ``haze`` severity 3 (scattering model, synthetic depth, grey airlight);
- ``blurry/``: ``camera_shake_blur`` severity 2 (a random camera-shake trajectory kernel).

``examples/manifest.json`` records for each image the source, the kind, the severity, the seed and the drawn
parameters. ``--before-after`` restores each example with the task's default model (``restore.zoo``)
and writes side-by-side pictures (degraded | restored) for the README.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np

logger = logging.getLogger("make_examples")

HERE = Path(__file__).resolve().parent
# folder -> (task, degradation kind, severity, seed offset)
FOLDERS = {
    "hazy": ("dehaze", "haze", 3, 100),
    "blurry": ("deblur", "camera_shake_blur", 2, 200),
}


def make_examples(out_dir: Path = HERE) -> list[Path]:
    """Write the degraded examples and ``manifest.json`` under ``out_dir``; returns the image paths."""
    import torch

    from restore.zoo import HELD_OUT_PHOTOS
    from robustsam_prior.core.fileio import package_path
    from robustsam_prior.core.io import read_image, to_numpy, to_tensor, write_image
    from robustsam_prior.degradations import degrade

    written, manifest = [], {}
    for folder, (_task, kind, severity, offset) in FOLDERS.items():
        for i, (name, url) in enumerate(HELD_OUT_PHOTOS.items()):
            src = package_path(url)
            clean = to_tensor(read_image(src).pixels)
            seed = offset + i
            with torch.no_grad():
                out = degrade(clean, kind, severity, seed=seed)
            path = write_image(out_dir / folder / f"{name}.png", to_numpy(out.image.clamp(0, 1)))
            written.append(path)
            manifest[f"{folder}/{path.name}"] = {
                "source": url,
                "kind": kind,
                "severity": severity,
                "seed": seed,
                "params": out.params,
            }
            logger.info("%s <- %s (%s, severity %d, seed %d)", path, src, kind, severity, seed)
    # beside, not inside, the image folders: `robustsam-restore dehaze examples/hazy out/` sees images only
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True, allow_nan=False) + "\n")
    return written


def make_before_after(out_dir: Path = HERE) -> list[Path]:
    """Restore every example with its task's default model; write ``degraded | restored`` JPEGs."""
    from restore.inference import Restorer
    from robustsam_prior.core.io import read_image, to_numpy, to_tensor, write_image

    written = []
    for folder, (task, *_rest) in FOLDERS.items():
        restorer = Restorer.load(None, task=task, device="cpu")
        for path in sorted((out_dir / folder).glob("*.png")):
            degraded = read_image(path).pixels
            restored = to_numpy(restorer.restore(to_tensor(degraded)))
            gap = np.ones((degraded.shape[0], 8, 3), np.float32)
            side = np.concatenate([degraded, gap, restored], axis=1)
            written.append(write_image(out_dir / "before_after" / f"{folder}_{path.stem}.jpg", side, quality=90))
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE, help="folder to write into (default: examples/)")
    parser.add_argument("--before-after", action="store_true", help="also write README before/after pictures")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    make_examples(args.out)
    if args.before_after:
        make_before_after(args.out)


if __name__ == "__main__":
    main()
