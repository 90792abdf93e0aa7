import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_spiking import encoders

# ------------------------------------------------------------------------------ rate code


@pytest.mark.parametrize("max_rate", [1.0, 0.4])
def test_rate_encode_mean_rate(max_rate):
    levels = np.array([0.0, 0.1, 0.5, 0.9, 1.0], np.float32)
    x = np.tile(levels, (400, 1))
    steps = 50
    s = encoders.rate_encode(x, steps, max_rate=max_rate, seed=7).numpy()
    assert s.shape == (400, steps, 5) and s.dtype == np.float32
    assert set(np.unique(s)) <= {0.0, 1.0}
    n = 400 * steps
    p = levels * max_rate
    rate = s.mean(axis=(0, 1))
    # the mean of n Bernoulli(p) draws has std sqrt(p (1 - p) / n); 5 std bounds a false
    # failure at ~6e-7 per level (p = 0 and p = 1 are exact)
    tol = 5 * np.sqrt(p * (1 - p) / n)
    assert np.all(np.abs(rate - p) <= tol)
    assert rate[0] == 0.0
    if max_rate == 1.0:
        assert rate[-1] == 1.0


def test_rate_encode_seeds():
    x = np.full((3, 4), 0.5, np.float32)
    a = encoders.rate_encode(x, 20, seed=3).numpy()
    b = encoders.rate_encode(x, 20, seed=3).numpy()
    c = encoders.rate_encode(x, 20, seed=4).numpy()
    pair = encoders.rate_encode(x, 20, seed=tf.constant([3, 0])).numpy()
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, pair)  # int seed 3 is the pair (3, 0)
    # 240 fair coin flips agree by chance with probability 2**-240
    assert not np.array_equal(a, c)
    d = encoders.rate_encode(x, 20).numpy()
    e = encoders.rate_encode(x, 20).numpy()
    assert not np.array_equal(d, e)  # seed=None: fresh noise, equal with prob. 2**-240


def test_rate_encode_shapes_and_dtypes():
    x = np.random.default_rng(0).random((2, 3, 4))
    s = encoders.rate_encode(x, 5, seed=0)
    assert s.shape == (2, 5, 3, 4) and s.dtype == tf.float64
    s = encoders.rate_encode(np.array([0, 1, 1]), 4, seed=0)  # ints: cast to floatx
    assert s.dtype == tf.float32
    np.testing.assert_array_equal(s.numpy(), np.repeat([[0.0], [1.0], [1.0]], 4, axis=1))


@pytest.mark.parametrize(
    "x, kwargs, exc, words",
    [
        ([[1.5]], {}, ValueError, ["rate_encode", "`x`", "[0, 1]", "1.5"]),
        ([[-0.1]], {}, ValueError, ["`x`", "-0.1"]),
        ([[np.nan]], {}, ValueError, ["`x`", "NaN"]),
        ([[0.5]], {"num_steps": 0}, ValueError, ["num_steps", "0"]),
        ([[0.5]], {"num_steps": 2.0}, TypeError, ["num_steps", "2.0"]),
        ([[0.5]], {"max_rate": 1.5}, ValueError, ["max_rate", "1.5"]),
        ([[0.5]], {"max_rate": 0.0}, ValueError, ["max_rate", "(0, 1]"]),
        ([[0.5]], {"seed": -3}, ValueError, ["seed", "-3"]),
        ([[0.5]], {"seed": "abc"}, TypeError, ["seed", "abc"]),
        ([[0.5]], {"seed": [1, 2, 3]}, TypeError, ["seed", "pair"]),
        (0.5, {}, ValueError, ["`x`", "batch"]),
    ],
)
def test_rate_encode_errors(x, kwargs, exc, words):
    kwargs = {"num_steps": 4, **kwargs}
    with pytest.raises(exc) as info:
        encoders.rate_encode(np.asarray(x, np.float32), **kwargs)
    for w in words:
        assert w in str(info.value)


def test_rate_encode_graph_check():
    f = tf.function(lambda x: encoders.rate_encode(x, 3, seed=0))
    assert f(tf.constant([[0.2]])).shape == (1, 3, 1)
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"rate_encode: `x` must lie"):
        f(tf.constant([[2.0]]))


# ------------------------------------------------------------------------------ latency code


