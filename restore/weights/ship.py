"""Copy trained default models into this folder (the packaged weights) with their training record.

    python restore/weights/ship.py runs/default_dehaze runs/default_deblur \
        runs/default_dehaze_noprior runs/default_deblur_noprior

For each run folder (written by ``robustsam-restore train``) it takes the newest weight file under
``models/`` (``final.safetensors`` at the end, ``iter_*.safetensors`` while the run is going; ``--at N``:
the periodic file of iteration N, to compare runs at the same budget; ``RUN@N``: that iteration of one run,
e.g. the one chosen on validation), and writes
``restore/weights/<file>`` (see :data:`MODELS`) with the checkpoint's metadata plus a ``training``
record: recipe, iterations done / planned, wall time (the sum of the logged step windows, so it adds
up over resumed runs), the validation history and the final validation metrics. It then writes
``zoo.json`` (the table ``restore.zoo`` reads) and ``TRAINING.md`` + ``training_log.json``
(the training log summary). Weights are the EMA weights the trainer saves; nothing is retrained here.
A run that started from other weights (``model.init``: a second training stage) carries their training
record as ``initialised_from``, and the table lists both stages' iterations and wall times.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
# run name (the recipe's `name`) -> zoo name, weight file, recipe, description[, local_pool, guided_radius:
# the packaged model's inference settings, see restore.zoo]
MODELS: dict[str, dict[str, Any]] = {
    "default_dehaze": {
        "zoo": "regions-dehaze",
        "file": "dehaze_regions_map_nafnet.safetensors",
        "recipe": "pipelines/train_default_dehaze.yml",
        "description": "default dehazer: MAP-NAFNet (width 16) on the built-in regions prior",
        "guided_radius": 16,
    },
    "default_deblur": {
        "zoo": "regions-deblur",
        "file": "deblur_regions_map_nafnet.safetensors",
        "recipe": "pipelines/train_default_deblur_stage5.yml",
        "description": "default deblurrer: MAP-NAFNet (width 16) on the built-in regions prior",
    },
    "default_dehaze_noprior": {
        "zoo": "dehaze-noprior",
        "file": "dehaze_noprior_nafnet.safetensors",
        "recipe": "pipelines/train_default_dehaze_noprior.yml",
        "description": "ablation: the same NAFNet without a prior, same data and budget",
        "guided_radius": 16,
    },
    "dehaze_robustsam": {
        "zoo": "robustsam-dehaze",
        "file": "dehaze_robustsam_map_nafnet.safetensors",
        "recipe": "pipelines/train_default_dehaze_robustsam_stage2.yml",
        "description": "dehazer: the same MAP-NAFNet on the packaged robustsam-tiny prior (automatic masks)",
        "guided_radius": 16,
    },
    "default_deblur_noprior": {
        "zoo": "deblur-noprior",
        "file": "deblur_noprior_nafnet.safetensors",
        "recipe": "pipelines/train_default_deblur_noprior_stage5.yml",
        "description": "ablation: the same NAFNet without a prior, same data and budget",
    },
}
MAX_BYTES = 15 * 1024 * 1024  # each packaged model <= 15 MB
HISTORY = "## Experiments"  # TRAINING.md: this heading and what follows it are written by hand


def read_log(run: Path, log_every: int = 10, upto: int | None = None) -> dict[str, Any]:
    """Wall time and validation history from ``log.jsonl`` (``log_every``: the recipe's logging period)
    up to iteration ``upto`` (the shipped weights' iteration; None = all)."""
    wall, val = 0.0, []
    log = run / "log.jsonl"
    if log.is_file():
        prev = 0
        for line in log.read_text(encoding="utf-8").splitlines():
            rec = json.loads(line)
            if upto is not None and rec["iteration"] > upto:
                continue
            if "it_per_s" in rec:
                it = rec["iteration"]
                # logs of runs resumed before the trainer cut them back on resume go back to the
                # checkpoint's iteration: one window of steps
                steps = it - prev if it > prev else (it - 1) % log_every + 1
                wall += steps / max(rec["it_per_s"], 1e-9)
                prev = it
            if "val/psnr" in rec:  # every validation set: val/..., val_<name>/...
                val.append({k: v for k, v in rec.items() if k == "iteration" or k.startswith("val")})
    return {"wall_time_s": round(wall, 1), "validation": val}


def newest_weights(run: Path, at: int | None = None) -> Path:
    """The newest weight file of a run; ``at``: the periodic file of that iteration."""
    if at is not None:
        path = run / "models" / f"iter_{at:07d}.safetensors"
        if not path.is_file():
            raise FileNotFoundError(f"{run}: no weights of iteration {at} ({path.name}) under models/")
        return path
    # the newest file: a run resumed with more iterations leaves an older final.safetensors behind
    files = sorted((run / "models").glob("*.safetensors"), key=lambda p: p.stat().st_mtime)
    if not files:
        raise FileNotFoundError(f"{run}: no weights under models/ yet")
    return files[-1]


def run_record(run: Path, at: int | None = None, ckpt: Any = None) -> tuple[dict[str, Any], Any]:
    """The training record of one run's newest weights (or those of iteration ``at``) and the checkpoint
    read; nothing is written. A run started from other weights (``model.init``) carries their record as
    ``initialised_from``: the record those weights were shipped with, or, for a periodic file of another
    run (``RUN/models/iter_N.safetensors``), the record of that run at that iteration, made the same way.
    ``ckpt``: that weight file, when the caller has read it already."""
    from robustsam_prior.core.checkpoint import read_checkpoint

    src = newest_weights(run, at)
    if ckpt is None:
        ckpt = read_checkpoint(src)
    meta = dict(ckpt.metadata)
    name = meta.get("name")
    if name not in MODELS:
        raise ValueError(f"{src}: run name {name!r} is not one of {sorted(MODELS)}")
    spec = MODELS[name]
    loop = (meta.get("config") or {}).get("train", {})
    log = read_log(run, int(loop.get("log_every", 10)), upto=meta.get("iteration"))
    planned = loop.get("iterations")
    record = {
        "zoo": spec["zoo"],
        "file": spec["file"],
        "recipe": recipe_of(run) or spec["recipe"],
        "arch": meta.get("arch"),
        "arch_kwargs": meta.get("arch_kwargs"),
        "prior": meta.get("prior"),
        "iterations": meta.get("iteration"),
        "planned_iterations": planned,
        # the run went to its planned end; the shipped iteration may be an earlier one chosen on validation
        "finished": meta.get("iteration") == planned or (run / "models" / "final.safetensors").is_file(),
        "wall_time_s": log["wall_time_s"],
        "device": "CPU, 1 torch thread (2 cores shared with other work)",
        "metrics": meta.get("metrics") or {},
        "validation": log["validation"],
        "source_sha256": ckpt.sha256,
    }
    init = ((meta.get("config") or {}).get("model") or {}).get("init")
    if init:  # a fine-tuning stage: carry the training record of the weights it started from
        init = Path(init)
        if not init.is_file():
            raise FileNotFoundError(f"{src}: the run started from {init} (model.init), which is gone; its "
                                    "training record cannot be carried over")
        parent = read_checkpoint(init)
        earlier = dict(parent.metadata.get("training") or {})
        periodic = re.fullmatch(r"iter_(\d+)\.safetensors", init.name)
        if not earlier and init.parent.name == "models" and (periodic or init.name == "final.safetensors"):
            # a run's own file: its record at that iteration (final.safetensors: the run's last iteration)
            at = int(periodic.group(1)) if periodic else parent.metadata.get("iteration")
            earlier, _ = run_record(init.parent.parent, at, parent)
        record["initialised_from"] = {"file": str(init), "sha256": parent.sha256, **{
            k: earlier[k] for k in ("recipe", "iterations", "wall_time_s", "source_sha256", "initialised_from")
            if k in earlier}}
    sources = data_sources(meta.get("config") or {})
    if sources:
        record["data_sources"] = sources
    return record, ckpt


def recipe_of(run: Path) -> str | None:
    """The recipe a run was made from, as the trainer's ``config.yml`` names it (``# source: FILE``)."""
    config = run / "config.yml"
    if not config.is_file():
        return None
    for line in config.read_text(encoding="utf-8").splitlines()[:5]:
        if line.startswith("# source: "):
            return line[len("# source: "):].strip()
    return None


def ship(run: Path, at: int | None = None, half: bool = False) -> dict[str, Any]:
    """Package one run (its newest weights, or those of iteration ``at``; ``half``: stored as float16, which
    the loader casts back to float32); returns its training record (:func:`run_record`)."""
    from robustsam_prior.core.checkpoint import save_checkpoint

    record, ckpt = run_record(run, at)
    meta = dict(ckpt.metadata)
    meta["training"] = {k: v for k, v in record.items() if k not in ("zoo", "file", "validation", "metrics")}
    dest = HERE / record["file"]
    state = ckpt.state_dict
    if half:
        state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
        record["stored_as"] = meta["training"]["stored_as"] = "float16"
    save_checkpoint(dest, state, meta)
    size = dest.stat().st_size
    if size > MAX_BYTES:
        raise ValueError(f"{dest}: {size / 1e6:.1f} MB is over the 15 MB package limit")
    record["size_bytes"] = size
    return record


def data_sources(config: dict[str, Any]) -> list[dict[str, Any]]:
    """Where a run's file data came from: for each folder its recipe reads (training and validation) that
    lies under a ``SOURCES.json`` written by ``scripts/layout_training_data.py``, the repository, commit,
    and every file used with its sha256, plus the files the fetched snapshot lacked."""
    data = config.get("data") or {}
    sets = [data.get("train"), data.get("val"), *(data.get("train_extra") or []), *(data.get("val_extra") or [])]
    folders = {Path(v).resolve() for d in sets if d
               for k in ("clean_dir", "video_dir", "depth_dir", "lq_dir", "gt_dir")
               if isinstance(v := d.get(k), str) and not v.startswith("pkg://")}
    out: dict[Path, dict[str, Any]] = {}
    for folder in sorted(folders):
        manifest = next((p / "SOURCES.json" for p in (folder, *folder.parents) if (p / "SOURCES.json").is_file()),
                        None)
        if manifest is None:
            continue
        root, m = manifest.parent, json.loads(manifest.read_text(encoding="utf-8"))
        entry = out.setdefault(manifest, {"repository": m["repository"], "commit": m["commit"],
                                          "folder": _shown(root), "files": [],
                                          "missing_in_snapshot": m.get("missing_in_snapshot", [])})
        for f in m["files"]:
            if (root / f["path"]).resolve().is_relative_to(folder) and f not in entry["files"]:
                entry["files"].append({k: f[k] for k in ("path", "source", "sha256")})
    return list(out.values())


def _shown(folder: Path) -> str:
    """``folder`` relative to the repository root where it lies inside it (as recipes name data folders)."""
    try:
        return folder.resolve().relative_to(HERE.parents[1]).as_posix()
    except ValueError:
        return str(folder)


def write_tables(records: dict[str, dict[str, Any]]) -> None:
    zoo_path = HERE / "zoo.json"
    zoo = json.loads(zoo_path.read_text(encoding="utf-8")) if zoo_path.is_file() else {}
    log_path = HERE / "training_log.json"
    log = json.loads(log_path.read_text(encoding="utf-8")) if log_path.is_file() else {}
    for run, rec in records.items():
        spec = MODELS[run]
        task = "dehaze" if "dehaze" in run else "deblur"
        zoo[spec["zoo"]] = {"task": task, "file": spec["file"], "description": spec["description"]}
        for setting in ("local_pool", "guided_radius"):  # inference settings of the packaged model
            if spec.get(setting):
                zoo[spec["zoo"]][setting] = spec[setting]
        log[run] = rec
    zoo_path.write_text(json.dumps(zoo, indent=2, sort_keys=True, allow_nan=False) + "\n", encoding="utf-8")
    log_path.write_text(json.dumps(log, indent=2, sort_keys=True, allow_nan=False) + "\n", encoding="utf-8")
    lines = [
        "# Packaged models: training log summary",
        "",
        "Written by `restore/weights/ship.py` from the runs of the recipes under `pipelines/`; per-step",
        "validation history (every validation set) in `training_log.json`. The `val PSNR` column is each",
        "recipe's main validation set, PSNR in dB: for the dehazers held-out scikit-image `chelsea` + `coffee`,",
        "whole images, one fixed haze each (severity 3); for the deblurrers' last stage the video validation",
        "(means of 7-13 frames of the held-out last fifth of GoPro sequence GOPR0477_11_00, every 4th frame",
        "a centre). A model trained in stages lists them all (each starts from the previous one's weights,",
        "`model.init`).",
        "",
        "| model | file | recipe(s) | iterations | wall time | val PSNR (input) | size |",
        "|---|---|---|---|---|---|---|",
    ]
    for run in MODELS:
        rec = log.get(run)
        if rec is None:
            continue
        m = rec["metrics"]
        stages = _stages(rec)
        its = " + ".join(str(r.get("iterations", "?")) for r in stages[:-1])
        its += (" + " if its else "") + f"{rec['iterations']}/{rec['planned_iterations']}"
        if not rec["finished"]:
            its += " (running)"
        elif rec["iterations"] != rec["planned_iterations"]:
            its += " (chosen on validation)"
        wall = " + ".join(f"{r['wall_time_s'] / 60:.0f}" if "wall_time_s" in r else "?" for r in stages)
        recipes = " then ".join(f"`{r['recipe']}`" for r in stages if "recipe" in r)
        lines.append(
            f"| {rec['zoo']} | `{rec['file']}` | {recipes} | {its} | {wall} min | "
            f"{m.get('val/psnr', float('nan')):.2f} ({m.get('val/input_psnr', float('nan')):.2f}) | "
            f"{rec['size_bytes'] / 1e6:.1f} MB |"
        )
    lines += _data_tables(log)
    # the hand-written record of runs below the generated table is kept as it is
    path = HERE / "TRAINING.md"
    old = path.read_text(encoding="utf-8") if path.is_file() else ""
    history = old[old.index(HISTORY):] if HISTORY in old else ""
    path.write_text("\n".join(lines) + "\n" + ("\n" + history if history else ""), encoding="utf-8")


def _data_tables(log: dict[str, dict[str, Any]]) -> list[str]:
    """TRAINING.md's list of the fetched files the packaged models were trained and validated on."""
    by_source: dict[tuple[str, str, str], dict[str, Any]] = {}
    for run in MODELS:
        for src in (log.get(run) or {}).get("data_sources", []):
            # records written before the folder was kept name the one layout there was then: data/train
            key = (src["repository"], src["commit"], src.get("folder", "data/train"))
            entry = by_source.setdefault(key, {"models": [], "files": {}, "missing": set()})
            entry["models"].append(log[run]["zoo"])
            entry["files"].update({f["path"]: f for f in src["files"]})
            entry["missing"].update(src["missing_in_snapshot"])
    lines = ["", "## Training data"] if by_source else []
    for (repo, commit, folder), entry in by_source.items():
        lines += ["",
                  f"Files of `{repo}` at commit `{commit}`, laid out in `{folder}` by `scripts/layout_training_data.py` "
                  f"and used by {', '.join(entry['models'])}: {len(entry['files'])} files. Missing from the fetched "
                  f"snapshot (files of 4 MiB and more are left out of snapshots): "
                  f"{', '.join(f'`{m}`' for m in sorted(entry['missing'])) or 'none'}.", "",
                  "<details><summary>every file, with its sha256</summary>", "",
                  f"| path (under {folder}) | source | sha256 |", "|---|---|---|"]
        lines += [f"| `{f['path']}` | `{f['source']}` | `{f['sha256']}` |" for _, f in sorted(entry["files"].items())]
        lines += ["", "</details>"]
    return lines


def _stages(record: dict[str, Any]) -> list[dict[str, Any]]:
    """The training stages behind a record, first to last (``initialised_from`` links a fine-tuning
    stage to the weights it started from)."""
    chain = [record]
    while "initialised_from" in chain[0]:
        chain.insert(0, chain[0]["initialised_from"])
    return chain


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="run folders of robustsam-restore train; RUN@N ships the periodic "
                        "weights of iteration N of that run (chosen on validation)")
    parser.add_argument("--at", type=int, default=None, help="ship the periodic weights of this iteration")
    parser.add_argument("--half", action="store_true", help="store the weights as float16 (half the size)")
    args = parser.parse_args()
    records = {}
    for spec in args.runs:
        folder, _, at = spec.rpartition("@") if re.fullmatch(r".*@\d+", spec) else (spec, "", "")
        run = Path(folder)
        rec = ship(run, int(at) if at else args.at, args.half)
        name = next(k for k, v in MODELS.items() if v["file"] == rec["file"])
        records[name] = rec
        print(f"{rec['zoo']}: {rec['file']} <- {run} (iteration {rec['iterations']}, "
              f"val {rec['metrics'].get('val/psnr', float('nan')):.2f} dB)")
    write_tables(records)


if __name__ == "__main__":
    main()
