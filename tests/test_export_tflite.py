"""TFLite, TFLite Micro and Edge TPU export (export/tflite.py, tflm.py, edgetpu.py).

Three runtimes run the exported flatbuffers: LiteRT (``ai_edge_litert``, in this process),
tflite-runtime 2.14 (in a child process that imports only NumPy and ``tflite_runtime``: in
the same process as TF 2.21 it fails, see TOOLCHAIN.md) and TFLite Micro (through
``tflm_check``, which runs it in child processes).
"""

import os
import subprocess
import sys
import textwrap
import warnings

import keras
import numpy as np
import pytest

import keras_spiking as ks
from keras_spiking import layers
from keras_spiking.export import ExportError, edgetpu_report, tflite_ops, tflm_check, to_tflite

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from ai_edge_litert.interpreter import Interpreter

# operators an exported spiking graph must never contain (loops, dynamic shapes, TF fallback)
FORBIDDEN = {"WHILE", "SHAPE", "FILL", "GATHER", "GATHER_ND", "CALL_ONCE", "IF"}


def run_litert(model_bytes, inputs):
    """Runs one invoke in LiteRT; ``inputs`` in the model's input order, raw dtypes."""
    interpreter = Interpreter(model_content=model_bytes)
    interpreter.allocate_tensors()
    for detail, value in zip(interpreter.get_input_details(), inputs):
        interpreter.set_tensor(detail["index"], np.asarray(value, detail["dtype"]))
    interpreter.invoke()
    return [interpreter.get_tensor(d["index"]) for d in interpreter.get_output_details()]


def details(model_bytes):
    interpreter = Interpreter(model_content=model_bytes)
    return interpreter.get_input_details(), interpreter.get_output_details()


def quantize(x, detail):
    scale, zero = detail["quantization"]
    return np.clip(np.round(np.asarray(x) / scale) + zero, -128, 127).astype(np.int8)


def dequantize(q, detail):
    scale, zero = detail["quantization"]
    return (np.asarray(q, np.float32) - zero) * scale


def check_ops(model_bytes, *, int8):
    """Operator and tensor-type checks that every exported model must pass."""
    ops = tflite_ops(model_bytes)
    assert ops, "no operators"
    assert not any(op.startswith("CUSTOM") for op in ops), ops  # no Flex / SELECT_TF ops
    assert not FORBIDDEN & set(ops), ops
    if int8:
        interpreter = Interpreter(model_content=model_bytes)
        for tensor in interpreter.get_tensor_details():
            dtype = np.dtype(tensor["dtype"])
            if dtype == np.int8:
                continue
            # stated exceptions: GREATER's bool output (consumed by SELECT_V2), and int32
            # constants (biases, STRIDED_SLICE begin/end/strides)
            assert dtype in (np.bool_, np.int32), (tensor["name"], dtype)
            if dtype == np.bool_:
                assert "GREATER" in ops
        for detail in interpreter.get_input_details() + interpreter.get_output_details():
            assert detail["dtype"] == np.int8, detail["name"]
    return ops


# --------------------------------------------------------------------------------------------
# float export: exact against Keras
# --------------------------------------------------------------------------------------------

# float32 sums in another order than the layers' scans; spikes compare exactly (no membrane
# of these seeded inputs lies within 1e-5 of a threshold)
FLOAT_TOL = 1e-5

FIRST_LAYERS = {
    "lif_zero_reset_bias": lambda: layers.LIF(12, reset="zero", use_bias=True, name="lif"),
    "lif_recurrent": lambda: layers.LIF(12, recurrent=True, name="lif"),
    "cuba_recurrent": lambda: layers.CubaLIF(12, recurrent=True, threshold=0.7, name="cuba"),
    "src": lambda: layers.SRC(12, name="src"),  # smooth ops only (tanh, sigmoid, ReLU)
}


def random_model(first, rng, steps=10, features=6):
    model = keras.Sequential(
        [keras.Input((steps, features)), first, keras.layers.Dropout(0.1), layers.LI(3)]
    )
    for weight in model.weights:
        if len(weight.shape) > 1 or "bias" in weight.path:
            weight.assign(rng.normal(0, 0.8, weight.shape).astype("float32"))
    return model


