"""Spiking conv layers (ConvLIF/ConvCubaLIF/ConvLI 1-D and 2-D) and the spike-map layers.

Oracles: a NumPy convolution written as explicit sums (not tf.nn.convolution), the neuron
update written out per step, and float64 finite differences of a smooth proxy network.
"""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_spiking as ks
from keras_spiking import conv_cells, metrics
from keras_spiking import layers as L  # noqa: N812


def np_conv(x, w, strides, padding, dilation, groups=1):
    """Cross-correlation of ``x [N, *S, C]`` with ``w [*k, C/g, F]``, by explicit sums."""
    rank = x.ndim - 2
    k, d, s = w.shape[:rank], dilation, strides
    if padding == "same":
        pads = []
        for n, kk, ss, dd in zip(x.shape[1:-1], k, s, d):
            out = math.ceil(n / ss)
            total = max((out - 1) * ss + (kk - 1) * dd + 1 - n, 0)
            pads.append((total // 2, total - total // 2))
        x = np.pad(x, [(0, 0), *pads, (0, 0)])
    spatial_out = [
        (n - ((kk - 1) * dd + 1)) // ss + 1 for n, kk, ss, dd in zip(x.shape[1:-1], k, s, d)
    ]
    cin_g, filters = w.shape[-2], w.shape[-1]
    fout_g = filters // groups
    out = np.zeros((x.shape[0], *spatial_out, filters))
    for pos in np.ndindex(*spatial_out):
        for off in np.ndindex(*k):
            idx = tuple(p * ss + o * dd for p, o, ss, dd in zip(pos, off, s, d))
            patch = x[(slice(None), *idx)]  # [N, C]
            for g in range(groups):
                xs = patch[:, g * cin_g : (g + 1) * cin_g]
                ws = w[(*off, slice(None), slice(g * fout_g, (g + 1) * fout_g))]
                out[(slice(None), *pos, slice(g * fout_g, (g + 1) * fout_g))] += xs @ ws
    return out


def np_lif(currents, beta, threshold=1.0, reset="subtract"):
    """LIF over ``currents [B, T, N]`` (the layer's update, written out)."""
    v = np.zeros(currents.shape[::2])
    out = np.zeros_like(currents)
    for t in range(currents.shape[1]):
        u = beta * v + currents[:, t]
        s = (u > threshold).astype(float)
        v = u - threshold * s if reset == "subtract" else u * (1 - s)
        out[:, t] = s
    return out, v


CONV_CASES = [
    # rank, kernel, strides, padding, dilation, groups
    (2, (3, 3), (1, 1), "valid", (1, 1), 1),
    (2, (3, 2), (2, 1), "same", (1, 1), 1),
    (2, (2, 2), (1, 1), "same", (2, 1), 2),
    (1, (3,), (2,), "valid", (1,), 1),
    (1, (2,), (1,), "same", (2,), 3),
]


@pytest.mark.parametrize("rank, kernel, strides, padding, dilation, groups", CONV_CASES)
@pytest.mark.parametrize("use_custom_ops", [False, True])
def test_conv_lif_equals_numpy_conv_and_lif_loop(
    rng, rank, kernel, strides, padding, dilation, groups, use_custom_ops
):
    spatial = (7, 6)[:rank]
    channels, filters = 3 * groups // math.gcd(3, groups), 2 * groups
    x = (rng.uniform(size=(2, 4, *spatial, channels)) < 0.4).astype("float64")
    cls = L.ConvLIF2D if rank == 2 else L.ConvLIF1D
    tau = rng.uniform(5e-3, 30e-3, filters)
    layer = cls(
        filters,
        kernel,
        strides=strides,
        padding=padding,
        dilation_rate=dilation,
        groups=groups,
        tau_mem=tau.tolist(),
        kernel_initializer=keras.initializers.RandomNormal(0.05, 0.5, seed=3),
        use_bias=True,
        bias_initializer=keras.initializers.Constant(0.1),
        return_state=True,
        use_custom_ops=use_custom_ops,
        dtype="float64",
    )
    spikes, v, s = layer(x, training=True)
    w = layer.cell.kernel.numpy()
    currents = np_conv(x.reshape(8, *spatial, channels), w, strides, padding, dilation, groups)
    currents = currents + layer.cell.bias.numpy()  # 0.1 as Keras stored it
    map_shape = currents.shape[1:]
    assert tuple(spikes.shape) == (2, 4, *map_shape)
    assert layer.cell.map_shape == map_shape
    beta = np.tile(np.exp(-1e-3 / tau), math.prod(map_shape[:-1]))
    expected, v_last = np_lif(currents.reshape(2, 4, -1), beta)
    # float64 throughout; the kernels and TF sum in other orders (rounding ~1e-15)
    np.testing.assert_allclose(spikes.numpy().reshape(2, 4, -1), expected, atol=0)
    np.testing.assert_allclose(v.numpy().reshape(2, -1), v_last, rtol=1e-10, atol=1e-12)
    np.testing.assert_array_equal(s.numpy().reshape(2, -1), expected[:, -1])
    assert 0.02 < expected.mean() < 0.9  # the check sees spikes and silence


def test_conv_cuba_lif_and_li_equal_their_cells_run_step_by_step(rng):
    x = (rng.uniform(size=(2, 5, 6, 5, 2)) < 0.5).astype("float64")
    for cls in (L.ConvCubaLIF2D, L.ConvLI2D):
        layer = cls(
            3,
            3,
            padding="same",
            kernel_initializer=keras.initializers.RandomNormal(0.5, 0.5, seed=1),
            dtype="float64",
        )
        out = layer(x).numpy()
        cell = layer.cell
        states = cell.get_initial_state(2)
        steps = []
        for t in range(5):
            y, states = cell(tf.constant(x[:, t]), states)
            steps.append(y.numpy().reshape(2, 6, 5, 3))
        np.testing.assert_allclose(out, np.stack(steps, 1), rtol=1e-12, atol=1e-12)


def _proxy_conv_net_loss(x, kernel, log_tau, w2, readout, base, dt=1e-3, k=25.0):
    """ConvLIF2D(valid, 3x3) -> SumPooling2D(2) -> SpatialFlatten -> LI(no tau train) in NumPy
    with H(u - 1) replaced by H0 + f(u - 1) - f(u0 - 1) around the base point (see
    tests/test_layers.py::_proxy_lif_li_loss): its exact derivative is the surrogate gradient."""
    f = lambda z: z / (k * np.abs(z) + 1.0)  # noqa: E731
    batch, steps = x.shape[:2]
    cur = np_conv(x.reshape(batch * steps, *x.shape[2:]), kernel, (1, 1), "valid", (1, 1))
    map_shape = cur.shape[1:]
    cur = cur.reshape(batch, steps, -1)
    beta = np.tile(np.exp(-dt * np.exp(-log_tau)), math.prod(map_shape[:-1]))
    b2 = np.exp(-dt / 20e-3)
    v = np.zeros((batch, cur.shape[-1]))
    v2 = np.zeros((batch, w2.shape[1]))
    loss, record = 0.0, []
    for t in range(steps):
        u = beta * v + cur[:, t]
        hard = (u > 1.0).astype(float)
        if base is None:
            s = hard
            record.append((u, hard))
        else:
            u0, h0 = base[t]
            s = h0 + f(u - 1.0) - f(u0 - 1.0)
            hard = h0
        v = u - hard
        maps = s.reshape(batch, *map_shape)
        h, w_, c = map_shape
        pooled = maps[:, : h // 2 * 2, : w_ // 2 * 2].reshape(batch, h // 2, 2, w_ // 2, 2, c)
        pooled = pooled.sum(axis=(2, 4)).reshape(batch, -1)
        v2 = b2 * v2 + pooled @ w2
        loss += np.sum(v2 * readout[:, t])
    return loss, record


def test_conv_network_gradient_matches_finite_differences_of_smooth_proxy(rng):
    x = rng.uniform(0, 1, (2, 6, 6, 6, 2))
    tau = rng.uniform(5e-3, 30e-3, 3)
    model = keras.Sequential(
        [
            keras.Input((6, 6, 6, 2), dtype="float64"),
            L.ConvLIF2D(
                3,
                3,
                tau_mem=tau.tolist(),
                train_time_constants=True,
                kernel_initializer=keras.initializers.RandomNormal(0.1, 0.3, seed=2),
                dtype="float64",
            ),
            L.SumPooling2D(2, dtype="float64"),
            L.SpatialFlatten(dtype="float64"),
            L.LI(2, dtype="float64"),
        ]
    )
    readout = rng.normal(size=(2, 6, 2))
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(model(x, training=True) * readout)
    grads = [g.numpy() for g in tape.gradient(loss, model.trainable_weights)]
    params = [w.numpy() for w in model.trainable_weights]
    names = [w.path for w in model.trainable_weights]
    assert names[0].endswith("kernel") and names[1].endswith("log_tau_mem")
    base_loss, base = _proxy_conv_net_loss(x, *params, readout, None)
    assert base_loss == pytest.approx(float(loss), rel=1e-12)  # same forward, float64
    spikes = np.array([h for _, h in base])
    assert 0.05 < spikes.mean() < 0.7
    eps = 1e-6
    for p, grad, name in zip(range(len(params)), grads, names):
        fd = np.zeros_like(params[p])
        for idx in np.ndindex(params[p].shape):
            for sign in (1, -1):
                shifted = [q.copy() for q in params]
                shifted[p][idx] += sign * eps
                fd[idx] += sign * _proxy_conv_net_loss(x, *shifted, readout, base)[0] / (2 * eps)
        # central differences in float64: truncation O(eps^2) plus rounding O(1e-16 / eps)
        np.testing.assert_allclose(grad, fd, rtol=1e-5, atol=1e-6, err_msg=name)


def test_kernel_and_tf_paths_agree_in_training(rng):
    x = (rng.uniform(size=(3, 6, 8, 8, 2)) < 0.1).astype("float32")
    grads, outs = [], []
    for use in (True, False):
        layer = L.ConvLIF2D(
            4,
            3,
            use_custom_ops=use,
            kernel_initializer=keras.initializers.RandomNormal(0.5, 0.5, seed=0),
        )
        with tf.GradientTape() as tape:
            out = layer(x, training=True)
            loss = tf.reduce_sum(out * tf.range(1.0, 1.0 + out.shape[-1]))
        grads.append(tape.gradient(loss, layer.trainable_weights)[0].numpy())
        outs.append(out.numpy())
    np.testing.assert_array_equal(outs[0], outs[1])
    # float32, summed in different orders by the two paths: a few ulps of the largest term
    np.testing.assert_allclose(grads[0], grads[1], rtol=1e-4, atol=1e-4)


def test_stateful_streaming_in_chunks_equals_whole_sequence(rng):
    x = (rng.uniform(size=(2, 8, 5, 5, 2)) < 0.5).astype("float32")
    kwargs = dict(kernel_initializer=keras.initializers.RandomNormal(0.4, 0.4, seed=5))
    whole = L.ConvLIF2D(3, 3, **kwargs)(x).numpy()
    stream = L.ConvLIF2D(3, 3, stateful=True, **kwargs)
    chunks = [stream(x[:, :3]), stream(x[:, 3:7]), stream(x[:, 7])[:, None]]  # last: one step
    np.testing.assert_array_equal(np.concatenate([c.numpy() for c in chunks], 1), whole)
    stream.reset_state()
    np.testing.assert_array_equal(stream(x[:, :3]).numpy(), whole[:, :3])


def test_states_are_maps_and_initial_state_continues_a_sequence(rng):
    x = rng.uniform(0, 1, (2, 6, 9, 3)).astype("float64")
    layer = L.ConvCubaLIF1D(4, 3, padding="same", return_state=True, dtype="float64")
    out, i, v = layer(x)
    assert out.shape == (2, 6, 9, 4) and i.shape == (2, 9, 4) and v.shape == (2, 9, 4)
    head, *states = layer(x[:, :4])
    tail, *final = layer(x[:, 4:], initial_state=states)
    np.testing.assert_allclose(np.concatenate([head, tail], 1), out.numpy(), rtol=1e-12)
    np.testing.assert_allclose(final[1].numpy(), v.numpy(), rtol=1e-12)
    assert layer.compute_output_shape((2, 6, 9, 3)) == ((2, 6, 9, 4), (2, 9, 4), (2, 9, 4))
    with pytest.raises(ValueError, match=r"initial state 'i' must have shape \[batch, 9, 4\]"):
        layer(x, initial_state=[tf.zeros((2, 36)), tf.zeros((2, 36))])


def test_return_sequences_false_go_backwards_and_mask(rng):
    x = (rng.uniform(size=(2, 5, 6, 6, 1)) < 0.5).astype("float32")
    kwargs = dict(kernel_initializer=keras.initializers.RandomNormal(0.5, 0.3, seed=7))
    full = L.ConvLIF2D(2, 3, **kwargs)(x).numpy()
    last = L.ConvLIF2D(2, 3, return_sequences=False, **kwargs)(x).numpy()
    np.testing.assert_array_equal(last, full[:, -1])
    backwards = L.ConvLIF2D(2, 3, go_backwards=True, **kwargs)(x).numpy()
    forwards_of_reversed = L.ConvLIF2D(2, 3, **kwargs)(x[:, ::-1]).numpy()
    np.testing.assert_array_equal(backwards, forwards_of_reversed)
    mask = np.array([[True] * 5, [True, True, True, False, False]])
    masked = L.ConvLIF2D(2, 3, **kwargs)(x, mask=mask).numpy()
    np.testing.assert_array_equal(masked[0], full[0])
    np.testing.assert_array_equal(masked[1, :3], full[1, :3])
    assert not masked[1, 3:].any()  # masked steps output zeros


@pytest.mark.parametrize(
    "cls", [L.ConvLIF1D, L.ConvLIF2D, L.ConvCubaLIF1D, L.ConvCubaLIF2D, L.ConvLI1D, L.ConvLI2D]
)
def test_config_and_keras_file_round_trip(tmp_path, rng, cls):
    rank = cls.rank
    kwargs = dict(
        strides=2,
        padding="same",
        groups=2,
        use_bias=True,
        train_time_constants=True,
        kernel_constraint="non_neg",
        kernel_regularizer="l2",
        tau_mem=[0.01, 0.02, 0.03, 0.04],
    )
    layer = cls(4, 3, **kwargs)
    config = layer.get_config()
    assert config["filters"] == 4 and config["kernel_size"] == (3,) * rank
    assert "units" not in config and "rank" not in config
    assert cls.from_config(config).get_config() == config
    model = keras.Sequential([keras.Input((3, *(8,) * rank, 2)), layer])
    x = rng.uniform(0, 2, (2, 3, *(8,) * rank, 2)).astype("float32")
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_array_equal(loaded(x).numpy(), model(x).numpy())
    assert [w.shape for w in loaded.weights] == [w.shape for w in model.weights]
    # the weights are Keras conv weights: the same shapes as keras.layers.ConvND
    conv = (keras.layers.Conv1D if rank == 1 else keras.layers.Conv2D)(
        4, 3, strides=2, padding="same", groups=2
    )
    conv.build((None, *(8,) * rank, 2))
    assert tuple(layer.cell.kernel.shape) == tuple(conv.kernel.shape)
    assert layer.compute_output_shape((2, 3, *(8,) * rank, 2)) == (
        2,
        3,
        *conv.compute_output_shape((2, *(8,) * rank, 2))[1:],
    )


def test_kernel_constraint_is_applied_by_the_optimizer(rng):
    model = keras.Sequential(
        [
            keras.Input((3, 6, 6, 1)),
            L.ConvLIF2D(2, 3, kernel_constraint="non_neg"),
            L.SpatialFlatten(),
            L.LI(2),
        ]
    )
    model.compile(keras.optimizers.SGD(10.0), ks.losses.MaxMembraneCrossEntropy())
    model.fit(rng.uniform(0, 3, (4, 3, 6, 6, 1)), np.array([0, 1, 0, 1]), verbose=0)
    assert model.layers[0].cell.kernel.numpy().min() >= 0


def test_bad_arguments_and_inputs_name_the_problem():
    with pytest.raises(ValueError, match="`padding` must be 'valid' or 'same', got 'full'"):
        L.ConvLIF2D(2, 3, padding="full")
    with pytest.raises(ValueError, match="`kernel_size` must be an int >= 1 or a tuple of 2"):
        L.ConvLIF2D(2, (3, 3, 3))
    with pytest.raises(ValueError, match="strides > 1 and dilation_rate > 1"):
        L.ConvLIF2D(2, 3, strides=2, dilation_rate=2)
    with pytest.raises(ValueError, match=r"`filters` \(3\) must be divisible by `groups` \(2\)"):
        L.ConvLIF2D(3, 3, groups=2)
    with pytest.raises(ValueError, match="recurrent=True` is not supported by the conv layers"):
        L.ConvLIF2D(2, 3, recurrent=True)
    with pytest.raises(ValueError, match="only gradient='surrogate'"):
        L.ConvCubaLIF2D(2, 3, gradient="eventprop")
    with pytest.raises(ValueError, match="ConvLIF2D: `filters` must be an integer >= 1, got 0"):
        L.ConvLIF2D(0, 3)
    with pytest.raises(TypeError, match="`filters`, not `units`"):
        L.ConvLIF2D(2, 3, units=4)
    with pytest.raises(ValueError, match="does not fit the input's spatial shape"):
        L.ConvLIF2D(2, 5)(np.zeros((1, 2, 3, 3, 1), "float32"))
    with pytest.raises(ValueError, match=r"input channels \(3\) must be divisible by `groups`"):
        L.ConvLIF2D(2, 1, groups=2)(np.zeros((1, 2, 3, 3, 3), "float32"))
    with pytest.raises(ValueError, match=r"RepeatSteps\(T\)"):
        L.ConvLIF2D(2, 3)(np.zeros((1, 5, 5, 1), "float32"))
    with pytest.raises(ValueError, match=r"\[batch, time, length, channels\]"):
        L.ConvLIF1D(2, 3)(np.zeros((1, 2, 5, 5, 1), "float32"))
    with pytest.raises(ValueError, match="`tau_mem`"):
        L.ConvLIF2D(2, 3, tau_mem=[0.01, 0.02, 0.03])  # per filter: 2 values


@pytest.mark.parametrize("padding", ["valid", "same"])
@pytest.mark.parametrize("mode", ["sum", "average", "max"])
@pytest.mark.parametrize("rank", [1, 2])
def test_pooling_equals_numpy_windows(rng, padding, mode, rank):
    cls = {
        "sum": (L.SumPooling1D, L.SumPooling2D),
        "average": (L.AveragePooling1D, L.AveragePooling2D),
        "max": (L.MaxPooling1D, L.MaxPooling2D),
    }[mode][rank - 1]
    spatial = (7, 5)[:rank]
    x = (rng.uniform(size=(2, 3, *spatial, 2)) < 0.5).astype("float32")
    layer = cls(3 if rank == 1 else (2, 3), strides=2, padding=padding)
    out = layer(x).numpy()
    pool = layer.pool_size
    if padding == "same":
        pads = []
        for n, k in zip(spatial, pool):
            total = max((math.ceil(n / 2) - 1) * 2 + k - n, 0)
            pads.append((total // 2, total - total // 2))
        x = np.pad(x, [(0, 0), (0, 0), *pads, (0, 0)])  # zeros: a max of spikes ignores them
    out_spatial = [(n - k) // 2 + 1 for n, k in zip(x.shape[2:-1], pool)]
    expected = np.zeros((2, 3, *out_spatial, 2), "float32")
    for pos in np.ndindex(*out_spatial):
        window = tuple(slice(p * 2, p * 2 + k) for p, k in zip(pos, pool))
        patch = x[(slice(None), slice(None), *window)].reshape(2, 3, -1, 2)
        value = {"sum": patch.sum(2), "average": patch.mean(2), "max": patch.max(2)}[mode]
        expected[(slice(None), slice(None), *pos)] = value
    np.testing.assert_allclose(out, expected, rtol=1e-6)  # float32 averages
    assert out.shape == layer.compute_output_shape(
        x.shape if padding == "valid" else (2, 3, *spatial, 2)
    )
    assert cls.from_config(layer.get_config()).get_config() == layer.get_config()


def test_repeat_steps_and_spatial_flatten(rng):
    x = rng.uniform(size=(2, 4, 3, 2)).astype("float32")
    held = L.RepeatSteps(5)(x).numpy()
    assert held.shape == (2, 5, 4, 3, 2)
    np.testing.assert_array_equal(held[:, 3], x)
    flat = L.SpatialFlatten()(held).numpy()
    np.testing.assert_array_equal(flat, held.reshape(2, 5, -1))
    with pytest.raises(ValueError, match="num_steps"):
        L.RepeatSteps(0)
    with pytest.raises(ValueError, match=r"SumPooling2D expects spike maps .* 2 spatial axes"):
        L.SumPooling2D()(np.zeros((2, 4, 4, 1), "float32"))


def _small_conv_model(spiking_readout=False):
    return keras.Sequential(
        [
            keras.Input((6, 6, 1)),
            L.RepeatSteps(4),
            L.ConvLIF2D(
                3,
                3,
                kernel_initializer=keras.initializers.RandomNormal(0.0, 0.3, seed=1),
                name="c1",
            ),
            L.SumPooling2D(2),
            L.SpatialFlatten(),
            L.LI(3, name="out"),
        ]
    )


def test_monitors_rasters_and_losses_work_on_conv_layers(rng, tmp_path):
    model = _small_conv_model()
    x = rng.uniform(0.5, 2, (8, 6, 6, 1)).astype("float32")
    y = np.arange(8) % 3
    rates = metrics.firing_rates(model, x)
    assert rates["c1"].shape == (4 * 4 * 3,)  # positions x filters
    trains = metrics.spike_trains(model, x[:2])
    assert trains["c1"].shape == (2, 4, 48)
    direct = model.layers[1](model.layers[0](x[:2])).numpy().reshape(2, 4, -1)
    np.testing.assert_array_equal(trains["c1"], direct)
    monitor = ks.callbacks.FiringRateMonitor(x)
    raster = ks.callbacks.SpikeRasterPlot(x, path=str(tmp_path / "r{epoch}.png"))
    model.compile(
        "adam", ks.losses.MaxMembraneCrossEntropy(), metrics=[ks.metrics.SparseReadoutAccuracy()]
    )
    history = model.fit(x, y, epochs=1, verbose=0, callbacks=[monitor, raster])
    assert 0 < history.history["c1_rate"][0] < 1
    assert (tmp_path / "r1.png").exists()


def test_readout_losses_take_one_position_conv_maps_and_refuse_larger_ones(rng):
    y_pred = tf.constant(rng.normal(size=(2, 3, 1, 1, 4)), tf.float32)
    labels = tf.constant([1, 3])
    loss = ks.losses.MaxMembraneCrossEntropy()
    expected = loss(labels, tf.reshape(y_pred, (2, 3, 4)))
    np.testing.assert_allclose(loss(labels, y_pred), expected, rtol=1e-6)
    with pytest.raises(ValueError, match="SpatialFlatten"):
        loss(labels, tf.zeros((2, 3, 2, 2, 4)))


def test_silent_conv_layer_warns_in_training(rng):
    layer = L.ConvLIF2D(2, 3, kernel_initializer="zeros", name="quiet_conv")
    with pytest.warns(ks.SilentLayerWarning, match="quiet_conv"):
        layer(np.ones((2, 3, 5, 5, 1), "float32"), training=True)


def test_mnist_network_of_the_na_paper_builds_and_trains_one_step(rng):
    """15C5-P2-40C5-P2-300-10 as a keras.Sequential (the shapes of Yang et al. 2021)."""
    model = keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            L.RepeatSteps(5),
            L.ConvLIF2D(15, 5),
            L.SumPooling2D(2),
            L.ConvLIF2D(40, 5),
            L.SumPooling2D(2),
            L.SpatialFlatten(),
            L.LIF(300),
            L.LI(10),
        ]
    )
    assert model.output_shape == (None, 5, 10)
    assert model.layers[3].output.shape[1:] == (5, 8, 8, 40)
    assert model.count_params() == 15 * 25 + 40 * 15 * 25 + 640 * 300 + 300 * 10
    model.compile("adam", ks.losses.MaxMembraneCrossEntropy())
    loss = model.train_on_batch(rng.uniform(0, 4, (4, 28, 28, 1)), np.arange(4))
    assert np.isfinite(loss)


def test_conv_cell_reports_output_geometry():
    cell = conv_cells.ConvLIFCell(4, rank=2, kernel_size=3, strides=2, padding="same")
    assert cell.output_map_shape((9, 8, 2)) == (5, 4, 4)
    assert conv_cells.conv_output_length(9, 3, 1, 2, "valid") == 5


@pytest.mark.parametrize(
    "density, expected", [(0.02, "conv_input/events"), (0.6, "conv_input/dense")]
)
def test_conv_layer_picks_the_event_kernel_by_input_density(rng, density, expected):
    """In a training call the conv input takes the C++ event kernel on sparse spike maps (and
    tf.nn.convolution on dense ones); both give the dense path's spikes and gradients."""
    x = (rng.uniform(size=(4, 5, 12, 12, 16)) < density).astype("float32")
    results = []
    for use in (True, False):
        layer = ks.layers.ConvLIF2D(
            8,
            3,
            use_custom_ops=use,
            kernel_initializer=keras.initializers.RandomNormal(0.0, 0.4, seed=4),
        )
        with ks.ops.count_kernel_calls() as calls, tf.GradientTape() as tape:
            out = layer(x, training=True)
            loss = tf.reduce_sum(out * tf.range(1.0, 9.0))
        grad = tape.gradient(loss, layer.trainable_weights)[0]
        results.append((out.numpy(), grad.numpy()))
        if use:
            assert calls[expected] == 1 and sum(calls.values()) >= 2, dict(calls)
        else:
            assert dict(calls) == {"conv_input/dense": 1}  # pure TF: no kernel of any kind
    assert 0 < results[0][0].mean() < 1
    np.testing.assert_array_equal(results[0][0], results[1][0])
    # float32 sums in another order (event scatter vs oneDNN): relative ~1e-6 of the largest
    np.testing.assert_allclose(results[0][1], results[1][1], rtol=1e-4, atol=1e-4)


def test_held_static_input_is_convolved_once_with_the_same_numbers(rng, monkeypatch):
    """RepeatSteps -> ConvLIF2D convolves each image once and repeats the current over the
    steps; the outputs and gradients equal those of the same repeated tensor given directly
    (float64: the only difference is the order of the weight gradient's sum over steps)."""
    shapes = []
    conv_input = ks.ops.conv_input

    def spy(x, *args, **kwargs):
        shapes.append(tuple(x.shape))
        return conv_input(x, *args, **kwargs)

    monkeypatch.setattr(ks.ops, "conv_input", spy)
    repeat = L.RepeatSteps(4, dtype="float64")
    layer = L.ConvLIF2D(
        3,
        3,
        use_bias=True,
        kernel_initializer=keras.initializers.RandomNormal(0.1, 0.3, seed=8),
        dtype="float64",
    )
    x = tf.constant(rng.uniform(0, 2, (5, 8, 8, 2)))
    weights = tf.constant(rng.normal(size=(5, 4, 6, 6, 3)))
    results = []
    for held in (True, False):
        shapes.clear()
        with tf.GradientTape() as tape:
            tape.watch(x)
            repeated = repeat(x) if held else tf.tile(x[:, None], [1, 4, 1, 1, 1])
            out = layer(repeated, training=True)
            loss = tf.reduce_sum(out * weights) + tf.reduce_sum(layer.cell.kernel**2)
        grads = tape.gradient(loss, [*layer.trainable_weights, x])
        results.append([out.numpy()] + [g.numpy() for g in grads])
        assert shapes == ([(5, 8, 8, 2)] if held else [(20, 8, 8, 2)])
    assert 0 < results[0][0].mean() < 1
    for held, plain in zip(*results):
        np.testing.assert_allclose(held, plain, rtol=1e-12, atol=1e-12)
    backwards = L.ConvLIF2D(3, 3, go_backwards=True, dtype="float64")
    shapes.clear()
    backwards(repeat(x))  # reversed in time: no shortcut, still correct
    assert shapes == [(20, 8, 8, 2)]


def test_keras_masking_in_front_of_conv_layers_masks_whole_steps(rng):
    """keras.layers.Masking reduces only the channel axis ([batch, time, H, W] mask): the
    conv layers, pooling and SpatialFlatten take a step as masked when all its entries are."""
    x = (rng.uniform(size=(2, 5, 6, 6, 2)) < 0.6).astype("float32") + 0.5
    x[1, 3:] = 0.0  # sample 1: steps 3, 4 are padding
    init = keras.initializers.RandomNormal(0.3, 0.2, seed=1)
    conv = L.ConvLIF2D(3, 3, kernel_initializer=init)
    readout = L.LI(2, kernel_initializer=keras.initializers.RandomNormal(0.0, 1.0, seed=2))
    model = keras.Sequential(
        [
            keras.Input((5, 6, 6, 2)),
            keras.layers.Masking(0.0),
            conv,
            L.SumPooling2D(2),
            L.SpatialFlatten(),
            readout,
        ]
    )
    got = model(x).numpy()
    mask = np.array([[True] * 5, [True, True, True, False, False]])
    spikes = conv(x, mask=mask)
    pooled = L.SpatialFlatten()(L.SumPooling2D(2)(spikes))
    want = readout(pooled, mask=mask).numpy()
    np.testing.assert_array_equal(got, want)
    assert not got[1, 3:].any() and got[1, :3].any()
    assert model.layers[3].compute_mask(None, tf.ones((2, 5, 4, 4), bool)).shape == (2, 5)
