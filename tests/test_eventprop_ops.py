"""The EventProp C++ kernels (``custom_ops/eventprop.cc``) against their pure-TF twins.

The twins are ``_spiking_forward``, ``_readout_forward`` and ``_backward`` in
:mod:`keras_spiking.eventprop`. Forward passes are compared op against op; gradients through
``spiking_layer`` / ``readout_layer`` with ``use_custom_ops=True`` against ``False``, so the
kernel backward gets exactly the arguments the twin's ``_backward`` gets. A float64
finite-difference check of a 2-layer network through the kernels closes the chain to numbers
neither path produced.
"""

import dataclasses
import warnings

import numpy as np
import pytest
import tensorflow as tf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keras_spiking import eventprop as ep
from keras_spiking import ops

# float64: the same formulas in the same order up to the summation order of the matmuls
F64 = 1e-10
# float32: the kernels sum synaptic inputs in another order than TF's matmul, g++ fuses
# multiply-adds, and std::exp and Eigen's exp differ by an ulp; the spike-time interpolation
# (theta - V) / (V^- - V) and the backward's 1 / D amplify those ulps where a crossing is
# shallow. Relative to the largest magnitude of each output.
F32 = 1e-4
KIN = ep.Kinetics(tau_mem=20e-3, tau_syn=5e-3, threshold=1.0, dt=1e-3, steps=40)


@pytest.fixture(scope="module")
def lib():
    """The library must build and load here, with the EventProp kernels in it."""
    return ops.library.eventprop_library()


def _tol(dtype):
    return F64 if dtype == tf.float64 else F32


def _times(rng, batch, inputs, slots, density=0.5, window=KIN.steps * KIN.dt, past=0.2):
    """Sorted spike times, +inf where none; a fraction `past` lies beyond the window."""
    t = rng.uniform(0, window, (batch, inputs, slots))
    t = np.where(rng.random(t.shape) < past, t + window, t)
    t = np.where(rng.random(t.shape) < density, t, np.inf)
    return np.sort(t, axis=-1)


def _close(got, want, tol, what=""):
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape, what
    finite = np.isfinite(want)
    np.testing.assert_array_equal(np.isfinite(got), finite, err_msg=what)
    np.testing.assert_array_equal(got[~finite], want[~finite], err_msg=what)
    scale = max(float(np.max(np.abs(want[finite]), initial=0.0)), 1e-30)
    np.testing.assert_allclose(got[finite], want[finite], rtol=tol, atol=tol * scale, err_msg=what)


def _weights(rng, shape, dtype, mean=0.0, std=1.0):
    return tf.constant(rng.normal(mean, std, shape), dtype)


