import ast
import json
import math
import os
import stat
from pathlib import Path

import numpy as np
import pytest
import torch

from robustsam_prior.core.checkpoint import save_checkpoint
from robustsam_prior.core.fileio import (
    STALE_TEMP_SECONDS,
    _umask_mode,
    atomic_path,
    atomic_write,
    clean_stale_temp_files,
    is_temp_file_name,
    json_dumps,
    jsonable,
    sha256_file,
    trim_jsonl,
    write_json,
)

REPO = Path(__file__).resolve().parents[3]


def test_atomic_write_replaces_only_on_success(tmp_path):
    target = tmp_path / "a.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_write(target, "w") as f:
            f.write("half")
            raise RuntimeError("boom")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]  # no temporary left behind
    with atomic_write(target, "w") as f:
        f.write("new")
    assert target.read_text() == "new"


def test_atomic_path_keeps_suffix_and_cleans_up(tmp_path):
    target = tmp_path / "sub" / "img.png"
    with atomic_path(target) as tmp:
        assert tmp.suffix == ".png" and tmp.parent == target.parent
        tmp.write_bytes(b"x")
    assert target.read_bytes() == b"x"
    with pytest.raises(ValueError), atomic_path(tmp_path / "b.png") as tmp:
        raise ValueError
    assert not (tmp_path / "b.png").exists() and not tmp.exists()


def test_written_files_follow_the_umask_not_mkstemp_0600(tmp_path):
    write_json(tmp_path / "m.json", {"a": 1})
    with atomic_path(tmp_path / "p.bin") as tmp:
        tmp.write_bytes(b"1")
    with atomic_path(tmp_path / "q.bin") as tmp:  # a writer that replaces the file with a private one
        tmp.unlink()
        tmp.write_bytes(b"2")
        os.chmod(tmp, 0o600)
    save_checkpoint(tmp_path / "w.safetensors", {"a": torch.zeros(2)}, {"format": "test"})
    (tmp_path / "plain").write_bytes(b"")  # what open() gives a new file under this umask
    expected = stat.S_IMODE(os.stat(tmp_path / "plain").st_mode)
    assert _umask_mode() == expected
    for name in ("m.json", "p.bin", "q.bin", "w.safetensors"):
        assert stat.S_IMODE(os.stat(tmp_path / name).st_mode) == expected


def test_atomic_write_rejects_append_mode(tmp_path):
    with pytest.raises(ValueError, match="modes"):
        with atomic_write(tmp_path / "x", "a"):
            pass

def test_confined_path_refuses_ways_out_of_the_folder(tmp_path):
    from robustsam_prior.core.fileio import confined_path, relative_path_problem

    assert confined_path(tmp_path, "a/b.json") == tmp_path / "a" / "b.json"
    assert confined_path(tmp_path, "./x..y.json") == tmp_path / "x..y.json"
    assert relative_path_problem("a/./b") is None
    for rel, why in (("", "it is empty"), ("/etc/x", "it is absolute"), ("../x", "its '..' leads out"),
                     ("a/../../x", "its '..' leads out"), ("a/..", "its '..' leads out")):
        with pytest.raises(ValueError, match=f"is not a path inside {tmp_path}: {why}"):
            confined_path(tmp_path, rel)
    outside = tmp_path.parent / f"{tmp_path.name}-outside"
    outside.mkdir()
    (tmp_path / "link").symlink_to(outside)
    with pytest.raises(ValueError, match=r"'link/x' is not a path inside .*: it leads to .*-outside/x through a symbolic"):
        confined_path(tmp_path, "link/x")
    (tmp_path / "inner").mkdir()
    (tmp_path / "back").symlink_to(tmp_path / "inner")  # a link that stays inside is fine
    assert confined_path(tmp_path, "back/x") == tmp_path / "back" / "x"


