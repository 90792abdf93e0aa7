"""The TF scans of keras_spiking.scan equal TF autodiff through the reference step functions.

Each scan (LIF and CubaLIF with and without recurrent weights, both resets, reset detached and
attached; the leaky integrator), XLA-compiled and as a plain while loop, is run in float64
next to a Python loop over the step functions of :mod:`keras_spiking.dynamics` with the same
surrogate; the forward outputs and the gradients of a random linear function of all outputs
(with respect to the inputs, initial states, decays and recurrent weights) must agree; a scan
of zero steps returns its initial state. Both sides are package code:
``tests/test_scan_gradients.py`` checks the scans' gradients against float64 finite
differences of NumPy simulations instead.
"""

import numpy as np
import pytest
import tensorflow as tf

from keras_spiking import dynamics, scan, surrogates

T, B, N = 12, 3, 5


def _unrolled_lif(currents, v0, s0, beta, rec, threshold, surrogate, reset, detach):
    state = dynamics.LIFState(v0, s0)
    out = []
    for t in range(currents.shape[0]):
        s, state = dynamics.lif_step(
            state,
            currents[t],
            beta=beta,
            threshold=threshold,
            spike_fn=surrogate,
            reset=reset,
            detach_reset=detach,
            recurrent_kernel=rec,
        )
        out.append(s)
    return tf.stack(out), state.v, state.s


def _unrolled_cuba(currents, i0, v0, alpha, beta, rec, threshold, surrogate, reset, detach):
    state = dynamics.CubaLIFState(i0, v0)
    out = []
    for t in range(currents.shape[0]):
        s, state = dynamics.cuba_lif_step(
            state,
            currents[t],
            alpha=alpha,
            beta=beta,
            threshold=threshold,
            spike_fn=surrogate,
            reset=reset,
            detach_reset=detach,
            recurrent_kernel=rec,
        )
        out.append(s)
    return tf.stack(out), state.i, state.v


def _grads(fn, args, weights):
    """Outputs of fn and the gradient of a random linear functional of all outputs."""
    args = [tf.constant(a) for a in args]
    with tf.GradientTape() as tape:
        tape.watch(args)
        outs = fn(*args)
        loss = sum(tf.reduce_sum(o * w) for o, w in zip(outs, weights))
    grads = tape.gradient(loss, args)
    grads = [np.zeros(a.shape) if g is None else g.numpy() for a, g in zip(args, grads)]
    return [o.numpy() for o in outs], grads


@pytest.mark.parametrize("jit", [True, False])
@pytest.mark.parametrize("reset", ["subtract", "zero"])
@pytest.mark.parametrize("detach", [True, False])
@pytest.mark.parametrize("recurrent", [False, True])
def test_lif_scan_matches_step_autodiff(jit, reset, detach, recurrent):
    rng = np.random.default_rng(1)
    currents = rng.normal(0.4, 0.6, (T, B, N))
    v0 = rng.normal(0, 0.5, (B, N))
    s0 = (rng.random((B, N)) < 0.3).astype(np.float64)
    beta = rng.uniform(0.7, 0.95, N)
    rec = rng.normal(0, 0.3, (N, N))
    sur = surrogates.FastSigmoid(scale=3.0)
    weights = [rng.normal(size=(T, B, N)), rng.normal(size=(B, N)), rng.normal(size=(B, N))]

    def fused(c, v, s, b, r):
        out = scan.lif_scan(
            tf.transpose(c, [1, 0, 2]),  # the scans take batch-major inputs
            v,
            s,
            b,
            r if recurrent else None,
            threshold=1.0,
            surrogate=sur,
            reset=reset,
            detach_reset=detach,
            jit=jit,
        )
        return (tf.transpose(out[0], [1, 0, 2]), *out[1:])  # back to time-major

    def reference(c, v, s, b, r):
        return _unrolled_lif(c, v, s, b, r if recurrent else None, 1.0, sur, reset, detach)

    args = [currents, v0, s0, beta, rec]
    out_f, g_f = _grads(fused, args, weights)
    out_r, g_r = _grads(reference, args, weights)
    assert out_f[0].sum() > 0  # the case exercises spikes
    for a, b in zip(out_f, out_r):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)  # same float64 arithmetic
    names = ["currents", "v0", "s0", "beta", "rec"]
    for name, a, b in zip(names, g_f, g_r):
        if name == "rec" and not recurrent:
            continue
        # float64; only the summation order differs
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-10, err_msg=name)


