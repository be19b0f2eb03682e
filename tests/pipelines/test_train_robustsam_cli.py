"""``robustsam-restore train`` with ``kind: robustsam`` recipes: the smoke recipe started from a SAM
checkpoint lowers its losses, leaves every SAM weight bit-identical to that file, stays finite and
writes a checkpoint that ``build_robustsam`` loads; every config error names its key path."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from pipelines.cli import main
from pipelines.commands.train import load_train_config
from pipelines.config import ConfigError, format_kinds, json_schema, load_config, read_yaml
from restore.training.options import TrainConfig
from robustsam_prior.training.options import RobustSamTrainConfig

REPO = Path(__file__).resolve().parents[2]
SMOKE = "pipelines/train_robustsam_smoke.yml"


def _smoke_cfg(overrides=()) -> RobustSamTrainConfig:
    return load_train_config(str(REPO / SMOKE), list(overrides))


@pytest.fixture(scope="module")
def sam_file(tmp_path_factory) -> Path:
    """A Meta-SAM-style checkpoint (no robust keys) of the smoke recipe's architecture."""
    from robustsam_prior.loading import is_robust_key
    from robustsam_prior.modeling.build import build_robustsam_model

    torch.manual_seed(123)
    model = build_robustsam_model(_smoke_cfg().model.model_config())
    path = tmp_path_factory.mktemp("sam") / "sam_tiny.pth"
    torch.save({k: v for k, v in model.state_dict().items() if not is_robust_key(k)}, path)
    return path


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory, sam_file, monkeypatch_module):
    out = tmp_path_factory.mktemp("run") / "smoke"
    monkeypatch_module.chdir(REPO)
    result = CliRunner().invoke(main, ["train", SMOKE, f"output_dir={out}", f"model.checkpoint={sam_file}",
                                       "model.fresh_robust_modules=true"])
    assert result.exit_code == 0, result.output
    return out, result.output


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


def test_smoke_training_lowers_losses_keeps_sam_frozen_and_loads(smoke_run, sam_file):
    from robustsam_prior.core.checkpoint import read_checkpoint
    from robustsam_prior.loading import build_robustsam, is_robust_key

    out, text = smoke_run
    assert "trained RobustSAM's anti-degradation modules for 8 steps" in text
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == list(range(1, 9))  # log_every: 1
    assert all(math.isfinite(v) for r in log for v in r.values())
    first, last = log[0], log[-1]
    assert last["total"] < 0.7 * first["total"], [round(r["total"], 3) for r in log]
    assert last["feature"] < 0.7 * first["feature"], [round(r["feature"], 3) for r in log]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 8 and summary["last_losses"] == pytest.approx(
        {k: v for k, v in last.items() if k != "step"})

    sam = torch.load(sam_file, weights_only=True)
    trained = read_checkpoint(out / "models" / "final.safetensors")
    state = trained.state_dict
    assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())
    assert set(sam) < set(state)
    unchanged = [k for k in sam if not torch.equal(sam[k], state[k])]
    assert not unchanged  # every frozen SAM parameter and buffer is bit-identical to the file
    robust = [k for k in state if is_robust_key(k) and k.endswith(".weight")]
    assert _smoke_cfg().seed == 0
    torch.manual_seed(0)  # the recipe's seed: train_from_options seeds torch before building the model
    init_state = build_robustsam(_smoke_cfg().model.model_config(), sam_file, fresh_robust_modules=True).state_dict()
    moved = [k for k in robust if not torch.equal(init_state[k], state[k])]
    assert len(moved) > 0.9 * len(robust), (len(moved), len(robust))  # the robust modules trained

    meta = trained.metadata
    assert meta["name"] == "robustsam_smoke" and meta["initialised_from"] == str(sam_file) and meta["step"] == 8
    assert sorted(p.name for p in (out / "models").iterdir()) == ["final.safetensors"]  # checkpoint_every: 0
    assert (out / "state" / "latest.pt").is_file()  # so that --resume with more steps can go on
    assert meta["recipe"]["model"]["checkpoint"] == str(sam_file)
    assert meta["training"]["config"]["weights"] == {"focal": 20.0, "dice": 1.0, "token": 2.0, "feature": 100.0,
                                                      "iou": 1.0}
    assert meta["training"]["config"]["train_sam_decoder"] is False
    reloaded = build_robustsam(None, out / "models" / "final.safetensors")
    assert all(torch.equal(reloaded.state_dict()[k], state[k]) for k in state)

    resolved = load_config(RobustSamTrainConfig, out / "config.yml")
    assert resolved == _smoke_cfg([f"output_dir={out}", f"model.checkpoint={sam_file}",
                                   "model.fresh_robust_modules=true"])
    assert "# override: model.fresh_robust_modules=true" in (out / "config.yml").read_text()


