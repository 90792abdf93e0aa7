"""The quick-start demo (``make demo``): train, save, export, reload and compare.

1. Trains a small spiking network (4 -> LIF 64 -> LIF 64 -> LI 3) on the Yin-Yang data set
   with ``model.fit`` (progress bar), prints the test accuracy and firing rates.
2. Saves it as a ``.keras`` file and exports a SavedModel (``model.export``).
3. Starts a fresh Python process that reloads both (the SavedModel with TensorFlow alone) and
   checks they give the same predictions as the trained model.
4. Exports the network for a microcontroller: a full-int8 TFLite model of one time step with
   the neuron state as explicit inputs and outputs (``keras_spiking.export.to_tflite``), runs it
   step by step over the test set in the TensorFlow Lite Micro interpreter, and prints its
   accuracy, its agreement with the Keras model, the model size and the smallest arena.

Everything goes to ``outputs/demo/`` (override with ``--out``). One to two minutes on 2 cores.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

# TensorFlow's C++ start-up and converter log lines hide what the demo prints; set
# TF_CPP_MIN_LOG_LEVEL=0 to see them
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import _common  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_spiking as ks  # noqa: E402
from keras_spiking import export  # noqa: E402

RELOAD_SCRIPT = textwrap.dedent(
    """
    import sys
    import numpy as np
    import tensorflow as tf
    out = sys.argv[1]
    x = np.load(f"{out}/x_test.npy")
    serving = tf.saved_model.load(f"{out}/saved_model")   # needs TensorFlow only
    np.save(f"{out}/pred_saved_model.npy", serving.serve(tf.constant(x)).numpy())
    import keras
    import keras_spiking  # registers the layers before loading the .keras file
    model = keras.models.load_model(f"{out}/model.keras")
    np.save(f"{out}/pred_keras.npy", model.predict(x, verbose=0))
    """
)


def main(argv: list[str] | None = None) -> int:
    parser = _common.make_parser(__doc__, epochs=12, seed=None, verbose=None)
    parser.add_argument("--out", default="outputs/demo")
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    print(ks.ops.status(), flush=True)  # builds the kernels on first use (20-60 s, once)

    keras.utils.set_random_seed(0)
    x_train, y_train = ks.datasets.yin_yang(5000, seed=42)
    x_test, y_test = ks.datasets.yin_yang(1000, seed=40)
    model = keras.Sequential(
        [
            keras.Input((4,)),
            keras.layers.RepeatVector(args.steps),  # the 4 coordinates as a constant input current
            ks.layers.LIF(64, use_bias=True, name="hidden1"),
            ks.layers.LIF(64, name="hidden2"),
            ks.layers.LI(3, name="readout"),
        ]
    )
    model.compile(
        keras.optimizers.Adam(3e-3),
        ks.losses.MaxMembraneCrossEntropy(),
        metrics=[_common.readout_accuracy("max")],
    )
    print(f"Training on {len(x_train)} Yin-Yang points, {args.steps} time steps each")
    model.fit(x_train, y_train, epochs=args.epochs, batch_size=32, verbose=1)

    _, accuracy = model.evaluate(x_test, y_test, verbose=0)
    print(f"\nTest accuracy: {100 * accuracy:.1f}%")
    _common.print_firing_rates(
        model,
        x_test,
        "{name}: {mean:.3f} spikes per neuron per step ({silent} of {size} neurons silent)",
    )

    model.save(out / "model.keras")
    model.export(str(out / "saved_model"), verbose=False)
    np.save(out / "x_test.npy", x_test)
    expected = model.predict(x_test, verbose=0)
    print(
        f"\nSaved {out / 'model.keras'} and exported {out / 'saved_model'}; reloading both "
        "in a fresh process ..."
    )
    quiet = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}  # no TF C++ banner in the child
    subprocess.run([sys.executable, "-c", RELOAD_SCRIPT, str(out)], check=True, env=quiet)

    ok = True
    for kind in ("keras", "saved_model"):
        got = np.load(out / f"pred_{kind}.npy")
        diff = float(np.max(np.abs(got - expected)))
        same_class = float(np.mean(got.max(axis=1).argmax(-1) == expected.max(axis=1).argmax(-1)))
        # float32 outputs of the same graph; the SavedModel may fuse ops in another order
        match = diff <= 1e-5
        ok &= match
        print(
            f"  {kind:12s} max |difference| {diff:.2e}, same class on {100 * same_class:.1f}% "
            f"of test points: {'OK' if match else 'MISMATCH'}"
        )
    ok &= run_on_microcontroller_interpreter(model, x_train, x_test, y_test, expected, out, args)
    print(
        "Demo finished: trained, saved, exported, reloaded, ran in TFLite Micro."
        if ok
        else "Demo FAILED"
    )
    return 0 if ok else 1


def run_on_microcontroller_interpreter(model, x_train, x_test, y_test, expected, out, args):
    """Step 4: streaming int8 TFLite, run in TFLite Micro over the test set."""
    print("\nExporting a streaming int8 TFLite model and running it in TFLite Micro ...")
    flatbuffer = export.to_tflite(
        model,
        mode="streaming",
        quantize="int8",
        representative_data=x_train[:256],  # calibration: the int8 scales of every tensor
        path=out / "model_streaming_int8.tflite",
    )
    steps = np.repeat(x_test[:, None], args.steps, axis=1)  # the constant input, every step
    report = export.tflm_check(flatbuffer, inputs=steps, streaming=True)
    if not report["ok"]:
        print(f"  TFLite Micro failed: {report['error']}")
        return False
    scale, zero_point = report["output_quantization"][0]
    # outputs [N, T, batch 1, 3] int8 -> real membranes [N, T, 3]
    readout = (report["outputs"][0][:, :, 0].astype(np.float32) - zero_point) * scale
    tflm_class = readout.max(axis=1).argmax(-1)
    keras_class = expected.max(axis=1).argmax(-1)
    print(
        f"  {out / 'model_streaming_int8.tflite'}: {len(flatbuffer)} bytes, "
        f"arena {report['arena_bytes']} bytes, {report['ops_per_invoke']} ops per step"
    )
    print(
        f"  TFLite Micro (int8) test accuracy {100 * np.mean(tflm_class == y_test):.1f}%, "
        f"same class as the Keras model on {100 * np.mean(tflm_class == keras_class):.1f}% "
        "of test points"
    )
    return True


if __name__ == "__main__":
    sys.exit(main())
