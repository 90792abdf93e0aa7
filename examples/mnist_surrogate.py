"""Feed-forward spiking network on full MNIST, trained with surrogate gradients in ``model.fit``.

Each image is presented as a constant input current for ``--steps`` time steps ("direct"
encoding: the first LIF layer turns pixel intensities into spikes), through two LIF layers
(fast-sigmoid surrogate) into a leaky-integrator readout whose maximum membrane over time is
the class score (``MaxMembraneCrossEntropy``). ``--encoding rate`` feeds Poisson spikes instead.

Data: ``--data DIR`` (a folder of the four IDX files, raw or .gz), else the environment
variable ``KERAS_SPIKING_DATA``, else tensorflow-datasets (which downloads). In this
repository's development machines the files are in ``../shared/data/mnist``, which is the
default when it exists.

Run: ``.venv/bin/python examples/mnist_surrogate.py`` (see README for time and accuracy).
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


def build_model(steps: int, hidden: tuple[int, ...], encoding: str, seed: int) -> keras.Model:
    """784 pixels -> (constant current or Poisson spikes) x steps -> LIF layers -> LI(10)."""
    model_layers: list = [keras.Input((784,))]
    if encoding == "direct":
        model_layers.append(keras.layers.RepeatVector(steps))
    else:
        model_layers.append(ks.encoders.RateEncoder(steps, seed=seed))
    for i, units in enumerate(hidden):
        model_layers.append(ks.layers.LIF(units, tau_mem=20e-3, use_bias=True, name=f"lif{i + 1}"))
    model_layers.append(ks.layers.LI(10, tau_mem=20e-3, name="readout"))
    return keras.Sequential(model_layers)


def load(data: str | None, split: str):
    """Flattened MNIST split, from ``data`` / $KERAS_SPIKING_DATA / the shared folder / tfds."""
    path = data or os.environ.get(ks.datasets.DATA_ENV_VAR)
    if path is None and SHARED_MNIST.exists():
        path = str(SHARED_MNIST)
    return ks.datasets.mnist(split, path=path, flatten=True)


def main(argv: list[str] | None = None) -> float:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=None, help="folder with the MNIST IDX files")
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--steps", type=int, default=10, help="time steps per image")
    parser.add_argument("--hidden", type=int, nargs="+", default=[512, 512])
    parser.add_argument("--encoding", choices=["direct", "rate"], default="direct")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--limit", type=int, default=None, help="use only N training images")
    parser.add_argument("--save", default=None, help="write the trained model to this .keras")
    parser.add_argument("--verbose", type=int, default=2)
    args = parser.parse_args(argv)

    keras.utils.set_random_seed(args.seed)
    x_train, y_train = load(args.data, "train")
    x_test, y_test = load(args.data, "test")
    if args.limit:
        x_train, y_train = x_train[: args.limit], y_train[: args.limit]

    model = build_model(args.steps, tuple(args.hidden), args.encoding, args.seed)
    steps_per_epoch = int(np.ceil(len(x_train) / args.batch_size))
    schedule = keras.optimizers.schedules.CosineDecay(args.lr, args.epochs * steps_per_epoch)
    model.compile(
        keras.optimizers.Adam(schedule),
        ks.losses.MaxMembraneCrossEntropy(),
        metrics=[ks.losses.SparseReadoutAccuracy("max", name="accuracy")],
    )
    start = time.perf_counter()
    # no validation split: all 60000 images train, and the test set is touched once, at the end
    model.fit(
        x_train, y_train, epochs=args.epochs, batch_size=args.batch_size, verbose=args.verbose
    )
    seconds = time.perf_counter() - start
    _, accuracy = model.evaluate(x_test, y_test, batch_size=500, verbose=0)
    print(
        f"MNIST test accuracy: {100 * accuracy:.2f}% (hidden {args.hidden}, {args.steps} steps, "
        f"{args.encoding} encoding, {args.epochs} epochs, {seconds / 60:.1f} min, "
        f"seed {args.seed})"
    )
    for name, rate in ks.metrics.firing_rates(model, x_test[:500]).items():
        print(
            f"  {name}: mean firing rate {rate.mean():.3f} spikes/step, "
            f"{int((rate == 0).sum())} of {rate.size} neurons silent"
        )
    if args.save:
        model.save(args.save)
    return accuracy


if __name__ == "__main__":
    main()
