"""Sequence layers: traces, equality with keras.layers.RNN(cell), gradients vs a NumPy oracle,
serialization, SavedModel export, stateful streaming and input errors."""

import math
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_spiking import cells, layers

HALF_LIFE_TAU = 1e-3 / math.log(2.0)  # tau giving beta = exp(-dt / tau) = 0.5 at dt = 1 ms


def _single_neuron(layer_cls, value, steps=6, **kwargs):
    layer = layer_cls(1, kernel_initializer="ones", return_state=True, dtype="float64", **kwargs)
    return [t.numpy()[0] for t in layer(np.full((1, steps, 1), value))]


@pytest.mark.parametrize("reset, v_last", [("subtract", 0.05625), ("zero", 0.0)])
def test_lif_layer_trace(jit_compile, reset, v_last):
    # same numbers as tests/test_dynamics.py::test_lif_trace, through the fused scan
    spikes, v, s = _single_neuron(
        layers.LIF, 0.6, tau_mem=HALF_LIFE_TAU, reset=reset, jit_compile=jit_compile
    )
    np.testing.assert_array_equal(spikes[:, 0], [0, 0, 1, 0, 0, 1])
    np.testing.assert_allclose(v, [v_last], atol=1e-12)
    assert s[0] == 1.0


@pytest.mark.parametrize(
    "reset, spikes, u_last",
    [("subtract", [0, 0, 0, 1, 1, 1], 1.1), ("zero", [0, 0, 0, 1, 0, 1], 0.0)],
)
def test_cuba_layer_trace(jit_compile, reset, spikes, u_last):
    out, i, u = _single_neuron(
        layers.CubaLIF,
        0.8,
        tau_syn=HALF_LIFE_TAU,
        tau_mem=HALF_LIFE_TAU,
        reset=reset,
        jit_compile=jit_compile,
    )
    np.testing.assert_array_equal(out[:, 0], spikes)
    np.testing.assert_allclose(u, [u_last], atol=1e-12)
    np.testing.assert_allclose(i, [1.575], atol=1e-12)  # I6 = 0.5 * 1.55 + 0.8


def test_li_layer_trace(jit_compile):
    v_all, v = _single_neuron(
        layers.LI, 1.0, steps=4, tau_mem=HALF_LIFE_TAU, jit_compile=jit_compile
    )
    np.testing.assert_allclose(v_all[:, 0], [1.0, 1.5, 1.75, 1.875], rtol=1e-12)
    np.testing.assert_allclose(v, [1.875], rtol=1e-12)


def test_spiking_vs_nonspiking_contrast():
    x = np.full((1, 50, 1), 0.3)
    spikes = layers.LIF(1, kernel_initializer="ones")(x).numpy()
    membrane = layers.LI(1, kernel_initializer="ones")(x).numpy()
    assert set(np.unique(spikes)) == {0.0, 1.0}
    assert membrane.max() > 1.0 and len(np.unique(membrane)) > 40  # analog, crosses threshold


SEQUENCE_CASES = [
    (layers.LIF, cells.LIFCell, dict(recurrent=True, use_bias=True, reset="zero")),
    (layers.LIF, cells.LIFCell, dict(detach_reset=False, train_time_constants=True)),
    (layers.CubaLIF, cells.CubaLIFCell, dict(recurrent=True, train_time_constants=True)),
    (layers.CubaLIF, cells.CubaLIFCell, dict(reset="zero", detach_reset=False)),
    (layers.LI, cells.LICell, dict(use_bias=True, train_time_constants=True)),
]


