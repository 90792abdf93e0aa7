"""EventProp forward + backward: the C++ kernels against the pure-TF twin, side by side.

What is measured
----------------
One forward and backward pass (``tf.GradientTape``, no optimizer update) of two networks of
:mod:`keras_spiking.eventprop` layers, built from ``spiking_layer`` and ``readout_layer``:

* **yin-yang** ``5 -> 200 -> 3`` (4 latency-coded features plus a bias spike at 0, the
  Yin-Yang setup of Wunderlich & Pehle 2021: ``t = 30 ms * x``);
* **mnist** ``784 -> 350 -> 10`` (``t = 20 ms * (1 - pixel)``, so every pixel spikes once,
  zero pixels last, as in the paper; synthetic images with about 19 % nonzero pixels);

batch 32, 60 steps of 1 ms, ``tau_mem = 20 ms``, ``tau_syn = 5 ms``, threshold 1, interpolated
spike times, hidden ``max_spikes = 10``, loss = softmax cross-entropy of the readout's maximum
(``readout="max"``). Both paths run inside one ``tf.function`` each
(``use_custom_ops=True`` / ``False``), on the same inputs and weights, in one process with the
same threads; before timing, the script checks that they give the same loss and gradients.

Timing: ``--warmup`` calls, then ``--repeats`` timed calls taken round-robin (one call of each
path per round, so load from other processes hits both alike). Reported: median ms per call
of each path and the ratio ``TF twin / kernels`` (how many times faster the kernels are).

Usage::

    python benchmarks/eventprop_kernels.py              # defaults above
    python benchmarks/eventprop_kernels.py --quick      # smoke run
    python benchmarks/eventprop_kernels.py --threads 1 --float64
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from keras_spiking import eventprop as ep  # noqa: E402
from keras_spiking import ops  # noqa: E402
from keras_spiking.encoders import latency_times  # noqa: E402

KIN = ep.Kinetics(tau_mem=20e-3, tau_syn=5e-3, threshold=1.0, dt=1e-3, steps=60)
MAX_SPIKES = 10
# (name, inputs, hidden, outputs, hidden weight mean, std): weights chosen so that hidden
# neurons spike about once or twice per sample (printed below)
NETWORKS = (
    ("yin-yang 5-200-3", 5, 200, 3, 2.0, 1.5),
    ("mnist 784-350-10", 784, 350, 10, 0.012, 0.06),
)


def _inputs(inputs, batch, rng, dtype):
    if inputs == 5:  # yin-yang: (x, y, 1 - x, 1 - y) plus the bias spike
        xy = rng.uniform(0, 1, (batch, 2))
        x = np.concatenate([xy, 1 - xy], axis=1)
        return latency_times(tf.constant(x, dtype), 30e-3, bias_time=0.0)
    pixels = rng.uniform(0, 1, (batch, inputs)) * (rng.random((batch, inputs)) < 0.19)
    return latency_times(tf.constant(pixels, dtype), 20e-3, invert=True)


def _step_fn(use_custom_ops, n_out):
    @tf.function
    def step(times, w1, w2, labels):
        with tf.GradientTape() as tape:
            tape.watch([w1, w2])
            hidden = ep.spiking_layer(
                times,
                w1,
                kinetics=KIN,
                max_spikes=MAX_SPIKES,
                on_overflow="warn",
                use_custom_ops=use_custom_ops,
            )
            out = ep.readout_layer(
                hidden, w2, kinetics=KIN, readout="max", use_custom_ops=use_custom_ops
            )
            loss = tf.reduce_mean(
                tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=out)
            )
        d_w1, d_w2 = tape.gradient(loss, [w1, w2])
        return loss, d_w1, d_w2, hidden

    return step


def _check_same(name, kernel_result, twin_result, dtype):
    tol = 1e-8 if dtype == tf.float64 else 2e-3
    for what, a, b in zip(("loss", "d_w1", "d_w2"), kernel_result[:3], twin_result[:3]):
        a, b = a.numpy(), b.numpy()
        scale = max(float(np.max(np.abs(b))), 1e-30)
        error = float(np.max(np.abs(a - b))) / scale
        if error > tol:
            raise SystemExit(f"{name}: kernels and twin differ in {what} (rel. error {error:.2e})")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--threads", type=int, default=0, help="TF intra/inter-op threads")
    parser.add_argument("--float64", action="store_true")
    parser.add_argument("--quick", action="store_true", help="1 warmup, 2 repeats")
    args = parser.parse_args(argv)
    if args.quick:
        args.warmup, args.repeats = 1, 2
    if args.threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    ops.library.eventprop_library()  # build before timing; raises if the kernels are missing
    dtype = tf.float64 if args.float64 else tf.float32
    print(
        f"EventProp forward+backward, batch {args.batch}, {KIN.steps} steps of "
        f"{KIN.dt * 1e3:g} ms, {dtype.name}, {os.cpu_count()} CPUs, threads "
        f"{args.threads or 'TF default'}; median of {args.repeats} calls"
    )
    header = f"{'network':<20} {'kernels ms':>11} {'TF twin ms':>11} {'twin/kernels':>13}  activity"
    print(header)
    print("-" * len(header))
    rng = np.random.default_rng(0)
    for name, n_in, n_hidden, n_out, mean, std in NETWORKS:
        times = _inputs(n_in, args.batch, rng, dtype)
        w1 = tf.constant(rng.normal(mean, std, (times.shape[1], n_hidden)), dtype)
        w2 = tf.constant(rng.normal(0.0, 1.0, (n_hidden, n_out)), dtype)
        labels = tf.constant(rng.integers(0, n_out, args.batch), tf.int32)
        paths = {"kernels": _step_fn(True, n_out), "twin": _step_fn(False, n_out)}
        results = {key: fn(times, w1, w2, labels) for key, fn in paths.items()}
        _check_same(name, results["kernels"], results["twin"], dtype)
        hidden = results["kernels"][3].numpy()
        spikes = np.isfinite(hidden).sum(axis=-1)
        activity = (
            f"{spikes.mean():.2f} spikes/neuron, {100 * (spikes > 0).mean():.0f}% active, "
            f"{np.isfinite(times.numpy()).sum() / args.batch:.0f} input spikes/sample"
        )
        for _ in range(args.warmup):
            for fn in paths.values():
                fn(times, w1, w2, labels)[0].numpy()
        samples = {key: [] for key in paths}
        for _ in range(args.repeats):
            for key, fn in paths.items():
                start = time.perf_counter()
                fn(times, w1, w2, labels)[0].numpy()
                samples[key].append(time.perf_counter() - start)
        k_ms = 1e3 * statistics.median(samples["kernels"])
        t_ms = 1e3 * statistics.median(samples["twin"])
        print(f"{name:<20} {k_ms:>11.2f} {t_ms:>11.2f} {t_ms / k_ms:>12.1f}x  {activity}")


if __name__ == "__main__":
    main()
