import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_spiking import losses

BATCH, TIME, CLASSES = 6, 5, 4


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    spikes = (rng.random((BATCH, TIME, CLASSES)) < 0.4).astype(np.float64)
    voltages = rng.normal(size=(BATCH, TIME, CLASSES))
    labels = rng.integers(0, CLASSES, BATCH)
    return spikes, voltages, labels


def _np_xent(logits, labels):
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_p = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    return -log_p[np.arange(len(labels)), labels]


NP_READOUT = {
    "sum": lambda y: y.sum(axis=1),
    "mean": lambda y: y.mean(axis=1),
    "max": lambda y: y.max(axis=1),
    "last": lambda y: y[:, -1],
}

CASES = [
    (losses.SpikeCountCrossEntropy(scale=0.7, dtype="float64"), "sum", 0.7, "spikes"),
    (losses.SpikeCountCrossEntropy(dtype="float64"), "sum", 1.0, "spikes"),
    (losses.SpikeRateCrossEntropy(scale=5.0, dtype="float64"), "mean", 5.0, "spikes"),
    (losses.MaxMembraneCrossEntropy(dtype="float64"), "max", 1.0, "voltages"),
    (losses.LastMembraneCrossEntropy(dtype="float64"), "last", 1.0, "voltages"),
    (losses.MeanMembraneCrossEntropy(dtype="float64"), "mean", 1.0, "voltages"),
]


@pytest.mark.parametrize("loss, mode, scale, kind", CASES, ids=lambda c: str(c)[:30])
def test_cross_entropies_match_numpy(data, loss, mode, scale, kind):
    spikes, voltages, labels = data
    y = spikes if kind == "spikes" else voltages
    expected = _np_xent(scale * NP_READOUT[mode](y), labels)
    # per-sample values via reduction=None; float64 throughout, so 1e-12 relative
    per_sample = type(loss).from_config({**loss.get_config(), "reduction": None})
    np.testing.assert_allclose(per_sample(labels, y).numpy(), expected, rtol=1e-12)
    np.testing.assert_allclose(loss(labels, y).numpy(), expected.mean(), rtol=1e-12)
    # labels shaped [batch, 1] are accepted too
    np.testing.assert_allclose(loss(labels[:, None], y).numpy(), expected.mean(), rtol=1e-12)
    # sample weights follow Keras semantics: sum(w * l) / batch
    w = np.linspace(0.0, 1.0, BATCH)
    np.testing.assert_allclose(
        loss(labels, y, sample_weight=w).numpy(), (w * expected).sum() / BATCH, rtol=1e-12
    )


def test_membrane_mse_matches_numpy(data):
    _, voltages, labels = data
    loss = losses.MembraneMSE(target_on=2.0, target_off=-0.5, dtype="float64")
    target = np.full((BATCH, CLASSES), -0.5)
    target[np.arange(BATCH), labels] = 2.0
    expected = ((voltages.mean(axis=1) - target) ** 2).mean(axis=1)
    # float64: 1e-12 relative
    np.testing.assert_allclose(loss(labels, voltages).numpy(), expected.mean(), rtol=1e-12)
    per_sample = losses.MembraneMSE(2.0, -0.5, reduction=None, dtype="float64")
    np.testing.assert_allclose(per_sample(labels, voltages).numpy(), expected, rtol=1e-12)


ALL_LOSSES = [c[0] for c in CASES] + [losses.MembraneMSE(dtype="float64")]


@pytest.mark.parametrize("loss", ALL_LOSSES, ids=lambda c: type(c).__name__)
def test_gradients_finite_and_nonzero(data, loss):
    spikes, voltages, labels = data
    y = tf.Variable(voltages + 0.1 * spikes)
    with tf.GradientTape() as tape:
        value = loss(labels, y)
    grad = tape.gradient(value, y).numpy()
    assert np.all(np.isfinite(grad))
    assert np.abs(grad).sum() > 0
    # check one entry against a central finite difference (float64, h = 1e-6: truncation
    # error ~h^2 and rounding ~1e-16 / h, both well under 1e-6)
    idx = np.unravel_index(np.abs(grad).argmax(), grad.shape)
    h = 1e-6
    plus = voltages + 0.1 * spikes
    minus = plus.copy()
    plus[idx] += h
    minus[idx] -= h
    fd = (loss(labels, plus).numpy() - loss(labels, minus).numpy()) / (2 * h)
    np.testing.assert_allclose(grad[idx], fd, rtol=1e-6)


@pytest.mark.parametrize(
    "loss",
    [
        losses.SpikeCountCrossEntropy(scale=0.25, name="count", reduction="sum"),
        losses.SpikeRateCrossEntropy(scale=8.0),
        losses.MaxMembraneCrossEntropy(name="mx"),
        losses.LastMembraneCrossEntropy(dtype="float64"),
        losses.MeanMembraneCrossEntropy(),
        losses.MembraneMSE(target_on=3.0, target_off=0.5, reduction=None),
    ],
    ids=lambda c: type(c).__name__,
)
def test_loss_config_round_trip(loss):
    config = loss.get_config()
    clone = type(loss).from_config(config)
    assert clone.get_config() == config
    ser = keras.losses.serialize(loss)
    assert ser["registered_name"] == f"keras_spiking>{type(loss).__name__}"
    again = keras.losses.deserialize(ser)
    assert type(again) is type(loss) and again.get_config() == config
    assert config["dtype"] == loss.dtype and config["reduction"] == loss.reduction