@pytest.mark.parametrize("first", FIRST_LAYERS)
def test_float_sequence_and_streaming_equal_keras(first, rng):
    model = random_model(FIRST_LAYERS[first](), rng)
    x = (rng.random((4, 10, 6)) < 0.4).astype("float32")
    want = model.predict(x, verbose=0)

    sequence = to_tflite(model, batch_size=2)
    check_ops(sequence, int8=False)
    got = np.concatenate([run_litert(sequence, [x[i : i + 2]])[0] for i in (0, 2)])
    np.testing.assert_allclose(got, want, rtol=FLOAT_TOL, atol=FLOAT_TOL)

    streaming = to_tflite(model, mode="streaming", batch_size=4)
    check_ops(streaming, int8=False)
    inputs, outputs = details(streaming)
    assert [d["name"] for d in inputs][0].endswith("x:0")
    states = [np.zeros(d["shape"], np.float32) for d in inputs[1:]]
    assert len(outputs) == len(inputs)  # y and one new state per state
    steps = []
    for t in range(10):
        y, *states = run_litert(streaming, [x[:, t], *states])
        steps.append(y)
    np.testing.assert_allclose(np.stack(steps, 1), want, rtol=FLOAT_TOL, atol=FLOAT_TOL)
    np.testing.assert_allclose(np.stack(steps, 1), got, rtol=FLOAT_TOL, atol=FLOAT_TOL)


# --------------------------------------------------------------------------------------------
# int8 on a trained digits model
# --------------------------------------------------------------------------------------------

STEPS = 8


@pytest.fixture(scope="module")
def digits_models():
    """A digits classifier (64 -> RepeatVector(8) -> LIF(128) -> LI(10)) and its exports."""
    keras.utils.set_random_seed(0)
    x_train, y_train = ks.datasets.digits(split="train", flatten=True)
    x_test, y_test = ks.datasets.digits(split="test", flatten=True)
    model = keras.Sequential(
        [
            keras.Input((64,)),
            keras.layers.RepeatVector(STEPS),
            layers.LIF(128, use_bias=True, name="lif1"),
            layers.LI(10, name="readout"),
        ]
    )
    model.compile(keras.optimizers.Adam(3e-3), ks.losses.MaxMembraneCrossEntropy())
    model.fit(x_train, y_train, epochs=10, batch_size=32, verbose=0)
    calibration = x_train[:500]
    exports = {
        "sequence": to_tflite(model, quantize="int8", representative_data=calibration),
        "streaming": to_tflite(
            model, mode="streaming", quantize="int8", representative_data=calibration
        ),
        "sequence_edgetpu": to_tflite(
            model, quantize="int8", representative_data=calibration, edgetpu=True
        ),
        "streaming_edgetpu": to_tflite(
            model,
            mode="streaming",
            quantize="int8",
            representative_data=calibration,
            edgetpu=True,
        ),
    }
    return model, (x_test, y_test), calibration, exports


def run_sequence_int8(model_bytes, x):
    (detail,), (out,) = details(model_bytes)
    return np.concatenate(
        [
            dequantize(run_litert(model_bytes, [quantize(x[i : i + 1], detail)])[0], out)
            for i in range(len(x))
        ]
    )


def run_streaming_int8(model_bytes, x, steps):
    """Step by step, the raw int8 new states fed back unchanged (their scales are tied)."""
    inputs, outputs = details(model_bytes)
    for d_in, d_out in zip(inputs[1:], outputs[1:]):
        assert d_in["quantization"] == d_out["quantization"]
    interpreter = Interpreter(model_content=model_bytes)
    interpreter.allocate_tensors()
    result = []
    for i in range(len(x)):
        states = [quantize(np.zeros(d["shape"]), d) for d in inputs[1:]]
        ys = []
        for _ in range(steps):
            interpreter.set_tensor(inputs[0]["index"], quantize(x[i : i + 1], inputs[0]))
            for d, s in zip(inputs[1:], states):
                interpreter.set_tensor(d["index"], s)
            interpreter.invoke()
            ys.append(dequantize(interpreter.get_tensor(outputs[0]["index"]), outputs[0]))
            states = [interpreter.get_tensor(d["index"]) for d in outputs[1:]]
        result.append(np.stack(ys, 1))
    return np.concatenate(result)


