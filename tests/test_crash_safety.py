"""No argument may kill the process: each call that used to abort or segfault now raises.

Every case runs in a child process (a crash would otherwise take pytest down with it) under an
8 GiB address-space limit (RLIMIT_AS), so that an allocation the arguments make too large fails
at once instead of pushing the machine into swap or the OOM killer. The child reports each case
as a JSON line; the parent checks that the child exited normally (a negative return code is the
signal that killed it) and that each case raised the expected exception.

Two layers of defence are covered separately:

* the Python layers, rules and op wrappers refuse out-of-range arguments with a ValueError that
  names the argument, the value and the limit, both with the C++ kernels and on the pure-TF
  path (``use_custom_ops=True`` / ``False``);
* the compiled ops themselves, called directly with the same arguments (``ops.load()``), return
  an error status (``tf.errors.InvalidArgumentError`` for attributes and shapes out of range,
  ``ResourceExhaustedError`` for allocations that fail) instead of aborting.

Before this file: ``max_spikes=2**60`` aborted in the kernel's TensorShape check (SIGABRT),
``steps=2**61`` (and ``2**32`` under a 16 GB limit) segfaulted on a ``std::vector`` sized by
``steps``, and the "sequence" readout with ``steps=2**62`` aborted like the first.
"""

import json
import os
import subprocess
import sys

import pytest

ADDRESS_LIMIT = 8 * 2**30
TIMEOUT = 240  # seconds per child; each takes about 10 s on a quiet machine (mostly importing TF)

_CHILD = r"""
import json, os, resource, sys
limit, mode = int(sys.argv[2]), sys.argv[3]
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
scope = {}
if mode != "bare":
    import types
    import numpy as np
    import tensorflow as tf
    import keras_spiking as ks
    from keras_spiking import eventprop as ep, ops

    t = np.full((2, 3, 1), 0.002, "float32")
    k = np.ones((3, 8), "float32")
    kin = tf.constant([20e-3, 5e-3, 1.0, 1e-3], tf.float64)
    no_rec = tf.zeros([0, 0])
    scope = dict(np=np, tf=tf, ks=ks, ep=ep, ops=ops, t=t, k=k, kin=kin, no_rec=no_rec,
                 types=types)
    if mode == "raw":
        scope["lib"] = ops.load()

for name, code in json.loads(sys.argv[1]):
    print(json.dumps({"start": name}), flush=True)
    try:
        exec(code, dict(scope))
    except Exception as error:
        result = {"case": name, "error": type(error).__name__, "message": str(error)}
    else:
        result = {"case": name, "error": None, "message": ""}
    print(json.dumps(result), flush=True)
"""


def _run_child(cases: dict, mode: str = "python") -> dict:
    """Runs ``{name: (code, ...)}`` in one child; returns ``{name: result}``."""
    process = subprocess.run(
        [
            sys.executable,
            "-c",
            _CHILD,
            json.dumps([(name, case[0]) for name, case in cases.items()]),
            str(ADDRESS_LIMIT),
            mode,
        ],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        # the kernels are CPU-only; a GPU runtime would reserve more address space than the limit
        env={**os.environ, "CUDA_VISIBLE_DEVICES": ""},
    )
    lines = [json.loads(line) for line in process.stdout.splitlines() if line.startswith("{")]
    started = [line["start"] for line in lines if "start" in line]
    if process.returncode != 0:
        how = (
            f"was killed by signal {-process.returncode}"
            if process.returncode < 0
            else f"exited with status {process.returncode}"
        )
        pytest.fail(
            f"the child process {how} while running case {started[-1] if started else None!r} "
            f"(a crash instead of a Python exception); stderr tail:\n{process.stderr[-3000:]}"
        )
    return {line["case"]: line for line in lines if "case" in line}


def _check(cases: dict, results: dict) -> None:
    assert set(results) == set(cases), f"cases without a result: {set(cases) - set(results)}"
    for name, (_, error, pattern) in cases.items():
        got = results[name]
        assert got["error"] == error, (name, got)
        assert pattern.lower() in got["message"].lower(), (name, pattern, got["message"])


