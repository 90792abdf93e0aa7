"""End to end: train one epoch, export float / int8 / streaming int8, run LiteRT, TFLM and
tflite-runtime 2.14 (the last in a child process that imports no TensorFlow)."""

import os
import subprocess
import sys
import textwrap
import warnings

import keras
import numpy as np

import keras_spiking as ks
from keras_spiking import layers
from keras_spiking.export import tflite_ops, tflm_check, to_tflite

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from ai_edge_litert.interpreter import Interpreter

STEPS = 10

_CHILD = textwrap.dedent(
    """
    import sys
    import numpy as np
    from tflite_runtime.interpreter import Interpreter

    assert "tensorflow" not in sys.modules
    interpreter = Interpreter(model_path=sys.argv[1])
    interpreter.allocate_tensors()
    (detail,), (out,) = interpreter.get_input_details(), interpreter.get_output_details()
    rows = []
    for row in np.load(sys.argv[2]):
        interpreter.set_tensor(detail["index"], row[None])
        interpreter.invoke()
        rows.append(interpreter.get_tensor(out["index"])[0])
    np.save(sys.argv[3], np.stack(rows))
    """
)


def _litert(model_bytes, rows):
    interpreter = Interpreter(model_content=model_bytes)
    interpreter.allocate_tensors()
    (detail,), (out,) = interpreter.get_input_details(), interpreter.get_output_details()
    got = []
    for row in rows:
        interpreter.set_tensor(detail["index"], row[None].astype(detail["dtype"]))
        interpreter.invoke()
        got.append(interpreter.get_tensor(out["index"])[0])
    return np.stack(got), detail, out


def test_train_export_run_everywhere(tmp_path):
    keras.utils.set_random_seed(0)
    # Yin-Yang: 4 features presented as constant currents, 3 classes
    x, y = ks.datasets.yin_yang(3000, seed=0)
    x_test, y_test = ks.datasets.yin_yang(300, seed=1)
    x, x_test = (np.repeat(a[:, None], STEPS, 1) for a in (x, x_test))  # [n, T, 4] input
    model = keras.Sequential([keras.Input((STEPS, 4)), layers.LIF(64, use_bias=True), layers.LI(3)])
    model.compile(keras.optimizers.Adam(5e-3), ks.losses.MaxMembraneCrossEntropy())
    model.fit(x, y, epochs=1, batch_size=32, verbose=0)
    want = model.predict(x_test, verbose=0)
    want_class = want.max(1).argmax(-1)
    assert np.mean(want_class == y_test) > 0.5  # it learned something in one epoch

    exports = {
        "float": to_tflite(model),
        "int8": to_tflite(model, quantize="int8", representative_data=x[:300]),
        "streaming_int8": to_tflite(
            model, mode="streaming", quantize="int8", representative_data=x[:300]
        ),
    }
    for model_bytes in exports.values():
        assert not {"WHILE", "SHAPE", "FILL", "GATHER"} & set(tflite_ops(model_bytes))

    # LiteRT: float equals Keras; int8 decisions agree (tolerance: see test_export_tflite.py)
    got_float, *_ = _litert(exports["float"], x_test)
    np.testing.assert_allclose(got_float, want, rtol=1e-5, atol=1e-5)
    (scale, zero) = Interpreter(model_content=exports["int8"]).get_input_details()[0][
        "quantization"
    ]
    x_int8 = np.clip(np.round(x_test / scale) + zero, -128, 127).astype(np.int8)
    got_int8, _, out = _litert(exports["int8"], x_int8)
    int8_class = got_int8.astype(np.int32).max(1).argmax(-1)
    # a one-epoch model has many near-ties between its classes' maximum membranes, which int8
    # rounding can flip (measured 97.7% agreement here; the 99% bar is held by the trained
    # digits model in tests/test_export_tflite.py)
    assert np.mean(int8_class == want_class) >= 0.97

    # tflite-runtime 2.14 in a child: same numbers as LiteRT
    for name, rows, want_rows in (
        ("float", x_test, got_float),
        ("int8", x_int8, got_int8),
    ):
        (tmp_path / f"{name}.tflite").write_bytes(exports[name])
        np.save(tmp_path / f"{name}_in.npy", rows)
        result = subprocess.run(
            [
                sys.executable,
                "-c",
                _CHILD,
                str(tmp_path / f"{name}.tflite"),
                str(tmp_path / f"{name}_in.npy"),
                str(tmp_path / f"{name}_out.npy"),
            ],
            capture_output=True,
            text=True,
            timeout=300,
            env={**os.environ, "PYTHONPATH": ""},
        )
        assert result.returncode == 0, result.stderr[-2000:]
        got = np.load(tmp_path / f"{name}_out.npy")
        if name == "float":  # equal to float32 rounding
            np.testing.assert_allclose(got, want_rows, rtol=1e-6, atol=1e-6)
        else:
            # the two builds' kernels requantize with different rounding in a few places, and
            # a flipped spike carries on in the membrane (measured: 12 of 9000 values differ)
            assert np.mean(got == want_rows) >= 0.99
            same = got.astype(np.int32).max(1).argmax(-1) == int8_class
            assert np.mean(same) >= 0.99

    # TFLite Micro: the int8 sequence model and the streaming loop give LiteRT's int8 numbers
    seq = tflm_check(exports["int8"], inputs=[x_int8[:50, None]])
    assert seq["ok"], seq["error"]
    # TFLM's reference kernels vs LiteRT's: the same kind of rare rounding differences
    assert np.mean(seq["outputs"][0][:, 0] == got_int8[:50]) >= 0.99
    stream = tflm_check(exports["streaming_int8"], inputs=x_test[:, :, None], streaming=True)
    assert stream["ok"], stream["error"]
    stream_class = stream["outputs"][0][:, :, 0].astype(np.int32).max(1).argmax(-1)
    # the streaming state has one int8 range for all steps (the unrolled sequence calibrates
    # each step's tensors separately), so it rounds more coarsely: measured 94.7% agreement
    # for this one-epoch model (99.5% for the trained MNIST model of examples/export_to_mcu.py)
    assert np.mean(stream_class == want_class) >= 0.93
    assert 0 < stream["arena_bytes"] < seq["arena_bytes"]
