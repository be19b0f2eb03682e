"""Shared test settings: a fixed, small thread count so timings and results do not depend on the host."""

import os
from pathlib import Path

import pytest

# Under pytest-xdist (README's test command runs two workers) each worker computes on one thread, so
# the workers share the cores instead of oversubscribing them; a plain `pytest` keeps two threads.
os.environ.setdefault("OMP_NUM_THREADS", "1" if os.environ.get("PYTEST_XDIST_WORKER") else "2")

ROBUSTSAM_REFERENCE_DIR = Path(__file__).resolve().parent / "data" / "robustsam"


@pytest.fixture(scope="session")
def robustsam_reference_dir() -> Path:
    """The official RobustSAM reference vectors (``tests/data/robustsam``, see its README), or the folder
    ``$ROBUSTSAM_REFERENCE_DIR`` names; a folder named there that does not exist fails the test."""
    env = os.environ.get("ROBUSTSAM_REFERENCE_DIR")
    path = Path(env) if env else ROBUSTSAM_REFERENCE_DIR
    if not path.is_dir():
        pytest.fail(f"RobustSAM reference folder {path} does not exist")
    return path


@pytest.fixture(autouse=True)
def _offline_hub(monkeypatch, tmp_path_factory):
    """No test reaches the Hugging Face Hub or a user's Hub cache: ``HF_HUB_OFFLINE=1`` and an empty
    ``HF_HUB_CACHE`` (``robustsam_prior.hub`` reads both at call time)."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path_factory.mktemp("hub-cache")))


@pytest.fixture(autouse=True)
def _seed_everything():
    """Every test starts from the same global RNG state (tests that need randomness still pass seeds)."""
    import numpy as np
    import torch

    torch.manual_seed(0)
    np.random.seed(0)  # noqa: NPY002 -- libraries (scikit-image, lpips) may draw from the legacy global RNG
    yield


@pytest.fixture(autouse=True)
def _restore_torch_settings():
    """Process-wide torch settings (thread count, deterministic algorithms) are put back after each test:
    a test that builds a restoration ``Trainer`` by hand takes its recipe's settings, and under xdist
    the next test in that worker is a different one each run. The training engine's own guard does it."""
    from robustsam_prior.training.engine import kept_torch_settings

    with kept_torch_settings():
        yield


def randomize_like_reference(module, seed: int):
    """Fill every float parameter and buffer of ``module`` with seeded random values, in place.

    The same recipe as the official reference vectors that ``tests/robustsam_prior/test_modeling.py``
    compares against: BatchNorm running variances in [0.5, 1.5), weights ~ N(0, 0.5/fan),
    vectors ~ N(0, 0.1). Nothing stays at an identity or zero initialisation that could hide a mistake.
    """
    import torch

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for k, v in module.state_dict().items():
            if k.endswith("running_var"):
                v.copy_(torch.rand(v.shape, generator=g) + 0.5)
            elif v.dtype.is_floating_point:
                v.copy_(torch.randn(v.shape, generator=g) * (0.5 / max(1, v.shape[-1]) ** 0.5 if v.dim() > 1 else 0.1))
    return module


@pytest.fixture(scope="session")
def randomize_weights():
    """The :func:`randomize_like_reference` function, for module-scoped model fixtures."""
    return randomize_like_reference


def _unblock_readers_of(fifo, stop) -> None:
    """If a reader ever opens ``fifo``, feed it garbage and close it: a regression then fails, not hangs."""
    import errno

    while not stop.wait(0.2):
        try:
            fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        except OSError as e:
            if e.errno == errno.ENXIO:  # no reader: good
                continue
            return
        os.write(fd, b"not an image")
        os.close(fd)


@pytest.fixture
def make_fifo():
    """``make_fifo(path)``: create a FIFO whose readers are unblocked by a watchdog thread (tests of code
    that must not open FIFOs end with a failure instead of hanging when it does)."""
    import threading

    stop = threading.Event()
    guards = []

    def make(path):
        os.mkfifo(path)
        guard = threading.Thread(target=_unblock_readers_of, args=(path, stop), daemon=True)
        guard.start()
        guards.append(guard)
        return path

    yield make
    stop.set()
    for guard in guards:
        guard.join()


@pytest.fixture(autouse=True)
def _default_pixel_limit():
    """A test that runs a command with --max-pixels (a process-wide setting) leaves the default behind."""
    yield
    from robustsam_prior.core.io import set_max_pixels

    set_max_pixels(None)


@pytest.fixture
def fast_block_calls(monkeypatch):
    """How many times the fast encoder's block forward ran since the test started (``["n"]``): tells the
    fast path from the stock one where both give the same outputs."""
    from robustsam_prior import fast_encoder

    count = {"n": 0}
    real = fast_encoder.fast_block_forward

    def spy(*args, **kwargs):
        count["n"] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(fast_encoder, "fast_block_forward", spy)
    return count
