"""Train a 784-350-10 spiking network on MNIST with exact EventProp gradients (``model.fit``).

The setup of Wunderlich & Pehle (2021): each pixel spikes once, at ``20 ms * (1 - pixel)``
(``keras_spiking.encoders.latency_times``), with input dropout 0.2 (``SpikeTimeDropout``);
350 current-based LIF neurons (tau_mem 20 ms, tau_syn 5 ms, threshold 1, reset to 0) feed 10
non-spiking leaky integrators, and the class score is each integrator's maximum voltage over
the window (the paper's loss ``-log softmax(max_t V)[label]``, ``--readout max``), or by
default the integrated-voltage loss of Nowotny et al. 2022 (``--readout integral``), which
did better on the validation split (98.54 % vs 98.08 % after 15 epochs, seed 0). Simulated on
a grid of ``--dt`` with exact exponential updates and interpolated spike times; the gradient
is the adjoint of that simulation (``keras_spiking.eventprop``).

Data: ``--data DIR`` (the four IDX files), else ``KERAS_SPIKING_DATA``, else
``../shared/data/mnist`` when it exists, else tensorflow-datasets (which downloads).

Run: ``.venv/bin/python examples/mnist_eventprop.py``. The README records the accuracy this
script printed, with its arguments.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import keras
import numpy as np

import keras_spiking as ks

SHARED_MNIST = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"


def load(data: str | None, split: str):
    path = data or os.environ.get(ks.datasets.DATA_ENV_VAR)
    if path is None and SHARED_MNIST.exists():
        path = str(SHARED_MNIST)
    x, y = ks.datasets.mnist(split, path=path, flatten=True)
    times = ks.encoders.latency_times(x, 20e-3, invert=True).numpy()
    return times, y


def build_model(args) -> keras.Model:
    common = {"steps": args.steps, "dt": args.dt}
    return keras.Sequential(
        [
            keras.Input((784, 1)),
            ks.layers.SpikeTimeDropout(args.input_dropout, seed=args.seed),
            ks.layers.EventPropCubaLIF(
                args.hidden,
                max_spikes=args.max_spikes,
                # with max_spikes >= steps no neuron can overflow (one spike per step at most);
                # a smaller buffer saves memory but drops spikes from the gradient ("warn")
                on_overflow="warn" if args.max_spikes < args.steps else "raise",
                kernel_initializer=keras.initializers.RandomNormal(args.w1_mean, args.w1_std),
                min_slope=args.min_slope or None,
                name="hidden",
                **common,
            ),
            ks.layers.EventPropLI(
                10,
                readout=args.readout,
                kernel_initializer=keras.initializers.RandomNormal(0.0, args.w2_std),
                name="readout",
                **common,
            ),
        ]
    )


def main(argv: list[str] | None = None) -> float:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=None, help="folder with the MNIST IDX files")
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--hidden", type=int, default=350)
    parser.add_argument("--dt", type=float, default=1e-3, help="grid step, seconds")
    parser.add_argument("--steps", type=int, default=40, help="window = steps * dt")
    parser.add_argument("--max-spikes", type=int, default=40, help="40 = steps: no overflow")
    parser.add_argument("--readout", choices=["max", "integral"], default="integral")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=5e-3)
    parser.add_argument("--lr-decay", type=float, default=0.95, help="per epoch")
    parser.add_argument("--input-dropout", type=float, default=0.2)
    parser.add_argument("--w1-mean", type=float, default=0.0)
    parser.add_argument("--w1-std", type=float, default=0.4)
    parser.add_argument("--w2-std", type=float, default=0.5)
    parser.add_argument("--min-slope", type=float, default=10.0, help="1/s; 0 = exact")
    parser.add_argument("--limit", type=int, default=None, help="use the first N train images")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--verbose", type=int, default=2)
    args = parser.parse_args(argv)

    keras.utils.set_random_seed(args.seed)
    x_train, y_train = load(args.data, "train")
    x_test, y_test = load(args.data, "test")
    if args.limit:
        x_train, y_train = x_train[: args.limit], y_train[: args.limit]
    # the last 5000 training images are the validation split (settings were tuned on it)
    x_val, y_val = x_train[-5000:], y_train[-5000:]
    x_train, y_train = x_train[:-5000], y_train[:-5000]

    model = build_model(args)
    steps_per_epoch = int(np.ceil(len(x_train) / args.batch_size))
    schedule = keras.optimizers.schedules.ExponentialDecay(
        args.lr, decay_steps=steps_per_epoch, decay_rate=args.lr_decay, staircase=True
    )
    model.compile(
        keras.optimizers.Adam(schedule),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    start = time.perf_counter()
    model.fit(
        x_train,
        y_train,
        validation_data=(x_val, y_val),
        epochs=args.epochs,
        batch_size=args.batch_size,
        verbose=args.verbose,
    )
    train_seconds = time.perf_counter() - start
    _, accuracy = model.evaluate(x_test, y_test, batch_size=256, verbose=0)
    hidden = keras.Model(model.inputs, model.get_layer("hidden").output)
    spikes = np.isfinite(hidden.predict(x_test[:512], verbose=0)).sum(-1)
    print(
        f"MNIST EventProp test accuracy: {100 * accuracy:.2f}% ({args.epochs} epochs, "
        f"{train_seconds:.0f} s training, seed {args.seed}, dt {args.dt * 1e3:g} ms, "
        f"readout {args.readout})"
    )
    print(
        f"  hidden: {spikes.mean():.2f} spikes per neuron and image, "
        f"{int((spikes.sum(0) == 0).sum())} of {spikes.shape[1]} neurons silent"
    )
    return accuracy


if __name__ == "__main__":
    main()
