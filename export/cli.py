"""Command line: ``keras-spiking export MODEL.keras --to TARGET -o OUT``.

Targets:

* ``tflite``: float TFLite, the time window unrolled (``--num-steps``, default: the model's).
* ``tflite-int8``: the same, full int8 (needs ``--calibration``).
* ``streaming-int8``: one time step with the neuron state as explicit inputs and outputs, full
  int8 (needs ``--calibration``), for TFLite Micro.
* ``edgetpu``: int8 streaming model restricted to the Edge TPU's operators (needs
  ``--calibration``); prints which operators would fall back to the CPU.
* ``saved-model``: a SavedModel folder with ``serving_default`` (sequence) and ``step``
  signatures.
* ``nir``: an NIR file (HDF5) for neuromorphic toolchains.

``--calibration`` is a ``.npy`` file of representative inputs ``[samples, time, features]``
(a few hundred samples of the training data; conv models: ``[samples, time, *spatial,
channels]``, or ``[samples, *spatial, channels]`` when the model starts with
``RepeatSteps``). The exit status is 0 on success, 2 for a bad argument or a model the
target cannot express (the message says which layer and why).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

TARGETS = ("tflite", "tflite-int8", "streaming-int8", "edgetpu", "saved-model", "nir")
INT8_TARGETS = ("tflite-int8", "streaming-int8", "edgetpu")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="keras-spiking", description="keras_spiking tools (see `keras-spiking export -h`)."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    export = commands.add_parser(
        "export",
        help="export a saved .keras model",
        description=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    export.add_argument("model", help="a .keras file saved by model.save()")
    export.add_argument("--to", required=True, choices=TARGETS, help="export target")
    export.add_argument("-o", "--output", required=True, help="output file (or folder)")
    export.add_argument(
        "--calibration", help=".npy of representative inputs [samples, time, features]"
    )
    export.add_argument(
        "--num-steps", type=int, default=None, help="time steps of an unrolled TFLite model"
    )
    return parser


def _load_calibration(path: str | None, target: str):
    import numpy as np

    if path is None:
        raise ValueError(
            f"--to {target} quantizes to int8 and needs --calibration FILE.npy "
            "(representative inputs [samples, time, features])"
        )
    if not os.path.isfile(path):
        raise ValueError(f"--calibration: no such file {path!r}")
    data = np.load(path)
    if data.ndim < 3 or data.shape[0] == 0:
        raise ValueError(
            "--calibration: expected an array [samples, time, features] (conv models: "
            "[samples, time, *spatial, channels], or [samples, *spatial, channels] after a "
            f"leading RepeatSteps), got shape {data.shape}"
        )
    return data.astype("float32")


def export_model(args: argparse.Namespace) -> str:
    """Runs one export; returns a line describing what was written."""
    if not os.path.isfile(args.model):
        raise ValueError(f"MODEL: no such file {args.model!r}")
    if args.num_steps is not None and args.num_steps <= 0:
        raise ValueError(f"--num-steps must be > 0, got {args.num_steps}")
    import keras

    import keras_spiking  # noqa: F401  (registers the layers for loading)
    from keras_spiking import export

    model = keras.saving.load_model(args.model)
    target, out = args.to, args.output
    if target == "saved-model":
        export.to_saved_model(model, out, num_steps=args.num_steps)
        return f"wrote SavedModel {out} (signatures: serving_default, step)"
    if target == "nir":
        import nir

        nir.write(out, export.to_nir(model))
        return f"wrote NIR graph {out} ({os.path.getsize(out)} bytes)"
    calibration = _load_calibration(args.calibration, target) if target in INT8_TARGETS else None
    mode = "sequence" if target in ("tflite", "tflite-int8") else "streaming"
    data = export.to_tflite(
        model,
        mode=mode,
        quantize="int8" if calibration is not None else None,
        representative_data=calibration,
        num_steps=args.num_steps,
        edgetpu=target == "edgetpu",
        path=out,
    )
    ops = sorted(set(export.tflite_ops(data)))
    line = f"wrote {target} model {out} ({len(data)} bytes; operators: {', '.join(ops)})"
    if target == "edgetpu":
        line += "\n" + str(export.edgetpu_report(data))
    return line


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``keras-spiking`` console script."""
    args = _parser().parse_args(argv)
    # (TensorFlow's C++ start-up lines are quieted in keras_spiking/__init__.py, before
    # TensorFlow loads; the converter's in export/_native_output.py)
    from keras_spiking.export import ExportError

    try:
        print(export_model(args))
    except (ValueError, TypeError, ExportError) as error:
        print(f"keras-spiking export: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
