"""Lay fetched snapshots of public repositories out as the real-data training folders.

The recipes ``pipelines/train_default_{deblur,dehaze}*.yml`` name folders under ``data/train`` (relative
to the repository root); this script fills them from a clone or a bare snapshot of each repository::

    python scripts/layout_training_data.py SNAPSHOT [--layout NAME] [--out data/train] [--commit REV]

``SNAPSHOT`` is a work tree or a git directory (a bare clone works: files are read with ``git show``).
``--layout deblurring_dataset_generator`` (the default) reads jeffreywolberg/deblurring_dataset_generator
and lays out these, and nothing else (the repository's ``saved_images`` pairs are kept for independent
evaluation and never copied):

- ``gopro0477/train/GOPR0477_11_00/``: the first 80% of the 299 consecutive 240-fps frames of
  ``data/level3/videos/GOPR0477_11_00`` (frames 1-239), and ``gopro0477/val/GOPR0477_11_00/`` the
  last 20% (240-299): separate folders, so no averaging window can cross the split;
- ``div2k/``: the DIV2K photos ``data/level1/NNNN.png`` (clean training photos for both tasks);
- ``nyu/{train,val}/{images,depth}/``: the NYU-Depth-v2 indoor photos of ``data/level2/images`` with
  their metric depth maps (``data/level2/depth_maps/*.npy``, metres); the last two by name are the
  depth-haze validation images.

``--layout ffdnet_photos`` reads cszn/FFDNet and lays out the colour photos of its denoising test sets
(``testsets/CBSD68``, the Berkeley photos; ``testsets/Kodak24``; ``testsets/McMaster``) as clean photos
under ``photos/``: ``photos/val/`` holds every eighth photo of each set in name order, ``photos/train/``
the rest, each named ``<set>_<file name>``. They bring scenes the other sources lack (foliage, animals,
buildings, people) for synthetic blur.

``SOURCES.json`` at the top of each layout (``data/train`` and ``data/train/photos``) records the
repository, commit, source path, destination and sha256 of every file, and the source files the snapshot
lacked (snapshots leave out files of 4 MiB and more).
Files are written atomically; an existing folder is refreshed in place.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

VIDEO = "data/level3/videos/GOPR0477_11_00"
VAL_FRACTION = 0.2
NYU_VAL = 2


@dataclass(frozen=True)
class Source:
    """A snapshot read through git (``git_dir``) or from a plain folder (``root``)."""

    root: Path
    git_dir: Path | None
    commit: str

    @classmethod
    def open(cls, path: Path, rev: str) -> Source:
        path = path.resolve()
        for git_dir in (path / ".git", path):
            if (git_dir / "HEAD").is_file() and (git_dir / "objects").is_dir():
                commit = cls._git(git_dir, "rev-parse", f"{rev}^{{commit}}").decode().strip()
                return cls(path, git_dir, commit)
        if not path.is_dir():
            sys.exit(f"error: {path}: not a folder")
        return cls(path, None, "unknown (plain folder)")

    @staticmethod
    def _git(git_dir: Path, *args: str) -> bytes:
        try:
            return subprocess.run(["git", f"--git-dir={git_dir}", *args], check=True, capture_output=True).stdout
        except subprocess.CalledProcessError as e:
            sys.exit(f"error: git {' '.join(args)} in {git_dir}: {e.stderr.decode().strip()}")

    def listing(self, folder: str) -> list[str]:
        """Paths of the files directly inside ``folder``, sorted (the tree's, not the object store's)."""
        if self.git_dir is None:
            if not (self.root / folder).is_dir():
                return []
            return sorted(str(p.relative_to(self.root)) for p in (self.root / folder).iterdir() if p.is_file())
        out = self._git(self.git_dir, "ls-tree", "--name-only", self.commit, folder + "/")
        return sorted(out.decode().splitlines())

    def read(self, path: str) -> bytes | None:
        """The file's bytes, or ``None`` where the snapshot lacks them (listed but absent)."""
        if self.git_dir is None:
            p = self.root / path
            return p.read_bytes() if p.is_file() else None
        proc = subprocess.run(["git", f"--git-dir={self.git_dir}", "show", f"{self.commit}:{path}"],
                              capture_output=True)
        return proc.stdout if proc.returncode == 0 else None


