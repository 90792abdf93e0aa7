"""Export of spiking conv networks (ConvLIF/ConvCubaLIF/ConvLI, spike-map pooling,
SpatialFlatten, RepeatSteps): TFLite float and int8 (sequence and streaming) in LiteRT and
TFLite Micro, the Edge TPU report, SavedModel signatures, and NIR both ways.

Tolerances. Float TFLite and SavedModel against Keras: 1e-5 (float32 sums of the conv and
the dense products in another order than the layers' conv call and scans; membranes of size
~10, so a few ulps; measured 0.0 for the 2-D model and 2.4e-7 for the 1-D one). Spikes are
compared exactly through the outputs: a flipped spike would move a readout by a weight (~0.1
to 1), far outside 1e-5. Int8: decisions (argmax over classes of the readout's maximum over
time) against Keras on held-out digits, on a stated fraction (int8 rounding flips spikes near
the threshold, and a flipped spike carries on; see tests/_int8_bounds.py for why a per-value
bound is not derived here). NIR round trip: bit for bit.
"""

import warnings

import keras
import nir
import numpy as np
import pytest
import tensorflow as tf

import keras_spiking as ks
from keras_spiking.export import (
    ExportError,
    edgetpu_report,
    from_nir,
    streaming_states,
    tflite_ops,
    tflm_check,
    to_nir,
    to_saved_model,
    to_tflite,
)

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from ai_edge_litert.interpreter import Interpreter

L = ks.layers
FLOAT_TOL = 1e-5
FORBIDDEN = {"WHILE", "SHAPE", "FILL", "GATHER", "GATHER_ND", "CALL_ONCE", "IF"}
STEPS = 4
# int8 decisions that must equal Keras' on the held-out digits. Measured on this model (AMD
# EPYC, 2 cores): LiteRT sequence 0.88 and streaming 0.89 of 100 images, TFLite Micro
# sequence and streaming 0.85 of 40. The trained net is small (20 hidden LIF, 4 steps, ~72%
# accurate) and its readout margins are small, so a spike flipped by int8 rounding near a
# threshold moves many decisions; the bar leaves 0.10 for other CPUs' kernels (TOOLCHAIN.md:
# runtimes differ by an int8 step here and there, and a flipped spike carries on).
MIN_INT8_AGREEMENT = 0.75


def _assign(model, rng, mean=0.3, std=0.8):
    for weight in model.weights:
        if len(weight.shape) > 1 or "bias" in weight.path:
            weight.assign(rng.normal(mean, std, weight.shape).astype("float32"))
    return model


# small conv models over every option the exporters translate
MODELS = {
    # the network (2-D, RepeatSteps, sum and average pooling, flatten, dense)
    "conv2d": lambda: keras.Sequential(
        [
            keras.Input((12, 12, 1)),
            L.RepeatSteps(STEPS),
            L.ConvLIF2D(4, 3, use_bias=True, tau_mem=[0.01, 0.02, 0.03, 0.04], name="c1"),
            L.SumPooling2D(2),
            L.ConvLIF2D(6, 3, padding="same", reset="zero", name="c2"),
            L.AveragePooling2D(2),
            L.SpatialFlatten(),
            L.LIF(20, name="hidden"),
            L.LI(3, name="readout"),
        ]
    ),
    # 1-D: same padding, dilation, 1-D pooling (written to NIR as a diagonal Conv1d)
    "conv1d": lambda: keras.Sequential(
        [
            keras.Input((6, 16, 2)),
            L.ConvLIF1D(4, 3, padding="same", name="c1"),
            L.SumPooling1D(2),
            L.ConvLIF1D(3, 2, dilation_rate=2, name="c2"),
            L.AveragePooling1D(2, padding="same"),
            L.SpatialFlatten(),
            L.LI(3, name="readout"),
        ]
    ),
    # CubaLIF conv with strides and bias, symmetric 'same' average pooling, a conv readout
    "cuba_li_maps": lambda: keras.Sequential(
        [
            keras.Input((5, 14, 14, 2)),
            L.ConvCubaLIF2D(
                4, 3, strides=2, reset="zero", use_bias=True, tau_syn=[2e-3, 3e-3, 4e-3, 5e-3]
            ),
            L.AveragePooling2D(3, strides=1, padding="same"),
            L.ConvLI2D(3, 2, dilation_rate=2, name="readout"),
        ]
    ),
    # TFLite only: groups (split into per-group convs) and max pooling
    "groups_maxpool": lambda: keras.Sequential(
        [
            keras.Input((5, 10, 10, 2)),
            L.ConvLIF2D(4, 3, groups=2, name="c1"),
            L.MaxPooling2D(3, strides=2, padding="same"),
            L.ConvCubaLIF2D(4, 1, groups=4, reset="zero", name="c2"),
            L.SpatialFlatten(),
            L.LI(2, name="readout"),
        ]
    ),
}
NIR_MODELS = ("conv2d", "conv1d", "cuba_li_maps")


