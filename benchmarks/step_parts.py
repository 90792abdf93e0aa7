"""Where the custom-ops training step spends its time: the step against its parts, one run.

The training step of ``train_step.py`` (700 -> 256 LIF -> 20 LI, ``T = 100``, batch 64, 5 %
input spikes by default, ``use_custom_ops=True``) is timed warm (back-to-back steps), and next
to it each op the step runs, alone, on tensors of the step's shapes and activities:

* the hidden layer's fused forward (``SparseLifScan``: event input + LIF scan, recording the
  active inputs), its weight gradient from that event list (``SparseEventsGradWeights``), and
  for comparison the weight-gradient kernel that scans the input instead;
* the LIF BPTT kernel (``LifScanGrad``);
* the readout's event forward (``SparseSpikeMatmulEvents`` on the hidden spikes), its weight
  gradient from the list, its dense input gradient (``tf.matmul``, ``[B*T, 20] @ [20, 256]``)
  and the leaky-integrator scan;
* the density sample the layers take per call, and the Adam update of both kernels;
* an empty ``tf.function`` call: the fixed cost each timed row above pays once, subtracted
  in the "net" column.

Every row is a ``tf.function``; rows are timed round-robin (one call of each per round, so
load from other processes hits all alike). The sum of the parts' net times is what the step
would take with no scheduling between its ops; the step's distance from it is the cost of
running ~30 ops through TF's executor. Prints markdown: medians, the best call of each row,
and the sums.

Usage::

    python benchmarks/step_parts.py                   # 5 % input spikes, 40 rounds
    python benchmarks/step_parts.py --density 0.01 --repeats 60
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import train_step as ts  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--density", type=float, default=0.05)
    parser.add_argument("--repeats", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if not 0.0 < args.density <= 1.0:
        parser.error(f"--density must be in (0, 1], got {args.density}")
    for name in ("threads", "batch", "steps", "repeats"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1, got {getattr(args, name)}")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    tf, keras, ks = ts.setup_tensorflow(args.threads)
    lib = ks.ops.load()
    work = ts.make_workload(args)
    side = ts.TFSide(tf, keras, ks, work)
    model = side.model(jit=True, custom_ops=True)
    step = side.tape_step(model)
    batch, steps = args.batch, args.steps
    rows_n = batch * steps
    rng = np.random.default_rng(args.seed + 7)

    x = side.x
    flat = tf.reshape(x, [rows_n, ts.N_IN])
    w1, w2 = model.trainable_variables
    v0 = tf.zeros([batch, ts.N_HIDDEN])
    beta_h = tf.fill([ts.N_HIDDEN], ts.BETA)
    beta_o = tf.fill([ts.N_OUT], ts.BETA)
    theta = tf.constant(ts.THRESHOLD)
    hidden = lib.keras_spiking_sparse_lif_scan(x, w1, v0, beta_h, theta, reset="subtract")
    spikes, membrane, hidden_events = hidden[0], hidden[1], hidden[3:]
    spikes_flat = tf.reshape(spikes, [rows_n, ts.N_HIDDEN])
    readout = lib.keras_spiking_sparse_spike_matmul_events(spikes_flat, w2)
    currents_o = tf.reshape(readout[0], [batch, steps, ts.N_OUT])
    g_hidden = tf.constant(rng.standard_normal((batch, steps, ts.N_HIDDEN)).astype(np.float32))
    g_hidden_flat = tf.reshape(g_hidden, [rows_n, ts.N_HIDDEN])
    g_out = tf.constant(rng.standard_normal((rows_n, ts.N_OUT)).astype(np.float32))
    n_in = tf.constant(ts.N_IN, tf.int64)
    n_hidden = tf.constant(ts.N_HIDDEN, tf.int64)
    optimizer = keras.optimizers.Adam(ts.LEARNING_RATE)
    optimizer.build([w1, w2])
    grads = [tf.zeros_like(w1), tf.zeros_like(w2)]
    surrogate = model.layers[0].cell.surrogate
    zeros_o = tf.zeros([batch, ts.N_OUT])

    def li_forward_backward():
        v_all, v_last = lib.keras_spiking_li_scan(currents_o, zeros_o, beta_o)
        return lib.keras_spiking_li_scan_grad(
            v_all, zeros_o, v_all, zeros_o, beta_o, decay_grad=False
        )[0]

    parts = {
        "hidden forward: SparseLifScan (event input + LIF, records events)": lambda: (
            lib.keras_spiking_sparse_lif_scan(x, w1, v0, beta_h, theta, reset="subtract")[2]
        ),
        "hidden weight gradient from the event list": lambda: (
            lib.keras_spiking_sparse_events_grad_weights(*hidden_events, g_hidden_flat, n_in)
        ),
        "hidden LIF backward: LifScanGrad": lambda: lib.keras_spiking_lif_scan_grad(
            g_hidden,
            tf.zeros([batch, ts.N_HIDDEN]),
            membrane,
            v0,
            beta_h,
            theta,
            reset="subtract",
            detach_reset=True,
            surrogate=surrogate.name,
            scale=surrogate.scale,
            decay_grad=False,
        )[1],
        "readout forward: SparseSpikeMatmulEvents": lambda: (
            lib.keras_spiking_sparse_spike_matmul_events(spikes_flat, w2)[1]
        ),
        "readout weight gradient from the event list": lambda: (
            lib.keras_spiking_sparse_events_grad_weights(*readout[1:], g_out, n_hidden)
        ),
        "readout input gradient: tf.matmul [B*T,20] @ [20,256]": lambda: tf.matmul(
            g_out, w2, transpose_b=True
        )[0],
        "readout LI scan forward + backward kernels": lambda: li_forward_backward(),
        "input density samples (two layers)": lambda: (
            ks.ops.input_density(x) + ks.ops.input_density(spikes)
        ),
        "Adam update of both kernels": lambda: optimizer.apply_gradients(zip(grads, [w1, w2])),
    }
    compare = {
        "for comparison: hidden weight gradient scanning the input": lambda: (
            lib.keras_spiking_sparse_spike_matmul_grad_weights(flat, g_hidden_flat)
        ),
    }
    empty = "empty tf.function call"
    functions = {name: tf.function(fn) for name, fn in {**parts, **compare}.items()}
    functions[empty] = tf.function(lambda: tf.constant(0.0))

    def run(fn):
        out = fn()
        for tensor in tf.nest.flatten(out):
            if tensor is not None:
                np.asarray(tensor)

    for fn in functions.values():
        run(fn)
        run(fn)
    for _ in range(3):
        step()
    times = {name: [] for name in ["warm training step", *functions]}
    for _ in range(args.repeats):
        # the step runs three times back to back per round (warm), then each part once
        for _ in range(3):
            start = time.perf_counter()
            step()
            times["warm training step"].append(time.perf_counter() - start)
        for name, fn in functions.items():
            start = time.perf_counter()
            run(fn)
            times[name].append(time.perf_counter() - start)

    overhead = float(np.median(times[empty])) * 1e3
    print(
        f"# The custom-ops training step and its parts ({ts.cpu_model()}, {args.threads} "
        f"threads, batch {batch}, T {steps}, {args.density:.0%} input spikes)"
    )
    print()
    print(f"Hidden firing rate of the step's weights: {float(tf.reduce_mean(spikes)):.4f}.")
    print()
    print("| row | median (ms) | best (ms) | net median (ms, call cost off) |")
    print("|---|---:|---:|---:|")
    sum_median = sum_best = 0.0
    for name, samples in times.items():
        med, best = float(np.median(samples)) * 1e3, float(np.min(samples)) * 1e3
        is_part = name in parts
        net = max(med - overhead, 0.0) if is_part or name in compare else med
        if is_part:
            sum_median += net
            sum_best += max(best - overhead, 0.0)
        print(f"| {name} | {med:.2f} | {best:.2f} | {net:.2f} |")
    step_ms = float(np.median(times["warm training step"])) * 1e3
    print()
    print(
        f"Sum of the parts (net): {sum_median:.2f} ms of medians, {sum_best:.2f} ms of best "
        f"calls; the warm step's median is {step_ms:.2f} ms = "
        f"{step_ms / max(sum_median, 1e-9):.2f}x the sum of medians."
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
