"""The event-driven convolution (``custom_ops/event_conv.cc``, :mod:`keras_spiking.ops.conv`).

The kernel against ``tf.nn.convolution`` (forward) and TF's autodiff of it (input and weight
gradients) on random shapes, 1-D and 2-D, both paddings, strides, dilations and groups; the
dispatch by input density; empty batches and all-zero inputs; and the errors for bad shapes,
from the Python wrapper and from the op itself.
"""

from unittest import mock

import numpy as np
import pytest
import tensorflow as tf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keras_spiking import ops
from keras_spiking.ops import conv, dispatch

# float32: the kernel adds the k_h x k_w x C/groups products of an output (and the N x out_h x
# out_w products of a weight gradient) in another order than oneDNN, so the results agree to
# the rounding of the largest partial sums (relative to the largest value), not bit for bit
F32 = 2e-5
# float64: the same products, summed in another order
F64 = 1e-11


def _assert_close(got, want, dtype):
    want = np.asarray(want)
    scale = max(1.0, float(np.abs(want).max(initial=0.0)))
    tol = F64 if dtype == tf.float64 else F32
    np.testing.assert_allclose(np.asarray(got), want, rtol=tol, atol=tol * scale)


@pytest.fixture(scope="module")
def lib():
    """The library must build and load here: CI exercises the kernels, never skips them."""
    ops.load()
    return conv.conv_library()


def _reference(x, k, *, strides, padding, dilation_rate, groups):
    """``tf.nn.convolution``, one group at a time where TF's CPU kernels have no gradient.

    TF 2.21 has no float64 gradient for grouped convolutions on the CPU; the per-group
    convolutions are the same sums.
    """
    args = {"strides": strides, "padding": padding.upper(), "dilations": dilation_rate}
    if groups == 1 or x.dtype == tf.float32:
        return tf.nn.convolution(x, k, **args)
    return tf.concat(
        [
            tf.nn.convolution(a, b, **args)
            for a, b in zip(tf.split(x, groups, axis=-1), tf.split(k, groups, axis=-1))
        ],
        axis=-1,
    )


def _with_grads(fn, x, k, g):
    with tf.GradientTape() as tape:
        tape.watch([x, k])
        y = fn(x, k)
        loss = tf.reduce_sum(y * g)
    return [y, *tape.gradient(loss, [x, k])]


def _case(rng, *, batch, spatial, channels, kernel_size, filters, density, dtype, graded=True):
    values = rng.normal(1.0, 0.7, (batch, *spatial, channels)) if graded else 1.0
    x = tf.constant((rng.random((batch, *spatial, channels)) < density) * values, dtype)
    k = tf.constant(rng.normal(size=(*kernel_size, channels, filters)), dtype)
    return x, k


