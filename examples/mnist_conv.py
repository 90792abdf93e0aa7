"""Spiking conv network 15C5-P2-40C5-P2-300-10 on full MNIST, trained with surrogate gradients.

The network of the Neighborhood-Aggregation paper (Yang et al. 2021): each 28x28 image is
held for ``--steps`` 5 time steps (direct input coding, ``RepeatSteps``), then
``ConvLIF2D(15, 5)`` -> ``SumPooling2D(2)`` -> ``ConvLIF2D(40, 5)`` -> ``SumPooling2D(2)`` ->
``SpatialFlatten`` -> ``LIF(300)`` -> ``LI(10)``, whose maximum membrane over time is the class
score (``MaxMembraneCrossEntropy``), trained by BPTT with the fast-sigmoid surrogate in
``model.fit``. Defaults: tau_mem 20 ms (dt 1 ms), threshold 1, surrogate scale 10, bias on,
random shifts of up to 2 pixels (``RandomTranslation`` before ``RepeatSteps``; training only,
the identity at inference), no dropout, Adam 2e-3 with cosine decay to zero, batch 128,
15 epochs.

Sum pooling rather than average pooling: the pooled values are spike counts (integers, what a
chip's synapses add up, NIR ``SumPool2d``); average pooling only divides the next layer's
input by 4, which the trainable kernel absorbs, so there was no accuracy reason to prefer it.

Tuning: ``--validation N`` holds out the last N training images and reports on them instead
of the test set. Protocol: 55000 training / the last 5000 as validation, 15 epochs, seed 0,
all other defaults; three settings compared by their final validation accuracy: no
augmentation (``--shift 0``) 99.20% (train accuracy 100%: overfits), random shifts of 2
pixels + dropout 0.2 before and after the 300-neuron layer (``--dropout 0.2``) 99.34%,
random shifts of 2 pixels alone 99.38% (chosen; the last two differ by 2 of 5000 images).
The test set was evaluated once, with the chosen defaults, after training on all 60000
training images.

Measured: 99.38% MNIST test accuracy after 15 epochs on all 60000 training images, 12.8 min
of training (51 s per epoch) on a 2-core AMD EPYC CPU (shared machine, other jobs running),
seed 0, command ``.venv/bin/python examples/mnist_conv.py``; mean firing rates 0.022 (conv1),
0.036 (conv2) and 0.231 (fc) spikes/step on 500 test images (the silent conv1 neurons are
mostly at the image border, where MNIST is blank).

Where the time goes (one training batch of 128, layer by layer, forward + backward): the
first conv layer takes most of it, and of that most is the convolution itself, which runs
on all ``batch x steps`` = 640 copies of the held image; the neuron scans and the dense layers
are a small part.

Data: ``--data DIR`` (a folder of the four IDX files, raw or .gz), else the environment
variable ``KERAS_SPIKING_DATA``, else tensorflow-datasets (which downloads). In this
repository's development machines the files are in ``../shared/data/mnist``, which is the
default when it exists. ``--output DIR`` (default ``outputs/mnist_conv``) receives the trained
``model.keras`` and ``results.json`` (accuracy, timings, firing rates, CPU, options).

Run: ``.venv/bin/python examples/mnist_conv.py``.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import _common
import keras

import keras_spiking as ks

LOSSES = {
    "max": ks.losses.MaxMembraneCrossEntropy,
    "mean": ks.losses.MeanMembraneCrossEntropy,
}
POOLING = {"sum": ks.layers.SumPooling2D, "average": ks.layers.AveragePooling2D}


def build_model(
    steps: int,
    seed: int,
    *,
    tau_mem: float = 20e-3,
    threshold: float = 1.0,
    surrogate_scale: float = 10.0,
    dropout: float = 0.0,
    shift: int = 0,
    pooling: str = "sum",
    use_bias: bool = True,
) -> keras.Model:
    """28x28 image -> (held for ``steps`` steps) 15C5-P2-40C5-P2-300 LIF -> LI(10) readout."""
    surrogate = {"class_name": "fast_sigmoid", "config": {"scale": surrogate_scale}}
    neuron = {
        "tau_mem": tau_mem,
        "threshold": threshold,
        "surrogate": surrogate,
        "use_bias": use_bias,
    }
    model_layers: list = [keras.Input((28, 28, 1))]
    if shift:
        # random shifts of up to `shift` pixels, training only (identity at inference)
        model_layers.append(
            keras.layers.RandomTranslation(
                shift / 28, shift / 28, fill_mode="constant", seed=seed, name="shift"
            )
        )
    model_layers += [
        ks.layers.RepeatSteps(steps, name="repeat"),  # direct input coding
        ks.layers.ConvLIF2D(15, 5, name="conv1", **neuron),
        POOLING[pooling](2, name="pool1"),
        ks.layers.ConvLIF2D(40, 5, name="conv2", **neuron),
        POOLING[pooling](2, name="pool2"),
        ks.layers.SpatialFlatten(name="flatten"),
    ]
    if dropout:
        # on [batch, time, features]: an independent mask per time step
        model_layers.append(keras.layers.Dropout(dropout, seed=seed, name="drop1"))
    model_layers.append(ks.layers.LIF(300, name="fc", **neuron))
    if dropout:
        model_layers.append(keras.layers.Dropout(dropout, seed=seed + 1, name="drop2"))
    model_layers.append(ks.layers.LI(10, tau_mem=tau_mem, name="readout"))
    return keras.Sequential(model_layers)


def main(argv: list[str] | None = None) -> float:
    parser = _common.make_parser(__doc__, epochs=15, batch_size=128, lr=2e-3)
    _common.add_mnist_options(parser)
    parser.add_argument("--steps", type=int, default=5, help="time steps per image")
    parser.add_argument("--tau-mem", type=float, default=20e-3, help="seconds (dt = 1 ms)")
    parser.add_argument("--threshold", type=float, default=1.0)
    parser.add_argument("--surrogate-scale", type=float, default=10.0, help="fast sigmoid k")
    parser.add_argument("--dropout", type=float, default=0.0, help="before and after fc")
    parser.add_argument("--shift", type=int, default=2, help="random shifts, pixels (train)")
    parser.add_argument("--pooling", choices=sorted(POOLING), default="sum")
    parser.add_argument("--loss", choices=sorted(LOSSES), default="max", help="membrane readout")
    parser.add_argument(
        "--output",
        default="outputs/mnist_conv",
        help="folder for model.keras and results.json ('' writes nothing)",
    )
    args = parser.parse_args(argv)

    keras.utils.set_random_seed(args.seed)

    def images(split):
        x, y = _common.load_mnist(args.data, split)
        return x.reshape(-1, 28, 28, 1).astype("float32"), y

    x_test, y_test = images("test")
    (x_train, y_train), validation_data = _common.hold_out(*images("train"), args.validation)
    x_train, y_train = _common.first(x_train, y_train, args.limit)

    model = build_model(
        args.steps,
        args.seed,
        tau_mem=args.tau_mem,
        threshold=args.threshold,
        surrogate_scale=args.surrogate_scale,
        dropout=args.dropout,
        shift=args.shift,
        pooling=args.pooling,
    )
    model.compile(
        _common.cosine_adam(args, len(x_train)),
        LOSSES[args.loss](),
        metrics=[_common.readout_accuracy(args.loss)],
    )
    # by default all 60000 images train, and the test set is touched once, at the end;
    # tune with --validation instead (the last N training images, never the test set)
    seconds = _common.timed_fit(model, x_train, y_train, args, validation_data=validation_data)
    split, (x_eval, y_eval) = (
        ("validation", validation_data) if validation_data else ("test", (x_test, y_test))
    )
    start = time.perf_counter()
    _, accuracy = model.evaluate(x_eval, y_eval, batch_size=500, verbose=0)
    eval_seconds = time.perf_counter() - start
    print(
        f"MNIST {split} accuracy: {100 * accuracy:.2f}% (15C5-P2-40C5-P2-300-10, {args.steps} "
        f"steps, {args.epochs} epochs on {len(x_train)} images, {seconds / 60:.1f} min "
        f"({seconds / args.epochs:.0f} s/epoch), seed {args.seed})"
    )
    rates = _common.print_firing_rates(model, x_eval[:500])
    _common.print_machine()
    if args.output:
        out = Path(args.output)
        out.mkdir(parents=True, exist_ok=True)
        model.save(out / "model.keras")
        results = {
            "split": split,
            "accuracy": float(accuracy),
            "epochs": args.epochs,
            "train_images": len(x_train),
            "train_seconds": seconds,
            "seconds_per_epoch": seconds / args.epochs,
            "eval_seconds": eval_seconds,
            "firing_rates": {name: float(rate.mean()) for name, rate in rates.items()},
            "cpu": _common.cpu_model(),
            "cores": os.cpu_count(),
            "options": vars(args),
        }
        (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
        print(f"  saved {out / 'model.keras'} and {out / 'results.json'}")
    return accuracy


if __name__ == "__main__":
    main()
