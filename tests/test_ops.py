"""The C++ kernels against their pure-TF twins; robustness; the switches.

The loader (build, cache, checks) is tested in ``tests/test_op_library.py``.

The twins are ``tf.matmul`` for the event kernel and :mod:`keras_spiking.scan` for the fused
scans; ``tests/test_scan.py`` checks those scans against autodiff of the step functions and
``tests/test_scan_gradients.py`` checks scans and kernels against float64 finite differences,
so kernel == twin closes the chain to numbers neither produced.
"""

import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keras_spiking import _op_library, dynamics, layers, ops, scan, surrogates, synapse

# float32 sums run in another order in the kernels than in the TF matmul / XLA loop, so they
# agree to rounding (a few ulps of the largest partial sum), not bit for bit
F32 = {"rtol": 1e-5, "atol": 1e-5}
# float32 BPTT through a steep surrogate (fast sigmoid, k = 25): XLA fuses beta * v + x into
# one FMA (one rounding) where the kernel may round twice, and the surrogate slope multiplies
# that 1-ulp membrane difference by up to k per step back in time
F32_BPTT = {"rtol": 1e-4, "atol": 1e-4}
# float64: the same arithmetic, up to the order of additions
F64 = {"rtol": 1e-10, "atol": 1e-12}


def _tol(dtype):
    return F64 if dtype == tf.float64 else F32


@pytest.fixture(scope="module")
def lib():
    """The library must build and load here: CI exercises the kernels, never skips them."""
    return ops.load()


def _spikes(rng, shape, density, dtype=tf.float32):
    return tf.constant((rng.random(shape) < density).astype(dtype.as_numpy_dtype))


def _matmul_with_grads(fn, x, w, g):
    with tf.GradientTape() as tape:
        tape.watch([x, w])
        y = fn(x, w)
        loss = tf.reduce_sum(y * g)
    return [y, *tape.gradient(loss, [x, w])]


