"""One device resolution: the names it accepts, what ``auto`` becomes, and the error for a device the
machine lacks (checked here against a machine without CUDA and one with a single GPU, both simulated)."""

from __future__ import annotations

import pytest
import torch

from robustsam_prior.core.devices import is_device_name, local_device, resolve_device


@pytest.fixture
def no_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)


@pytest.fixture
def one_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)


def test_names():
    for name in ("auto", "cpu", "cuda", "cuda:0", "cuda:12"):
        assert is_device_name(name), name
    for name in ("", "gpu", "gpu0", "CPU", "cuda:", "cuda:x", "cuda:0 ", "mps", "tpu", "cpu:0"):
        assert not is_device_name(name), name
        with pytest.raises(ValueError, match=rf"^train.device must be one of auto, cpu, cuda, cuda:N, got {name!r}$"):
            resolve_device(name, what="train.device")


def test_cpu_and_auto_without_cuda(no_cuda):
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device(None) == torch.device("cpu")
    assert resolve_device() == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    assert local_device(torch.device("cpu")) == torch.device("cpu")


@pytest.mark.parametrize("name", ["cuda", "cuda:0", "cuda:1"])
def test_cuda_without_cuda_is_an_error_naming_the_setting(no_cuda, name):
    with pytest.raises(ValueError, match=rf"^--device: '{name}' was asked for but CUDA is not available "
                                         r"\(torch reports no CUDA GPU is available on this machine\); use cpu or auto$"):
        resolve_device(name, what="--device")
    with pytest.raises(ValueError, match="was asked for but CUDA is not available"):
        resolve_device(torch.device(name))


def test_one_gpu(one_gpu):
    assert resolve_device("auto") == torch.device("cuda")
    assert resolve_device("cuda") == torch.device("cuda")
    assert resolve_device("cuda:0") == torch.device("cuda", 0)
    with pytest.raises(ValueError, match=r"^device: 'cuda:1' was asked for but this machine has 1 CUDA device "
                                         r"\(cuda:0 .. cuda:0\)$"):
        resolve_device("cuda:1")


def test_every_resolver_of_device_names_is_this_one():
    """The commands, pipelines, priors and trainers resolve device names only through core.devices: no
    other module decides what ``auto`` is."""
    import ast
    from pathlib import Path

    repo = Path(__file__).resolve().parents[3]
    offenders = []
    for folder in ("robustsam_prior", "restore", "eval", "pipelines"):
        for path in sorted((repo / folder).rglob("*.py")):
            if path.name == "devices.py":
                continue
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                # `"cuda" if torch.cuda.is_available() else "cpu"`: an "auto" resolved on the spot
                if isinstance(node, ast.IfExp) and "is_available" in ast.unparse(node.test):
                    offenders.append(f"{path.relative_to(repo)}:{node.lineno}")
    assert not offenders, offenders
