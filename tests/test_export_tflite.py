"""TFLite, TFLite Micro and Edge TPU export (export/tflite.py, tflm.py, edgetpu.py).

Three runtimes run the exported flatbuffers: LiteRT (``ai_edge_litert``, in this process),
tflite-runtime 2.14 (in a child process that imports only NumPy and ``tflite_runtime``: in
the same process as TF 2.21 it fails, see TOOLCHAIN.md) and TFLite Micro (through
``tflm_check``, which runs it in child processes).

Float exports equal Keras to float32 rounding. Int8 results are checked against the float
model within bounds derived from the int8 scales (tests/_int8_bounds.py), the same for every
runtime and whichever path (C++ kernels or pure TF) trained the model.
"""

import os
import subprocess
import sys
import textwrap
import warnings

import _int8_bounds as bounds
import keras
import numpy as np
import pytest

import keras_spiking as ks
from keras_spiking import layers
from keras_spiking.export import (
    ExportError,
    _graph,
    edgetpu_report,
    tflite_ops,
    tflm_check,
    to_tflite,
)

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
SEED = 0
# the four int8 forms: select or Edge TPU ramp spikes, sequence or streaming graph
FORMS = ("sequence", "streaming", "sequence_edgetpu", "streaming_edgetpu")


def train_digits(seed):
    """A digits classifier (64 -> RepeatVector(8) -> LIF(128) -> LI(10)) and its int8 exports.

    For every form also the hidden layer alone (``hidden_<form>``: the same calibration of
    the same tensors, with the spikes as output), so the tests can read the spikes the int8
    model computes.
    """
    keras.utils.set_random_seed(seed)
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
    hidden = keras.Sequential([keras.Input((64,)), *model.layers[:2]])
    exports = {}
    for form in FORMS:
        options = dict(
            mode=form.split("_")[0],
            quantize="int8",
            representative_data=calibration,
            edgetpu=form.endswith("edgetpu"),
        )
        exports[form] = to_tflite(model, **options)
        exports[f"hidden_{form}"] = to_tflite(hidden, **options)
    return model, (x_test, y_test), calibration, exports


@pytest.fixture(scope="module")
def digits_models():
    return train_digits(SEED)


def float_bounds(digits):
    """Per form, the float model's hidden bounds on the test images; and the readout's spec."""
    model, (x_test, _), calibration, _ = digits
    lif, readout = _graph.neuron_layers(model, "tflite", skip_leading_repeat=True)
    x, cal = (np.repeat(a[:, None], STEPS, 1) for a in (x_test, calibration))
    hidden = {
        streaming: bounds.hidden_bounds(lif, x, cal, streaming=streaming)
        for streaming in (False, True)
    }
    return {form: hidden[form.startswith("streaming")] for form in FORMS}, readout


@pytest.fixture(scope="module")
def digits_bounds(digits_models):
    return float_bounds(digits_models)


def run_sequence_int8(model_bytes, x):
    (detail,), (out,) = details(model_bytes)
    return np.concatenate(
        [
            dequantize(run_litert(model_bytes, [quantize(x[i : i + 1], detail)])[0], out)
            for i in range(len(x))
        ]
    )


def run_streaming_int8(model_bytes, x, steps):
    """Step by step, the raw int8 new states fed back unchanged (their scales are tied).

    Returns the dequantized outputs, ``[y, *new_states]``, each ``[len(x), steps, units]``.
    """
    inputs, outputs = details(model_bytes)
    for d_in, d_out in zip(inputs[1:], outputs[1:]):
        assert d_in["quantization"] == d_out["quantization"]
    interpreter = Interpreter(model_content=model_bytes)
    interpreter.allocate_tensors()
    result = []
    for i in range(len(x)):
        states = [quantize(np.zeros(d["shape"]), d) for d in inputs[1:]]
        steps_out = []
        for _ in range(steps):
            interpreter.set_tensor(inputs[0]["index"], quantize(x[i : i + 1], inputs[0]))
            for d, s in zip(inputs[1:], states):
                interpreter.set_tensor(d["index"], s)
            interpreter.invoke()
            raw = [interpreter.get_tensor(d["index"]) for d in outputs]
            steps_out.append([dequantize(r, d)[0] for r, d in zip(raw, outputs)])
            states = raw[1:]
        result.append([np.stack(values) for values in zip(*steps_out)])
    return [np.stack(values) for values in zip(*result)]


