"""The MNIST surrogate model in a microcontroller runtime: streaming int8 in TFLite Micro.

Trains the model of ``examples/mnist_surrogate.py`` (or loads one with ``--model``), exports it
with ``keras_spiking.export.to_tflite(mode="streaming", quantize="int8")`` (one time step, the
neuron state as explicit int8 inputs and outputs whose scales are tied, so the loop copies the
new state into the state input unchanged) and runs it in the TensorFlow Lite Micro Python
interpreter over the MNIST test images, each image for ``--steps`` steps from zero states,
with the class read from the maximum readout membrane over time (as the Keras model's
accuracy metric does). The whole TFLM loop runs in one child process
(``keras_spiking.export.tflm_check(..., streaming=True)``); ``--limit N`` runs the first N
test images only. Prints the Keras accuracy on the same images, the TFLM accuracy, the
agreement of the two, the model size and the smallest TFLM arena.

Run: ``.venv/bin/python examples/export_to_mcu.py --epochs 5`` (or
``--model trained.keras`` to skip training; ``examples/mnist_surrogate.py --save`` writes one).
The conv network of ``examples/mnist_conv.py`` runs the same way:
``--model outputs/mnist_conv/model.keras`` (its input is the 28 x 28 x 1 image held for its
``RepeatSteps``).
"""

from __future__ import annotations

import time

import _common
import keras
import mnist_surrogate
import numpy as np

import keras_spiking as ks
from keras_spiking.export import tflm_check, to_tflite


def _input_quantization(model_bytes: bytes) -> tuple[float, int]:
    from ai_edge_litert.interpreter import Interpreter

    scale, zero = Interpreter(model_content=model_bytes).get_input_details()[0]["quantization"]
    return float(scale), int(zero)


def main(argv: list[str] | None = None) -> dict:
    parser = _common.make_parser(
        __doc__, epochs=5, epochs_help="training epochs (no --model)", verbose=None
    )
    _common.add_mnist_options(parser, limit_help="run only N test images", validation=False)
    parser.add_argument("--model", default=None, help="a trained .keras model (skips training)")
    parser.add_argument("--calibration", type=int, default=500, help="training images")
    parser.add_argument("--out", default=None, help="write the .tflite here")
    args = parser.parse_args(argv)

    keras.utils.set_random_seed(args.seed)
    x_train, y_train = _common.load_mnist(args.data, "train")
    x_test, y_test = _common.load_mnist(args.data, "test")
    if args.model:
        model = keras.models.load_model(args.model)
        print(f"loaded {args.model}")
    else:
        model = mnist_surrogate.build_model(10, (512, 512), "direct", args.seed)
        model.compile(
            keras.optimizers.Adam(1e-3),
            ks.losses.MaxMembraneCrossEntropy(),
            metrics=[_common.readout_accuracy("max")],
        )
        model.fit(x_train, y_train, epochs=args.epochs, batch_size=128, verbose=2)
    steps = next(
        getattr(layer, "n", None) or layer.num_steps
        for layer in model.layers
        if isinstance(layer, (keras.layers.RepeatVector, ks.layers.RepeatSteps))
    )
    image_shape = tuple(model.input_shape[1:])  # (784,) dense, (28, 28, 1) conv
    x_train = x_train.reshape(len(x_train), *image_shape)
    x_test = x_test.reshape(len(x_test), *image_shape)
    if args.limit:
        x_test, y_test = x_test[: args.limit], y_test[: args.limit]

    keras_scores = model.predict(x_test, batch_size=500, verbose=0).max(axis=1)
    keras_class = keras_scores.argmax(-1)

    start = time.perf_counter()
    model_bytes = to_tflite(
        model,
        mode="streaming",
        quantize="int8",
        representative_data=x_train[: args.calibration],
        path=args.out,
    )
    print(f"exported streaming int8 in {time.perf_counter() - start:.1f} s")

    start = time.perf_counter()
    # [N, T, 1, *image]: the constant image at every step, batch 1 as on a microcontroller;
    # quantized here with the input's scale (what the MCU's sensor code would do)
    scale, zero = _input_quantization(model_bytes)
    x_int8 = np.clip(np.round(x_test / scale) + zero, -128, 127).astype(np.int8)
    inputs = np.broadcast_to(x_int8[:, None, None], (len(x_test), steps, 1, *image_shape))
    report = tflm_check(model_bytes, inputs=inputs, streaming=True, progress=True)
    seconds = time.perf_counter() - start
    if not report["ok"]:
        raise SystemExit(f"TFLite Micro failed: {report['error']}")
    readout = report["outputs"][0][:, :, 0].astype(np.int32)  # [N, T, 10] int8 membranes
    tflm_class = readout.max(axis=1).argmax(-1)  # scale > 0: argmax of int8 = of real values

    results = {
        "images": len(x_test),
        "keras_accuracy": float(np.mean(keras_class == y_test)),
        "tflm_accuracy": float(np.mean(tflm_class == y_test)),
        "agreement": float(np.mean(keras_class == tflm_class)),
        "model_bytes": report["model_bytes"],
        "arena_bytes": report["arena_bytes"],
        "ops_per_step": report["ops_per_invoke"],
        "tflm_seconds": seconds,
    }
    print(
        f"MNIST test images: {results['images']} ({steps} steps each, "
        f"{results['images'] * steps} TFLM invokes in {seconds:.0f} s)\n"
        f"Keras accuracy:  {100 * results['keras_accuracy']:.2f}%\n"
        f"TFLM int8 accuracy: {100 * results['tflm_accuracy']:.2f}% "
        f"(decisions agree on {100 * results['agreement']:.2f}% of images)\n"
        f"model size: {results['model_bytes']} bytes; smallest TFLM arena: "
        f"{results['arena_bytes']} bytes (64-bit host build); "
        f"{results['ops_per_step']} ops per step: {report['op_counts']}"
    )
    _common.print_machine(indent="")
    return results


if __name__ == "__main__":
    main()