# --------------------------------------------------------------------------------------------
# SparseSpikeMatmul
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [tf.float32, tf.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("density", [0.0, 0.01, 0.05, 0.3, 1.0])
def test_sparse_matmul_equals_twin(lib, rng, dtype, density):
    x = _spikes(rng, (37, 53), density, dtype)
    w = tf.constant(rng.normal(size=(53, 29)), dtype)
    g = tf.constant(rng.normal(size=(37, 29)), dtype)
    got = _matmul_with_grads(ops.sparse_spike_matmul, x, w, g)
    want = _matmul_with_grads(synapse.dense_current, x, w, g)
    for a, b in zip(got, want, strict=True):
        np.testing.assert_allclose(a, b, **_tol(dtype))


def test_sparse_matmul_graded_values_and_leading_axes(lib, rng):
    # not only 0/1: any nonzero value is multiplied in (documented), zeros are skipped
    values = rng.normal(size=(4, 6, 10)) * (rng.random((4, 6, 10)) < 0.3)
    x = tf.constant(values, tf.float64)
    w = tf.constant(rng.normal(size=(10, 7)), tf.float64)
    np.testing.assert_allclose(
        ops.sparse_spike_matmul(x, w), np.einsum("btf,fu->btu", values, w), **F64
    )


@pytest.mark.parametrize("dtype", [tf.float32, tf.float64], ids=["f32", "f64"])
@pytest.mark.parametrize(
    "rows, n_in, n_out, density",
    [
        (700, 37, 600, 0.3),  # wide grad rows: blocks of ~50 rows, several per thread
        (5000, 256, 20, 0.03),  # a narrow readout: two blocks of rows per thread
        (3, 50, 1000, 0.5),  # fewer rows than a block: one part
        (257, 19, 300, 1.0),  # every input active
    ],
)
def test_weight_gradient_kernel_over_row_blocks_and_parts(
    lib, rng, dtype, rows, n_in, n_out, density
):
    """The weight-gradient kernel splits the rows into per-thread parts, each walked in blocks
    of rows with its own copy of the result; graded values, input counts that are not a
    multiple of the SIMD width, and blocks of every size must all give spikes^T @ grad."""
    values = (rng.random((rows, n_in)) < density) * rng.normal(1.0, 0.5, (rows, n_in))
    grad = rng.normal(size=(rows, n_out))
    got = lib.keras_spiking_sparse_spike_matmul_grad_weights(
        tf.constant(values, dtype), tf.constant(grad, dtype)
    )
    want = values.T @ grad
    scale = np.abs(want).max()
    np.testing.assert_allclose(
        got, want, rtol=0, atol=scale * (1e-5 if dtype == tf.float32 else 1e-12)
    )


@pytest.mark.parametrize("n_out", [1, 15, 16, 20, 33, 48, 64, 65])
def test_event_kernels_narrow_rows_equal_twin(lib, rng, n_out):
    """Rows of at most 64 floats accumulate in registers with masked tails (AVX-512): every
    tail length and vector count, odd and even event counts, against tf.matmul."""
    values = (rng.random((300, 45)) < 0.2) * rng.normal(1.0, 0.5, (300, 45))
    x = tf.constant(values, tf.float32)
    w = tf.constant(rng.normal(size=(45, n_out)), tf.float32)
    g = tf.constant(rng.normal(size=(300, n_out)), tf.float32)
    got = _matmul_with_grads(ops.sparse_spike_matmul, x, w, g)
    want = _matmul_with_grads(synapse.dense_current, x, w, g)
    for a, b in zip(got, want, strict=True):
        np.testing.assert_allclose(a, b, **F32)
    s, v = ops.sparse_lif_step(x[:7], w, tf.zeros((7, n_out)), tf.fill([n_out], 0.9), threshold=0.5)
    s_want, v_want = dynamics.dense_lif_step(x[:7], w, tf.zeros((7, n_out)), 0.9, threshold=0.5)
    np.testing.assert_allclose(v, v_want, **F32)


def test_sparse_matmul_gradients_equal_finite_differences(lib, rng):
    x = tf.constant((rng.random((6, 8)) < 0.4) * rng.normal(size=(6, 8)), tf.float64)
    w = tf.constant(rng.normal(size=(8, 5)), tf.float64)
    g = rng.normal(size=(6, 5))

    def loss(x, w):
        return float(tf.reduce_sum(ops.sparse_spike_matmul(x, w) * g))

    _, gx, gw = _matmul_with_grads(ops.sparse_spike_matmul, x, w, tf.constant(g))
    eps = 1e-6
    for grad, arg in ((gw, "w"), (gx, "x")):
        base = (w if arg == "w" else x).numpy()
        numeric = np.zeros_like(base)
        for index in np.ndindex(base.shape):
            step = np.zeros_like(base)
            step[index] = eps
            plus = loss(x, base + step) if arg == "w" else loss(base + step, w)
            minus = loss(x, base - step) if arg == "w" else loss(base - step, w)
            numeric[index] = (plus - minus) / (2 * eps)
        # the loss is linear in each argument, so central differences are exact up to the
        # float64 rounding of the loss (about 1e-16 / 1e-6)
        np.testing.assert_allclose(grad, numeric, rtol=1e-7, atol=1e-8)


@pytest.mark.parametrize("shape", [(0, 5, 3), (4, 0, 3), (4, 5, 0), (0, 0, 0)])
def test_sparse_matmul_empty_shapes(lib, shape):
    rows, n_in, n_out = shape
    x = tf.ones((rows, n_in))
    w = tf.ones((n_in, n_out))
    g = tf.ones((rows, n_out))
    y, gx, gw = _matmul_with_grads(ops.sparse_spike_matmul, x, w, g)
    assert y.shape == (rows, n_out) and gx.shape == x.shape and gw.shape == w.shape
    np.testing.assert_array_equal(y, np.zeros((rows, n_out)))
    np.testing.assert_array_equal(gw, np.zeros((n_in, n_out)))


def test_kernels_take_dimensions_past_int32_range(lib):
    """Shapes past 2**31 (int64 sizes and offsets) with nothing to allocate. The raw ops are
    called: TF's own reduce_sum gradient overflows on such shapes, so no loss is built."""
    huge = 2**31 + 5
    out = lib.keras_spiking_sparse_spike_matmul(tf.zeros((0, huge)), tf.zeros((huge, 0)))
    assert out.shape == (0, 0)
    grad = lib.keras_spiking_sparse_spike_matmul_grad_weights(tf.zeros((0, huge)), tf.zeros((0, 0)))
    assert grad.shape == (huge, 0)
    x, state, decay, theta = tf.zeros((0, huge, 0)), tf.zeros((0, 0)), tf.zeros((0,)), 1.0
    spikes, membrane, v_last = lib.keras_spiking_lif_scan(x, state, decay, theta)
    assert spikes.shape == membrane.shape == (0, huge, 0) and v_last.shape == (0, 0)
    grads = lib.keras_spiking_lif_scan_grad(
        x, state, membrane, state, decay, theta, surrogate="arctan", scale=1.0
    )
    assert grads[0].shape == (0, huge, 0)
    assert lib.keras_spiking_li_scan(x, state, decay)[0].shape == (0, huge, 0)


def test_sparse_matmul_nan_spike_propagates(lib):
    x = tf.constant([[0.0, np.nan], [1.0, 0.0]])
    y = ops.sparse_spike_matmul(x, tf.ones((2, 3)))
    assert np.isnan(y[0]).all() and not np.isnan(y[1]).any()


def test_sparse_matmul_raw_op_rejects_bad_shapes_and_dtypes(lib):
    op = lib.keras_spiking_sparse_spike_matmul
    with pytest.raises((tf.errors.InvalidArgumentError, ValueError), match="rank"):
        op(tf.ones((2, 3, 4)), tf.ones((4, 5)))
    with pytest.raises((tf.errors.InvalidArgumentError, ValueError), match="3 and 4|must match"):
        op(tf.ones((2, 3)), tf.ones((4, 5)))
    with pytest.raises((TypeError, tf.errors.InvalidArgumentError, tf.errors.NotFoundError)):
        op(tf.ones((2, 3), tf.int32), tf.ones((3, 5), tf.int32))
    grad_op = lib.keras_spiking_sparse_spike_matmul_grad_weights
    with pytest.raises((tf.errors.InvalidArgumentError, ValueError), match="2 and 3|must match"):
        grad_op(tf.ones((2, 3)), tf.ones((3, 5)))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rows=st.integers(0, 40),
    n_in=st.integers(0, 70),
    n_out=st.integers(0, 40),
    density=st.floats(0.0, 1.0),
    double=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_sparse_matmul_random_cases_equal_twin(rows, n_in, n_out, density, double, seed):
    ops.load()
    rng = np.random.default_rng(seed)
    dtype = tf.float64 if double else tf.float32
    x = _spikes(rng, (rows, n_in), density, dtype)
    w = tf.constant(rng.normal(size=(n_in, n_out)), dtype)
    g = tf.constant(rng.normal(size=(rows, n_out)), dtype)
    got = _matmul_with_grads(ops.sparse_spike_matmul, x, w, g)
    want = _matmul_with_grads(synapse.dense_current, x, w, g)
    for a, b in zip(got, want, strict=True):
        np.testing.assert_allclose(a, b, **_tol(dtype))


@pytest.mark.parametrize("reset", ["subtract", "zero"])
@pytest.mark.parametrize("batch, density", [(1, 0.02), (5, 0.3), (3, 0.0), (0, 0.5)])
def test_streaming_lif_step_equals_twin_and_scan(lib, rng, reset, batch, density):
    x = _spikes(rng, (batch, 40), density, tf.float64)
    w = tf.constant(rng.normal(0, 0.5, (40, 12)), tf.float64)
    v = tf.constant(rng.normal(0.5, 0.5, (batch, 12)), tf.float64)
    beta = tf.constant(rng.uniform(0.5, 0.99, 12), tf.float64)
    got = ops.sparse_lif_step(x, w, v, beta, threshold=0.8, reset=reset)
    want = dynamics.dense_lif_step(x, w, v, beta, threshold=0.8, reset=reset)
    for a, b in zip(got, want, strict=True):
        np.testing.assert_allclose(a, b, **F64)
    # and one step of the training scan on the same current gives the same state
    spikes, v_last, _ = scan.lif_scan(
        tf.matmul(x, w)[:, None],
        v,
        tf.zeros_like(v),
        beta,
        threshold=0.8,
        surrogate=surrogates.get("arctan"),
        reset=reset,
        jit=False,
    )
    np.testing.assert_allclose(got[0], spikes[:, 0], **F64)
    np.testing.assert_allclose(got[1], v_last, **F64)


def test_streaming_lif_step_rejects_bad_shapes(lib):
    op = lib.keras_spiking_sparse_lif_step
    x, w, v, beta, theta = tf.ones((2, 3)), tf.ones((3, 4)), tf.ones((2, 4)), tf.ones(4), 1.0
    with pytest.raises((tf.errors.InvalidArgumentError, ValueError)):
        op(x, tf.ones((5, 4)), v, beta, theta)
    with pytest.raises((tf.errors.InvalidArgumentError, ValueError)):
        op(x, w, tf.ones((2, 5)), beta, theta)
    with pytest.raises((tf.errors.InvalidArgumentError, ValueError)):
        op(x, w, v, tf.ones(3), theta)
    with pytest.raises((tf.errors.InvalidArgumentError, ValueError)):
        op(x, w, v, beta, tf.ones(2))


# --------------------------------------------------------------------------------------------
# Fused scans
# --------------------------------------------------------------------------------------------
def _scan_case(rng, batch, steps, n, dtype=tf.float64, drive=0.3):
    return {
        "x": tf.constant(rng.normal(drive, 0.6, (batch, steps, n)), dtype),
        "i0": tf.constant(rng.normal(0, 0.3, (batch, n)), dtype),
        "v0": tf.constant(rng.normal(0, 0.5, (batch, n)), dtype),
        "alpha": tf.constant(rng.uniform(0.5, 0.99, n), dtype),
        "beta": tf.constant(rng.uniform(0.5, 0.99, n), dtype),
        "gs": tf.constant(rng.normal(size=(batch, steps, n)), dtype),
        "g1": tf.constant(rng.normal(size=(batch, n)), dtype),
        "g2": tf.constant(rng.normal(size=(batch, n)), dtype),
    }


def _lif_run(fn, case, **options):
    x, v0, beta = case["x"], case["v0"], case["beta"]
    s0 = tf.zeros_like(v0)
    with tf.GradientTape() as tape:
        tape.watch([x, v0, beta])
        spikes, v_last, s_last = fn(x, v0, s0, beta, threshold=1.0, **options)
        loss = tf.reduce_sum(spikes * case["gs"]) + tf.reduce_sum(v_last * case["g1"])
    return [spikes, v_last, s_last, *tape.gradient(loss, [x, v0, beta])]


def _cuba_run(fn, case, **options):
    x, i0, v0, alpha, beta = (case[k] for k in ("x", "i0", "v0", "alpha", "beta"))
    with tf.GradientTape() as tape:
        tape.watch([x, i0, v0, alpha, beta])
        spikes, i_last, v_last = fn(x, i0, v0, alpha, beta, threshold=1.0, **options)
        loss = (
            tf.reduce_sum(spikes * case["gs"])
            + tf.reduce_sum(i_last * case["g1"])
            + tf.reduce_sum(v_last * case["g2"])
        )
    return [spikes, i_last, v_last, *tape.gradient(loss, [x, i0, v0, alpha, beta])]


def _li_run(fn, case, **options):
    x, v0, beta = case["x"], case["v0"], case["beta"]
    with tf.GradientTape() as tape:
        tape.watch([x, v0, beta])
        v_all, v_last = fn(x, v0, beta, **options)
        loss = tf.reduce_sum(v_all * case["gs"]) + tf.reduce_sum(v_last * case["g1"])
    return [v_all, v_last, *tape.gradient(loss, [x, v0, beta])]


def _twin(fn):
    return lambda *args, **options: fn(*args, jit=False, **options)


def _assert_same(got, want, dtype=tf.float64):
    for index, (a, b) in enumerate(zip(got, want, strict=True)):
        if b is None:  # no gradient on the twin side (e.g. i0 of a zero-step scan)
            continue
        np.testing.assert_allclose(a, b, err_msg=f"output {index}", **_tol(dtype))


@pytest.mark.parametrize("surrogate", ops.KERNEL_SURROGATES)
@pytest.mark.parametrize("reset", ["subtract", "zero"])
@pytest.mark.parametrize("detach_reset", [True, False], ids=["detached", "attached"])
def test_lif_scan_equals_twin(lib, rng, surrogate, reset, detach_reset):
    case = _scan_case(rng, 3, 17, 5)
    options = {
        "surrogate": surrogates.get(surrogate),
        "reset": reset,
        "detach_reset": detach_reset,
    }
    got = _lif_run(ops.fused_lif_scan, case, **options)
    want = _lif_run(_twin(scan.lif_scan), case, **options)
    assert float(tf.reduce_sum(got[0])) > 0  # the case does spike, so the reset paths run
    _assert_same(got, want)


@pytest.mark.parametrize("reset", ["subtract", "zero"])
@pytest.mark.parametrize("detach_reset", [True, False], ids=["detached", "attached"])
def test_lif_scan_grad_over_neuron_slices_equals_twin(lib, rng, reset, detach_reset):
    """The LIF backward walks time in slices of 32 neurons: 70 neurons give two full slices
    and a partial one, with trained decays (their gradient summed over slices and rows)."""
    case = _scan_case(rng, 4, 23, 70)
    options = {
        "surrogate": surrogates.get("fast_sigmoid"),
        "reset": reset,
        "detach_reset": detach_reset,
    }
    got = _lif_run(ops.fused_lif_scan, case, **options)
    want = _lif_run(_twin(scan.lif_scan), case, **options)
    assert float(tf.reduce_sum(got[0])) > 0
    _assert_same(got, want)


@pytest.mark.parametrize("dtype", [tf.float32, tf.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("reset", ["subtract", "zero"])
@pytest.mark.parametrize("detach_reset", [True, False], ids=["detached", "attached"])
@pytest.mark.parametrize("density", [0.03, 0.5], ids=["fused_events", "dense_branch"])
def test_lif_scan_with_input_equals_twin(lib, rng, dtype, reset, detach_reset, density):
    """The event-driven input fused into the LIF scan (SparseLifScan below the density cutoff,
    tf.matmul + LifScan above it) against the TF scan of inputs @ kernel: forward and the
    gradients of the inputs, the kernel, v0 and beta."""
    batch, steps, n_in, n = 3, 19, 90, 70  # n >= NARROW_OUTPUTS: the wide cutoff (15 %)
    x = tf.constant(
        (rng.random((batch, steps, n_in)) < density) * rng.normal(1, 0.3, (batch, steps, n_in)),
        dtype,
    )
    kernel = tf.constant(rng.normal(0.1, 0.4, (n_in, n)), dtype)
    v0 = tf.constant(rng.normal(0, 0.5, (batch, n)), dtype)
    beta = tf.constant(rng.uniform(0.5, 0.99, n), dtype)
    gs = tf.constant(rng.normal(size=(batch, steps, n)), dtype)
    g1 = tf.constant(rng.normal(size=(batch, n)), dtype)
    options = {
        "threshold": 1.0,
        "surrogate": surrogates.get("fast_sigmoid"),
        "reset": reset,
        "detach_reset": detach_reset,
    }

    def run(fn):
        with tf.GradientTape() as tape:
            tape.watch([x, kernel, v0, beta])
            spikes, v_last, s_last = fn()
            loss = tf.reduce_sum(spikes * gs) + tf.reduce_sum(v_last * g1)
        return [spikes, v_last, s_last, *tape.gradient(loss, [x, kernel, v0, beta])]

    s0 = tf.zeros_like(v0)
    got = run(lambda: ops.fused_lif_scan_with_input(x, kernel, v0, s0, beta, **options))
    want = run(
        lambda: scan.lif_scan(synapse.dense_current(x, kernel), v0, s0, beta, jit=False, **options)
    )
    assert float(tf.reduce_sum(got[0])) > 0
    tol = F64 if dtype == tf.float64 else F32_BPTT
    for index, (a, b) in enumerate(zip(got, want, strict=True)):
        np.testing.assert_allclose(a, b, err_msg=f"output {index}", **tol)
    # the fused kernel itself equals the event kernel followed by the LIF scan kernel
    if density < ops.DENSITY_CUTOFF:
        theta = tf.constant(1.0, dtype)
        fused = lib.keras_spiking_sparse_lif_scan(x, kernel, v0, beta, theta, reset=reset)
        currents = tf.reshape(
            lib.keras_spiking_sparse_spike_matmul(tf.reshape(x, [-1, n_in]), kernel),
            [batch, steps, n],
        )
        two_ops = lib.keras_spiking_lif_scan(currents, v0, beta, theta, reset=reset)
        for a, b in zip(fused[:3], two_ops, strict=True):
            np.testing.assert_allclose(a, b, **_tol(dtype))


def test_sparse_lif_scan_shapes_and_errors(lib):
    op = lib.keras_spiking_sparse_lif_scan
    theta = tf.constant(1.0)
    for batch, steps, n_in, n in [(0, 4, 3, 2), (2, 0, 3, 2), (2, 4, 0, 2), (2, 4, 3, 0)]:
        spikes, membrane, v_last, offsets, inputs, values = op(
            tf.ones((batch, steps, n_in)),
            tf.ones((n_in, n)),
            tf.fill([batch, n], 0.5),
            tf.ones((n,)),
            theta,
        )
        assert spikes.shape == membrane.shape == (batch, steps, n)
        np.testing.assert_array_equal(v_last, np.full((batch, n), 0.5))
        # every input is active: the event list names all of them, also with no neurons
        rows = batch * steps
        np.testing.assert_array_equal(offsets, np.arange(rows + 1) * n_in)
        np.testing.assert_array_equal(inputs, np.tile(np.arange(n_in), rows))
        assert values.shape == (0,)  # binary spikes: the values (all 1) are not kept
    with pytest.raises((tf.errors.InvalidArgumentError, ValueError), match="rank"):
        op(tf.ones((2, 3)), tf.ones((3, 2)), tf.zeros((2, 2)), tf.ones(2), theta)
    with pytest.raises((tf.errors.InvalidArgumentError, ValueError)):
        op(tf.ones((2, 4, 3)), tf.ones((5, 2)), tf.zeros((2, 2)), tf.ones(2), theta)
    with pytest.raises((tf.errors.InvalidArgumentError, ValueError)):
        op(tf.ones((2, 4, 3)), tf.ones((3, 2)), tf.zeros((2, 2)), tf.ones(3), theta)


def test_lif_layer_traces_the_fused_input_scan(lib, rng):
    layer = layers.LIF(80, use_custom_ops=True)
    sparse = tf.constant((rng.random((4, 12, 50)) < 0.02).astype("float32"))
    layer(sparse, training=True)
    graph = tf.function(lambda x: layer(x, training=True)).get_concrete_function(sparse).graph
    op_types = {op.type for op in graph.get_operations()}
    op_types |= {node.op for f in graph.as_graph_def().library.function for node in f.node_def}
    assert "KerasSpiking>SparseLifScan" in op_types
    # with a bias the input current is separate (the fused kernel adds no bias)
    biased = layers.LIF(80, use_bias=True, use_custom_ops=True)
    biased(sparse, training=True)
    graph = tf.function(lambda x: biased(x, training=True)).get_concrete_function(sparse).graph
    op_types = {node.op for f in graph.as_graph_def().library.function for node in f.node_def}
    assert "KerasSpiking>SparseLifScan" not in op_types


@pytest.mark.parametrize("surrogate", ops.KERNEL_SURROGATES)
@pytest.mark.parametrize("reset", ["subtract", "zero"])
@pytest.mark.parametrize("detach_reset", [True, False], ids=["detached", "attached"])
def test_cuba_lif_scan_equals_twin(lib, rng, surrogate, reset, detach_reset):
    case = _scan_case(rng, 3, 17, 5)
    options = {
        "surrogate": surrogates.get(surrogate),
        "reset": reset,
        "detach_reset": detach_reset,
    }
    got = _cuba_run(ops.fused_cuba_lif_scan, case, **options)
    want = _cuba_run(_twin(scan.cuba_lif_scan), case, **options)
    assert float(tf.reduce_sum(got[0])) > 0
    _assert_same(got, want)


@pytest.mark.parametrize("decay_grad", [True, False])
@pytest.mark.parametrize("dtype", [tf.float64, tf.float32], ids=["f64", "f32"])
def test_li_scan_equals_twin(lib, rng, decay_grad, dtype):
    case = _scan_case(rng, 3, 40, 6, dtype=dtype)
    got = _li_run(ops.fused_li_scan, case, decay_grad=decay_grad)
    want = _li_run(_twin(scan.li_scan), case, decay_grad=decay_grad)
    _assert_same(got, want, dtype)
    if not decay_grad:
        np.testing.assert_array_equal(got[-1], np.zeros(6))


@pytest.mark.parametrize("kind", ["lif", "cuba"])
def test_scan_float32_and_constant_decays(lib, rng, kind):
    case = _scan_case(rng, 4, 30, 9, dtype=tf.float32)
    options = {"surrogate": surrogates.get("fast_sigmoid"), "decay_grad": False}
    if kind == "lif":
        got = _lif_run(ops.fused_lif_scan, case, **options)
        want = _lif_run(_twin(scan.lif_scan), case, **options)
    else:
        got = _cuba_run(ops.fused_cuba_lif_scan, case, **options)
        want = _cuba_run(_twin(scan.cuba_lif_scan), case, **options)
    for index, (a, b) in enumerate(zip(got, want, strict=True)):
        np.testing.assert_allclose(a, b, err_msg=f"output {index}", **F32_BPTT)
    np.testing.assert_array_equal(got[-1], np.zeros(9))  # decay_grad=False: zero gradient


@pytest.mark.parametrize("shape", [(0, 5, 3), (2, 0, 3), (2, 5, 0)])
@pytest.mark.parametrize("kind", ["lif", "cuba", "li"])
def test_scan_empty_shapes(lib, rng, shape, kind):
    case = _scan_case(rng, *shape)
    options = {"surrogate": surrogates.get("arctan")}
    if kind == "li":
        got = _li_run(ops.fused_li_scan, case)
        want = _li_run(_twin(scan.li_scan), case)
    elif kind == "lif":
        got = _lif_run(ops.fused_lif_scan, case, **options)
        want = _lif_run(_twin(scan.lif_scan), case, **options)
    else:
        got = _cuba_run(ops.fused_cuba_lif_scan, case, **options)
        want = _cuba_run(_twin(scan.cuba_lif_scan), case, **options)
    for a, b in zip(got, want, strict=True):
        if b is not None:
            assert a.shape == b.shape
    _assert_same(got, want)


@pytest.mark.parametrize("drive", [0.0, 50.0], ids=["no_input", "saturating"])
def test_scan_all_zero_and_all_one_spikes(lib, rng, drive):
    case = _scan_case(rng, 2, 12, 4, drive=drive)
    case["x"] = tf.fill(case["x"].shape, tf.constant(drive, tf.float64))
    case["v0"] = tf.zeros_like(case["v0"])
    got = _lif_run(ops.fused_lif_scan, case, surrogate=surrogates.get("triangle"))
    want = _lif_run(_twin(scan.lif_scan), case, surrogate=surrogates.get("triangle"))
    np.testing.assert_array_equal(got[0], np.full(got[0].shape, 1.0 if drive else 0.0))
    _assert_same(got, want)


def test_scan_raw_ops_reject_bad_inputs(lib):
    x, v0, beta, theta = tf.ones((2, 3, 4)), tf.ones((2, 4)), tf.ones((4,)), tf.constant(1.0)
    with pytest.raises((tf.errors.InvalidArgumentError, ValueError), match="rank"):
        lib.keras_spiking_lif_scan(tf.ones((2, 4)), v0, beta, theta)
    with pytest.raises((tf.errors.InvalidArgumentError, ValueError)):
        lib.keras_spiking_lif_scan(x, v0, tf.ones((5,)), theta)
    with pytest.raises((tf.errors.InvalidArgumentError, ValueError)):
        lib.keras_spiking_lif_scan(x, tf.ones((3, 4)), beta, theta)
    with pytest.raises((tf.errors.InvalidArgumentError, ValueError), match="rank"):
        lib.keras_spiking_lif_scan(x, v0, beta, tf.ones((2,)))
    with pytest.raises((tf.errors.InvalidArgumentError, ValueError), match="reset"):
        lib.keras_spiking_lif_scan(x, v0, beta, theta, reset="halfway")
    membrane = tf.ones((2, 3, 4))
    with pytest.raises(tf.errors.InvalidArgumentError, match="unknown surrogate 'nope'"):
        lib.keras_spiking_lif_scan_grad(
            x, v0, membrane, v0, beta, theta, surrogate="nope", scale=1.0
        )
    with pytest.raises(tf.errors.InvalidArgumentError, match="scale must be > 0"):
        lib.keras_spiking_lif_scan_grad(
            x, v0, membrane, v0, beta, theta, surrogate="arctan", scale=0.0
        )
    with pytest.raises((tf.errors.InvalidArgumentError, ValueError), match="rank"):
        lib.keras_spiking_li_scan(tf.ones((2, 4)), v0, beta)
    with pytest.raises((tf.errors.InvalidArgumentError, ValueError)):
        lib.keras_spiking_li_scan_grad(x, v0, tf.ones((2, 4, 4)), v0, beta)
    with pytest.raises((tf.errors.InvalidArgumentError, ValueError)):
        lib.keras_spiking_cuba_lif_scan_grad(
            x,
            v0,
            v0,
            membrane,
            tf.ones((2, 4, 4)),
            beta,
            beta,
            theta,
            surrogate="arctan",
            scale=1.0,
        )


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    batch=st.integers(0, 4),
    steps=st.integers(0, 12),
    n=st.integers(0, 7),
    surrogate=st.sampled_from(ops.KERNEL_SURROGATES),
    reset=st.sampled_from(["subtract", "zero"]),
    detach_reset=st.booleans(),
    kind=st.sampled_from(["lif", "cuba"]),
    seed=st.integers(0, 2**16),
)
def test_scans_random_cases_equal_twin(batch, steps, n, surrogate, reset, detach_reset, kind, seed):
    ops.load()
    case = _scan_case(np.random.default_rng(seed), batch, steps, n)
    options = {"surrogate": surrogates.get(surrogate), "reset": reset, "detach_reset": detach_reset}
    if kind == "lif":
        got = _lif_run(ops.fused_lif_scan, case, **options)
        want = _lif_run(_twin(scan.lif_scan), case, **options)
    else:
        got = _cuba_run(ops.fused_cuba_lif_scan, case, **options)
        want = _cuba_run(_twin(scan.cuba_lif_scan), case, **options)
    _assert_same(got, want)


# --------------------------------------------------------------------------------------------
# Layers on both paths
# --------------------------------------------------------------------------------------------
def _train_once(use_custom_ops, layer_cls, x, y, **kwargs):
    """One SGD step with the kernels globally on (True) or off; the layers on "auto", so that
    a configuration the fused scans cannot run (recurrent, custom surrogate) takes its TF scan
    with the event-driven input kernel."""
    keras.utils.set_random_seed(3)
    model = keras.Sequential([keras.Input(x.shape[1:]), layer_cls(24, **kwargs), layers.LI(3)])
    optimizer = keras.optimizers.SGD(0.5)
    with tf.GradientTape() as tape, ops.use_custom_ops(use_custom_ops):
        out = model(x, training=True)
        loss = tf.reduce_mean(
            keras.losses.sparse_categorical_crossentropy(y, tf.reduce_max(out, 1), from_logits=True)
        )
    grads = tape.gradient(loss, model.trainable_variables)
    optimizer.apply(grads, model.trainable_variables)
    return float(loss), [v.numpy() for v in model.trainable_variables]


@pytest.mark.parametrize(
    "layer_cls, kwargs",
    [
        (layers.LIF, {}),
        (layers.LIF, {"reset": "zero", "train_time_constants": True, "use_bias": True}),
        (layers.CubaLIF, {"train_time_constants": True}),
        (layers.LIF, {"recurrent": True}),  # no fused kernel: the TF scan runs on both paths
        (layers.LIF, {"surrogate": lambda x: tf.exp(-tf.abs(x))}),  # custom surrogate: TF scan
    ],
    ids=["lif", "lif_zero_trained_tau", "cuba", "lif_recurrent", "lif_custom_surrogate"],
)
@pytest.mark.parametrize(
    "density", [0.01, 0.05, 0.5], ids=["very_sparse_in", "sparse_in", "dense_in"]
)
def test_training_step_same_on_both_paths(lib, rng, layer_cls, kwargs, density):
    x = tf.constant((rng.random((8, 15, 30)) < density) * 3.0, tf.float32)
    y = tf.constant(rng.integers(0, 3, 8))
    loss_kernels, weights_kernels = _train_once(True, layer_cls, x, y, **kwargs)
    loss_tf, weights_tf = _train_once(False, layer_cls, x, y, **kwargs)
    np.testing.assert_allclose(loss_kernels, loss_tf, rtol=1e-5)
    for a, b in zip(weights_kernels, weights_tf, strict=True):
        np.testing.assert_allclose(a, b, **F32)


def test_kernels_run_in_training_not_in_traced_inference(lib, rng, tmp_path):
    model = keras.Sequential([keras.Input((10, 20)), layers.LIF(8), layers.LI(2)])
    model.compile("adam", "mse")
    x = (rng.random((16, 10, 20)) < 0.1).astype("float32")
    with ops.count_kernel_calls() as calls:  # counted when fit traces its step
        model.fit(x, np.zeros((16, 10, 2), "float32"), epochs=1, verbose=0)
    # 8 outputs: below MIN_EVENT_OUTPUTS, so the dense input and the fused LIF scan kernel
    assert calls["fused_lif_scan"], "model.fit did not use the fused kernel"
    with ops.count_kernel_calls() as calls:
        predicted = model.predict(x, verbose=0)
    assert not calls, "graph-traced inference must keep to standard TF ops"
    with ops.count_kernel_calls() as calls:
        eager = model(x)
    assert calls["fused_lif_scan"] == 1, "an eager call should use the kernel"
    np.testing.assert_allclose(predicted, eager, **F32)
    model.export(str(tmp_path / "served"), verbose=False)
    graph = (tmp_path / "served" / "saved_model.pb").read_bytes()
    assert b"KerasSpiking" not in graph  # an exported model never needs the .so


def test_use_custom_ops_config_and_validation():
    layer = layers.LIF(4, use_custom_ops=False)
    assert layer.get_config()["use_custom_ops"] is False
    assert layers.LIF.from_config(layer.get_config()).use_custom_ops is False
    with pytest.raises(
        ValueError, match=r"`use_custom_ops` must be 'auto', True or False, got 'x'"
    ):
        layers.LIF(4, use_custom_ops="x")


# --------------------------------------------------------------------------------------------
# Loader and switches
# --------------------------------------------------------------------------------------------
def test_global_setting_and_environment(monkeypatch):
    monkeypatch.setattr(ops.settings, "_global_setting", None)
    monkeypatch.setenv(ops.ENV_SETTING, "0")
    assert ops.get_use_custom_ops() is False
    monkeypatch.setenv(ops.ENV_SETTING, "bogus")
    with pytest.raises(ValueError, match="KERAS_SPIKING_CUSTOM_OPS"):
        ops.get_use_custom_ops()
    monkeypatch.setenv(ops.ENV_SETTING, "auto")
    with ops.use_custom_ops(True):
        assert ops.get_use_custom_ops() is True
    assert ops.get_use_custom_ops() == "auto"


def test_auto_falls_back_with_one_warning_and_true_raises(monkeypatch):
    def broken(**_):
        raise ops.OpLibraryError("keras_spiking custom ops: compiler missing (test)")

    monkeypatch.setattr(_op_library, "build_and_load", broken)
    monkeypatch.setattr(ops.library, "_library", None)
    monkeypatch.setattr(ops.library, "_load_error", None)
    monkeypatch.setattr(ops.library, "_warned", False)
    monkeypatch.setattr(ops.settings, "_global_setting", "auto")
    with pytest.warns(RuntimeWarning, match="falls back to its pure-TensorFlow path"):
        assert ops.enabled("auto") is False
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # only one warning per process
        assert ops.enabled("auto") is False
        x = tf.ones((2, 3, 4))
        np.testing.assert_array_equal(layers.LIF(2)(x).shape, (2, 3, 2))  # pure TF works
    assert ops.enabled(False) is False
    with pytest.raises(ops.OpLibraryError, match="compiler missing"):
        ops.enabled(True)
    with pytest.raises(ops.OpLibraryError, match="compiler missing"):
        layers.LIF(2, use_custom_ops=True)(tf.ones((2, 3, 4)))