def _input(name, model, rng, batch):
    shape = tuple(model.inputs[0].shape[1:])
    if name == "conv2d":
        return rng.random((batch, *shape)).astype("float32")
    return (rng.random((batch, *shape)) < 0.4).astype("float32")


def _litert(model_bytes, inputs):
    interpreter = Interpreter(model_content=model_bytes)
    interpreter.allocate_tensors()
    for detail, value in zip(interpreter.get_input_details(), inputs):
        interpreter.set_tensor(detail["index"], np.asarray(value, detail["dtype"]))
    interpreter.invoke()
    return [interpreter.get_tensor(d["index"]) for d in interpreter.get_output_details()]


def _check_ops(model_bytes):
    ops = tflite_ops(model_bytes)
    assert not any(op.startswith("CUSTOM") for op in ops), ops
    assert not FORBIDDEN & set(ops), ops
    return ops


@pytest.mark.parametrize("name", MODELS)
def test_float_sequence_and_streaming_equal_keras(name, rng):
    model = _assign(MODELS[name](), rng)
    x = _input(name, model, rng, 4)
    want = model.predict(x, verbose=0)
    first = next(la for la in model.layers if isinstance(la, ks.conv_layers.ConvNeurons))
    hidden = keras.Model(model.inputs, first.output).predict(x, verbose=0)
    assert 0.02 < hidden.mean() < 0.9  # the first conv layer spikes, but not always

    sequence = to_tflite(model, batch_size=2)
    ops = _check_ops(sequence)
    assert "CONV_2D" in ops
    if name == "groups_maxpool":
        assert {"SPLIT", "CONCATENATION", "MAX_POOL_2D"} <= set(ops)
    got = np.concatenate([_litert(sequence, [x[i : i + 2]])[0] for i in (0, 2)])
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=FLOAT_TOL, atol=FLOAT_TOL)

    streaming = to_tflite(model, mode="streaming", batch_size=4)
    _check_ops(streaming)
    inputs = Interpreter(model_content=streaming).get_input_details()
    # conv states are flat [batch, neurons] (row-major over [*spatial_out, filters])
    states_named = streaming_states(model)
    assert [tuple(d["shape"]) for d in inputs[1:]] == [(4, n) for _, n in states_named]
    states = [np.zeros(d["shape"], np.float32) for d in inputs[1:]]
    outputs = []
    steps = want.shape[1]
    for t in range(steps):
        y, *states = _litert(streaming, [x if name == "conv2d" else x[:, t], *states])
        outputs.append(y)
    np.testing.assert_allclose(np.stack(outputs, 1), want, rtol=FLOAT_TOL, atol=FLOAT_TOL)


def test_streaming_state_names_and_layout(rng):
    model = _assign(MODELS["conv2d"](), rng)
    assert streaming_states(model) == [
        ("c1/v", 10 * 10 * 4),
        ("c2/v", 5 * 5 * 6),
        ("hidden/v", 20),
        ("readout/v", 3),
    ]
    # the flat state is the layer's own state, row-major: reshaped it is the returned map
    x = rng.random((2, 12, 12, 1)).astype("float32")
    layer = model.layers[1]
    repeated = np.repeat(x[:, None], STEPS, 1)
    probe = L.ConvLIF2D(4, 3, use_bias=True, tau_mem=[0.01, 0.02, 0.03, 0.04], return_state=True)
    probe(repeated)
    probe.set_weights(layer.get_weights())
    _, v_map, _ = probe(repeated)  # spikes, v, s
    streaming = to_tflite(model, mode="streaming", batch_size=2)
    inputs = Interpreter(model_content=streaming).get_input_details()
    states = [np.zeros(d["shape"], np.float32) for d in inputs[1:]]
    for _ in range(STEPS):
        _, *states = _litert(streaming, [x, *states])
    np.testing.assert_allclose(
        states[0].reshape(2, 10, 10, 4), keras.ops.convert_to_numpy(v_map), atol=FLOAT_TOL
    )


