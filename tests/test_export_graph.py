"""The exporters' static graphs (export/_graph.py) against the layers they are built from."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_spiking import layers
from keras_spiking.export import ExportError, _graph

# float32 sums in another order than the layers' scans; far below the 1e-2 margin of any
# membrane to the threshold that would flip a spike in these cases (spikes are compared exactly)
ATOL = 1e-4


def _model(first, rng, steps=12, features=8):
    model = keras.Sequential([keras.Input((steps, features)), first, keras.layers.Dropout(0.1)])
    model.add(layers.LI(3, use_bias=True))
    for weight in model.weights:
        if len(weight.shape) > 1 or "bias" in weight.path:
            weight.assign(rng.normal(0, 1.0, weight.shape).astype("float32"))
    return model


FIRST_LAYERS = {
    "lif_zero_bias": lambda: layers.LIF(16, reset="zero", use_bias=True),
    "lif_recurrent_per_neuron_tau": lambda: layers.LIF(
        16, recurrent=True, tau_mem=np.linspace(0.005, 0.05, 16)
    ),
    "cuba_recurrent": lambda: layers.CubaLIF(16, recurrent=True, threshold=0.7),
}


@pytest.mark.parametrize("first", FIRST_LAYERS)
def test_unrolled_and_stepped_graphs_equal_the_model(first, rng):
    model = _model(FIRST_LAYERS[first](), rng)
    x = (rng.random((5, 12, 8)) < 0.3).astype("float32")
    specs = _graph.neuron_layers(model, "test")
    assert [spec.kind for spec in specs] == [
        "cuba" if first.startswith("cuba") else "lif",
        "li",
    ]
    want = model.predict(x, verbose=0)
    np.testing.assert_allclose(_graph.unrolled(specs, tf.constant(x), 12), want, atol=ATOL)
    states = _graph.zero_states(specs, 5)
    stepped = []
    for t in range(12):
        out, states = _graph.step(specs, x[:, t], states)
        stepped.append(out)
    np.testing.assert_allclose(np.stack(stepped, 1), want, atol=ATOL)
    hidden = keras.Model(model.inputs, model.layers[0].output).predict(x, verbose=0)
    spikes = _graph.unrolled(specs[:1], tf.constant(x), 12).numpy()
    np.testing.assert_array_equal(spikes, hidden)


def test_state_names_follow_the_layer_kind(rng):
    specs = _graph.neuron_layers(_model(layers.LIF(4), rng), "test")
    assert _graph.state_specs(specs) == [(f"{specs[0].name}/v", 4), (f"{specs[1].name}/v", 3)]


def test_src_graph_equals_the_layer(rng):
    model = keras.Sequential(
        [keras.Input((30, 6)), layers.SRC(8, bias_initializer="zeros"), layers.LI(3)]
    )
    for weight in model.weights:
        if len(weight.shape) > 1:
            weight.assign(rng.normal(0.3, 1.0, weight.shape).astype("float32"))
    x = (rng.random((4, 30, 6)) < 0.4).astype("float32")
    specs = _graph.neuron_layers(model, "test")
    assert [spec.kind for spec in specs] == ["src", "li"]
    hidden = keras.Model(model.inputs, model.layers[0].output).predict(x, verbose=0)
    assert hidden.max() > 0.1  # the case pulses
    np.testing.assert_allclose(
        _graph.unrolled(specs, tf.constant(x), 30), model.predict(x, verbose=0), atol=ATOL
    )


def test_unsupported_layer_is_named_with_the_target():
    model = keras.Sequential([keras.Input((5, 3)), keras.layers.Conv1D(4, 2), layers.LI(2)])
    with pytest.raises(ExportError, match=r"tflite export: layer 'conv1d.*' of type Conv1D"):
        _graph.neuron_layers(model, "tflite")
    with pytest.raises(ExportError, match="needs a built model"):
        _graph.neuron_layers(keras.Sequential([layers.LIF(3)]), "tflite")


def test_functional_chain_is_accepted_and_branches_are_refused():
    inputs = keras.Input((6, 4))
    hidden = layers.LIF(5)(inputs)
    chain = keras.Model(inputs, layers.LI(2)(hidden))
    assert [spec.kind for spec in _graph.neuron_layers(chain, "test")] == ["lif", "li"]
    skip = keras.layers.Concatenate()([hidden, layers.LIF(5)(hidden)])
    branched = keras.Model(inputs, layers.LI(2)(skip))
    with pytest.raises(ExportError, match="test export takes a chain of layers"):
        _graph.neuron_layers(branched, "test")
