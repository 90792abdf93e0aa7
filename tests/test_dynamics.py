"""Hand-checkable traces of the step functions (numbers worked out on paper in the comments)."""

import math

import numpy as np
import pytest
import tensorflow as tf

from keras_spiking import dynamics, surrogates

SPIKE = surrogates.get("fast_sigmoid")


def test_decay_factor():
    assert dynamics.decay_factor(20e-3) == pytest.approx(math.exp(-1 / 20))
    np.testing.assert_allclose(
        dynamics.decay_factor(tf.constant([1e-3, 2e-3]), dt=1e-3).numpy(),
        np.exp([-1.0, -0.5]),
        rtol=1e-6,
    )


@pytest.mark.parametrize(
    "reset, spikes, v_trace",
    [
        # beta = 0.5, I = 0.6: u = 0.6, 0.9, 1.05 (spike), then from v = 0.05 (subtract):
        # 0.625, 0.9125, 1.05625 (spike) -> v = 0.05625
        ("subtract", [0, 0, 1, 0, 0, 1], [0.6, 0.9, 0.05, 0.625, 0.9125, 0.05625]),
        # reset to zero: 0.6, 0.9, 1.05 -> 0, 0.6, 0.9, 1.05 -> 0
        ("zero", [0, 0, 1, 0, 0, 1], [0.6, 0.9, 0.0, 0.6, 0.9, 0.0]),
    ],
)
def test_lif_trace(reset, spikes, v_trace):
    state = dynamics.LIFState(tf.zeros([1, 1], "float64"), tf.zeros([1, 1], "float64"))
    got_s, got_v = [], []
    for _ in range(6):
        s, state = dynamics.lif_step(
            state,
            tf.constant([[0.6]], "float64"),
            beta=0.5,
            threshold=1.0,
            spike_fn=SPIKE,
            reset=reset,
        )
        got_s.append(float(s[0, 0]))
        got_v.append(float(state.v[0, 0]))
    assert got_s == spikes
    np.testing.assert_allclose(got_v, v_trace, rtol=1e-12)


@pytest.mark.parametrize(
    "reset, spikes, v_trace",
    [
        # alpha = beta = 0.5, drive 0.8: I = 0, .8, 1.2, 1.4, 1.5, 1.55; U = 0, 0, .8, 1.6 (spike)
        # U[n+1] = .5 U + I - S: 1.2 (spike), 1.1 (spike), 1.1
        ("subtract", [0, 0, 0, 1, 1, 1], [0.0, 0.8, 1.6, 1.2, 1.1, 1.1]),
        # zero: U = 0, 0, .8, 1.6 (spike) -> 0, then .5*0 + 1.5 = 1.5 (spike) -> 0
        ("zero", [0, 0, 0, 1, 0, 1], [0.0, 0.8, 1.6, 0.0, 1.5, 0.0]),
    ],
)
def test_cuba_lif_trace(reset, spikes, v_trace):
    state = dynamics.CubaLIFState(tf.zeros([1, 1], "float64"), tf.zeros([1, 1], "float64"))
    got_s, got_v = [], []
    for _ in range(6):
        s, state = dynamics.cuba_lif_step(
            state,
            tf.constant([[0.8]], "float64"),
            alpha=0.5,
            beta=0.5,
            threshold=1.0,
            spike_fn=SPIKE,
            reset=reset,
        )
        got_s.append(float(s[0, 0]))
        got_v.append(float(state.v[0, 0]))
    assert got_s == spikes
    np.testing.assert_allclose(got_v, v_trace, rtol=1e-12)


def test_li_trace_is_geometric_series():
    v = tf.zeros([1, 1], "float64")
    trace = []
    for _ in range(5):
        v = dynamics.li_step(v, tf.constant([[1.0]], "float64"), beta=0.5)
        trace.append(float(v[0, 0]))
    np.testing.assert_allclose(trace, [1.0, 1.5, 1.75, 1.875, 1.9375], rtol=1e-12)


def test_recurrent_input_uses_previous_spikes():
    # one neuron that spiked last step, self-weight 0.5: u = 0 + 0.2 + 0.5 = 0.7, no spike
    state = dynamics.LIFState(tf.zeros([1, 1]), tf.ones([1, 1]))
    s, state = dynamics.lif_step(
        state,
        tf.constant([[0.2]]),
        beta=0.9,
        threshold=1.0,
        spike_fn=SPIKE,
        recurrent_kernel=tf.constant([[0.5]]),
    )
    assert float(s[0, 0]) == 0.0
    assert float(state.v[0, 0]) == pytest.approx(0.7)


def test_bad_reset_mode():
    with pytest.raises(ValueError, match="`reset` must be one of"):
        dynamics.apply_reset(tf.zeros(1), tf.zeros(1), 1.0, "clip", True)
