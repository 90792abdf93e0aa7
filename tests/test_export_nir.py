"""NIR export and import (keras_spiking.export.nir_graph): round trips, files, the exact
continuous-time reading of the NIR parameters, and the errors."""

import keras
import nir
import numpy as np
import pytest

import keras_spiking
from keras_spiking.export import ExportError, from_nir, to_nir

L = keras_spiking.layers
DT = 1e-3


def _strong(seed):
    """Weights large enough that sparse input spikes make the neurons fire often."""
    return keras.initializers.RandomNormal(mean=0.4, stddev=0.6, seed=seed)


def _spikes(rng, batch=4, steps=60, features=8, rate=0.3):
    return (rng.random((batch, steps, features)) < rate).astype("float32")


def _assert_same_layers(original, restored):
    """Same layer types, parameters and weights, bit for bit (lists of layers)."""
    assert [type(la) for la in original] == [type(la) for la in restored]
    for a, b in zip(original, restored):
        for name in (*a.cell.time_constant_names, "dt", "units", "use_bias"):
            assert getattr(a.cell, name) == getattr(b.cell, name), name
        if a.cell.spiking:
            for name in ("threshold", "reset", "recurrent"):
                assert getattr(a.cell, name) == getattr(b.cell, name), name
        weights_a, weights_b = a.get_weights(), b.get_weights()
        assert len(weights_a) == len(weights_b)
        for wa, wb in zip(weights_a, weights_b):
            np.testing.assert_array_equal(wa, wb)


def _assert_spiking_sometimes(spikes):
    rate = float(np.mean(spikes))
    assert 0.02 < rate < 0.9, f"test input too weak or too strong: rate {rate}"


MODELS = {
    "lif_zero": lambda: [L.LIF(7, reset="zero", kernel_initializer=_strong(1))],
    "lif_subtract": lambda: [L.LIF(7, reset="subtract", kernel_initializer=_strong(2))],
    "lif_recurrent_zero": lambda: [
        L.LIF(7, reset="zero", recurrent=True, kernel_initializer=_strong(3))
    ],
    "lif_recurrent_subtract_bias": lambda: [
        L.LIF(
            7,
            reset="subtract",
            recurrent=True,
            use_bias=True,
            bias_initializer=keras.initializers.Constant(0.05),
            kernel_initializer=_strong(4),
        )
    ],
    "per_neuron_tau_two_layers": lambda: [
        L.LIF(6, tau_mem=[5e-3, 1e-2, 2e-2, 4e-2, 8e-2, 0.16], kernel_initializer=_strong(5)),
        L.LIF(
            5,
            reset="zero",
            threshold=2.0,
            kernel_initializer=keras.initializers.RandomNormal(0.0, 0.6, seed=6),
        ),
    ],
    "cuba_lif": lambda: [
        L.CubaLIF(
            6,
            reset="zero",
            tau_syn=[2e-3, 3e-3, 4e-3, 5e-3, 6e-3, 8e-3],
            tau_mem=8e-3,
            use_bias=True,
            bias_initializer=keras.initializers.Constant(0.02),
            kernel_initializer=_strong(7),
        )
    ],
}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_round_trip_same_weights_and_spikes(name, rng):
    model = keras.Sequential([keras.Input((None, 8)), *MODELS[name]()])
    restored = from_nir(to_nir(model))
    _assert_same_layers(model.layers, restored.layers)
    x = _spikes(rng)
    expected = keras.ops.convert_to_numpy(model(x))
    _assert_spiking_sometimes(expected)
    # identical parameters and ops: the outputs are equal bit for bit, no tolerance
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(restored(x)), expected)