def test_refuses_existing_run_missing_state_and_uneven_ranks(smoke_run, monkeypatch):
    out, _ = smoke_run
    monkeypatch.chdir(REPO)
    runner = CliRunner()
    r = runner.invoke(main, ["train", SMOKE, f"output_dir={out}"])
    assert r.exit_code == 1 and "already holds a run (state/latest.pt); pass --resume to continue it" in r.output
    r = runner.invoke(main, ["train", SMOKE, f"output_dir={out}_2", "--resume"])
    assert r.exit_code == 1 and "--resume: no training state at" in r.output
    # under torchrun the global batch is split over the processes (tests/pipelines/test_train_robustsam_ddp.py)
    monkeypatch.setenv("WORLD_SIZE", "3")
    r = runner.invoke(main, ["train", SMOKE, f"output_dir={out}_3"])
    assert r.exit_code == 1, r.output
    assert "train.batch_size: 2 pairs do not split evenly over 3 processes; use a multiple of 3" in r.output


def test_shipped_recipe_as_is_json_summary(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    r = CliRunner().invoke(main, ["train", SMOKE, "train.steps=1", "data.scenes=1", "--json",
                                  "--output-dir", str(tmp_path / "r")])
    assert r.exit_code == 0, r.output
    summary = json.loads(r.output[r.output.index("{"):])
    assert summary["steps"] == 1 and summary["weights"] == str(tmp_path / "r" / "models" / "final.safetensors")
    assert summary["device"] == "cpu" and set(summary["first_losses"]) == {"focal", "dice", "token", "feature", "total"}
    assert json.loads((tmp_path / "r" / "log.jsonl").read_text())["step"] == 1


def test_official_mode_updates_sam_decoder_only(tmp_path, sam_file, monkeypatch):
    from robustsam_prior.core.checkpoint import read_checkpoint

    monkeypatch.chdir(REPO)
    out = tmp_path / "official"
    r = CliRunner().invoke(main, ["train", SMOKE, f"output_dir={out}", f"model.checkpoint={sam_file}",
                                  "model.fresh_robust_modules=true", "train.train_sam_decoder=true", "train.steps=3",
                                  "train.log_every=2", "train.batch_size=1", "data.scenes=1", "data.prompt=both"])
    assert r.exit_code == 0, r.output
    assert [json.loads(x)["step"] for x in (out / "log.jsonl").read_text().splitlines()] == [1, 2, 3]
    sam = torch.load(sam_file, weights_only=True)
    state = read_checkpoint(out / "models" / "final.safetensors").state_dict
    changed = {k for k in sam if not torch.equal(sam[k], state[k])}
    assert changed and all(k.startswith("mask_decoder.") for k in changed)
    assert "mask_decoder.transformer.layers.0.mlp.lin1.weight" in changed


def test_training_errors_are_click_errors(tmp_path, sam_file, monkeypatch):
    monkeypatch.chdir(REPO)
    runner = CliRunner()
    # a SAM file without fresh_robust_modules: the loader names the missing robust keys
    r = runner.invoke(main, ["train", SMOKE, f"output_dir={tmp_path / 'a'}", f"model.checkpoint={sam_file}"])
    assert r.exit_code == 1 and str(sam_file) in r.output and "Traceback" not in r.output
    # a diverging run stops with the step and the non-finite terms instead of writing NaN weights (the config
    # refuses a learning rate large enough for that; a loss weight beyond float32's range overflows the loss)
    r = runner.invoke(main, ["train", SMOKE, f"output_dir={tmp_path / 'b'}", "losses.focal=1e300", "optim.grad_clip=1e30",
                             "train.steps=4", "data.scenes=1"])
    assert r.exit_code == 1 and "non-finite" in r.output, r.output
    assert not (tmp_path / "b" / "models" / "final.safetensors").exists()
    if not torch.cuda.is_available():
        r = runner.invoke(main, ["train", SMOKE, f"output_dir={tmp_path / 'c'}", "train.device=cuda:0"])
        assert r.exit_code == 1 and "train.device: 'cuda:0' was asked for but CUDA is not available" in r.output


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["optim.lr=fast"], "optim.lr: expected a number, got 'fast'"),
        (["optim.lrr=1"], "optim.lrr: unknown key (did you mean 'lr'?)"),
        (["optim.lr=0"], "optim.lr: must be > 0, got 0.0"),
        (["optim.grad_clip=0"], "optim.grad_clip: must be > 0, got 0.0"),
        (["train.batch_size=-4"], "train.batch_size: must be >= 1, got -4"),
        (["train.bn_mode=batches"], "train.bn_mode: expected one of 'batch', 'running', got 'batches' (did you mean"),
        (["trian.steps=2"], "trian: unknown key (did you mean 'train'?)"),
        (["model.arch.patch=24"], "model.arch.img_size: 256 is not a multiple of patch 24"),
        (["model.arch.global_attn=[5]"], "model.arch.global_attn: 5 is not a block index in 0..1"),
        (["model.arch.enc_heads=3"], "model.arch.enc_heads: 3 does not divide enc_dim 32"),
        (["model.arch.dec_heads=3"], "model.arch.dec_heads: 3 does not divide prompt_dim 64"),
        (["model.arch={img_size: 256}"], "model.arch.patch: missing required key"),
        (["model.variant=vit_b"], "model.arch: give either variant or arch, not both"),
        (["model.arch=null"], "model.variant: needs a variant, an arch or a checkpoint"),
        (["model.arch=null", "model.variant=vit_bb"], "model.variant: expected one of 'vit_b', 'vit_l', 'vit_h', 'robustsam-tiny', got"),
        (["model.fresh_robust_modules=true"], "model.fresh_robust_modules: only meaningful with a (SAM) checkpoint"),
        (["model.checkpoint=missing_sam.pth"], "model.checkpoint: file not found: 'missing_sam.pth'"),
        (["model=null"], "model.variant: needs a variant, an arch or a checkpoint"),
        (["data.severities=[0, 3]"], "data.severities: expected values in 1..5, got 0"),
        (["data.degradations=[fog, gausian_noise]"],
         "data.degradations[1]: unknown degradation 'gausian_noise' (did you mean 'gaussian_noise'"),
        (["data.degradations=[]", "data.identity=false"], "data.degradations: empty, and identity is false"),
        (["data.source=coco"], "data.source: expected one of 'shapes', 'folder', got 'coco'"),
        (["data.source=folder"], "data.images_dir: required for source 'folder'"),
        (["data.source=folder", f"data.images_dir={REPO / 'pipelines'}"], "data.masks_dir: required for source 'folder'"),
        ([f"data.images_dir={REPO / 'pipelines'}"], "data.images_dir: only for source 'folder'"),
        (["data.source=folder", "data.images_dir=no_such_dir"], "data.images_dir: folder not found: 'no_such_dir'"),
        (["data.include=[]"], "data.include: needs at least 1 item(s), got 0"),
        (["data.cache_images=-1"], "data.cache_images: must be >= 0, got -1"),
        (["train.checkpoint_every=-1"], "train.checkpoint_every: must be >= 0, got -1"),
        (["train.keep_checkpoints=0"], "train.keep_checkpoints: must be >= 1, got 0"),
        (["losses.focal=0", "losses.dice=0", "losses.token=0", "losses.feature=0", "losses.iou=0"], "losses.feature: every loss weight is 0"),
        (["losses.token=-1"], "losses.token: must be >= 0.0, got -1.0"),
        (["train.device=gpu"], "train.device: expected cpu, cuda, cuda:N or auto, got 'gpu'"),
    ],
)
def test_config_errors_name_the_key_path(overrides, message):
    with pytest.raises(ConfigError) as e:
        _smoke_cfg(overrides)
    assert str(e.value).startswith(str(REPO / SMOKE) + ": "), str(e.value)
    assert message in str(e.value), str(e.value)


