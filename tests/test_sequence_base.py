"""The sequence-layer base: a toy neuron through the contract, and what every layer gets.

The toy neuron below is all a new neuron needs (a cell with a step, its state names); the
tests check that it gets ``stateful`` streaming, masking, ``return_state``, a ``.keras`` round
trip and TFLite export from the base, and that the built-in layers get masking,
``reset_state()`` and states that are not weights.
"""

from __future__ import annotations

import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_spiking as ks
from keras_spiking import layers, ops
from keras_spiking.export import to_tflite
from keras_spiking.sequence import SpikingSequence

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from ai_edge_litert.interpreter import Interpreter

F32 = {"rtol": 1e-5, "atol": 1e-5}  # float32 rounding of sums over <= 30 terms


# ---- the toy neuron: 30 lines through the contract --------------------------------------------
@keras.saving.register_keras_serializable(package="keras_spiking_tests")
class ToyCell(keras.layers.Layer):
    """A leaky neuron that spikes above 1 and resets to zero: ``v' = 0.5 v + x W``."""

    def __init__(self, units, **kwargs):
        super().__init__(**kwargs)
        self.units = units

    def build(self, input_shape):
        self.kernel = self.add_weight(shape=(input_shape[-1], self.units), name="kernel")

    def call(self, x, states):
        return self.export_step({"kernel": self.kernel}, x, states)

    def export_parameters(self):
        return {"kernel": self.kernel}

    @staticmethod
    def export_step(params, x, states, spike_fn=None):
        v = 0.5 * states[0] + tf.matmul(x, tf.cast(params["kernel"], x.dtype))
        s = tf.cast(v > 1.0, v.dtype) if spike_fn is None else spike_fn(v, 1.0)
        return s, [v * (1.0 - s)]

    def get_config(self):
        return {**super().get_config(), "units": self.units}


@keras.saving.register_keras_serializable(package="keras_spiking_tests")
class Toy(SpikingSequence):
    cell_class = ToyCell
    state_names = ("v",)


def _toy_reference(x, kernel, v0=None):
    """NumPy twin of the toy neuron over [batch, T, features]."""
    v = np.zeros((x.shape[0], kernel.shape[1])) if v0 is None else v0
    out = []
    for t in range(x.shape[1]):
        v = 0.5 * v + x[:, t] @ kernel
        s = (v > 1.0).astype(np.float64)
        v = v * (1 - s)
        out.append(s)
    return np.stack(out, 1), v


@pytest.fixture
def spikes(rng):
    return (rng.random((4, 9, 6)) < 0.4).astype("float32") * 2.0


def test_toy_neuron_runs_streams_and_returns_state(spikes):
    layer = Toy(5, return_state=True)
    out, v = layer(spikes)
    kernel = layer.cell.kernel.numpy()
    expected, v_expected = _toy_reference(spikes, kernel)
    np.testing.assert_allclose(out, expected, **F32)
    np.testing.assert_allclose(v, v_expected, **F32)
    # stateful: two chunks equal one call
    streaming = Toy(5, stateful=True)
    streaming.build((4, 9, 6))
    streaming.cell.kernel.assign(kernel)
    first, second = streaming(spikes[:, :4]), streaming(spikes[:, 4:])
    np.testing.assert_allclose(np.concatenate([first, second], 1), expected, **F32)
    streaming.reset_state()
    np.testing.assert_allclose(streaming(spikes[:, :4]), expected[:, :4], **F32)


def test_toy_neuron_masking(spikes):
    mask = np.ones(spikes.shape[:2], bool)
    mask[:, 5:] = False
    mask[1, 2] = False
    model = keras.Sequential(
        [keras.Input((9, 6)), keras.layers.Masking(0.0), Toy(5, return_sequences=False)]
    )
    x = spikes.copy()
    x[~mask] = 0.0  # Masking masks the all-zero steps
    layer = model.layers[-1]
    kernel = layer.cell.kernel.numpy()
    # the reference: the masked steps skipped, per sample
    expected = []
    for b in range(x.shape[0]):
        steps = x[b : b + 1, mask[b] & (x[b].any(-1))]
        out, _ = _toy_reference(steps, kernel)
        expected.append(out[0, -1])
    np.testing.assert_allclose(model(x), np.stack(expected), **F32)