def test_round_trip_li_readout_with_dropout_and_bias(rng):
    model = keras.Sequential(
        [
            keras.Input((None, 8)),
            L.LIF(10, tau_mem=[1e-2 * (i + 1) for i in range(10)], kernel_initializer=_strong(8)),
            keras.layers.Dropout(0.5),
            L.LI(3, tau_mem=[5e-3, 2e-2, 5e-2], use_bias=True, bias_initializer="ones"),
        ]
    )
    graph = to_nir(model)
    assert [type(node).__name__ for node in graph.nodes.values()] == [
        "Input",
        "Linear",
        "NIRGraph",  # default reset="subtract": LI -> Threshold with the reset feedback
        "Affine",
        "LI",
        "Output",
    ]
    restored = from_nir(graph)
    assert len(restored.layers) == 2  # the dropout (identity at inference) is dropped
    _assert_same_layers([model.layers[0], model.layers[2]], restored.layers)
    x = _spikes(rng)
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(restored(x)), keras.ops.convert_to_numpy(model(x))
    )


def test_functional_chain_exports(rng):
    inputs = keras.Input((None, 8))
    hidden = L.LIF(6, reset="zero", kernel_initializer=_strong(9))(inputs)
    model = keras.Model(inputs, L.LI(2)(hidden))
    restored = from_nir(to_nir(model))
    x = _spikes(rng)
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(restored(x)), keras.ops.convert_to_numpy(model(x))
    )


def test_nir_file_round_trip(tmp_path, rng):
    model = keras.Sequential(
        [
            keras.Input((None, 8)),
            L.LIF(6, reset="subtract", recurrent=True, kernel_initializer=_strong(10)),
            L.CubaLIF(5, reset="zero", tau_syn=[2e-3, 3e-3, 4e-3, 5e-3, 6e-3]),
            L.LI(3, use_bias=True),
        ]
    )
    path = tmp_path / "model.nir"
    nir.write(path, to_nir(model))
    graph = nir.read(path)
    assert float(graph.metadata["dt"]) == DT
    restored = from_nir(graph)
    _assert_same_layers(model.layers, restored.layers)
    x = _spikes(rng)
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(restored(x)), keras.ops.convert_to_numpy(model(x))
    )


def test_graph_layout_and_parameters():
    model = keras.Sequential(
        [keras.Input((None, 4)), L.LIF(3, tau_mem=0.02, threshold=1.5, reset="zero", name="lif")]
    )
    graph = to_nir(model)
    assert graph.metadata["dt"] == DT
    weights, lif = graph.nodes["lif_linear"], graph.nodes["lif_lif"]
    np.testing.assert_array_equal(weights.weight, model.layers[0].cell.kernel.numpy().T)
    np.testing.assert_array_equal(lif.tau, [0.02] * 3)  # time constants carried unchanged
    # r = 1 / (1 - beta), beta = exp(-dt / tau): float64 rounding only
    np.testing.assert_allclose(lif.r, 1 / (1 - np.exp(-DT / 0.02)), rtol=1e-12)
    np.testing.assert_array_equal(lif.v_threshold, [1.5] * 3)
    np.testing.assert_array_equal(lif.v_reset, [0.0] * 3)
    np.testing.assert_array_equal(lif.v_leak, [0.0] * 3)


# --- the NIR parameters integrated in continuous time reproduce our discrete update ---------


def _rk4_leaky(v, tau, r, v_leak, current, dt, substeps=200):
    """Integrates ``tau dv/dt = (v_leak - v) + r I`` over ``dt`` with ``I`` held constant, by
    classical Runge-Kutta (independent of the exponential solution used in the mapping)."""
    h = dt / substeps

    def f(u):
        return ((v_leak - u) + r * current) / tau

    for _ in range(substeps):
        k1 = f(v)
        k2 = f(v + 0.5 * h * k1)
        k3 = f(v + 0.5 * h * k2)
        k4 = f(v + h * k3)
        v = v + h / 6.0 * (k1 + 2 * k2 + 2 * k3 + k4)
    return v


def _one_neuron_drive(rng, steps=50):
    spikes_in = (rng.random((steps, 2)) < 0.4).astype("float64")
    weights = np.array([0.55, 0.45])
    bias = 0.08
    return spikes_in, weights, bias


