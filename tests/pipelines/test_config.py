"""Config validation: every kind of error names its key path; overrides; resolved config; JSON Schema."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from pipelines.config import (
    ConfigError,
    apply_overrides,
    build,
    json_schema,
    load_config,
    parse_number,
    parse_override,
    read_yaml,
    resolve_path,
    save_resolved,
    to_dict,
    write_schemas,
)
from pipelines.runner import PipelineConfig
from restore.training.options import TrainConfig

REPO = Path(__file__).resolve().parents[2]
BASE = {
    "name": "t",
    "data": {
        "train": {"type": "synthetic", "clean_dir": "pkg://skimage.data", "degradation": {"kinds": ["haze"]}},
    },
}


def _err(data, overrides=(), cls=TrainConfig) -> str:
    with pytest.raises(ConfigError) as e:
        build(cls, apply_overrides(data, list(overrides)))
    return str(e.value)


def test_numbers_written_like_2e_4_are_numbers():
    # PyYAML (YAML 1.1) reads these as strings; the schema turns them into numbers
    raw = yaml.safe_load("lr: 2e-4\nit: 1e3\nneg: -3E-2\n")
    assert raw == {"lr": "2e-4", "it": "1e3", "neg": "-3E-2"}
    cfg = build(TrainConfig, apply_overrides(BASE, ["train.optim.lr=2e-4", "train.iterations=1e3",
                                                    "train.optim.weight_decay=-0"]))
    assert cfg.train.optim.lr == pytest.approx(2e-4) and isinstance(cfg.train.optim.lr, float)
    assert cfg.train.iterations == 1000 and isinstance(cfg.train.iterations, int)
    assert parse_number("1_000", "x", integer=True) == 1000
    assert parse_number(3, "x") == 3.0 and isinstance(parse_number(3, "x"), float)
    assert parse_number("-0", "x") == 0.0 and parse_number("9223372036854775807", "x", integer=True) == 2**63 - 1
    # free-form mappings (arch_kwargs, prior options) read them as numbers too, nested values included;
    # other strings stay strings
    cfg = build(TrainConfig, apply_overrides(BASE, ["model.arch_kwargs={guided_eps: 1e-5, sizes: [1e2], head: e5}"]))
    assert cfg.model.arch_kwargs == {"guided_eps": 1e-5, "sizes": [100.0], "head": "e5"}


@pytest.mark.parametrize("value", [".nan", ".inf", "-.inf", float("nan"), float("inf"), "+.INF"])
def test_non_finite_numbers_are_refused_everywhere(value):
    for integer in (False, True):
        with pytest.raises(ConfigError, match=r"^a.b: expected a finite number, got (nan|inf|-inf)$"):
            parse_number(value, "a.b", integer=integer)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        # YAML reads .nan/.inf as floats, and NaN passes every min/max comparison: refused as not finite
        ("train.optim.lr=.nan", "train.optim.lr: expected a finite number, got nan"),
        ("train.optim.lr=.inf", "train.optim.lr: expected a finite number, got inf"),
        ("train.optim.lr=1e308", "train.optim.lr: must be <= 1.0, got 1e+308"),
        ("train.optim.lr=2", "train.optim.lr: must be <= 1.0, got 2.0"),
        ("train.scheduler.eta_min=.nan", "train.scheduler.eta_min: expected a finite number, got nan"),
        ("train.optim.weight_decay=1e9", "train.optim.weight_decay: must be <= 1.0, got 1000000000.0"),
        ("train.grad_clip=-.inf", "train.grad_clip: expected a finite number, got -inf"),
        ("train.losses=[{type: l1, weight: .nan}]", "train.losses[0].weight: expected a finite number, got nan"),
        ("seed=4294967296", "seed: must be <= 2147483647, got 4294967296"),
        ("seed=1e308", "seed: expected an integer that fits in 64 bits, got one of 309 digits"),
        ("seed=99999999999999999999", "seed: expected an integer that fits in 64 bits, got one of 20 digits"),
    ],
)
def test_numbers_that_would_crash_training_are_refused(override, message):
    assert _err(BASE, [override]) == message


def test_robustsam_and_pipeline_numbers_are_bounded_too():
    from pipelines.steps import DegradeStep
    from robustsam_prior.training.options import RobustSamTrainConfig

    rs = {"kind": "robustsam", "model": {"variant": "vit_b"}}
    assert _err(rs, ["optim.lr=.nan"], cls=RobustSamTrainConfig) == "optim.lr: expected a finite number, got nan"
    assert _err(rs, ["optim.lr=1e308"], cls=RobustSamTrainConfig) == "optim.lr: must be <= 1.0, got 1e+308"
    assert _err(rs, ["seed=2147483648"], cls=RobustSamTrainConfig) == "seed: must be <= 2147483647, got 2147483648"
    assert build(RobustSamTrainConfig, {**rs, "seed": 2**31 - 1}).seed == 2**31 - 1
    assert _err({"seed": 2**40}, cls=DegradeStep) == "seed: must be <= 2147483647, got 1099511627776"


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.optim.lr=fast", "train.optim.lr: expected a number, got 'fast'"),
        ("train.optim.lr=true", "train.optim.lr: expected a number, got True"),
        ("train.iterations=2.5", "train.iterations: expected an integer, got 2.5"),
        ("train.batch_size=-4", "train.batch_size: must be >= 1, got -4"),
        ("train.ema.decay=1.5", "train.ema.decay: must be <= 1.0, got 1.5"),
        ("train.deterministic=yes please", "train.deterministic: expected true or false, got 'yes please'"),
        ("train.losses=[]", "train.losses: needs at least 1 item(s), got 0"),
        ("train.losses=l1", "train.losses: expected a list, got str 'l1'"),
        ("train.optim.betas=[0.9]", "train.optim.betas: expected a list of 2 items, got 1"),
        ("train.optim.betas=[0.9, 1.0]", "train.optim.betas: each must be in [0, 1), got [0.9, 1.0]"),
        ("train.optim=adamw", "train.optim: expected a mapping, got str 'adamw'"),
        ("train.optim.type=sgd", "train.optim.type: expected one of 'adamw', 'adam', got 'sgd'"),
        ("model.arch_kwargs=3", "model.arch_kwargs: expected a mapping, got int 3"),
        ("name=3", "name: expected a string, got int 3"),
        ("model.init=/no/such/file.safetensors", "model.init: file not found: '/no/such/file.safetensors'"),
        ("data.train.clean_dir=/no/such/dir", "data.train.clean_dir: folder not found: '/no/such/dir'"),
        ("data.train.clean_dir=pkg://no_such_package_xyz", "data.train.clean_dir: 'pkg://no_such_package_xyz': no installed package"),
        ("data.train.crop_size=4", "data.train.crop_size: must be >= 8, got 4"),
        ("data.train.degradation.severity=[4, 2]", "data.train.degradation.severity: expected 1 <= low <= high <= 5, got [4, 2]"),
        ("data.train.augment.scale=[0, 1]", "data.train.augment.scale: expected 0 < low <= high, got [0.0, 1.0]"),
        ("data.train.degradation=null", "data.train.degradation: required for type 'synthetic'"),
        ("data.train.type=paired", "data.train.lq_dir: required for type 'paired'"),
        ("train.scheduler.warmup_iters=5000", "train.scheduler.warmup_iters: must be < iterations (1000), got 5000"),
    ],
)
def test_each_error_names_its_key_path(override, message):
    assert message in _err(BASE, [override])


def test_unknown_key_suggests_the_right_one():
    msg = _err(BASE, ["train.optm.lr=1e-3"])
    assert msg.startswith("train.optm: unknown key (did you mean 'optim'?)")
    assert "did you mean 'iterations'" in _err(BASE, ["train.iteration=5"])
    assert "kind: expected one of 'restoration', 'robustsam', got 'robustam' (did you mean 'robustsam'?)" in _err(
        BASE, ["kind=robustam"]
    )
    assert "train.losses[1].type: expected one of" in _err(BASE, ["train.losses=[{type: l1}, {type: charbonier}]"])
    assert "(did you mean 'charbonnier'?)" in _err(BASE, ["train.losses=[{type: charbonier}]"])


def test_missing_required_keys():
    assert _err({"name": "x"}).startswith("data: missing required key")
    assert "data.train: missing required key" in _err({"data": {}})
    assert "steps[0]: missing key 'step' (one of degrade, eval" in _err({"input": ".", "steps": [{"kind": "haze"}]}, cls=PipelineConfig)
    assert "input: missing (pass input=PATH" in _err({"steps": [{"step": "report"}]}, cls=PipelineConfig)


def test_tagged_steps_and_their_errors(tmp_path):
    cfg = build(PipelineConfig, {"input": str(tmp_path), "steps": [{"step": "degrade", "severity": "4"},
                                                                     {"step": "report"}]})
    assert [s.TAG for s in cfg.steps] == ["degrade", "report"] and cfg.steps[0].severity == 4
    msg = _err({"input": str(tmp_path), "steps": [{"step": "restor"}]}, cls=PipelineConfig)
    assert msg.startswith("steps[0].step: unknown step 'restor' (did you mean 'restore'?)")
    msg = _err({"input": str(tmp_path), "steps": [{"step": "restore", "tiles": 3}]}, cls=PipelineConfig)
    assert msg.startswith("steps[0].tiles: unknown key (did you mean 'tile'?)")
    msg = _err({"input": str(tmp_path), "steps": [{"step": "report"}, {"step": "eval"}]}, cls=PipelineConfig)
    assert "'report' must be the last step" in msg
    assert "steps: needs at least 1 item" in _err({"input": str(tmp_path)}, cls=PipelineConfig)


def test_overrides_are_yaml_scalars_never_code(tmp_path):
    assert parse_override("a.b=1e-3") == (["a", "b"], "1e-3")
    assert parse_override("a.0.c=[1, 2]") == (["a", 0, "c"], [1, 2])
    assert parse_override("a={x: 1}") == (["a"], {"x": 1})
    assert parse_override("a=null") == (["a"], None)
    assert parse_override("a=") == (["a"], "")
    # something that would run code under eval() is just a string here
    assert parse_override("name=__import__('os').system('true')")[1] == "__import__('os').system('true')"
    for bad, msg in [("novalue", "expected key.path=value"), ("a..b=1", "empty key"), ("=3", "expected key.path"),
                     ("a=[1, 2", "not valid YAML")]:
        with pytest.raises(ConfigError, match=msg):
            parse_override(bad)
    data = {"steps": [{"step": "restore"}], "x": 3}
    assert apply_overrides(data, ["steps.0.tile=512"])["steps"][0]["tile"] == 512
    assert data["steps"][0] == {"step": "restore"}, "overrides must not modify the input"
    with pytest.raises(ConfigError, match="no list item 3"):
        apply_overrides(data, ["steps.3.tile=1"])
    with pytest.raises(ConfigError, match="x is a int, not a mapping"):
        apply_overrides(data, ["x.y=1"])


def test_load_config_names_the_file_and_saves_overrides(tmp_path):
    path = tmp_path / "r.yml"
    path.write_text(yaml.safe_dump(BASE) + "train: {optim: {lr: 2e-4}}\n")
    cfg = load_config(TrainConfig, path, ["train.iterations=7", "seed=5"])
    assert cfg.train.iterations == 7 and cfg.seed == 5 and cfg.train.optim.lr == 2e-4
    out = save_resolved(cfg, tmp_path / "out" / "config.yml", source=str(path), overrides=["train.iterations=7", "seed=5"])
    text = out.read_text()
    assert "# override: train.iterations=7" in text and f"# source: {path}" in text
    again = build(TrainConfig, yaml.safe_load(text))
    assert again == cfg, "the resolved file must reproduce the same config"
    with pytest.raises(ConfigError, match=r"r.yml: train.optim.lr: expected a number, got 'fast'"):
        load_config(TrainConfig, path, ["train.optim.lr=fast"])
    with pytest.raises(ConfigError, match="config file not found"):
        read_yaml(tmp_path / "missing.yml")
    (tmp_path / "bad.yml").write_text("a: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        read_yaml(tmp_path / "bad.yml")
    (tmp_path / "list.yml").write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="top level must be a mapping, got list"):
        read_yaml(tmp_path / "list.yml")
    (tmp_path / "empty.yml").write_text("")
    assert read_yaml(tmp_path / "empty.yml") == {}


def test_base_file_is_read_first_and_merged_under(tmp_path):
    (tmp_path / "recipes").mkdir()
    (tmp_path / "recipes" / "stage1.yml").write_text(yaml.safe_dump(
        {**BASE, "seed": 0, "train": {"iterations": 100, "optim": {"lr": 1e-3, "weight_decay": 0.01}},
         "data": {**BASE["data"], "train": {**BASE["data"]["train"], "include": ["a.png", "b.png"]}}}))
    stage2 = tmp_path / "stage2.yml"  # in another folder: `base` is relative to the including file
    stage2.write_text("base: recipes/stage1.yml\nseed: 1\ntrain: {optim: {lr: 0.0005}}\n"
                      "data: {train: {include: [c.png]}}\n")
    data = read_yaml(stage2)
    assert "base" not in data and data["seed"] == 1 and data["name"] == "t"
    assert data["train"] == {"iterations": 100, "optim": {"lr": 5e-4, "weight_decay": 0.01}}  # mappings merge
    assert data["data"]["train"]["include"] == ["c.png"]  # lists are replaced, not joined
    assert data["data"]["train"]["degradation"] == {"kinds": ["haze"]}
    cfg = load_config(TrainConfig, stage2, ["train.iterations=7"])
    assert (cfg.seed, cfg.train.iterations, cfg.train.optim.lr, cfg.train.optim.weight_decay) == (1, 7, 5e-4, 0.01)
    assert read_yaml(tmp_path / "recipes" / "stage1.yml")["seed"] == 0  # the base file is left as it was

    (tmp_path / "a.yml").write_text("base: b.yml\nseed: 1\n")
    (tmp_path / "b.yml").write_text("base: a.yml\n")
    with pytest.raises(ConfigError, match=r"b.yml: base: the files include each other \(.*a.yml -> .*b.yml -> .*a.yml\)"):
        read_yaml(tmp_path / "a.yml")
    (tmp_path / "c.yml").write_text("base: nope.yml\n")
    with pytest.raises(ConfigError, match=r"c.yml: base: .*nope.yml: config file not found"):
        read_yaml(tmp_path / "c.yml")
    (tmp_path / "d.yml").write_text("base: [x.yml]\n")
    with pytest.raises(ConfigError, match=r"d.yml: base: expected the name of a YAML file, got \['x.yml'\]"):
        read_yaml(tmp_path / "d.yml")
    for schema in (json_schema(PipelineConfig), json_schema(TrainConfig)):
        assert schema["properties"]["base"]["type"] == "string"


def test_pkg_paths_resolve_to_package_folders():
    import skimage.data

    assert resolve_path("pkg://skimage.data", "k") == Path(skimage.data.__file__).parent
    assert resolve_path("pkg://skimage/data", "k") == Path(skimage.data.__file__).parent
    with pytest.raises(ConfigError, match="k: 'pkg://nope_zz': no installed package 'nope_zz'"):
        resolve_path("pkg://nope_zz", "k")


def test_every_shipped_yaml_validates(tmp_path):
    from pipelines.config import read_yaml as rd

    files = sorted((REPO / "pipelines").glob("*.yml"))
    assert len(files) >= 10
    for f in files:
        data = rd(f)
        if data.get("kind") == "pipeline":
            cfg = build(PipelineConfig, {**data, "input": str(REPO)})
            assert cfg.steps
        elif data.get("kind") == "robustsam":  # RobustSAM recipes (more in test_train_robustsam_cli.py)
            from robustsam_prior.training.options import RobustSamTrainConfig

            (tmp_path / "sam.pth").touch()  # full-size recipes name SAM weights that exist only where downloaded
            overrides = [f"model.checkpoint={tmp_path / 'sam.pth'}"] if data["model"].get("checkpoint") else []
            if data["data"].get("source") == "folder":  # pseudo-mask folders exist where they were written
                overrides += [f"data.images_dir={tmp_path}", f"data.masks_dir={tmp_path}"]
            cfg = build(RobustSamTrainConfig, apply_overrides(data, overrides))
            assert to_dict(cfg)["name"] == data["name"]
        else:
            # full-size recipes name dataset folders that exist only where the data sets are, and second
            # stages the weights of a first that exists only where it was trained
            overrides = []
            sets = [data["data"].get(k) for k in ("train", "val")]
            sets += data["data"].get("train_extra", []) + data["data"].get("val_extra", [])
            for raw in filter(None, sets):
                for key in ("lq_dir", "gt_dir", "video_dir", "depth_dir", "clean_dir"):
                    if raw.get(key) and not raw[key].startswith("pkg://"):
                        raw[key] = str(tmp_path)
            if data["model"].get("init"):
                (tmp_path / "stage1.safetensors").touch()
                overrides.append(f"model.init={tmp_path / 'stage1.safetensors'}")
            cfg = build(TrainConfig, apply_overrides(data, overrides))
            assert to_dict(cfg)["name"] == data["name"]


def test_committed_json_schemas_are_up_to_date(tmp_path):
    written = write_schemas(tmp_path)
    assert sorted(p.name for p in written) == ["pipeline.schema.json", "train.schema.json"]
    for p in written:
        committed = REPO / "pipelines" / "schema" / p.name
        assert committed.is_file(), f"run `python -m pipelines.config` to write {committed}"
        assert json.loads(committed.read_text()) == json.loads(p.read_text()), f"{committed} is stale"
    schema = json_schema(TrainConfig)
    lr = schema["$defs"]["OptimOptions"]["properties"]["lr"]
    assert lr["type"] == "number" and lr["minimum"] == 0.0 and lr["default"] == 1e-3
    assert schema["additionalProperties"] is False
    pipe = json_schema(PipelineConfig)
    step_refs = pipe["properties"]["steps"]["items"]["oneOf"]
    assert len(step_refs) == 6
    assert pipe["$defs"]["RestoreStep"]["properties"]["step"] == {"const": "restore"}


def _alias_bomb(levels: int, indent: str = "  ") -> str:
    """Nested YAML aliases: level k is a list of 9 references to level k-1, 9**levels strings in all."""
    lines = [f'{indent}l0: &l0 ["x", "x", "x", "x", "x", "x", "x", "x", "x"]']
    for k in range(1, levels):
        refs = ", ".join([f"*l{k - 1}"] * 9)
        lines.append(f"{indent}l{k}: &l{k} [{refs}]")
    return "\n".join(lines) + "\n"


def test_nested_aliases_are_refused_before_anything_expands_them(tmp_path):
    from pipelines.config import MAX_YAML_VALUES

    # 9 levels: 387 million strings from a file under 1 KB, in a key (steps[0].options) that takes anything
    bomb = tmp_path / "bomb.yml"
    bomb.write_text("kind: pipeline\nsteps:\n  - step: prior\n    options:\n" + _alias_bomb(9, "      "))
    assert bomb.stat().st_size < 1024
    for call in (lambda: read_yaml(bomb), lambda: load_config(PipelineConfig, bomb, [f"input={tmp_path}"])):
        with pytest.raises(ConfigError) as e:
            call()
        msg = str(e.value)
        assert msg.startswith(f"{bomb}: ") and f"expand to more than {MAX_YAML_VALUES:,} values" in msg
        assert "\n" not in msg
    # a file that merely reuses an anchor a few times is fine
    ok = tmp_path / "ok.yml"
    ok.write_text("kind: pipeline\nsteps:\n  - step: prior\n    options:\n" + _alias_bomb(3, "      "))
    assert len(read_yaml(ok)["steps"][0]["options"]["l2"]) == 9
    # an alias inside the value it names is a cycle, not a configuration
    cyclic = tmp_path / "cyclic.yml"
    cyclic.write_text("a: &a [1, *a]\n")
    with pytest.raises(ConfigError, match=r"cyclic.yml: a YAML alias refers to a value that contains it"):
        read_yaml(cyclic)
    # the same limits hold for key=value overrides
    levels = ", ".join(["&a0 [0, 0, 0, 0, 0, 0, 0, 0, 0, 0]"]
                       + [f"&a{k} [{', '.join([f'*a{k - 1}'] * 10)}]" for k in range(1, 6)])
    with pytest.raises(ConfigError, match=r"^override 'x=\[.*: value: its YAML aliases \(\*name\) expand to more"):
        parse_override(f"x=[{levels}]")


def test_oversized_and_non_utf8_files_are_refused_naming_the_file(tmp_path):
    from pipelines.config import MAX_YAML_BYTES

    big = tmp_path / "big.yml"
    big.write_text("name: t\n# " + "x" * MAX_YAML_BYTES + "\n")
    with pytest.raises(ConfigError, match=rf"^{big}: larger than {MAX_YAML_BYTES:,} bytes"):
        read_yaml(big)
    latin1 = tmp_path / "latin1.yml"
    latin1.write_bytes("name: café\n".encode("latin-1"))
    with pytest.raises(ConfigError) as e:
        read_yaml(latin1)
    assert str(e.value) == f"{latin1}: not UTF-8 text (byte 0xe9 at offset 9); save the file as UTF-8"
    deep = tmp_path / "deep.yml"
    deep.write_text("a: " + "[" * 5000 + "]" * 5000 + "\n")
    with pytest.raises(ConfigError, match=rf"^{deep}: (YAML nested too deeply|its YAML aliases)"):
        read_yaml(deep)
    (tmp_path / "bad.yml").write_text("name: t\nsteps: [1, 2\n")
    with pytest.raises(ConfigError) as e:
        read_yaml(tmp_path / "bad.yml")
    assert "\n" not in str(e.value) and "(line 3, column 1)" in str(e.value)


def test_cli_reports_unreadable_yaml_in_one_line(tmp_path):
    from click.testing import CliRunner

    from pipelines.cli import main

    latin1 = tmp_path / "recipe.yml"
    latin1.write_bytes("name: café\n".encode("latin-1"))
    bomb = tmp_path / "bomb.yml"
    bomb.write_text("kind: pipeline\nsteps:\n  - step: prior\n    options:\n" + _alias_bomb(7, "      "))
    for args, path in ((["train", str(latin1)], latin1), (["run", str(latin1)], latin1),
                       (["run", str(bomb), f"input={tmp_path}"], bomb), (["train", str(bomb)], bomb)):
        res = CliRunner().invoke(main, args)
        assert res.exit_code == 1 and isinstance(res.exception, SystemExit), (args, res.output)
        lines = res.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"Error: {path}: "), (args, res.output)