def _spike_steps(s):
    """Step of the single spike per feature, -1 where there is none."""
    s = np.asarray(s)
    assert np.all(s.sum(axis=1) <= 1)  # never more than one spike
    return np.where(s.sum(axis=1) > 0, s.argmax(axis=1), -1)


def test_latency_linear_exact_steps():
    x = np.array([[1.0, 0.9, 0.75, 0.7, 0.5, 0.25, 0.04, 0.0]], np.float32)
    s = encoders.latency_encode(x, 11).numpy()
    assert s.shape == (1, 11, 8)
    # step = round_half_up((1 - x) * 10): 0.75 -> 2.5 -> 3 and 0.25 -> 7.5 -> 8 (both exact
    # in binary, so they test the rounding rule); 0.04 -> 9.6 -> 10; x = 0 never spikes
    assert _spike_steps(s)[0].tolist() == [0, 1, 3, 3, 5, 8, 10, -1]
    # x = 0.5 with 10 steps: 4.5 -> 5 (half-to-even would give 4)
    assert _spike_steps(encoders.latency_encode(x, 10))[0, 4] == 5


def test_latency_t_min_threshold_and_unnormalized():
    x = np.array([[1.0, 0.5, 0.3, 0.2]], np.float32)
    s = encoders.latency_encode(x, 11, t_min=2, threshold=0.25)
    # span = 10 - 2 = 8: 1.0 -> 2, 0.5 -> 2 + 4 = 6, 0.3 -> 2 + 5.6 -> 8, 0.2 <= threshold
    assert _spike_steps(s)[0].tolist() == [2, 6, 8, -1]

    s = encoders.latency_encode(x, 6, normalize=False, tau=10.0)
    # step = round(10 (1 - x)): 0, 5, 7 (past the last step 5: dropped), 8 (dropped)
    assert _spike_steps(s)[0].tolist() == [0, 5, -1, -1]


def test_latency_rc_code():
    x = np.array([[1.0, 0.5, 0.25, 0.2, 0.15]], np.float64)
    tau, theta = 4.0, 0.2
    s = encoders.latency_encode(x, 20, linear=False, tau=tau, threshold=theta, normalize=False)
    expected = []
    for v in x[0]:
        if v <= theta:
            expected.append(-1)
        else:
            k = int(np.floor(tau * np.log(v / (v - theta)) + 0.5))
            expected.append(k if k < 20 else -1)
    assert expected == [1, 2, 6, -1, -1]  # hand check: 4 ln(1.25) = 0.89, 4 ln(5/3) = 2.04
    assert _spike_steps(s)[0].tolist() == expected
    # normalize shifts by 4 ln(1.25) = 0.89 so that x = 1 spikes at step 0:
    # x = 0.5: 2.04 - 0.89 = 1.15 -> 1; x = 0.25: 4 ln 5 - 0.89 = 5.55 -> 6
    sn = encoders.latency_encode(x, 20, linear=False, tau=tau, threshold=theta)
    assert _spike_steps(sn)[0].tolist() == [0, 1, 6, -1, -1]


def test_latency_larger_value_never_later():
    x = np.sort(np.random.default_rng(1).random((1, 200)), axis=1)
    steps = _spike_steps(encoders.latency_encode(x, 16))[0]
    assert np.all(steps >= 0)  # all values > 0 spike
    assert np.all(np.diff(steps) <= 0)


@pytest.mark.parametrize(
    "kwargs, exc, words",
    [
        ({"t_min": 11}, ValueError, ["t_min", "11", "[0, 10]"]),
        ({"threshold": 1.0}, ValueError, ["threshold", "1.0"]),
        ({"tau": 3.0}, ValueError, ["tau", "normalize"]),
        ({"normalize": False}, ValueError, ["tau", "None"]),
        ({"linear": False, "tau": 2.0}, ValueError, ["threshold", "RC"]),
        ({"linear": False, "threshold": 0.1}, ValueError, ["tau"]),
        ({"linear": "yes"}, TypeError, ["linear", "yes"]),
        ({"tau": -1.0, "normalize": False}, ValueError, ["tau", "-1.0"]),
    ],
)
def test_latency_errors(kwargs, exc, words):
    with pytest.raises(exc) as info:
        encoders.latency_encode(np.array([[0.5]], np.float32), 11, **kwargs)
    for w in words:
        assert w in str(info.value)
    with pytest.raises(ValueError, match="latency_encode: `x` must lie in"):
        encoders.latency_encode(np.array([[1.01]], np.float32), 11)


