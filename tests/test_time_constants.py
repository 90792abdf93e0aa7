"""Trainable time constants (learned as ``log tau``) and the plausibility warnings on units."""

from __future__ import annotations

import pathlib
import re
import warnings
import zipfile

import h5py
import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_spiking as ks
from keras_spiking import cells, layers

DATA = pathlib.Path(__file__).parent / "data"


def _log_taus(model) -> dict[str, np.ndarray]:
    """``{variable path: values}`` of every trainable log time constant of ``model``."""
    return {w.path: w.numpy() for w in model.weights if w.path.split("/")[-1].startswith("log_")}


def _cells(model):
    return [layer.cell for layer in model.layers]


# ---- training: valid by construction ---------------------------------------------------------
def test_adam_at_a_large_learning_rate_keeps_the_time_constants_valid():
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = (rng.random((16, 20, 5)) < 0.3).astype("float32")
    y = rng.normal(size=(16, 2)).astype("float32")
    model = keras.Sequential(
        [
            keras.Input((20, 5)),
            layers.LIF(8, train_time_constants=True, kernel_initializer="he_normal"),
            layers.CubaLIF(6, train_time_constants=True, kernel_initializer="he_normal"),
            layers.LI(2, train_time_constants=True, return_sequences=False),
        ]
    )
    before = _log_taus(model)
    assert len(before) == 4  # tau_mem, (tau_syn, tau_mem), tau_mem
    optimizer = keras.optimizers.Adam(learning_rate=0.1)
    for _ in range(40):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean((model(x, training=True) - y) ** 2)
        grads = tape.gradient(loss, model.trainable_weights)
        optimizer.apply_gradients(zip(grads, model.trainable_weights))
    after = _log_taus(model)
    moved = {k: float(np.max(np.abs(after[k] - before[k]))) for k in before}
    # every time constant was trained, and Adam (~lr = 0.1 per step, in the variable's units)
    # moved some log by > 0.5 (tau by a factor > e^0.5): held in seconds, the same steps would
    # have moved it by > 0.5 s, taking a 5-20 ms constant far below zero
    assert min(moved.values()) > 0.05 and max(moved.values()) > 0.5, moved
    for cell in _cells(model):
        for name in cell.time_constant_names:
            tau = cell.time_constant(name)
            assert np.all(np.isfinite(tau)) and np.all(tau > 0), (cell.name, name, tau)
            decay = cell.decay(name).numpy()
            assert np.all((decay > 0) & (decay < 1)), (cell.name, name, decay)
    assert np.isfinite(model(x).numpy()).all()


def test_the_old_seconds_parameterization_would_have_gone_negative():
    """What the log prevents: Adam's first step is ~lr in the variable's units, whatever its
    size; on a 5 ms time constant held in seconds one step at lr 0.1 gives -95 ms."""
    tau = tf.Variable([5e-3], dtype="float64")
    log_tau = tf.Variable(np.log([5e-3]), dtype="float64")
    for variable in (tau, log_tau):
        keras.optimizers.Adam(learning_rate=0.1).apply_gradients(
            [(tf.ones([1], "float64"), variable)]
        )
    # the first step is lr * g / (|g| + eps / sqrt(1 - beta_2)): lr to ~1e-5 relative
    assert tau.numpy()[0] == pytest.approx(5e-3 - 0.1, abs=1e-6)
    assert np.exp(log_tau.numpy()[0]) == pytest.approx(5e-3 * np.exp(-0.1), rel=1e-5)


# ---- gradients wrt log tau -------------------------------------------------------------------
def _final_state_loss(layer, x, weights):
    """A loss on the final membrane and current states (not LIF's spike state ``s``).

    With ``detach_reset`` (the default) the spikes reach these states only through the reset,
    whose gradient is stopped, so for a fixed spike pattern this is a smooth function of the
    decays in which the surrogate plays no part: its gradient must equal finite differences
    exactly (up to rounding)."""
    outputs, *states = layer(x)
    names = layer.state_names
    return sum(tf.reduce_sum(states[names.index(k)] * w) for k, w in weights.items()), outputs