def run_int8(model_bytes, x, form):
    """The dequantized outputs of a form's export over ``x [n, 64]``: ``[y, *states]``."""
    if form.startswith("streaming"):
        return run_streaming_int8(model_bytes, x, STEPS)
    return [run_sequence_int8(model_bytes, x)]


# A bar on how much is compared, so a check cannot pass by comparing nothing: the bounds leave
# out spikes after a neuron's first close call and decisions near a tie, and for a trained
# model most are neither (measured on the digits model, seeds 0 and 1 on both training paths:
# 73-75% of the hidden spikes certain in the sequence form, 66-68% streaming; 90-93% of the
# decisions certified). Half of them still compares over 200 images and 2e5 spikes.
# Breaking the exporter on purpose failed these checks in both the sequence and streaming
# forms, by hundreds to tens of thousands of values: readout weights negated or 10% off,
# hidden weights 10% off, a threshold 20% off, a readout decay 3% off; the sequence output
# one step late failed the sequence form; a hidden decay 5% off failed the streaming
# membranes (the sequence form has no membrane output), a threshold 5% off only the sequence
# form (the streaming membrane's int8 step is ~9% of the threshold).
MIN_COMPARED = 0.5


def test_float_reference_is_the_keras_model(digits_models, digits_bounds):
    # tests/_int8_bounds.py simulates the float model in NumPy (float64): the same spikes as
    # Keras wherever a spike is compared, the same readout to float32 rounding
    model, (x_test, _), _, _ = digits_models
    hidden_bounds, readout = digits_bounds
    sequence = hidden_bounds["sequence"]
    keras_hidden = keras.Sequential([keras.Input((64,)), *model.layers[:2]])
    keras_spikes = keras_hidden.predict(x_test, verbose=0)
    certain = sequence.certain
    np.testing.assert_array_equal(keras_spikes[certain], sequence.spikes[certain])
    want = bounds.readout_bounds(
        readout, keras_spikes, sequence.calibration_spikes, streaming=False
    )
    # float32 (Keras) against float64 sums of ~10 terms of size <= ~10; the reference is
    # clipped to the int8 output's range, as int8 saturates there
    keras_readout = np.clip(model.predict(x_test, verbose=0), *want.output_range)
    np.testing.assert_allclose(want.readout, keras_readout, atol=1e-4)


@pytest.mark.parametrize("form", FORMS)
def test_int8_hidden_spikes_equal_keras_where_certain(digits_models, digits_bounds, form):
    _, (x_test, _), _, exports = digits_models
    hidden = digits_bounds[0][form]
    spikes, *states = run_int8(exports[f"hidden_{form}"], x_test, form)
    assert spikes.shape == (len(x_test), STEPS, 128)
    steps = STEPS
    if form.endswith("edgetpu"):
        # the ramp's known limit (export/tflite.py): the converter may give u of the last
        # unrolled step the ramp product's coarse scale, so that step is not predicted
        steps = STEPS - 1 if form.startswith("sequence") else STEPS
    else:
        assert set(np.unique(spikes)) <= {0.0, 1.0}  # GREATER + SELECT_V2: 0/1 exactly
    compared = bounds.check_spikes(hidden, spikes, steps=steps)
    assert compared >= MIN_COMPARED
    if states:  # streaming: the new membrane is an output, bounded while spikes are certain
        bounds.check_membranes(hidden, states[0], steps=steps)


