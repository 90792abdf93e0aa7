"""SavedModel export (export/saved_model.py): loaded in a fresh process and by saved_model_cli.

The loader side never imports keras_spiking: a child process with only TensorFlow and NumPy
(as a serving box has), and the ``saved_model_cli`` tool.
"""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_spiking import layers
from keras_spiking.export import ExportError, to_saved_model

SAVED_MODEL_CLI = Path(sys.executable).with_name("saved_model_cli")
CHILD_ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}
BATCH, STEPS, FEATURES = 5, 12, 8

# Keras vs the SavedModel: float32 sums in another order (the layers' scans and fused kernels
# against the exported while loop); the outputs are LI membranes of magnitude ~10, so a few
# float32 ulps. A flipped hidden spike would move them by a weight (~1), far outside this.
RTOL = ATOL = 1e-5
# the step signature against the sequence signature: the same ops on the same values (equal
# bit for bit when measured), but graph optimisation may fuse the loop body and the
# standalone step differently on another CPU
STEP_TOL = 1e-6

CASES = {
    # name: (layers, model time dimension, export options)
    "lif_subtract": (
        lambda: [
            layers.LIF(16, use_bias=True, name="hidden"),
            keras.layers.Dropout(0.1),
            layers.LI(3, name="readout"),
        ],
        STEPS,
        {},
    ),
    "lif_zero_recurrent_dynamic_time": (
        lambda: [
            layers.LIF(
                16,
                reset="zero",
                recurrent=True,
                tau_mem=np.linspace(0.005, 0.05, 16),
                name="hidden",
            ),
            layers.LI(3, use_bias=True, name="readout"),
        ],
        None,
        {},
    ),
    "cuba_recurrent": (
        lambda: [
            layers.CubaLIF(16, recurrent=True, threshold=0.7, name="cuba"),
            layers.LI(3, use_bias=True, name="readout"),
        ],
        STEPS,
        {},
    ),
    "lif_last_step_fixed_batch": (
        lambda: [
            layers.LIF(16, name="hidden"),
            layers.LI(3, return_sequences=False, name="readout"),
        ],
        None,
        {"num_steps": STEPS, "batch_size": BATCH},
    ),
}


def _model(case: str, rng) -> keras.Model:
    make_layers, steps, _ = CASES[case]
    model = keras.Sequential([keras.Input((steps, FEATURES)), *make_layers()])
    for weight in model.weights:
        if len(weight.shape) > 1 or "bias" in weight.path:
            weight.assign(rng.normal(0, 1.0, weight.shape).astype("float32"))
    return model


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """Each case exported, with its input and the Keras model's outputs (and its hidden spikes)."""
    rng = np.random.default_rng(1234)
    root = tmp_path_factory.mktemp("saved_models")
    cases = {}
    for case, (_, _, options) in CASES.items():
        model = _model(case, rng)
        x = (rng.random((BATCH, STEPS, FEATURES)) < 0.3).astype("float32")
        path = to_saved_model(model, root / case, **options)
        dynamic = CASES[case][1] is None and "num_steps" not in options
        np.save(root / f"{case}_x.npy", x)
        hidden = keras.Model(model.inputs, model.layers[0].output).predict(x, verbose=0)
        cases[case] = {
            "path": path,
            "x": x,
            "want": model.predict(x, verbose=0),
            # the dynamic-time model also runs on a shorter window
            "want_short": model.predict(x[:, :7], verbose=0) if dynamic else None,
            "hidden_rate": float(hidden.mean()),
        }
    return root, cases


