"""Checkpoint resolution: paths, ``$ROBUSTSAM_CHECKPOINT``, and Hub names through ``huggingface_hub``
against a local Hub cache laid out as ``huggingface_hub`` writes it (offline), a stand-in download, the
sha256 check, and the errors that say where to put a missing file."""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

import pytest

from robustsam_prior import hub
from robustsam_prior.hub import CheckpointNotFoundError, ChecksumError, resolve_checkpoint

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def fill_hub_cache(cache: Path, variant: str, content: bytes, *, blob_sha: str | None = None) -> Path:
    """The Hub cache after ``hf_hub_download(HUB_REPO, HUB_FILES[variant])``: the content in
    ``blobs/<sha256>``, ``refs/main`` naming the commit, and the snapshot entry as a relative link to the
    blob. ``blob_sha`` names the blob otherwise (a corrupt cache). Returns the snapshot entry."""
    repo = cache / "models--robustsam--robustsam"
    sha = blob_sha or hashlib.sha256(content).hexdigest()
    (repo / "blobs").mkdir(parents=True, exist_ok=True)
    (repo / "blobs" / sha).write_bytes(content)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(COMMIT)
    entry = repo / "snapshots" / COMMIT / hub.HUB_FILES[variant]
    entry.parent.mkdir(parents=True, exist_ok=True)
    entry.symlink_to(os.path.relpath(repo / "blobs" / sha, entry.parent))
    return entry


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    """No ``$ROBUSTSAM_CHECKPOINT`` and no packaged weights (the Hub fallback of a package without them);
    the conftest already sets ``HF_HUB_OFFLINE=1`` and an empty cache."""
    monkeypatch.delenv(hub.ENV_CHECKPOINT, raising=False)
    monkeypatch.setattr(hub, "PACKAGED_DIR", tmp_path / "packaged")
    cache = tmp_path / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    return cache


def test_resolve_explicit_path(clean_env, tmp_path, monkeypatch):
    f = tmp_path / "mine.pth"
    f.write_bytes(b"x")
    monkeypatch.setenv(hub.ENV_CHECKPOINT, str(tmp_path / "other.pth"))  # an explicit path wins
    assert resolve_checkpoint(f) == f
    assert resolve_checkpoint(str(f)) == f
    with pytest.raises(CheckpointNotFoundError, match="nope.pth: checkpoint file not found"):
        resolve_checkpoint(tmp_path / "nope.pth")
    with pytest.raises(CheckpointNotFoundError, match="is a folder"):
        resolve_checkpoint(tmp_path)


def test_names_and_urls():
    for name, variant in [("robustsam-vit-b", "vit_b"), ("ROBUSTSAM-VIT-L", "vit_l"), ("h", "vit_h"),
                          ("base", "vit_b"), ("vit_l", "vit_l")]:
        assert hub.normalize_variant(name) == variant
    assert hub.normalize_variant("robustsam-vit-x") is None
    assert hub.hub_name("vit_h") == "robustsam-vit-h"
    assert hub.checkpoint_url("robustsam-vit-b") == (
        "https://huggingface.co/robustsam/robustsam/resolve/main/model_checkpoint/robustsam_checkpoint_b.pth")
    with pytest.raises(ValueError, match="unknown RobustSAM variant"):
        hub.checkpoint_url("vit_x")
    with pytest.raises(ValueError, match="unknown RobustSAM variant"):
        hub.hub_checkpoint("vit_x")


def test_offline_file_from_the_hub_cache(clean_env):
    pytest.importorskip("huggingface_hub")
    content = b"the official vit_l weights"
    entry = fill_hub_cache(clean_env, "vit_l", content)
    for name in ("robustsam-vit-l", "vit_l", "l"):
        path = resolve_checkpoint(name)
        assert path == entry and path.read_bytes() == content


def test_sha256_mismatch_is_an_error_naming_both_digests(clean_env):
    pytest.importorskip("huggingface_hub")
    listed = "ab" * 32
    fill_hub_cache(clean_env, "vit_b", b"a truncated download", blob_sha=listed)
    with pytest.raises(ChecksumError) as info:
        resolve_checkpoint("robustsam-vit-b")
    msg = str(info.value)
    actual = hashlib.sha256(b"a truncated download").hexdigest()
    assert "robustsam-vit-b: sha256 mismatch" in msg and actual in msg and listed in msg
    assert str(clean_env / "models--robustsam--robustsam" / "blobs" / listed) in msg  # the blob to delete


def test_offline_missing_file_says_what_to_place_and_where(clean_env):
    pytest.importorskip("huggingface_hub")
    with pytest.raises(CheckpointNotFoundError) as info:
        resolve_checkpoint("robustsam-vit-h")
    msg = str(info.value)
    assert msg.startswith("robustsam-vit-h: it is not in the Hub cache and HF_HUB_OFFLINE is set")
    assert "model_checkpoint/robustsam_checkpoint_h.pth" in msg and "robustsam/robustsam" in msg
    assert hub.checkpoint_url("vit_h") in msg
    assert str(clean_env) in msg and str(clean_env / "models--robustsam--robustsam") in msg
    assert "--prior-checkpoint PATH" in msg
    # nothing given and no $ROBUSTSAM_CHECKPOINT: the default variant, vit_b
    with pytest.raises(CheckpointNotFoundError, match="(?s)robustsam-vit-b: .*robustsam_checkpoint_b.pth"):
        resolve_checkpoint()


