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


def test_unsupported_layer_is_named_with_the_target():
    model = keras.Sequential([keras.Input((5, 3)), layers.SRC(4), layers.LI(2)])
    with pytest.raises(ExportError, match=r"tflite export: layer 'src.*' of type SRC"):
        _graph.neuron_layers(model, "tflite")
    with pytest.raises(ExportError, match="needs a built model"):
        _graph.neuron_layers(keras.Sequential([layers.LIF(3)]), "tflite")