# int8 error: weights and activations are rounded to 1/255 of their calibrated range, and the
# membrane state, rounded every step, accumulates it; a neuron whose membrane passes within
# one int8 step of its threshold can flip a spike, and an image whose two top classes' maximum
# membranes are within a few int8 steps can flip its decision. On these 450 held-out images the
# Keras model's decisions mostly have wider margins, so >= 99% agree (measured: 99.8% sequence,
# 99.3-99.6% streaming); 99% is the bar, not a bound fitted to this seed.
AGREEMENT = 0.99
HIDDEN_AGREEMENT = 0.97


@pytest.mark.parametrize("name", ["sequence", "streaming", "sequence_edgetpu", "streaming_edgetpu"])
def test_int8_decisions_agree_with_keras(digits_models, name):
    model, (x_test, _), _, exports = digits_models
    want = model.predict(x_test, verbose=0).max(axis=1).argmax(-1)
    if name.startswith("sequence"):
        got = run_sequence_int8(exports[name], x_test)
    else:
        got = run_streaming_int8(exports[name], x_test, STEPS)
    assert got.shape == (len(x_test), STEPS, 10)
    assert np.mean(got.max(axis=1).argmax(-1) == want) >= AGREEMENT


def test_int8_hidden_spikes_agree_and_are_0_or_1(digits_models):
    # the select form only: the Edge TPU ramp form is checked by its decisions above; its
    # spikes are not always exactly 0/1 (see the "known limits" in export/tflite.py)
    model, (x_test, _), calibration, _ = digits_models
    hidden = keras.Sequential([keras.Input((64,)), *model.layers[:2]])
    want = hidden.predict(x_test, verbose=0)
    exported = to_tflite(hidden, quantize="int8", representative_data=calibration)
    check_ops(exported, int8=True)
    got = run_sequence_int8(exported, x_test)
    assert set(np.unique(got)) <= {0.0, 1.0}  # 0/1 exactly on the int8 grid
    # Hidden spikes are a stricter measure than decisions: with a constant input current
    # (RepeatVector) the current's int8 rounding error is the same every step, so it adds
    # up in the membrane; measured mismatch 0.1% at step 1 growing to 6% at step 8, 2.3% in
    # all (97.7% agree). The bar checks that level, not 99%.
    assert np.mean(got == want) >= HIDDEN_AGREEMENT
    assert np.mean(got[:, :2] == want[:, :2]) >= AGREEMENT  # before the error has added up


def test_every_int8_export_has_only_integer_ops(digits_models):
    *_, exports = digits_models
    for name, model_bytes in exports.items():
        ops = check_ops(model_bytes, int8=True)
        report = edgetpu_report(model_bytes)
        if name.endswith("edgetpu"):
            assert report.all_supported, str(report)
            assert not {"GREATER", "SELECT_V2"} & set(ops)
            assert set(ops) <= {
                "FULLY_CONNECTED",
                "MUL",
                "ADD",
                "SUB",
                "MINIMUM",
                "STRIDED_SLICE",
                "PACK",
            }
        else:
            assert {"GREATER", "SELECT_V2"} <= set(ops)
            assert not report.all_supported and report.cpu_ops
            assert {op.name for op in report.unsupported} == {"GREATER", "SELECT_V2"}
    assert "PACK" in tflite_ops(exports["sequence"])
    assert "PACK" not in tflite_ops(exports["streaming"])


def test_edgetpu_report_flags_float_and_unsupported_ops(digits_models):
    model, *_ = digits_models
    report = edgetpu_report(to_tflite(model, mode="streaming"))
    assert not report.all_supported
    assert report.ops and not report.ops[0].on_tpu  # everything after the first failure is CPU
    assert any("FLOAT32" in problem for op in report.ops for problem in op.problems)
    assert "Edge TPU report" in str(report)
    assert report.as_dict()["all_supported"] is False