def test_toy_neuron_keras_round_trip_and_tflite_export(spikes, tmp_path):
    model = keras.Sequential([keras.Input((9, 6)), Toy(5), layers.LI(3)])
    path = tmp_path / "toy.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(loaded(spikes), model(spikes), **F32)
    flatbuffer = to_tflite(model, mode="sequence", num_steps=9, batch_size=4)
    interpreter = Interpreter(model_content=flatbuffer)
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], spikes)
    interpreter.invoke()
    exported = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    np.testing.assert_allclose(exported, model(spikes), rtol=1e-4, atol=1e-4)


def test_toy_neuron_has_no_kernels_and_true_says_so(spikes):
    with pytest.raises(ops.OpLibraryError, match="Toy has no C\\+\\+ kernels"):
        Toy(5, use_custom_ops=True)(spikes, training=True)


# ---- what the built-in layers get from the base --------------------------------------------
@pytest.mark.parametrize(
    "make",
    [
        lambda: layers.LIF(5, surrogate="arctan"),
        lambda: layers.CubaLIF(5, reset="zero"),
        lambda: layers.LI(5),
        lambda: layers.SRC(5),
    ],
    ids=["lif", "cuba", "li", "src"],
)
@pytest.mark.parametrize("return_sequences", [True, False], ids=["sequences", "last"])
def test_masking_equals_keras_rnn_of_the_cell(make, return_sequences, spikes):
    """Every layer's masked output equals keras.layers.RNN over its own cell.

    Masked steps keep the state and output zeros (``zero_output_for_mask=True``); without
    ``return_sequences`` the layer returns the output of each sample's last unmasked step
    (Keras' RNN returns the zeros of the last step there, so that case is read from its
    sequence).
    """
    layer = make()
    layer.return_sequences = return_sequences
    x = spikes.copy()
    x[0, 6:] = 0.0
    x[2, :3] = 0.0
    inputs = keras.Input((9, 6))
    masked = keras.layers.Masking(0.0)(inputs)
    ours = keras.Model(inputs, layer(masked))
    rnn = keras.layers.RNN(layer.cell, return_sequences=True, zero_output_for_mask=True)
    theirs = keras.Model(inputs, rnn(masked))(x).numpy()
    if not return_sequences:
        last = [np.flatnonzero(x[b].any(-1))[-1] for b in range(x.shape[0])]
        theirs = theirs[np.arange(x.shape[0]), last]
    np.testing.assert_allclose(ours(x), theirs, **F32)


def test_masked_gradients_flow_on_the_step_loop(spikes):
    layer = layers.LIF(4, surrogate="fast_sigmoid")
    x = tf.constant(spikes)
    mask = tf.constant(np.arange(9)[None, :] < np.array([[9], [5], [7], [2]]))
    with tf.GradientTape() as tape:
        out = layer(x, mask=mask)
        loss = tf.reduce_sum(out * tf.range(1.0, 5.0))
    grad = tape.gradient(loss, layer.cell.kernel)
    assert grad is not None and np.all(np.isfinite(grad))
    np.testing.assert_array_equal(out.numpy()[1, 5:], 0.0)  # masked steps output zeros


def test_stored_states_are_not_weights(spikes):
    def model(stateful):
        return keras.Sequential(
            [
                keras.Input((9, 6), batch_size=4),
                layers.LIF(5, stateful=stateful),
                layers.CubaLIF(4, stateful=stateful),
                layers.LI(3, stateful=stateful),
            ]
        )

    full, streaming = model(False), model(True)
    assert len(streaming.get_weights()) == len(full.get_weights()) == 3
    streaming.set_weights(full.get_weights())  # was "expecting 6 weights" before
    np.testing.assert_allclose(streaming(spikes), full(spikes), **F32)
    assert all(len(layer.states) == len(layer.state_names) for layer in streaming.layers)
    assert streaming.non_trainable_weights == []


