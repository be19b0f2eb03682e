"""robustsam_prior.batch.process_files_sharded in one process (two processes: tests/pipelines/test_cli_torchrun_shards.py
and the torchrun test of tests/pipelines/test_cli_prior_cache.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from robustsam_prior.batch import RunSummary, ShardedRun, process_files_sharded


def _items(root: Path, names: list[str]) -> list[tuple[Path, Path]]:
    root.mkdir(parents=True, exist_ok=True)
    for name in names:
        (root / name).write_bytes(b"")
    return [(root / name, Path(name)) for name in names]


def test_setup_skip_prepare_and_collect(tmp_path):
    items = _items(tmp_path, ["a.png", "b.png", "c.png", "notes.txt"])
    calls: list[str] = []
    seen: list[str] = []

    def setup(rank: int, world: int):
        calls.append(f"setup {rank}/{world}")

        def fn(src: Path, rel: Path) -> None:
            if rel.name == "c.png":
                raise ValueError("bad file")
            seen.append(rel.as_posix())

        return fn

    run = process_files_sharded(
        items, setup=setup, desc="t", skip=lambda src, rel: rel.name == "b.png", skip_reason="exists",
        prepare=lambda: calls.append("prepare"), collect=lambda: len(seen),
    )
    assert calls == ["setup 0/1", "prepare"]  # setup first, so that a model is loaded before the output is touched
    assert seen == ["a.png"] and run.collected == [1]
    assert (run.rank, run.world_size, run.existing) == (0, 1, 1)
    assert run.summary.processed == [Path("a.png")] and run.summary.failed == [(Path("c.png"), "bad file")]
    assert run.summary.skipped == [(Path("notes.txt"), "not an image file"), (Path("b.png"), "exists")]
    assert not run.ok and run.summary.desc == "t"


def test_a_run_whose_outputs_all_exist_is_ok(tmp_path):
    items = _items(tmp_path, ["a.png"])
    run = process_files_sharded(items, lambda src, rel: None, desc="t", skip=lambda src, rel: True)
    assert run.ok and run.existing == 1 and not run.summary.processed
    assert not ShardedRun(RunSummary()).ok  # nothing found: not a success


def test_fn_or_setup(tmp_path):
    with pytest.raises(TypeError, match="either fn or setup"):
        process_files_sharded([], desc="t")
    with pytest.raises(TypeError, match="either fn or setup"):
        process_files_sharded([], lambda s, r: None, setup=lambda r, w: None, desc="t")


def test_merge_keeps_every_file_and_the_slowest_time():
    a = RunSummary("x[rank 0]", [Path("a")], [], [(Path("b"), "bad")], 1.0)
    b = RunSummary("x[rank 1]", [Path("c")], [(Path("d"), "exists")], [], 2.5)
    merged = RunSummary.merge([a, b], "x")
    assert merged == RunSummary("x", [Path("a"), Path("c")], [(Path("d"), "exists")], [(Path("b"), "bad")], 2.5)