def _layer_trajectory(layer, spikes_in):
    """Membrane and spikes of our one-neuron layer, step by step through its cell."""
    cell = layer.cell
    v = np.zeros((1, 1), "float32")
    s = np.zeros((1, 1), "float32")
    vs, ss = [], []
    for t in range(spikes_in.shape[0]):
        out, (v, s) = cell(spikes_in[None, t].astype("float32"), [v, s])
        vs.append(float(keras.ops.convert_to_numpy(v)[0, 0]))
        ss.append(float(keras.ops.convert_to_numpy(out)[0, 0]))
    return np.array(vs), np.array(ss)


@pytest.mark.parametrize("reset", ["zero", "subtract"])
def test_nir_lif_parameters_integrated_exactly_match_layer(reset, rng):
    spikes_in, weights, bias = _one_neuron_drive(rng)
    layer = L.LIF(
        1,
        tau_mem=15e-3,
        reset=reset,
        name="lif",
        use_bias=True,
        kernel_initializer=keras.initializers.Constant(weights[:, None]),
        bias_initializer=keras.initializers.Constant(bias),
    )
    model = keras.Sequential([keras.Input((None, 2)), layer])
    graph = to_nir(model)
    affine = graph.nodes["lif_affine"]
    w, b = affine.weight[0].astype("float64"), float(affine.bias[0])
    dt = float(graph.metadata["dt"])

    # the NIR neuron, read straight from the graph's nodes
    v, spikes, trajectory, margins = 0.0, [], [], []
    if reset == "zero":
        lif = graph.nodes["lif_lif"]
        tau, r, v_leak = lif.tau[0], lif.r[0], lif.v_leak[0]
        theta, v_reset = lif.v_threshold[0], lif.v_reset[0]
        for x in spikes_in:
            v = _rk4_leaky(v, tau, r, v_leak, w @ x + b, dt)
            margins.append(abs(v - theta))
            z = float(v > theta)
            v = v_reset if z else v
            spikes.append(z)
            trajectory.append(v)
    else:
        block = graph.nodes["lif_lif"]
        li, thr, fb = block.nodes["li"], block.nodes["threshold"], block.nodes["reset"]
        tau, r, v_leak = li.tau[0], li.r[0], li.v_leak[0]
        theta, feedback = thr.threshold[0], fb.scale[0]
        z_previous = 0.0
        for x in spikes_in:
            # the cycle's edge delivers the previous step's spike, held over this step
            v = _rk4_leaky(v, tau, r, v_leak, w @ x + b + feedback * z_previous, dt)
            margins.append(abs(v - theta))
            z_previous = float(v > theta)
            spikes.append(z_previous)
            # our layer reports the membrane after its reset; the LI node holds u
            trajectory.append(v - theta * z_previous)

    ours_v, ours_s = _layer_trajectory(layer, spikes_in)
    # no step sits within float32 reach of the threshold, so the spike decisions are robust
    assert min(margins) > 1e-4
    assert 3 <= sum(spikes) < len(spikes)
    np.testing.assert_array_equal(ours_s, spikes)
    # float32 layer vs float64 RK4 (error ~1e-12): float32 rounding of O(1) values over 50
    # steps stays well below 1e-5
    np.testing.assert_allclose(ours_v, trajectory, atol=1e-5, rtol=0)


def test_nir_li_parameters_integrated_exactly_match_layer(rng):
    spikes_in, weights, bias = _one_neuron_drive(rng)
    layer = L.LI(
        1,
        tau_mem=30e-3,
        name="li",
        use_bias=True,
        kernel_initializer=keras.initializers.Constant(weights[:, None]),
        bias_initializer=keras.initializers.Constant(bias),
    )
    model = keras.Sequential([keras.Input((None, 2)), layer])
    graph = to_nir(model)
    affine, li = graph.nodes["li_affine"], graph.nodes["li_li"]
    v, trajectory = 0.0, []
    for x in spikes_in:
        current = affine.weight[0].astype("float64") @ x + float(affine.bias[0])
        v = _rk4_leaky(v, li.tau[0], li.r[0], li.v_leak[0], current, DT)
        trajectory.append(v)
    ours = keras.ops.convert_to_numpy(model(spikes_in[None].astype("float32")))[0, :, 0]
    # float32 layer vs float64 RK4: float32 rounding only
    np.testing.assert_allclose(ours, trajectory, atol=1e-5, rtol=0)


