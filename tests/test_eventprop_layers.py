"""The EventProp Keras layers, the first-spike loss/metric and the latency_times encoder."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_spiking as ks
from keras_spiking import eventprop as ep
from keras_spiking.eventprop_layers import EventPropCubaLIF, EventPropLI, SpikeTimeDropout


def _yin_yang(n=64, seed=0):
    x, y = ks.datasets.yin_yang(n, seed=seed, encoding="spike_times", bias_spike=True)
    return x[..., None].astype("float32"), y


def _model(steps=40):
    return keras.Sequential(
        [
            keras.Input((5, 1)),
            EventPropCubaLIF(
                16,
                steps=steps,
                max_spikes=6,
                kernel_initializer=keras.initializers.RandomNormal(1.5, 1.5, seed=1),
                name="hidden",
            ),
            EventPropLI(3, steps=steps, readout="max", name="readout"),
        ]
    )


def test_layer_equals_the_functional_core():
    x, _ = _yin_yang(8)
    layer = EventPropCubaLIF(5, steps=40, recurrent=True, max_spikes=6, dtype="float64")
    out = layer(x)
    kin = ep.Kinetics(20e-3, 5e-3, 1.0, 1e-3, 40)
    expected = ep.spiking_layer(
        tf.cast(x, tf.float64),
        tf.convert_to_tensor(layer.kernel),
        tf.convert_to_tensor(layer.recurrent_kernel),
        kinetics=kin,
        max_spikes=6,
    )
    np.testing.assert_array_equal(out.numpy(), expected.numpy())
    assert out.shape == (8, 5, 6)


@pytest.mark.parametrize("readout", ["max", "integral", "last", "sequence"])
def test_readout_shapes(readout):
    x, _ = _yin_yang(4)
    out = EventPropLI(3, steps=30, readout=readout)(x)
    expected = (4, 30, 3) if readout == "sequence" else (4, 3)
    assert tuple(out.shape) == expected
    assert EventPropLI(3, steps=30, readout=readout).compute_output_shape((4, 5, 1)) == expected


def test_fit_reduces_loss_and_the_kernels_match_the_twin():
    x, y = _yin_yang(128)
    losses = {}
    for kernels in (True, False):
        keras.utils.set_random_seed(0)
        model = _model()
        model.compile(
            keras.optimizers.Adam(5e-3),
            keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
        with ks.ops.use_custom_ops(kernels):
            history = model.fit(x, y, epochs=4, batch_size=32, verbose=0, shuffle=False)
        losses[kernels] = history.history["loss"]
    assert losses[True][-1] < losses[True][0]
    # float32 kernels vs twin differ by summation order only (~1e-6); 4 epochs of Adam
    # keep that small
    np.testing.assert_allclose(losses[True], losses[False], rtol=1e-3)


def test_inference_graph_does_not_need_the_kernels(tmp_path):
    model = _model()
    x, _ = _yin_yang(8)
    expected = model(x).numpy()
    concrete = tf.function(lambda t: model(t, training=False)).get_concrete_function(
        tf.TensorSpec([None, 5, 1], tf.float32)
    )
    op_types = {op.type for op in concrete.graph.get_operations()}
    assert not any(t.startswith("KerasSpiking") for t in op_types)
    np.testing.assert_allclose(concrete(tf.constant(x)).numpy(), expected, rtol=1e-5, atol=1e-6)


def test_config_and_keras_round_trip(tmp_path):
    model = keras.Sequential(
        [
            keras.Input((5, 1)),
            EventPropCubaLIF(
                6,
                steps=80,
                dt=5e-4,
                tau_mem=15e-3,
                tau_syn=4e-3,
                threshold=0.8,
                max_spikes=3,
                on_overflow="warn",
                recurrent=True,
                interpolate=False,
                min_slope=10.0,
                count_target=1.0,
                count_strength=0.5,
                silent_bump=1e-3,
                use_custom_ops=False,
            ),
            EventPropLI(2, steps=80, dt=5e-4, readout="integral"),
        ]
    )
    x, _ = _yin_yang(4)
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    for original, copy in zip(model.layers, loaded.layers):
        assert original.get_config() == copy.get_config()
    np.testing.assert_array_equal(model(x).numpy(), loaded(x).numpy())
    layer = EventPropCubaLIF.from_config(model.layers[0].get_config())
    assert layer.rule.min_slope == 10.0 and layer.rule.interpolate is False


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"steps": 0}, "steps"),
        ({"steps": 10, "max_spikes": 0}, "max_spikes"),
        ({"steps": 10, "on_overflow": "drop"}, "on_overflow"),
        ({"steps": 10, "min_slope": -1.0}, "min_slope"),
        ({"steps": 10, "tau_mem": 0.0}, "tau_mem"),
        ({"steps": 10, "threshold": -1}, "threshold"),
        ({"steps": 10, "silent_bump": -1}, "silent_bump"),
        ({"steps": 10, "use_custom_ops": "sometimes"}, "use_custom_ops"),
    ],
)
def test_bad_arguments_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        EventPropCubaLIF(4, **kwargs)


def test_bad_readout_is_named():
    with pytest.raises(ValueError, match="readout"):
        EventPropLI(3, steps=10, readout="mean")


@pytest.mark.parametrize(
    "times, match",
    [
        ([[[math.nan]]], "NaN"),
        ([[[-1e-3]]], ">= 0"),
        ([[[0.5]]], "window"),
        ([[[2e-3, 1e-3]]], "sorted"),
    ],
)
def test_bad_spike_times_raise_clear_errors(times, match):
    layer = EventPropCubaLIF(2, steps=20)
    with pytest.raises(tf.errors.InvalidArgumentError, match=match):
        layer(tf.constant(times, tf.float32))


def test_wrong_rank_is_named():
    with pytest.raises(ValueError, match=r"\[batch, inputs, slots\]"):
        EventPropCubaLIF(2, steps=20)(tf.zeros([3, 4]))


def test_overflow_raises_in_the_layer():
    layer = EventPropCubaLIF(
        1, steps=60, max_spikes=1, kernel_initializer=keras.initializers.Constant(40.0)
    )
    with pytest.raises(tf.errors.InvalidArgumentError, match="max_spikes=1"):
        layer(tf.zeros([1, 1, 1]))


@pytest.mark.parametrize("use_custom_ops", [True, False], ids=["kernels", "tf_twin"])
def test_overflow_warning_names_the_layer_and_the_fix(capfd, use_custom_ops):
    layer = EventPropCubaLIF(
        1,
        steps=60,
        max_spikes=1,
        on_overflow="warn",
        kernel_initializer=keras.initializers.Constant(40.0),
        use_custom_ops=use_custom_ops,
        name="hidden",
    )
    out = layer(tf.zeros([1, 1, 1]))
    assert np.isfinite(out.numpy()).sum() == 1
    err = capfd.readouterr().err
    assert "WARNING: EventPropCubaLIF (hidden):" in err
    assert "spikes not recorded" in err and "raise `max_spikes` above 1" in err
    assert "on_overflow" not in err  # the user passed it already


@pytest.mark.parametrize(
    "layer, kwargs, error, match",
    [
        (EventPropCubaLIF, {"units": 2**31, "steps": 10}, ValueError, r"`units`.*<= 2147483647"),
        (EventPropCubaLIF, {"units": 4, "steps": 2**31}, ValueError, r"`steps`.*2147483648"),
        (EventPropCubaLIF, {"units": 4, "steps": 10.0}, TypeError, r"`steps`.*10\.0"),
        (EventPropCubaLIF, {"units": 4, "steps": 10, "max_spikes": 2**31}, ValueError, "max_s"),
        (
            EventPropCubaLIF,
            {"units": 2**11, "steps": 10, "max_spikes": 2**30},
            ValueError,
            r"`max_spikes`=1073741824 makes the spike buffers \[batch=\?, units=2048",
        ),
        (
            EventPropLI,
            {"units": 2**11, "steps": 2**30, "readout": "sequence"},
            ValueError,
            r"`steps`=1073741824 .*limit of 1099511627776",
        ),
        (EventPropLI, {"units": 4, "steps": 10, "tau_mem": 10**400}, ValueError, "tau_mem"),
        (EventPropLI, {"units": 4, "steps": 10, "dt": "1e-3"}, TypeError, "`dt`"),
        (EventPropLI, {"units": 4, "steps": 10, "kernel_initializer": 3}, ValueError, "kernel_in"),
        (SpikeTimeDropout, {"rate": 0.1, "seed": 2**70}, ValueError, "`seed`"),
        (SpikeTimeDropout, {"rate": 0.1, "seed": 1.5}, TypeError, "`seed`"),
    ],
)
def test_limits_are_checked_at_construction(layer, kwargs, error, match):
    with pytest.raises(error, match=match):
        layer(**kwargs)


def test_limits_at_the_edge_are_accepted():
    # the largest steps and max_spikes that still fit; only the call would need the memory
    layer = EventPropCubaLIF(1, steps=2**31 - 1, max_spikes=2**31 - 1)
    assert layer.get_config()["steps"] == 2**31 - 1
    assert EventPropLI(2**9, steps=2**31 - 1, readout="sequence").steps == 2**31 - 1


# ------------------------------------------------------------------ loss, metric, encoder


def test_first_spike_loss_matches_the_formula():
    times = np.array([[[3e-3, 9e-3], [5e-3, np.inf], [np.inf, np.inf]]], "float64")
    labels = np.array([1])
    loss = ks.losses.FirstSpikeTimeCrossEntropy(reduction=None)(labels, times)
    t = np.array([3e-3, 5e-3, 0.1])  # the silent neuron stands at silent_time = 0.1 s
    logits = -t / 0.5e-3
    expected = -(logits[1] - np.log(np.exp(logits - logits.max()).sum()) - logits.max())
    expected += 3e-3 * (np.exp(5e-3 / 6.4e-3) - 1)
    # Keras computes the loss in float32 (floatx)
    np.testing.assert_allclose(loss.numpy(), [expected], rtol=1e-6)


def test_first_spike_loss_silent_label_gives_no_gradient_of_its_own():
    times = tf.constant([[[3e-3], [np.inf], [4e-3]]], tf.float64)
    with tf.GradientTape() as tape:
        tape.watch(times)
        loss = ks.losses.FirstSpikeTimeCrossEntropy()(np.array([1]), times)
    grad = tape.gradient(loss, times).numpy()
    assert np.isfinite(loss.numpy())
    assert grad[0, 1, 0] == 0.0
    # the spiking wrong neurons are pushed later (gradient descent raises their times)
    assert grad[0, 0, 0] < 0 and grad[0, 2, 0] < 0


def test_first_spike_accuracy_counts_strict_first_and_silent_as_wrong():
    times = np.array(
        [
            [[1e-3], [2e-3], [np.inf]],  # label 0 first: right
            [[2e-3], [2e-3], [3e-3]],  # tie with label 1: wrong
            [[np.inf], [np.inf], [np.inf]],  # all silent: wrong
            [[5e-3], [np.inf], [1e-3]],  # label 2 first: right
        ],
        "float32",
    )
    metric = ks.losses.FirstSpikeAccuracy()
    metric.update_state(np.array([0, 1, 0, 2]), times)
    assert float(metric.result()) == pytest.approx(0.5)


def test_first_spike_loss_bad_arguments():
    with pytest.raises(ValueError, match="tau0"):
        ks.losses.FirstSpikeTimeCrossEntropy(tau0=0)
    with pytest.raises(ValueError, match=r"\[batch, classes"):
        ks.losses.FirstSpikeTimeCrossEntropy()(np.array([0]), np.zeros([1, 2, 3, 4]))


def test_latency_times_encoder():
    x = np.array([[0.0, 0.5, 1.0]], "float32")
    np.testing.assert_allclose(
        ks.encoders.latency_times(x, 30e-3, bias_time=0.0).numpy()[0, :, 0],
        [0.0, 15e-3, 30e-3, 0.0],
    )
    np.testing.assert_allclose(
        ks.encoders.latency_times(x, 20e-3, invert=True).numpy()[0, :, 0], [20e-3, 10e-3, 0.0]
    )
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        ks.encoders.latency_times(np.array([[1.5]]), 1e-3)
    with pytest.raises(ValueError, match="t_max"):
        ks.encoders.latency_times(x, -1.0)


def test_spike_time_dropout_removes_spikes_only_in_training():
    x = tf.constant(np.sort(np.random.default_rng(0).uniform(0, 0.02, (64, 50, 3)), -1), tf.float32)
    layer = ks.layers.SpikeTimeDropout(0.2, seed=3)
    np.testing.assert_array_equal(layer(x, training=False).numpy(), x.numpy())
    out = layer(x, training=True).numpy()
    dropped = np.isinf(out).mean()
    assert 0.17 < dropped < 0.23  # 9600 Bernoulli(0.2) draws: 3 sigma is about 0.012
    np.testing.assert_array_equal(np.sort(out, axis=-1), out)  # sorted, +inf last
    kept = out[np.isfinite(out)]
    assert np.isin(kept, x.numpy()).all()  # survivors unchanged, not rescaled
    assert ks.layers.SpikeTimeDropout.from_config(layer.get_config()).rate == 0.2
    with pytest.raises(ValueError, match="rate"):
        ks.layers.SpikeTimeDropout(1.0)


# ------------------------------------------------- event sequences and CubaLIF(gradient=...)


def test_sequence_and_times_convert_both_ways_with_gradient():
    x = np.zeros((2, 6, 3))
    x[0, 1, 0], x[0, 3, 0], x[1, 5, 2], x[1, 0, 1] = 1.0, 0.25, 0.5, 1.0
    times = ep.sequence_to_times(tf.constant(x), 1e-3)
    assert times.shape == (2, 3, 2)  # the busiest neuron has 2 spikes
    np.testing.assert_allclose(times.numpy()[0, 0], [2e-3, 3.25e-3])
    assert np.isinf(times.numpy()[0, 1]).all()
    np.testing.assert_allclose(ep.times_to_sequence(times, 6, 1e-3).numpy(), x, atol=1e-12)
    # a spike exactly on a grid time belongs to the end of the step before it
    on_grid = ep.times_to_sequence(tf.constant([[[3e-3]]], tf.float64), 6, 1e-3).numpy()
    assert on_grid[0, 2, 0] == pytest.approx(1.0) and on_grid.sum() == pytest.approx(1.0)
    with tf.GradientTape() as tape:
        tape.watch(times)
        total = tf.reduce_sum(ep.times_to_sequence(times, 6, 1e-3) * 2.0)
    grad = tape.gradient(total, times).numpy()
    np.testing.assert_allclose(grad[np.isfinite(times.numpy())], 2.0 / 1e-3)
    with pytest.raises(tf.errors.InvalidArgumentError, match="max_spikes=1"):
        ep.sequence_to_times(tf.constant(x), 1e-3, max_spikes=1)


def _event_sequences(rng, batch=2, steps=40, inputs=6, density=0.06):
    x = (rng.uniform(size=(batch, steps, inputs)) < density) * rng.uniform(0.1, 1, (1, 1, 1))
    return tf.constant(x, tf.float64)


def test_cuba_lif_eventprop_equals_the_eventprop_layer(rng):
    x = _event_sequences(rng)
    # zero-mean weights keep the spike count under the default buffer on this dense input
    layer = ks.layers.CubaLIF(
        5,
        reset="zero",
        tau_mem=20e-3,
        gradient="eventprop",
        recurrent=True,
        kernel_initializer="glorot_uniform",
        dtype="float64",
    )
    out = layer(x)
    reference = EventPropCubaLIF(
        5, steps=40, recurrent=True, input_format="sequence", dtype="float64"
    )
    reference.build(x.shape)
    reference.kernel.assign(layer.cell.kernel)
    reference.recurrent_kernel.assign(layer.cell.recurrent_kernel)
    expected = ep.times_to_sequence(reference(x), 40, 1e-3)
    np.testing.assert_array_equal(out.numpy(), expected.numpy())
    assert out.shape == (2, 40, 5)


def test_cuba_lif_eventprop_gradient_matches_finite_differences(rng):
    """Two layers through event sequences: the spike timing crosses layers as values."""
    x = _event_sequences(rng, density=0.08)
    model = keras.Sequential(
        [
            keras.Input((40, 6)),
            ks.layers.CubaLIF(
                4,
                reset="zero",
                tau_mem=20e-3,
                gradient=ep.EventProp(max_spikes=20),
                kernel_initializer=keras.initializers.RandomNormal(1.0, 0.7, seed=2),
                dtype="float64",
            ),
            ks.layers.CubaLIF(
                3,
                reset="zero",
                tau_mem=20e-3,
                gradient=ep.EventProp(max_spikes=20),
                kernel_initializer=keras.initializers.RandomNormal(0.6, 0.5, seed=3),
                dtype="float64",
            ),
            EventPropLI(2, steps=40, input_format="sequence", readout="max", dtype="float64"),
        ]
    )
    weights = model.layers[0].cell.kernel

    def loss():
        return tf.reduce_sum(model(x) * tf.constant([[1.0, -0.5]], tf.float64))

    def counts():
        first = model.layers[0](x)
        return [int(np.count_nonzero(first)), int(np.count_nonzero(model.layers[1](first)))]

    with tf.GradientTape() as tape:
        value = loss()
    grad = tape.gradient(value, weights).numpy()
    base = counts()
    assert base[1] > 0
    original = weights.numpy()
    fd = np.zeros_like(original)
    eps = 1e-7
    for index in np.ndindex(*original.shape):
        values = []
        for sign in (1, -1):
            moved = original.copy()
            moved[index] += sign * eps
            weights.assign(moved)
            assert counts() == base  # no spike appears or disappears
            values.append(float(loss()))
        fd[index] = (values[0] - values[1]) / (2 * eps)
    weights.assign(original)
    np.testing.assert_allclose(grad, fd, rtol=0, atol=1e-6 * np.abs(fd).max())


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({}, "reset='zero'"),
        ({"reset": "zero", "use_bias": True}, "use_bias"),
        ({"reset": "zero", "tau_mem": [0.01, 0.02]}, "scalar"),
        ({"reset": "zero", "return_state": True}, "return_state"),
    ],
)
def test_cuba_lif_eventprop_rejects_options_it_cannot_honour(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ks.layers.CubaLIF(2, gradient="eventprop", **kwargs)


def test_cuba_lif_gradient_config_round_trip(tmp_path):
    model = keras.Sequential(
        [
            keras.Input((20, 4)),
            ks.layers.CubaLIF(
                3,
                reset="zero",
                gradient=ep.EventProp(max_spikes=5, min_slope=10.0),
                # zero-mean weights: the default drive fires more than 5 times on this input
                kernel_initializer="glorot_uniform",
            ),
            ks.layers.CubaLIF(3),
        ]
    )
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    assert loaded.layers[0].gradient == ep.EventProp(max_spikes=5, min_slope=10.0)
    assert loaded.layers[1].gradient is None
    x = np.random.default_rng(0).uniform(size=(2, 20, 4)).astype("float32") < 0.2
    np.testing.assert_array_equal(model(x.astype("float32")), loaded(x.astype("float32")))
    with pytest.raises(ValueError, match="gradient"):
        ks.layers.CubaLIF(3, gradient="bptt")


def test_event_sequences_out_of_range_or_too_long_raise():
    bad = np.zeros((1, 10, 2), "float32")
    bad[0, 3, 1] = 1.5
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"\[0, 1\]"):
        ks.layers.CubaLIF(2, reset="zero", gradient="eventprop")(bad)
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"\[0, 1\]"):
        EventPropLI(2, steps=10, input_format="sequence")(bad)
    long = np.ones((1, 30, 2), "float32")
    with pytest.raises(tf.errors.InvalidArgumentError, match="window"):
        EventPropLI(2, steps=10, input_format="sequence")(long)
