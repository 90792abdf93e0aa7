"""One training step of a Spiking Recurrent Cell network next to the same LIF network.

What is measured
----------------
One full training step -- forward, backward (BPTT) and an Adam update -- of::

    784 inputs -> 100 neurons -> 10 neurons,  T = 100 steps, batch 64, float32

with Bernoulli input spikes at 5 % density (fixed seed) and the spike-count cross-entropy
``L = CE(softmax(a * sum_t s_out[t]), y)`` on the 10 output neurons (``a = 0.2``). Rows, each
a ``tf.function`` (``tf.GradientTape`` + ``keras.optimizers.Adam``) built from the same inputs:

* **SRC, XLA**: ``SRC(100), SRC(10)`` with ``jit_compile=True`` (the default): XLA-compiled
  forward loop and a hand-written backward loop in a second XLA function (see
  :mod:`keras_spiking.src_scan`);
* **SRC, plain**: the same with ``jit_compile=False`` (``tf.while_loop`` + TF autodiff);
* **LIF, XLA**: ``LIF(100), LIF(10)`` (fast-sigmoid surrogate, the defaults), whose scan is
  XLA-compiled with a hand-written backward (:mod:`keras_spiking.scan`), or, when the C++
  kernels of :mod:`keras_spiking.ops` build (``use_custom_ops="auto"``), the fused kernels in
  training calls; set ``KERAS_SPIKING_CUSTOM_OPS=0`` for the pure-TF LIF rows;
* **LIF, plain**: the LIF layers with ``jit_compile=False``.

Timing: ``--warmup`` untimed steps per row, then ``--repeats`` rounds; each round runs one step
of every row (interleaved, so a burst of load from other processes hits all rows alike). The
table gives the median and interquartile range in ms and each row's ratio to "LIF, XLA". The
script prints the load average before and after: on a shared machine the numbers are only
comparable within one run.

Measured before the C++ kernels existed (2026-11-23, 2 shared CPU cores, TF 2.21; median ms,
ratio to LIF, XLA; the README has a run with and without the kernels):

| row | 2 threads, load 1.2 | / LIF | 1 thread, load 2.4 | / LIF |
|---|---:|---:|---:|---:|
| SRC, XLA (hand-written backward) | 43.2 | 1.31 | 50.0 | 1.22 |
| SRC, plain | 87.5 | 2.66 | 89.2 | 2.18 |
| LIF, XLA | 32.9 | 1.00 | 40.9 | 1.00 |
| LIF, plain | 53.5 | 1.63 | 52.8 | 1.29 |

(``python benchmarks/src_step.py --repeats 15`` with ``--threads 2`` / ``--threads 1``; the
1-thread run shared the machine with a 1-thread training job.) SRC's XLA path was 2.03x and
1.79x faster than its plain path there. An earlier run of the first XLA
version (TF autodiff inside the compiled backward, see ``docs/src.md``), 2 threads,
quiet machine: SRC XLA 80.6 ms, SRC plain 70.8 ms, LIF XLA 26.6 ms, LIF plain 41.6 ms.

Usage::

    python benchmarks/src_step.py                  # defaults above, 2 threads, 20 repeats
    python benchmarks/src_step.py --quick          # smoke run
    python benchmarks/src_step.py --skip src_plain,lif_plain --repeats 50
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np

N_IN, N_HIDDEN, N_OUT = 784, 100, 10
COUNT_SCALE = 0.2

ROWS = {
    "src_xla": "SRC, XLA (jit_compile=True)",
    "src_plain": "SRC, plain (jit_compile=False)",
    "lif_xla": "LIF, XLA (jit_compile=True)",
    "lif_plain": "LIF, plain (jit_compile=False)",
}
REFERENCE = "lif_xla"


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2, help="TF intra/inter-op threads")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=100, help="time steps T")
    parser.add_argument("--density", type=float, default=0.05, help="input spike probability")
    parser.add_argument("--repeats", type=int, default=20, help="timed steps per row")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps per row")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip", default="", help=f"comma-separated rows: {', '.join(ROWS)}")
    parser.add_argument("--quick", action="store_true", help="smoke run: few repeats")
    args = parser.parse_args(argv)
    if args.quick:
        args.repeats, args.warmup = 3, 1
    unknown = {s for s in args.skip.split(",") if s} - set(ROWS)
    if unknown:
        parser.error(f"--skip: unknown rows {sorted(unknown)}; choose from {list(ROWS)}")
    return args


def make_step(kind: str, jit: bool, seed: int, steps: int):
    """A compiled train step ``step(x, y) -> loss`` of a 784-100-10 ``kind`` network."""
    import keras
    import tensorflow as tf

    import keras_spiking as ks

    keras.utils.set_random_seed(seed)
    if kind == "src":
        hidden = ks.layers.SRC(N_HIDDEN, jit_compile=jit, name="hidden")
        output = ks.layers.SRC(N_OUT, jit_compile=jit, name="output")
    else:
        hidden = ks.layers.LIF(N_HIDDEN, jit_compile=jit, name="hidden")
        output = ks.layers.LIF(N_OUT, jit_compile=jit, name="output")
    model = keras.Sequential([keras.Input((steps, N_IN)), hidden, output])
    loss_fn = ks.losses.SpikeCountCrossEntropy(COUNT_SCALE)
    optimizer = keras.optimizers.Adam(1e-3)
    optimizer.build(model.trainable_variables)

    @tf.function
    def step(x, y):
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    return step


def main(argv=None) -> dict[str, list[float]]:
    args = parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(args.threads)

    rng = np.random.default_rng(args.seed)
    x = tf.constant(
        (rng.uniform(size=(args.batch, args.steps, N_IN)) < args.density).astype("float32")
    )
    y = tf.constant(rng.integers(0, N_OUT, args.batch).astype("int32"))

    skip = {s for s in args.skip.split(",") if s}
    rows = [r for r in ROWS if r not in skip]
    steps = {}
    for row in rows:
        kind, path = row.split("_")
        steps[row] = make_step(kind, path == "xla", args.seed, args.steps)

    load_before = os.getloadavg()
    first_loss = {}
    for row in rows:
        start = time.perf_counter()
        first_loss[row] = float(steps[row](x, y))
        print(f"{ROWS[row]}: first step (trace + compile) {time.perf_counter() - start:.1f} s")
        for _ in range(args.warmup):
            steps[row](x, y).numpy()

    times: dict[str, list[float]] = {row: [] for row in rows}
    for _ in range(args.repeats):
        for row in rows:
            start = time.perf_counter()
            steps[row](x, y).numpy()
            times[row].append(1e3 * (time.perf_counter() - start))
    load_after = os.getloadavg()

    print()
    print(
        f"Train step, {N_IN}-{N_HIDDEN}-{N_OUT}, T = {args.steps}, batch {args.batch}, "
        f"{100 * args.density:g} % input spikes, float32, {args.threads} threads, "
        f"median of {args.repeats} (interleaved) after {args.warmup} warmup; "
        f"TF {tf.__version__}, {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs"
    )
    print(
        f"load average (1 min) before {load_before[0]:.2f}, after {load_after[0]:.2f}",
    )
    print()
    reference = float(np.median(times[REFERENCE])) if REFERENCE in times else None
    print("| row | median ms | IQR ms | / LIF, XLA | initial loss |")
    print("|---|---:|---:|---:|---:|")
    for row in rows:
        median = float(np.median(times[row]))
        q1, q3 = np.percentile(times[row], [25, 75])
        ratio = f"{median / reference:.2f}" if reference else "-"
        print(
            f"| {ROWS[row]} | {median:.1f} | {q1:.1f}-{q3:.1f} | {ratio} | {first_loss[row]:.4f} |"
        )
    if "src_xla" in times and "src_plain" in times:
        speedup = np.median(times["src_plain"]) / np.median(times["src_xla"])
        print(f"\nSRC: XLA path {speedup:.2f}x faster than the plain path")
    return times


if __name__ == "__main__":
    main()
