"""The ``robustsam`` and ``sam`` priors on a tiny RobustSAM checkpoint built in the test."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from segment_anything.utils.transforms import ResizeLongestSide

from robustsam_prior import build_robustsam, masks_to_label_map
from robustsam_prior.automatic import RobustSamAutomaticMaskGenerator
from robustsam_prior.cache import PriorCache
from robustsam_prior.core.checkpoint import save_checkpoint
from robustsam_prior.core.fileio import sha256_file
from robustsam_prior.hub import ENV_CHECKPOINT, CheckpointNotFoundError
from robustsam_prior.prior import build_prior

# a small shape of the reference tiny architecture (any values build), so the test needs no reference
# files and stays fast: 64-pixel input, 8x8 token grid
TINY = {
    "img_size": 64, "patch": 8, "enc_dim": 32, "enc_depth": 2, "enc_heads": 2, "global_attn": [1],
    "window": 2, "prompt_dim": 64, "dec_depth": 1, "dec_mlp": 64, "dec_heads": 2, "iou_hidden": 32,
    "mask_in_chans": 16,
}  # fmt: skip
# let the random tiny model's masks through SAM's filters, so the label maps are not trivial
OPEN = {"pred_iou_thresh": 0.0, "stability_score_thresh": 0.0, "points_per_side": 4}
FAST = {**OPEN, "points_per_side": 2}  # for tests that run the prior several times


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    torch.manual_seed(1)
    model = build_robustsam(TINY)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.safetensors"
    save_checkpoint(path, model.state_dict(), {"config": TINY})
    return path


@pytest.fixture
def no_env(monkeypatch, tmp_path):
    monkeypatch.delenv(ENV_CHECKPOINT, raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))


def scene(h: int = 48, w: int = 72) -> torch.Tensor:
    yy, xx = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    img = torch.stack([xx, yy, 0.5 * (xx > 0.5).float() + 0.2])
    img[:, : h // 3, : w // 4] = torch.tensor([0.9, 0.1, 0.1])[:, None, None]
    return img[None].clamp(0, 1)


def reference(model, image: torch.Tensor, path: str):
    """Labels and features computed directly with the model helper's API (independent plumbing)."""
    rgb = (image[0].permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()
    gen = RobustSamAutomaticMaskGenerator(model, path=path, **OPEN)
    labels = masks_to_label_map(gen.generate(rgb), rgb.shape[:2])
    x = torch.as_tensor(ResizeLongestSide(model.image_size).apply_image(rgb)).permute(2, 0, 1)[None].float()
    with torch.no_grad():
        emb, early = model.encode(model.preprocess(x))
        robust = model.robust_image_features(emb, early, path)
    return labels, emb, robust


@pytest.mark.parametrize("name, path", [("robustsam", "robust"), ("sam", "sam")])
def test_matches_direct_model_calls(tiny_checkpoint, no_env, name, path):
    prior = build_prior(name, config=TINY, checkpoint=tiny_checkpoint, **OPEN)
    assert prior.options["path"] == path
    x = scene()
    out = prior(x)
    labels, emb, robust = reference(build_robustsam(TINY, tiny_checkpoint), x, path)
    assert out.labels.shape == (1, 48, 72) and out.labels.dtype == torch.int32
    np.testing.assert_array_equal(out.labels[0].numpy(), labels)
    assert int(out.labels.max()) >= 1  # several regions
    torch.testing.assert_close(out.features["image_embedding"], emb, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out.features["robust_mask_features"], robust, rtol=1e-5, atol=1e-5)
    assert out.features["image_embedding"].shape == (1, 64, 8, 8)
    assert out.features["robust_mask_features"].shape == (1, 8, 32, 32)
    assert out.meta["name"] == name and out.meta["checkpoint_sha256"] == sha256_file(tiny_checkpoint)


def test_robust_and_sam_paths_differ_and_batches_split(tiny_checkpoint, no_env):
    robust = build_prior("robustsam", checkpoint=tiny_checkpoint, **FAST)  # config from the file
    sam = build_prior("sam", checkpoint=tiny_checkpoint, **FAST)
    x = torch.cat([scene(), scene().flip(-1)])
    a, b = robust(x), sam(x)
    torch.testing.assert_close(a.features["image_embedding"], b.features["image_embedding"])
    assert not torch.allclose(a.features["robust_mask_features"], b.features["robust_mask_features"])
    assert robust.meta != sam.meta
    one = robust(x[1:2])
    assert torch.equal(a.labels[1:2], one.labels)


def test_cache_hit_does_not_run_the_model(tiny_checkpoint, no_env, tmp_path):
    prior = build_prior("robustsam", config=TINY, checkpoint=tiny_checkpoint, **OPEN)
    calls = []
    encode = prior.model.encode
    prior.model.encode = lambda images: calls.append(1) or encode(images)
    cache = PriorCache(tmp_path / "cache")
    first = cache.get_or_compute(prior, scene())
    assert len(calls) == 1  # one encoder pass gives both the masks and the features
    second = cache.get_or_compute(prior, scene())
    assert len(calls) == 1 and cache.stats["hits"] == 1
    assert torch.equal(first.labels, second.labels)
    assert torch.equal(first.features["robust_mask_features"], second.features["robust_mask_features"])


def test_sam_prior_runs_on_a_meta_sam_checkpoint(tiny_checkpoint, no_env, tmp_path):
    from robustsam_prior.core.checkpoint import CheckpointError, read_checkpoint
    from robustsam_prior.loading import is_robust_key

    state = read_checkpoint(tiny_checkpoint).state_dict
    sam_file = tmp_path / "sam_tiny.pth"
    torch.save({k: v for k, v in state.items() if not is_robust_key(k)}, sam_file)
    prior = build_prior("sam", config=TINY, checkpoint=sam_file, **FAST)
    out = prior(scene())
    full = build_prior("sam", config=TINY, checkpoint=tiny_checkpoint, **FAST)(scene())
    assert set(out.features) == {"image_embedding"}  # the robust modules are not in a SAM file
    assert torch.equal(out.labels, full.labels)  # the vanilla path does not use them
    torch.testing.assert_close(out.features["image_embedding"], full.features["image_embedding"])
    with pytest.raises(CheckpointError, match="SAM checkpoint, not RobustSAM"):
        build_prior("robustsam", config=TINY, checkpoint=sam_file, **FAST)(scene())


def test_checkpoint_from_environment(tiny_checkpoint, no_env, monkeypatch):
    monkeypatch.setenv(ENV_CHECKPOINT, str(tiny_checkpoint))
    prior = build_prior("robustsam", config=TINY)
    assert prior.checkpoint == tiny_checkpoint


def test_missing_checkpoint_and_bad_options(tiny_checkpoint, no_env, tmp_path):
    from robustsam_prior.hub import PACKAGED_DIR

    # no checkpoint and no config: the packaged robustsam-tiny; an official variant needs its file
    assert build_prior("robustsam").checkpoint == PACKAGED_DIR / "robustsam-tiny.safetensors"
    with pytest.raises(CheckpointNotFoundError, match="robustsam_checkpoint_b.pth"):
        build_prior("robustsam", config="vit_b")
    with pytest.raises(CheckpointNotFoundError, match="robustsam_checkpoint_l.pth"):
        build_prior("sam", config="vit_l")
    with pytest.raises(CheckpointNotFoundError, match="custom RobustSAM config"):
        build_prior("robustsam", config=TINY)
    with pytest.raises(CheckpointNotFoundError, match="nope.pth"):
        build_prior("robustsam", checkpoint=tmp_path / "nope.pth")
    for bad, msg in [
        ({"path": "clear"}, "path must be"),
        ({"bn_mode": "eval"}, "bn_mode must be"),
        ({"points_per_side": 0}, "points_per_side must be"),
        ({"points_per_side": 100000}, "robustsam prior: points_per_side must be an integer in 1..128"),
        ({"points_per_batch": 10**6}, "points_per_batch must be an integer in 1..256"),
        ({"pred_iou_thresh": float("nan")}, "pred_iou_thresh must be a number in"),
        ({"config": 3}, "config must be"),
        ({"mask_side": 8}, "mask_side must be an integer >= 16"),
        ({"mask_side": True}, "mask_side must be"),
        ({"config": "vit_bb"}, r"robustsam prior: config: 'vit_bb' is neither a RobustSAM variant \(vit_b, vit_l, vit_h, robustsam-tiny\)"),
        ({"config": str(tmp_path / "nope.json")}, "robustsam prior: config: .*nope.json: file not found"),
    ]:
        with pytest.raises(ValueError, match=msg):
            build_prior("robustsam", checkpoint=tiny_checkpoint, **bad)


def test_config_from_a_json_file_is_recorded_by_its_sizes(tiny_checkpoint, no_env, tmp_path):
    path = tmp_path / "arch.json"
    path.write_text(json.dumps(TINY))
    prior = build_prior("robustsam", checkpoint=tiny_checkpoint, config=str(path), **FAST)
    # the sizes, not the path: a cache entry stays valid wherever the file lies, and is keyed by its content
    assert prior.meta == build_prior("robustsam", checkpoint=tiny_checkpoint, config=TINY, **FAST).meta
    assert prior.options["config"]["enc_dim"] == TINY["enc_dim"]


def test_mask_side_runs_the_generator_on_a_reduced_copy(tiny_checkpoint, no_env):
    """``mask_side``: masks computed on the image shrunk to that longest side (area), labels brought back to
    the input size by nearest neighbour; the features, in the model frame, are those of the shrunk copy."""
    big = torch.nn.functional.interpolate(scene(), size=(96, 144), mode="bilinear", align_corners=False)
    prior = build_prior("robustsam", config=TINY, checkpoint=tiny_checkpoint, mask_side=48, **OPEN)
    out = prior(big)
    small = torch.nn.functional.interpolate(big, size=(32, 48), mode="area")
    direct = build_prior("robustsam", config=TINY, checkpoint=tiny_checkpoint, **OPEN)(small)
    assert out.labels.shape == (1, 96, 144)
    expected = direct.labels[0].repeat_interleave(3, 0).repeat_interleave(3, 1)  # 3x nearest
    assert torch.equal(out.labels[0], expected)
    assert int(out.labels.max()) >= 1
    torch.testing.assert_close(out.features["image_embedding"], direct.features["image_embedding"])
    assert out.meta["options"]["mask_side"] == 48 and "mask_side" not in direct.meta["options"]  # a different prior for the cache
    # an image already within mask_side is not resampled
    assert torch.equal(prior(small).labels, direct.labels)


def test_score_filters_default_to_the_models_own(tiny_checkpoint, no_env, tmp_path):
    """Thresholds not given: Meta's for an architecture that is not a trained-here variant (the test's
    custom one), none for robustsam-tiny, whose uncalibrated scores would leave no mask (the packaged
    file, and any file whose metadata records that architecture). A given threshold is kept."""
    from robustsam_prior.modeling.build import VARIANTS

    meta = {"pred_iou_thresh": 0.88, "stability_score_thresh": 0.95}
    none = {"pred_iou_thresh": 0.0, "stability_score_thresh": 0.0}
    opts = build_prior("robustsam", checkpoint=tiny_checkpoint).options
    assert {k: opts[k] for k in meta} == meta
    assert {k: build_prior("robustsam").options[k] for k in none} == none  # the packaged robustsam-tiny
    with torch.device("meta"):
        tiny = build_robustsam("robustsam-tiny")
    path = tmp_path / "mine.safetensors"
    save_checkpoint(path, {k: torch.zeros(v.shape, dtype=v.dtype) for k, v in tiny.state_dict().items()},
                    {"config": VARIANTS["robustsam-tiny"].to_dict()})
    assert {k: build_prior("sam", checkpoint=path).options[k] for k in none} == none
    assert build_prior("robustsam", checkpoint=path, pred_iou_thresh=0.5).options["pred_iou_thresh"] == 0.5
    assert build_prior("robustsam", checkpoint=path, pred_iou_thresh=0.5).options["stability_score_thresh"] == 0.0


def test_checkpoint_metadata_is_read_from_the_header_alone(tiny_checkpoint, tmp_path):
    from robustsam_prior.core.checkpoint import CheckpointError, read_checkpoint_metadata

    assert read_checkpoint_metadata(tiny_checkpoint)["config"] == TINY
    torch.save({"w": torch.zeros(1)}, tmp_path / "x.pth")
    assert read_checkpoint_metadata(tmp_path / "x.pth") == {}  # a torch file: only the whole file tells
    (tmp_path / "bad.safetensors").write_bytes(b"not a header")
    with pytest.raises(CheckpointError, match="bad.safetensors: not a readable safetensors file"):
        read_checkpoint_metadata(tmp_path / "bad.safetensors")