# --------------------------------------------------------------------------------------------
# int8 on a trained digits model: LiteRT and TFLite Micro
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def digits_conv():
    """The issue's network trained 4 epochs on the 8x8 digits padded to 12x12 (~72% test)."""
    keras.utils.set_random_seed(0)
    pad = lambda a: np.pad(a, ((0, 0), (2, 2), (2, 2)))[..., None]  # noqa: E731
    x_train, y_train = ks.datasets.digits(split="train")
    x_test, _ = ks.datasets.digits(split="test")
    x_train, x_test = pad(x_train), pad(x_test)
    model = keras.Sequential(
        [
            keras.Input((12, 12, 1)),
            L.RepeatSteps(STEPS),
            L.ConvLIF2D(4, 3, use_bias=True, threshold=0.5, name="c1"),
            L.SumPooling2D(2),
            L.ConvLIF2D(6, 3, padding="same", name="c2"),
            L.AveragePooling2D(2),
            L.SpatialFlatten(),
            L.LIF(20, name="hidden"),
            L.LI(10, name="readout"),
        ]
    )
    model.compile(keras.optimizers.Adam(1e-2), ks.losses.MaxMembraneCrossEntropy())
    model.fit(x_train, y_train, epochs=4, batch_size=64, verbose=0)
    x = x_test[:100]
    calibration = x_train[:200]
    exports = {
        mode: to_tflite(model, mode=mode, quantize="int8", representative_data=calibration)
        for mode in ("sequence", "streaming")
    }
    return model, x, model.predict(x, verbose=0), exports


def _decisions(readout):
    return readout.max(axis=1).argmax(axis=-1)


def _quantize(x, detail):
    scale, zero = detail["quantization"]
    return np.clip(np.round(np.asarray(x) / scale) + zero, -128, 127).astype(np.int8)


def _dequantize(q, params):
    scale, zero = params
    return (np.asarray(q, np.float32) - zero) * scale


def test_int8_sequence_and_streaming_decisions_follow_keras(digits_conv):
    model, x, want, exports = digits_conv
    assert len(set(_decisions(want))) >= 5  # a trained model, not one constant answer
    sequence = exports["sequence"]
    ops = _check_ops(sequence)
    assert {"CONV_2D", "AVERAGE_POOL_2D", "GREATER", "SELECT_V2"} <= set(ops)
    interpreter = Interpreter(model_content=sequence)
    (detail,), (out,) = interpreter.get_input_details(), interpreter.get_output_details()
    assert detail["dtype"] == np.int8 and out["dtype"] == np.int8
    got = np.concatenate(
        [
            _dequantize(_litert(sequence, [_quantize(row[None], detail)])[0], out["quantization"])
            for row in x
        ]
    )
    assert got.shape == want.shape
    agreement = np.mean(_decisions(got) == _decisions(want))
    print(f"\nint8 decisions equal to Keras: {agreement:.3f}")
    assert agreement >= MIN_INT8_AGREEMENT, agreement

    # streaming: the raw int8 new states fed back unchanged (their scales are tied)
    streaming = exports["streaming"]
    interpreter = Interpreter(model_content=streaming)
    interpreter.allocate_tensors()
    inputs, outputs = interpreter.get_input_details(), interpreter.get_output_details()
    for d_in, d_out in zip(inputs[1:], outputs[1:]):
        assert d_in["quantization"] == d_out["quantization"]
    rows = []
    for row in x:
        states = [_quantize(np.zeros(d["shape"]), d) for d in inputs[1:]]
        steps = []
        for _ in range(STEPS):
            interpreter.set_tensor(inputs[0]["index"], _quantize(row[None], inputs[0]))
            for d, state in zip(inputs[1:], states):
                interpreter.set_tensor(d["index"], state)
            interpreter.invoke()
            raw = [interpreter.get_tensor(d["index"]) for d in outputs]
            steps.append(_dequantize(raw[0], outputs[0]["quantization"])[0])
            states = raw[1:]
        rows.append(np.stack(steps))
    agreement = np.mean(_decisions(np.stack(rows)) == _decisions(want))
    print(f"\nint8 decisions equal to Keras: {agreement:.3f}")
    assert agreement >= MIN_INT8_AGREEMENT, agreement


TFLM_IMAGES = 40


