"""Checkpoint resolution and the resumable download helper, against a local HTTP server on 127.0.0.1."""

from __future__ import annotations

import hashlib
import http.server
import threading
from pathlib import Path

import numpy as np
import pytest

from robustsam_prior import hub
from robustsam_prior.hub import (
    CheckpointNotFoundError,
    DownloadError,
    checkpoint_url,
    download,
    resolve_checkpoint,
)

PAYLOAD = np.random.default_rng(7).integers(0, 256, size=300_000, dtype=np.uint8).tobytes()
SHA = hashlib.sha256(PAYLOAD).hexdigest()


class _Server:
    """A threaded HTTP server serving PAYLOAD at /file.bin, with Range support and fault injection."""

    def __init__(self) -> None:
        self.requests: list[dict] = []  # one dict per GET: the Range header sent
        self.truncate_next = 0  # this many next responses are cut after half of their body
        self.honour_range = True
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # keep pytest output clean
                pass

            def do_GET(self):
                if self.path != "/file.bin":
                    self.send_error(404, "no such file")
                    return
                rng = self.headers.get("Range")
                server.requests.append({"range": rng})
                start = 0
                if rng and server.honour_range:
                    start = int(rng.removeprefix("bytes=").split("-")[0])
                    if start >= len(PAYLOAD):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(PAYLOAD)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                body = PAYLOAD[start:]
                self.send_response(206 if start else 200)
                if start:
                    self.send_header("Content-Range", f"bytes {start}-{len(PAYLOAD) - 1}/{len(PAYLOAD)}")
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Connection", "close")
                self.end_headers()
                if server.truncate_next > 0:
                    server.truncate_next -= 1
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(body)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/file.bin"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = _Server()
    yield s
    s.close()


def test_download_plain(server, tmp_path):
    dest = download(server.url, tmp_path / "a" / "w.pth", sha256=SHA, size=len(PAYLOAD), progress=False)
    assert dest.read_bytes() == PAYLOAD
    assert not (tmp_path / "a" / "w.pth.part").exists()
    assert server.requests == [{"range": None}]
    # a second call finds the verified file and does not download again
    download(server.url, dest, sha256=SHA, progress=False)
    assert len(server.requests) == 1


def test_interrupted_download_resumes_with_range(server, tmp_path):
    server.truncate_next = 1
    dest = download(server.url, tmp_path / "w.pth", sha256=SHA, size=len(PAYLOAD), progress=False)
    assert dest.read_bytes() == PAYLOAD
    assert len(server.requests) == 2
    assert server.requests[1]["range"] == f"bytes={len(PAYLOAD) // 2}-"


def test_partial_file_from_an_earlier_run_is_resumed(server, tmp_path):
    dest = tmp_path / "w.pth"
    server.truncate_next = 1
    with pytest.raises(DownloadError, match="run again to resume"):
        download(server.url, dest, sha256=SHA, retries=0, progress=False)
    part = tmp_path / "w.pth.part"
    assert part.stat().st_size == len(PAYLOAD) // 2 and not dest.exists()
    download(server.url, dest, sha256=SHA, progress=False)
    assert dest.read_bytes() == PAYLOAD
    assert server.requests[-1]["range"] == f"bytes={len(PAYLOAD) // 2}-"


def test_server_ignoring_range_restarts_from_zero(server, tmp_path):
    (tmp_path / "w.pth.part").write_bytes(PAYLOAD[:1000])
    server.honour_range = False
    dest = download(server.url, tmp_path / "w.pth", sha256=SHA, progress=False)
    assert dest.read_bytes() == PAYLOAD


def test_complete_part_file_gets_416_and_is_finished(server, tmp_path):
    (tmp_path / "w.pth.part").write_bytes(PAYLOAD)
    dest = download(server.url, tmp_path / "w.pth", sha256=SHA, progress=False)
    assert dest.read_bytes() == PAYLOAD


def test_checksum_mismatch_is_an_error_and_leaves_no_file(server, tmp_path):
    dest = tmp_path / "w.pth"
    with pytest.raises(DownloadError, match="sha256 mismatch"):
        download(server.url, dest, sha256="0" * 64, progress=False)
    assert not dest.exists() and not (tmp_path / "w.pth.part").exists()