# name: (code, expected exception type, a piece of its message)
VALIDATED = {
    "EventPropCubaLIF max_spikes=2**60": (
        "ks.layers.EventPropCubaLIF(8, steps=10, max_spikes=2**60, use_custom_ops=USE)(t)",
        "ValueError",
        "`max_spikes` must be an integer <= 2147483647 (its upper limit), got 1152921504606846976",
    ),
    "EventPropCubaLIF steps=2**61": (
        "ks.layers.EventPropCubaLIF(4, steps=2**61, use_custom_ops=USE)(t)",
        "ValueError",
        "`steps` must be an integer <= 2147483647 (its upper limit), got 2305843009213693952",
    ),
    "EventPropCubaLIF steps=2**32": (
        "ks.layers.EventPropCubaLIF(4, steps=2**32, use_custom_ops=USE)(t)",
        "ValueError",
        "`steps` must be an integer <= 2147483647",
    ),
    "EventPropLI integral steps=2**61": (
        "ks.layers.EventPropLI(4, steps=2**61, readout='integral', use_custom_ops=USE)(t)",
        "ValueError",
        "EventPropLI: `steps` must be an integer <= 2147483647",
    ),
    "EventPropLI sequence steps=2**32": (
        "ks.layers.EventPropLI(4, steps=2**32, readout='sequence', use_custom_ops=USE)(t)",
        "ValueError",
        "`steps` must be an integer <= 2147483647",
    ),
    # legal at construction (units x max_spikes = 2**39), too large with the batch of 4
    "EventPropCubaLIF buffers at the call": (
        "ks.layers.EventPropCubaLIF(2**10, steps=10, max_spikes=2**29, use_custom_ops=USE)"
        "(np.full((4, 3, 1), 0.002, 'float32'))",
        "ValueError",
        "[batch=4, units=1024, max_spikes=536870912] hold 2199023255552 elements, more than the "
        "limit of 1099511627776",
    ),
    "EventPropLI sequence output at the call": (
        "ks.layers.EventPropLI(2**10, steps=2**29, readout='sequence', use_custom_ops=USE)"
        "(np.full((4, 3, 1), 0.002, 'float32'))",
        "ValueError",
        '`steps`=536870912 makes the "sequence" readout [batch=4, steps=536870912, units=1024]',
    ),
    "CubaLIF(gradient=EventProp(max_spikes=2**60))": (
        "ks.layers.CubaLIF(4, reset='zero', gradient=ep.EventProp(max_spikes=2**60), "
        "use_custom_ops=USE)",
        "ValueError",
        "`max_spikes` must be an integer <= 2147483647",
    ),
    "spiking_layer max_spikes=2**60": (
        "ep.spiking_layer(t, k, kinetics=ep.Kinetics(steps=10), max_spikes=2**60, "
        "use_custom_ops=USE)",
        "ValueError",
        "`max_spikes` must be an integer <= 2147483647",
    ),
    "readout_layer sequence too long for the batch": (
        "ep.readout_layer(t, np.ones((3, 2**10), 'float32'), kinetics=ep.Kinetics(steps=2**31 - 1),"
        " readout='sequence', use_custom_ops=USE)",
        "ValueError",
        "more than the limit of 1099511627776 (2**40); lower `steps`",
    ),
    "Kinetics steps=2**62": (
        "ep.Kinetics(steps=2**62)",
        "ValueError",
        "Kinetics: `steps` must be an integer <= 2147483647",
    ),
}

# the op wrappers of keras_spiking.ops, given a kinetics object that skipped Kinetics' checks
WRAPPERS = {
    "eventprop_spiking_forward max_spikes=2**60": (
        "ops.eventprop_spiking_forward(t, k, kinetics=ep.Kinetics(steps=10), max_spikes=2**60)",
        "ValueError",
        "eventprop_spiking_forward: `max_spikes` must be an integer <= 2147483647",
    ),
    "eventprop_spiking_forward_reference max_spikes=2**60": (
        "ep.spiking_forward_reference(t, k, kinetics=ep.Kinetics(steps=10), max_spikes=2**60)",
        "ValueError",
        "`max_spikes` must be an integer <= 2147483647",
    ),
    "eventprop_readout_forward sequence steps=2**62": (
        "kin_ = types.SimpleNamespace(tau_mem=0.02, tau_syn=0.005, threshold=1.0, dt=1e-3, "
        "steps=2**62)\n"
        "ops.eventprop_readout_forward(t, k, kinetics=kin_, readout='sequence')",
        "ValueError",
        "eventprop_readout_forward: `kinetics.steps` must be an integer <= 2147483647",
    ),
    "eventprop_backward steps=2**61": (
        "kin_ = types.SimpleNamespace(tau_mem=0.02, tau_syn=0.005, threshold=1.0, dt=1e-3, "
        "steps=2**61)\n"
        "ops.eventprop_backward(t, k, kinetics=kin_, readout='max', readout_grad=np.ones((2, 8),"
        " 'float32'), argmax=tf.zeros([2, 8], tf.int32))",
        "ValueError",
        "eventprop_backward: `kinetics.steps` must be an integer <= 2147483647",
    ),
}