def test_reset_state_and_reset_states_alias(spikes):
    layer = layers.LIF(5, stateful=True)
    first = layer(spikes[:, :3])
    layer(spikes[:, 3:])
    layer.reset_state()
    np.testing.assert_allclose(layer(spikes[:, :3]), first)
    layer.reset_states()
    np.testing.assert_allclose(layer(spikes[:, :3]), first)
    with pytest.raises(
        ValueError, match="reset_state\\(\\) \\(or reset_states\\(\\)\\) needs stateful=True"
    ):
        layers.LIF(5).reset_state()


# ---- one dispatch point: True raises with the reason -----------------------------------------
@pytest.mark.parametrize(
    "make, reason",
    [
        (
            lambda: layers.LIF(4, surrogate=lambda x: tf.exp(-tf.abs(x)), use_custom_ops=True),
            "surrogate",
        ),
        (lambda: layers.LIF(4, recurrent=True, use_custom_ops=True), "recurrent weights"),
        (lambda: layers.CubaLIF(4, recurrent=True, use_custom_ops=True), "recurrent weights"),
        (lambda: layers.SRC(4, use_custom_ops=True), "SRC has no C\\+\\+ kernels"),
    ],
    ids=["custom_surrogate", "lif_recurrent", "cuba_recurrent", "src"],
)
def test_use_custom_ops_true_raises_when_the_kernels_cannot_serve(make, reason, spikes):
    with pytest.raises(ops.OpLibraryError, match=f"use_custom_ops=True.*{reason}"):
        make()(spikes, training=True)


def test_use_custom_ops_true_raises_for_a_mask_and_float16(spikes):
    mask = np.ones(spikes.shape[:2], bool)
    with pytest.raises(ops.OpLibraryError, match="a mask"):
        layers.LIF(4, use_custom_ops=True)(spikes, mask=mask, training=True)
    with pytest.raises(ops.OpLibraryError, match="float16"):
        layers.LIF(4, use_custom_ops=True, dtype="float16")(spikes, training=True)


def test_subclassed_surrogate_is_not_taken_for_the_registered_one(spikes):
    class Wider(ks.surrogates.FastSigmoid):
        def derivative(self, x):
            return 2.0 * super().derivative(x)

    assert ks.surrogates.registered_name(Wider()) is None
    assert ks.surrogates.registered_name(ks.surrogates.FastSigmoid()) == "fast_sigmoid"
    with pytest.raises(ops.OpLibraryError, match="surrogate"):
        layers.LIF(4, surrogate=Wider(), use_custom_ops=True)(spikes, training=True)


# ---- the kernels really serve the layers ------------------------------------------------------
def _eager_fit(model, x, y):
    model.compile("adam", ks.losses.MaxMembraneCrossEntropy(), run_eagerly=True)
    with ops.count_kernel_calls() as calls:
        model.fit(x, y, epochs=1, batch_size=len(x), verbose=0)
    return calls


def test_an_eager_training_step_runs_the_kernels(rng):
    x = (rng.random((8, 12, 80)) < 0.03).astype("float32")
    y = rng.integers(0, 3, 8)
    model = keras.Sequential(
        [keras.Input((12, 80)), layers.LIF(64), layers.CubaLIF(32), layers.LI(3)]
    )
    calls = _eager_fit(model, x, y)
    # one training step, each layer once: the sparse input takes the fused event kernel
    assert calls["fused_lif_scan_with_input/events"] == 1, calls
    assert calls["fused_lif_scan_with_input/dense"] == 0, calls
    assert calls["fused_cuba_lif_scan"] == 1, calls
    assert calls["fused_li_scan"] == 1, calls