# --- graphs from other tools ----------------------------------------------------------------


def test_foreign_graph_gains_leak_and_thresholds_are_folded(rng):
    """An snnTorch-style graph (Euler resistance r = tau/dt, per-neuron thresholds, a leak
    potential) imports as weights that reproduce the NIR equations read with zero-order hold."""
    n_in, n = 5, 4
    weight = rng.normal(0.5, 0.5, (n, n_in))
    bias = rng.normal(0.0, 0.05, n)
    tau = np.array([5e-3, 1e-2, 2e-2, 4e-2])
    theta = np.array([0.5, 1.0, 1.5, 2.0])
    v_leak = np.array([0.0, 0.1, -0.1, 0.2])
    lif = nir.LIF(tau=tau, r=tau / DT, v_leak=v_leak, v_threshold=theta, v_reset=np.zeros(n))
    graph = nir.NIRGraph.from_list(nir.Affine(weight=weight, bias=bias), lif)
    model = from_nir(graph, dt=DT)
    assert model.layers[0].cell.threshold == 1.0

    x = _spikes(rng, batch=1, steps=80, features=n_in)[0].astype("float64")
    beta = np.exp(-DT / tau)
    v, expected, margins = np.zeros(n), [], []
    for xt in x:
        v = beta * v + (1 - beta) * (v_leak + (tau / DT) * (weight @ xt + bias))
        margins.append(np.min(np.abs(v - theta)))
        z = (v > theta).astype("float64")
        v = np.where(z > 0, 0.0, v)
        expected.append(z)
    ours = keras.ops.convert_to_numpy(model(x[None].astype("float32")))[0]
    assert min(margins) > 1e-4  # no decision within float32 rounding of the threshold
    _assert_spiking_sometimes(ours)
    np.testing.assert_array_equal(ours, np.array(expected))


def test_from_nir_dt_argument_overrides_metadata():
    model = keras.Sequential([keras.Input((None, 3)), L.LI(2, tau_mem=0.02)])
    graph = to_nir(model)
    restored = from_nir(graph, dt=2e-3)
    assert restored.layers[0].cell.dt == 2e-3
    assert restored.layers[0].cell.tau_mem == 0.02  # the continuous time constant is kept
    # re-discretised: the input gain r (1 - beta(2 ms)) with r = 1 / (1 - beta(1 ms))
    gain = -np.expm1(-2e-3 / 0.02) / -np.expm1(-1e-3 / 0.02)
    np.testing.assert_allclose(
        restored.layers[0].cell.kernel.numpy(),
        model.layers[0].cell.kernel.numpy() * gain,
        rtol=1e-6,  # float32 storage of the kernel
    )


# --- errors -----------------------------------------------------------------------------------


def test_src_layer_raises_naming_layer_and_target():
    model = keras.Sequential([keras.Input((None, 4)), L.SRC(3, name="my_src")])
    with pytest.raises(ExportError, match=r"nir.*'my_src'.*SRC"):
        to_nir(model)


def test_unsupported_keras_layer_raises_naming_layer_and_target():
    model = keras.Sequential(
        [keras.Input((10, 4)), keras.layers.Conv1D(3, 2, name="conv"), L.LI(2)]
    )
    with pytest.raises(ExportError, match=r"nir.*'conv'.*Conv1D"):
        to_nir(model)


