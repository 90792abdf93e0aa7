"""The event lists of the forward kernels and the weight gradient computed from them.

In a training step the forward event kernels (``SparseSpikeMatmulEvents``, ``SparseLifScan``)
return the active inputs they found as compressed rows (offsets, input indices, values), and
``SparseEventsGradWeights`` computes ``spikes^T @ grad`` from that list without reading the
spikes again. The lists are checked against ``np.nonzero`` of the spikes, the gradient
against ``spikes^T @ grad`` in NumPy float64 (numbers the kernels did not produce) and against
the kernel that scans the spikes itself.
"""

import numpy as np
import pytest
import tensorflow as tf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keras_spiking import layers, ops

# float32 sums run in another order than NumPy's float64 product: agreement to rounding of
# the largest partial sum, not bit for bit
F32_ATOL = 1e-5
F64_ATOL = 1e-12


@pytest.fixture(scope="module")
def lib():
    """The library must build and load here: CI exercises the kernels, never skips them."""
    return ops.load()


def _events_of(x: np.ndarray):
    """The event list of a [rows, n_in] array: nonzero entries row by row, inputs ascending."""
    rows, cols = np.nonzero(x)
    offsets = np.concatenate([[0], np.cumsum(np.count_nonzero(x, axis=1))])
    return offsets, cols, x[rows, cols]


def _assert_events(got, x):
    offsets, inputs, values = _events_of(x)
    np.testing.assert_array_equal(got[0], offsets)
    np.testing.assert_array_equal(got[1], inputs)
    if np.all(values == 1):  # binary spikes: no values are kept
        assert got[2].shape == (0,)
    else:
        np.testing.assert_array_equal(got[2], values)  # copied, not computed: exact
    assert got[0].dtype == tf.int64 and got[1].dtype == tf.int32


def _graded(rng, shape, density):
    """Spikes with graded values (and some negative ones): the list keeps each value."""
    return (rng.random(shape) < density) * rng.normal(1.0, 0.7, shape)


def _grad_tolerance(want, dtype):
    return (F32_ATOL if dtype == tf.float32 else F64_ATOL) * max(1.0, np.abs(want).max(initial=0.0))