@pytest.mark.parametrize("use_custom_ops", [True, False], ids=["kernels", "pure_tf"])
@pytest.mark.parametrize("layer_cls", [layers.LIF, layers.CubaLIF])
def test_gradient_wrt_log_tau_matches_finite_differences(layer_cls, use_custom_ops):
    rng = np.random.default_rng(5)
    units = 4
    layer = layer_cls(
        units,
        train_time_constants=True,
        return_state=True,
        use_custom_ops=use_custom_ops,  # True: raises instead of falling back to TF
        kernel_initializer=keras.initializers.RandomNormal(0.1, 0.5, seed=2),
        dtype="float64",
        tau_mem=rng.uniform(5e-3, 30e-3, units).tolist(),
    )
    x = rng.random((3, 25, 5))
    weights = {k: rng.normal(size=(3, units)) for k in layer.state_names if k != "s"}
    layer.build(x.shape)
    variables = list(layer.cell._log_tau_variables.values())
    with tf.GradientTape() as tape:
        loss, spikes = _final_state_loss(layer, x, weights)
    assert 0.05 < spikes.numpy().mean() < 0.8  # spikes and resets happen: not a trivial case
    grads = [g.numpy() for g in tape.gradient(loss, variables)]
    eps = 1e-5
    for variable, grad in zip(variables, grads):
        start = variable.numpy()
        fd = np.zeros(units)
        for i in range(units):
            sides = []
            for sign in (1.0, -1.0):
                shifted = start.copy()
                shifted[i] += sign * eps
                variable.assign(shifted)
                value, shifted_spikes = _final_state_loss(layer, x, weights)
                # the spike pattern is the same on both sides: the loss is smooth there
                np.testing.assert_array_equal(shifted_spikes.numpy(), spikes.numpy())
                sides.append(float(value))
            fd[i] = (sides[0] - sides[1]) / (2 * eps)
        variable.assign(start)
        # float64 central differences: truncation O(eps^2 f''') ~ 1e-10 relative, rounding
        # O(1e-16 |loss| / eps) ~ 1e-10; the gradient itself is exact up to rounding
        np.testing.assert_allclose(grad, fd, rtol=1e-6, atol=1e-8, err_msg=variable.path)
        assert np.any(np.abs(grad) > 1e-3)  # the time constants do matter here


# ---- saving ----------------------------------------------------------------------------------
def _trained_tau_model():
    keras.utils.set_random_seed(3)
    model = keras.Sequential(
        [
            keras.Input((10, 4)),
            layers.CubaLIF(5, train_time_constants=True, recurrent=True),
            layers.LI(2, train_time_constants=True),
        ]
    )
    rng = np.random.default_rng(3)
    for variable in model.weights:  # as training might leave them: spread around the defaults
        if variable.path.split("/")[-1].startswith("log_"):
            variable.assign(variable.numpy() + rng.normal(0, 0.5, variable.shape))
    return model


def test_keras_file_round_trip_keeps_the_learned_time_constants(tmp_path):
    model = _trained_tau_model()
    x = (np.random.default_rng(4).random((3, 10, 4)) < 0.5).astype("float32") * 2
    path = tmp_path / "model.keras"
    model.save(path)
    with zipfile.ZipFile(path) as archive, archive.open("model.weights.h5") as file:
        with h5py.File(file) as h5:  # the marker that says "logs, not seconds"
            assert "log_time_constants" in h5["layers/cuba_lif/cell/vars"]
            assert "log_time_constants" in h5["layers/li/cell/vars"]
    loaded = keras.saving.load_model(path)
    for a, b in zip(model.weights, loaded.weights):
        assert a.name == b.name
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    np.testing.assert_array_equal(model(x).numpy(), loaded(x).numpy())
    for cell, again in zip(_cells(model), _cells(loaded)):
        for name in cell.time_constant_names:
            np.testing.assert_array_equal(cell.time_constant(name), again.time_constant(name))
    # the weights-only file takes the same route
    weights_path = tmp_path / "model.weights.h5"
    model.save_weights(weights_path)
    fresh = _trained_tau_model()
    for variable in fresh.weights:
        variable.assign(np.zeros(variable.shape))
    fresh.load_weights(weights_path)
    np.testing.assert_array_equal(model(x).numpy(), fresh(x).numpy())


def test_file_from_before_the_logs_gives_its_time_constants_in_seconds():
    """release_e1520d9_dense.keras stored LIF(8, train_time_constants=True)'s tau_mem = 20 ms
    in seconds (tests/test_saved_fixtures.py checks the outputs)."""
    model = keras.saving.load_model(DATA / "release_e1520d9_dense.keras")
    cell = model.layers[0].cell
    assert cell.train_time_constants
    # stored as float32 0.02 and as float32 log(0.02): ~1e-7 relative each, exp() keeps it
    np.testing.assert_allclose(cell.time_constant("tau_mem"), np.full(8, 0.02), rtol=1e-6)
    np.testing.assert_allclose(
        cell._log_tau_variables["tau_mem"].numpy(), np.log(np.full(8, 0.02)), rtol=1e-6
    )