@pytest.mark.parametrize("jit", [True, False])
@pytest.mark.parametrize("reset", ["subtract", "zero"])
@pytest.mark.parametrize("detach", [True, False])
@pytest.mark.parametrize("recurrent", [False, True])
def test_cuba_scan_matches_step_autodiff(jit, reset, detach, recurrent):
    rng = np.random.default_rng(2)
    currents = rng.normal(0.3, 0.5, (T, B, N))
    i0 = rng.normal(0, 0.5, (B, N))
    v0 = rng.normal(0.5, 0.5, (B, N))
    alpha = rng.uniform(0.5, 0.9, N)
    beta = rng.uniform(0.7, 0.95, N)
    rec = rng.normal(0, 0.3, (N, N))
    sur = surrogates.ArcTan(scale=1.0)
    weights = [rng.normal(size=(T, B, N)), rng.normal(size=(B, N)), rng.normal(size=(B, N))]

    def fused(c, i, v, a, b, r):
        out = scan.cuba_lif_scan(
            tf.transpose(c, [1, 0, 2]),  # the scans take batch-major inputs
            i,
            v,
            a,
            b,
            r if recurrent else None,
            threshold=1.0,
            surrogate=sur,
            reset=reset,
            detach_reset=detach,
            jit=jit,
        )
        return (tf.transpose(out[0], [1, 0, 2]), *out[1:])

    def reference(c, i, v, a, b, r):
        return _unrolled_cuba(c, i, v, a, b, r if recurrent else None, 1.0, sur, reset, detach)

    args = [currents, i0, v0, alpha, beta, rec]
    out_f, g_f = _grads(fused, args, weights)
    out_r, g_r = _grads(reference, args, weights)
    assert out_f[0].sum() > 0
    for a, b in zip(out_f, out_r):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)
    names = ["currents", "i0", "v0", "alpha", "beta", "rec"]
    for name, a, b in zip(names, g_f, g_r):
        if name == "rec" and not recurrent:
            continue
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-10, err_msg=name)


@pytest.mark.parametrize("jit", [True, False])
def test_li_scan_matches_step_autodiff(jit):
    rng = np.random.default_rng(3)
    args = [rng.normal(size=(T, B, N)), rng.normal(size=(B, N)), rng.uniform(0.5, 0.99, N)]
    weights = [rng.normal(size=(T, B, N)), rng.normal(size=(B, N))]

    def reference(c, v, b):
        out = []
        for t in range(T):
            v = dynamics.li_step(v, c[t], beta=b)
            out.append(v)
        return tf.stack(out), v

    def fused(c, v, b):
        v_all, v_last = scan.li_scan(tf.transpose(c, [1, 0, 2]), v, b, jit=jit)
        return tf.transpose(v_all, [1, 0, 2]), v_last

    out_f, g_f = _grads(fused, args, weights)
    out_r, g_r = _grads(reference, args, weights)
    for a, b in zip(out_f, out_r):
        np.testing.assert_allclose(a, b, rtol=1e-12)
    for a, b in zip(g_f, g_r):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("jit", [True, False])
def test_zero_time_steps(jit):
    v0 = tf.ones([2, 3])
    spikes, v, s = scan.lif_scan(
        tf.zeros([2, 0, 3]),
        v0,
        tf.zeros([2, 3]),
        tf.ones([3]) * 0.9,
        threshold=1.0,
        surrogate=surrogates.get("triangle"),
        jit=jit,
    )
    assert spikes.shape == (2, 0, 3)
    np.testing.assert_array_equal(v.numpy(), v0.numpy())
