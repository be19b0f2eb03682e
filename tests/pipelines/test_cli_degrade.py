"""Folder processing (pipelines.commands._common) and the ``degrade`` command."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from pipelines.commands._common import RunSummary, process_files
from robustsam_prior.io import collect_inputs, read_image, write_image


def _folder_with_one_corrupt(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    for name in ("a.png", "c.png"):
        write_image(root / name, rng.random((12, 16, 3), dtype=np.float32))
    (root / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")  # PNG signature, broken body
    (root / "notes.txt").write_text("not an image")
    return root


def test_process_files_continues_after_failure(tmp_path, caplog, capsys):
    root = _folder_with_one_corrupt(tmp_path / "in")
    seen = []

    def fn(src: Path, rel: Path) -> None:
        read_image(src)
        seen.append(rel.as_posix())

    with caplog.at_level(logging.WARNING):
        summary = process_files(collect_inputs(root), fn, desc="test")
    assert seen == ["a.png", "c.png"]
    assert summary.processed == [Path("a.png"), Path("c.png")]
    assert [rel for rel, _ in summary.failed] == [Path("b.png")]
    assert "b.png" in summary.failed[0][1]
    assert summary.skipped == [(Path("notes.txt"), "not an image file")]
    assert "skipping notes.txt" in caplog.text and "b.png failed" in caplog.text
    assert not summary.ok
    with pytest.raises(SystemExit) as info:
        summary.report_and_exit()
    assert info.value.code == 1
    out, err = capsys.readouterr()
    assert "test: 2 ok, 1 failed, 1 skipped" in out and "FAILED b.png" in err


def test_report_ok_and_empty():
    ok = RunSummary(desc="x", processed=[Path("a.png")], seconds=0.5)
    ok.report_and_exit()  # no SystemExit
    assert ok.ok and "2.00 images/s" in ok.line()
    with pytest.raises(SystemExit):
        RunSummary(desc="x", skipped=[(Path("a.txt"), "not an image file")]).report_and_exit()


def test_keyboard_interrupt_is_not_swallowed(tmp_path):
    root = _folder_with_one_corrupt(tmp_path / "in")

    def fn(src: Path, rel: Path) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        process_files(collect_inputs(root), fn, desc="test")