# --------------------------------------------------------------------------------------------
# Forward passes, op against op
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [tf.float32, tf.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("interpolate", [True, False], ids=["interp", "grid"])
@pytest.mark.parametrize("recurrent", [False, True], ids=["ff", "rec"])
def test_spiking_forward_equals_twin(lib, rng, dtype, interpolate, recurrent):
    times = tf.constant(_times(rng, 4, 20, 3), dtype)
    kernel = _weights(rng, (20, 30), dtype, 0.5, 1.0)
    rec = _weights(rng, (30, 30), dtype, 0.0, 0.3) if recurrent else None
    kwargs = dict(kinetics=KIN, max_spikes=8, interpolate=interpolate)
    got = ops.eventprop_spiking_forward(times, kernel, rec, **kwargs)
    want = ep.spiking_forward_reference(times, kernel, rec, **kwargs)
    (g_times, g_step, *g_rest), g_counts, g_overflow = got
    (w_times, w_step, *w_rest), w_counts, w_overflow = want
    assert int(tf.reduce_sum(w_counts)) > 20  # the case exercises spikes
    np.testing.assert_array_equal(g_step, w_step)
    np.testing.assert_array_equal(g_counts, w_counts)
    assert int(g_overflow) == int(w_overflow) == 0
    _close(g_times, w_times, _tol(dtype), "times")
    for name, a, b in zip(("phi", "slope", "current"), g_rest, w_rest, strict=True):
        _close(a, b, _tol(dtype), name)


@pytest.mark.parametrize("dtype", [tf.float32, tf.float64], ids=["f32", "f64"])
def test_overflow_counted_the_same(lib, rng, dtype):
    times = tf.constant(_times(rng, 3, 10, 4, density=0.9, past=0.0), dtype)
    kernel = _weights(rng, (10, 12), dtype, 3.0, 1.0)  # strong drive: many spikes each
    kwargs = dict(kinetics=KIN, max_spikes=2, interpolate=True)
    (g_times, g_step, *_), g_counts, g_overflow = ops.eventprop_spiking_forward(
        times, kernel, **kwargs
    )
    (w_times, w_step, *_), w_counts, w_overflow = ep.spiking_forward_reference(
        times, kernel, **kwargs
    )
    np.testing.assert_array_equal(g_counts, w_counts)
    assert int(g_overflow) == int(w_overflow) > 0
    assert int(w_overflow) == int(tf.reduce_sum(tf.maximum(w_counts - 2, 0)))
    np.testing.assert_array_equal(g_step, w_step)
    _close(g_times, w_times, _tol(dtype))


@pytest.mark.parametrize("dtype", [tf.float32, tf.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("readout", ep.READOUTS)
def test_readout_forward_equals_twin(lib, rng, dtype, readout):
    times = tf.constant(_times(rng, 5, 15, 2), dtype)
    kernel = _weights(rng, (15, 7), dtype)
    out, arg = ops.eventprop_readout_forward(times, kernel, kinetics=KIN, readout=readout)
    want, want_arg = ep.readout_forward_reference(times, kernel, kinetics=KIN, readout=readout)
    _close(out, want, _tol(dtype))
    np.testing.assert_array_equal(arg, want_arg)
    if readout == "max":
        assert np.any(want_arg.numpy() > 0)
    else:
        assert not np.any(arg.numpy())


# --------------------------------------------------------------------------------------------
# Gradients, through the layers (kernels against the twin's _backward)
# --------------------------------------------------------------------------------------------
def _network(times, w1, r1, w2, c_hidden, c_out, use, **options):
    """Loss of spiking layer -> readout, and its gradients (times, w1, r1, w2)."""
    readout = options.pop("readout", "max")
    kin = options.pop("kinetics", KIN)
    with tf.GradientTape() as tape:
        tape.watch([times, w1, w2] + ([r1] if r1 is not None else []))
        hidden = ep.spiking_layer(
            times, w1, r1, kinetics=kin, max_spikes=10, use_custom_ops=use, **options
        )
        out = ep.readout_layer(hidden, w2, kinetics=kin, readout=readout, use_custom_ops=use)
        finite = tf.where(tf.math.is_finite(hidden), hidden, tf.zeros_like(hidden))
        weight = c_out[:, None] if readout == "sequence" else c_out
        loss = tf.reduce_sum(out * weight) + tf.reduce_sum(finite * c_hidden)
    sources = [times, w1, w2] + ([r1] if r1 is not None else [])
    grads = tape.gradient(loss, sources)
    return [hidden, out, grads[0], grads[1], grads[3] if r1 is not None else None, grads[2]]


def _network_case(rng, dtype, recurrent, batch=3, inputs=12, hidden=16, out=4, drive=0.6):
    times = tf.constant(_times(rng, batch, inputs, 3), dtype)
    w1 = _weights(rng, (inputs, hidden), dtype, drive, 0.8)
    r1 = _weights(rng, (hidden, hidden), dtype, 0.0, 0.3) if recurrent else None
    w2 = _weights(rng, (hidden, out), dtype)
    c_hidden = tf.constant(rng.normal(size=(batch, hidden, 10)) * 10, dtype)
    c_out = tf.constant(rng.normal(size=(batch, out)), dtype)
    return times, w1, r1, w2, c_hidden, c_out


def _compare_network(case, dtype, **options):
    got = _network(*case, True, **dict(options))
    want = _network(*case, False, **dict(options))
    names = ("hidden", "out", "d_times", "d_w1", "d_r1", "d_w2")
    assert int(np.isfinite(want[0].numpy()).sum()) > 0  # spikes to differentiate
    for name, a, b in zip(names, got, want, strict=True):
        if b is None:
            assert a is None, name
            continue
        _close(a, b, _tol(dtype), name)


@pytest.mark.parametrize("dtype", [tf.float32, tf.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("interpolate", [True, False], ids=["interp", "grid"])
@pytest.mark.parametrize("recurrent", [False, True], ids=["ff", "rec"])
@pytest.mark.parametrize("min_slope", [None, 300.0], ids=["exact", "clamped"])
def test_gradients_equal_twin(lib, rng, dtype, interpolate, recurrent, min_slope):
    case = _network_case(rng, dtype, recurrent)
    _compare_network(case, dtype, interpolate=interpolate, min_slope=min_slope)


@pytest.mark.parametrize("readout", ep.READOUTS)
def test_gradients_equal_twin_every_readout(lib, rng, readout):
    case = _network_case(rng, tf.float64, True)
    _compare_network(case, tf.float64, readout=readout)


def test_gradients_equal_twin_with_count_regulariser_and_bump(lib, rng):
    # count_strength puts a gradient on every recorded slot; silent_bump acts after _backward
    case = _network_case(rng, tf.float64, True)
    _compare_network(case, tf.float64, count_strength=5.0, count_target=1.0, silent_bump=0.1)


def test_min_slope_clamp_changes_the_gradient(lib, rng):
    """The clamped case above really clamps: the gradient differs from the exact one."""
    case = _network_case(rng, tf.float64, False)
    exact = _network(*case, True)
    clamped = _network(*case, True, min_slope=300.0)
    assert not np.allclose(exact[3], clamped[3])


@pytest.mark.parametrize("interpolate", [True, False], ids=["interp", "grid"])
def test_equal_time_constants(lib, rng, interpolate):
    kin = ep.Kinetics(tau_mem=10e-3, tau_syn=10e-3, threshold=1.0, dt=1e-3, steps=30)
    case = _network_case(rng, tf.float64, True, drive=0.2)
    _compare_network(case, tf.float64, kinetics=kin, interpolate=interpolate)


# --------------------------------------------------------------------------------------------
# Degenerate inputs
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "batch, inputs, slots, units",
    [(0, 5, 2, 4), (3, 0, 2, 4), (3, 5, 0, 4), (3, 5, 2, 0)],
    ids=["empty_batch", "no_inputs", "no_slots", "no_units"],
)
def test_empty_shapes(lib, rng, batch, inputs, slots, units):
    times = tf.constant(_times(rng, batch, inputs, slots), tf.float64)
    w1 = _weights(rng, (inputs, units), tf.float64)
    r1 = _weights(rng, (units, units), tf.float64)
    w2 = _weights(rng, (units, 3), tf.float64)
    c_hidden = tf.ones((batch, units, 10), tf.float64)
    c_out = tf.ones((batch, 3), tf.float64)
    for readout in ep.READOUTS:
        got = _network(times, w1, r1, w2, c_hidden, c_out, True, readout=readout)
        want = _network(times, w1, r1, w2, c_hidden, c_out, False, readout=readout)
        for a, b in zip(got, want, strict=True):
            _close(a, b, F64)


def test_all_inf_and_past_window_inputs(lib, rng):
    inf = np.full((2, 6, 3), np.inf)
    past = np.sort(rng.uniform(KIN.steps * KIN.dt, 1.0, (2, 6, 3)), axis=-1)
    past[0, 0, 0] = KIN.steps * KIN.dt  # exactly the window's end: outside
    for values in (inf, past):
        times = tf.constant(values, tf.float64)
        case = (times, *_network_case(rng, tf.float64, True, batch=2, inputs=6)[1:])
        got = _network(*case, True)
        want = _network(*case, False)
        assert not np.isfinite(got[0].numpy()).any()  # no input, no spikes
        for a, b in zip(got, want, strict=True):
            _close(a, b, F64)
        assert not np.any(got[2].numpy())  # no gradient for input spikes that do not count


@pytest.mark.parametrize("dtype", [tf.float32, tf.float64], ids=["f32", "f64"])
def test_long_windows_need_no_steps_sized_scratch(lib, rng, dtype):
    """Windows of more than 2**16 steps group the events of a row by a comparison sort (the
    kernels' scratch then grows with the spikes only), shorter ones by a counting sort over the
    steps. The activity here dies out long before step 200, so both windows must give the same
    spikes, readout maximum and gradients, to the bit."""
    short = ep.Kinetics(tau_mem=20e-3, tau_syn=5e-3, threshold=1.0, dt=1e-3, steps=200)
    long = dataclasses.replace(short, steps=70_000)
    case = _network_case(rng, dtype, True)
    got = _network(*case, True, kinetics=long)
    want = _network(*case, True, kinetics=short)
    assert int(np.isfinite(want[0].numpy()).sum()) > 10  # spikes in the window
    assert np.any(want[3].numpy())  # and a gradient that depends on them
    for name, a, b in zip(("hidden", "out", "d_times", "d_w1", "d_r1", "d_w2"), got, want):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=name)


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    batch=st.integers(1, 3),
    inputs=st.integers(1, 10),
    slots=st.integers(1, 3),
    hidden=st.integers(1, 10),
    steps=st.integers(1, 25),
    density=st.floats(0.0, 1.0),
    drive=st.floats(0.0, 3.0),
    interpolate=st.booleans(),
    recurrent=st.booleans(),
    readout=st.sampled_from(ep.READOUTS),
    seed=st.integers(0, 2**31 - 1),
)
def test_random_networks_equal_twin(
    lib, batch, inputs, slots, hidden, steps, density, drive, interpolate, recurrent, readout, seed
):
    rng = np.random.default_rng(seed)
    kin = ep.Kinetics(tau_mem=20e-3, tau_syn=5e-3, threshold=1.0, dt=1e-3, steps=steps)
    dtype = tf.float64
    times = tf.constant(_times(rng, batch, inputs, slots, density, kin.steps * kin.dt), dtype)
    w1 = _weights(rng, (inputs, hidden), dtype, drive, 1.0)
    r1 = _weights(rng, (hidden, hidden), dtype, 0.0, 0.5) if recurrent else None
    w2 = _weights(rng, (hidden, 2), dtype)
    c_hidden = tf.constant(rng.normal(size=(batch, hidden, 10)), dtype)
    c_out = tf.constant(rng.normal(size=(batch, 2)), dtype)
    options = dict(kinetics=kin, interpolate=interpolate, readout=readout, on_overflow="warn")
    got = _network(times, w1, r1, w2, c_hidden, c_out, True, **dict(options))
    want = _network(times, w1, r1, w2, c_hidden, c_out, False, **dict(options))
    for a, b in zip(got, want, strict=True):
        if b is None:
            assert a is None
        else:
            _close(a, b, F64)


# --------------------------------------------------------------------------------------------
# Finite differences through the kernels
# --------------------------------------------------------------------------------------------
def test_finite_differences_through_kernels(lib):
    """float64 central differences of a 2-layer recurrent network, kernels only.

    Perturbations of 1e-7 move spike times but (asserted) create or remove no spike, where
    the EventProp gradient is exact for the gridded model.
    """
    rng = np.random.default_rng(0)
    kin = ep.Kinetics(tau_mem=20e-3, tau_syn=5e-3, threshold=1.0, dt=1e-3, steps=60)
    batch, inputs, hidden, out = 2, 6, 5, 3
    times = np.sort(rng.uniform(0, 0.03, (batch, inputs, 3)), axis=-1)
    times[0, 0, 2] = np.inf
    times = tf.constant(times)
    weights = [
        rng.normal(0.8, 0.8, (inputs, hidden)),
        rng.normal(0, 0.3, (hidden, hidden)),
        rng.normal(1.0, 1.0, (hidden, out)),
    ]
    c_out = tf.constant(rng.normal(size=(batch, out)))

    def loss(w1, r1, w2):
        hidden_t = ep.spiking_layer(times, w1, r1, kinetics=kin, max_spikes=10, use_custom_ops=True)
        o = ep.readout_layer(hidden_t, w2, kinetics=kin, readout="max", use_custom_ops=True)
        finite = tf.where(tf.math.is_finite(hidden_t), hidden_t, tf.zeros_like(hidden_t))
        return tf.reduce_sum(o * c_out) + 10 * tf.reduce_sum(finite), hidden_t

    variables = [tf.constant(w) for w in weights]
    with tf.GradientTape() as tape:
        tape.watch(variables)
        value, hidden_t = loss(*variables)
    grads = tape.gradient(value, variables)
    assert 3 <= int(np.isfinite(hidden_t.numpy()).sum())  # spikes whose times move
    eps = 1e-7
    for index, (w, g) in enumerate(zip(weights, grads, strict=True)):
        fd = np.zeros(w.shape)
        for ij in np.ndindex(w.shape):
            results = []
            for sign in (1, -1):
                args = [tf.constant(x) for x in weights]
                shifted = w.copy()
                shifted[ij] += sign * eps
                args[index] = tf.constant(shifted)
                results.append(loss(*args))
            (up, h_up), (down, h_down) = results
            # no spike created or removed: the same slots are filled in both
            np.testing.assert_array_equal(np.isfinite(h_up), np.isfinite(h_down))
            np.testing.assert_array_equal(np.isfinite(h_up), np.isfinite(hidden_t))
            fd[ij] = (up - down) / (2 * eps)
        error = np.abs(fd - g.numpy()).max() / np.abs(fd).max()
        assert error < 1e-5, (index, error)


# --------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------
def _kin_vec(tau_mem=20e-3, tau_syn=5e-3, threshold=1.0, dt=1e-3):
    return tf.constant([tau_mem, tau_syn, threshold, dt], tf.float64)


def _forward(lib, times, kernel, rec=None, kinetics=None, steps=10, max_spikes=4):
    rec = tf.zeros([0, 0], kernel.dtype) if rec is None else rec
    return lib.keras_spiking_event_prop_spiking_forward(
        times,
        kernel,
        rec,
        _kin_vec() if kinetics is None else kinetics,
        steps=steps,
        max_spikes=max_spikes,
    )


@pytest.mark.parametrize(
    "change, match",
    [
        (dict(times=tf.zeros([2, 3])), "times_in.*rank 3"),
        (dict(kernel=tf.zeros([4, 5])), "kernel.*dimension 0 must be 3"),
        (dict(rec=tf.zeros([5, 4])), "recurrent.*\\[0, 0\\] for none"),
        (dict(kinetics=tf.constant([1.0, 2.0], tf.float64)), "kinetics.*shape \\[4\\]"),
        (dict(kinetics=_kin_vec(tau_mem=0.0)), "must be finite and > 0"),
        (dict(kinetics=_kin_vec(dt=-1e-3)), "must be finite and > 0"),
        (dict(kinetics=_kin_vec(threshold=np.nan)), "threshold must be finite"),
        (dict(steps=0), "steps.*>= 1"),
        (dict(max_spikes=0), "max_spikes.*>= 1"),
    ],
)
def test_spiking_forward_rejects_bad_input(lib, change, match):
    args = dict(times=tf.zeros([2, 3, 1]), kernel=tf.zeros([3, 5]))
    args.update(change)
    with pytest.raises(tf.errors.InvalidArgumentError, match=match):
        _forward(lib, **args)


def test_other_ops_reject_bad_input(lib):
    times, kernel = tf.zeros([2, 3, 1]), tf.zeros([3, 5])
    with pytest.raises(tf.errors.InvalidArgumentError, match="steps.*>= 1"):
        lib.keras_spiking_event_prop_readout_forward(times, kernel, _kin_vec(), steps=0)
    with pytest.raises(tf.errors.InvalidArgumentError, match="kernel.*dimension 0 must be 3"):
        lib.keras_spiking_event_prop_readout_forward(times, tf.zeros([2, 5]), _kin_vec(), steps=5)
    kin = ep.Kinetics(steps=10)
    record, _, _ = ops.eventprop_spiking_forward(times, kernel, kinetics=kin, max_spikes=4)
    with pytest.raises(tf.errors.InvalidArgumentError, match="grad_times.*dimension 2 must be 4"):
        ops.eventprop_backward(times, kernel, None, record, tf.zeros([2, 5, 3]), kinetics=kin)
    with pytest.raises(tf.errors.InvalidArgumentError, match="readout_grad.*rank 3"):
        ops.eventprop_backward(
            times, kernel, kinetics=kin, readout="sequence", readout_grad=tf.zeros([2, 5])
        )
    with pytest.raises(tf.errors.InvalidArgumentError, match="argmax.*dimension 0 must be 2"):
        ops.eventprop_backward(
            times, kernel, kinetics=kin, readout="max", readout_grad=tf.zeros([2, 5])
        )
    with pytest.raises(ValueError, match="either `spikes`"):
        ops.eventprop_backward(times, kernel, kinetics=kin)


def test_dispatch_setting_is_validated_and_float16_uses_the_twin(lib, rng):
    times = tf.constant(_times(rng, 2, 4, 2), tf.float64)
    with pytest.raises(ValueError, match="use_custom_ops"):
        ep.spiking_layer(
            times,
            tf.ones([4, 3], tf.float64),
            kinetics=KIN,
            max_spikes=3,
            use_custom_ops="sometimes",
        )
    assert ops.eventprop_enabled(True, tf.float32)
    assert not ops.eventprop_enabled(False, tf.float32)
    assert not ops.eventprop_enabled(True, tf.float16)


def test_library_without_eventprop_kernels(lib, monkeypatch):
    """An older prebuilt library: True raises, "auto" warns once and runs the twin."""
    monkeypatch.setattr(ops.library, "EVENTPROP_OPS", ("keras_spiking_no_such_op",))
    monkeypatch.setattr(ops.library, "_warned", False)
    with pytest.raises(ops.OpLibraryError, match="no EventProp kernels.*SOURCES"):
        ops.eventprop_enabled(True, tf.float32)
    with ops.use_custom_ops("auto"), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert not ops.eventprop_enabled("auto", tf.float32)
        assert not ops.eventprop_enabled("auto", tf.float32)
    assert len([w for w in caught if "no EventProp kernels" in str(w.message)]) == 1
