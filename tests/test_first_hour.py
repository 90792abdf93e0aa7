"""A Keras user's first hour: the likely mistakes are caught and Keras' wrappers work.

Silent layers, spikes given to membrane losses, where the public names live, Bidirectional,
``compile(jit_compile=True)``, rank-2 inputs, counts logged as integers, and the EventProp
defaults that make a layer fire.
"""

from __future__ import annotations

import math
import re
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_spiking as ks
from keras_spiking import eventprop as ep
from keras_spiking.initializers import FanInNormal


def _fit(model, x, y, loss, **compile_kwargs):
    model.compile(keras.optimizers.Adam(1e-3), loss, **compile_kwargs)
    model.fit(x, y, epochs=1, batch_size=len(x), verbose=0)


def _recorded(category, fn):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fn()
    return [w for w in caught if issubclass(w.category, category)]


# ---- silent layers --------------------------------------------------------------------------
def test_a_silent_layer_warns_once_naming_it_and_what_to_change():
    x = np.random.default_rng(0).uniform(size=(8, 6, 4)).astype("float32")
    y = np.zeros(8, "int32")
    model = keras.Sequential(
        [
            keras.Input((6, 4)),
            ks.layers.LIF(5, threshold=1e3, name="quiet"),  # cannot reach threshold
            ks.layers.LI(2),
        ]
    )

    def train_twice():
        _fit(model, x, y, ks.losses.MaxMembraneCrossEntropy())
        model.fit(x, y, epochs=2, verbose=0)

    caught = _recorded(ks.SilentLayerWarning, train_twice)
    assert len(caught) == 1, [str(w.message) for w in caught]
    message = str(caught[0].message)
    assert "'quiet'" in message and "8 samples x 6 steps x 5 neurons" in message
    assert "threshold" in message and "kernel_initializer" in message


def test_a_firing_layer_and_inference_do_not_warn():
    x = np.ones((4, 6, 3), "float32")
    model = keras.Sequential(
        [
            keras.Input((6, 3)),
            ks.layers.LIF(4, kernel_initializer="ones"),  # 3 per step: fires every step
            ks.layers.LI(2),
        ]
    )
    caught = _recorded(
        ks.SilentLayerWarning,
        lambda: _fit(model, x, np.zeros(4, "int32"), ks.losses.MaxMembraneCrossEntropy()),
    )
    assert caught == []
    quiet = keras.Sequential([keras.Input((6, 3)), ks.layers.LIF(4, threshold=1e3)])
    assert _recorded(ks.SilentLayerWarning, lambda: quiet.predict(x, verbose=0)) == []


def test_silent_eventprop_layers_warn_that_there_is_no_gradient():
    x, y = ks.datasets.yin_yang(16, seed=0, encoding="spike_times", bias_spike=True)
    model = keras.Sequential(
        [
            keras.Input((5, 1)),
            ks.layers.EventPropCubaLIF(
                6, steps=60, kernel_initializer=keras.initializers.Constant(0.01), name="hid"
            ),
            ks.layers.EventPropLI(3, steps=60),
        ]
    )
    caught = _recorded(
        ks.SilentLayerWarning,
        lambda: _fit(
            model,
            x[..., None].astype("float32"),
            y,
            keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        ),
    )
    assert len(caught) == 1
    assert "'hid'" in str(caught[0].message) and "EventProp" in str(caught[0].message)