def test_cli_config_error_and_kind_dispatch(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    r = CliRunner().invoke(main, ["train", SMOKE, "optim.lr=fast", f"output_dir={tmp_path}"])
    assert r.exit_code == 1 and f"{SMOKE}: optim.lr: expected a number, got 'fast'" in r.output
    assert not (tmp_path / "config.yml").exists()
    # the same file read as a restoration recipe fails on the RobustSAM-only keys: dispatch is on `kind`
    with pytest.raises(ConfigError, match="losses: unknown key; known: kind, name, task"):
        load_train_config(SMOKE, ["kind=restoration"])
    assert isinstance(load_train_config(SMOKE, []), RobustSamTrainConfig)
    (tmp_path / "typo.yml").write_text("kind: robosam\n")
    with pytest.raises(ConfigError, match="kind: expected one of 'restoration', 'robustsam', got 'robosam'"):
        load_train_config(str(tmp_path / "typo.yml"), [])


def test_full_size_recipe_and_schema(tmp_path):
    sam = tmp_path / "sam_vit_b_01ec64.pth"
    sam.write_bytes(b"")  # only its existence is checked when validating
    cfg = load_train_config(str(REPO / "pipelines/train_robustsam_vit_b.yml"), [f"model.checkpoint={sam}"])
    assert cfg.model.model_config() == "vit_b" and cfg.model.fresh_robust_modules
    assert cfg.data.degradations is None and cfg.train.train_sam_decoder is False
    # official RobustSAM training defaults: Adam 1e-4, wd 1e-5, clip 1, weights 20/1/2/100
    assert (cfg.optim.lr, cfg.optim.weight_decay, cfg.optim.grad_clip) == (1e-4, 1e-5, 1.0)
    assert (cfg.losses.focal, cfg.losses.dice, cfg.losses.token, cfg.losses.feature) == (20, 1, 2, 100)
    assert RobustSamTrainConfig().losses == cfg.losses and RobustSamTrainConfig().optim == cfg.optim
    assert read_yaml(REPO / SMOKE)["kind"] == "robustsam"

    schema = json_schema(TrainConfig, kinds=format_kinds("train"))
    assert schema["if"] == {"properties": {"kind": {"const": "robustsam"}}, "required": ["kind"]}
    assert schema["then"] == {"$ref": "#/$defs/RobustSamTrainConfig"}
    assert schema["else"] == {"$ref": "#/$defs/TrainConfig"}
    defs = schema["$defs"]
    assert defs["RobustSamLossOptions"]["properties"]["feature"]["default"] == 100.0
    assert defs["RobustSamArchOptions"]["required"][:2] == ["img_size", "patch"]
    assert defs["RobustSamTrainConfig"]["additionalProperties"] is False
    committed = json.loads((REPO / "pipelines/schema/train.schema.json").read_text())
    assert committed["then"] == schema["then"] and committed["$defs"] == json.loads(json.dumps(defs))