def test_tflite_micro_runs_int8_conv_exports_and_reports_size_and_arena(digits_conv):
    model, x, want, exports = digits_conv
    x, want = x[:TFLM_IMAGES], want[:TFLM_IMAGES]
    sequence = exports["sequence"]
    (detail,) = Interpreter(model_content=sequence).get_input_details()
    report = tflm_check(sequence, inputs=[_quantize(x, detail)[:, None]])
    assert report["ok"], report["error"]
    assert report["model_bytes"] == len(sequence) < 40_000
    assert 0 < report["arena_bytes"] <= 10 * report["model_bytes"]
    assert report["op_counts"]["CONV_2D"] >= STEPS + 1  # the first conv's input is constant
    got = _dequantize(report["outputs"][0][:, 0], report["output_quantization"][0])
    agreement = np.mean(_decisions(got) == _decisions(want))
    print(f"\nint8 decisions equal to Keras: {agreement:.3f}")
    assert agreement >= MIN_INT8_AGREEMENT, agreement

    streaming = tflm_check(
        exports["streaming"], inputs=np.repeat(x[:, None, None], STEPS, 1), streaming=True
    )
    assert streaming["ok"], streaming["error"]
    assert streaming["arena_bytes"] < report["arena_bytes"]
    got = _dequantize(streaming["outputs"][0][:, :, 0], streaming["output_quantization"][0])
    agreement = np.mean(_decisions(got) == _decisions(want))
    print(f"\nint8 decisions equal to Keras: {agreement:.3f}")
    assert agreement >= MIN_INT8_AGREEMENT, agreement
    print(
        f"\nTFLM conv model: sequence {report['model_bytes']} B flatbuffer, arena "
        f"{report['arena_bytes']} B; streaming {streaming['model_bytes']} B, arena "
        f"{streaming['arena_bytes']} B"
    )


def test_edgetpu_report_maps_the_ramp_conv_graph(digits_conv):
    model, x, _, exports = digits_conv
    ramp = to_tflite(
        model, mode="streaming", quantize="int8", representative_data=x[:50], edgetpu=True
    )
    report = edgetpu_report(ramp)
    assert report.all_supported, str(report)
    assert set(tflite_ops(ramp)) <= {
        "CONV_2D",
        "AVERAGE_POOL_2D",
        "FULLY_CONNECTED",
        "RESHAPE",
        "MUL",
        "ADD",
        "SUB",
        "MINIMUM",
    }
    # the select form: GREATER / SELECT_V2 are not Edge TPU ops; the convs before are mapped
    report = edgetpu_report(exports["streaming"])
    assert {op.name for op in report.unsupported} == {"GREATER", "SELECT_V2"}
    assert any(op.name == "CONV_2D" and op.on_tpu for op in report.ops)
    assert "CONV_2D" in str(report)


# --------------------------------------------------------------------------------------------
# SavedModel
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["conv2d", "conv1d"])
def test_saved_model_signatures_equal_keras(name, rng, tmp_path):
    model = _assign(MODELS[name](), rng)
    x = _input(name, model, rng, 3)
    want = model.predict(x, verbose=0)
    loaded = tf.saved_model.load(to_saved_model(model, tmp_path / name))
    sequence, step = loaded.signatures["serving_default"], loaded.signatures["step"]
    got = sequence(inputs=tf.constant(x))["outputs"].numpy()
    np.testing.assert_allclose(got, want, rtol=FLOAT_TOL, atol=FLOAT_TOL)
    specs = step.structured_input_signature[1]
    assert specs["x"].shape.as_list() == [None, *x.shape[1 if name == "conv2d" else 2 :]]
    states = {key: tf.zeros((3, spec.shape[1])) for key, spec in specs.items() if key != "x"}
    assert sorted(states) == sorted(n.replace("/", "_") for n, _ in streaming_states(model))
    outputs = []
    for t in range(want.shape[1]):
        result = step(x=tf.constant(x if name == "conv2d" else x[:, t]), **states)
        states = {key: result[key] for key in states}
        outputs.append(result["output"].numpy())
    np.testing.assert_allclose(np.stack(outputs, 1), want, rtol=FLOAT_TOL, atol=FLOAT_TOL)