@pytest.mark.parametrize("spike_step", [0, 4, None])
def test_silence_check_looks_at_every_step_not_only_the_last(spike_step):
    """The check tests the last step first and the whole output only if that step is silent:
    a layer that fired only at an early step must not warn, a silent one must."""
    x = np.zeros((3, 5, 2), "float32")
    if spike_step is not None:
        x[:, spike_step] = 5.0
    for layer in (
        ks.layers.LIF(3, reset="zero", kernel_initializer="ones", name=f"early_{spike_step}"),
        ks.layers.ConvLIF1D(
            2, 1, reset="zero", kernel_initializer="ones", name=f"conv_{spike_step}"
        ),
    ):
        inputs = x if not isinstance(layer, ks.layers.ConvLIF1D) else x[..., None]
        outputs = layer(inputs, training=False).numpy()
        assert outputs.any() == (spike_step is not None)
        if spike_step == 0:
            assert not outputs[:, -1].any()  # silent at the last step: the second stage decides
        caught = _recorded(ks.SilentLayerWarning, lambda la=layer, xs=inputs: la(xs, training=True))
        assert len(caught) == (1 if spike_step is None else 0), layer.name


def test_silent_sequence_eventprop_layer_warns():
    x = np.zeros((4, 10, 3), "float32")
    x[:, 2, :] = 1.0
    layer = ks.layers.CubaLIF(
        4,
        reset="zero",
        gradient="eventprop",
        kernel_initializer=keras.initializers.Constant(1e-3),
        name="seq_hidden",
    )
    caught = _recorded(ks.SilentLayerWarning, lambda: layer(x, training=True))
    assert len(caught) == 1 and "EventProp" in str(caught[0].message)


# ---- EventProp defaults -------------------------------------------------------------------
def test_fan_in_normal_moments_seed_and_config():
    init = FanInNormal(mean=6.0, stddev=2.0, seed=3)
    w = np.asarray(init((400, 300)))
    # 120000 draws: the sample mean and std are within 1 % of the target (many sigmas)
    assert math.isclose(w.mean() * math.sqrt(400), 6.0, rel_tol=0.01)
    assert math.isclose(w.std() * math.sqrt(400), 2.0, rel_tol=0.01)
    np.testing.assert_array_equal(w, np.asarray(FanInNormal(6.0, 2.0, seed=3)((400, 300))))
    again = keras.initializers.deserialize(keras.initializers.serialize(init))
    assert isinstance(again, FanInNormal) and again.get_config() == init.get_config()
    with pytest.raises(ValueError, match="at least 2 dimensions"):
        init((5,))
    with pytest.raises(ValueError, match="stddev"):
        FanInNormal(stddev=-1.0)


def test_eventprop_defaults_fire_on_yin_yang_from_the_first_batch():
    """With Glorot the hidden layer of the Yin-Yang spike-time network never fired."""
    x, _ = ks.datasets.yin_yang(64, seed=0, encoding="spike_times", bias_spike=True)
    keras.utils.set_random_seed(0)
    hidden = ks.layers.EventPropCubaLIF(200, steps=60, max_spikes=8)
    assert isinstance(hidden.kernel_initializer, FanInNormal)
    times = hidden(x[..., None].astype("float32"))
    fired = np.isfinite(times.numpy()).any(axis=(0, 2))
    assert fired.mean() > 0.5, fired.mean()  # measured about 0.9 at seed 0
    glorot = ks.layers.EventPropCubaLIF(200, steps=60, kernel_initializer="glorot_uniform")
    assert not np.isfinite(glorot(x[..., None].astype("float32")).numpy()).any()
    sequence_layer = ks.layers.CubaLIF(8, reset="zero", gradient="eventprop")
    assert isinstance(sequence_layer.cell.kernel_initializer, FanInNormal)
    assert not isinstance(ks.layers.CubaLIF(8).cell.kernel_initializer, FanInNormal)


