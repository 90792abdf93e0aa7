"""What the silent-layer check costs in a training step (measured side by side in one run).

In training every spiking layer reduces its output to one flag, "did any neuron fire on this
batch", and warns once when none did (:mod:`keras_spiking.silence`). This script times the
training step of ``benchmarks/train_step.py``'s network (700 inputs -> 256 LIF -> 20 LI,
T = 100, batch 64, 5 % input spikes, Adam) with the check and without it (the same model, the
same weights, the check left out of the traced step), round-robin, and prints the medians and
their ratio.

Usage::

    python benchmarks/silence_check_cost.py [--repeats 40] [--threads 2]
"""

from __future__ import annotations

import argparse
import platform
import time

import keras
import numpy as np
import tensorflow as tf

import keras_spiking as ks


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _train_step(model, optimizer, x, y):
    loss_fn = ks.losses.MaxMembraneCrossEntropy()

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    return step


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(args.threads)

    rng = np.random.default_rng(0)
    x = tf.constant((rng.uniform(size=(64, 100, 700)) < 0.05).astype("float32"))
    y = tf.constant(rng.integers(0, 20, 64))

    def build():
        keras.utils.set_random_seed(1)
        return keras.Sequential([keras.Input((100, 700)), ks.layers.LIF(256), ks.layers.LI(20)])

    with_check, without_check = build(), build()
    without_check.set_weights(with_check.get_weights())
    without_check.layers[0]._silence_warned = True  # the check is then not traced
    steps = {
        "with the check": _train_step(with_check, keras.optimizers.Adam(1e-3), x, y),
        "without it": _train_step(without_check, keras.optimizers.Adam(1e-3), x, y),
    }
    for step in steps.values():
        for _ in range(args.warmup):
            step().numpy()
    times = {name: [] for name in steps}
    for round_ in range(args.repeats):
        order = list(steps) if round_ % 2 == 0 else list(reversed(steps))
        for name in order:
            start = time.perf_counter()
            steps[name]().numpy()
            times[name].append(time.perf_counter() - start)
    print(f"CPU: {_cpu_model()}, {args.threads} threads, {args.repeats} rounds (alternating)")
    medians = {name: 1e3 * float(np.median(t)) for name, t in times.items()}
    for name, t in times.items():
        q1, q3 = np.percentile(1e3 * np.asarray(t), [25, 75])
        print(f"  {name:15s} median {medians[name]:7.2f} ms  (IQR {q1:.2f}-{q3:.2f})")
    print(f"  ratio with / without: {medians['with the check'] / medians['without it']:.3f}")


if __name__ == "__main__":
    main()