@pytest.mark.parametrize("layer_cls, cell_cls, options", SEQUENCE_CASES)
def test_layer_equals_keras_rnn_of_cell(jit_compile, layer_cls, cell_cls, options, rng):
    """The fused layer and keras.layers.RNN(cell) give the same outputs and gradients."""
    x = rng.normal(0.3, 1.0, (4, 15, 6))
    kwargs = dict(options, tau_mem=rng.uniform(5e-3, 30e-3, 5).tolist(), dtype="float64")
    layer = layer_cls(5, jit_compile=jit_compile, kernel_initializer="he_normal", **kwargs)
    rnn = keras.layers.RNN(cell_cls(5, **kwargs), return_sequences=True, dtype="float64")
    layer.build(x.shape)
    rnn.build(x.shape)
    for src, dst in zip(layer.cell.weights, rnn.cell.weights):
        dst.assign(src.numpy() * (1.7 if src.name == "kernel" else 1.0))
        src.assign(dst.numpy())
    weight = rng.normal(size=(4, 15, 5))
    grads, outs = [], []
    for model in (layer, rnn):
        with tf.GradientTape() as tape:
            out = model(x)
            loss = tf.reduce_sum(out * weight)
        outs.append(out.numpy())
        grads.append([g.numpy() for g in tape.gradient(loss, model.trainable_weights)])
    if layer.spiking:
        assert 0 < outs[0].mean() < 1  # some spikes, not saturated
    np.testing.assert_allclose(outs[0], outs[1], rtol=1e-12, atol=1e-12)
    for a, b in zip(*grads):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-10)  # float64, summation order


def _proxy_lif_li_loss(x, w1, log_tau1, w2, log_tau2, readout, base, dt=1e-3, k=25.0):
    """NumPy forward of LIF -> LI where each spike H(u - 1) is replaced by the smooth proxy
    H0 + f(u - 1) - f(u0 - 1), f(x) = x / (k|x| + 1) the antiderivative of the fast sigmoid
    surrogate, with H0 and u0 the values of the unperturbed network (``base``). At the base
    point the proxy's forward equals the real network's and its exact derivative is the
    surrogate gradient, so finite differences of it check the layers' backward pass. The time
    constants are given as their logs, as the layers' trainable variables hold them."""
    f = lambda z: z / (k * np.abs(z) + 1.0)  # noqa: E731
    b1, b2 = np.exp(-dt * np.exp(-log_tau1)), np.exp(-dt * np.exp(-log_tau2))
    batch, steps, _ = x.shape
    v = np.zeros((batch, w1.shape[1]))
    v2 = np.zeros((batch, w2.shape[1]))
    loss, record = 0.0, []
    for t in range(steps):
        u = b1 * v + x[:, t] @ w1
        hard = (u > 1.0).astype(float)
        if base is None:
            s = hard
            record.append((u, hard))
        else:
            u0, h0 = base[t]
            s = h0 + f(u - 1.0) - f(u0 - 1.0)
            hard = h0  # detach_reset: the reset uses the (frozen) forward spikes
        v = u - hard
        v2 = b2 * v2 + s @ w2
        loss += np.sum(v2 * readout[:, t])
    return loss, record


def test_model_gradient_matches_finite_differences_of_smooth_proxy(rng):
    x = rng.normal(0.2, 0.8, (3, 20, 4))
    model = keras.Sequential(
        [
            keras.Input((20, 4), dtype="float64"),
            layers.LIF(
                6,
                train_time_constants=True,
                tau_mem=rng.uniform(5e-3, 30e-3, 6).tolist(),
                kernel_initializer=keras.initializers.RandomNormal(0.3, 0.6, seed=1),
                dtype="float64",
            ),
            layers.LI(2, train_time_constants=True, dtype="float64"),
        ]
    )
    readout = rng.normal(size=(3, 20, 2))
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(model(x) * readout)
    grads = [g.numpy() for g in tape.gradient(loss, model.trainable_weights)]
    params = [w.numpy().astype("float64") for w in model.trainable_weights]
    names = [w.path for w in model.trainable_weights]
    assert names[0].endswith("kernel") and names[1].endswith("log_tau_mem")

    base_loss, base = _proxy_lif_li_loss(x, *params, readout, None)
    assert base_loss == pytest.approx(float(loss), rel=1e-12)  # same forward
    spikes = np.array([h for _, h in base])
    assert 0.05 < spikes.mean() < 0.6
    eps = 1e-6
    for p, grad, name in zip(range(len(params)), grads, names):
        fd = np.zeros_like(params[p])
        for idx in np.ndindex(params[p].shape):
            for sign in (1, -1):
                shifted = [q.copy() for q in params]
                shifted[p][idx] += sign * eps
                fd[idx] += sign * _proxy_lif_li_loss(x, *shifted, readout, base)[0] / (2 * eps)
        # central differences in float64: error O(eps^2 * f''') plus rounding O(1e-16 / eps)
        np.testing.assert_allclose(grad, fd, rtol=1e-5, atol=1e-6, err_msg=name)


