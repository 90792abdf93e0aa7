"""The ``keras-spiking export`` command line, on a small saved model, for every target."""

import os
import subprocess
import sys

import keras
import nir
import numpy as np
import pytest

from keras_spiking import layers
from keras_spiking.export import cli, tflite_ops


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A small LIF -> LI model saved as .keras, with calibration inputs as .npy."""
    keras.utils.set_random_seed(0)
    folder = tmp_path_factory.mktemp("cli")
    model = keras.Sequential([keras.Input((8, 5)), layers.LIF(12, reset="zero"), layers.LI(3)])
    model.layers[0].cell.kernel.assign(np.random.default_rng(0).normal(0.4, 1, (5, 12)))
    path = folder / "model.keras"
    model.save(path)
    calibration = (np.random.default_rng(1).random((32, 8, 5)) < 0.4).astype("float32")
    np.save(folder / "calibration.npy", calibration)
    return folder, model, calibration


def _run(*argv):
    return cli.main([str(a) for a in argv])


def test_float_tflite_and_saved_model_and_nir(saved, capsys):
    folder, model, calibration = saved
    assert _run("export", folder / "model.keras", "--to", "tflite", "-o", folder / "m.tflite") == 0
    ops = tflite_ops((folder / "m.tflite").read_bytes())
    assert "FULLY_CONNECTED" in ops and not any(op.startswith("CUSTOM") for op in ops)
    assert _run("export", folder / "model.keras", "--to", "saved-model", "-o", folder / "sm") == 0
    assert (folder / "sm" / "saved_model.pb").is_file()
    assert _run("export", folder / "model.keras", "--to", "nir", "-o", folder / "m.nir") == 0
    graph = nir.read(folder / "m.nir")
    assert {type(node).__name__ for node in graph.nodes.values()} >= {"Input", "Output", "LI"}
    out = capsys.readouterr().out
    assert "wrote tflite model" in out and "wrote SavedModel" in out and "wrote NIR graph" in out


@pytest.mark.parametrize("target", ["tflite-int8", "streaming-int8", "edgetpu"])
def test_int8_targets_need_and_use_calibration(saved, target, capsys):
    folder, _, _ = saved
    out = folder / f"{target}.tflite"
    assert _run("export", folder / "model.keras", "--to", target, "-o", out) == 2
    assert "needs --calibration" in capsys.readouterr().err
    code = _run(
        "export", folder / "model.keras", "--to", target, "-o", out,
        "--calibration", folder / "calibration.npy",
    )  # fmt: skip
    assert code == 0 and out.stat().st_size > 0
    printed = capsys.readouterr().out
    assert f"wrote {target} model" in printed
    if target == "edgetpu":
        assert "CPU" in printed or "Edge TPU" in printed  # the report follows the summary


def test_errors_exit_2_with_a_message(saved, tmp_path, capsys):
    folder, _, _ = saved
    assert _run("export", tmp_path / "missing.keras", "--to", "nir", "-o", tmp_path / "x") == 2
    assert "no such file" in capsys.readouterr().err
    bad = tmp_path / "bad.npy"
    np.save(bad, np.zeros((4, 5)))
    code = _run(
        "export", folder / "model.keras", "--to", "tflite-int8", "-o", tmp_path / "x",
        "--calibration", bad,
    )  # fmt: skip
    assert code == 2 and "expected an array [samples, time, features]" in capsys.readouterr().err
    src = keras.Sequential([keras.Input((4, 3)), layers.SRC(5), layers.LI(2)])
    src.save(tmp_path / "src.keras")
    assert _run("export", tmp_path / "src.keras", "--to", "nir", "-o", tmp_path / "s.nir") == 2
    err = capsys.readouterr().err
    assert "SRC" in err and "nir" in err
    with pytest.raises(SystemExit):
        _run("export", folder / "model.keras", "--to", "onnx", "-o", tmp_path / "x")


def test_console_script_is_installed():
    script = os.path.join(os.path.dirname(sys.executable), "keras-spiking")
    result = subprocess.run(
        [script, "export", "--help"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0 and "streaming-int8" in result.stdout