# --------------------------------------------------------------------------------------------
# NIR
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NIR_MODELS)
def test_nir_round_trip_is_bit_identical(name, rng, tmp_path):
    model = _assign(MODELS[name](), rng)
    path = tmp_path / "model.nir"
    nir.write(path, to_nir(model))
    restored = from_nir(nir.read(path))
    original = [la for la in model.layers if not isinstance(la, keras.layers.InputLayer)]
    assert [type(la) for la in restored.layers] == [type(la) for la in original]
    for a, b in zip(original, restored.layers):
        weights_a, weights_b = a.get_weights(), b.get_weights()
        assert len(weights_a) == len(weights_b), a.name
        for wa, wb in zip(weights_a, weights_b):
            np.testing.assert_array_equal(wa, wb)
        options = ("kernel_size", "strides", "padding", "dilation_rate", "groups", "dt")
        if hasattr(a, "cell"):
            for option in (*options, *a.cell.time_constant_names):
                want = getattr(a.cell, option, None)
                assert want == getattr(b.cell, option, None), (a.name, option)
        # (a pooling "same" padding that pads nothing reads back as "valid": the same layer)
        for option in ("pool_size", "strides"):
            assert getattr(a, option, None) == getattr(b, option, None), (a.name, option)
    x = _input(name, model, rng, 3)
    want = keras.ops.convert_to_numpy(model(x))
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(restored(x)), want)


def test_nir_nodes_are_channels_first_with_per_neuron_parameters(rng):
    model = _assign(MODELS["conv2d"](), rng)
    graph = to_nir(model)
    assert graph.metadata["keras_spiking_repeat_steps"] == STEPS
    kinds = [type(node).__name__ for node in graph.nodes.values()]
    assert kinds == [
        "Input",
        "Conv2d",
        "NIRGraph",  # subtract reset: LI -> Threshold with the reset feedback
        "SumPool2d",
        "Conv2d",
        "LIF",
        "AvgPool2d",
        "Flatten",
        "Linear",
        "NIRGraph",
        "Linear",
        "LI",
        "Output",
    ]
    np.testing.assert_array_equal(graph.nodes["input"].input_type["input"], [1, 12, 12])
    conv = graph.nodes["c1_conv2d"]
    kernel = model.get_layer("c1").cell.kernel.numpy()  # [kh, kw, C, F]
    np.testing.assert_array_equal(conv.weight, kernel.transpose(3, 2, 0, 1))  # [F, C, kh, kw]
    lif = graph.nodes["c2_lif"]
    assert lif.tau.shape == (6, 5, 5)  # per neuron, [filters, height, width]
    subtract = graph.nodes["c1_lif"].nodes["li"]
    np.testing.assert_array_equal(subtract.tau[:, 0, 0], [0.01, 0.02, 0.03, 0.04])
    assert np.all(subtract.tau == subtract.tau[:, :1, :1])

    # the NIR conv (PyTorch semantics, channels first) computes the layer's input current
    x = rng.random((12, 12, 1)).astype("float32")
    weight, bias = conv.weight.astype("float64"), conv.bias.astype("float64")
    channels_first = x.transpose(2, 0, 1).astype("float64")
    current = np.zeros((4, 10, 10))
    for i in range(10):
        for j in range(10):
            patch = channels_first[:, i : i + 3, j : j + 3]
            current[:, i, j] = np.tensordot(weight, patch, axes=3) + bias
    ours = model.get_layer("c1").cell.input_current(x[None]).numpy()  # flat [1, H*W*F]
    np.testing.assert_allclose(current.transpose(1, 2, 0).reshape(-1), ours[0], atol=1e-5)

    # Flatten is channels first: the next weight's columns take the (c, h, w) order
    features = rng.random((2, 2, 6))  # one step of AveragePooling2D's output, ours
    nir_weight = graph.nodes["hidden_linear"].weight
    ours = features.reshape(-1) @ model.get_layer("hidden").cell.kernel.numpy()
    np.testing.assert_allclose(nir_weight @ features.transpose(2, 0, 1).reshape(-1), ours)


def test_nir_refusals_name_the_layer_and_reason():
    cases = [
        ([keras.Input((4, 8, 8, 1)), L.ConvLIF2D(2, 3), L.MaxPooling2D(2, name="mp")], "'mp'"),
        ([keras.Input((4, 8, 8, 2)), L.ConvLIF2D(2, 3, groups=2, name="g")], "'g'.*groups=2"),
        # TF pads (0, 1) here: NIR pads both sides equally
        (
            [keras.Input((4, 8, 1)), L.ConvLIF1D(2, 3, strides=2, padding="same", name="p")],
            "'p'.*same",
        ),
        (
            [keras.Input((4, 7, 7, 1)), L.ConvLIF2D(2, 1), L.SumPooling2D(2, padding="same")],
            "padding='same'",
        ),
        (
            [keras.Input((4, 8, 8, 1)), L.ConvCubaLIF2D(2, 3, name="cu")],
            "'cu'.*reset='subtract'",
        ),
    ]
    for stack, match in cases:
        with pytest.raises(ExportError, match=match):
            to_nir(keras.Sequential(stack))


