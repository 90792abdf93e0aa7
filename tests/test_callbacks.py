"""FiringRateMonitor, SpikeRasterPlot and plot_spike_raster on a LIF layer with known spikes."""

import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from keras_spiking import callbacks, layers, metrics

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
T = 8
# Same hand-worked set-up as tests/test_metrics.py: per-neuron tau_mem 1e9 s (beta = 1) or
# 1e-9 s (beta = 0), one input feature at 1.5 per step (sample 0) or 0 (sample 1).
TAU = [1e9, 1e9, 1e-9, 1e-9]
KERNEL = np.array([[0.5, 0.0, 0.5, 1.0]], dtype="float32")
X = np.stack([np.full((T, 1), 1.5), np.zeros((T, 1))]).astype("float32")
Y = np.zeros((2, T, 2), dtype="float32")
# u[t] = beta v[t-1] + I[t], spike when u > 1, v = u - spike. Sample 0: neuron 0 (I = 0.75,
# no leak) fires at steps 1, 2, 4, 5, 6 (u reaches exactly 1.0 at steps 3 and 7: no spike);
# neuron 1 (zero weight) and neuron 2 (I = 0.75, no memory) never; neuron 3 (I = 1.5) always.
SPIKES_SAMPLE0 = np.zeros((T, 4))
SPIKES_SAMPLE0[[1, 2, 4, 5, 6], 0] = 1
SPIKES_SAMPLE0[:, 3] = 1
MEAN_RATE = 13 / 64  # 13 spikes over 2 samples x 8 steps x 4 neurons
DEAD = 2


def hand_model(learning_rate=0.0, second_layer=False):
    """LIF with hand-set weights -> (optional silent LIF) -> LI readout, compiled for mse.

    With learning_rate 0 the weights (and so the spikes) stay as set during fit.
    """
    lif = layers.LIF(4, tau_mem=TAU, name="lif")
    stack = [keras.Input((T, 1)), lif]
    if second_layer:
        stack.append(layers.LIF(3, kernel_initializer="zeros", name="silent"))
    stack.append(layers.LI(2, name="readout"))
    model = keras.Sequential(stack)
    lif.cell.kernel.assign(KERNEL)
    model.compile(keras.optimizers.SGD(learning_rate), "mse")
    return model


def scatter_points(figure):
    offsets = np.asarray(figure.axes[0].collections[0].get_offsets())
    return {(float(t), int(round(n))) for t, n in offsets.reshape(-1, 2)}


def test_plot_spike_raster_draws_one_point_per_spike(tmp_path):
    rng = np.random.default_rng(0)
    spikes = (rng.random((30, 12)) < 0.2).astype("float32")
    path = tmp_path / "raster.png"
    figure = callbacks.plot_spike_raster(spikes, path, title="random")
    expected = {(float(t), int(n)) for t, n in zip(*np.nonzero(spikes), strict=True)}
    assert len(figure.axes[0].collections[0].get_offsets()) == spikes.sum()
    assert scatter_points(figure) == expected
    assert figure.axes[0].get_title() == "random"
    assert path.read_bytes()[:8] == PNG_MAGIC


def test_plot_spike_raster_truncates_neurons_and_scales_time():
    spikes = np.zeros((5, 10), dtype=bool)
    spikes[2, 1] = spikes[4, 7] = True
    figure = callbacks.plot_spike_raster(spikes, max_neurons=5, dt=1e-3)
    assert scatter_points(figure) == {(0.002, 1)}  # neuron 7 is not drawn; t = 2 * dt seconds
    assert "first 5 of 10" in figure.axes[0].get_ylabel()
    assert figure.axes[0].get_xlabel() == "time (s)"
    empty = callbacks.plot_spike_raster(np.zeros((4, 3)))
    assert len(empty.axes[0].collections[0].get_offsets()) == 0


def test_plot_spike_raster_validates_its_input():
    with pytest.raises(ValueError, match=r"\[time, neurons\].*\(2, 3, 4\)"):
        callbacks.plot_spike_raster(np.zeros((2, 3, 4)))
    with pytest.raises(ValueError, match="only 0 and 1.*0.5"):
        callbacks.plot_spike_raster(np.array([[0.0, 0.5], [1.0, 0.0]]))
    with pytest.raises(ValueError, match="max_neurons.*0"):
        callbacks.plot_spike_raster(np.zeros((2, 2)), max_neurons=0)


def test_raster_of_model_spikes_matches_the_hand_computed_spikes():
    model = hand_model()
    spikes = metrics.spike_trains(model, X[:1])["lif"][0]
    np.testing.assert_array_equal(spikes, SPIKES_SAMPLE0)
    figure = callbacks.plot_spike_raster(spikes)
    assert len(figure.axes[0].collections[0].get_offsets()) == 13  # 5 + 8 spikes
    assert scatter_points(figure) == {(float(t), 0) for t in (1, 2, 4, 5, 6)} | {
        (float(t), 3) for t in range(T)
    }


def test_firing_rate_monitor_logs_rates_and_dead_neurons_to_history(capsys):
    model = hand_model()
    monitor = callbacks.FiringRateMonitor(X, verbose=1)
    history = model.fit(X, Y, epochs=2, batch_size=2, callbacks=[monitor], verbose=0)
    # learning rate 0: the weights, and so the hand-computed rates, are the same every epoch
    assert history.history["lif_rate"] == [pytest.approx(MEAN_RATE, rel=1e-12)] * 2
    assert history.history["lif_dead"] == [DEAD, DEAD]
    assert "readout_rate" not in history.history  # the LI readout does not spike
    assert [entry["epoch"] for entry in monitor.history] == [0, 1]
    np.testing.assert_array_equal(monitor.history[-1]["rates"]["lif"], [5 / 16, 0, 0, 0.5])
    assert monitor.history[-1]["dead"] == {"lif": DEAD}
    printed = capsys.readouterr().out
    assert "FiringRateMonitor epoch 2: lif: rate 0.2031 spikes/step, dead 2/4" in printed