LAYER_CONFIGS = [
    (
        layers.LIF,
        dict(
            units=4,
            tau_mem=[0.01, 0.02, 0.03, 0.04],
            reset="zero",
            surrogate={"class_name": "arctan", "config": {"scale": 2.0}},
            recurrent=True,
            use_bias=True,
            train_time_constants=True,
            kernel_regularizer="l2",
            return_state=False,
        ),
    ),
    (
        layers.CubaLIF,
        dict(
            units=3,
            tau_syn=4e-3,
            tau_mem=0.02,
            threshold=0.5,
            dt=5e-4,
            surrogate="triangle",
            detach_reset=False,
            jit_compile=False,
        ),
    ),
    (layers.LI, dict(units=2, tau_mem=0.05, use_bias=True)),
]


@pytest.mark.parametrize("layer_cls, kwargs", LAYER_CONFIGS)
def test_config_round_trip(layer_cls, kwargs):
    layer = layer_cls(**kwargs)
    config = layer.get_config()
    clone = layer_cls.from_config(config)
    assert clone.get_config() == config
    for key, value in kwargs.items():
        got = config[key]
        if key == "surrogate":
            expected = (
                value
                if isinstance(value, dict)
                else {"class_name": value, "config": {"scale": 1.0}}
            )
            assert got == expected
        elif key.endswith("regularizer"):
            assert got is not None
        else:
            assert got == value, key


@pytest.mark.parametrize("cell_cls", [cells.LIFCell, cells.CubaLIFCell, cells.LICell])
def test_cell_config_round_trip(cell_cls):
    cell = cell_cls(3, tau_mem=0.03, use_bias=True)
    assert cell_cls.from_config(cell.get_config()).get_config() == cell.get_config()


def _model(jit_compile=True):
    return keras.Sequential(
        [
            keras.Input((12, 5)),
            layers.CubaLIF(8, recurrent=True, train_time_constants=True, jit_compile=jit_compile),
            layers.LIF(
                7,
                surrogate="sigmoid",
                reset="zero",
                jit_compile=jit_compile,
                kernel_initializer=keras.initializers.RandomNormal(0.2, 0.5),
            ),
            layers.LI(3, use_bias=True, jit_compile=jit_compile),
        ]
    )


def test_keras_file_round_trip_with_every_class(tmp_path, rng):
    model = _model()
    x = rng.uniform(0, 2, (4, 12, 5)).astype("float32")
    path = tmp_path / "model.keras"
    model.save(path)
    restored = keras.models.load_model(path)
    np.testing.assert_array_equal(model.predict(x, verbose=0), restored.predict(x, verbose=0))
    wrapped = keras.Sequential(
        [
            keras.Input((12, 5)),
            keras.layers.RNN(cells.LIFCell(3, recurrent=True), return_sequences=True),
        ]
    )
    wrapped.save(tmp_path / "rnn.keras")
    restored = keras.models.load_model(tmp_path / "rnn.keras")
    np.testing.assert_array_equal(wrapped.predict(x, verbose=0), restored.predict(x, verbose=0))


