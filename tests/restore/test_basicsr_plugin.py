"""restore.basicsr_plugin and restore.basicsr_dataset: what BasicSR's registries hold after the import, and
the prior dataset's pairing, joint crop/flips, prior cache and option errors."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from restore.basicsr_dataset import PairedImagePriorDataset, PriorPairs, pair_files
from restore.training.data import relabel
from restore.training.files import DataError
from robustsam_prior.prior import PriorOutput


def _pairs(root: Path, n: int = 2, h: int = 40, w: int = 56, tmpl: str = "{}") -> Path:
    """Clean images whose colour changes along both axes (so every flip and transpose shows) and inputs
    ``lq = gt // 2 + 64``."""
    (root / "gt").mkdir(parents=True)
    (root / "lq").mkdir()
    rng = np.random.default_rng(0)
    for i in range(n):
        gt = rng.integers(0, 256, (h // 8, w // 8, 3)).repeat(8, 0).repeat(8, 1).astype(np.uint8)
        Image.fromarray(gt).save(root / "gt" / f"p{i}.png")
        Image.fromarray(gt // 2 + 64).save(root / "lq" / f"{tmpl.format(f'p{i}')}.png")
    return root


class BlockPrior:
    """A prior whose regions are the 8x8 blocks the test images are made of: label = the block's red level."""

    name = "blocks"
    meta = {"name": "blocks", "options": {}, "version": "test"}
    calls = 0

    def __call__(self, images: torch.Tensor) -> PriorOutput:
        BlockPrior.calls += 1
        return PriorOutput((images[:, 0] * 255).round().to(torch.int32), {}, dict(self.meta))


def test_plugin_registers_archs_dataset_and_model_once():
    from restore import basicsr_plugin  # first: it imports BasicSR through import_basicsr()

    from basicsr.utils.registry import ARCH_REGISTRY, DATASET_REGISTRY, MODEL_REGISTRY  # isort: skip

    names = basicsr_plugin.register()  # the import registered them already: idempotent
    assert names == {"arch": ["FusionNAFNet", "MapNAFNet", "NAFNet"], "dataset": ["PairedImagePriorDataset"],
                     "model": ["PriorRestorationModel"]}
    assert MODEL_REGISTRY.get("PriorRestorationModel") is basicsr_plugin.PriorRestorationModel
    assert DATASET_REGISTRY.get("PairedImagePriorDataset") is PairedImagePriorDataset
    assert "MapNAFNet" in ARCH_REGISTRY


def test_plugin_refuses_to_replace_a_different_model(monkeypatch):
    from restore import basicsr_plugin

    from basicsr.utils.registry import MODEL_REGISTRY  # isort: skip

    monkeypatch.setattr(MODEL_REGISTRY, "_obj_map", {**MODEL_REGISTRY._obj_map, "PriorRestorationModel": object})
    with pytest.raises(RuntimeError, match="model registry already has a different 'PriorRestorationModel'"):
        basicsr_plugin.register()


def test_crop_and_flips_move_input_ground_truth_and_labels_together(tmp_path):
    root = _pairs(tmp_path)
    ds = PriorPairs(pairs=pair_files(root / "gt", root / "lq", "{}", "t"), prior=BlockPrior(), crop=24,
                    hflip=True, rot=True)
    seen = set()
    for seed in range(24):
        random.seed(seed)
        s = ds[seed % 2]
        lq, gt, labels = s["lq"], s["gt"], s["prior_labels"]
        assert lq.shape == gt.shape == (3, 24, 24) and labels.shape == (24, 24) and labels.dtype == torch.int32
        assert torch.equal((lq * 255).round(), torch.div((gt * 255).round(), 2, rounding_mode="floor") + 64)
        # the labels are the blocks of this very crop (same flips), relabelled 0..K-1
        expected = relabel((lq[0] * 255).round().to(torch.int32).numpy())
        assert np.array_equal(labels.numpy(), expected)
        seen.add(s["lq_path"])
        whole = (np.asarray(Image.open(s["gt_path"])) / 255).astype(np.float32)
        seen.add(_placement(gt.permute(1, 2, 0).numpy(), whole))
    assert {"hflip", "vflip", "transpose"} <= seen  # the seeds exercised every augmentation


def _placement(crop: np.ndarray, whole: np.ndarray) -> str:
    """Which augmentation makes ``crop`` a window of ``whole`` (flips tried one at a time)."""
    h, w = crop.shape[:2]
    for name, c in (("hflip", crop[:, ::-1]), ("vflip", crop[::-1]), ("transpose", crop.swapaxes(0, 1))):
        for y in range(whole.shape[0] - h + 1):
            for x in range(whole.shape[1] - w + 1):
                if np.array_equal(whole[y : y + h, x : x + w], c):
                    return name
    return "other"


def _options(root: Path, **extra) -> dict:
    return {"name": "t", "type": "PairedImagePriorDataset", "phase": "train", "dataroot_gt": str(root / "gt"),
            "dataroot_lq": str(root / "lq"), "io_backend": {"type": "disk"}, "gt_size": 16, "batch_size_per_gpu": 2,
            **extra}


def test_the_prior_cache_is_the_one_prior_cache_fills(tmp_path):
    from robustsam_prior.cache import fill_cache
    from robustsam_prior.prior import build_prior

    root = _pairs(tmp_path / "data", tmpl="{}_hazy")
    prior = build_prior("regions", n_segments=8)
    items = [(p, Path(p.name)) for p in sorted((root / "lq").iterdir())]
    _, stats = fill_cache(items, prior, tmp_path / "cache")
    assert stats["misses"] == 2
    ds = PairedImagePriorDataset(_options(root, filename_tmpl="{}_hazy", prior={"type": "regions", "n_segments": 8},
                                          prior_cache=str(tmp_path / "cache")))
    assert [lq.name for lq, _ in ds.pairs] == ["p0_hazy.png", "p1_hazy.png"]
    for i in range(2):
        ds[i]
    assert ds.prior_cache.stats == {"hits": 2, "misses": 0, "corrupt": 0}


def test_validation_samples_are_whole_images_with_the_whole_prior(tmp_path):
    root = _pairs(tmp_path)
    ds = PairedImagePriorDataset(_options(root, phase="val", gt_size=None, prior={"type": "regions", "n_segments": 6}))
    s = ds[1]
    assert s["lq"].shape == (3, 40, 56)
    from robustsam_prior.prior import build_prior

    whole = build_prior("regions", n_segments=6)(s["lq"][None])
    assert torch.equal(s["prior_labels"], torch.from_numpy(relabel(whole.labels[0].numpy())))


@pytest.mark.parametrize(
    "change, message",
    [
        ({"gt_sise": 16}, "datasets.train (t): unknown key 'gt_sise' (did you mean 'gt_size'?)"),
        ({"dataroot_lq": None}, "dataroot_lq is required"),
        ({"io_backend": {"type": "lmdb"}}, "io_backend: only 'disk' is supported, got 'lmdb'"),
        ({"scale": 4}, "scale must be 1"),
        ({"gt_size": None}, "gt_size: the training crop must be a positive integer, got None"),
        ({"prior": {"n_segments": 4}}, "prior: needs a type"),
        ({"prior": {"type": "region"}}, "prior: unknown prior 'region' (did you mean 'regions'?)"),
        ({"prior": {"type": "regions", "segments": 4}}, "prior: prior 'regions': unknown option 'segments'"),
        ({"filename_tmpl": "{}_x"}, "no input 'p0_x.png' in"),
    ],
)
def test_option_errors_name_the_dataset_and_key(tmp_path, change, message):
    root = _pairs(tmp_path)
    with pytest.raises(DataError) as e:
        PairedImagePriorDataset(_options(root, **change))
    assert message in str(e.value)


def test_sample_errors_name_the_files(tmp_path):
    root = _pairs(tmp_path)
    ds = PairedImagePriorDataset(_options(root, gt_size=48))
    with pytest.raises(DataError, match=r"gt_size: 48 is larger than .*p0.png \(56x40\)"):
        ds[0]
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(root / "lq" / "p1.png")
    with pytest.raises(DataError, match=r"p1.png is 8x8 but its ground truth .*p1.png is 56x40"):
        ds[1]
    (root / "gt2").mkdir()
    with pytest.raises(DataError, match="dataroot_gt: no image files in"):
        pair_files(root / "gt2", root / "lq", "{}", "datasets.train (t)")