@pytest.mark.parametrize("dtype", [tf.float32, tf.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("density", [0.0, 0.05, 0.4, 1.0])
def test_matmul_events_list_the_active_inputs(lib, rng, dtype, density):
    x = _graded(rng, (333, 57), density)
    w = rng.normal(size=(57, 40))
    out, *events = lib.keras_spiking_sparse_spike_matmul_events(
        tf.constant(x, dtype), tf.constant(w, dtype)
    )
    plain = lib.keras_spiking_sparse_spike_matmul(tf.constant(x, dtype), tf.constant(w, dtype))
    np.testing.assert_array_equal(out, plain)  # the same kernel, the same sums
    _assert_events(events, x.astype(dtype.as_numpy_dtype))


@pytest.mark.parametrize("dtype", [tf.float32, tf.float64], ids=["f32", "f64"])
def test_sparse_lif_scan_events_cover_batch_and_time(lib, rng, dtype):
    """The scan is parallel over the batch: each thread's rows land at their offsets (the
    case is large enough for TF's thread pool to split it into several shards)."""
    batch, steps, n_in, n = 64, 50, 200, 64
    x = _graded(rng, (batch, steps, n_in), 0.1)
    out = lib.keras_spiking_sparse_lif_scan(
        tf.constant(x, dtype),
        tf.constant(rng.normal(size=(n_in, n)), dtype),
        tf.zeros((batch, n), dtype),
        tf.fill([n], tf.constant(0.9, dtype)),
        tf.constant(1.0, dtype),
    )
    _assert_events(out[3:], x.reshape(-1, n_in).astype(dtype.as_numpy_dtype))


def test_events_keep_nan_and_inf_entries(lib):
    """A NaN or inf input is 'active' (x != 0 is true for it), as in the forward sums."""
    x = np.zeros((3, 5), np.float32)
    x[0, 1], x[2, 4], x[2, 0] = np.nan, np.inf, 2.0
    _, offsets, inputs, values = lib.keras_spiking_sparse_spike_matmul_events(
        tf.constant(x), tf.ones((5, 2))
    )
    np.testing.assert_array_equal(offsets, [0, 1, 1, 3])
    np.testing.assert_array_equal(inputs, [1, 0, 4])
    np.testing.assert_array_equal(values, [np.nan, 2.0, np.inf])


@pytest.mark.parametrize("dtype", [tf.float32, tf.float64], ids=["f32", "f64"])
@pytest.mark.parametrize(
    "rows, n_in, n_out, density",
    [
        (700, 37, 600, 0.3),  # wide grad rows: blocks of ~50 rows, several per thread
        (5000, 256, 20, 0.03),  # a narrow readout: two blocks of rows per thread
        (6400, 70, 256, 0.05),  # the benchmark's shape of rows x outputs
        (3, 50, 1000, 0.5),  # fewer rows than a block: one part
        (257, 19, 300, 1.0),  # every input active
        (40, 30, 17, 0.0),  # no event at all
    ],
)
def test_events_grad_weights_equals_numpy_and_scanning_kernel(
    lib, rng, dtype, rows, n_in, n_out, density
):
    x = _graded(rng, (rows, n_in), density)
    grad = rng.normal(size=(rows, n_out))
    x_t, grad_t = tf.constant(x, dtype), tf.constant(grad, dtype)
    _, *events = lib.keras_spiking_sparse_spike_matmul_events(x_t, tf.zeros((n_in, 1), dtype))
    got = lib.keras_spiking_sparse_events_grad_weights(*events, grad_t, tf.constant(n_in, tf.int64))
    want = x.T @ grad
    np.testing.assert_allclose(got, want, rtol=0, atol=_grad_tolerance(want, dtype))
    # the same events in the same order through the same accumulation: bit for bit
    scanned = lib.keras_spiking_sparse_spike_matmul_grad_weights(x_t, grad_t)
    np.testing.assert_array_equal(got, scanned)


@pytest.mark.parametrize("rows, n_in, n_out", [(0, 5, 3), (4, 0, 3), (4, 5, 0), (0, 0, 0)])
def test_events_grad_weights_empty_shapes(lib, rows, n_in, n_out):
    x = tf.ones((rows, n_in))
    _, *events = lib.keras_spiking_sparse_spike_matmul_events(x, tf.ones((n_in, n_out)))
    got = lib.keras_spiking_sparse_events_grad_weights(
        *events, tf.ones((rows, n_out)), tf.constant(n_in, tf.int64)
    )
    np.testing.assert_array_equal(got, np.full((n_in, n_out), float(rows)))


def _bad_case():
    """A valid list of 2 rows (3 events) over 4 inputs; the tests break one part at a time."""
    return {
        "event_offsets": tf.constant([0, 2, 3], tf.int64),
        "event_inputs": tf.constant([0, 3, 1], tf.int32),
        "event_values": tf.constant([1.0, 1.0, 1.0]),
        "grad": tf.ones((2, 5)),
        "n_in": tf.constant(4, tf.int64),
    }


@pytest.mark.parametrize(
    "change, message",
    [
        ({"event_offsets": tf.constant([0, 2], tf.int64)}, "event_offsets"),
        ({"event_offsets": tf.constant([1, 2, 3], tf.int64)}, "from 0"),
        ({"event_offsets": tf.constant([0, 2, 2], tf.int64)}, "from 0"),
        ({"event_offsets": tf.constant([0, 4, 3], tf.int64)}, "decrease"),
        ({"event_inputs": tf.constant([0, 4, 1], tf.int32)}, r"outside \[0, 4\)"),
        ({"event_inputs": tf.constant([0, -1, 1], tf.int32)}, r"outside \[0, 4\)"),
        ({"event_values": tf.constant([1.0, 1.0])}, "length of `event_inputs`"),
        ({"n_in": tf.constant(-1, tf.int64)}, "n_in"),
        ({"n_in": tf.constant(2**31, tf.int64)}, "n_in"),  # past what int32 indices reach
        # the indices are checked even when the result is empty
        ({"n_in": tf.constant(0, tf.int64)}, r"outside \[0, 0\)"),
        (
            {"grad": tf.ones((2, 0)), "event_inputs": tf.constant([0, 9, 1], tf.int32)},
            r"holds 9 at entry 1, outside \[0, 4\)",
        ),
        ({"n_in": tf.constant([4], tf.int64)}, "n_in|rank"),
        ({"grad": tf.ones((2, 5, 1))}, "rank|matrix"),
    ],
)
def test_events_grad_weights_rejects_bad_lists(lib, change, message):
    case = {**_bad_case(), **change}
    with pytest.raises((tf.errors.InvalidArgumentError, ValueError), match=message):
        lib.keras_spiking_sparse_events_grad_weights(**case)


def test_events_grad_weights_output_size_overflow_is_an_error(lib):
    """n_in x n_out past int64 (an empty grad of 2^40 columns) raises instead of aborting."""
    with pytest.raises(tf.errors.InvalidArgumentError):
        lib.keras_spiking_sparse_events_grad_weights(
            tf.constant([0], tf.int64),
            tf.zeros([0], tf.int32),
            tf.zeros([0]),
            tf.zeros((0, 2**40)),
            tf.constant(2**31 - 1, tf.int64),
        )


def test_events_grad_weights_valid_case_runs(lib):
    """The base of the bad-list cases is itself valid (so each failure above is its change),
    and an empty event_values stands for values that are all 1."""
    want = [[1.0] * 5, [1.0] * 5, [0.0] * 5, [1.0] * 5]
    np.testing.assert_array_equal(lib.keras_spiking_sparse_events_grad_weights(**_bad_case()), want)
    no_values = {**_bad_case(), "event_values": tf.zeros([0])}
    np.testing.assert_array_equal(lib.keras_spiking_sparse_events_grad_weights(**no_values), want)


@pytest.mark.parametrize("dtype", [tf.float32, tf.float64], ids=["f32", "f64"])
@pytest.mark.parametrize(
    "graded_row", [None, 0, 10000, 19999], ids=["binary", "first", "mid", "last"]
)
def test_binary_spikes_keep_no_values_and_one_graded_row_keeps_all(lib, rng, dtype, graded_row):
    """Binary spikes record input indices only; one graded value anywhere (in any thread's
    rows: 20000 rows are split into several shards) makes the list keep every value, the 1s
    of the other shards, which stayed binary, included."""
    rows = 20000
    x = (rng.random((rows, 64)) < 0.1).astype(dtype.as_numpy_dtype)
    if graded_row is not None:
        x[graded_row, 5] = 0.5
    grad = rng.normal(size=(rows, 48))
    _, *events = lib.keras_spiking_sparse_spike_matmul_events(
        tf.constant(x), tf.zeros((64, 1), dtype)
    )
    _assert_events(events, x)
    got = lib.keras_spiking_sparse_events_grad_weights(
        *events, tf.constant(grad, dtype), tf.constant(64, tf.int64)
    )
    want = x.T @ grad
    np.testing.assert_allclose(got, want, rtol=0, atol=_grad_tolerance(want, dtype))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rows=st.integers(0, 60),
    n_in=st.integers(0, 70),
    n_out=st.integers(0, 300),
    density=st.floats(0.0, 1.0),
    double=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_events_round_trip_random_cases(rows, n_in, n_out, density, double, seed):
    lib = ops.load()
    rng = np.random.default_rng(seed)
    dtype = tf.float64 if double else tf.float32
    x = _graded(rng, (rows, n_in), density).astype(dtype.as_numpy_dtype)
    w = rng.normal(size=(n_in, n_out))
    grad = rng.normal(size=(rows, n_out))
    out, *events = lib.keras_spiking_sparse_spike_matmul_events(
        tf.constant(x), tf.constant(w, dtype)
    )
    _assert_events(events, x)
    atol = _grad_tolerance(x @ w, dtype)
    np.testing.assert_allclose(out, x @ w, rtol=0, atol=atol)
    got = lib.keras_spiking_sparse_events_grad_weights(
        *events, tf.constant(grad, dtype), tf.constant(n_in, tf.int64)
    )
    np.testing.assert_allclose(got, x.T @ grad, rtol=0, atol=_grad_tolerance(x.T @ grad, dtype))


@pytest.mark.parametrize(
    "make_layer",
    [
        lambda custom: layers.LIF(80, use_custom_ops=custom),
        lambda custom: layers.LI(20, use_custom_ops=custom),
    ],
    ids=["lif_fused_scan", "li_readout"],
)
def test_training_gradient_reads_the_event_list(lib, rng, make_layer):
    """The weight gradient of a sparse training step comes from the forward's event list:
    the gradient graph holds SparseEventsGradWeights and no kernel that scans the spikes."""
    layer = make_layer(True)
    x = tf.constant((rng.random((4, 12, 200)) < 0.02).astype("float32"))
    layer(x, training=True)

    def step(x):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(layer(x, training=True) ** 2)
        return tape.gradient(loss, layer.trainable_weights)

    graph_def = tf.function(step).get_concrete_function(x).graph.as_graph_def()
    op_types = {node.op for node in graph_def.node}
    for function in graph_def.library.function:  # the branches of the tf.cond
        op_types |= {node.op for node in function.node_def}
    assert "KerasSpiking>SparseEventsGradWeights" in op_types
    assert "KerasSpiking>SparseSpikeMatmulGradWeights" not in op_types
    # and the numbers equal the pure-TF path
    reference = make_layer(False)
    reference(x, training=True)
    reference.set_weights(layer.get_weights())
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(reference(x, training=True) ** 2)
    want = tape.gradient(loss, reference.trainable_weights)
    for a, b in zip(step(x), want, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)  # float32 BPTT, as test_ops