def test_dense_inputs_take_the_dense_branch_and_off_means_none(rng):
    x = (rng.random((8, 12, 80)) < 0.6).astype("float32")
    y = rng.integers(0, 3, 8)
    model = keras.Sequential([keras.Input((12, 80)), layers.LIF(64), layers.LI(3)])
    calls = _eager_fit(model, x, y)
    assert calls["fused_lif_scan_with_input/dense"] == 1, calls
    assert calls["fused_lif_scan_with_input/events"] == 0, calls
    off = keras.Sequential(
        [keras.Input((12, 80)), layers.LIF(64, use_custom_ops=False), layers.LI(3)]
    )
    with ops.use_custom_ops(False):
        assert sum(_eager_fit(off, x, y).values()) == 0


def test_recurrent_layers_keep_the_event_input_under_auto(rng):
    x = (rng.random((8, 12, 80)) < 0.03).astype("float32")
    y = rng.integers(0, 3, 8)
    model = keras.Sequential([keras.Input((12, 80)), layers.LIF(64, recurrent=True), layers.LI(3)])
    calls = _eager_fit(model, x, y)
    assert calls["synaptic_input/events"] == 1, calls  # TF scan, event-driven input
    assert calls["fused_lif_scan_with_input/events"] == 0, calls


def test_stateful_model_saves_as_a_tf_saved_model(spikes, tmp_path):
    """The stored states are not Keras weights but TensorFlow still tracks them."""
    model = keras.Sequential(
        [keras.Input((9, 6), batch_size=4), layers.LIF(5, stateful=True), layers.LI(3)]
    )
    model(spikes)
    tf.saved_model.save(model, str(tmp_path / "stateful"))
    assert len(model.get_weights()) == 2


def test_masked_call_with_no_steps(spikes):
    for layer in (layers.LIF(3), Toy(3)):
        out = layer(spikes[:, :0], mask=np.ones((4, 0), bool))
        assert tuple(out.shape) == (4, 0, 3)


def test_masked_readout_trains_with_the_membrane_losses(spikes, rng):
    """The time mask reaches the loss and the metric, which use only the unmasked steps."""
    x = spikes.copy()
    x[:, :6, 0] = 2.0  # no all-zero step among the first 6 (Masking would mask it)
    x[:, 6:] = 0.0
    y = rng.integers(0, 3, 4)
    model = keras.Sequential(
        [keras.Input((9, 6)), keras.layers.Masking(0.0), layers.LIF(8), layers.LI(3)]
    )
    model.compile(
        "adam",
        ks.losses.MaxMembraneCrossEntropy(),
        metrics=[ks.losses.SparseReadoutAccuracy("max")],
    )
    loss, _ = model.evaluate(x, y, verbose=0)
    # the unmasked steps only: the same as the loss of the first 6 steps without a mask
    short = keras.Sequential([keras.Input((6, 6)), *model.layers[1:]])
    expected = ks.losses.MaxMembraneCrossEntropy()(y, short(x[:, :6]))
    np.testing.assert_allclose(loss, expected, rtol=1e-5)
    history = model.fit(x, y, epochs=2, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))


def test_global_true_does_not_load_kernels_for_layers_without_them(spikes, monkeypatch):
    def no_library(*_, **__):
        raise ops.OpLibraryError("no library (test)")

    monkeypatch.setattr(ops.library, "load", no_library)
    with ops.use_custom_ops(True):
        layers.SRC(3)(spikes, training=True)  # no kernels to load: no error
        layers.LIF(3)(spikes, mask=np.ones((4, 9), bool), training=True)
        with pytest.raises(ops.OpLibraryError, match="no library"):
            layers.LIF(3)(spikes, training=True)


def test_true_with_a_problem_still_predicts(spikes):
    """Graph-traced inference never takes the kernels, so it does not raise."""
    model = keras.Sequential(
        [keras.Input((9, 6)), layers.LIF(4, recurrent=True, use_custom_ops=True)]
    )
    assert model.predict(spikes, verbose=0).shape == (4, 9, 4)