def test_size_mismatch_is_an_error_and_leaves_no_file(server, tmp_path):
    dest = tmp_path / "w.pth"
    with pytest.raises(DownloadError, match="expected 12345"):
        download(server.url, dest, size=12345, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_http_error_and_bad_existing_file(server, tmp_path):
    with pytest.raises(DownloadError, match="HTTP 404"):
        download(server.url.replace("file.bin", "missing.bin"), tmp_path / "x", progress=False)
    existing = tmp_path / "old.pth"
    existing.write_bytes(b"not the file")
    with pytest.raises(DownloadError, match="existing file"):
        download(server.url, existing, sha256=SHA, progress=False)
    assert existing.read_bytes() == b"not the file"


# ------------------------------------------------------------------ resolution


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    monkeypatch.delenv(hub.ENV_CHECKPOINT, raising=False)
    monkeypatch.setenv(hub.ENV_CACHE, str(tmp_path / "cache"))
    return tmp_path


def test_resolve_explicit_path(clean_env, monkeypatch):
    f = clean_env / "mine.pth"
    f.write_bytes(b"x")
    monkeypatch.setenv(hub.ENV_CHECKPOINT, str(clean_env / "other.pth"))  # explicit path wins
    assert resolve_checkpoint(f) == f
    assert resolve_checkpoint(str(f)) == f
    with pytest.raises(CheckpointNotFoundError, match="nope.pth: checkpoint file not found"):
        resolve_checkpoint(clean_env / "nope.pth")
    with pytest.raises(CheckpointNotFoundError, match="is a folder"):
        resolve_checkpoint(clean_env)


def test_resolve_env_then_cache_folder(clean_env, monkeypatch):
    cached = clean_env / "cache" / "checkpoints" / "robustsam_checkpoint_l.pth"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"x")
    assert resolve_checkpoint("vit_l") == cached
    assert resolve_checkpoint("l") == cached
    env_file = clean_env / "env.pth"
    env_file.write_bytes(b"y")
    monkeypatch.setenv(hub.ENV_CHECKPOINT, str(env_file))
    assert resolve_checkpoint("vit_l") == env_file
    assert resolve_checkpoint(None) == env_file
    monkeypatch.setenv(hub.ENV_CHECKPOINT, str(clean_env / "gone.pth"))
    with pytest.raises(CheckpointNotFoundError, match=r"gone.pth.*ROBUSTSAM_CHECKPOINT"):
        resolve_checkpoint("vit_l")


def test_missing_checkpoint_names_file_and_url(clean_env):
    with pytest.raises(CheckpointNotFoundError) as info:
        resolve_checkpoint("vit_h")
    msg = str(info.value)
    assert "robustsam_checkpoint_h.pth" in msg
    assert "https://huggingface.co/robustsam/robustsam/resolve/main/model_checkpoint/robustsam_checkpoint_h.pth" in msg
    assert str(Path(clean_env / "cache" / "checkpoints")) in msg
    with pytest.raises(CheckpointNotFoundError, match="robustsam_checkpoint_b.pth"):
        resolve_checkpoint()  # default variant
    with pytest.raises(CheckpointNotFoundError, match=r"custom RobustSAM config \(dict\) needs its checkpoint"):
        resolve_checkpoint({"img_size": 256})


def test_dict_config_uses_the_environment(clean_env, monkeypatch):
    env_file = clean_env / "tiny.safetensors"
    env_file.write_bytes(b"y")
    monkeypatch.setenv(hub.ENV_CHECKPOINT, str(env_file))
    assert resolve_checkpoint({"img_size": 256}) == env_file


def test_checkpoint_url_and_unknown_variant():
    assert checkpoint_url("b").endswith("/model_checkpoint/robustsam_checkpoint_b.pth")
    with pytest.raises(ValueError, match="unknown RobustSAM variant"):
        checkpoint_url("vit_x")
    with pytest.raises(ValueError, match="unknown RobustSAM variant"):
        hub.download_checkpoint("vit_x")


def test_download_checkpoint_targets_cache_folder(clean_env, monkeypatch):
    seen = {}

    def fake_download(url, dest, sha256=None, size=None, **kw):
        seen.update(url=url, dest=dest)
        return dest

    monkeypatch.setattr(hub, "download", fake_download)
    hub.download_checkpoint("vit_l")
    assert seen["url"] == hub.HF_BASE + "/robustsam_checkpoint_l.pth"
    assert seen["dest"] == clean_env / "cache" / "checkpoints" / "robustsam_checkpoint_l.pth"