@st.composite
def conv_cases(draw):
    """A random convolution whose output is not empty."""
    rank = draw(st.sampled_from([1, 2]))
    padding = draw(st.sampled_from(["valid", "same"]))
    groups = draw(st.integers(1, 3))
    stride = tuple(draw(st.integers(1, 3)) for _ in range(rank))
    # tf.nn.convolution (the reference) and Keras refuse strides > 1 with dilations > 1
    dilation = (
        (1,) * rank if max(stride) > 1 else tuple(draw(st.integers(1, 2)) for _ in range(rank))
    )
    kernel = tuple(draw(st.integers(1, 4)) for _ in range(rank))
    spatial = tuple(
        (k - 1) * d + 1 + draw(st.integers(0, 8)) for k, d in zip(kernel, dilation, strict=True)
    )
    return {
        "batch": draw(st.integers(1, 5)),
        "spatial": spatial,
        "kernel": kernel,
        # up to 6 channels a group: pixels with 4+ active channels take the 4-wide loop
        "channels": groups * draw(st.integers(1, 6)),
        "filters": groups * draw(st.integers(1, 3)),
        "conv": {
            "strides": stride,
            "padding": padding,
            "dilation_rate": dilation,
            "groups": groups,
        },
        "density": draw(st.sampled_from([0.0, 0.1, 0.3, 1.0])),
        "dtype": draw(st.sampled_from([tf.float32, tf.float64])),
        "seed": draw(st.integers(0, 2**16)),
    }


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=conv_cases())
def test_event_kernel_equals_tf_convolution(lib, case):
    rng = np.random.default_rng(case["seed"])
    dtype, args = case["dtype"], case["conv"]
    x = tf.constant(
        (rng.random((case["batch"], *case["spatial"], case["channels"])) < case["density"])
        * rng.normal(1.0, 0.7, (case["batch"], *case["spatial"], case["channels"])),
        dtype,
    )
    k = tf.constant(
        rng.normal(size=(*case["kernel"], case["channels"] // args["groups"], case["filters"])),
        dtype,
    )
    want_y = _reference(x, k, **args)
    g = tf.constant(rng.normal(size=want_y.shape), dtype)
    want = _with_grads(lambda a, b: _reference(a, b, **args), x, k, g)
    got = _with_grads(lambda a, b: conv.event_conv(a, b, **args), x, k, g)
    # the dispatching wrapper, the event branch forced (cutoff above any density) and the
    # dense path forced (cutoff 0 means never): both give the same numbers
    with (
        mock.patch.object(dispatch, "conv_density_cutoff", lambda _: 2.0),
        ops.count_kernel_calls() as n,
    ):
        forced = _with_grads(lambda a, b: conv.conv_input(a, b, use_kernel=True, **args), x, k, g)
    assert n["conv_input/events"] == 1 and n["conv_input/dense"] == 0
    with (
        mock.patch.object(dispatch, "conv_density_cutoff", lambda _: 0.0),
        ops.count_kernel_calls() as n,
    ):
        dense = _with_grads(lambda a, b: conv.conv_input(a, b, use_kernel=True, **args), x, k, g)
    assert n["conv_input/events"] == 0 and n["conv_input/dense"] == 1
    for path in (got, forced, dense):
        for a, b in zip(path, want, strict=True):
            assert a.shape == b.shape
            _assert_close(a, b, dtype)


@pytest.mark.parametrize("dtype", [tf.float32, tf.float64], ids=["f32", "f64"])
@pytest.mark.parametrize(
    "spatial, channels, filters",
    [((28, 28), 1, 15), ((12, 12), 15, 40)],
    ids=["conv1", "conv2"],
)
def test_benchmark_shapes(lib, rng, dtype, spatial, channels, filters):
    # the layers of benchmarks/event_conv.py (15C5-P2-40C5), 20 % binary spikes, 9 images
    # (more than one part per thread for the weight gradient)
    x, k = _case(
        rng,
        batch=9,
        spatial=spatial,
        channels=channels,
        kernel_size=(5, 5),
        filters=filters,
        density=0.2,
        dtype=dtype,
        graded=False,
    )
    g = tf.constant(rng.normal(size=(9, spatial[0] - 4, spatial[1] - 4, filters)), dtype)
    args = {"strides": 1, "padding": "valid", "dilation_rate": 1}
    got = _with_grads(lambda a, b: conv.event_conv(a, b, **args), x, k, g)
    want = _with_grads(lambda a, b: tf.nn.convolution(a, b, padding="VALID"), x, k, g)
    for a, b in zip(got, want, strict=True):
        _assert_close(a, b, dtype)


@pytest.mark.parametrize("dtype", [tf.float32, tf.float64], ids=["f32", "f64"])
@pytest.mark.parametrize(
    "strides, dilations, padding",
    [((2, 2), (2, 2), "VALID"), ((3, 2), (1, 2), "SAME"), ((2, 1), (2, 3), "SAME")],
)
def test_op_combines_strides_and_dilations_as_conv2d(lib, rng, dtype, strides, dilations, padding):
    # conv_input refuses this combination, as tf.nn.convolution does; the op computes it as
    # tf.nn.conv2d (the raw Conv2D op) does
    x, k = _case(
        rng,
        batch=2,
        spatial=(13, 11),
        channels=3,
        kernel_size=(3, 2),
        filters=4,
        density=0.3,
        dtype=dtype,
    )
    attrs = {"strides": list(strides), "dilations": list(dilations), "padding": padding}
    got = lib.keras_spiking_event_conv2d(x, k, **attrs)
    want = tf.raw_ops.Conv2D(
        input=x,
        filter=k,
        strides=[1, *strides, 1],
        dilations=[1, *dilations, 1],
        padding=padding,
    )
    _assert_close(got, want, dtype)
    if dtype == tf.float32:  # TF's CPU kernels have no float64 dilated filter gradient
        g = tf.constant(rng.normal(size=want.shape), dtype)
        got_k = lib.keras_spiking_event_conv2d_grad_filter(x, g, tf.shape(k), **attrs)
        want_k = tf.raw_ops.Conv2DBackpropFilter(
            input=x,
            filter_sizes=tf.shape(k),
            out_backprop=g,
            strides=[1, *strides, 1],
            dilations=[1, *dilations, 1],
            padding=padding,
        )
        _assert_close(got_k, want_k, dtype)


# --------------------------------------------------------------------------------------------
# The dispatch by input density
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("rank", [1, 2])
def test_dispatch_picks_the_kernel_below_the_cutoff_only(lib, rng, rank):
    cutoff = dispatch.conv_density_cutoff(4)
    assert 0 < cutoff < 1
    assert dispatch.conv_density_cutoff(1) <= cutoff <= dispatch.conv_density_cutoff(64)
    spatial, kernel = ((30,), (3,)) if rank == 1 else ((12, 12), (3, 3))
    args = {"strides": 1, "padding": "same", "dilation_rate": 1}
    for density, branch in [(0.0, "events"), (cutoff / 3, "events"), (min(1, 2 * cutoff), "dense")]:
        x, k = _case(
            rng,
            batch=8,
            spatial=spatial,
            channels=4,
            kernel_size=kernel,
            filters=16,
            density=density,
            dtype=tf.float32,
            graded=False,
        )
        with ops.count_kernel_calls() as calls:
            y = conv.conv_input(x, k, use_kernel=True, **args)
        assert calls == {f"conv_input/{branch}": 1}, (density, calls)
        _assert_close(y, tf.nn.convolution(x, k, padding="SAME"), tf.float32)
    with ops.count_kernel_calls() as calls:  # the dispatch did not allow kernels: no density
        conv.conv_input(x, k, use_kernel=False, **args)
    assert calls == {"conv_input/dense": 1}


def test_dispatch_in_a_graph_with_unknown_batch(lib, rng):
    x, k = _case(
        rng,
        batch=5,
        spatial=(10, 9),
        channels=2,
        kernel_size=(3, 2),
        filters=6,
        density=0.1,
        dtype=tf.float32,
    )
    args = {"strides": (2, 1), "padding": "valid", "dilation_rate": (1, 1)}

    @tf.function(input_signature=[tf.TensorSpec([None, 10, 9, 2]), tf.TensorSpec([3, 2, 2, 6])])
    def step(x, k):
        with tf.GradientTape() as tape:
            tape.watch([x, k])
            y = conv.conv_input(x, k, use_kernel=True, **args)
            loss = tf.reduce_sum(y * y)
        assert y.shape.as_list() == [None, 4, 8, 6]
        return [y, *tape.gradient(loss, [x, k])]

    def eager(x, k):
        with tf.GradientTape() as tape:
            tape.watch([x, k])
            y = tf.nn.convolution(x, k, strides=(2, 1), padding="VALID")
            loss = tf.reduce_sum(y * y)
        return [y, *tape.gradient(loss, [x, k])]

    for density in (0.05, 0.9):
        x = tf.cast(tf.random.stateless_uniform(x.shape, (1, 2)) < density, tf.float32)
        for a, b in zip(step(x, k), eager(x, k), strict=True):
            _assert_close(a, b, tf.float32)


def test_wrong_dtypes_and_no_kernel_use_the_twin(lib, rng):
    x, k = _case(
        rng,
        batch=2,
        spatial=(6, 6),
        channels=2,
        kernel_size=(2, 2),
        filters=3,
        density=0.1,
        dtype=tf.float32,
    )
    with ops.count_kernel_calls() as calls:
        y = conv.conv_input(
            tf.cast(x, tf.float16),
            k,
            strides=1,
            padding="valid",
            dilation_rate=1,
            use_kernel=True,
        )
    assert y.dtype == tf.float16 and calls == {"conv_input/dense": 1}


# --------------------------------------------------------------------------------------------
# Edge cases
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("rank", [1, 2])
@pytest.mark.parametrize("use_kernel", [True, False])
def test_empty_batch(lib, rng, rank, use_kernel):
    spatial, kernel, out = ((9,), (3,), (7,)) if rank == 1 else ((9, 8), (3, 2), (7, 7))
    x, k = _case(
        rng,
        batch=0,
        spatial=spatial,
        channels=4,
        kernel_size=kernel,
        filters=5,
        density=0.5,
        dtype=tf.float32,
    )
    g = tf.zeros((0, *out, 5))
    fns = [
        lambda a, b: conv.conv_input(
            a, b, strides=1, padding="valid", dilation_rate=1, use_kernel=use_kernel
        )
    ]
    if use_kernel:
        fns.append(lambda a, b: conv.event_conv(a, b, strides=1, padding="valid", dilation_rate=1))
    for fn in fns:
        y, gx, gk = _with_grads(fn, x, k, g)
        assert y.shape == (0, *out, 5)
        assert gx.shape == x.shape
        np.testing.assert_array_equal(gk, np.zeros(k.shape))


@pytest.mark.parametrize("dtype", [tf.float32, tf.float64], ids=["f32", "f64"])
def test_all_zero_input(lib, rng, dtype):
    x = tf.zeros((3, 7, 8, 2), dtype)
    k = tf.constant(rng.normal(size=(3, 3, 2, 4)), dtype)
    g = tf.constant(rng.normal(size=(3, 7, 8, 4)), dtype)
    y, gx, gk = _with_grads(
        lambda a, b: conv.event_conv(a, b, strides=1, padding="same", dilation_rate=1), x, k, g
    )
    np.testing.assert_array_equal(y, np.zeros(y.shape))
    np.testing.assert_array_equal(gk, np.zeros(k.shape))
    _, want_gx, _ = _with_grads(lambda a, b: tf.nn.convolution(a, b, padding="SAME"), x, k, g)
    _assert_close(gx, want_gx, dtype)


def test_nan_weight_reaches_only_outputs_of_active_inputs(lib):
    # documented difference from a dense convolution (0 * NaN = NaN there)
    x = np.zeros((1, 5, 5, 1), np.float32)
    x[0, 0, 0, 0] = 1.0
    k = np.ones((2, 2, 1, 1), np.float32)
    k[0, 0, 0, 0] = np.nan
    y = conv.event_conv(x, k, strides=1, padding="valid", dilation_rate=1).numpy()[0, :, :, 0]
    assert np.isnan(y[0, 0])  # the active input sits under the NaN weight there
    assert np.isfinite(y.ravel()[1:]).all()
    assert np.isnan(tf.nn.convolution(x, k, padding="VALID")).all()


def test_graded_and_negative_inputs_are_multiplied_in(lib, rng):
    x = tf.constant(rng.normal(size=(2, 6, 7, 3)) * (rng.random((2, 6, 7, 3)) < 0.4))
    k = tf.constant(rng.normal(size=(2, 3, 3, 5)))
    got = conv.event_conv(x, k, strides=(1, 2), padding="same", dilation_rate=1)
    _assert_close(got, tf.nn.convolution(x, k, strides=(1, 2), padding="SAME"), tf.float64)


# --------------------------------------------------------------------------------------------
# Bad arguments: the wrapper's ValueErrors, the op's InvalidArgument
# --------------------------------------------------------------------------------------------
_GOOD = {"strides": (1, 1), "padding": "valid", "dilation_rate": (1, 1), "groups": 1}


@pytest.mark.parametrize(
    "x_shape, k_shape, change, message",
    [
        ((2, 8), (3, 2, 4), {}, r"`inputs` must have rank 3 .* or 4 .*got shape \(2, 8\)"),
        ((2, 8, 8, 2), (3, 2, 4), {}, r"`kernel` must have rank 4 .*got shape \(3, 2, 4\)"),
        ((2, 8, 8, 2), (3, 3, 3, 4), {}, r"`kernel` has 3 input channels .*expected 2"),
        ((2, 8, 8, 3), (3, 3, 1, 4), {"groups": 2}, r"`groups`=2 must divide the 3 input"),
        ((2, 8, 8, 4), (3, 3, 2, 5), {"groups": 2}, r"`groups`=2 must divide the 5 filters"),
        ((2, 8, 8, 2), (3, 3, 2, 4), {"groups": 0}, r"`groups` must be an int >= 1, got 0"),
        ((2, 8, 8, 2), (3, 3, 2, 4), {"strides": (0, 1)}, r"`strides` must be .*got \(0, 1\)"),
        ((2, 8, 8, 2), (3, 3, 2, 4), {"strides": (1, 1, 1)}, r"`strides` must be .* 2 such"),
        ((2, 8, 8, 2), (3, 3, 2, 4), {"dilation_rate": -1}, r"`dilation_rate` must be .*-1"),
        ((2, 8, 8, 2), (3, 3, 2, 4), {"padding": "full"}, r"`padding` must be 'valid' or 'same'"),
        ((2, 8, 8, 2), (9, 3, 2, 4), {}, r"output height would be 0 .*input height 8"),
        ((2, 8, 2), (3, 2, 4), {"strides": 1, "dilation_rate": 4}, r"output width would be 0"),
        (
            (2, 8, 8, 2),
            (3, 3, 2, 4),
            {"strides": 2, "dilation_rate": 2},
            r"`strides` > 1 cannot be combined with `dilation_rate` > 1",
        ),
    ],
)
@pytest.mark.parametrize("fn", [conv.conv_input, conv.event_conv], ids=["conv_input", "event"])
def test_wrapper_rejects_bad_arguments(lib, x_shape, k_shape, change, message, fn):
    args = {**_GOOD, **change}
    if len(x_shape) == 3 and "strides" not in change:
        args.update(strides=1, dilation_rate=1)
    with pytest.raises(ValueError, match=message):
        fn(tf.zeros(x_shape), tf.zeros(k_shape), **args)


_OP = {"strides": [1, 1], "padding": "VALID"}


@pytest.mark.parametrize(
    "x_shape, k_shape, attrs, message",
    [
        ((2, 8, 2), (3, 3, 2, 4), {}, r"`input` must have rank 4 \[batch, height"),
        ((2, 8, 8, 2), (3, 3, 4), {}, r"`filter` must have rank 4"),
        ((2, 8, 8, 2), (3, 3, 3, 4), {}, r"`filter` has 3 input channels .*expected 2"),
        ((2, 8, 8, 3), (3, 3, 1, 4), {"groups": 2}, r"`input` has 3 channels, which `groups`=2"),
        ((2, 8, 8, 4), (3, 3, 2, 5), {"groups": 2}, r"`filter` has 5 output channels"),
        ((2, 8, 8, 2), (3, 3, 2, 4), {"groups": 0}, r"`groups` must be >= 1, got 0"),
        ((2, 8, 8, 2), (3, 3, 2, 4), {"strides": [1, 0]}, r"`strides` must hold 2 ints .*\[1, 0\]"),
        ((2, 8, 8, 2), (3, 3, 2, 4), {"strides": [1]}, r"`strides` must hold 2 ints .*\[1\]"),
        ((2, 8, 8, 2), (3, 3, 2, 4), {"dilations": [0, 1]}, r"`dilations` must hold 2 ints"),
        ((2, 8, 8, 2), (3, 9, 2, 4), {}, r"output width would be 0 .*input width 8"),
        ((2, 8, 8, 2), (0, 3, 2, 4), {}, r"filter height must be >= 1"),
    ],
)
def test_op_rejects_bad_shapes(lib, x_shape, k_shape, attrs, message):
    with pytest.raises((tf.errors.InvalidArgumentError, ValueError), match=message):
        lib.keras_spiking_event_conv2d(tf.zeros(x_shape), tf.zeros(k_shape), **{**_OP, **attrs})


def test_grad_op_rejects_a_gradient_of_the_wrong_shape(lib):
    x = tf.zeros((2, 8, 8, 2))
    sizes = tf.constant([3, 3, 2, 4])
    with pytest.raises(
        tf.errors.InvalidArgumentError,
        match=r"`out_backprop` has shape .*"
        r"expected \[2, 6, 6, 4\]",
    ):
        lib.keras_spiking_event_conv2d_grad_filter(x, tf.zeros((2, 6, 5, 4)), sizes, **_OP)
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"`filter_sizes` must be a vector"):
        lib.keras_spiking_event_conv2d_grad_filter(
            x, tf.zeros((2, 6, 6, 4)), tf.constant([3, 3, 2]), **_OP
        )
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"`filter_sizes` must not be neg"):
        lib.keras_spiking_event_conv2d_grad_filter(
            x, tf.zeros((2, 6, 6, 4)), tf.constant([3, 3, 2, -4]), **_OP
        )


def test_op_shape_inference(lib):
    @tf.function(input_signature=[tf.TensorSpec([None, 28, 28, 1]), tf.TensorSpec([5, 5, 1, 15])])
    def forward(x, k):
        y = lib.keras_spiking_event_conv2d(x, k, strides=[2, 1], padding="SAME")
        assert y.shape.as_list() == [None, 14, 28, 15]
        return y

    assert forward(tf.zeros((3, 28, 28, 1)), tf.zeros((5, 5, 1, 15))).shape == (3, 14, 28, 15)