def test_from_nir_reads_conv_graphs_of_other_layouts_or_refuses():
    # a conv LI whose time constant varies over positions has no keras_spiking layer
    shape = (2, 4, 4)
    conv = nir.Conv2d(
        input_shape=(6, 6),
        weight=np.ones((2, 1, 3, 3)),
        stride=1,
        padding=0,
        dilation=1,
        groups=1,
        bias=np.zeros(2),
    )
    tau = np.full(shape, 0.02)
    li = nir.LI(tau=tau, r=np.ones(shape), v_leak=np.zeros(shape))
    graph = nir.NIRGraph.from_list(nir.Input(np.array([1, 6, 6])), conv, li)
    model = from_nir(graph, dt=1e-3)
    assert isinstance(model.layers[0], L.ConvLI2D) and model.layers[0].cell.padding == "valid"
    tau = tau.copy()
    tau[0, 1, 1] = 0.03
    varying = nir.LI(tau=tau, r=np.ones(shape), v_leak=np.zeros(shape))
    graph = nir.NIRGraph.from_list(nir.Input(np.array([1, 6, 6])), conv, varying)
    with pytest.raises(ExportError, match="varies over the positions"):
        from_nir(graph, dt=1e-3)


def test_tflite_refusals_are_named(rng):
    model = keras.Sequential(
        [
            keras.Input((3, 8, 8, 1)),
            L.ConvLIF2D(2, 3),
            L.SpatialFlatten(),
            keras.layers.Dense(2, name="dense"),
        ]
    )
    with pytest.raises(ExportError, match="tflite export: layer 'dense' of type Dense"):
        to_tflite(model)
    # valid Keras (the map's height becomes "time" for the LI), but not a time series
    dropped = keras.Sequential(
        [
            keras.Input((3, 8, 8, 1)),
            L.ConvLIF2D(2, 3, return_sequences=False, name="last_step"),
            L.SpatialFlatten(),
            L.LI(2),
        ]
    )
    with pytest.raises(ExportError, match="layer 'last_step' has return_sequences=False"):
        to_tflite(dropped)
    model = _assign(MODELS["conv2d"](), rng)
    with pytest.raises(ValueError, match=r"steps of shape \(12, 12, 1\), got shape \(8, 12, 12\)"):
        to_tflite(model, quantize="int8", representative_data=np.zeros((8, 12, 12)))


def test_training_only_layers_are_skipped_by_every_exporter(rng, tmp_path):
    """Augmentation and noise layers (the identity at inference) in front of RepeatSteps, as
    examples/mnist_conv.py trains, do not block an export; the exports equal Keras."""
    model = keras.Sequential(
        [
            keras.Input((10, 10, 1)),
            keras.layers.RandomTranslation(0.1, 0.1, seed=0),
            keras.layers.GaussianNoise(0.1),
            ks.layers.RepeatSteps(3),
            ks.layers.ConvLIF2D(3, 3),
            keras.layers.Dropout(0.2),
            ks.layers.SumPooling2D(2),
            ks.layers.SpatialFlatten(),
            ks.layers.LI(2),
        ]
    )
    _assign(model, rng)
    x = rng.uniform(0, 1, (2, 10, 10, 1)).astype("float32")
    want = model.predict(x, verbose=0)
    got = _litert(to_tflite(model, batch_size=2), [x])[0]
    np.testing.assert_allclose(got, want, rtol=FLOAT_TOL, atol=FLOAT_TOL)
    loaded = tf.saved_model.load(to_saved_model(model, tmp_path / "saved"))
    served = loaded.signatures["serving_default"](inputs=tf.constant(x))["outputs"].numpy()
    np.testing.assert_allclose(served, want, rtol=FLOAT_TOL, atol=FLOAT_TOL)
    path = str(tmp_path / "m.nir")
    nir.write(path, to_nir(model))
    back = from_nir(nir.read(path))
    assert not any(isinstance(la, keras.layers.RandomTranslation) for la in back.layers)
    np.testing.assert_array_equal(back.predict(x, verbose=0), want)