def test_a_failed_write_names_the_file_and_keeps_the_old_one(tmp_path, monkeypatch):
    import errno

    from robustsam_prior.core.fileio import WriteError

    dst = tmp_path / "manifest.json"
    dst.write_text("old\n")

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(WriteError) as e:
        write_json(dst, {"new": 1})
    assert e.value.errno == errno.ENOSPC
    assert str(e.value) == f"{dst}: could not write the file: No space left on device (any previous version is kept)"
    with pytest.raises(WriteError, match=r"x.png: could not write the file: No space left"):
        with atomic_path(tmp_path / "x.png") as tmp:
            tmp.write_bytes(b"png")
    monkeypatch.undo()
    assert dst.read_text() == "old\n" and sorted(p.name for p in tmp_path.iterdir()) == ["manifest.json"]
    # an error about another file raised inside the block is not relabelled
    with pytest.raises(FileNotFoundError) as e:
        with atomic_write(tmp_path / "a" / "b.txt", "w"):
            open(tmp_path / "elsewhere" / "missing.txt")
    assert not isinstance(e.value, WriteError)


def test_sha256_file(tmp_path):
    p = tmp_path / "f"
    p.write_bytes(b"abc")
    assert sha256_file(p) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def test_temporary_names_are_short_so_any_valid_name_can_be_written(tmp_path):
    from robustsam_prior.core.io import read_image, write_image

    seen = []
    for length in (242, 255):  # the file system's limit is 255 bytes; the temporary name must not add to it
        name = "a" * (length - 4) + ".png"
        with atomic_write(tmp_path / name, "wb") as f:
            seen += [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]
            f.write(b"x")
        assert (tmp_path / name).read_bytes() == b"x"
        with atomic_path(tmp_path / ("b" * (length - 4) + ".bin")) as tmp:
            seen.append(tmp.name)
            tmp.write_bytes(b"y")
        write_image(tmp_path / ("c" * (length - 4) + ".png"), np.zeros((2, 3, 3), np.float32))
        assert read_image(tmp_path / ("c" * (length - 4) + ".png")).pixels.shape == (2, 3, 3)
    assert len(seen) == 4 and all(is_temp_file_name(n) and len(n) < 48 for n in seen)
    assert seen[1].endswith(".tmp.bin")  # atomic_path keeps the suffix for format-sniffing writers
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_stale_temporary_files_of_killed_writers_are_cleaned_and_nothing_else(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "out"
    (out / "sub").mkdir(parents=True)
    killed = (
        "import os, signal, sys\n"
        "from robustsam_prior.core.fileio import atomic_write\n"
        "with atomic_write(sys.argv[1], 'wb') as f:\n"
        "    f.write(b'half')\n"
        "    f.flush()\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[3])}
    for target in (out / "a.png", out / "sub" / "b.png"):
        proc = subprocess.run([sys.executable, "-c", killed, str(target)], env=env)
        assert proc.returncode == -signal.SIGKILL
    left = sorted(p for p in out.rglob(".*") if p.is_file())
    assert len(left) == 2 and all(is_temp_file_name(p.name) for p in left)
    # files that are not ours (near misses of the pattern, from a pid that no process has), a live
    # writer's temporary file, and a long-untouched one whose pid is alive
    dead = 999_999_999
    users = [out / ".notes.tmp", out / ".a.png.abcd1234.tmp", out / f"rsr-tmp-{dead}-abcdefgh.tmp",
             out / f".rsr-tmp-{dead}-abcdefgh.tmp.txt.bak", out / f".rsr-tmp-{dead}-abcdefg.tmp",
             out / f".rsr-tmp-{dead}-abcdefgh.tmpx"]
    for p in users:
        p.write_bytes(b"keep")
    live = out / f".rsr-tmp-{os.getpid()}-abcdefgh.tmp.png"
    live.write_bytes(b"writing")
    old = out / f".rsr-tmp-{os.getpid()}-old12345.tmp"
    old.write_bytes(b"")
    os.utime(old, (time.time() - STALE_TEMP_SECONDS - 60,) * 2)
    removed = clean_stale_temp_files(out)
    assert sorted(removed) == sorted([*left, old])
    assert all(p.exists() for p in [*users, live])
    assert clean_stale_temp_files(tmp_path / "missing") == []


def _strict_load(text):
    def refuse(token):
        raise ValueError(f"not JSON: {token}")

    return json.loads(text, parse_constant=refuse)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf, np.float64("nan"), np.float32("-inf")])