# ------------------------------------------------------------------------------ delta code

RAMP = np.array([0.0, 0.05, 0.12, 0.13, 0.3, 0.3, 0.1, 0.05, -0.06], np.float32)


def test_delta_encode_ramp():
    x = np.stack([RAMP, -RAMP], axis=-1)[None]  # [1, 9, 2]
    signed = encoders.delta_encode(x, threshold=0.1, off_spikes=False).numpy()
    # ref 0: 0.05 no; 0.12 ON (ref 0.12); 0.13 no; 0.3 ON (ref 0.3); 0.3 no; 0.1 OFF (ref 0.1);
    # 0.05 no; -0.06 OFF (change -0.16)
    expected = np.array([0, 0, 1, 0, 1, 0, -1, 0, -1], np.float32)
    np.testing.assert_array_equal(signed[0, :, 0], expected)
    np.testing.assert_array_equal(signed[0, :, 1], -expected)  # mirrored signal

    split = encoders.delta_encode(x, threshold=0.1).numpy()
    assert split.shape == (1, 9, 4)
    np.testing.assert_array_equal(split[0, :, 0], expected == 1)  # ON of feature 0
    np.testing.assert_array_equal(split[0, :, 1], expected == -1)  # ON of feature 1
    np.testing.assert_array_equal(split[0, :, 2], expected == -1)  # OFF of feature 0
    np.testing.assert_array_equal(split[0, :, 3], expected == 1)  # OFF of feature 1


def test_delta_encode_slow_drift_and_edge_cases():
    # a drift of 0.04 per step crosses the 0.1 threshold every 3rd step: the reference
    # only moves when a spike is sent
    x = (0.04 * np.arange(10, dtype=np.float64))[None, :, None]
    s = encoders.delta_encode(x, threshold=0.1, off_spikes=False).numpy()[0, :, 0]
    assert np.flatnonzero(s).tolist() == [3, 6, 9]
    # a single time step: no spikes, right shape
    one = encoders.delta_encode(np.ones((2, 1, 3), np.float32))
    assert one.shape == (2, 1, 6) and float(tf.reduce_sum(one)) == 0.0
    # constant signal: no spikes even with threshold 0
    assert float(tf.reduce_sum(encoders.delta_encode(np.ones((1, 5, 2)), threshold=0.0))) == 0


def test_delta_errors():
    with pytest.raises(ValueError, match=r"x_seq.*\[batch, time, features\].*\(2, 3\)"):
        encoders.delta_encode(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="threshold.*-0.1"):
        encoders.delta_encode(np.zeros((1, 2, 3)), threshold=-0.1)
    with pytest.raises(TypeError, match="off_spikes.*1"):
        encoders.delta_encode(np.zeros((1, 2, 3)), off_spikes=1)


# ------------------------------------------------------------------------------ layers


def test_layers_match_functions():
    x = np.random.default_rng(0).random((3, 5)).astype(np.float32)
    lat = encoders.LatencyEncoder(7, t_min=1, threshold=0.1)
    np.testing.assert_array_equal(
        lat(x).numpy(), encoders.latency_encode(x, 7, t_min=1, threshold=0.1).numpy()
    )
    assert lat.compute_output_shape((None, 5)) == (None, 7, 5)

    seq = np.random.default_rng(1).random((2, 6, 3)).astype(np.float32)
    d = encoders.DeltaEncoder(0.2, off_spikes=True)
    np.testing.assert_array_equal(d(seq).numpy(), encoders.delta_encode(seq, threshold=0.2))
    assert d.compute_output_shape((None, None, 3)) == (None, None, 6)
    assert encoders.DeltaEncoder(off_spikes=False).compute_output_shape((2, 4, 3)) == (2, 4, 3)


