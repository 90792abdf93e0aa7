"""End to end: the quick-start demo trains, saves, exports and reloads in a fresh process."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_demo_round_trip(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "examples" / "demo.py"),
            "--out",
            str(tmp_path),
            "--epochs",
            "2",
            "--steps",
            "10",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        # as a user runs it: the demo itself must keep TensorFlow's C++ log lines quiet
        env={k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"},
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "Test accuracy:" in result.stdout
    # the kernel status comes first, in one line; no TF start-up or converter log lines
    assert result.stdout.startswith("keras_spiking kernels: loaded, target "), result.stdout[:300]
    for noise in ("cpu_feature_guard", "Reading SavedModel", "flatbuffer_export", "fully_quantize"):
        assert noise not in result.stdout + result.stderr, noise
    assert result.stdout.count(": OK") == 2  # .keras and SavedModel both reproduce
    assert (tmp_path / "model.keras").exists()
    assert (tmp_path / "saved_model" / "saved_model.pb").exists()
    # the int8 streaming model ran in TFLite Micro and its summary was printed
    assert (tmp_path / "model_streaming_int8.tflite").stat().st_size > 0
    assert "TFLite Micro (int8) test accuracy" in result.stdout
    assert "ran in TFLite Micro" in result.stdout
