"""Real-data training sources: video frame averages, depth-true haze, mixtures of sets, extra
validation sets, and the script that lays a fetched snapshot out as the recipes' folders."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from restore.training.data import DataError, MixedDataset, PairDataset
from restore.training.options import AugmentOptions, DatasetOptions, DegradationOptions

REPO = Path(__file__).resolve().parents[2]
NO_AUG = AugmentOptions(hflip=False, vflip=False, rot90=False)


def _frames(folder: Path, n: int, h: int = 24, w: int = 32, seed: int = 0) -> list[np.ndarray]:
    """``n`` random RGB frames saved as numbered PNGs; returns them as uint8 arrays."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    frames = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(n)]
    for i, f in enumerate(frames):
        Image.fromarray(f).save(folder / f"{i:06d}.png")
    return frames


def _video(tmp_path: Path, **kw) -> tuple[DatasetOptions, dict[str, list[np.ndarray]]]:
    seqs = {"a": _frames(tmp_path / "v" / "a", 12, seed=1), "b": _frames(tmp_path / "v" / "b", 9, seed=2)}
    opts = DatasetOptions(type="video", video_dir=str(tmp_path / "v"), **{"frames": (3, 5), "crop_size": 0, **kw})
    return opts, seqs


def test_video_input_is_the_linear_light_mean_of_the_window_around_the_ground_truth(tmp_path):
    opts, seqs = _video(tmp_path, frame_gamma=2.2)
    ds = PairDataset(opts, key="data.val", seed=0, train=False)
    # widest window 5 frames: centres 2..len-3 in each sequence, never past its ends
    assert [it.name for it in ds.video.items] == [f"a/{i:06d}.png" for i in range(2, 10)] + [
        f"b/{i:06d}.png" for i in range(2, 7)]
    seen_n = set()
    for idx, it in enumerate(ds.video.items):
        s = ds[idx]
        frames = seqs[it.name[0]]
        gt = frames[it.frame].astype(np.float32) / 255
        assert np.array_equal(s.gt.permute(1, 2, 0).numpy(), gt)
        lq = np.round(s.lq.permute(1, 2, 0).numpy() * 255)
        matches = []
        for n in (3, 4, 5):
            start = it.frame - n // 2
            window = np.stack(frames[start:start + n]).astype(np.float64) / 255
            expected = np.round(np.mean(window ** 2.2, axis=0) ** (1 / 2.2) * 255)
            if np.array_equal(lq, expected):
                matches.append(n)
        assert len(matches) == 1, f"{it.name}: input is not one window's mean ({matches})"
        seen_n.add(matches[0])
    assert seen_n == {3, 4, 5}


