"""Shared fixtures: seeded RNG; the three layer paths (C++ kernels, XLA scan, plain while loop).

Once per run, before any test: the kernels must build and load (the suite tests them on every
machine; if they cannot, the run stops with one failure that quotes the compiler, instead of
hundreds of errors), and hypothesis runs a derandomized profile so every run draws the same
cases (``HYPOTHESIS_PROFILE=explore`` draws new ones, for hunting bugs locally).
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TF C++ info lines out of test logs

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402

settings.register_profile(
    "ci",
    derandomize=True,  # the same cases on every machine and every run
    database=None,  # nothing remembered between runs either
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("explore", derandomize=False, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

_KERNEL_STATUS = None


@pytest.hookimpl(tryfirst=True)
def pytest_sessionstart(session):
    """Builds and loads the kernels once; stops the run with the reason if they cannot."""
    global _KERNEL_STATUS
    from keras_spiking import _op_library, ops

    try:
        ops.load()
        path, record, _ = _op_library.locate(verbose=False)
    except ops.OpLibraryError as error:
        pytest.exit(
            "the custom-op kernels did not build or load on this machine "
            f"({_op_library.cpu_model()}), so their tests cannot run:\n{error}",
            returncode=1,
        )
    _KERNEL_STATUS = (
        f"keras_spiking kernels: target {record['target']} ({' '.join(record['flags'])}) "
        f"on {_op_library.cpu_model()}: {path}"
    )


def pytest_report_header(config):
    return _KERNEL_STATUS


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
