"""Spiking Recurrent Cell: hand-checked traces, periodic pulses, f-I curve, gradients against
float64 finite differences of a NumPy oracle (XLA and plain paths), XLA path == plain path
(outputs, states, gradients, a few Adam steps in fit), equality with keras.layers.RNN(cell),
masking, stateful streaming, serialization, argument errors and training."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_spiking as ks
from keras_spiking import layers
from keras_spiking.layers import SRC
from keras_spiking.spiking_recurrent_cell import MaxValue, SpikingRecurrentCell, SRCState, src_step

DEFAULTS = dict(alpha=0.9, rho=3.0, r=2.0, r_s=-7.0, z=0.0, z_hyp=0.9, z_dep=0.0)


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def np_src(x, w, b, slope=10.0, record=None, **constants):
    """NumPy oracle of an SRC layer: x [batch, T, features] -> pulses [batch, T, units]."""
    p = {**DEFAULTS, **{k: np.asarray(v, dtype="float64") for k, v in constants.items()}}
    batch, steps, _ = x.shape
    i = h = hs = np.zeros((batch, w.shape[1]))
    out = []
    for t in range(steps):
        i = p["alpha"] * i + x[:, t] @ w
        xt = p["rho"] * np.tanh(i / p["rho"])
        gate = (h > 0.5).astype(float) if slope is None else _sigmoid(slope * (h - 0.5))
        zs = p["z_hyp"] + (p["z_dep"] - p["z_hyp"]) * gate
        h_new = p["z"] * h + (1 - p["z"]) * np.tanh(xt + p["r"] * h + p["r_s"] * hs + b)
        hs = zs * hs + (1 - zs) * h
        h = h_new
        if record is not None:
            record.append(h)
        out.append(np.maximum(h, 0.0))
    return np.stack(out, axis=1)


def _onsets(pulses):
    """Indices of the first step of each pulse (output turns positive) along axis 0."""
    on = pulses > 0
    return np.flatnonzero(on[1:] & ~on[:-1]) + 1


def _single_neuron(current, steps, **kwargs):
    layer = SRC(1, kernel_initializer="ones", return_state=True, dtype="float64", **kwargs)
    x = np.broadcast_to(
        np.asarray(current, "float64").reshape(-1, 1, 1), (np.size(current), steps, 1)
    )
    return [t.numpy() for t in layer(x)]


# ---- single-neuron behaviour ---------------------------------------------------------------------
def test_default_slow_gate_is_the_reference_logistic():
    """Default gate == the form of the authors' group's float reference (see the src module
    docstring, source [F]): z_hyp - (z_hyp - z_dep) / (1 + exp(-10 (h[t-1] - 0.5)))."""
    cell = SpikingRecurrentCell(5, dtype="float64")
    h_prev = np.array([[-0.9, 0.0, 0.45, 0.5, 0.9]])
    state = SRCState(*(np.zeros((1, 5)),) * 3)._replace(h=h_prev, h_s=np.full((1, 5), 0.3))
    cell.build((None, 1))
    params = cell.step_params(tf.float64)
    _, new = src_step(state, np.zeros((1, 5)), **params)
    z_s = 0.9 - (0.9 - 0.0) / (1.0 + np.exp(-10.0 * (h_prev - 0.5)))
    expected_hs = z_s * 0.3 + (1.0 - z_s) * h_prev
    # float64 on O(1) values: the two forms differ by rounding only
    np.testing.assert_allclose(new.h_s.numpy(), expected_hs, rtol=0, atol=1e-12)


def test_first_steps_by_hand():
    # c = 0.6 per step, states start at 0, b = -6:
    # t0: i = 0.6, x = 3 tanh(0.2), h = tanh(x - 6), h_s = 0 (z_s = 0.9 + ... uses h = 0)
    # t1: i = 1.14, h = tanh(3 tanh(0.38) + 2 h0 - 6), h_s = z_s (h0) * 0 + (1 - z_s) h0
    s, i, h, hs = _single_neuron(0.6, 2)
    h0 = np.tanh(3 * np.tanh(0.2) - 6)
    zs1 = 0.9 - 0.9 * _sigmoid(10 * (h0 - 0.5))
    h1 = np.tanh(3 * np.tanh(1.14 / 3) + 2 * h0 - 6)
    np.testing.assert_allclose(i[0], [1.14], rtol=1e-14)
    np.testing.assert_allclose(h[0], [h1], rtol=1e-14)
    np.testing.assert_allclose(hs[0], [(1 - zs1) * h0], rtol=1e-14)
    np.testing.assert_array_equal(s[0, :, 0], [0.0, 0.0])  # h < 0: no output yet


def test_constant_input_gives_periodic_pulses():
    pulses, *_ = _single_neuron(0.6, 300)
    trace = pulses[0, :, 0]
    assert trace.min() >= 0 and trace.max() < 1  # ReLU(tanh(.)) is a graded pulse in [0, 1)
    onsets = _onsets(trace)
    intervals = np.diff(onsets)
    assert len(onsets) >= 10, onsets
    steady = intervals[1:]  # after the first interval (transient of i and h_s)
    assert steady.max() - steady.min() <= 1, intervals
    assert 15 <= np.median(steady) <= 30
    widths = [np.argmax(trace[k:] <= 0) for k in onsets[:-1]]
    assert max(widths) <= 4  # a pulse lasts a few steps


@pytest.mark.parametrize("slope", [10.0, None], ids=["sigmoid_gate", "heaviside_gate"])
def test_no_input_no_pulses(slope):
    pulses, i, h, hs = _single_neuron(0.0, 400, slow_gate_slope=slope)
    assert not pulses.any()
    assert -0.95 < h[0, 0] < -0.85 and -0.95 < hs[0, 0] < -0.85  # rest state near -0.9
    np.testing.assert_array_equal(i, 0.0)


def test_f_i_curve_monotone():
    currents = np.linspace(0.0, 1.0, 21)
    pulses, *_ = _single_neuron(currents, 400)
    counts = np.array([len(_onsets(p[:, 0])) for p in pulses])
    assert np.all(np.diff(counts) >= 0), counts
    assert counts[0] == 0 and counts[-1] > counts[0] + 10, counts


def test_step_function_matches_numpy_oracle_with_per_neuron_constants(rng):
    constants = dict(
        alpha=[0.8, 0.9, 0.95],
        rho=[2.0, 3.0, 4.0],
        r=[1.5, 2.0, 2.5],
        r_s=[-6.0, -7.0, -8.0],
        z=[0.0, 0.1, 0.2],
        z_hyp=[0.85, 0.9, 0.95],
        z_dep=[0.0, 0.05, 0.1],
    )
    x = rng.uniform(0, 1, (2, 40, 4))
    w = rng.normal(0.3, 0.3, (4, 3))
    b = np.array([-6.0, -5.0, -4.5])
    for slope in (10.0, 3.0, None):
        layer = SRC(3, dtype="float64", slow_gate_slope=slope, **constants)
        layer.build(x.shape)
        layer.cell.set_weights([w, b])
        expected = np_src(x, w, b, slope=slope, **constants)
        assert expected.any()
        np.testing.assert_allclose(layer(x).numpy(), expected, rtol=1e-12, atol=1e-14)


def test_src_step_is_pure():
    state = SRCState(*[tf.zeros((2, 3), "float64")] * 3)
    s, new = src_step(state, tf.fill((2, 3), tf.constant(2.0, "float64")), bias=-6.0)
    assert isinstance(new, SRCState) and s.shape == (2, 3)
    np.testing.assert_allclose(new.i.numpy(), 2.0)
    np.testing.assert_array_equal(state.i.numpy(), 0.0)


# ---- gradients -----------------------------------------------------------------------------------
def _two_layer_model(steps, slope, jit_compile=True):
    return keras.Sequential(
        [
            keras.Input((steps, 3), dtype="float64"),
            SRC(
                4,
                slow_gate_slope=slope,
                jit_compile=jit_compile,
                kernel_initializer=keras.initializers.RandomNormal(0.4, 0.3, seed=3),
                bias_initializer=keras.initializers.RandomUniform(-6.0, -5.0, seed=4),
                dtype="float64",
            ),
            SRC(
                2,
                slow_gate_slope=slope,
                jit_compile=jit_compile,
                kernel_initializer=keras.initializers.RandomNormal(1.5, 0.5, seed=5),
                dtype="float64",
            ),
        ]
    )


@pytest.mark.parametrize("jit_compile", [True, False], ids=["xla", "plain"])
@pytest.mark.parametrize("slope", [10.0, None], ids=["sigmoid_gate", "heaviside_gate"])
def test_gradients_match_finite_differences(slope, jit_compile, rng):
    steps = 40
    x = rng.uniform(0.3, 1.0, (3, steps, 3))
    readout = rng.normal(size=(3, steps, 2))
    model = _two_layer_model(steps, slope, jit_compile)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(model(x) * readout)
    grads = [g.numpy() for g in tape.gradient(loss, model.trainable_weights)]
    params = [w.numpy() for w in model.trainable_weights]
    names = [w.path for w in model.trainable_weights]
    assert len(params) == 4 and all(np.any(g != 0) for g in grads)

    def np_loss(p, record=None):
        hidden = np_src(x, p[0], p[1], slope=slope, record=record)
        return np.sum(np_src(hidden, p[2], p[3], slope=slope, record=record) * readout)

    record = []
    assert np_loss(params, record) == pytest.approx(float(loss), rel=1e-12)  # same forward
    hidden = np_src(x, params[0], params[1], slope=slope)
    assert hidden.any() and np_src(hidden, params[2], params[3], slope=slope).any()
    gates = [h > 0.5 for h in record]
    if slope is None:
        # The Heaviside gate is flat except at h = 0.5: the inputs keep every h away from it
        # (checked below: no gate flips under any perturbation), so the loss is smooth there.
        assert min(np.abs(h - 0.5).min() for h in record) > 1e-4
    eps = 1e-6
    for p, grad, name in zip(range(len(params)), grads, names):
        fd = np.zeros_like(params[p])
        for idx in np.ndindex(params[p].shape):
            for sign in (1, -1):
                shifted = [q.copy() for q in params]
                shifted[p][idx] += sign * eps
                shifted_record = []
                fd[idx] += sign * np_loss(shifted, shifted_record) / (2 * eps)
                flips = [np.any((h > 0.5) != g) for h, g in zip(shifted_record, gates)]
                assert not any(flips), (name, idx)
        np.testing.assert_allclose(grad, fd, rtol=1e-5, atol=1e-7, err_msg=name)


def test_straight_through_passes_gradient_below_zero():
    # A neuron at rest has h < 0 at every step: ReLU blocks every gradient, the straight-through
    # output passes d loss / d h.
    x = np.full((1, 10, 1), 0.05)
    grads = {}
    for straight in (False, True):
        layer = SRC(1, kernel_initializer="ones", straight_through=straight, dtype="float64")
        with tf.GradientTape() as tape:
            out = layer(x)
            loss = tf.reduce_sum(out)
        assert not out.numpy().any()
        grads[straight] = [g.numpy() for g in tape.gradient(loss, layer.trainable_weights)]
    assert all(not g.any() for g in grads[False])
    assert all(g.all() for g in grads[True])


def test_detach_recurrent_changes_only_the_gradient(rng):
    x = rng.uniform(0.3, 1.0, (2, 30, 3))
    outs, grads = [], []
    for detach in (False, True):
        layer = SRC(
            3,
            detach_recurrent=detach,
            kernel_initializer=keras.initializers.RandomNormal(0.5, 0.2, seed=1),
            dtype="float64",
        )
        with tf.GradientTape() as tape:
            out = layer(x)
            loss = tf.reduce_sum(out**2)
        outs.append(out.numpy())
        grads.append(tape.gradient(loss, layer.trainable_weights)[0].numpy())
    np.testing.assert_array_equal(outs[0], outs[1])
    assert outs[0].any() and not np.allclose(grads[0], grads[1])


# ---- XLA path == plain path ----------------------------------------------------------------------
XLA_CASES = [
    dict(),
    dict(slow_gate_slope=None, detach_recurrent=True),
    dict(straight_through=True, z=[0.0, 0.2, 0.1], alpha=[0.9, 0.8, 0.95], rho=2.5),
]


@pytest.mark.parametrize("masked", [False, True], ids=["no_mask", "mask"])
@pytest.mark.parametrize("options", XLA_CASES, ids=["default", "heaviside_detach", "st_per_neuron"])
def test_xla_path_equals_plain_path(options, masked, rng):
    # same outputs, final states and gradients (weights, inputs, initial states) in float64
    x = rng.uniform(0.0, 1.0, (3, 35, 4))
    mask = None
    if masked:
        mask = np.ones((3, 35), bool)
        mask[0, 4:9] = False
        mask[2, 30:] = False
    init = [rng.normal(0.0, 0.3, (3, 3)) for _ in range(3)]
    weight = rng.normal(size=(3, 35, 3))
    kernel = rng.normal(0.5, 0.3, (4, 3))
    results = []
    for jit_compile in (False, True):
        layer = SRC(3, return_state=True, jit_compile=jit_compile, dtype="float64", **options)
        layer.build(x.shape)
        layer.cell.set_weights([kernel, np.array([-6.0, -5.0, -4.5])])
        inputs = [tf.constant(x)] + [tf.constant(s) for s in init]
        with tf.GradientTape() as tape:
            tape.watch(inputs)
            out, i, h, hs = layer(inputs[0], initial_state=inputs[1:], mask=mask)
            loss = tf.reduce_sum(out * weight) + tf.reduce_sum(h**2) + tf.reduce_sum(hs * i)
        # with detach_recurrent, h0 and h_s0 get no gradient (None on the plain path)
        grads = tape.gradient(loss, layer.trainable_weights + inputs, unconnected_gradients="zero")
        results.append([t.numpy() for t in (out, i, h, hs, *grads)])
    assert results[0][0].any()
    for plain, xla in zip(*results):
        np.testing.assert_allclose(xla, plain, rtol=1e-9, atol=1e-11)


def test_xla_path_last_output_and_gradient(rng):
    x = rng.uniform(0.3, 1.0, (2, 20, 3))
    mask = np.ones((2, 20), bool)
    mask[1, 15:] = False
    results = []
    for jit_compile in (False, True):
        layer = SRC(
            4,
            return_sequences=False,
            jit_compile=jit_compile,
            kernel_initializer=keras.initializers.RandomNormal(0.5, 0.3, seed=7),
            dtype="float64",
        )
        with tf.GradientTape() as tape:
            out = layer(x, mask=mask)
            loss = tf.reduce_sum(out * np.arange(1.0, 5.0))
        results.append([out.numpy()] + [g.numpy() for g in tape.gradient(loss, layer.weights)])
    for plain, xla in zip(*results):
        np.testing.assert_allclose(xla, plain, rtol=1e-9, atol=1e-12)


def test_xla_path_in_compiled_fit_matches_plain(rng):
    # model.fit (a tf.function) through both paths: same weights after a few Adam steps
    y = rng.integers(0, 2, 32)
    x = (rng.uniform(size=(32, 20, 4)) < 0.1 + 0.4 * y[:, None, None]).astype("float64")
    weights = []
    for jit_compile in (False, True):
        model = keras.Sequential(
            [
                keras.Input((20, 4), dtype="float64"),
                SRC(
                    6,
                    jit_compile=jit_compile,
                    kernel_initializer=keras.initializers.RandomNormal(0.5, 0.5, seed=0),
                    dtype="float64",
                ),
                keras.layers.GlobalAveragePooling1D(dtype="float64"),
                keras.layers.Dense(
                    2, kernel_initializer=keras.initializers.GlorotUniform(seed=1), dtype="float64"
                ),
            ]
        )
        model.compile(
            keras.optimizers.Adam(0.05),
            keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
        model.fit(x, y, epochs=2, batch_size=8, shuffle=False, verbose=0)
        weights.append(model.get_weights())
    for plain, xla in zip(*weights):
        np.testing.assert_allclose(xla, plain, rtol=1e-7, atol=1e-9)


# ---- layer == keras.layers.RNN(cell) -------------------------------------------------------------
RNN_CASES = [
    dict(),
    dict(slow_gate_slope=None, detach_recurrent=True),
    dict(straight_through=True, z=[0.0, 0.2, 0.1], alpha=[0.9, 0.8, 0.95], z_hyp=0.8),
]


@pytest.mark.parametrize("options", RNN_CASES, ids=["default", "heaviside_detach", "st_per_neuron"])
def test_layer_equals_keras_rnn_of_cell(options, rng):
    x = rng.uniform(0.0, 1.0, (2, 25, 4))
    mask = np.ones((2, 25), bool)
    mask[1, 5:9] = False
    mask[1, 20:] = False  # the last steps of sample 1 are padding
    layer = SRC(3, return_state=True, dtype="float64", **options)
    rnn = keras.layers.RNN(
        SpikingRecurrentCell(3, dtype="float64", **options),
        return_sequences=True,
        return_state=True,
        zero_output_for_mask=True,
        dtype="float64",
    )
    last_rnn = keras.layers.RNN(
        SpikingRecurrentCell(3, dtype="float64", **options), dtype="float64"
    )
    for model in (layer, rnn, last_rnn):
        model.build(x.shape)
    kernel = rng.normal(0.5, 0.3, (4, 3))
    for model in (layer, rnn, last_rnn):
        model.cell.set_weights([kernel, np.array([-6.0, -5.0, -4.5])])
    weight = rng.normal(size=(2, 25, 3))
    for m in (None, mask):
        results = []
        for model in (layer, rnn):
            with tf.GradientTape() as tape:
                out, *states = model(x, mask=m)
                loss = tf.reduce_sum(out * weight) + tf.reduce_sum(states[1])
            grads = tape.gradient(loss, model.trainable_weights)
            results.append([out.numpy(), *[s.numpy() for s in states]] + [g.numpy() for g in grads])
        assert results[0][0].any()
        for a, b in zip(*results):
            np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
        # return_sequences=False: the output of the last unmasked step
        short = SRC.from_config({**layer.get_config(), "return_sequences": False})
        short.build(x.shape)
        short.set_weights(layer.get_weights())
        np.testing.assert_allclose(
            short(x, mask=m)[0].numpy(), last_rnn(x, mask=m).numpy(), rtol=1e-12, atol=1e-14
        )


def test_cell_in_keras_rnn_matches_numpy(rng):
    x = rng.uniform(0.0, 1.0, (2, 30, 4))
    rnn = keras.layers.RNN(
        SpikingRecurrentCell(3, dtype="float64"), return_sequences=True, dtype="float64"
    )
    rnn.build(x.shape)
    w = rng.normal(0.5, 0.3, (4, 3))
    rnn.cell.set_weights([w, np.full(3, -6.0)])
    np.testing.assert_allclose(rnn(x).numpy(), np_src(x, w, -6.0), rtol=1e-12, atol=1e-14)
    assert SpikingRecurrentCell.spiking and SRC.spiking


# ---- masking -------------------------------------------------------------------------------------
def test_masked_steps_leave_state_unchanged(rng):
    x = rng.uniform(0.0, 1.0, (2, 30, 3))
    mask = np.ones((2, 30), bool)
    mask[0, 10:16] = False
    layer = SRC(4, return_state=True, dtype="float64")
    layer.build(x.shape)
    layer.cell.set_weights([rng.normal(0.5, 0.3, (3, 4)), np.full(4, -6.0)])
    out, i, h, hs = (t.numpy() for t in layer(x, mask=mask))
    # sample 0 with the masked steps removed: same outputs at the kept steps, same final state
    kept = np.flatnonzero(mask[0])
    ref, ri, rh, rhs = (t.numpy() for t in layer(x[:1, kept]))
    np.testing.assert_allclose(out[0, kept], ref[0], rtol=1e-12, atol=1e-14)
    np.testing.assert_array_equal(out[0, 10:16], 0.0)
    for got, want in ((i, ri), (h, rh), (hs, rhs)):
        np.testing.assert_allclose(got[0], want[0], rtol=1e-12, atol=1e-14)
    # the state during a masked run equals the state just before it
    _, i9, h9, hs9 = (t.numpy() for t in layer(x[:1, :10]))
    _, i15, h15, hs15 = (t.numpy() for t in layer(x[:1, :16], mask=mask[:1, :16]))
    for a, b in ((i9, i15), (h9, h15), (hs9, hs15)):
        np.testing.assert_array_equal(a, b)
    # sample 1 (no masked step) is unaffected
    np.testing.assert_allclose(out[1], layer(x[1:])[0].numpy()[0], rtol=1e-12, atol=1e-14)


def test_masking_layer_in_a_model(rng):
    x = rng.uniform(0.0, 1.0, (3, 12, 2)).astype("float32")
    x[1, 8:] = 0.0  # padding
    model = keras.Sequential(
        [keras.Input((12, 2)), keras.layers.Masking(0.0), SRC(5), SRC(3, return_sequences=False)]
    )
    out = model(x).numpy()
    assert out.shape == (3, 3)
    unmasked = keras.Sequential([keras.Input((8, 2)), SRC(5), SRC(3, return_sequences=False)])
    for src, dst in zip(model.layers[1:], unmasked.layers):
        dst.set_weights(src.get_weights())
    np.testing.assert_allclose(out[1], unmasked(x[1:2, :8]).numpy()[0], rtol=1e-5, atol=1e-6)


# ---- stateful, initial state, shapes -------------------------------------------------------------
def test_stateful_streaming_equals_one_long_call(rng):
    x = rng.uniform(0, 1, (2, 60, 3))
    kwargs = dict(kernel_initializer=keras.initializers.RandomNormal(0.5, 0.3, seed=2))
    full = SRC(4, dtype="float64", **kwargs)
    expected = full(x).numpy()
    assert expected.any()
    streamed = SRC(4, dtype="float64", stateful=True, **kwargs)
    streamed.build((2, None, 3))
    chunks = [streamed(x[:, a:b]).numpy() for a, b in [(0, 7), (7, 8), (8, 33), (33, 60)]]
    np.testing.assert_allclose(np.concatenate(chunks, axis=1), expected, rtol=1e-12, atol=1e-14)
    streamed.reset_states()
    np.testing.assert_allclose(streamed(x[:, :9]).numpy(), expected[:, :9], rtol=1e-12)


def test_initial_state_and_return_state(rng):
    x = rng.uniform(0, 1, (2, 20, 3))
    layer = SRC(4, return_state=True, dtype="float64")
    out, *states = layer(x[:, :11])
    tail, *final = layer(x[:, 11:], initial_state=states)
    whole, *final_whole = layer(x)
    np.testing.assert_allclose(np.concatenate([out, tail], 1), whole.numpy(), rtol=1e-12)
    for a, b in zip(final, final_whole):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-12)
    assert layer.compute_output_shape((2, 20, 3)) == ((2, 20, 4), *[(2, 4)] * 3)  # as keras RNN
    out0, *states0 = layer(np.zeros((2, 0, 3)))
    assert out0.shape == (2, 0, 4) and all(not s.numpy().any() for s in states0)


# ---- serialization -------------------------------------------------------------------------------
LAYER_KWARGS = dict(
    units=3,
    alpha=[0.9, 0.8, 0.7],
    rho=2.5,
    r=[2.0, 2.1, 2.2],
    r_s=-6.5,
    z=0.1,
    z_hyp=[0.9, 0.85, 0.95],
    z_dep=0.05,
    slow_gate_slope=None,
    bias_max=-3.5,
    detach_recurrent=True,
    straight_through=True,
    kernel_regularizer="l2",
    return_state=True,
    stateful=False,
    return_sequences=False,
    jit_compile=False,
)


def test_config_round_trip():
    layer = SRC(**LAYER_KWARGS)
    config = layer.get_config()
    assert SRC.from_config(config).get_config() == config
    for key, value in LAYER_KWARGS.items():
        if key.endswith("regularizer"):
            assert config[key] is not None
        else:
            assert config[key] == value, key
    assert config["bias_initializer"]["config"]["value"] == -6.0
    cell = SpikingRecurrentCell(2, z_dep=[0.0, 0.1], bias_max=None)
    assert SpikingRecurrentCell.from_config(cell.get_config()).get_config() == cell.get_config()
    constraint = MaxValue(-4.0)
    assert MaxValue.from_config(constraint.get_config()).max_value == -4.0


def test_keras_file_round_trip(tmp_path, rng):
    x = rng.uniform(0, 1, (4, 15, 5)).astype("float32")
    model = keras.Sequential(
        [
            keras.Input((15, 5)),
            SRC(6, kernel_initializer=keras.initializers.RandomNormal(0.5, 0.3), z=[0.0] * 6),
            SRC(4, slow_gate_slope=None, straight_through=True, bias_max=None),
            keras.layers.RNN(SpikingRecurrentCell(3, rho=2.0), return_sequences=True),
        ]
    )
    expected = model.predict(x, verbose=0)
    model.save(tmp_path / "src.keras")
    restored = keras.models.load_model(tmp_path / "src.keras")
    np.testing.assert_array_equal(restored.predict(x, verbose=0), expected)
    assert restored.layers[0].cell.z == (0.0,) * 6
    assert restored.layers[1].cell.slow_gate_slope is None
    assert isinstance(restored.layers[0].cell.bias.constraint, MaxValue)


# ---- errors --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(alpha=1.0), r"`alpha` must be a number in \[0, 1\), got 1.0"),
        (dict(alpha=-0.1), r"`alpha` must be a number in \[0, 1\)"),
        (dict(rho=0), "`rho` must be a finite number > 0, got 0"),
        (dict(rho=[1.0, -1.0, 2.0]), "every `rho` must be a finite number > 0"),
        (dict(r=float("nan")), "`r` must be a finite number, got nan"),
        (dict(r_s="x"), "`r_s` must be a finite number, got 'x'"),
        (dict(z=1.5), r"`z` must be a number in \[0, 1\], got 1.5"),
        (dict(z_hyp=-0.5), r"`z_hyp` must be a number in \[0, 1\]"),
        (dict(z_dep=[0.0, 0.1]), "`z_dep` must be a float or a list of 3 per-neuron values"),
        (dict(slow_gate_slope=0.0), "`slow_gate_slope` must be a finite number > 0 or None"),
        (dict(bias_max=float("inf")), "`bias_max` must be a finite number or None"),
        (dict(detach_recurrent="yes"), "`detach_recurrent` must be True or False"),
        (dict(straight_through=None), "`straight_through` must be True or False"),
        (dict(return_sequences=1), "`return_sequences` must be True or False"),
        (dict(jit_compile="no"), "`jit_compile` must be True or False, got 'no'"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SRC(3, **kwargs)


def test_bad_units_shapes_and_state():
    with pytest.raises(ValueError, match="`units` must be an integer >= 1, got 0"):
        SpikingRecurrentCell(0)
    with pytest.raises(ValueError, match=r"\[batch, time, features\]"):
        SRC(2)(np.zeros((3, 4), "float32"))
    with pytest.raises(ValueError, match="`initial_state` must be a list of 3 tensors"):
        SRC(2)(np.zeros((1, 4, 3), "float32"), initial_state=[np.zeros((1, 2), "float32")])
    with pytest.raises(ValueError, match="needs a fixed batch size"):
        keras.Sequential([keras.Input((None, 3)), SRC(2, stateful=True)])
    with pytest.raises(ValueError, match="needs at least one time step"):
        SRC(2, return_sequences=False)(np.zeros((1, 0, 3), "float32"))
    with pytest.raises(ValueError, match="reset_states"):
        SRC(2).reset_states()


# ---- training ------------------------------------------------------------------------------------
def test_bias_constraint_applied_by_optimizer():
    layer = SRC(3, bias_initializer=keras.initializers.Constant(-3.0), bias_max=-4.0)
    model = keras.Sequential([keras.Input((5, 2)), layer])
    model.compile(keras.optimizers.SGD(1e-3), "mse")
    np.testing.assert_array_equal(layer.cell.bias.numpy(), -3.0)  # used as given until a step
    model.train_on_batch(np.ones((2, 5, 2), "float32"), np.ones((2, 5, 3), "float32"))
    np.testing.assert_array_equal(layer.cell.bias.numpy(), -4.0)


def test_fit_reduces_loss(rng):
    # class 1: input channel 0 fires with probability 0.6 per step instead of 0.1
    y = rng.integers(0, 2, 64)
    rates = 0.1 + 0.5 * y[:, None, None] * np.array([1, 0, 0, 0])
    x = (rng.uniform(size=(64, 30, 4)) < rates).astype("float32")
    model = keras.Sequential(
        [
            keras.Input((30, 4)),
            SRC(12, kernel_initializer=keras.initializers.RandomNormal(0.5, 0.5, seed=0)),
            keras.layers.GlobalAveragePooling1D(),
            keras.layers.Dense(2, kernel_initializer=keras.initializers.GlorotUniform(seed=1)),
        ]
    )
    model.compile(
        keras.optimizers.Adam(0.1),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    history = model.fit(x, y, epochs=12, batch_size=16, shuffle=False, verbose=0).history
    assert history["loss"][-1] < 0.7 * history["loss"][0], history["loss"]
    assert history["accuracy"][-1] > 0.85
    assert np.all(model.layers[0].cell.bias.numpy() <= -4.0)


def test_src_trains_with_the_encoders_losses_metrics_and_callbacks(tmp_path):
    """The SRC in the same pipeline as the other layers: rate encoder, membrane loss, readout
    accuracy, firing-rate monitor and raster plot callbacks, through model.fit."""
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    images = rng.random((32, 6)).astype("float32")
    labels = (images[:, 0] > 0.5).astype("int32")
    model = keras.Sequential(
        [
            keras.Input((6,)),
            ks.encoders.RateEncoder(20, seed=1),
            layers.SRC(8, kernel_initializer=keras.initializers.RandomNormal(0.5, 1.0)),
            layers.LI(2),
        ]
    )
    model.compile(
        "adam",
        ks.losses.MaxMembraneCrossEntropy(),
        metrics=[ks.losses.SparseReadoutAccuracy("max", name="accuracy")],
    )
    raster = tmp_path / "raster.png"
    history = model.fit(
        images,
        labels,
        epochs=2,
        batch_size=16,
        verbose=0,
        callbacks=[
            ks.callbacks.FiringRateMonitor(images[:8], verbose=0),
            ks.callbacks.SpikeRasterPlot(images[:8], raster),
        ],
    )
    assert np.isfinite(history.history["loss"]).all()
    assert 0.0 <= history.history["accuracy"][-1] <= 1.0
    assert raster.is_file() and raster.stat().st_size > 0
    rates = ks.metrics.firing_rates(model, images[:8])
    assert any(name.startswith("src") for name in rates)
