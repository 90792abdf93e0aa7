"""Shared fixtures: seeded RNG; the three layer paths (C++ kernels, XLA scan, plain while loop)."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TF C++ info lines out of test logs

import numpy as np  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


@pytest.fixture(
    params=[("custom_ops", True), ("xla_scan", True), ("while_scan", False)],
    ids=lambda param: param[0],
)
def jit_compile(request):
    """Runs a test on every path of the layers: the C++ kernels, and the pure-TF scans
    XLA-compiled and as a plain while loop. Yields the layers' ``jit_compile`` value.

    The kernels run in eager and training calls (see ``keras_spiking.ops``); on the pure-TF
    paths they are switched off globally.
    """
    from keras_spiking import ops

    path, jit = request.param
    with ops.use_custom_ops(path == "custom_ops"):
        yield jit