def test_firing_rate_monitor_measures_the_current_weights():
    model = hand_model(learning_rate=0.5)
    monitor = callbacks.FiringRateMonitor(X, verbose=0, dt=1e-3)
    model.fit(X, np.ones_like(Y), epochs=2, batch_size=2, callbacks=[monitor], verbose=0)
    # after the last epoch the weights no longer change, so a fresh measurement agrees
    after = metrics.firing_rates(model, X, dt=1e-3)
    np.testing.assert_allclose(monitor.history[-1]["rates"]["lif"], after["lif"], rtol=1e-12)
    # and training moved them: the first measurement differs from the hand-set weights' rates
    assert not np.allclose(monitor.history[0]["rates"]["lif"], np.array([5, 0, 0, 8]) / 16e-3)


def test_firing_rate_monitor_every_and_config():
    model = hand_model(second_layer=True)
    monitor = callbacks.FiringRateMonitor(X, every=2, verbose=0)
    history = model.fit(X, Y, epochs=3, batch_size=2, callbacks=[monitor], verbose=0)
    assert [entry["epoch"] for entry in monitor.history] == [1]  # only the 2nd epoch
    assert history.history["lif_dead"] == [DEAD]
    assert history.history["silent_dead"] == [3]
    assert history.history["silent_rate"] == [0.0]
    assert len(history.history["loss"]) == 3
    config = monitor.get_config()
    clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(monitor))
    assert isinstance(clone, callbacks.FiringRateMonitor)
    assert clone.get_config() == config
    assert clone.x.dtype == X.dtype
    np.testing.assert_array_equal(clone.x, X)
    with pytest.raises(ValueError, match="every.*0"):
        callbacks.FiringRateMonitor(X, every=0)


def test_spike_raster_plot_writes_one_png_per_layer_and_epoch(tmp_path):
    model = hand_model(second_layer=True)
    template = str(tmp_path / "rasters" / "{layer}_e{epoch}.png")
    raster = callbacks.SpikeRasterPlot(X, template, sample=0)
    model.fit(X, Y, epochs=2, batch_size=2, callbacks=[raster], verbose=0)
    expected = [tmp_path / "rasters" / f"{n}_e{e}.png" for e in (1, 2) for n in ("lif", "silent")]
    assert raster.paths == [str(p) for p in expected]
    for path in expected:
        assert path.read_bytes()[:8] == PNG_MAGIC
        with Image.open(path) as image:
            assert image.size[0] > 100 and image.size[1] > 100
    # the image of layer "lif" is pixel for pixel the raster of the hand-computed spikes
    reference = tmp_path / "reference.png"
    callbacks.plot_spike_raster(SPIKES_SAMPLE0, reference, title="lif: epoch 2, sample 0")
    with Image.open(expected[2]) as written, Image.open(reference) as drawn:
        np.testing.assert_array_equal(np.asarray(written), np.asarray(drawn))


def test_spike_raster_plot_single_layer_and_config(tmp_path):
    model = hand_model(second_layer=True)
    raster = callbacks.SpikeRasterPlot(X, tmp_path / "lif.png", layer="lif", sample=-1)
    model.fit(X, Y, epochs=1, batch_size=2, callbacks=[raster], verbose=0)
    assert raster.paths == [str(tmp_path / "lif.png")]
    config = raster.get_config()
    assert config["layer"] == "lif" and config["sample"] == 0
    clone = callbacks.SpikeRasterPlot.from_config(config)
    np.testing.assert_array_equal(clone.x, X[1:])  # sample -1 is the last
    assert clone.get_config() == config


def test_spike_raster_plot_checks_its_arguments(tmp_path):
    with pytest.raises(ValueError, match=r"\{step\}"):
        callbacks.SpikeRasterPlot(X, tmp_path / "{step}.png")
    with pytest.raises(ValueError, match="sample.*5"):
        callbacks.SpikeRasterPlot(X, tmp_path / "r.png", sample=5)
    with pytest.raises(TypeError, match="Dataset"):
        callbacks.SpikeRasterPlot(tf.data.Dataset.from_tensor_slices(X), tmp_path / "r.png")
    model = hand_model(second_layer=True)
    no_layer_field = callbacks.SpikeRasterPlot(X, tmp_path / "r_{epoch}.png")
    with pytest.raises(ValueError, match=r"needs a \{layer\} placeholder"):
        model.fit(X, Y, epochs=1, callbacks=[no_layer_field], verbose=0)
    unknown = callbacks.SpikeRasterPlot(X, tmp_path / "r.png", layer="readout")
    with pytest.raises(ValueError, match="`layer` must name a spiking layer.*'readout'"):
        model.fit(X, Y, epochs=1, callbacks=[unknown], verbose=0)


def test_missing_matplotlib_gives_an_install_hint(monkeypatch, tmp_path):
    # a None entry in sys.modules makes `import` raise ImportError, as if not installed
    monkeypatch.setitem(sys.modules, "matplotlib.backends.backend_agg", None)
    with pytest.raises(ImportError, match="pip install matplotlib"):
        callbacks.plot_spike_raster(np.zeros((2, 2)))
    with pytest.raises(ImportError, match="pip install matplotlib"):
        callbacks.SpikeRasterPlot(X, tmp_path / "r.png")