def test_times_to_sequence_keeps_one_spike_per_step():
    """Two spikes rounding to one step used to sum to 2, failing the next layer's check."""
    dt = 1e-3
    # a spike at the end of step 2 and one a float32 rounding error later (same float)
    times = tf.constant([[[0.003, 0.003, 0.0051, np.inf]]], tf.float32)
    seq = ep.times_to_sequence(times, 8, dt).numpy()[0, :, 0]
    assert seq.max() <= 1.0 and np.count_nonzero(seq) == 3
    assert (
        seq[2] == 1.0 and 0 < seq[3] < 1e-4
    )  # float16's smallest normal, 6.1e-5 and np.isclose(seq[5], 0.1, atol=1e-4)
    back = ep.sequence_to_times(tf.constant(seq[None, :, None]), dt).numpy()[0, 0]
    # the moved spike shifts by phi = 6.1e-5 steps (6.1e-8 s), the rest by float32 rounding
    np.testing.assert_allclose(back, [0.003, 0.003, 0.0051], rtol=1e-5, atol=1e-7)


# ---- losses and metrics -------------------------------------------------------------------
@pytest.mark.parametrize(
    "loss", [ks.losses.MaxMembraneCrossEntropy(), ks.losses.MembraneMSE()], ids=str
)
def test_membrane_losses_warn_when_given_spikes(loss):
    x = np.random.default_rng(1).uniform(size=(4, 5, 3)).astype("float32")
    spiking_out = keras.Sequential([keras.Input((5, 3)), ks.layers.LIF(3, name="out_lif")])
    caught = _recorded(
        ks.SpikesAsMembraneWarning, lambda: _fit(spiking_out, x, np.zeros(4, "int32"), loss)
    )
    assert caught, "no warning"
    message = str(caught[0].message)
    assert "out_lif" in message and "LI" in message and "SpikeCountCrossEntropy" in message
    readout = keras.Sequential([keras.Input((5, 3)), ks.layers.LIF(4), ks.layers.LI(3)])
    assert (
        _recorded(ks.SpikesAsMembraneWarning, lambda: _fit(readout, x, np.zeros(4, "int32"), loss))
        == []
    )


def test_spike_losses_take_spikes_without_warning():
    x = np.random.default_rng(1).uniform(size=(4, 5, 3)).astype("float32")
    model = keras.Sequential([keras.Input((5, 3)), ks.layers.LIF(3)])
    loss = ks.losses.SpikeCountCrossEntropy(scale=0.5)
    caught = _recorded(
        ks.SpikesAsMembraneWarning, lambda: _fit(model, x, np.zeros(4, "int32"), loss)
    )
    assert caught == []


def test_accuracies_live_in_metrics():
    assert ks.metrics.SparseReadoutAccuracy is ks.losses.SparseReadoutAccuracy
    assert ks.metrics.FirstSpikeAccuracy is ks.losses.FirstSpikeAccuracy
    assert {"SparseReadoutAccuracy", "FirstSpikeAccuracy", "SpikeRate"} <= set(dir(ks.metrics))


def test_dead_neuron_count_prints_as_an_integer(capsys):
    x = np.zeros((4, 5, 3), "float32")
    model = keras.Sequential([keras.Input((5, 3)), ks.layers.LIF(6, name="h"), ks.layers.LI(2)])
    model.compile("adam", ks.losses.MaxMembraneCrossEntropy())
    monitor = ks.callbacks.FiringRateMonitor(x, verbose=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ks.SilentLayerWarning)  # zero input: nothing fires
        history = model.fit(x, np.zeros(4, "int32"), epochs=1, verbose=2, callbacks=[monitor])
    out = capsys.readouterr().out
    assert re.search(r"h_dead: 6$", out, re.MULTILINE), out
    assert history.history["h_dead"] == [6]
    assert f"{ks.callbacks.LoggedCount(6) / 1:.4f}" == "6"
    assert f"{ks.callbacks.LoggedCount(3) / 2:.4f}" == "1.5000"  # a non-integer stays a float


# ---- where things are ---------------------------------------------------------------------
def test_every_public_subpackage_is_an_attribute_and_listed():
    names = dir(ks)
    for name in ("export", "layers", "losses", "metrics", "initializers", "callbacks"):
        assert name in names
        assert getattr(ks, name).__name__ == f"keras_spiking.{name}"
    assert callable(ks.export.to_tflite)
    listed = dir(ks.export)
    for name in ("to_tflite", "to_saved_model", "to_nir", "from_nir", "tflm_check"):
        assert name in listed