@pytest.mark.parametrize("form", ["sequence", "sequence_edgetpu"])
def test_hidden_export_computes_the_full_exports_spikes(digits_models, form):
    # the readout checks take the int8 model's spikes from the hidden layer's own export;
    # they are the spikes inside the full export (the same calibration of the same tensors).
    # LiteRT keeps every intermediate tensor when asked (then with its builtin kernels).
    from ai_edge_litert import schema_py_generated as schema

    _, (x_test, _), _, exports = digits_models
    x = x_test[:100]
    full = exports[form]
    spike_op = "MINIMUM" if form.endswith("edgetpu") else "SELECT_V2"
    operators = schema.ModelT.InitFromPackedBuf(full, 0).subgraphs[0].operators
    found = [op.outputs[0] for name, op in zip(tflite_ops(full), operators) if name == spike_op]
    assert len(found) == STEPS
    (detail,), _ = details(full)
    with warnings.catch_warnings():  # "intended for debugging": that is the use here
        warnings.filterwarnings("ignore", message=".*experimental_preserve_all_tensors")
        inside, alone = (
            Interpreter(model_content=model_bytes, experimental_preserve_all_tensors=True)
            for model_bytes in (full, exports[f"hidden_{form}"])
        )
    for interpreter in (inside, alone):
        interpreter.allocate_tensors()
    for row in quantize(x, detail):
        inside.set_tensor(detail["index"], row[None])
        alone.set_tensor(alone.get_input_details()[0]["index"], row[None])
        inside.invoke()
        alone.invoke()
        want = alone.get_tensor(alone.get_output_details()[0]["index"])[0]
        np.testing.assert_array_equal(np.stack([inside.get_tensor(i)[0] for i in found]), want)


@pytest.mark.parametrize("form", FORMS)
def test_int8_readout_and_decisions_follow_its_spikes(digits_models, digits_bounds, form):
    _, (x_test, _), _, exports = digits_models
    hidden, readout = digits_bounds[0][form], digits_bounds[1]
    got, *_ = run_int8(exports[form], x_test, form)
    assert got.shape == (len(x_test), STEPS, 10)
    spikes, *_ = run_int8(exports[f"hidden_{form}"], x_test, form)
    want = bounds.readout_bounds(
        readout, spikes, hidden.calibration_spikes, streaming=form.startswith("streaming")
    )
    certified = bounds.check_readout(want, got)
    assert certified >= MIN_COMPARED


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
# the other two runtimes: each one's int8 results within the same bounds
# --------------------------------------------------------------------------------------------

_TFLITE_RUNTIME_CHILD = textwrap.dedent(
    """
    import sys
    import numpy as np
    from tflite_runtime.interpreter import Interpreter

    assert "tensorflow" not in sys.modules
    folder, names = sys.argv[1], sys.argv[2:]
    data = np.load(folder + "/in.npz")
    results = {}
    for name in names:
        interpreter = Interpreter(model_path=f"{folder}/{name}.tflite")
        interpreter.allocate_tensors()
        (detail,), (out,) = interpreter.get_input_details(), interpreter.get_output_details()
        rows = []
        for row in data["float" if name == "float" else "int8"]:
            interpreter.set_tensor(detail["index"], row[None])
            interpreter.invoke()
            rows.append(interpreter.get_tensor(out["index"])[0])
        results[name] = np.stack(rows)
    np.savez(folder + "/out.npz", **results)
    """
)