def test_cuba_lif_subtract_and_recurrent_raise():
    model = keras.Sequential([keras.Input((None, 4)), L.CubaLIF(3, name="cuba")])
    with pytest.raises(ExportError, match=r"nir.*'cuba'.*reset='subtract'"):
        to_nir(model)
    model = keras.Sequential(
        [keras.Input((None, 4)), L.CubaLIF(3, reset="zero", recurrent=True, name="cuba_rec")]
    )
    with pytest.raises(ExportError, match=r"nir.*'cuba_rec'.*recurrent"):
        to_nir(model)


def test_last_step_only_raises():
    model = keras.Sequential(
        [keras.Input((None, 4)), L.LI(2, return_sequences=False, name="readout")]
    )
    with pytest.raises(ExportError, match=r"nir.*'readout'.*return_sequences"):
        to_nir(model)


def test_branching_functional_model_raises():
    inputs = keras.Input((None, 4))
    a = L.LIF(3, name="a")(inputs)
    b = L.LIF(3, name="b")(inputs)
    model = keras.Model(inputs, keras.layers.Add()([a, b]))
    with pytest.raises(ExportError, match="chain"):
        to_nir(model)


def test_to_nir_dt_mismatch_raises():
    model = keras.Sequential([keras.Input((None, 4)), L.LIF(3)])
    with pytest.raises(ValueError, match="`dt`"):
        to_nir(model, dt=2e-3)


def test_from_nir_without_dt_raises_naming_dt():
    graph = nir.NIRGraph.from_list(
        nir.Linear(weight=np.ones((2, 3))), nir.LI(tau=np.ones(2), r=np.ones(2), v_leak=np.zeros(2))
    )
    with pytest.raises(ValueError, match="`dt`"):
        from_nir(graph)
    assert from_nir(graph, dt=DT).layers[0].cell.dt == DT


def test_from_nir_unknown_node_and_branch_raise():
    weights = nir.Linear(weight=np.ones((2, 3)))
    neuron = nir.IF(r=np.ones(2), v_threshold=np.ones(2))
    with pytest.raises(ExportError, match=r"'if'.*IF"):
        from_nir(nir.NIRGraph.from_list(weights, neuron), dt=DT)

    li = nir.LI(tau=np.ones(2), r=np.ones(2), v_leak=np.zeros(2))
    branched = nir.NIRGraph(
        nodes={
            "input": nir.Input(np.array([3])),
            "w": nir.Linear(weight=np.ones((2, 3))),
            "li": li,
            "w2": nir.Linear(weight=np.ones((2, 3))),
            "output": nir.Output(np.array([2])),
        },
        edges=[("input", "w"), ("input", "w2"), ("w", "li"), ("w2", "li"), ("li", "output")],
        metadata={"dt": DT},
    )
    with pytest.raises(ExportError, match="not a chain"):
        from_nir(branched)


def test_from_nir_inconsistent_shapes_raise():
    graph = nir.NIRGraph(
        nodes={
            "input": nir.Input(np.array([4])),  # the weight expects 3 inputs
            "w": nir.Linear(weight=np.ones((2, 3))),
            "li": nir.LI(tau=np.ones(2), r=np.ones(2), v_leak=np.zeros(2)),
            "output": nir.Output(np.array([2])),
        },
        edges=[("input", "w"), ("w", "li"), ("li", "output")],
        metadata={"dt": DT},
        type_check=False,
    )
    with pytest.raises(ExportError, match=r"'w'.*shape"):
        from_nir(graph)


def test_from_nir_nonzero_reset_potential_raises():
    lif = nir.LIF(
        tau=np.ones(2),
        r=np.ones(2),
        v_leak=np.zeros(2),
        v_threshold=np.ones(2),
        v_reset=np.full(2, 0.1),
    )
    graph = nir.NIRGraph.from_list(nir.Linear(weight=np.ones((2, 3))), lif)
    with pytest.raises(ExportError, match="v_reset"):
        from_nir(graph, dt=DT)