# ---- Keras parity -------------------------------------------------------------------------
def test_go_backwards_runs_the_reversed_sequence():
    x = np.random.default_rng(2).uniform(size=(3, 7, 4)).astype("float32")
    forward = ks.layers.LIF(5, kernel_initializer=keras.initializers.RandomNormal(0.5, seed=1))
    backward = ks.layers.LIF.from_config({**forward.get_config(), "go_backwards": True})
    forward.build(x.shape)
    backward.build(x.shape)
    backward.set_weights(forward.get_weights())
    # as keras.layers.RNN: the outputs of the reversed input, in processing order
    np.testing.assert_array_equal(backward(x), forward(x[:, ::-1]))
    assert backward.get_config()["go_backwards"] is True


def test_bidirectional_trains_saves_and_reloads(tmp_path):
    x = np.random.default_rng(3).uniform(size=(8, 6, 4)).astype("float32")
    y = np.arange(8) % 2
    model = keras.Sequential(
        [
            keras.Input((6, 4)),
            keras.layers.Bidirectional(
                ks.layers.LIF(5, kernel_initializer=keras.initializers.RandomNormal(0.5, seed=1))
            ),
            ks.layers.LI(2),
        ]
    )
    assert model.output_shape == (None, 6, 2)
    _fit(model, x, y, ks.losses.MaxMembraneCrossEntropy())
    model.save(tmp_path / "bi.keras")
    loaded = keras.models.load_model(tmp_path / "bi.keras")
    np.testing.assert_array_equal(model.predict(x, verbose=0), loaded.predict(x, verbose=0))
    with pytest.raises(ks.export.ExportError, match="Bidirectional"):
        ks.export.to_tflite(model)


def test_jit_compile_true_says_why_it_is_off_and_training_works():
    x = np.random.default_rng(4).uniform(size=(4, 5, 3)).astype("float32")
    model = keras.Sequential([keras.Input((5, 3)), ks.layers.LIF(4), ks.layers.LI(2)])

    def compile_and_fit():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ks.SilentLayerWarning)
            _fit(
                model,
                x,
                np.zeros(4, "int32"),
                ks.losses.MaxMembraneCrossEntropy(),
                jit_compile=True,
            )

    caught = _recorded(UserWarning, compile_and_fit)
    ours = [str(w.message) for w in caught if "keras_spiking" in str(w.message)]
    assert ours and "C++ kernels" in ours[0] and "time scan" in ours[0]
    assert model.jit_compile is False


def test_rank_2_inputs_one_step_when_stateful_else_a_pointer():
    with pytest.raises(ValueError, match="RepeatVector"):
        keras.Sequential([keras.Input((4,)), ks.layers.LIF(3)])
    with pytest.raises(ValueError, match="no time axis"):
        ks.layers.LIF(3)(np.zeros((2, 4), "float32"))
    x = np.random.default_rng(5).uniform(size=(2, 6, 4)).astype("float32") * 2
    init = keras.initializers.RandomNormal(0.4, 0.3, seed=2)
    streaming = ks.layers.LIF(3, stateful=True, kernel_initializer=init)
    whole = ks.layers.LIF(3, kernel_initializer=init)
    expected = whole(x).numpy()
    streaming.build((2, 4))
    streaming.set_weights(whole.get_weights())
    steps = [streaming(x[:, t]).numpy() for t in range(6)]
    assert steps[0].shape == (2, 3)
    np.testing.assert_array_equal(np.stack(steps, axis=1), expected)