def test_write_json_refuses_nan_and_infinity_and_keeps_the_old_file(tmp_path, bad):
    target = tmp_path / "scores.json"
    target.write_text('{"old": 1}\n')
    with pytest.raises(ValueError, match=r"scores\.json: masks\[1\]\.iou is (nan|inf|-inf), which JSON cannot hold"):
        write_json(target, {"masks": [{"iou": 0.5}, {"iou": bad}]})
    assert target.read_text() == '{"old": 1}\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scores.json"]  # no temporary left behind
    with pytest.raises(ValueError, match=r"^the value is nan"):
        json_dumps(math.nan)
    # what jsonable() spells out can be written, and read back by a strict reader
    write_json(target, jsonable({"masks": [{"iou": bad}], "n": np.int64(3), "t": (1, 2)}))
    got = _strict_load(target.read_text())
    assert got == {"masks": [{"iou": None if math.isnan(bad) else ("inf" if bad > 0 else "-inf")}], "n": 3, "t": [1, 2]}
    write_json(target, {"f": np.float32(0.5), "i": np.int64(2), "p": Path("a/b")})  # numpy numbers stay numbers
    assert _strict_load(target.read_text()) == {"f": 0.5, "i": 2, "p": "a/b"}


def test_trim_jsonl_rewrites_a_legacy_nan_log_as_strict_json(tmp_path):
    log = tmp_path / "log.jsonl"
    log.write_text('{"step": 1, "loss": 0.5}\n{"step": 2, "psnr": Infinity, "x": NaN}\n{"step": 3}\n{"ste')
    kept = trim_jsonl(log, "step", 2)
    assert [r["step"] for r in kept] == [1, 2]
    assert [_strict_load(line) for line in log.read_text().splitlines()] == [
        {"step": 1, "loss": 0.5}, {"step": 2, "psnr": "inf", "x": None}
    ]


def _json_dump_calls():
    """Every ``json.dump``/``json.dumps`` call in the project's source (tests aside)."""
    for folder in ("robustsam_prior", "restore", "eval", "pipelines", "scripts", "benchmarks", "examples"):
        for path in sorted((REPO / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if (
                    isinstance(node, ast.Call)
                    and isinstance(node.func, ast.Attribute)
                    and node.func.attr in ("dump", "dumps")
                    and isinstance(node.func.value, ast.Name)
                    and node.func.value.id == "json"
                ):
                    yield path.relative_to(REPO), node


def test_every_json_writer_refuses_nan():
    """Python's json writes NaN/Infinity unless told not to; strict readers then reject the file.

    Writers go through ``fileio.json_dumps``/``write_json`` or pass ``allow_nan=False``. The one
    exception: a training run's resume fingerprint, a comparison key kept inside its state file (a
    config may hold ``.inf``), which is never read as a JSON document.
    """
    calls = list(_json_dump_calls())
    assert len(calls) > 5  # the scan sees the project
    lax = []
    for path, node in calls:
        strict = any(
            k.arg == "allow_nan" and isinstance(k.value, ast.Constant) and k.value.value is False for k in node.keywords
        )
        fingerprint = (
            node.args
            and isinstance(node.args[0], ast.Call)
            and isinstance(node.args[0].func, ast.Name)
            and node.args[0].func.id == "fingerprint"
        )
        if not (strict or fingerprint):
            lax.append(f"{path}:{node.lineno}")
    assert not lax, f"json.dump(s) without allow_nan=False: {', '.join(lax)}"