# the compiled ops called directly: the second layer of defence
RAW = {
    "EventPropSpikingForward max_spikes=2**60": (
        "lib.keras_spiking_event_prop_spiking_forward(t, k, no_rec, kin, steps=10, "
        "max_spikes=2**60)",
        "InvalidArgumentError",
        "EventPropSpikingForward: `max_spikes` must be >= 1 and <= 2147483647",
    ),
    "EventPropSpikingForward max_spikes=2**31-1 (too large to allocate)": (
        "lib.keras_spiking_event_prop_spiking_forward(t, k, no_rec, kin, steps=10, "
        "max_spikes=2**31 - 1)",
        "ResourceExhaustedError",
        "OOM when allocating",
    ),
    "EventPropSpikingForward steps=2**61": (
        "lib.keras_spiking_event_prop_spiking_forward(t, k, no_rec, kin, steps=2**61, "
        "max_spikes=4)",
        "InvalidArgumentError",
        "`steps` must be >= 1 and <= 2147483647",
    ),
    "EventPropSpikingForward steps=2**32": (
        "lib.keras_spiking_event_prop_spiking_forward(t, k, no_rec, kin, steps=2**32, "
        "max_spikes=4)",
        "InvalidArgumentError",
        "`steps` must be >= 1 and <= 2147483647",
    ),
    "EventPropSpikingForward buffers overflow int64 (empty inputs)": (
        "lib.keras_spiking_event_prop_spiking_forward(tf.zeros([2**40, 0, 1]), "
        "tf.zeros([0, 2**40]), no_rec, kin, steps=10, max_spikes=4)",
        "InvalidArgumentError",
        "spike buffers [batch, units, max_spikes]` of shape [1099511627776, 1099511627776, 4] is "
        "too large",
    ),
    "EventPropReadoutForward sequence steps=2**62": (
        "lib.keras_spiking_event_prop_readout_forward(t, k, kin, steps=2**62, readout='sequence')",
        "InvalidArgumentError",
        "`steps` must be >= 1 and <= 2147483647",
    ),
    "EventPropReadoutForward sequence steps=2**31-1 (too large to allocate)": (
        "lib.keras_spiking_event_prop_readout_forward(t, k, kin, steps=2**31 - 1, "
        "readout='sequence')",
        "ResourceExhaustedError",
        "OOM when allocating",
    ),
    "EventPropReadoutForward integral steps=2**61": (
        "lib.keras_spiking_event_prop_readout_forward(t, k, kin, steps=2**61, readout='integral')",
        "InvalidArgumentError",
        "`steps` must be >= 1 and <= 2147483647",
    ),
    "EventPropBackward steps=2**61": (
        "e3, e2 = tf.zeros([0, 0, 0]), tf.zeros([0, 0])\n"
        "lib.keras_spiking_event_prop_backward(t, k, no_rec, kin, tf.constant(0.0, tf.float64), "
        "tf.zeros([0, 0, 0], tf.int32), e3, e3, e3, e3, tf.ones([2, 8]), tf.zeros([2, 8], "
        "tf.int32), steps=2**61, spiking=False, readout='max')",
        "InvalidArgumentError",
        "`steps` must be >= 1 and <= 2147483647",
    ),
    "SparseSpikeMatmul output overflows int64": (
        "lib.keras_spiking_sparse_spike_matmul(tf.zeros([2**40, 0]), tf.zeros([0, 2**40]))",
        "InvalidArgumentError",
        "`output` of shape [1099511627776, 1099511627776] is too large",
    ),
    "SparseSpikeMatmulGradWeights output overflows int64": (
        "lib.keras_spiking_sparse_spike_matmul_grad_weights(tf.zeros([0, 2**40]), "
        "tf.zeros([0, 2**40]))",
        "InvalidArgumentError",
        "`grad_weights` of shape [1099511627776, 1099511627776] is too large",
    ),
    "SparseLifScan output overflows int64": (
        "lib.keras_spiking_sparse_lif_scan(tf.zeros([1, 2**50, 0]), tf.zeros([0, 2**20]), "
        "tf.zeros([1, 2**20]), tf.zeros([2**20]), tf.constant(1.0))",
        "InvalidArgumentError",
        "`spikes_out` of shape [1, 1125899906842624, 1048576] is too large",
    ),
    # C++ exceptions: a std::vector longer than max_size() on the op's own thread, and a
    # scratch vector the address-space limit refuses on the thread-pool workers
    "SparseSpikeMatmulEvents std::length_error": (
        "lib.keras_spiking_sparse_spike_matmul_events(tf.zeros([2**62, 0]), tf.zeros([0, 0]))",
        "ResourceExhaustedError",
        "SparseSpikeMatmulEvents: a scratch buffer would be too large",
    ),
    "SparseLifScan std::bad_alloc in the sharded loop": (
        "lib.keras_spiking_sparse_lif_scan(tf.zeros([4, 0, 2**31 - 1]), "
        "tf.zeros([2**31 - 1, 0]), tf.zeros([4, 0]), tf.zeros([0]), tf.constant(1.0))",
        "ResourceExhaustedError",
        "SparseLifScan: out of host memory",
    ),
}


@pytest.mark.parametrize("use_custom_ops", [True, False], ids=["kernels", "pure_tf"])
def test_python_validation_refuses_huge_arguments(use_custom_ops):
    cases = {
        name: (code.replace("USE", str(use_custom_ops)), error, pattern)
        for name, (code, error, pattern) in VALIDATED.items()
    }
    if use_custom_ops:  # the op wrappers of both paths, once
        cases.update(WRAPPERS)
    _check(cases, _run_child(cases))


def test_raw_ops_return_errors_instead_of_aborting():
    _check(RAW, _run_child(RAW, mode="raw"))


def test_a_child_that_crashes_is_reported():
    """The harness itself: a signal in the child fails the test, naming the case."""
    crash = {"abort": ("import os\nos.abort()", None, "")}
    with pytest.raises(
        pytest.fail.Exception, match="killed by signal 6 while running case 'abort'"
    ):
        _run_child(crash, mode="bare")