def plan_generator(src: Source) -> list[tuple[str, str]]:
    """``(source path, destination)`` for every file of the deblurring_dataset_generator layout."""
    frames = [p for p in src.listing(VIDEO) if p.endswith(".png")]
    if not frames:
        sys.exit(f"error: {VIDEO}: no frames in the snapshot")
    n_train = len(frames) - round(len(frames) * VAL_FRACTION)
    seq = Path(VIDEO).name
    files = [(p, f"gopro0477/{'train' if i < n_train else 'val'}/{seq}/{Path(p).name}") for i, p in enumerate(frames)]
    # level1 holds the DIV2K photos (NNNN.png) beside its saved_images folder of reserved pairs
    files += [(p, f"div2k/{Path(p).name}") for p in src.listing("data/level1")
              if Path(p).suffix == ".png" and Path(p).stem.isdigit()]
    images = [p for p in src.listing("data/level2/images") if p.endswith(".jpg")]
    for i, p in enumerate(images):
        split = "val" if i >= len(images) - NYU_VAL else "train"
        stem = Path(p).stem
        files += [(p, f"nyu/{split}/images/{stem}.jpg"),
                  (f"data/level2/depth_maps/{stem}.npy", f"nyu/{split}/depth/{stem}.npy")]
    return files


PHOTO_SETS = ("CBSD68", "Kodak24", "McMaster")
PHOTO_VAL_EVERY = 8


def plan_photos(src: Source) -> list[tuple[str, str]]:
    """``(source path, destination)`` for every file of the ffdnet_photos layout."""
    files = []
    for name in PHOTO_SETS:
        photos = [p for p in src.listing(f"testsets/{name}") if Path(p).suffix.lower() in (".png", ".tif", ".tiff")]
        if not photos:
            sys.exit(f"error: testsets/{name}: no photos in the snapshot")
        for i, p in enumerate(photos):
            split = "val" if i % PHOTO_VAL_EVERY == PHOTO_VAL_EVERY - 1 else "train"
            files.append((p, f"{split}/{name.lower()}_{Path(p).name}"))
    return files


# --layout: (repository, sub-folder of --out that holds the layout and its SOURCES.json, plan, note)
LAYOUTS = {
    "deblurring_dataset_generator": (
        "jeffreywolberg/deblurring_dataset_generator", "", plan_generator,
        "the data/level*/saved_images pairs are reserved for evaluation and are not laid out"),
    "ffdnet_photos": (
        "cszn/FFDNet", "photos", plan_photos,
        "colour photos of the testsets CBSD68, Kodak24 and McMaster; every eighth of each set (name order) is validation"),
}


def write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    tmp.replace(path)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("snapshot", type=Path, help="work tree or git directory of the layout's repository")
    ap.add_argument("--layout", choices=sorted(LAYOUTS), default="deblurring_dataset_generator",
                    help="which repository the snapshot is, and so what is laid out (default deblurring_dataset_generator)")
    ap.add_argument("--out", type=Path, default=Path("data/train"), help="destination folder (default data/train)")
    ap.add_argument("--commit", default="HEAD", help="revision to read from a git snapshot (default HEAD)")
    args = ap.parse_args(argv)
    repo, sub, plan, note = LAYOUTS[args.layout]
    src = Source.open(args.snapshot, args.commit)
    out = args.out / sub
    records, missing = [], []
    for source_path, dest in plan(src):
        data = src.read(source_path)
        if data is None:
            missing.append(source_path)
            continue
        write_atomic(out / dest, data)
        records.append({"source": source_path, "path": dest, "bytes": len(data),
                        "sha256": hashlib.sha256(data).hexdigest()})
    manifest = {"repository": repo, "commit": src.commit, "files": records, "missing_in_snapshot": missing,
                "note": note}
    write_atomic(out / "SOURCES.json", (json.dumps(manifest, indent=1, allow_nan=False) + "\n").encode())
    print(f"{len(records)} files into {out}; {len(missing)} missing in the snapshot"
          + (f": {', '.join(missing)}" if missing else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