def test_loss_configs_hold_their_arguments():
    assert losses.SpikeCountCrossEntropy(scale=0.25).get_config()["scale"] == 0.25
    cfg = losses.MembraneMSE(target_on=3.0, target_off=0.5).get_config()
    assert (cfg["target_on"], cfg["target_off"]) == (3.0, 0.5)
    assert "scale" not in losses.MaxMembraneCrossEntropy().get_config()


def test_loss_errors():
    loss = losses.SpikeCountCrossEntropy()
    with pytest.raises(ValueError, match=r"SpikeCountCrossEntropy: `y_pred`.*\[batch, time"):
        loss(np.array([0, 1]), np.zeros((2, 3), np.float32))
    with pytest.raises(ValueError, match=r"`y_true`.*\[batch\].*\(2, 3\)"):
        loss(np.zeros((2, 3)), np.zeros((2, 4, 3), np.float32))
    with pytest.raises(ValueError, match="MembraneMSE: `y_pred`.*(2, 3, 4, 5)"):
        losses.MembraneMSE()(np.array([0, 1]), np.zeros((2, 3, 4, 5), np.float32))
    with pytest.raises(ValueError, match="`scale`.*-1.0"):
        losses.SpikeRateCrossEntropy(scale=-1.0)
    with pytest.raises(TypeError, match="`scale`.*'big'"):
        losses.SpikeRateCrossEntropy(scale="big")
    with pytest.raises(ValueError, match="`target_on`.*inf"):
        losses.MembraneMSE(target_on=float("inf"))


# ------------------------------------------------------------------------------ readout


def test_readout_modes(data):
    _, voltages, _ = data
    for mode, fn in NP_READOUT.items():
        # float64 reductions of 5 numbers: 1e-12 relative
        np.testing.assert_allclose(losses.readout(voltages, mode), fn(voltages), rtol=1e-12)
    with pytest.raises(ValueError, match="`mode`.*'median'"):
        losses.readout(voltages, "median")
    with pytest.raises(ValueError, match=r"readout: `y_pred`.*\(6, 5\)"):
        losses.readout(voltages[:, :, 0])


def test_sparse_readout_accuracy(data):
    spikes, voltages, labels = data
    for mode, fn in NP_READOUT.items():
        metric = losses.SparseReadoutAccuracy(mode=mode)
        metric.update_state(labels, voltages)
        expected = np.mean(fn(voltages).argmax(axis=1) == labels)
        # accuracy of 6 samples is a multiple of 1/6; float32 result
        np.testing.assert_allclose(float(metric.result()), expected, rtol=1e-6)
    # a hand-made case: the max readout picks class 2, the last step picks class 0
    y = np.zeros((1, 3, 3), np.float32)
    y[0, 0, 2] = 5.0
    y[0, 2, 0] = 1.0
    acc_max = losses.SparseReadoutAccuracy("max")
    acc_last = losses.SparseReadoutAccuracy("last")
    acc_max.update_state(np.array([2]), y)
    acc_last.update_state(np.array([2]), y)
    assert float(acc_max.result()) == 1.0 and float(acc_last.result()) == 0.0

    metric = losses.SparseReadoutAccuracy(mode="sum", name="acc")
    config = metric.get_config()
    assert config == {"mode": "sum", "name": "acc", "dtype": "float32"}
    clone = keras.metrics.deserialize(keras.metrics.serialize(metric))
    assert isinstance(clone, losses.SparseReadoutAccuracy) and clone.get_config() == config
    with pytest.raises(ValueError, match="SparseReadoutAccuracy: `mode`.*'avg'"):
        losses.SparseReadoutAccuracy("avg")


# ------------------------------------------------------------------------------ in a model


@pytest.mark.parametrize(
    "loss, mode, eager",
    [
        # one case compiled to a graph (as in normal use); the others run eagerly, which
        # checks the same code paths without the cost of tracing (keeps the file fast)
        (losses.MaxMembraneCrossEntropy(), "max", False),
        (losses.SpikeRateCrossEntropy(scale=2.0), "mean", True),
        (losses.MembraneMSE(target_on=1.5), "mean", True),
    ],
    ids=lambda c: type(c).__name__ if not isinstance(c, (str, bool)) else str(c),
)
def test_compile_fit_save_load(tmp_path, loss, mode, eager):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(32, 5, 3)).astype(np.float32)
    y = rng.integers(0, 4, 32)
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((5, 3)), keras.layers.Dense(4)])
    model.compile(
        optimizer=keras.optimizers.Adam(0.05),
        loss=loss,
        metrics=[losses.SparseReadoutAccuracy(mode)],
        run_eagerly=eager,
    )
    before = model.evaluate(x, y, verbose=0, return_dict=True)
    model.fit(x, y, epochs=10, batch_size=16, verbose=0)
    after = model.evaluate(x, y, verbose=0, return_dict=True)
    assert np.isfinite(after["loss"])
    assert after["loss"] < before["loss"]  # the loss trains the model
    assert 0.0 <= after["readout_accuracy"] <= 1.0

    # evaluate's loss equals the loss object applied to the model's outputs (float32 sums:
    # 1e-5 relative)
    direct = float(loss(y, model.predict(x, verbose=0)))
    np.testing.assert_allclose(after["loss"], direct, rtol=1e-5)

    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert type(loaded.loss) is type(loss)
    assert loaded.loss.get_config() == loss.get_config()
    again = loaded.evaluate(x, y, verbose=0, return_dict=True)
    # same weights, same data: identical up to float32 summation order
    np.testing.assert_allclose(again["loss"], after["loss"], rtol=1e-6)
    np.testing.assert_allclose(again["readout_accuracy"], after["readout_accuracy"])
