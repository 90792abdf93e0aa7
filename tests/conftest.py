"""Shared fixtures: seeded RNG, both scan paths (XLA-compiled and plain while loop)."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TF C++ info lines out of test logs

import numpy as np  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


@pytest.fixture(params=[True, False], ids=["xla_scan", "while_scan"])
def jit_compile(request):
    """Runs a test on both implementations of the time scan."""
    return request.param