# --------------------------------------------------------------------------------------------
# the other two runtimes give the same numbers
# --------------------------------------------------------------------------------------------

_TFLITE_RUNTIME_CHILD = textwrap.dedent(
    """
    import sys
    import numpy as np
    from tflite_runtime.interpreter import Interpreter

    assert "tensorflow" not in sys.modules
    data = np.load(sys.argv[1])
    results = {}
    for name in ("float", "int8"):
        interpreter = Interpreter(model_path=sys.argv[2] + name + ".tflite")
        interpreter.allocate_tensors()
        (detail,), (out,) = interpreter.get_input_details(), interpreter.get_output_details()
        rows = []
        for row in data[name]:
            interpreter.set_tensor(detail["index"], row[None])
            interpreter.invoke()
            rows.append(interpreter.get_tensor(out["index"])[0])
        results[name] = np.stack(rows)
    np.savez(sys.argv[3], **results)
    """
)


def test_tflite_runtime_214_in_a_child_equals_litert(digits_models, tmp_path):
    model, (x_test, _), _, exports = digits_models
    x = x_test[:20]
    float_bytes = to_tflite(model, path=tmp_path / "float.tflite")
    assert (tmp_path / "float.tflite").read_bytes() == float_bytes
    (tmp_path / "int8.tflite").write_bytes(exports["sequence"])
    (detail,), _ = details(exports["sequence"])
    x_int8 = quantize(x, detail)
    np.savez(tmp_path / "in.npz", float=x, int8=x_int8)
    env = {**os.environ, "PYTHONPATH": ""}
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            _TFLITE_RUNTIME_CHILD,
            str(tmp_path / "in.npz"),
            str(tmp_path) + "/",
            str(tmp_path / "out.npz"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    got = np.load(tmp_path / "out.npz")
    want_float = np.concatenate([run_litert(float_bytes, [x[i : i + 1]])[0] for i in range(20)])
    want_int8 = np.concatenate(
        [run_litert(exports["sequence"], [x_int8[i : i + 1]])[0] for i in range(20)]
    )
    # the same float kernels in another build: equal up to float32 rounding
    np.testing.assert_allclose(got["float"], want_float, rtol=1e-6, atol=1e-6)
    # int8: the two builds' kernels requantize with different rounding in a few places
    # (measured: 5 of 1600 values 1 step apart), so: almost all equal, the same decisions
    difference = np.abs(got["int8"].astype(int) - want_int8.astype(int))
    assert np.mean(difference == 0) >= 0.99
    np.testing.assert_array_equal(got["int8"].max(1).argmax(-1), want_int8.max(1).argmax(-1))
    np.testing.assert_allclose(
        want_float, model.predict(x, verbose=0), rtol=FLOAT_TOL, atol=FLOAT_TOL
    )


def test_tflite_micro_equals_litert_and_reports_arena(digits_models):
    _, (x_test, _), _, exports = digits_models
    x = x_test[:6]
    (detail,), _ = details(exports["sequence"])
    x_int8 = quantize(x, detail)[:, None]  # [N, 1, 64]: N invokes of batch 1
    report = tflm_check(exports["sequence"], inputs=[x_int8])
    assert report["ok"], report["error"]
    assert report["ops"] == tflite_ops(exports["sequence"])
    assert report["ops_per_invoke"] == len(report["ops"])
    # the input current of a constant (RepeatVector) input is computed once, then one
    # readout FULLY_CONNECTED per step
    assert report["op_counts"]["FULLY_CONNECTED"] == STEPS + 1
    want = np.stack([run_litert(exports["sequence"], [row])[0] for row in x_int8])
    np.testing.assert_array_equal(report["outputs"][0], want)

    # the smallest arena works, 16 bytes less does not
    arena = report["arena_bytes"]
    assert 0 < arena <= 10 * report["model_bytes"]
    smaller = tflm_check(exports["sequence"], arena_sizes=[arena - 16])
    assert not smaller["ok"] and smaller["error"]

    # streaming in TFLM: the loop feeds the state back. TFLM's reference kernels and LiteRT's
    # (XNNPACK) requantize with different rounding in a few places (measured: 4 of 480 readout
    # values one int8 step apart); the state carries such a step on, so: >= 99% equal, never
    # more than a few steps apart, and the same decisions
    streaming = tflm_check(
        exports["streaming"], inputs=np.repeat(x[:, None, None], STEPS, 1), streaming=True
    )
    assert streaming["ok"], streaming["error"]
    _, outputs = details(exports["streaming"])
    got = dequantize(streaming["outputs"][0][:, :, 0], outputs[0])  # [N, T, 10]
    want = run_streaming_int8(exports["streaming"], x, STEPS)
    scale = outputs[0]["quantization"][0]
    assert np.mean(np.isclose(got, want, atol=scale / 2)) >= 0.99
    assert np.abs(got - want).max() <= 4 * scale
    np.testing.assert_array_equal(got.max(1).argmax(-1), want.max(1).argmax(-1))
    assert streaming["arena_bytes"] < arena  # one step needs far less than the whole window


def test_tflm_check_survives_a_segfaulting_arena(digits_models):
    *_, exports = digits_models
    report = tflm_check(exports["streaming"], arena_sizes=[64])  # SIGSEGV in the child
    assert report["ok"] is False
    assert "no arena in [64] worked" in report["error"]


# --------------------------------------------------------------------------------------------
# errors
# --------------------------------------------------------------------------------------------


def test_unsupported_layer_is_an_export_error():
    model = keras.Sequential([keras.Input((5, 3)), keras.layers.Conv1D(4, 2), layers.LI(2)])
    with pytest.raises(ExportError, match=r"tflite export: layer 'conv1d.*' of type Conv1D"):
        to_tflite(model)


def test_bad_options_are_named(rng):
    model = random_model(layers.LIF(4), rng)
    data = rng.random((8, 10, 6)).astype("float32")
    cases = [
        (
            dict(mode="loop"),
            ValueError,
            r"`mode` expected one of \('sequence', 'streaming'\), "
            r"got 'loop'",
        ),
        (dict(quantize="int4"), ValueError, r"`quantize` expected one of .*got 'int4'"),
        (dict(quantize="int8"), ValueError, r"expected `representative_data`.*got None"),
        (
            dict(edgetpu=True),
            ValueError,
            r"edgetpu=True` expected quantize='int8'.*got "
            r"quantize=None",
        ),
        (dict(edgetpu="yes"), TypeError, r"`edgetpu` expected a bool, got 'yes'"),
        (dict(batch_size=0), ValueError, r"`batch_size` expected an int >= 1, got 0"),
        (dict(num_steps=2.5), ValueError, r"`num_steps` expected None or an int >= 1, got 2.5"),
        (dict(path=3), TypeError, r"`path` expected None, a str or a path, got 3"),
        (
            dict(quantize="int8", representative_data=data[:, :, :2]),
            ValueError,
            r"expected shape \[n, time, features\] with 6 features, got shape \(8, 10, 2\)",
        ),
        (
            dict(quantize="int8", representative_data=data, batch_size=9),
            ValueError,
            r"at least batch_size=9 samples, got 8",
        ),
    ]
    for kwargs, error, message in cases:
        with pytest.raises(error, match=message):
            to_tflite(model, **kwargs)
    with pytest.raises(TypeError, match="positional argument"):
        to_tflite(model, "streaming")  # options are keyword-only
    unknown_time = keras.Sequential([keras.Input((None, 6)), layers.LIF(4), layers.LI(2)])
    with pytest.raises(ExportError, match="needs `num_steps`"):
        to_tflite(unknown_time)
    assert tflite_ops(to_tflite(unknown_time, num_steps=3)).count("PACK") == 1
    with pytest.raises(ValueError, match=r"`arena_sizes` expected None or ints >= 1"):
        tflm_check(b"", arena_sizes=[0])
