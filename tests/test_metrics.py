"""Firing rates, dead neurons and the SpikeRate metric against spike counts worked out by hand."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_spiking import layers, metrics

T = 8
# tau_mem per neuron: 1e9 s gives beta = exp(-1e-3 / 1e9) = 1.0 in float32 (no leak),
# 1e-9 s gives beta = exp(-1e6) = 0.0 (no memory: u[t] = I[t]).
TAU = [1e9, 1e9, 1e-9, 1e-9]
KERNEL = np.array([[0.5, 0.0, 0.5, 1.0]], dtype="float32")
# Sample 0 drives the single input feature with 1.5 per step, sample 1 with 0.
X = np.stack([np.full((T, 1), 1.5), np.zeros((T, 1))]).astype("float32")

# By hand from u[t] = beta v[t-1] + I[t], S = H(u - 1) (strict), v = u - S, for sample 0:
# neuron 0 (beta 1, I 0.75): u = .75, 1.5*, 1.25*, 1.0, 1.75*, 1.5*, 1.25*, 1.0 (* = spike;
#   u = 1.0 equals the threshold and does not spike) -> steps 1, 2, 4, 5, 6
# neuron 1 (weight 0): never; neuron 2 (beta 0, I 0.75 < 1): never; neuron 3 (beta 0, I 1.5):
# every step. Sample 1 (no input) never spikes.
SPIKES_SAMPLE0 = np.zeros((T, 4))
SPIKES_SAMPLE0[[1, 2, 4, 5, 6], 0] = 1
SPIKES_SAMPLE0[:, 3] = 1
RATES = np.array([5 / 16, 0.0, 0.0, 8 / 16])  # spikes per step over 2 samples x 8 steps


def reference_lif(current, beta, threshold=1.0):
    """Independent float64 loop of the LIF equations with subtractive reset; [T] -> [T]."""
    v, out = 0.0, []
    for i in current:
        u = beta * v + i
        s = float(u > threshold)
        v = u - threshold * s
        out.append(s)
    return np.array(out)


def hand_lif(name="lif"):
    layer = layers.LIF(4, tau_mem=TAU, threshold=1.0, name=name)
    layer.build((None, T, 1))
    layer.cell.kernel.assign(KERNEL)
    return layer


def hand_model():
    lif = hand_lif()
    return keras.Sequential([keras.Input((T, 1)), lif, layers.LI(2, name="readout")])


def test_hand_pattern_matches_independent_reference():
    # Guards the hand-worked pattern above with a plain loop of the same equations.
    for j, beta in enumerate([1.0, 1.0, 0.0, 0.0]):
        current = X[0, :, 0] * KERNEL[0, j]
        np.testing.assert_array_equal(reference_lif(current, beta), SPIKES_SAMPLE0[:, j])


def test_spiking_layers_finds_spiking_layers_only_and_looks_inside_nested_models():
    inner = keras.Sequential(
        [keras.Input((T, 4)), layers.CubaLIF(3, name="cuba"), layers.LI(3, name="li_inner")],
        name="inner",
    )
    model = keras.Sequential(
        [
            keras.Input((T, 2)),
            layers.LIF(4, name="first"),
            keras.layers.Dense(4, name="dense"),
            inner,
            layers.LI(2, name="readout"),
        ]
    )
    found = metrics.spiking_layers(model)
    assert [layer.name for layer in found] == ["first", "cuba"]
    assert all(layer.spiking for layer in found)
    assert not model.get_layer("readout").spiking


def test_spiking_layers_rejects_non_models():
    with pytest.raises(TypeError, match="keras.Model"):
        metrics.spiking_layers(layers.LIF(3))


def test_firing_rates_match_hand_computation():
    model = hand_model()
    rates = metrics.firing_rates(model, X)
    assert set(rates) == {"lif"}  # the LI readout does not spike
    # exact: spike counts are sums of 0/1 in float64, divided by 16
    np.testing.assert_array_equal(rates["lif"], RATES)


def test_firing_rates_batching_and_hz():
    model = hand_model()
    per_sample = metrics.firing_rates(model, X, batch_size=1)
    np.testing.assert_array_equal(per_sample["lif"], RATES)  # exact, as above
    hz = metrics.firing_rates(model, X, dt=1e-3)
    np.testing.assert_allclose(hz["lif"], RATES / 1e-3, rtol=1e-12)  # one float64 division


def test_firing_rates_accept_a_dataset():
    model = hand_model()
    dataset = tf.data.Dataset.from_tensor_slices((X, np.zeros((2, T, 2)))).batch(1)
    np.testing.assert_array_equal(metrics.firing_rates(model, dataset)["lif"], RATES)
    with pytest.raises(ValueError, match="batch_size"):
        metrics.firing_rates(model, dataset, batch_size=4)


def test_dead_neurons_counts_never_firing_neurons():
    model = hand_model()
    # neuron 1 has zero weights, neuron 2 stays below threshold without memory
    assert metrics.dead_neurons(model, X) == {"lif": 2}
    # on the silent sample alone every neuron is dead
    assert metrics.dead_neurons(model, X[1:]) == {"lif": 4}


def test_functional_model_with_two_inputs_and_cuba_lif():
    a = keras.Input((T, 1), name="a")
    b = keras.Input((T, 1), name="b")
    lif = hand_lif()
    # CubaLIF with tau_syn, tau_mem -> 0 (alpha = beta = 0): I[n+1] = 1.5 w, U[n+1] = I[n] -
    # S[n]; with w = 1: U = 0, 0, 1.5*, 0.5, 1.5*, 0.5, 1.5*, 0.5 -> spikes at steps 2, 4, 6.
    cuba = layers.CubaLIF(1, tau_syn=1e-9, tau_mem=1e-9, name="cuba")
    merged = keras.layers.Concatenate()([lif(a), cuba(b)])
    model = keras.Model({"a": a, "b": b}, layers.LI(2)(merged))
    cuba.cell.kernel.assign(np.ones((1, 1), "float32"))
    rates = metrics.firing_rates(model, {"a": X, "b": X})
    np.testing.assert_array_equal(rates["lif"], RATES)  # exact, as above
    np.testing.assert_array_equal(rates["cuba"], [3 / 16])  # 3 spikes in 2 samples x 8 steps


def test_nested_sequential_models_are_probed():
    inner = keras.Sequential([keras.Input((T, 1)), hand_lif("inner_lif")], name="inner")
    silent = layers.LIF(3, kernel_initializer="zeros", name="silent")
    model = keras.Sequential([keras.Input((T, 1)), inner, silent, layers.LI(2)])
    rates = metrics.firing_rates(model, X)
    np.testing.assert_array_equal(rates["inner_lif"], RATES)  # exact, as above
    np.testing.assert_array_equal(rates["silent"], np.zeros(3))
    assert metrics.dead_neurons(model, X) == {"inner_lif": 2, "silent": 3}


def test_unbuilt_sequential_is_run_layer_by_layer():
    model = keras.Sequential([layers.LIF(4, tau_mem=TAU, name="lif")])
    model.build((None, T, 1))
    model.get_layer("lif").cell.kernel.assign(KERNEL)
    unbuilt = keras.Sequential([model.get_layer("lif")])  # shares the layer, no keras.Input
    np.testing.assert_array_equal(metrics.firing_rates(unbuilt, X)["lif"], RATES)


def test_subclassed_model_is_refused_with_advice():
    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.lif = layers.LIF(3)

        def call(self, x):
            return self.lif(x)

    net = Net()
    net(X)
    with pytest.raises(ValueError, match=r"subclassed.*keras.Model\(inputs, outputs\)"):
        metrics.firing_rates(net, X)


def test_functional_model_with_nested_spiking_model_is_refused():
    inner = keras.Sequential([keras.Input((T, 1)), layers.LIF(2)], name="block")
    inputs = keras.Input((T, 1))
    model = keras.Model(inputs, layers.LI(1)(inner(inputs)))
    with pytest.raises(ValueError, match=r"nested model\(s\) \['block'\]"):
        metrics.firing_rates(model, X)


def test_argument_errors_name_the_argument_and_value():
    model = hand_model()
    with pytest.raises(ValueError, match="batch_size.*0"):
        metrics.firing_rates(model, X, batch_size=0)
    with pytest.raises(ValueError, match="dt.*-1"):
        metrics.firing_rates(model, X, dt=-1)
    with pytest.raises(ValueError, match="no samples"):
        metrics.firing_rates(model, X[:0])
    dense = keras.Sequential([keras.Input((T, 1)), keras.layers.Dense(2)], name="plain")
    with pytest.raises(ValueError, match="'plain' has no spiking layers"):
        metrics.dead_neurons(dense, X)


def test_duplicate_layer_names_are_refused():
    inner = keras.Sequential([keras.Input((T, 1)), layers.LIF(2, name="same")], name="inner")
    model = keras.Sequential([keras.Input((T, 1)), inner, layers.LIF(2, name="same")])
    with pytest.raises(ValueError, match=r"share the name\(s\) \['same'\]"):
        metrics.firing_rates(model, X)


def test_spike_rate_metric_is_a_weighted_mean():
    metric = metrics.SpikeRate()
    assert metric.name == "spike_rate"
    metric.update_state(None, np.array([[1.0, 0.0], [1.0, 1.0]]))
    metric.update_state(None, np.array([[0.0, 0.0]]))
    assert float(metric.result()) == pytest.approx(3 / 6, rel=1e-6)  # float32 accumulators
    metric.reset_state()
    assert float(metric.result()) == 0.0  # empty: divide_no_nan gives 0
    # per-sample weights: (2 * 1 + 0 * 1) / (2 * 2 + 0 * 2) with the second sample ignored
    metric.update_state(None, np.array([[1.0, 0.0], [1.0, 1.0]]), sample_weight=[2.0, 0.0])
    assert float(metric.result()) == pytest.approx(0.5, rel=1e-6)
    in_hz = metrics.SpikeRate(dt=1e-3)
    in_hz.update_state(None, np.ones((2, 3)))
    assert float(in_hz.result()) == pytest.approx(1000.0, rel=1e-6)


def test_spike_rate_in_compile_averages_over_batches():
    lif = hand_lif()
    model = keras.Sequential([keras.Input((T, 1)), lif])  # the output is the spikes
    model.compile(keras.optimizers.SGD(0.0), "mse", metrics=[metrics.SpikeRate()])
    result = model.evaluate(X, np.zeros((2, T, 4)), batch_size=1, verbose=0, return_dict=True)
    # 13 spikes (5 + 8, all in sample 0) among 2 x 8 x 4 entries, summed over two batches
    assert result["spike_rate"] == pytest.approx(13 / 64, rel=1e-6)  # float32 accumulators
    history = model.fit(X, np.zeros((2, T, 4)), epochs=1, batch_size=2, verbose=0)
    assert history.history["spike_rate"] == [pytest.approx(13 / 64, rel=1e-6)]


def test_spike_rate_config_round_trips():
    metric = metrics.SpikeRate(dt=2e-3, name="hidden_rate")
    assert keras.saving.get_registered_name(metrics.SpikeRate) == "keras_spiking>SpikeRate"
    config = metric.get_config()
    assert config["dt"] == 2e-3 and config["name"] == "hidden_rate"
    clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(metric))
    assert isinstance(clone, metrics.SpikeRate)
    assert clone.get_config() == config
    assert metrics.SpikeRate.from_config(config).dt == 2e-3
    with pytest.raises(ValueError, match="dt.*0"):
        metrics.SpikeRate(dt=0)


def test_spike_trains_are_the_layer_outputs():
    model = keras.Sequential(
        [keras.Input((6, 2)), layers.LIF(3, kernel_initializer="ones", name="lif"), layers.LI(2)]
    )
    x = np.full((2, 6, 2), 0.4, "float32")
    trains = metrics.spike_trains(model, x)
    assert list(trains) == ["lif"]
    np.testing.assert_array_equal(trains["lif"], model.layers[0](x).numpy())


def test_graded_pulses_count_as_events():
    """SRC outputs graded pulses; rates count the steps where the output is > 0."""
    model = keras.Sequential(
        [
            keras.Input((60, 1)),
            layers.SRC(2, kernel_initializer=keras.initializers.Constant(0.6), name="src"),
        ]
    )
    x = np.ones((1, 60, 1), "float32")
    out = model(x).numpy()
    assert np.any((out > 0) & (out < 1))  # graded, not 0/1
    trains = metrics.spike_trains(model, x)["src"]
    np.testing.assert_array_equal(trains, (out > 0).astype(out.dtype))
    np.testing.assert_allclose(metrics.firing_rates(model, x)["src"], (out > 0).mean(axis=(0, 1)))
