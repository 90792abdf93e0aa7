"""The event-driven conv kernel against ``tf.nn.convolution``: forward and weight gradient.

The two conv layers of the network 15C5-P2-40C5-P2-300-10 at batch 64 x T = 5 time steps
folded into the batch (N = 320), float32, valid padding:

* conv1: 28 x 28 x 1 -> 15 filters 5 x 5;
* conv2: 12 x 12 x 15 -> 40 filters 5 x 5;

at 1, 5, 20 and 50 % Bernoulli input activity (``--densities``). Per layer and activity, side
by side in one run, timed round-robin (one sample of each row per round, so a burst of load
from other processes hits all rows alike), median of ``--repeats``:

* **event fwd**: ``KerasSpiking>EventConv2D`` (each active input scatters its kernel slice);
* **TF fwd**: ``tf.nn.convolution`` (oneDNN on x86);
* **event wgrad**: ``KerasSpiking>EventConv2DGradFilter`` (each active input gathers its
  output-gradient patch);
* **TF wgrad**: ``Conv2DBackpropFilter``, the op TF's autodiff of the convolution runs;
* **density**: what :func:`keras_spiking.ops.conv.conv_input` adds to pick the path (the
  sampled input density), for scale.

The ratios are TF time / event time (> 1: the event kernel is faster). Before timing, the
outputs of both paths are compared; the script exits with status 1 if they disagree.

Usage::

    python benchmarks/event_conv.py                 # 2 threads, 30 repeats
    python benchmarks/event_conv.py --threads 1 --repeats 50
    python benchmarks/event_conv.py --quick         # smoke run
"""

from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

LAYERS = {
    # name: (input [H, W, C], filters, kernel size)
    "conv1": ((28, 28, 1), 15, 5),
    "conv2": ((12, 12, 15), 40, 5),
}
# float32 sums in another order than oneDNN's: agreement to rounding, relative to the largest
TOLERANCE = 1e-4


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2, help="TF intra-op threads")
    parser.add_argument("--batch", type=int, default=320, help="images (batch x T folded)")
    parser.add_argument(
        "--densities", default="0.01,0.05,0.2,0.5", help="comma-separated input activities"
    )
    parser.add_argument("--repeats", type=int, default=30, help="timed samples per row")
    parser.add_argument("--warmup", type=int, default=3, help="untimed samples per row")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="smoke run: few repeats")
    return parser.parse_args(argv)


def _max_error(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max(initial=0.0) / max(1.0, np.abs(b).max(initial=0.0)))


def _time_round_robin(rows: dict, repeats: int, warmup: int) -> dict[str, float]:
    """Median seconds per call of each row, one sample of each per round."""
    for fn in rows.values():
        for _ in range(warmup):
            fn()
    samples = {name: [] for name in rows}
    for _ in range(repeats):
        for name, fn in rows.items():
            start = time.perf_counter()
            fn()
            samples[name].append(time.perf_counter() - start)
    return {name: float(np.median(s)) for name, s in samples.items()}


def _rows(lib, x, k, g) -> dict:
    """The timed calls for one layer and input (each returns its result)."""
    from keras_spiking.ops import conv

    attrs = {"strides": [1, 1], "padding": "VALID"}
    k_shape = tf.shape(k)
    return {
        "event fwd": lambda: lib.keras_spiking_event_conv2d(x, k, **attrs),
        "tf fwd": lambda: tf.nn.convolution(x, k, padding="VALID"),
        "event wg": lambda: lib.keras_spiking_event_conv2d_grad_filter(x, g, k_shape, **attrs),
        "tf wg": lambda: tf.raw_ops.Conv2DBackpropFilter(
            input=x, filter_sizes=k_shape, out_backprop=g, strides=[1, 1, 1, 1], padding="VALID"
        ),
        "density": lambda: conv.image_density(x).numpy(),
    }


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.quick:
        args.repeats, args.warmup = 3, 1
    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)

    from keras_spiking import _op_library
    from keras_spiking.ops import conv, dispatch

    lib = conv.conv_library()
    densities = [float(d) for d in args.densities.split(",")]
    rng = np.random.default_rng(args.seed)
    print(
        f"event conv vs tf.nn.convolution: {_op_library.cpu_model()}, {args.threads} thread(s), "
        f"TF {tf.__version__}, N = {args.batch}, float32, median of {args.repeats}"
    )
    print(
        f"{'layer':6} {'density':>7} | {'event fwd':>9} {'TF fwd':>8} {'ratio':>6} | "
        f"{'event wg':>9} {'TF wg':>8} {'ratio':>6} | {'fwd+wg':>6} | {'density':>7}"
    )
    failed = False
    for name, ((h, w, c), filters, size) in LAYERS.items():
        k = tf.constant(
            rng.normal(size=(size, size, c, filters)) / np.sqrt(size * size * c), tf.float32
        )
        g = tf.constant(
            rng.normal(size=(args.batch, h - size + 1, w - size + 1, filters)), tf.float32
        )
        for density in densities:
            x = tf.constant(rng.random((args.batch, h, w, c)) < density, tf.float32)

            rows = _rows(lib, x, k, g)
            errors = (
                _max_error(rows["event fwd"](), rows["tf fwd"]()),
                _max_error(rows["event wg"](), rows["tf wg"]()),
            )
            if max(errors) > TOLERANCE:
                print(
                    f"{name} at {density:.0%}: the event kernel disagrees with TF "
                    f"(forward {errors[0]:.2e}, weight gradient {errors[1]:.2e})"
                )
                failed = True
                continue
            t = _time_round_robin(rows, args.repeats, args.warmup)
            both = (t["tf fwd"] + t["tf wg"]) / (t["event fwd"] + t["event wg"])
            ms = {key: 1e3 * value for key, value in t.items()}
            print(
                f"{name:6} {density:>7.0%} | {ms['event fwd']:7.2f}ms {ms['tf fwd']:6.2f}ms "
                f"{t['tf fwd'] / t['event fwd']:5.2f}x | {ms['event wg']:7.2f}ms "
                f"{ms['tf wg']:6.2f}ms {t['tf wg'] / t['event wg']:5.2f}x | {both:5.2f}x | "
                f"{ms['density']:5.2f}ms"
            )
    print(
        f"ratio = TF time / event time (> 1: event kernel faster); outputs agree to "
        f"{TOLERANCE:g} relative; conv_input's cutoffs: {dispatch.CONV_DENSITY_CUTOFF:.0%}, "
        f"{dispatch.CONV_FEW_CHANNELS_DENSITY_CUTOFF:.0%} below {dispatch.CONV_FEW_CHANNELS} "
        "input channels"
    )
    if failed:
        print("FAILED: the event kernel and tf.nn.convolution disagree", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
