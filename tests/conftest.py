"""Shared test settings: a fixed, small thread count so timings and results do not depend on the host."""

import os

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "2")


@pytest.fixture(autouse=True)
def _seed_everything():
    """Every test starts from the same global RNG state (tests that need randomness still pass seeds)."""
    import numpy as np
    import torch

    torch.manual_seed(0)
    np.random.seed(0)  # noqa: NPY002 -- libraries (scikit-image, lpips) may draw from the legacy global RNG
    yield