def test_saved_model_export_reloads_in_fresh_process(tmp_path, rng):
    model = _model()
    x = rng.uniform(0, 2, (4, 12, 5)).astype("float32")
    expected = model.predict(x, verbose=0)
    model.export(str(tmp_path / "saved"), verbose=False)
    np.save(tmp_path / "x.npy", x)
    script = textwrap.dedent(f"""
        import numpy as np, tensorflow as tf
        loaded = tf.saved_model.load({str(tmp_path / "saved")!r})
        x = np.load({str(tmp_path / "x.npy")!r})
        np.save({str(tmp_path / "y.npy")!r}, loaded.serve(tf.constant(x)).numpy())
    """)
    # no `import keras_spiking` in the child: the SavedModel needs only TensorFlow
    subprocess.run([sys.executable, "-c", script], check=True, timeout=300)
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("layer_cls", [layers.LIF, layers.CubaLIF, layers.LI])
def test_stateful_streaming_equals_one_long_call(jit_compile, layer_cls, rng):
    x = rng.uniform(0, 1, (2, 30, 3)).astype("float32")
    full = layer_cls(4, kernel_initializer="ones", jit_compile=jit_compile)
    expected = full(x).numpy()
    streamed = layer_cls(4, kernel_initializer="ones", stateful=True, jit_compile=jit_compile)
    streamed.build((2, None, 3))
    chunks = [streamed(x[:, a:b]).numpy() for a, b in [(0, 7), (7, 8), (8, 20), (20, 30)]]
    np.testing.assert_allclose(np.concatenate(chunks, axis=1), expected, rtol=1e-5, atol=1e-6)
    streamed.reset_states()
    np.testing.assert_allclose(streamed(x[:, :7]).numpy(), expected[:, :7], rtol=1e-5, atol=1e-6)


def test_stateful_streaming_in_a_model(rng):
    x = rng.uniform(0, 2, (2, 20, 5)).astype("float32")
    model = keras.Sequential(
        [
            keras.Input((None, 5), batch_size=2),
            layers.LIF(6, stateful=True),
            layers.LI(2, stateful=True),
        ]
    )
    reference = keras.Sequential([keras.Input((None, 5)), layers.LIF(6), layers.LI(2)])
    for src, dst in zip(model.layers, reference.layers):
        dst.cell.set_weights(src.cell.get_weights())
    expected = reference(x).numpy()
    got = np.concatenate([model(x[:, :9]).numpy(), model(x[:, 9:]).numpy()], axis=1)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_return_sequences_false_and_initial_state(rng):
    x = rng.uniform(0, 1, (2, 10, 3)).astype("float32")
    layer = layers.LIF(4, return_sequences=False, return_state=True)
    last, v, s = layer(x)
    assert last.shape == (2, 4) and v.shape == (2, 4)
    np.testing.assert_array_equal(last.numpy(), s.numpy())
    full = layers.LIF(4)
    full.build(x.shape)
    full.set_weights(layer.get_weights())
    head = full(x[:, :6], initial_state=None)
    seq, v1, s1 = layers.LIF.from_config({**full.get_config(), "return_state": True})(x[:, :1])
    assert seq.shape == (2, 1, 4)
    assert head.shape == (2, 6, 4)