def test_video_plain_mean_steps_and_errors(tmp_path):
    opts, seqs = _video(tmp_path, frame_gamma=1.0, frames=(3, 3), frame_step=3)
    ds = PairDataset(opts, key="data.val", seed=0, train=False)
    assert [it.frame for it in ds.video.items] == [1, 4, 7, 10, 1, 4, 7]
    s = ds[1]
    expected = np.round(np.mean(np.stack(seqs["a"][3:6]).astype(np.float64), axis=0))
    assert np.array_equal(np.round(s.lq.permute(1, 2, 0).numpy() * 255), expected)
    with pytest.raises(DataError, match="need sequences of at least 13 frames; the longest .* has 12"):
        PairDataset(DatasetOptions(type="video", video_dir=str(tmp_path / "v"), frames=(7, 13), crop_size=0),
                    key="data.val", seed=0, train=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no image files"):
        PairDataset(DatasetOptions(type="video", video_dir=str(tmp_path / "empty"), crop_size=0),
                    key="data.val", seed=0, train=False)


def test_video_training_samples_are_fixed_by_position_and_cropped_jointly(tmp_path):
    opts, _ = _video(tmp_path, crop_size=16, variants=2, augment=NO_AUG)
    a = PairDataset(opts, key="data.train", seed=3, train=True)
    b = PairDataset(opts, key="data.train", seed=3, train=True)
    for p in (0, 5, 17, 40):
        sa, sb = a[p], b[p]
        assert torch.equal(sa.lq, sb.lq) and torch.equal(sa.gt, sb.gt) and sa.lq.shape == (3, 16, 16)
    # inputs are cached as 8-bit (lossless: they are quantised when made) and come back the same
    idx = a.image_index(7)
    first = a._variant(idx, 1)[0]
    again = a._variant(idx, 1)[0]
    assert first.dtype == np.float32 and np.array_equal(first, again)
    assert a._variants[(idx, 1)][0].dtype == np.uint8


def _nyu_like(tmp_path: Path) -> tuple[Path, Path, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (20, 28, 3), dtype=np.uint8)
    depth = rng.uniform(1.0, 8.0, (20, 28)).astype(np.float32)
    (tmp_path / "img").mkdir()
    (tmp_path / "depth").mkdir()
    Image.fromarray(img).save(tmp_path / "img" / "7.png")
    np.save(tmp_path / "depth" / "7.npy", depth)
    return tmp_path / "img", tmp_path / "depth", img, depth


def test_depth_haze_follows_the_scattering_model_with_the_measured_depth(tmp_path):
    img_dir, depth_dir, img, depth = _nyu_like(tmp_path)
    opts = DatasetOptions(type="depth_haze", clean_dir=str(img_dir), depth_dir=str(depth_dir), beta=(0.2, 0.2),
                          airlight=(0.9, 0.9), crop_border=2, crop_size=0)
    s = PairDataset(opts, key="data.val", seed=0, train=False)[0]
    clean = img[2:-2, 2:-2].astype(np.float32) / 255
    t = np.exp(-0.2 * depth[2:-2, 2:-2])[..., None]
    np.testing.assert_allclose(s.gt.permute(1, 2, 0).numpy(), clean)
    np.testing.assert_allclose(s.lq.permute(1, 2, 0).numpy(), clean * t + 0.9 * (1 - t), atol=1e-6)
    # a missing depth map names the image
    Image.fromarray(img).save(img_dir / "8.png")
    with pytest.raises(DataError, match=r"depth_dir: no depth map .* for 1 image\(s\), e.g. \['8.png'\]"):
        PairDataset(opts, key="data.val", seed=0, train=False)


def test_mixture_draws_parts_by_weight_and_position(tmp_path):
    vopts, _ = _video(tmp_path, crop_size=16, variants=1, augment=NO_AUG)
    img_dir, depth_dir, _, _ = _nyu_like(tmp_path)
    hopts = DatasetOptions(type="depth_haze", clean_dir=str(img_dir), depth_dir=str(depth_dir), crop_size=16,
                           augment=NO_AUG)
    parts = [PairDataset(o, key=k, seed=0, train=True) for o, k in ((vopts, "v"), (hopts, "h"))]
    mix = MixedDataset(parts, [3.0, 1.0], seed=0)
    drawn = np.array([mix.part_of(p) for p in range(4000)])
    assert abs((drawn == 0).mean() - 0.75) < 0.03
    names = [mix[p].name for p in range(40)]
    assert names == [MixedDataset(parts, [3.0, 1.0], seed=0)[p].name for p in range(40)]
    assert {n.endswith(".png") and "/" not in n for n in names} == {True, False}  # both parts appear
    assert set(MixedDataset(parts, [1.0, 0.0], seed=0).part_of(p) for p in range(500)) == {0}
    with pytest.raises(DataError, match="weights must not all be 0"):
        MixedDataset(parts, [0.0, 0.0], seed=0)


def test_a_training_run_mixes_sets_and_logs_every_validation_set(tmp_path):
    from pipelines.commands.train import eval_metrics
    from restore.training.options import DataOptions, LoopOptions, ModelOptions, TrainConfig
    from restore.training.trainer import train_restoration

    vopts, _ = _video(tmp_path, crop_size=16, variants=1, augment=NO_AUG, name="video")
    img_dir, depth_dir, _, _ = _nyu_like(tmp_path)
    hopts = DatasetOptions(type="depth_haze", clean_dir=str(img_dir), depth_dir=str(depth_dir), crop_size=16,
                           augment=NO_AUG)
    val = DatasetOptions(type="synthetic", clean_dir=str(img_dir), crop_size=0,
                         degradation=DegradationOptions(kinds=("frame_average_blur",), severity=(2, 2)))
    cfg = TrainConfig(
        task="deblur", output_dir=str(tmp_path / "run"),
        model=ModelOptions(arch="nafnet", arch_kwargs={"width": 4, "enc_blocks": [1], "dec_blocks": [1]}),
        data=DataOptions(train=vopts, train_extra=(hopts,), val=val,
                         val_extra=(DatasetOptions(type="video", name="video", video_dir=vopts.video_dir,
                                                   frames=(3, 5), crop_size=0),)),
        train=LoopOptions(iterations=4, batch_size=2, tensorboard=False, threads=1))
    summary = train_restoration(cfg, metrics=eval_metrics())
    assert set(summary["metrics"]) == {"val/psnr", "val/input_psnr", "val_video/psnr", "val_video/input_psnr"}
    records = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert any("val_video/psnr" in r for r in records)


def test_val_seed_gives_runs_with_other_seeds_the_same_validation_inputs(tmp_path):
    """data.val_seed fixes the validation draws, so stages trained with other seeds log comparable figures;
    without it the draws follow the recipe seed."""
    from pipelines.commands.train import eval_metrics
    from restore.training.options import DataOptions, LoopOptions, ModelOptions, TrainConfig
    from restore.training.trainer import train_restoration

    img_dir, _, _, _ = _nyu_like(tmp_path)
    train = DatasetOptions(type="synthetic", clean_dir=str(img_dir), crop_size=16, augment=NO_AUG,
                           degradation=DegradationOptions(kinds=("frame_average_blur",), severity=(1, 1)))
    val = DatasetOptions(type="synthetic", clean_dir=str(img_dir), crop_size=0,
                         degradation=DegradationOptions(kinds=("frame_average_blur", "motion_blur"), severity=(1, 4)))

    def input_psnr(seed: int, val_seed: int | None) -> float:
        cfg = TrainConfig(
            task="deblur", seed=seed, output_dir=str(tmp_path / f"run_{seed}_{val_seed}"),
            model=ModelOptions(arch="nafnet", arch_kwargs={"width": 4, "enc_blocks": [1], "dec_blocks": [1]}),
            data=DataOptions(train=train, val=val, val_seed=val_seed),
            train=LoopOptions(iterations=1, batch_size=2, tensorboard=False, threads=1))
        return train_restoration(cfg, metrics=eval_metrics())["metrics"]["val/input_psnr"]

    assert input_psnr(1, 5) == input_psnr(2, 5)
    assert input_psnr(1, None) != input_psnr(2, None)


def test_dataset_options_name_the_keys_of_each_type():
    from pipelines.config import ConfigError, build
    from restore.training.options import DataOptions

    with pytest.raises(ConfigError, match="video_dir: required for type 'video'"):
        build(DatasetOptions, {"type": "video"})
    with pytest.raises(ConfigError, match="depth_dir: only for type 'depth_haze'"):
        build(DatasetOptions, {"type": "video", "video_dir": ".", "depth_dir": "."})
    with pytest.raises(ConfigError, match=r"frames: expected 1 <= low <= high, got \[5, 3\]"):
        build(DatasetOptions, {"type": "video", "video_dir": ".", "frames": [5, 3]})
    train = {"type": "video", "video_dir": ".", "crop_size": 64}
    with pytest.raises(ConfigError, match=r"train_extra\[0\].crop_size: must equal train.crop_size \(64\)"):
        build(DataOptions, {"train": train, "train_extra": [{**train, "crop_size": 32}]})
    with pytest.raises(ConfigError, match=r"val_extra\[1\].name: 'v' is used twice"):
        build(DataOptions, {"train": train, "val_extra": [{**train, "name": "v"}, {**train, "name": "v"}]})


def _git(cwd: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=cwd, check=True,
                   capture_output=True)


def test_layout_script_lays_out_the_snapshot_and_records_every_file(tmp_path):
    src = tmp_path / "src"
    video = src / "data/level3/videos/GOPR0477_11_00"
    _frames(video, 10, h=4, w=4)
    (src / "data/level3/saved_images").mkdir(parents=True)
    Image.new("RGB", (4, 4)).save(src / "data/level3/saved_images/reserved.png")
    _frames(src / "data/level1", 2, h=4, w=4, seed=9)
    for name in ("000000", "000001"):
        (src / "data/level1" / f"{name}.png").rename(src / "data/level1" / f"08{name[-2:]}.png")
    (src / "data/level2/images").mkdir(parents=True)
    (src / "data/level2/depth_maps").mkdir(parents=True)
    for stem in ("1", "2", "3"):
        Image.new("RGB", (4, 4)).save(src / "data/level2/images" / f"{stem}.jpg")
        np.save(src / "data/level2/depth_maps" / f"{stem}.npy", np.ones((4, 4), np.float32))
    _git(src, "init", "-q")
    _git(src, "add", ".")
    _git(src, "commit", "-q", "-m", "snapshot")
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, str(REPO / "scripts/layout_training_data.py"), str(src), "--out", str(out)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in (out / "gopro0477/train/GOPR0477_11_00").iterdir()) == [
        f"{i:06d}.png" for i in range(8)]
    assert sorted(p.name for p in (out / "gopro0477/val/GOPR0477_11_00").iterdir()) == ["000008.png", "000009.png"]
    assert sorted(p.name for p in (out / "div2k").iterdir()) == ["0800.png", "0801.png"]
    assert sorted(p.name for p in (out / "nyu/train/images").iterdir()) == ["1.jpg"]
    assert sorted(p.name for p in (out / "nyu/val/depth").iterdir()) == ["2.npy", "3.npy"]
    assert not list(out.rglob("reserved.png"))
    manifest = json.loads((out / "SOURCES.json").read_text())
    assert len(manifest["files"]) == 10 + 2 + 6 and manifest["missing_in_snapshot"] == []
    import hashlib

    for rec in manifest["files"]:
        assert hashlib.sha256((out / rec["path"]).read_bytes()).hexdigest() == rec["sha256"]
        assert (src / rec["source"]).read_bytes() == (out / rec["path"]).read_bytes()
    # a snapshot whose object store lacks a listed file (fetched snapshots leave out files of 4 MiB and
    # more): laid out without it, and the file recorded as missing
    blob = subprocess.run(["git", "rev-parse", "HEAD:data/level1/0801.png"], cwd=src, capture_output=True,
                          text=True, check=True).stdout.strip()
    (src / ".git/objects" / blob[:2] / blob[2:]).unlink()
    proc = subprocess.run([sys.executable, str(REPO / "scripts/layout_training_data.py"), str(src / ".git"),
                           "--out", str(tmp_path / "out2")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "1 missing in the snapshot: data/level1/0801.png" in proc.stdout
    assert json.loads((tmp_path / "out2/SOURCES.json").read_text())["missing_in_snapshot"] == ["data/level1/0801.png"]
    assert sorted(p.name for p in (tmp_path / "out2/div2k").iterdir()) == ["0800.png"]


def test_layout_script_lays_out_the_ffdnet_photos_beside_the_other_layout(tmp_path):
    """--layout ffdnet_photos: the colour test-set photos under photos/, every eighth of each set (name
    order) in val/, with their own SOURCES.json; the greyscale sets are not laid out."""
    src = tmp_path / "src"
    for name, n, ext in (("CBSD68", 9, ".png"), ("Kodak24", 3, ".png"), ("McMaster", 8, ".tif")):
        (src / "testsets" / name).mkdir(parents=True)
        for i in range(n):
            Image.new("RGB", (4, 4), (i, 2 * i, 3 * i)).save(src / "testsets" / name / f"{i + 1}{ext}")
    (src / "testsets/BSD68").mkdir()
    Image.new("L", (4, 4)).save(src / "testsets/BSD68/1.png")
    _git(src, "init", "-q")
    _git(src, "add", ".")
    _git(src, "commit", "-q", "-m", "snapshot")
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, str(REPO / "scripts/layout_training_data.py"), str(src), "--out", str(out),
                           "--layout", "ffdnet_photos"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    # name order is the tree's: 1, 2, ..., 8, 9 (one digit), so the eighth is "8"
    assert sorted(p.name for p in (out / "photos/val").iterdir()) == ["cbsd68_8.png", "mcmaster_8.tif"]
    train = sorted(p.name for p in (out / "photos/train").iterdir())
    assert len(train) == 9 + 3 + 8 - 2 and "kodak24_3.png" in train and not any("bsd68_" in t[:6] for t in train)
    assert not (out / "SOURCES.json").exists()
    manifest = json.loads((out / "photos/SOURCES.json").read_text())
    assert manifest["repository"] == "cszn/FFDNet" and len(manifest["files"]) == 20
    rec = next(r for r in manifest["files"] if r["path"] == "val/mcmaster_8.tif")
    assert rec["source"] == "testsets/McMaster/8.tif"
    assert (src / rec["source"]).read_bytes() == (out / "photos" / rec["path"]).read_bytes()
    # a snapshot that is not FFDNet's fails with the folder it lacks
    proc = subprocess.run([sys.executable, str(REPO / "scripts/layout_training_data.py"), str(tmp_path / "out"),
                           "--layout", "ffdnet_photos", "--out", str(tmp_path / "out3")], capture_output=True, text=True)
    assert proc.returncode != 0 and "testsets/CBSD68: no photos in the snapshot" in proc.stderr


def test_quantised_inputs_are_8_bit_and_kept_compactly(tmp_path):
    img_dir, _, _, _ = _nyu_like(tmp_path)
    deg = DegradationOptions(kinds=("frame_average_blur",), severity=(2, 2))
    opts = DatasetOptions(type="synthetic", clean_dir=str(img_dir), degradation=deg, variants=2, crop_size=16,
                          augment=NO_AUG, quantise=True)
    ds = PairDataset(opts, key="data.train", seed=0, train=True)
    lq = ds._variant(0, 1)[0]
    np.testing.assert_array_equal(lq * 255, np.round(lq * 255))
    assert ds._variants[(0, 1)][0].dtype == np.uint8
    np.testing.assert_array_equal(ds._variant(0, 1)[0], lq)
    # the same draw without quantise differs from it by under half a grey level
    plain = PairDataset(opts.__class__(**{**opts.__dict__, "quantise": False}), key="data.train", seed=0, train=True)
    diff = np.abs(plain._variant(0, 1)[0] - lq)
    assert 0 < diff.max() <= 0.5 / 255 + 1e-6
    fresh = PairDataset(opts.__class__(**{**opts.__dict__, "variants": 0}), key="data.train", seed=0, train=True)
    x = fresh[3].lq.numpy()
    np.testing.assert_array_equal(x * 255, np.round(x * 255))


@pytest.mark.slow
def test_real_data_mixture_under_torchrun_and_resume_equals_one_uninterrupted_process(
        tmp_path, cli_script, subprocess_env, one_thread):
    """Video frame averages mixed with depth haze, with the regions prior on the whole inputs: two gloo
    ranks train the same parameters as one process that stops half way and resumes (constant rate,
    so stopping early changes no step)."""
    from pipelines.commands.train import load_train_config
    from pipelines.config import to_dict
    from restore.training.state import load_state
    from restore.training.trainer import train_restoration

    _video(tmp_path)
    img_dir, depth_dir, _, _ = _nyu_like(tmp_path)
    recipe = tmp_path / "mix.yml"
    recipe.write_text(f"""
task: deblur
seed: 3
model: {{arch: map_nafnet, arch_kwargs: {{width: 4, enc_blocks: [1], middle_blocks: 1, dec_blocks: [1]}}}}
prior: {{name: regions, options: {{n_segments: 12, working_size: 32}}}}
data:
  train: {{type: video, video_dir: {tmp_path / 'v'}, frames: [3, 5], variants: 2, crop_size: 16}}
  train_extra:
    - {{type: depth_haze, clean_dir: {img_dir}, depth_dir: {depth_dir}, variants: 2, crop_size: 16, weight: 0.5}}
  val: {{type: video, video_dir: {tmp_path / 'v'}, frames: [3, 5], frame_step: 4, crop_size: 0}}
train:
  iterations: 6
  batch_size: 4
  optim: {{lr: 1e-3}}
  scheduler: {{type: constant}}
  ema: {{enabled: true, decay: 0.9}}
  checkpoint_every: 3
  tensorboard: false
  threads: 1
""")
    ddp_dir = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone",
           str(cli_script), "train", str(recipe), f"output_dir={ddp_dir}"]
    res = subprocess.run(cmd, env=subprocess_env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    one = tmp_path / "one"
    first = load_train_config(str(recipe), [f"output_dir={one}", "train.iterations=3"])
    train_restoration(first, resolved_config=to_dict(first))
    cfg = load_train_config(str(recipe), [f"output_dir={one}"])
    resumed = train_restoration(cfg, resume=True, resolved_config=to_dict(cfg))
    assert resumed["resumed_from"] == 3 and resumed["iterations"] == 6
    a, b = load_state(ddp_dir / "state" / "latest.pt"), load_state(one / "state" / "latest.pt")
    for k, v in b["model"].items():
        torch.testing.assert_close(a["model"][k], v, rtol=1e-4, atol=1e-5, msg=k)
    from restore.archs import build_arch

    torch.manual_seed(cfg.seed)
    init = build_arch(cfg.model.arch, **cfg.model.arch_kwargs).state_dict()
    assert max(float((b["model"][k] - init[k]).abs().max()) for k in init) > 1e-4  # it trained
    summary = json.loads((ddp_dir / "summary.json").read_text())
    assert summary["metrics"]["val/psnr"] == pytest.approx(resumed["metrics"]["val/psnr"], abs=1e-3)