CHILD = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import tensorflow as tf

    root, cases = sys.argv[1], json.loads(sys.argv[2])
    report = {}
    arrays = {}
    for case, path in cases.items():
        loaded = tf.saved_model.load(path)
        sequence, step = loaded.signatures["serving_default"], loaded.signatures["step"]
        x = np.load(f"{root}/{case}_x.npy")
        arrays[f"{case}/sequence"] = sequence(inputs=tf.constant(x))["outputs"].numpy()
        if sequence.structured_input_signature[1]["inputs"].shape[1] is None:
            short = sequence(inputs=tf.constant(x[:, :7]))["outputs"].numpy()
            arrays[f"{case}/short"] = short
        specs = step.structured_input_signature[1]
        states = {
            key: tf.zeros((x.shape[0], spec.shape[1])) for key, spec in specs.items() if key != "x"
        }
        outputs = []
        for t in range(x.shape[1]):
            result = step(x=tf.constant(x[:, t]), **states)
            states = {key: result[key] for key in states}
            outputs.append(result["output"].numpy())
        arrays[f"{case}/stepped"] = np.stack(outputs, 1)
        ops = set()
        for function in (sequence, step):
            graph_def = function.graph.as_graph_def()
            ops.update(node.op for node in graph_def.node)
            for library_function in graph_def.library.function:
                ops.update(node.op for node in library_function.node_def)
        report[case] = {
            "ops": sorted(ops),
            "step_inputs": sorted(specs),
            "step_outputs": sorted(step.structured_outputs),
            "shapes": [
                sequence.structured_input_signature[1]["inputs"].shape.as_list(),
                sequence.structured_outputs["outputs"].shape.as_list(),
                step.structured_input_signature[1]["x"].shape.as_list(),
            ],
        }
    np.savez(f"{root}/child.npz", **arrays)
    report["imported_keras_spiking"] = any(m.startswith("keras_spiking") for m in sys.modules)
    print(json.dumps(report))
    """
)


@pytest.fixture(scope="module")
def fresh_process(exported):
    """Runs every exported model in one child process that imports only tensorflow and numpy."""
    root, cases = exported
    paths = {case: data["path"] for case, data in cases.items()}
    result = subprocess.run(
        [sys.executable, "-c", CHILD, str(root), json.dumps(paths)],
        capture_output=True,
        text=True,
        env=CHILD_ENV,
        cwd=root,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    with np.load(root / "child.npz") as arrays:
        return report, {key: arrays[key] for key in arrays.files}


def test_the_cases_spike_sometimes(exported):
    # the comparisons below mean something only if the hidden layers neither stay silent nor
    # fire all the time
    for case, data in exported[1].items():
        assert 0.02 < data["hidden_rate"] < 0.98, (case, data["hidden_rate"])


@pytest.mark.parametrize("case", CASES)
def test_fresh_process_matches_keras(case, exported, fresh_process):
    data = exported[1][case]
    report, arrays = fresh_process
    assert report["imported_keras_spiking"] is False
    got = arrays[f"{case}/sequence"]
    assert got.shape == data["want"].shape
    np.testing.assert_allclose(got, data["want"], rtol=RTOL, atol=ATOL)
    if data["want_short"] is not None:
        np.testing.assert_allclose(
            arrays[f"{case}/short"], data["want_short"], rtol=RTOL, atol=ATOL
        )


@pytest.mark.parametrize("case", CASES)
def test_step_signature_fed_back_equals_the_sequence_signature(case, fresh_process):
    report, arrays = fresh_process
    stepped, sequence = arrays[f"{case}/stepped"], arrays[f"{case}/sequence"]
    if sequence.ndim == 2:  # last layer with return_sequences=False: the last step only
        stepped = stepped[:, -1]
    np.testing.assert_allclose(stepped, sequence, rtol=STEP_TOL, atol=STEP_TOL)


def test_step_signature_names_follow_the_state_specs(fresh_process):
    report, _ = fresh_process
    assert report["lif_subtract"]["step_inputs"] == ["hidden_v", "readout_v", "x"]
    assert report["lif_zero_recurrent_dynamic_time"]["step_inputs"] == [
        "hidden_s",
        "hidden_v",
        "readout_v",
        "x",
    ]
    assert report["cuba_recurrent"]["step_outputs"] == ["cuba_i", "cuba_v", "output", "readout_v"]


def test_signature_shapes_follow_num_steps_and_batch_size(fresh_process):
    report, _ = fresh_process
    assert report["lif_subtract"]["shapes"] == [[None, 12, 8], [None, 12, 3], [None, 8]]
    # no num_steps and a model with a dynamic time axis: dynamic T
    assert report["lif_zero_recurrent_dynamic_time"]["shapes"] == [
        [None, None, 8],
        [None, None, 3],
        [None, 8],
    ]
    # num_steps and batch_size given; return_sequences=False drops the time axis
    assert report["lif_last_step_fixed_batch"]["shapes"] == [[5, 12, 8], [5, 3], [5, 8]]


@pytest.mark.parametrize("case", CASES)
def test_no_custom_kernel_ops_in_the_saved_graph(case, exported, fresh_process):
    report, _ = fresh_process
    assert [op for op in report[case]["ops"] if op.startswith("KerasSpiking")] == []
    assert "While" in report[case]["ops"] or "StatelessWhile" in report[case]["ops"]
    saved = (Path(exported[1][case]["path"]) / "saved_model.pb").read_bytes()
    assert b"KerasSpiking" not in saved


def _cli(*args: str) -> str:
    result = subprocess.run(
        [str(SAVED_MODEL_CLI), *args],
        capture_output=True,
        text=True,
        env=CHILD_ENV,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def _signature_block(text: str, name: str) -> str:
    start = text.index(f"signature_def['{name}']")
    end = text.find("signature_def[", start + 1)
    return text[start : end if end > 0 else None]


def test_saved_model_cli_show_lists_both_signatures(exported):
    shown = _cli("show", "--dir", exported[1]["cuba_recurrent"]["path"], "--all")
    serving = _signature_block(shown, "serving_default")
    assert (
        "inputs['inputs'] tensor_info:\n        dtype: DT_FLOAT\n        shape: (-1, 12, 8)"
        in serving
    )
    assert (
        "outputs['outputs'] tensor_info:\n        dtype: DT_FLOAT\n        shape: (-1, 12, 3)"
        in serving
    )
    step = _signature_block(shown, "step")
    for name, shape in [("x", 8), ("cuba_i", 16), ("cuba_v", 16), ("readout_v", 3)]:
        want = (
            f"inputs['{name}'] tensor_info:\n        dtype: DT_FLOAT\n        shape: (-1, {shape})"
        )
        assert want in step
    for name, shape in [("output", 3), ("cuba_i", 16), ("cuba_v", 16), ("readout_v", 3)]:
        assert (
            f"outputs['{name}'] tensor_info:\n        dtype: DT_FLOAT\n        shape: (-1, {shape})"
            in step
        )


def test_saved_model_cli_run_serving_default(exported, tmp_path):
    root, cases = exported
    data = cases["lif_zero_recurrent_dynamic_time"]
    printed = _cli(
        "run",
        "--dir",
        data["path"],
        "--tag_set",
        "serve",
        "--signature_def",
        "serving_default",
        "--inputs",
        f"inputs={root}/lif_zero_recurrent_dynamic_time_x.npy",
        "--outdir",
        str(tmp_path),
    )
    assert "Result for output key outputs:" in printed
    np.testing.assert_allclose(
        np.load(tmp_path / "outputs.npy"), data["want"], rtol=RTOL, atol=ATOL
    )


def test_saved_model_cli_run_step(exported):
    # --input_exprs takes Python literals only (saved_model_cli evaluates them with
    # ast.literal_eval), so the first step's input and zero states are written out
    data = exported[1]["lif_subtract"]
    x0 = data["x"][:2, 0]
    exprs = [f"x={x0.tolist()}", f"hidden_v={[[0.0] * 16] * 2}", f"readout_v={[[0.0] * 3] * 2}"]
    printed = _cli(
        "run",
        "--dir",
        data["path"],
        "--tag_set",
        "serve",
        "--signature_def",
        "step",
        "--input_exprs",
        ";".join(exprs),
    )
    for key in ("output", "hidden_v", "readout_v"):
        assert f"Result for output key {key}:" in printed
    # the first output of the readout is its first sequence step (zero initial states)
    block = printed.split("Result for output key output:")[1].split("Result for")[0]
    numbers = np.array(block.replace("[", " ").replace("]", " ").split(), dtype=np.float32)
    np.testing.assert_allclose(numbers.reshape(2, 3), data["want"][:2, 0], rtol=1e-4, atol=1e-4)


def test_src_model_exports_and_matches_keras(tmp_path, rng):
    model = keras.Sequential([keras.Input((20, 3)), layers.SRC(6), layers.LI(2)])
    model.layers[0].cell.kernel.assign(rng.normal(0.5, 1.0, (3, 6)).astype("float32"))
    x = (rng.random((3, 20, 3)) < 0.5).astype("float32")
    to_saved_model(model, tmp_path / "out")
    loaded = tf.saved_model.load(str(tmp_path / "out"))
    got = loaded.signatures["serving_default"](inputs=tf.constant(x))["outputs"]
    # float32, the same ops in another order: far below the readout's scale of about 1
    np.testing.assert_allclose(got, model.predict(x, verbose=0), rtol=1e-5, atol=1e-5)


def test_non_spiking_layer_and_unbuilt_model_are_export_errors(tmp_path):
    model = keras.Sequential([keras.Input((5, 3)), layers.LIF(4), keras.layers.Dense(2)])
    with pytest.raises(ExportError, match=r"saved_model export: layer 'dense.*' of type Dense"):
        to_saved_model(model, tmp_path / "out")
    with pytest.raises(ExportError, match="needs a built model"):
        to_saved_model(keras.Sequential([layers.LIF(3)]), tmp_path / "out")


def test_return_state_model_is_an_export_error(tmp_path):
    inputs = keras.Input((5, 3))
    model = keras.Model(inputs, layers.LIF(4, return_state=True)(inputs))
    with pytest.raises(ExportError, match="one input and one output, got 1 inputs and 3 outputs"):
        to_saved_model(model, tmp_path / "out")


@pytest.mark.parametrize(
    ("options", "error", "match"),
    [
        ({"num_steps": 0}, ValueError, "num_steps: expected None or a positive int, got 0"),
        ({"num_steps": True}, TypeError, "num_steps: expected None or a positive int, got bool"),
        ({"num_steps": 2.5}, TypeError, "num_steps: .* got float 2.5"),
        ({"batch_size": -1}, ValueError, "batch_size: expected None or a positive int, got -1"),
        ({"path": 3}, TypeError, "path: expected a str or os.PathLike directory, got int 3"),
        ({"path": ""}, ValueError, "path: expected a non-empty directory name, got ''"),
        ({"path": "FILE"}, ValueError, "path: expected a directory .* got existing file"),
        ({"model": "model.keras"}, TypeError, "model: expected a keras.Model, got str"),
    ],
)
def test_bad_arguments_are_named(options, error, match, tmp_path):
    (tmp_path / "file").write_text("not a directory")
    arguments = {
        "model": keras.Sequential([keras.Input((5, 3)), layers.LIF(4)]),
        "path": tmp_path / "out",
        **options,
    }
    if arguments["path"] == "FILE":
        arguments["path"] = tmp_path / "file"
    model, path = arguments.pop("model"), arguments.pop("path")
    with pytest.raises(error, match=match):
        to_saved_model(model, path, **arguments)
    assert not (tmp_path / "out").exists()