@pytest.mark.parametrize("seed", [0, 1])
def test_fit_reduces_loss(jit_compile, seed):
    keras.utils.set_random_seed(seed)  # initial weights and batch order
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 64)
    x = rng.uniform(0, 0.5, (64, 10, 4)).astype("float32")
    x[:, :, 0] += 0.5 * y[:, None]  # class 1 has a stronger first input
    model = keras.Sequential(
        [
            keras.Input((10, 4)),
            layers.LIF(
                16,
                tau_mem=0.05,
                jit_compile=jit_compile,
                kernel_initializer=keras.initializers.RandomNormal(0.3, 1.0),
            ),
            layers.LI(2, tau_mem=0.05, jit_compile=jit_compile),
            keras.layers.GlobalMaxPooling1D(),
        ]
    )
    model.compile(
        keras.optimizers.Adam(0.02),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    history = model.fit(x, y, epochs=25, batch_size=16, verbose=0)
    assert history.history["loss"][-1] < 0.5 * history.history["loss"][0]
    # a separable task: the trained network classifies its training set (the margin to the
    # 0.9 bound was >= 0.08 for seeds 0-5 on all three paths when this was written)
    _, accuracy = model.evaluate(x, y, verbose=0)
    assert accuracy > 0.9


# ---- errors ---------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(4, 5), (2, 3, 4, 5)])
def test_wrong_rank(shape):
    with pytest.raises(ValueError, match=r"\[batch, time, features\]"):
        layers.LIF(3)(np.zeros(shape, "float32"))


def test_mismatched_features():
    layer = layers.LIF(3)
    layer(np.zeros((1, 4, 5), "float32"))
    with pytest.raises(ValueError, match="expected axis -1 of input shape to have value 5"):
        layer(np.zeros((1, 4, 6), "float32"))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("step", [0, 3])  # the first and the last time step
@pytest.mark.parametrize("layer_cls", [layers.LIF, layers.CubaLIF, layers.LI])
def test_non_finite_inputs(jit_compile, layer_cls, step, bad):
    x = np.full((2, 4, 2), 0.5, "float32")
    x[1, step, 1] = bad
    layer = layer_cls(3, jit_compile=jit_compile)
    with pytest.raises(tf.errors.InvalidArgumentError, match="inputs contain NaN or inf"):
        layer(x)
    model = keras.Sequential([keras.Input((4, 2)), layer_cls(3, jit_compile=jit_compile)])
    with pytest.raises(tf.errors.InvalidArgumentError, match="inputs contain NaN or inf"):
        model.predict(x, verbose=0)  # inside a tf.function graph too


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(tau_mem=-0.01), "`tau_mem` must be a finite number > 0, got -0.01"),
        (dict(tau_mem=[0.01, 0.0, 0.02]), "every `tau_mem` must be a finite number > 0"),
        (dict(tau_mem=[0.01, 0.02]), "list of 3 per-neuron values"),
        (dict(threshold=0), "`threshold` must be a finite number > 0, got 0"),
        (dict(threshold=-1.0), "`threshold` must be a finite number > 0"),
        (dict(dt=0.0), "`dt` must be a finite number > 0"),
        (dict(reset="soft"), "`reset` must be one of"),
        (dict(surrogate="boxcar"), "known surrogates: arctan"),
    ],
)
def test_bad_parameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        layers.LIF(3, **kwargs)


def test_bad_cuba_tau_syn_and_units():
    with pytest.raises(ValueError, match="`tau_syn` must be a finite number > 0"):
        layers.CubaLIF(3, tau_syn=-1e-3)
    with pytest.raises(ValueError, match="`units` must be an integer >= 1, got 0"):
        layers.LI(0)
    with pytest.raises(TypeError, match="does not spike: `threshold`"):
        layers.LI(2, threshold=1.0)


def test_stateful_needs_batch_size():
    with pytest.raises(ValueError, match="needs a fixed batch size"):
        keras.Sequential([keras.Input((None, 3)), layers.LIF(2, stateful=True)])


@pytest.mark.parametrize("layer_cls", [layers.LIF, layers.CubaLIF, layers.LI])
def test_zero_time_steps(layer_cls):
    x = np.zeros((2, 0, 3), "float32")
    out, *states = layer_cls(4, return_state=True)(x)
    assert out.shape == (2, 0, 4)
    assert all(s.shape == (2, 4) and not np.any(s.numpy()) for s in states)
    with pytest.raises(ValueError, match="needs at least one time step"):
        layer_cls(4, return_sequences=False)(x)


def test_time_constant_reports_fixed_and_trained_taus():
    fixed = layers.LIF(3, tau_mem=[0.01, 0.02, 0.03])
    fixed.build((1, 2, 4))
    np.testing.assert_array_equal(fixed.cell.time_constant("tau_mem"), [0.01, 0.02, 0.03])
    trained = layers.CubaLIF(2, tau_syn=0.004, train_time_constants=True)
    trained.build((1, 2, 4))
    variable = trained.cell._log_tau_variables["tau_syn"]
    assert variable.path.endswith("log_tau_syn")
    # the variable holds log(tau / 1 s); the second as far down as an optimizer might take it
    variable.assign(np.log([0.005, 1e-9]))
    tau = trained.cell.time_constant("tau_syn")
    # float32 variable: log(tau) rounded to ~1e-7 relative, so tau to ~2e-6 relative
    np.testing.assert_allclose(tau, [0.005, 1e-9], rtol=1e-5)
    # float32 decay: exp(-1e6) underflows to 0 there; float32 rounding elsewhere
    np.testing.assert_allclose(
        np.exp(-trained.cell.dt / tau), trained.cell.decay("tau_syn"), rtol=1e-6, atol=1e-30
    )


