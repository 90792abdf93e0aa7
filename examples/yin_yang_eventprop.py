"""Train a 5-200-3 spiking network on Yin-Yang with exact EventProp gradients (``model.fit``).

The setup of Wunderlich & Pehle (2021): the coordinates (x, y, 1 - x, 1 - y) are sent as one
spike each at ``30 ms * value``, plus a bias spike at 0; 200 current-based LIF neurons
(tau_mem 20 ms, tau_syn 5 ms, threshold 1, reset to 0) feed 3 output LIF neurons, and the
class is the output that spikes first. Loss: the paper's time-to-first-spike cross-entropy
with its early-spike regulariser. The network is simulated on a grid (``--dt``) with exact
exponential updates and interpolated spike times; the gradient is the adjoint of that
simulation (``keras_spiking.eventprop``).

Run: ``.venv/bin/python examples/yin_yang_eventprop.py``. The README records the accuracy this
script printed, with its arguments.
"""

from __future__ import annotations

import argparse
import time

import keras
import numpy as np

import keras_spiking as ks


def build_model(args) -> keras.Model:
    """5 input spike times -> EventPropCubaLIF(hidden) -> EventPropCubaLIF(3)."""
    # with a slot per step no neuron can overflow; a smaller buffer saves memory but a
    # dropped spike leaves the gradient approximate, so it only warns
    overflow = "raise" if args.max_spikes >= args.steps else "warn"
    common = {"steps": args.steps, "dt": args.dt, "min_slope": args.min_slope or None}
    return keras.Sequential(
        [
            keras.Input((5, 1)),
            ks.layers.EventPropCubaLIF(
                args.hidden,
                max_spikes=args.max_spikes,
                on_overflow=overflow,
                kernel_initializer=keras.initializers.RandomNormal(args.w1_mean, args.w1_std),
                silent_bump=args.silent_bump,
                name="hidden",
                **common,
            ),
            ks.layers.EventPropCubaLIF(
                3,
                # only the first spike counts for the loss, but the later ones must be
                # recorded too: the backward needs every reset
                max_spikes=args.max_spikes,
                on_overflow=overflow,
                kernel_initializer=keras.initializers.RandomNormal(args.w2_mean, args.w2_std),
                silent_bump=args.silent_bump,
                name="output",
                **common,
            ),
        ]
    )


def main(argv: list[str] | None = None) -> float:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--hidden", type=int, default=200)
    parser.add_argument("--dt", type=float, default=1e-3, help="grid step, seconds")
    parser.add_argument("--steps", type=int, default=60, help="window = steps * dt")
    parser.add_argument("--max-spikes", type=int, default=60, help="slots per neuron")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=5e-3)
    parser.add_argument("--lr-decay", type=float, default=0.95, help="per epoch")
    parser.add_argument("--w1-mean", type=float, default=1.5)
    parser.add_argument("--w1-std", type=float, default=1.5)
    parser.add_argument("--w2-mean", type=float, default=0.2)
    parser.add_argument("--w2-std", type=float, default=0.4)
    parser.add_argument("--silent-bump", type=float, default=0.0)
    # the denominator clamp keeps training stable: without it (seed 0, same settings) the
    # validation accuracy reached 98.2 % at epoch 25 and collapsed to 50 % at epoch 28
    parser.add_argument("--min-slope", type=float, default=10.0, help="1/s; 0 = exact")
    parser.add_argument("--clipnorm", type=float, default=None, help="Adam gradient clipping")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--verbose", type=int, default=2)
    args = parser.parse_args(argv)

    keras.utils.set_random_seed(args.seed)
    data = {
        split: ks.datasets.yin_yang(n, seed=seed, encoding="spike_times", bias_spike=True)
        for split, n, seed in (("train", 5000, 42), ("val", 1000, 41), ("test", 1000, 40))
    }
    data = {k: (x[..., None].astype("float32"), y) for k, (x, y) in data.items()}
    x_train, y_train = data["train"]

    model = build_model(args)
    steps_per_epoch = int(np.ceil(len(x_train) / args.batch_size))
    schedule = keras.optimizers.schedules.ExponentialDecay(
        args.lr, decay_steps=steps_per_epoch, decay_rate=args.lr_decay, staircase=True
    )
    model.compile(
        keras.optimizers.Adam(schedule, clipnorm=args.clipnorm),
        ks.losses.FirstSpikeTimeCrossEntropy(silent_time=args.steps * args.dt),
        metrics=[ks.losses.FirstSpikeAccuracy(name="accuracy")],
    )
    start = time.perf_counter()
    model.fit(
        x_train,
        y_train,
        validation_data=data["val"],
        epochs=args.epochs,
        batch_size=args.batch_size,
        verbose=args.verbose,
    )
    train_seconds = time.perf_counter() - start
    _, accuracy = model.evaluate(*data["test"], verbose=0)
    hidden = keras.Model(model.inputs, model.get_layer("hidden").output)
    spikes = np.isfinite(hidden.predict(data["test"][0][:256], verbose=0)).sum(-1)
    print(
        f"Yin-Yang EventProp test accuracy: {100 * accuracy:.2f}% ({args.epochs} epochs, "
        f"{train_seconds:.0f} s training, seed {args.seed}, dt {args.dt * 1e3:g} ms)"
    )
    print(
        f"  hidden: {spikes.mean():.2f} spikes per neuron and sample, "
        f"{int((spikes.sum(0) == 0).sum())} of {spikes.shape[1]} neurons silent"
    )
    return accuracy


if __name__ == "__main__":
    main()