def test_old_non_positive_seconds_load_at_the_old_floor():
    """An old file whose taus an optimizer took to <= 0 ran at max(tau, 1e-2 dt): it still does."""
    cell = cells.LIFCell(3, train_time_constants=True)
    cell.build((1, 2))
    kernel = np.ones((2, 3), "float32")
    cell.load_own_variables({"0": kernel, "1": np.array([-0.01, 0.0, 0.01], "float32")})
    np.testing.assert_allclose(cell.time_constant("tau_mem"), [1e-5, 1e-5, 0.01], rtol=1e-6)
    np.testing.assert_array_equal(cell.kernel.numpy(), kernel)
    # with the marker the values are logs already and taken as they are
    cell.load_own_variables({"0": kernel, "1": np.log([0.01, 0.02, 0.03]), "log_time_constants": 1})
    np.testing.assert_allclose(cell.time_constant("tau_mem"), [0.01, 0.02, 0.03], rtol=1e-6)


# ---- unit warnings ---------------------------------------------------------------------------
def _caught(fn) -> list[warnings.WarningMessage]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fn()
    return [w for w in caught if issubclass(w.category, UserWarning)]


def test_milliseconds_passed_as_seconds_warn():
    with pytest.warns(
        UserWarning, match=r"LIF: `tau_mem`=20 is in seconds \(20 s\).*20e-3 \(20 ms\)"
    ) as record:
        layers.LIF(4, tau_mem=20)
    assert record[0].filename == __file__  # it points at the constructor call
    with pytest.warns(UserWarning, match=r"CubaLIF: `tau_syn`=5 is in seconds.*5e-3 \(5 ms\)"):
        layers.CubaLIF(4, tau_syn=5)
    messages = [str(w.message) for w in _caught(lambda: layers.LI(4, dt=1))]
    assert any(re.match(r"LI: `dt`=1 is in seconds.*1e-3 \(1 ms\)", m) for m in messages)
    # ... and a step of 1 s is longer than the 20 ms time constant
    assert any(re.match(r"LI: `dt`=1 s >= `tau_mem`=0.02 s", m) for m in messages)
    with pytest.warns(UserWarning, match=r"LIFCell: `tau_mem`=30 \(per neuron: its largest"):
        cells.LIFCell(3, tau_mem=[0.01, 0.02, 30])


def test_step_longer_than_a_time_constant_warns():
    with pytest.warns(
        UserWarning, match=r"CubaLIF: `dt`=0.005 s >= `tau_syn`=0.005 s.*0.368"
    ) as record:
        layers.CubaLIF(4, dt=5e-3, tau_syn=5e-3)
    assert record[0].filename == __file__
    assert not any("tau_mem" in str(w.message) for w in record)  # 10 ms > dt: fine
    with pytest.warns(UserWarning, match=r"`tau_mem`=0.001 s \(per neuron: its smallest"):
        layers.LIF(2, tau_mem=[0.02, 0.001])


def test_defaults_and_ordinary_values_do_not_warn():
    def build():
        for layer_cls in (layers.LIF, layers.CubaLIF, layers.LI):
            layer_cls(3)
            layer_cls(3, train_time_constants=True)
        for cell_cls in (cells.LIFCell, cells.CubaLIFCell, cells.LICell):
            cell_cls(3)
        layers.CubaLIF(3, tau_syn=2e-3, tau_mem=0.5, dt=5e-4)
        layers.LIF(3, tau_mem=[5e-3, 0.1, 0.9])

    assert [str(w.message) for w in _caught(build)] == []


def test_trained_time_constants_are_in_tf_checkpoints(tmp_path):
    layer = ks.layers.CubaLIF(3, train_time_constants=True)
    layer.build((2, 5, 4))
    layer.cell.log_tau_mem.assign(np.log([0.1, 0.2, 0.3]))
    path = tf.train.Checkpoint(layer=layer).save(str(tmp_path / "ckpt"))
    restored = ks.layers.CubaLIF(3, train_time_constants=True)
    restored.build((2, 5, 4))
    tf.train.Checkpoint(layer=restored).restore(path).assert_consumed()
    # float32 variable: the round trip of log then exp is exact to float32 rounding
    np.testing.assert_allclose(restored.cell.time_constant("tau_mem"), [0.1, 0.2, 0.3], rtol=1e-6)
    assert len(restored.weights) == 3  # kernel and the two log taus: no duplicate tracking


def test_tiny_time_constants_keep_finite_gradients_in_mixed_float16():
    """exp(-log_tau) overflowed float16 below ~15 us: beta = 0 got a NaN gradient."""
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # dt >= tau: meant here
            layer = ks.layers.CubaLIF(3, train_time_constants=True, tau_syn=1e-5)
        layer.build((2, 5, 4))
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(tf.cast(layer(tf.ones((2, 5, 4)), training=True), "float32"))
        grad = tape.gradient(loss, layer.cell.log_tau_syn)
        assert np.isfinite(grad.numpy()).all()
    finally:
        keras.mixed_precision.set_global_policy("float32")