@pytest.mark.parametrize(
    "gradient, error, match",
    [
        # a dict without class_name: Keras deserializes it to a plain dict, which used to be
        # kept and fail at the first call with "'TrackedDict' object has no attribute 'options'"
        ({"bad": 1}, ValueError, r"`gradient` must be .*got \{'bad': 1\}.*not an EventProp"),
        # a real Keras object's config that is not a gradient rule
        (
            keras.saving.serialize_keras_object(keras.layers.Dense(2)),
            ValueError,
            r"`gradient` must be .*'class_name': 'Dense'.*a Dense, not an EventProp",
        ),
        ("evntprop", ValueError, r"`gradient` must be 'surrogate', 'eventprop'.*got 'evntprop'"),
        (3, TypeError, r"CubaLIF: `gradient` must be .*got 3$"),
    ],
)
def test_bad_gradient_rule_fails_at_construction(gradient, error, match):
    with pytest.raises(error, match=match):
        layers.CubaLIF(8, reset="zero", gradient=gradient)
    # the accepted forms still are
    assert layers.CubaLIF(8, reset="zero", gradient="surrogate").gradient is None
    rule = layers.CubaLIF(8, reset="zero", gradient="eventprop").gradient
    again = layers.CubaLIF(8, reset="zero", gradient=keras.saving.serialize_keras_object(rule))
    assert type(again.gradient) is type(rule)


@pytest.mark.parametrize("layer_cls", [layers.LIF, layers.LI, layers.SRC])
def test_gradient_on_a_layer_without_rules_is_named(layer_cls):
    with pytest.raises((TypeError, ValueError), match=r"gradient.*'eventprop'"):
        layer_cls(4, gradient="eventprop")


def _ragged_batch():
    # two sequences of 1 and 3 steps, 2 features
    return tf.ragged.constant([[[1.0, 0.0]], [[0.0, 1.0], [1.0, 1.0], [0.0, 0.0]]], ragged_rank=1)


@pytest.mark.parametrize("layer_cls", [layers.LIF, layers.CubaLIF, layers.LI, layers.SRC])
def test_ragged_and_sparse_inputs_are_refused_by_name(layer_cls):
    # before: "object of type 'RaggedTensor' has no len()" from inside the scan
    ragged = _ragged_batch()
    with pytest.raises(TypeError, match=r"`inputs` .*ragged tensor of shape \(2, None, 2\).*"):
        layer_cls(4)(ragged)
    with pytest.raises(TypeError, match=r"inputs\.to_tensor\(\)"):
        layer_cls(4)(ragged)
    sparse = tf.sparse.from_dense(np.eye(3, 2, dtype="float32")[None])
    with pytest.raises(
        TypeError, match=r"sparse tensor of shape \(1, 3, 2\).*tf\.sparse\.to_dense"
    ):
        layer_cls(4)(sparse)
    # symbolic ragged input of a functional model: refused when the model is built
    with pytest.raises(TypeError, match="ragged tensor"):
        layer_cls(4)(keras.Input((None, 2), ragged=True))
    # the advice works: the padded dense tensor runs
    assert layer_cls(4)(ragged.to_tensor()).shape == (2, 3, 4)


def test_ragged_advice_mentions_the_mask_every_layer_takes():
    for layer in (layers.LIF(4), layers.CubaLIF(4), layers.LI(4), layers.SRC(4)):
        with pytest.raises(TypeError) as error:
            layer(_ragged_batch())
        assert "`mask=`" in str(error.value), type(layer).__name__