def test_rate_encoder_layer_fresh_noise_and_seed():
    x = np.full((4, 8), 0.5, np.float32)
    a = encoders.RateEncoder(10, seed=5)
    b = encoders.RateEncoder(10, seed=5)
    a1, a2 = a(x).numpy(), a(x).numpy()
    b1 = b(x).numpy()
    assert a1.shape == (4, 10, 8)
    # 320 fair coin flips: equal by chance with probability 2**-320
    assert not np.array_equal(a1, a2)  # fresh noise on every call
    np.testing.assert_array_equal(a1, b1)  # same seed, same sequence
    # mean rate: 2 x 320 draws of p = 0.5 have std 0.02; 5 std
    assert abs(np.concatenate([a1, a2]).mean() - 0.5) < 0.1
    half = encoders.RateEncoder(10, max_rate=0.0001, seed=1)(x).numpy()
    assert half.sum() <= 3  # expected 0.016 spikes; P(> 3) is ~3e-9


def test_layer_config_round_trip():
    layers = [
        encoders.RateEncoder(12, max_rate=0.3, seed=9, name="rate"),
        encoders.LatencyEncoder(
            20, t_min=2, normalize=False, threshold=0.1, linear=False, tau=3.0, name="lat"
        ),
        encoders.DeltaEncoder(0.05, off_spikes=False, name="delta"),
    ]
    for layer in layers:
        config = layer.get_config()
        clone = type(layer).from_config(config)
        assert clone.get_config() == config
        # through the generic (registered) serializer too
        ser = keras.saving.serialize_keras_object(layer)
        assert ser["registered_name"].startswith("keras_spiking>")
        again = keras.saving.deserialize_keras_object(ser)
        assert type(again) is type(layer) and again.get_config() == config
    assert layers[0].get_config()["seed"] == 9
    assert layers[1].get_config()["tau"] == 3.0


def test_layer_constructor_errors():
    with pytest.raises(ValueError, match="RateEncoder: `max_rate`.*2.0"):
        encoders.RateEncoder(5, max_rate=2.0)
    with pytest.raises(TypeError, match="RateEncoder: `seed`.*-1"):
        encoders.RateEncoder(5, seed=-1)
    with pytest.raises(ValueError, match="LatencyEncoder: `t_min`"):
        encoders.LatencyEncoder(5, t_min=5)
    with pytest.raises(ValueError, match="DeltaEncoder: `threshold`"):
        encoders.DeltaEncoder(-1.0)
    with pytest.raises(ValueError, match=r"LatencyEncoder: `x` must lie in \[0, 1\]"):
        encoders.LatencyEncoder(5)(np.array([[3.0]], np.float32))


def test_sequential_save_load(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.random((16, 6)).astype(np.float32)
    y = rng.integers(0, 2, 16)
    rate_model = keras.Sequential(
        [
            keras.Input((6,)),
            encoders.RateEncoder(8, max_rate=0.5, seed=3),
            keras.layers.Flatten(),
            keras.layers.Dense(2),
        ]
    )
    lat_model = keras.Sequential(
        [
            keras.Input((6,)),
            encoders.LatencyEncoder(8, threshold=0.05),
            keras.layers.Reshape((8, 6)),
            encoders.DeltaEncoder(0.5),
            keras.layers.Flatten(),
            keras.layers.Dense(2),
        ]
    )
    for model in (rate_model, lat_model):
        model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        model.fit(x, y, epochs=1, batch_size=8, verbose=0)

    path = tmp_path / "lat.keras"
    lat_model.save(path)
    loaded = keras.saving.load_model(path)
    # deterministic encoders: identical outputs after the round trip
    np.testing.assert_allclose(loaded.predict(x, verbose=0), lat_model.predict(x, verbose=0))
    assert isinstance(loaded.layers[0], encoders.LatencyEncoder)
    assert loaded.layers[0].get_config()["threshold"] == 0.05

    path = tmp_path / "rate.keras"
    rate_model.save(path)
    loaded = keras.saving.load_model(path)
    enc, enc0 = loaded.layers[0], rate_model.layers[0]
    assert isinstance(enc, encoders.RateEncoder)
    assert enc.get_config() == enc0.get_config()
    # the generator state is not saved: the loaded layer restarts the sequence of its seed,
    # like a freshly built layer (the trained one has moved on)
    fresh = encoders.RateEncoder(8, max_rate=0.5, seed=3)
    np.testing.assert_array_equal(enc(x).numpy(), fresh(x).numpy())
    for w0, w1 in zip(rate_model.get_weights(), loaded.get_weights(), strict=True):
        np.testing.assert_array_equal(w0, w1)