def test_online_download_goes_through_hf_hub_download(clean_env, monkeypatch):
    huggingface_hub = pytest.importorskip("huggingface_hub")
    monkeypatch.delenv("HF_HUB_OFFLINE")
    calls = []

    def fake_download(repo_id, filename, **kwargs):  # what the real one leaves behind, without a network
        calls.append({"repo_id": repo_id, "filename": filename, **kwargs})
        return str(fill_hub_cache(Path(kwargs["cache_dir"]), "vit_b", b"downloaded weights"))

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    path = resolve_checkpoint("robustsam-vit-b")
    assert path.read_bytes() == b"downloaded weights"
    assert calls == [{"repo_id": "robustsam/robustsam", "filename": "model_checkpoint/robustsam_checkpoint_b.pth",
                      "revision": "main", "cache_dir": str(clean_env), "local_files_only": False}]

    def failing(repo_id, filename, **kwargs):
        raise ConnectionError("Name or service not known")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", failing)
    with pytest.raises(CheckpointNotFoundError) as info:
        resolve_checkpoint("robustsam-vit-l")
    msg = str(info.value)
    assert "the download failed (ConnectionError: Name or service not known)" in msg
    assert "robustsam_checkpoint_l.pth" in msg and "--prior-checkpoint PATH" in msg


def test_without_huggingface_hub_the_error_names_the_extra(clean_env, monkeypatch):
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # import fails as if not installed
    with pytest.raises(CheckpointNotFoundError) as info:
        resolve_checkpoint("robustsam-vit-b")
    msg = str(info.value)
    assert "huggingface_hub is not installed" in msg and "robustsam-restore[hub]" in msg
    assert hub.checkpoint_url("vit_b") in msg and "--prior-checkpoint PATH" in msg


def test_environment_variable_and_dict_configs(clean_env, tmp_path, monkeypatch):
    pytest.importorskip("huggingface_hub")
    env_file = tmp_path / "env.pth"
    env_file.write_bytes(b"y")
    monkeypatch.setenv(hub.ENV_CHECKPOINT, str(env_file))
    assert resolve_checkpoint(None) == env_file
    assert resolve_checkpoint({"img_size": 256}) == env_file
    entry = fill_hub_cache(clean_env, "vit_l", b"z")
    assert resolve_checkpoint("robustsam-vit-l") == entry  # an explicit Hub name beats the environment
    monkeypatch.setenv(hub.ENV_CHECKPOINT, str(tmp_path / "gone.pth"))
    with pytest.raises(CheckpointNotFoundError, match=r"gone.pth.*ROBUSTSAM_CHECKPOINT"):
        resolve_checkpoint()
    monkeypatch.delenv(hub.ENV_CHECKPOINT)
    with pytest.raises(CheckpointNotFoundError, match=r"custom RobustSAM config \(dict\) needs its checkpoint"):
        resolve_checkpoint({"img_size": 256})


def test_packaged_weights_are_the_default_and_the_trained_here_name(clean_env, tmp_path, monkeypatch):
    """Nothing given: ``$ROBUSTSAM_CHECKPOINT``, else the packaged robustsam-tiny, else robustsam-vit-b. The
    name ``robustsam-tiny`` is the packaged file even where ``$ROBUSTSAM_CHECKPOINT`` is set."""
    with pytest.raises(CheckpointNotFoundError, match="robustsam-tiny has no published checkpoint"):
        resolve_checkpoint("robustsam-tiny")
    packaged = tmp_path / "packaged" / "robustsam-tiny.safetensors"
    packaged.parent.mkdir()
    packaged.write_bytes(b"w")
    assert resolve_checkpoint() == packaged
    assert resolve_checkpoint("robustsam-tiny") == packaged
    env_file = tmp_path / "env.pth"
    env_file.write_bytes(b"e")
    monkeypatch.setenv(hub.ENV_CHECKPOINT, str(env_file))
    assert resolve_checkpoint() == env_file
    assert resolve_checkpoint("robustsam-tiny") == packaged


def test_segment_command_takes_a_hub_name(clean_env, tmp_path, randomize_weights):
    """``segment --prior-checkpoint robustsam-vit-b`` loads the file of the Hub cache; offline without it,
    the command fails with the message that names the file and where to put it."""
    pytest.importorskip("huggingface_hub")
    import numpy as np
    import torch
    from click.testing import CliRunner

    from pipelines.cli import main
    from robustsam_prior.core.io import write_image
    from robustsam_prior.modeling.build import build_robustsam_model

    tiny = dict(img_size=64, patch=8, enc_dim=32, enc_depth=2, enc_heads=2, global_attn=[1], window=4,
                prompt_dim=64, dec_depth=1, dec_mlp=64, dec_heads=2, iou_hidden=32, mask_in_chans=8)
    model = randomize_weights(build_robustsam_model(tiny), 3)
    raw = tmp_path / "raw.pth"  # an official-style file: a plain state dict, no metadata
    torch.save(model.state_dict(), raw)
    image = tmp_path / "img.png"
    write_image(image, np.full((24, 32, 3), 0.5, np.float32))
    config = tmp_path / "tiny.json"
    config.write_text(json.dumps(tiny))
    args = ["segment", str(image), str(tmp_path / "out"), "--points", "10,10,1", "--config", str(config),
            "--prior-checkpoint", "robustsam-vit-b", "--json"]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 1 and "robustsam-vit-b: it is not in the Hub cache" in res.output
    assert "--prior-checkpoint PATH" in res.output
    fill_hub_cache(clean_env, "vit_b", raw.read_bytes())
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    scores = json.loads((tmp_path / "out" / "scores.json").read_text())
    assert scores["checkpoint"]["sha256"] == hashlib.sha256(raw.read_bytes()).hexdigest()
    assert "models--robustsam--robustsam/snapshots" in scores["checkpoint"]["path"]
