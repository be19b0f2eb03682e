"""Training data: joint augmentation keeps labels on the image, positions fix samples, rank slices
make up the global batch, workers give the same batches, schedule and EMA formulas, losses vs BasicSR."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from restore.training.data import (
    DataError,
    PairDataset,
    PositionBatches,
    collate,
    color_jitter,
    config_path,
    relabel,
)
from restore.training.losses import PixelLoss, charbonnier_loss, fft_loss, l1_loss, psnr_loss
from restore.training.options import AugmentOptions, DatasetOptions, DegradationOptions, LossTerm
from restore.training.schedule import Ema, lr_factor
from robustsam_prior.prior import PriorOutput


class QuantisePrior:
    """A prior whose label map is a function of the pixels it sees: floor(4 * red) + 4 * floor(4 * green)."""

    name = "quantise"
    meta = {"name": "quantise"}

    def __call__(self, images):
        q = (images[:, :2] * 3.999).floor().int()
        return PriorOutput((q[:, 0] + 4 * q[:, 1]).int(), {}, {})


def _synthetic(tmp_path, pairs_factory, **kw):
    lq, gt = pairs_factory(tmp_path, 3, 64, seed=0)
    opts = DatasetOptions(type="paired", lq_dir=str(lq), gt_dir=str(gt), crop_size=24, **kw)
    return opts


def test_joint_augmentation_keeps_labels_aligned(tmp_path, pairs_factory):
    opts = _synthetic(tmp_path, pairs_factory, augment=AugmentOptions(hflip=True, vflip=True, rot90=True))
    ds = PairDataset(opts, key="data.train", seed=1, train=True, prior=QuantisePrior())
    seen_rot = 0
    for p in range(24):
        s = ds[p]
        expected = QuantisePrior()(s.lq[None]).labels[0].numpy()
        assert np.array_equal(s.labels.numpy(), relabel(expected)), f"position {p}: labels off the image"
        assert s.labels.min() == 0 and s.labels.max() == len(np.unique(s.labels)) - 1
        seen_rot += int(not np.array_equal(s.lq.numpy(), s.lq.numpy()[:, ::-1]))
    assert seen_rot > 0
    # the ground truth went through the same transform: the test images are hazed as
    # lq = gt * t + 0.85 * (1 - t) with t in [0.35, 0.75], so lq - 0.85 and gt - 0.85 share signs
    s = ds[5]
    assert s.lq.shape == s.gt.shape == (3, 24, 24)
    same_sign = ((s.lq - 0.85) * (s.gt - 0.85) >= -1e-2).float().mean()
    assert same_sign > 0.97


def test_positions_fix_samples_and_ranks_split_the_global_batch(tmp_path, pairs_factory):
    opts = _synthetic(tmp_path, pairs_factory)
    a = PairDataset(opts, key="k", seed=4, train=True)
    b = PairDataset(opts, key="k", seed=4, train=True)
    for p in (0, 7, 3, 7):
        assert torch.equal(a[p].lq, b[p].lq) and a[p].name == b[p].name
    assert not torch.equal(a[0].lq, PairDataset(opts, key="k", seed=5, train=True)[0].lq)
    # every image once per epoch, a new order the next epoch
    e0 = [a.image_index(p) for p in range(3)]
    e1 = [a.image_index(p) for p in range(3, 6)]
    assert sorted(e0) == sorted(e1) == [0, 1, 2]
    single = list(PositionBatches(global_batch=4, rank=0, world_size=1, start_step=2, steps=4))
    ranks = [list(PositionBatches(global_batch=4, rank=r, world_size=2, start_step=2, steps=4)) for r in (0, 1)]
    assert single == [[8, 9, 10, 11], [12, 13, 14, 15]]
    assert [r0 + r1 for r0, r1 in zip(*ranks)] == single
    with pytest.raises(DataError, match="global batch 3 must be divisible by the number of processes"):
        PositionBatches(global_batch=3, rank=0, world_size=2, start_step=0, steps=1)
    loader = torch.utils.data.DataLoader(
        a, batch_sampler=PositionBatches(global_batch=2, rank=0, world_size=1, start_step=0, steps=3),
        collate_fn=collate, num_workers=1,
    )
    for t, batch in enumerate(loader):
        direct = collate([b[p] for p in (2 * t, 2 * t + 1)])
        assert torch.equal(batch["lq"], direct["lq"]) and batch["names"] == direct["names"]


def test_dataset_errors(tmp_path, pairs_factory):
    lq, gt = pairs_factory(tmp_path, 2, 32, seed=0)
    with pytest.raises(DataError, match=r"data.train.crop_size: 48 is larger than image 'img0.png' \(32x32\)"):
        PairDataset(DatasetOptions(type="paired", lq_dir=str(lq), gt_dir=str(gt), crop_size=48),
                    key="data.train", seed=0, train=True)
    with pytest.raises(DataError, match=r"data.train.lq_dir: no image files in .* match include=\['\*.jpg'\]"):
        PairDataset(DatasetOptions(type="paired", lq_dir=str(lq), gt_dir=str(gt), include=("*.jpg",)),
                    key="data.train", seed=0, train=True)
    (gt / "img1.png").unlink()
    with pytest.raises(DataError, match=r"data.val.gt_dir: no ground truth .* for 1 input\(s\) \(gt_match='stem'\)"):
        PairDataset(DatasetOptions(type="paired", lq_dir=str(lq), gt_dir=str(gt), crop_size=16),
                    key="data.val", seed=0, train=False)


def test_synthetic_fresh_and_variants(tmp_path, pairs_factory):
    _, gt = pairs_factory(tmp_path, 2, 64, seed=0)
    deg = DegradationOptions(kinds=("haze",), severity=(3, 3))
    fresh = PairDataset(DatasetOptions(clean_dir=str(gt), degradation=deg, crop_size=32), key="k", seed=0,
                        train=True, prior=QuantisePrior())
    assert fresh.needs_prior_on_batch()
    s = fresh[0]
    assert s.labels is None and s.lq.shape == (3, 32, 32)
    assert float((s.lq - s.gt).abs().mean()) > 0.02, "haze changed nothing"
    var = PairDataset(DatasetOptions(clean_dir=str(gt), degradation=deg, crop_size=32, variants=2), key="k",
                      seed=0, train=True, prior=QuantisePrior())
    assert not var.needs_prior_on_batch()
    for p in range(6):
        s = var[p]
        assert s.labels is not None
    assert len(var._variants) <= 4  # 2 images x 2 variants, each degraded and segmented once


def test_warns_when_fixed_variants_overflow_the_memory_cache(tmp_path, pairs_factory, caplog):
    _, gt = pairs_factory(tmp_path, 2, 64, seed=0)
    deg = DegradationOptions(kinds=("haze",), severity=(3, 3))

    def build(cache_images, prior, train=True):
        caplog.clear()
        opts = DatasetOptions(clean_dir=str(gt), degradation=deg, crop_size=32, variants=2, cache_images=cache_images)
        PairDataset(opts, key="data.train", seed=0, train=train, prior=prior)
        return [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]

    with caplog.at_level("WARNING", logger="restore.training.data"):
        msgs = build(3, QuantisePrior())
        assert len(msgs) == 1
        assert "data.train: 2 images x 2 variants = 4 fixed variants, more than cache_images=3" in msgs[0]
        assert "segmented again (set prior.cache_dir" in msgs[0]
        msgs = build(3, None)
        assert len(msgs) == 1 and "degraded again each time" in msgs[0] and "segmented" not in msgs[0]
        assert build(4, QuantisePrior()) == []  # fits
        assert build(3, QuantisePrior(), train=False) == []  # validation draws no variants


def test_lr_schedule_and_ema_formulas():
    kw = dict(iterations=110, warmup=10, kind="cosine", base_lr=1e-3, eta_min=1e-5)
    assert lr_factor(0, **kw) == pytest.approx(0.1) and lr_factor(9, **kw) == pytest.approx(1.0)
    assert lr_factor(10, **kw) == pytest.approx(1.0)
    assert lr_factor(60, **kw) * 1e-3 == pytest.approx(1e-5 + (1e-3 - 1e-5) * 0.5)
    assert lr_factor(110, **kw) * 1e-3 == pytest.approx(1e-5)
    # the closed form of torch's CosineAnnealingLR (its documented formula), checked at every step
    for step in range(50):
        closed = 1e-5 + (1e-3 - 1e-5) * (1 + math.cos(math.pi * step / 50)) / 2
        assert 1e-3 * lr_factor(step, iterations=50, warmup=0, kind="cosine", base_lr=1e-3, eta_min=1e-5) == (
            pytest.approx(closed))
    assert lr_factor(30, iterations=50, warmup=0, kind="constant", base_lr=1e-3, eta_min=1e-5) == 1.0
    net = torch.nn.Linear(2, 1)
    ema = Ema(net, decay=0.9)
    before = ema.module.weight.detach().clone()
    with torch.no_grad():
        net.weight.add_(1.0)
    ema.update(net)
    d = min(0.9, 2 / 11)
    torch.testing.assert_close(ema.module.weight, d * before + (1 - d) * net.weight)
    assert not any(q.requires_grad for q in ema.module.parameters())


@pytest.mark.slow  # importing BasicSR takes seconds
def test_losses_match_basicsr_and_nafnet_definitions():
    from robustsam_prior._basicsr import import_basicsr

    import_basicsr()
    from basicsr.losses.basic_loss import CharbonnierLoss, L1Loss

    g = torch.Generator().manual_seed(0)
    a, b = torch.rand(2, 3, 8, 8, generator=g), torch.rand(2, 3, 8, 8, generator=g)
    torch.testing.assert_close(l1_loss(a, b), L1Loss()(a, b))
    torch.testing.assert_close(charbonnier_loss(a, b, 1e-6), CharbonnierLoss(eps=1e-6)(a, b))
    # NAFNet's PSNRLoss: 10/ln(10) * mean_b log(mse_b + 1e-8)
    mse = ((a - b) ** 2).mean(dim=(1, 2, 3))
    expected = float(np.mean([10 * math.log10(float(m) + 1e-8) for m in mse]))
    assert float(psnr_loss(a, b)) == pytest.approx(expected, rel=1e-6)
    total, parts = PixelLoss((LossTerm(type="l1", weight=2.0), LossTerm(type="psnr", weight=0.5)))(a, b)
    assert float(total) == pytest.approx(2 * float(l1_loss(a, b)) + 0.5 * expected, rel=1e-6)
    assert set(parts) == {"l1", "psnr"}
    # two terms of one type keep a key each (the logs would otherwise show only the last)
    total, parts = PixelLoss((LossTerm(type="l1"), LossTerm(type="psnr"), LossTerm(type="l1", weight=3.0)))(a, b)
    assert list(parts) == ["l1", "psnr", "l1_2"]
    assert float(parts["l1_2"]) == pytest.approx(float(l1_loss(a, b)))
    assert float(total) == pytest.approx(4 * float(l1_loss(a, b)) + expected, rel=1e-6)
    with pytest.raises(ValueError, match="at least one term"):
        PixelLoss(())


def test_fft_loss_is_l1_on_the_unnormalised_spectrum():
    g = torch.Generator().manual_seed(0)
    a, b = torch.rand(2, 3, 8, 10, generator=g), torch.rand(2, 3, 8, 10, generator=g)
    spec = np.fft.rfft2(a.double().numpy()) - np.fft.rfft2(b.double().numpy())  # numpy: unnormalised too
    expected = np.mean(np.abs(np.stack([spec.real, spec.imag])))
    assert float(fft_loss(a, b)) == pytest.approx(expected, rel=1e-5)
    assert float(fft_loss(a, a)) == 0.0
    # a constant offset lands on the zero frequency only: (H*W*delta) over the 2*H*(W//2+1) numbers
    assert float(fft_loss(a + 0.1, a)) == pytest.approx(8 * 10 * 0.1 / (2 * 8 * 6), rel=1e-5)
    total, parts = PixelLoss((LossTerm(type="charbonnier"), LossTerm(type="fft", weight=0.1)))(a, b)
    assert set(parts) == {"charbonnier", "fft"}
    assert float(total) == pytest.approx(float(charbonnier_loss(a, b)) + 0.1 * expected, rel=1e-5)


def test_memory_cache_is_bounded_and_does_not_change_samples(tmp_path, pairs_factory):
    opts = _synthetic(tmp_path, pairs_factory)
    big = PairDataset(opts, key="k", seed=2, train=True, prior=QuantisePrior())
    small = PairDataset(DatasetOptions(**{**opts.__dict__, "cache_images": 1}), key="k", seed=2, train=True,
                        prior=QuantisePrior())
    for p in range(9):
        a, b = big[p], small[p]
        assert torch.equal(a.lq, b.lq) and torch.equal(a.labels, b.labels)
        assert len(small._images) <= 1 and len(small._variants) <= 1
    assert len(big._images) == 3


def test_synthetic_extra_clean_dirs(tmp_path, pairs_factory):
    _, first = pairs_factory(tmp_path / "a", 2, 64, seed=0)
    _, second = pairs_factory(tmp_path / "b", 3, 64, seed=1)
    deg = DegradationOptions(kinds=("haze",), severity=(3, 3))
    opts = DatasetOptions(clean_dir=str(first), extra_clean_dirs=(str(second),), degradation=deg, crop_size=32,
                          exclude=("img0.*",))
    data = PairDataset(opts, key="data.train", seed=0, train=True)
    # both folders, the exclude glob applied to each: 1 + 2 images
    assert [p.parent for p in data.clean_files] == [first, second, second]
    missing = DatasetOptions(clean_dir=str(first), extra_clean_dirs=(str(tmp_path / "nope"),), degradation=deg)
    with pytest.raises(DataError, match=r"data.train.extra_clean_dirs\[0\]: folder not found"):
        PairDataset(missing, key="data.train", seed=0, train=True)


def test_gamma_blurs_in_linear_light(tmp_path):
    """gamma 2.2 blurs x**2.2 and re-encodes: on a black/white image a blur keeps the mean of the linear
    values, so the stored values come out brighter than with gamma 1, which keeps their own mean."""
    from PIL import Image

    clean = tmp_path / "clean"
    clean.mkdir()
    bars = np.zeros((64, 64, 3), np.uint8)
    bars[:, ::8] = bars[:, 1::8] = bars[:, 2::8] = bars[:, 3::8] = 255  # 4-px bars: a blur mixes them
    Image.fromarray(bars).save(clean / "bars.png")
    gt = bars[..., 0].astype(np.float32) / 255
    means = {}
    for gamma in (1.0, 2.2):
        deg = DegradationOptions(kinds=("defocus_blur",), severity=(3, 3), gamma=gamma)
        data = PairDataset(DatasetOptions(clean_dir=str(clean), degradation=deg, crop_size=32), key="data.train",
                           seed=0, train=True)
        lq = data.degrade(np.repeat(gt[..., None], 3, axis=2), np.random.default_rng(0))[..., 0]
        assert 0.05 < lq.std() < gt.std()  # blurred, not flat
        means[gamma] = (float(lq.mean()), float((lq.astype(np.float64) ** gamma).mean()))
    assert means[1.0][0] == pytest.approx(gt.mean(), abs=0.01)
    assert means[2.2][1] == pytest.approx(gt.mean(), abs=0.01)  # linear light kept
    assert means[2.2][0] > gt.mean() + 0.1  # re-encoded: brighter than the blurred stored values
    with pytest.raises(ValueError, match="gamma"):
        from pipelines.config import build

        build(DegradationOptions, {"gamma": 0})


def test_color_jitter_commutes_with_the_scattering_model():
    """One affine colour map on a clean image J and its hazy version I = J t + A (1 - t) gives the hazy
    version of the mapped scene under the mapped airlight: f(I) = f(J) t + f(A) (1 - t)."""
    rng = np.random.default_rng(3)
    J = rng.uniform(0.2, 0.6, (16, 16, 3)).astype(np.float32)
    t = rng.uniform(0.3, 0.9, (16, 16, 1)).astype(np.float32)
    A = np.full_like(J, 0.7)
    hazy = J * t + A * (1 - t)
    fJ, fI = color_jitter(J, np.random.default_rng(11), 0.15, like=hazy)
    fJ2, fA = color_jitter(J, np.random.default_rng(11), 0.15, like=A)
    assert np.array_equal(fJ, fJ2)
    assert np.abs(fJ - J).max() > 0.02, "the map did nothing"
    np.testing.assert_allclose(fI, fJ * t + fA * (1 - t), atol=1e-5)
    assert color_jitter(J, rng, 0.0, like=hazy) == (J, hazy)


@pytest.mark.parametrize("kind", ["paired", "variants"])
def test_color_augmentation_maps_input_and_ground_truth_alike(tmp_path, pairs_factory, kind):
    """With stored inputs (paired files, fixed synthetic variants) ``augment.color`` must map the input
    with the same affine colour map as the ground truth: fit the map from the un-jittered ground truth
    of the same sample position to the jittered one, and it must carry the un-jittered input onto the
    jittered input. Crops, flips and label maps stay those of color 0."""
    lq_dir, gt_dir = pairs_factory(tmp_path, 3, 64, seed=0)

    def dataset(color):
        aug = AugmentOptions(hflip=True, vflip=True, rot90=True, color=color)
        if kind == "paired":
            opts = DatasetOptions(type="paired", lq_dir=str(lq_dir), gt_dir=str(gt_dir), crop_size=24, augment=aug)
        else:
            deg = DegradationOptions(kinds=("haze",), severity=(2, 2))
            opts = DatasetOptions(clean_dir=str(gt_dir), degradation=deg, crop_size=24, variants=2, augment=aug)
        return PairDataset(opts, key="data.train", seed=2, train=True, prior=QuantisePrior())

    plain, jittered = dataset(0.0), dataset(0.3)
    changed = 0
    for p in range(6):
        a, b = plain[p], jittered[p]
        assert a.name == b.name and torch.equal(a.labels, b.labels)
        gt0, gt1 = (x.numpy().reshape(3, -1).T.astype(np.float64) for x in (a.gt, b.gt))
        lq0, lq1 = (x.numpy().reshape(3, -1).T.astype(np.float64) for x in (a.lq, b.lq))
        inside = ((gt1 > 1e-3) & (gt1 < 1 - 1e-3)).all(axis=1)
        assert inside.mean() > 0.5
        design = np.c_[gt0[inside], np.ones(inside.sum())]
        coef = np.linalg.lstsq(design, gt1[inside], rcond=None)[0]  # (4, 3): f(x) = x @ M + v
        assert np.abs(design @ coef - gt1[inside]).max() < 1e-4, "the ground truth map is not affine"
        pred = np.clip(np.c_[lq0, np.ones(len(lq0))] @ coef, 0, 1)
        assert np.abs(pred - lq1).max() < 1e-3, f"position {p}: the input got another colour map"
        changed += int(np.abs(gt1 - gt0).max() > 0.02)
    assert changed >= 5


def test_config_path_names_a_missing_package():
    """Data folders resolve ``pkg://`` like the config loader; a missing package, or a missing parent of a
    dotted name, is a DataError naming the path (not a ModuleNotFoundError from importlib)."""
    import skimage.data

    assert config_path("pkg://skimage.data") == Path(skimage.data.__file__).parent
    assert config_path("~/x") == Path.home() / "x"
    for value in ("pkg://nope_zz", "pkg://nope_zz.sub/images"):
        with pytest.raises(DataError, match=f"'{value}': no installed package"):
            config_path(value)


def test_prior_cache_dir_puts_the_whole_image_priors_into_a_prior_cache(tmp_path, one_thread):
    from pipelines.commands.train import load_train_config
    from restore.training.trainer import Trainer
    from robustsam_prior.cache import PriorCache

    cache = tmp_path / "cache"
    # deterministic off: a Trainer built outside train_restoration would leave that process-wide switch on
    cfg = load_train_config("pipelines/smoke_train_dehaze.yml", [f"output_dir={tmp_path / 'run'}",
                                                                  f"prior.cache_dir={cache}", "train.deterministic=false"])
    ds = Trainer(cfg).train_ds
    assert isinstance(ds.prior_cache, PriorCache) and ds.prior_cache.root == cache
    assert ds[0].labels is not None
    assert ds.prior_cache.stats["misses"] == 1 and any(cache.rglob("*.safetensors"))
    assert not torch.are_deterministic_algorithms_enabled()