@pytest.mark.skipif(
    sys.version_info >= (3, 12),
    reason="tflite-runtime 2.14 has no wheels for Python >= 3.12 (the `export` extra installs "
    "it below 3.12 only); LiteRT and TFLite Micro are checked on every Python",
)
def test_tflite_runtime_214_in_a_child(digits_models, digits_bounds, tmp_path):
    model, (x_test, _), _, exports = digits_models
    hidden, readout = digits_bounds[0]["sequence"], digits_bounds[1]
    float_bytes = to_tflite(model, path=tmp_path / "float.tflite")
    assert (tmp_path / "float.tflite").read_bytes() == float_bytes
    for name in ("sequence", "hidden_sequence"):
        (tmp_path / f"{name}.tflite").write_bytes(exports[name])
    (detail,), (out,) = details(exports["sequence"])
    np.savez(tmp_path / "in.npz", float=x_test, int8=quantize(x_test, detail))
    result = subprocess.run(
        [sys.executable, "-c", _TFLITE_RUNTIME_CHILD, str(tmp_path)]
        + ["float", "sequence", "hidden_sequence"],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": ""},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    got = np.load(tmp_path / "out.npz")
    # the same float kernels in another build: equal up to float32 rounding
    want_float = np.concatenate([run_litert(float_bytes, [row[None]])[0] for row in x_test])
    np.testing.assert_allclose(got["float"], want_float, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(got["float"], model.predict(x_test, verbose=0), atol=FLOAT_TOL)
    # int8: its kernels round a few results differently from LiteRT's (TOOLCHAIN.md), so its
    # own spikes and outputs are checked against the float model, as LiteRT's are above
    (spike_detail,) = details(exports["hidden_sequence"])[1]
    spikes = dequantize(got["hidden_sequence"], spike_detail)
    assert bounds.check_spikes(hidden, spikes) >= MIN_COMPARED
    want = bounds.readout_bounds(readout, spikes, hidden.calibration_spikes, streaming=False)
    assert bounds.check_readout(want, dequantize(got["sequence"], out)) >= MIN_COMPARED


# TFLite Micro runs these many test images (each a child-process invoke loop)
TFLM_IMAGES = 60
_TFLM_ARENA = [1 << 20]  # bytes: ample for these models, skips the arena search


def _tflm_outputs(report):
    """TFLM's raw outputs dequantized with their own parameters."""
    return [
        dequantize(raw, {"quantization": params})
        for raw, params in zip(report["outputs"], report["output_quantization"])
    ]


def test_tflite_micro_runs_the_int8_exports_and_reports_arena(digits_models, digits_bounds):
    _, (x_test, _), _, exports = digits_models
    x = x_test[:TFLM_IMAGES]
    readout = digits_bounds[1]
    (detail,), _ = details(exports["sequence"])
    x_int8 = quantize(x, detail)[:, None]  # [N, 1, 64]: N invokes of batch 1
    report = tflm_check(exports["sequence"], inputs=[x_int8])
    assert report["ok"], report["error"]
    assert report["ops"] == tflite_ops(exports["sequence"])
    assert report["ops_per_invoke"] == len(report["ops"])
    # the input current of a constant (RepeatVector) input is computed once, then one
    # readout FULLY_CONNECTED per step
    assert report["op_counts"]["FULLY_CONNECTED"] == STEPS + 1
    # the smallest arena works, 16 bytes less does not
    arena = report["arena_bytes"]
    assert 0 < arena <= 10 * report["model_bytes"]
    smaller = tflm_check(exports["sequence"], arena_sizes=[arena - 16])
    assert not smaller["ok"] and smaller["error"]

    # TFLM's reference kernels round a few results differently from LiteRT's XNNPACK
    # (measured: 3-4 of 480 values one int8 step apart), and a flipped spike carries on: its
    # own spikes and outputs are checked against the float model, as LiteRT's are above
    hidden = digits_bounds[0]["sequence"].first(TFLM_IMAGES)
    spikes_report = tflm_check(exports["hidden_sequence"], inputs=[x_int8], arena_sizes=_TFLM_ARENA)
    assert spikes_report["ok"], spikes_report["error"]
    (spikes,) = (a[:, 0] for a in _tflm_outputs(spikes_report))
    (got,) = (a[:, 0] for a in _tflm_outputs(report))
    assert bounds.check_spikes(hidden, spikes) >= MIN_COMPARED
    want = bounds.readout_bounds(readout, spikes, hidden.calibration_spikes, streaming=False)
    assert bounds.check_readout(want, got) >= MIN_COMPARED

    # streaming: the loop feeds the states back; the hidden export's state is the membrane
    hidden = digits_bounds[0]["streaming"].first(TFLM_IMAGES)
    steps = np.repeat(x[:, None, None], STEPS, 1)  # [N, T, 1, 64]
    streaming = tflm_check(exports["streaming"], inputs=steps, streaming=True)
    assert streaming["ok"], streaming["error"]
    hidden_streaming = tflm_check(
        exports["hidden_streaming"], inputs=steps, streaming=True, arena_sizes=_TFLM_ARENA
    )
    assert hidden_streaming["ok"], hidden_streaming["error"]
    spikes, membranes = (a[:, :, 0] for a in _tflm_outputs(hidden_streaming))
    assert bounds.check_spikes(hidden, spikes) >= MIN_COMPARED
    bounds.check_membranes(hidden, membranes)
    want = bounds.readout_bounds(readout, spikes, hidden.calibration_spikes, streaming=True)
    assert bounds.check_readout(want, _tflm_outputs(streaming)[0][:, :, 0]) >= MIN_COMPARED
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