def test_go_backwards_with_a_mask_equals_the_reversed_masked_run():
    rng = np.random.default_rng(6)
    x = rng.uniform(size=(3, 7, 4)).astype("float32")
    mask = np.ones((3, 7), bool)
    mask[0, 5:] = False  # a padded sample
    mask[2, :2] = False
    init = keras.initializers.RandomNormal(0.5, 0.3, seed=4)
    forward = ks.layers.LIF(5, kernel_initializer=init)
    backward = ks.layers.LIF(5, kernel_initializer=init, go_backwards=True)
    forward.build(x.shape)
    backward.build(x.shape)
    backward.set_weights(forward.get_weights())
    expected = forward(x[:, ::-1], mask=tf.constant(mask[:, ::-1]))
    np.testing.assert_array_equal(backward(x, mask=tf.constant(mask)), expected)
    # the output mask follows the reversed outputs
    out_mask = backward.compute_mask(x, tf.constant(mask))
    np.testing.assert_array_equal(out_mask, mask[:, ::-1])


def test_bidirectional_with_return_state_in_a_functional_model():
    inputs = keras.Input((6, 3))
    outputs = keras.layers.Bidirectional(ks.layers.LIF(5, return_state=True))(inputs)
    # the sequence, then each direction's final states
    states = 2 * len(ks.layers.LIF.state_names)
    assert [tuple(o.shape) for o in outputs] == [(None, 6, 10)] + [(None, 5)] * states
    model = keras.Model(inputs, outputs)
    x = np.random.default_rng(7).uniform(size=(2, 6, 3)).astype("float32")
    assert model(x)[0].shape == (2, 6, 10)


def test_silence_is_judged_on_every_step_not_only_the_returned_one():
    """A layer that fires during the sequence but not on its last step is not silent."""
    x = np.zeros((4, 6, 2), "float32")
    x[:, 1] = 5.0  # one strong input at step 1 only: spikes there, none at the end
    layer = ks.layers.LIF(3, return_sequences=False, kernel_initializer="ones")
    caught = _recorded(ks.SilentLayerWarning, lambda: layer(x, training=True))
    assert caught == []
    assert ks.layers.LIF(3, kernel_initializer="ones")(x)[:, 1].numpy().all()
    quiet = ks.layers.LIF(3, return_sequences=False, threshold=1e3, name="q")
    caught = _recorded(ks.SilentLayerWarning, lambda: quiet(x, training=True))
    assert len(caught) == 1 and "4 samples x 6 steps x 3 neurons" in str(caught[0].message)


def test_the_check_can_be_left_out_of_an_xla_compiled_step():
    """The check reports through a py_function, which XLA cannot compile."""
    x = tf.constant(np.random.default_rng(8).uniform(size=(2, 5, 3)).astype("float32"))
    layer = ks.layers.LIF(4, use_custom_ops=False)
    layer.build(x.shape)

    @tf.function(jit_compile=True)
    def step():
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(layer(x, training=True))
        return tape.gradient(loss, layer.trainable_variables)

    with pytest.raises(tf.errors.InvalidArgumentError, match="PyFunc"):
        step()
    ks.silence.set_enabled(False)
    try:
        assert ks.silence.enabled() is False

        @tf.function(jit_compile=True)
        def step_without_check():
            with tf.GradientTape() as tape:
                loss = tf.reduce_sum(layer(x, training=True))
            return tape.gradient(loss, layer.trainable_variables)

        assert step_without_check()[0].shape == (3, 4)
    finally:
        ks.silence.set_enabled(True)
    with pytest.raises(TypeError, match="True or False"):
        ks.silence.set_enabled("no")


def test_times_to_sequence_without_slots_and_in_bfloat16():
    assert ep.times_to_sequence(tf.zeros([2, 3, 0]), 5, 1e-3).shape == (2, 5, 3)
    seq = ep.times_to_sequence(tf.constant([[[0.0025, 0.003]]], tf.bfloat16), 5, 1e-3)
    assert seq.dtype == tf.bfloat16 and float(tf.reduce_max(seq)) <= 1.0
    assert int(tf.math.count_nonzero(seq)) == 2
