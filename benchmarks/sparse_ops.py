"""The custom C++ ops (event-driven synaptic input, fused LIF scans) against dense paths and peers.

Three parts, all measured in one process with the same thread count (``--threads``), every
table row timed round-robin with the others of its part (one sample of each row per round, so
a burst of load from other processes hits all rows alike). Each part first checks that the
paths it compares compute the same numbers and prints the largest difference.

(a) Training step
-----------------
One training step (forward, surrogate-gradient BPTT, Adam) of the network of
``train_step.py`` -- 700 inputs -> 256 LIF -> 20 LI, ``T = 100``, batch 64, float32 -- at
1 %, 5 % and 20 % Bernoulli input activity (``--densities``). The workload, the Keras model,
the ``tf.function`` + ``GradientTape`` step and the snnTorch and Norse networks (with the same
initial weights) all come from ``train_step.py``. Rows per activity:

* **custom ops**: both layers with ``use_custom_ops=True``: the hidden layer's event-driven
  input fused into its LIF scan (``SparseLifScan``; the layer picks the dense matmul and the
  ``LifScan`` kernel instead when it samples an input density above ``ops.DENSITY_CUTOFF``),
  the LIF BPTT kernel and the event weight gradient; the LI readout's input by the event
  kernel (below ``ops.NARROW_DENSITY_CUTOFF``) and its scan by the LI kernel. The reference
  of the ratios.
* **pure TF**: the same model with ``use_custom_ops=False``: dense matmuls and the XLA scans.
* **snnTorch**, **Norse**: the peers of ``train_step.py``, when importable.

``--order rounds`` times part (a) in rounds of back-to-back steps per row instead of one step
per row and round (see ``train_step.run_timings``): each timed step then follows a step of the
same implementation, as in a training loop, instead of starting cold after another one's.

(b) Streaming inference
-----------------------
Batch 1, one time step per call, a 1024 -> 1024 LIF layer (beta = exp(-1/20), threshold 1,
reset by subtraction), the state fed back from call to call, ``--stream-steps`` steps per
sample; the table gives the time per step. Rows (each a ``tf.function`` called from Python):

* **eager: custom fused step / eager: dense**: the same step functions called without
  ``tf.function``, so each op is dispatched eagerly: the fused kernel is one op call per step,
  the dense step seven (matmul, multiply, add, compare, cast, multiply, subtract);
* **custom fused step** (the reference of the ratios): ``ops.sparse_lif_step``, one op that
  finds the active inputs, adds their weight rows and updates the LIF state;
* **custom**: ``ops.sparse_spike_matmul(x_t, W)`` then one LIF step by ``ops.fused_lif_scan``
  (T = 1);
* **custom matmul + TF LIF**: the event kernel, then the LIF update in plain TF ops;
* **dense**: ``tf.matmul(x_t, W)`` and the plain TF LIF update;
* **dense, XLA**: the same function with ``jit_compile=True``;
* **empty call**: a ``tf.function`` that only passes the state through: the cost of calling a
  function from Python at all, which no per-call path can go below;
* **in-graph custom fused / custom / dense**: all steps in one ``tf.function`` (a
  ``tf.while_loop`` over the steps): the per-step cost without the Python call;
* **in-graph empty loop**: the same loop with no neuron work (slice the input, count): the
  graph loop's own cost per step, which bounds the in-graph ratio.

Weights ``W`` are Gaussian, scaled per activity so that the neurons fire (the cost does not
depend on it; the firing rate is printed).

(c) Event-kernel throughput and the roofline
--------------------------------------------
The raw kernels ``SparseSpikeMatmul`` (forward), ``SparseSpikeMatmulGradWeights`` (weight
gradient, scanning the spikes) and ``SparseEventsGradWeights`` (weight gradient from the event
list the forward kernel recorded, as in a training step) on ``rows = batch x T = 6400`` rows
for 700 -> 256 and 1024 -> 1024 at each activity, next to ``tf.matmul`` doing the same product
densely. Synaptic events = (active inputs) x n_out; each
event reads one float32 weight (forward) or one float32 output gradient (weight gradient), so
the kernel touches ``events x 4`` bytes, reported per second and as a fraction of the memory
bandwidth measured in the same run (the larger of a numpy copy of ``--bandwidth-mb`` MB, counted
as read + write, and a multi-threaded ``tf.reduce_sum`` over it, counted as read). The weights
(0.7 MB and 4 MB) are reused from cache, so a fraction above 1 is possible: it means the kernel
runs from cache, past what streaming from memory would allow.

Usage::

    python benchmarks/sparse_ops.py                     # all parts, 2 threads
    python benchmarks/sparse_ops.py --quick             # smoke run
    python benchmarks/sparse_ops.py --parts b,c --repeats 30 --json out.json
    python benchmarks/sparse_ops.py --skip snntorch,norse
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from dataclasses import dataclass

import numpy as np
import train_step as ts  # the shared workload, models, peers and timing helpers

CUSTOM = "custom ops"
PURE_TF = "pure TF"
PARTS = ("a", "b", "c")
SKIPPABLE = ("puretf", "snntorch", "norse")
STREAM_UNITS = 1024
KERNEL_SHAPES = ((700, 256), (1024, 1024))


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2, help="threads for TF and torch")
    parser.add_argument("--parts", default="a,b,c", help="comma-separated parts to run: a, b, c")
    parser.add_argument(
        "--densities", default="0.01,0.05,0.2", help="comma-separated input activities"
    )
    parser.add_argument("--batch", type=int, default=64, help="(a) and (c): batch")
    parser.add_argument("--steps", type=int, default=100, help="(a) and (c): time steps T")
    parser.add_argument("--repeats", type=int, default=20, help="timed samples per row")
    parser.add_argument("--warmup", type=int, default=3, help="untimed samples per row")
    parser.add_argument("--train-steps", type=int, default=5, help="(a): steps of the loss check")
    parser.add_argument(
        "--stream-steps", type=int, default=200, help="(b): time steps per timed sample"
    )
    parser.add_argument(
        "--bandwidth-mb", type=int, default=512, help="(c): size of the bandwidth test array"
    )
    parser.add_argument(
        "--omp-wait-policy",
        choices=("default", "passive", "active"),
        default="default",
        help="OMP_WAIT_POLICY for torch's OpenMP threads (see train_step.py)",
    )
    parser.add_argument(
        "--order",
        choices=("interleaved", "rounds"),
        default="interleaved",
        help="part (a): 'interleaved' times one step of each row per round (each step starts "
        "cold, after another implementation's); 'rounds' times 5 back-to-back steps of each "
        "row per round, after one untimed step (warm steps, as in a training loop)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--skip",
        default="",
        help=f"comma-separated rows of (a) to leave out: {', '.join(SKIPPABLE)}",
    )
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    parser.add_argument("--quick", action="store_true", help="smoke run: few repeats")
    args = parser.parse_args(argv)
    if args.quick:
        args.repeats, args.warmup, args.train_steps = 3, 1, 2
        args.stream_steps, args.bandwidth_mb = 50, 128
    for name in ("threads", "batch", "steps", "repeats", "train_steps", "stream_steps"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.warmup < 0 or args.bandwidth_mb < 8:
        parser.error("--warmup must be >= 0 and --bandwidth-mb >= 8")
    args.parts = [p.strip().lower() for p in args.parts.split(",") if p.strip()]
    if not args.parts or set(args.parts) - set(PARTS):
        parser.error(f"--parts: choose from {', '.join(PARTS)}, got {args.parts}")
    try:
        args.densities = [float(d) for d in args.densities.split(",") if d.strip()]
    except ValueError:
        parser.error(f"--densities: expected numbers, got {args.densities!r}")
    if not args.densities or not all(0.0 < d <= 1.0 for d in args.densities):
        parser.error("--densities must be in (0, 1]")
    args.skip = {s.strip().lower() for s in args.skip.split(",") if s.strip()}
    if args.skip - set(SKIPPABLE):
        parser.error(f"--skip: choose from {', '.join(SKIPPABLE)}, got {sorted(args.skip)}")
    return args


def pct(density: float) -> str:
    return f"{density * 100:g} %"


def median_ms(row: ts.Row) -> float:
    return ts.stats(row.times_ms)["median_ms"]


def spike_agreement(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Fraction of equal entries, and of equal spikes among the entries where either spikes."""
    a, b = a > 0.5, b > 0.5
    either = np.logical_or(a, b).sum()
    among = float(np.logical_and(a, b).sum() / either) if either else 1.0
    return float(np.mean(a == b)), among


def kernel_ops_in(concrete) -> list[str]:
    """Names of the KerasSpiking ops anywhere in a concrete function's graph (and its library)."""
    graph_def = concrete.graph.as_graph_def()
    nodes = list(graph_def.node)
    for function in graph_def.library.function:
        nodes.extend(function.node_def)
    return sorted({n.op.split(">")[-1] for n in nodes if n.op.startswith("KerasSpiking")})


# ------------------------------------------------------------------------------------------
# (a) Training step
# ------------------------------------------------------------------------------------------
@dataclass
class DensityCase:
    """One input activity of part (a): its timed rows, checks and path comparisons."""

    density: float
    rows: list[ts.Row]
    checks: list[ts.Check]
    eager_diffs: dict
    graph_ops: dict


def set_custom_ops(model, value) -> None:
    """Sets ``use_custom_ops`` on the layers of a model from ``TFSide.model`` (read per call)."""
    import keras_spiking

    for layer in model.layers:
        layer.use_custom_ops = keras_spiking.ops.validate_setting(value)


def compare_tf_paths(side: ts.TFSide, custom, pure) -> dict:
    """Eager forward and gradients of both Keras models (same weights): the largest differences."""
    tf = side.tf
    out = {}
    results = []
    for model in (custom, pure):
        with tf.GradientTape() as tape:
            hidden = model.layers[0](side.x, training=True)
            v = model.layers[1](hidden, training=True)
            loss = side.loss(side.y, v)
        grads = tape.gradient(loss, model.trainable_variables)
        results.append((hidden.numpy(), v.numpy(), float(loss), [g.numpy() for g in grads]))
    (h_c, v_c, l_c, g_c), (h_p, v_p, l_p, g_p) = results
    out["spikes_equal"], out["spikes_equal_among_spikes"] = spike_agreement(h_c, h_p)
    out["readout_max_abs_diff"] = float(np.max(np.abs(v_c - v_p)))
    out["loss_abs_diff"] = abs(l_c - l_p)
    out["grad_max_abs_diff"] = [float(np.max(np.abs(a - b))) for a, b in zip(g_c, g_p)]
    out["grad_max_abs"] = [float(np.max(np.abs(b))) for b in g_p]
    return out


def setup_torch(args, versions: dict, problems: list[str]):
    if {"snntorch", "norse"} <= args.skip:
        return None
    try:
        import torch
    except Exception as error:  # noqa: BLE001 - any import failure means "skip the peers"
        problems.append(f"torch is not available ({error!r}): snnTorch and Norse skipped")
        return None
    torch.set_num_threads(args.threads)
    try:
        torch.set_num_interop_threads(args.threads)
    except RuntimeError:  # already set in this process
        pass
    torch.manual_seed(args.seed)
    versions["torch"] = torch.__version__
    return torch


def build_case(args, tf, keras, ks, torch, density: float, versions, problems) -> DensityCase:
    work = ts.make_workload(
        argparse.Namespace(seed=args.seed, batch=args.batch, steps=args.steps, density=density)
    )
    side = ts.TFSide(tf, keras, ks, work)
    tag = pct(density)
    custom = side.model(jit=True)
    set_custom_ops(custom, True)
    models = [(CUSTOM, custom)]
    if "puretf" not in args.skip:
        pure = side.model(jit=True)
        set_custom_ops(pure, False)
        models.append((PURE_TF, pure))

    graph_ops = {}
    for name, model in models:
        forward = tf.function(lambda x, model=model: model(x, training=True))
        graph_ops[name] = kernel_ops_in(forward.get_concrete_function(side.x))
    eager_diffs = compare_tf_paths(side, custom, models[1][1]) if len(models) > 1 else {}

    rows, checks = [], []
    for name, model in models:
        step = side.tape_step(model)
        checks.append(side.check(name, model, step, args.train_steps))
        rows.append(ts.Row(f"{tag}: {name}", step))
    if torch is not None:
        torch_side = ts.TorchSide(torch, work)
        for label, key, builder in (
            (ts.SNNTORCH, "snntorch", "snntorch_net"),
            (ts.NORSE, "norse", "norse_net"),
        ):
            if key in args.skip:
                continue
            try:
                module = __import__(key)
                versions[key] = getattr(module, "__version__", "?")
                net = getattr(torch_side, builder)()
                step = torch_side.train_step(net)
                checks.append(torch_side.check(label, net, step, args.train_steps))
                rows.append(ts.Row(f"{tag}: {label}", step))
            except Exception as error:  # noqa: BLE001 - a broken peer must not stop the others
                problems.append(f"{label} at {tag} skipped: {type(error).__name__}: {error}")
    return DensityCase(density, rows, checks, eager_diffs, graph_ops)


def part_a(args, tf, keras, ks, versions, problems) -> dict:
    torch = setup_torch(args, versions, problems)
    cases = [build_case(args, tf, keras, ks, torch, d, versions, problems) for d in args.densities]
    print("## (a) Training step: 700 -> 256 LIF -> 20 LI, T = 100, batch 64, Adam")
    print()
    print(
        f"Workload of `train_step.py` (batch {args.batch}, T = {args.steps}, seed {args.seed}, "
        "same initial weights in every row) at each input activity."
    )
    print()
    print("### Do the paths compute the same thing?")
    print()
    print("Kernels in the traced training forward pass (`model(x, training=True)`):")
    for case in cases:
        listed = "; ".join(
            f"{name}: {', '.join(found) or 'none'}" for name, found in case.graph_ops.items()
        )
        print(f"- {pct(case.density)}: {listed}")
    print()
    if any(case.eager_diffs for case in cases):
        print(
            "Custom ops vs pure TF, one eager forward + backward from the same weights "
            "(gradient differences as max abs diff / max abs gradient, kernel W1 then W2):"
        )
        print()
        print(
            "| activity | hidden spikes equal | readout max abs diff | loss abs diff | "
            "gradient max abs diff (W1; W2) |"
        )
        print("|---|---:|---:|---:|---|")
        for case in cases:
            d = case.eager_diffs
            if not d:
                continue
            grads = "; ".join(
                f"{a:.2e} / {m:.2e}" for a, m in zip(d["grad_max_abs_diff"], d["grad_max_abs"])
            )
            print(
                f"| {pct(case.density)} | {d['spikes_equal']:.4%} | "
                f"{d['readout_max_abs_diff']:.2e} | {d['loss_abs_diff']:.2e} | {grads} |"
            )
        print()
    print(
        f"Hidden spikes of every row against custom ops (all entries / among spikes), the "
        f"initial loss and the loss over {args.train_steps} training steps:"
    )
    print()
    print(
        "| activity | implementation | hidden firing rate | spikes equal to custom ops | "
        "initial loss | loss over the check steps |"
    )
    print("|---|---|---:|---:|---:|---|")
    check_json = []
    for case in cases:
        ref = case.checks[0]
        for c in case.checks:
            rate = float(c.hidden_spikes.mean())
            if c is ref:
                match, match_all, match_among = "reference", None, None
            else:
                match_all, match_among = spike_agreement(c.hidden_spikes, ref.hidden_spikes)
                match = f"{match_all:.4%} / {match_among:.2%}"
            trace = " -> ".join(f"{v:.3f}" for v in c.losses)
            print(
                f"| {pct(case.density)} | {c.name} | {rate:.4f} | {match} | "
                f"{c.initial_loss:.4f} | {trace} |"
            )
            check_json.append(
                {
                    "density": case.density,
                    "name": c.name,
                    "hidden_firing_rate": rate,
                    "match_all": match_all,
                    "match_among_spikes": match_among,
                    "initial_loss": c.initial_loss,
                    "losses": c.losses,
                }
            )
    print()

    rows = [row for case in cases for row in case.rows]
    how = (
        f"all {len(rows)} rows interleaved"
        if args.order == "interleaved"
        else f"in rounds of {ts.ROUND_STEPS} back-to-back steps per row (after one untimed "
        f"step), the {len(rows)} rows alternating"
    )
    print(f"### Timings: {args.warmup} warm-up + {args.repeats} timed steps per row, {how}")
    print()
    ts.run_timings(rows, args.warmup, args.repeats, args.order)
    print("| activity | implementation | median (ms) | IQR (ms) | time / custom ops |")
    print("|---|---|---:|---:|---:|")
    summary = {}
    for case in cases:
        ref = median_ms(case.rows[0])
        per = {}
        for row in case.rows:
            s = ts.stats(row.times_ms)
            name = row.name.split(": ", 1)[1]
            s["over_custom"] = s["median_ms"] / ref
            s["times_ms"] = row.times_ms
            per[name] = s
            print(
                f"| {pct(case.density)} | {name} | {s['median_ms']:.1f} | {s['iqr_ms']:.1f} | "
                f"{s['over_custom']:.2f}x |"
            )
        summary[str(case.density)] = per
    print()
    print("Speedups of custom ops (median / median):")
    print()
    for case in cases:
        per = summary[str(case.density)]
        parts = [
            f"{other} / custom = {per[other]['over_custom']:.2f}x"
            for other in (PURE_TF, ts.SNNTORCH, ts.NORSE)
            if other in per
        ]
        print(f"- {pct(case.density)}: " + "; ".join(parts))
    five = summary.get("0.05")
    if five is not None:
        goals = []
        if ts.SNNTORCH in five:
            r = five[ts.SNNTORCH]["over_custom"]
            goals.append(f"vs snnTorch {r:.2f}x (goal >= 10x: {'met' if r >= 10 else 'NOT met'})")
        if PURE_TF in five:
            r = five[PURE_TF]["over_custom"]
            goals.append(f"vs pure TF {r:.2f}x (goal >= 2x: {'met' if r >= 2 else 'NOT met'})")
        if goals:
            print()
            print("Goals at 5 %: " + "; ".join(goals) + ".")
    print()
    return {
        "consistency": check_json,
        "eager_diffs": {str(c.density): c.eager_diffs for c in cases},
        "graph_kernels": {str(c.density): c.graph_ops for c in cases},
        "results": summary,
    }


# ------------------------------------------------------------------------------------------
# (b) Streaming inference
# ------------------------------------------------------------------------------------------
def stream_functions(tf, ks, weights, beta: float):
    """The per-step and whole-stream functions of part (b); each maps state to state."""
    n = STREAM_UNITS
    beta_vec = tf.constant(np.full(n, beta, np.float32))
    surrogate = ks.surrogates.get("fast_sigmoid")

    def lif_tf(current, v):  # plain TF LIF step: u = beta v + I, S = H(u - 1), v = u - S
        u = beta_vec * v + current
        s = tf.cast(u > ts.THRESHOLD, u.dtype)
        return s, u - ts.THRESHOLD * s

    def lif_kernel(current, v, s):
        _, v, s = ks.ops.fused_lif_scan(
            current[:, None, :],
            v,
            s,
            beta_vec,
            threshold=ts.THRESHOLD,
            surrogate=surrogate,
            reset="subtract",
        )
        return s, v

    def custom(x_t, v, s):
        return lif_kernel(ks.ops.sparse_spike_matmul(x_t, weights), v, s)

    def fused(x_t, v, s):  # one op: event-driven input current and the LIF update
        s, v = ks.ops.sparse_lif_step(x_t, weights, v, beta_vec, threshold=ts.THRESHOLD)
        return s, v

    def custom_tf_lif(x_t, v, s):
        return lif_tf(ks.ops.sparse_spike_matmul(x_t, weights), v)

    def dense(x_t, v, s):
        return lif_tf(tf.matmul(x_t, weights), v)

    def empty(x_t, v, s):  # no neuron work; the input stands in for the spikes
        return tf.identity(x_t), tf.identity(v)

    def in_graph(step):
        def run(xs, v, s):
            count = tf.zeros([], tf.float32)
            for t in tf.range(tf.shape(xs)[0]):
                s, v = step(xs[t], v, s)
                count += tf.reduce_sum(s)
            return s, v, count

        return tf.function(run)

    per_call = {
        STREAM_EAGER_CUSTOM: fused,  # no tf.function: the op runs eagerly, one dispatch
        STREAM_EAGER_DENSE: dense,
        STREAM_CUSTOM: tf.function(fused),
        "custom (sparse_spike_matmul + ops.fused_lif_scan T=1)": tf.function(custom),
        "custom matmul + TF LIF step": tf.function(custom_tf_lif),
        "dense (tf.matmul + TF LIF step)": tf.function(dense),
        "dense, XLA (jit_compile=True)": tf.function(dense, jit_compile=True),
        "empty call (state passed through)": tf.function(empty),
    }
    whole = {
        GRAPH_FUSED: in_graph(fused),
        "in-graph custom (one call, tf.while_loop)": in_graph(custom),
        GRAPH_DENSE: in_graph(dense),
        GRAPH_EMPTY: in_graph(empty),
    }
    return per_call, whole


STREAM_CUSTOM = "custom fused step (ops.sparse_lif_step: one op)"
STREAM_EAGER_CUSTOM = "eager: custom fused step (one op call per step, no tf.function)"
STREAM_EAGER_DENSE = "eager: dense (tf.matmul + TF LIF ops, no tf.function)"
STREAM_DENSE = "dense (tf.matmul + TF LIF step)"
GRAPH_FUSED = "in-graph custom fused step (one call, tf.while_loop)"
GRAPH_DENSE = "in-graph dense (one call, tf.while_loop)"
GRAPH_EMPTY = "in-graph empty loop (the loop's own cost per step)"


def part_b(args, tf, ks) -> dict:
    n, steps = STREAM_UNITS, args.stream_steps
    rng = np.random.default_rng(args.seed + 1)
    base = rng.standard_normal((n, n)).astype(np.float32)
    zeros = tf.zeros([1, n])
    rows, checks, rates = [], {}, {}
    for density in args.densities:
        tag = pct(density)
        x = (rng.random((steps, 1, n)) < density).astype(np.float32)
        # input current of std ~0.3 per step: the membrane wanders across the threshold
        weights = tf.Variable(base * np.float32(0.3 / math.sqrt(density * n)))
        per_call, whole = stream_functions(tf, ks, weights, ts.BETA)
        xs_list = [tf.constant(x[t]) for t in range(steps)]
        xs = tf.constant(x)

        def trace(fn, xs_list=xs_list):
            v, s, out = zeros, zeros, []
            for x_t in xs_list:
                s, v = fn(x_t, v, s)
                out.append(s.numpy()[0])
            return np.array(out), v.numpy()

        ref_spikes, ref_v = trace(per_call[STREAM_CUSTOM])
        rates[tag] = float(ref_spikes.mean())
        first = xs_list[int(np.argmax(x.sum(axis=(1, 2)) > 0))]
        current_diff = float(
            np.max(np.abs(ks.ops.sparse_spike_matmul(first, weights) - tf.matmul(first, weights)))
        )
        case = {"current_max_abs_diff_one_step": current_diff}
        for name, fn in per_call.items():
            if name.startswith("empty") or name == STREAM_CUSTOM:
                continue
            spikes, v = trace(fn)
            case[name] = {
                "spikes_equal": spike_agreement(spikes, ref_spikes)[0],
                "final_v_max_abs_diff": float(np.max(np.abs(v - ref_v))),
            }
        for name, fn in whole.items():
            if name == GRAPH_EMPTY:
                continue
            s, v, count = fn(xs, zeros, zeros)
            case[name] = {
                "spike_count": float(count),
                "spike_count_per_call_custom": float(ref_spikes.sum()),
                "final_v_max_abs_diff": float(np.max(np.abs(v.numpy() - ref_v))),
            }
        checks[tag] = case

        for name, fn in per_call.items():

            def run(fn=fn, xs_list=xs_list):
                v, s = zeros, zeros
                for x_t in xs_list:
                    s, v = fn(x_t, v, s)
                return float(s[0, 0])

            rows.append(ts.Row(f"{tag}: {name}", run))
        for name, fn in whole.items():
            rows.append(
                ts.Row(f"{tag}: {name}", lambda fn=fn, xs=xs: float(fn(xs, zeros, zeros)[2]))
            )

    print(f"## (b) Streaming inference: batch 1, one step per call, {n} -> {n} LIF")
    print()
    print(
        f"{steps} steps per sample, state fed back; times are per step (sample / {steps}). "
        "Output firing rate (custom path): "
        + ", ".join(f"{tag} input: {rate:.3f}" for tag, rate in rates.items())
        + "."
    )
    print()
    print("### Same results? (against the custom path over the whole stream)")
    print()
    print("| activity | path | spikes equal | final membrane max abs diff |")
    print("|---|---|---:|---:|")
    for tag, case in checks.items():
        print(
            f"| {tag} | input current, one step: sparse_spike_matmul vs tf.matmul | - | "
            f"{case['current_max_abs_diff_one_step']:.2e} |"
        )
        for name, c in case.items():
            if not isinstance(c, dict):
                continue
            if "spikes_equal" in c:
                equal = f"{c['spikes_equal']:.4%}"
            else:
                equal = f"count {c['spike_count']:.0f} vs {c['spike_count_per_call_custom']:.0f}"
            print(f"| {tag} | {name} | {equal} | {c['final_v_max_abs_diff']:.2e} |")
    print()
    print(
        f"### Timings: {args.warmup} warm-up + {args.repeats} timed samples of {steps} steps "
        f"per row, all {len(rows)} rows interleaved"
    )
    print()
    ts.run_timings(rows, args.warmup, args.repeats, "interleaved")
    print("| activity | path | median (us / step) | IQR (us / step) | time / custom |")
    print("|---|---|---:|---:|---:|")
    summary = {}
    for density in args.densities:
        tag = pct(density)
        mine = [row for row in rows if row.name.startswith(tag + ": ")]
        ref = median_ms(next(r for r in mine if r.name.endswith(STREAM_CUSTOM)))
        per = {}
        for row in mine:
            s = ts.stats(row.times_ms)
            name = row.name.split(": ", 1)[1]
            per[name] = {
                "median_us_per_step": s["median_ms"] * 1e3 / steps,
                "iqr_us_per_step": s["iqr_ms"] * 1e3 / steps,
                "over_custom": s["median_ms"] / ref,
                "sample_ms": row.times_ms,
            }
            print(
                f"| {tag} | {name} | {per[name]['median_us_per_step']:.1f} | "
                f"{per[name]['iqr_us_per_step']:.1f} | {per[name]['over_custom']:.2f}x |"
            )
        summary[tag] = per
    print()
    print("Dense / custom (per-call, median per step):")
    print()
    for tag, per in summary.items():
        dense = per[STREAM_DENSE]["over_custom"]
        xla = per["dense, XLA (jit_compile=True)"]["over_custom"]
        graph_dense = per[GRAPH_DENSE]["median_us_per_step"]
        graph_fused = per[GRAPH_FUSED]["median_us_per_step"]
        loop = per[GRAPH_EMPTY]["median_us_per_step"]
        graph = graph_dense / graph_fused
        eager = (
            per[STREAM_EAGER_DENSE]["median_us_per_step"]
            / per[STREAM_EAGER_CUSTOM]["median_us_per_step"]
        )
        goal = f" (goal >= 10x: {'met' if dense >= 10 else 'NOT met'})" if tag == "1 %" else ""
        print(
            f"- {tag}: eager (a host loop calling one step at a time without tf.function): "
            f"dense / custom = {eager:.2f}x"
            + (f" (goal >= 10x: {'met' if eager >= 10 else 'NOT met'})" if tag == "1 %" else "")
        )
        print(
            f"- {tag}: dense / custom = {dense:.2f}x{goal}; dense XLA / custom = {xla:.2f}x; "
            f"in-graph dense / in-graph fused = {graph:.2f}x; the same without the loop's own "
            f"{loop:.1f} us per step: ({graph_dense:.1f} - {loop:.1f}) / ({graph_fused:.1f} - "
            f"{loop:.1f}) = {(graph_dense - loop) / max(graph_fused - loop, 1e-9):.1f}x"
        )
    print()
    return {"checks": checks, "output_firing_rate": rates, "results": summary}


# ------------------------------------------------------------------------------------------
# (c) Kernel throughput and the roofline
# ------------------------------------------------------------------------------------------
def measure_bandwidth(tf, megabytes: int, repeats: int) -> dict:
    """Memory bandwidth in bytes/s: a numpy copy (read + write) and a TF reduce_sum (read)."""
    count = megabytes * (1 << 20) // 4
    src = np.ones(count, np.float32)
    dst = np.empty_like(src)
    np.copyto(dst, src)  # touch the pages once
    tensor = tf.constant(src)
    reduce = tf.function(lambda t: tf.reduce_sum(t))
    reduce(tensor)
    copy_s, reduce_s = [], []
    for _ in range(max(repeats, 3)):
        start = time.perf_counter()
        np.copyto(dst, src)
        copy_s.append(time.perf_counter() - start)
        start = time.perf_counter()
        float(reduce(tensor))
        reduce_s.append(time.perf_counter() - start)
    nbytes = src.nbytes
    out = {
        "array_bytes": nbytes,
        "numpy_copy_bytes_per_s": 2 * nbytes / float(np.median(copy_s)),
        "tf_reduce_sum_bytes_per_s": nbytes / float(np.median(reduce_s)),
    }
    out["bandwidth_bytes_per_s"] = max(
        out["numpy_copy_bytes_per_s"], out["tf_reduce_sum_bytes_per_s"]
    )
    return out


def cache_sizes() -> str:
    found = []
    for index in range(8):
        base = f"/sys/devices/system/cpu/cpu0/cache/index{index}"
        try:
            with open(f"{base}/level") as f:
                level = f.read().strip()
            with open(f"{base}/type") as f:
                kind = f.read().strip()
            with open(f"{base}/size") as f:
                size = f.read().strip()
        except OSError:
            break
        if kind != "Instruction":
            found.append(f"L{level} {size}")
    return ", ".join(found) or "unknown"


def part_c(args, tf, ks) -> dict:
    lib = ks.ops.load()
    rows_n = args.batch * args.steps
    rng = np.random.default_rng(args.seed + 2)
    rows, meta, checks = [], [], []
    for n_in, n_out in KERNEL_SHAPES:
        weights = tf.constant(rng.standard_normal((n_in, n_out)).astype(np.float32))
        grad = tf.constant(rng.standard_normal((rows_n, n_out)).astype(np.float32))
        for density in args.densities:
            x_np = (rng.random((rows_n, n_in)) < density).astype(np.float32)
            x = tf.constant(x_np)
            active = int(np.count_nonzero(x_np))
            case = f"{n_in}->{n_out}, {pct(density)}"
            # the event list a training forward pass records (SparseSpikeMatmulEvents)
            events = lib.keras_spiking_sparse_spike_matmul_events(x, weights)[1:]
            n_in_t = tf.constant(n_in, tf.int64)
            pairs = {
                "forward": (
                    lambda x=x, w=weights: lib.keras_spiking_sparse_spike_matmul(x, w),
                    lambda x=x, w=weights: tf.matmul(x, w),
                ),
                "weight gradient": (
                    lambda x=x, g=grad: lib.keras_spiking_sparse_spike_matmul_grad_weights(x, g),
                    lambda x=x, g=grad: tf.matmul(x, g, transpose_a=True),
                ),
                "weight gradient from the event list": (
                    lambda e=events, g=grad, n=n_in_t: lib.keras_spiking_sparse_events_grad_weights(
                        *e, g, n
                    ),
                    lambda x=x, g=grad: tf.matmul(x, g, transpose_a=True),
                ),
            }
            for kind, (sparse, dense) in pairs.items():
                a, b = sparse().numpy(), dense().numpy()
                checks.append(
                    {
                        "case": case,
                        "kind": kind,
                        "max_abs_diff": float(np.max(np.abs(a - b))),
                        "max_abs": float(np.max(np.abs(b))),
                    }
                )
                row_s = ts.Row(f"{case}: {kind}, event kernel", lambda f=sparse: (f(), 0.0)[1])
                row_d = ts.Row(f"{case}: {kind}, tf.matmul", lambda f=dense: (f(), 0.0)[1])
                rows += [row_s, row_d]
                meta.append((case, kind, n_in, n_out, density, active, row_s, row_d))

    bandwidth = measure_bandwidth(tf, args.bandwidth_mb, args.repeats)
    print(f"## (c) Event kernels: throughput and roofline ({rows_n} rows = batch x T)")
    print()
    bw = bandwidth["bandwidth_bytes_per_s"]
    print(
        f"Memory bandwidth, {bandwidth['array_bytes'] / 2**20:.0f} MB array: numpy copy "
        f"{bandwidth['numpy_copy_bytes_per_s'] / 1e9:.1f} GB/s (read + write, one thread), "
        f"tf.reduce_sum {bandwidth['tf_reduce_sum_bytes_per_s'] / 1e9:.1f} GB/s (read, "
        f"{args.threads} threads); roofline uses the larger, {bw / 1e9:.1f} GB/s. "
        f"Caches of cpu0: {cache_sizes()}."
    )
    print()
    print("### Same results? (event kernel vs tf.matmul)")
    print()
    print("| case | kernel | max abs diff | max abs value |")
    print("|---|---|---:|---:|")
    for c in checks:
        print(f"| {c['case']} | {c['kind']} | {c['max_abs_diff']:.2e} | {c['max_abs']:.2e} |")
    print()
    print(
        f"### Timings: {args.warmup} warm-up + {args.repeats} timed calls per row, all "
        f"{len(rows)} rows interleaved"
    )
    print()
    ts.run_timings(rows, args.warmup, args.repeats, "interleaved")
    print(
        "| case | kernel | active inputs | event kernel (ms) | tf.matmul (ms) | "
        "tf.matmul / kernel | synaptic events / s | bytes touched / s | of bandwidth |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    results = []
    for case, kind, n_in, n_out, density, active, row_s, row_d in meta:
        t_s, t_d = median_ms(row_s) / 1e3, median_ms(row_d) / 1e3
        events = active * n_out
        rate = events / t_s
        touched = rate * 4
        results.append(
            {
                "case": case,
                "kind": kind,
                "n_in": n_in,
                "n_out": n_out,
                "rows": rows_n,
                "density": density,
                "active_inputs": active,
                "kernel_ms": t_s * 1e3,
                "kernel_iqr_ms": ts.stats(row_s.times_ms)["iqr_ms"],
                "matmul_ms": t_d * 1e3,
                "matmul_iqr_ms": ts.stats(row_d.times_ms)["iqr_ms"],
                "synaptic_events_per_s": rate,
                "bytes_touched_per_s": touched,
                "fraction_of_bandwidth": touched / bw,
            }
        )
        print(
            f"| {case} | {kind} | {active} | {t_s * 1e3:.2f} | {t_d * 1e3:.2f} | "
            f"{t_d / t_s:.2f}x | {rate / 1e9:.2f} G | {touched / 1e9:.1f} GB/s | "
            f"{touched / bw:.2f} |"
        )
    print()
    return {"bandwidth": bandwidth, "checks": checks, "results": results}


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.omp_wait_policy != "default":  # read when torch loads its OpenMP runtime
        os.environ.setdefault("OMP_WAIT_POLICY", args.omp_wait_policy.upper())
    tf, keras, ks = ts.setup_tensorflow(args.threads)
    ks.ops.load()  # build (first use) and load the kernels before anything is timed
    versions = {
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "keras_spiking": getattr(ks, "__version__", "?"),
        "numpy": np.__version__,
    }
    problems: list[str] = []
    info = ts.machine_info(args, versions)
    busy = info["load_average_at_start"][0]
    if busy > 0.5 * (info["logical_cpus"] or 1):
        problems.append(
            f"load average {busy:.2f} on {info['logical_cpus']} CPUs: other processes compete "
            "for the cores; compare rows of this run only"
        )

    print("# Custom ops: event-driven synaptic input and fused LIF scans")
    print()
    command = " ".join(
        ["python benchmarks/sparse_ops.py", *(sys.argv[1:] if argv is None else argv)]
    )
    print(f"Command: `{command}`")
    print()
    print(
        f"Machine: {info['cpu']}, {info['logical_cpus']} logical CPUs, {args.threads} "
        f"thread(s) for TF (intra/inter-op) and torch; load average at start "
        f"{', '.join(f'{v:.2f}' for v in info['load_average_at_start'])}. "
        f"`ops.DENSITY_CUTOFF` = {ks.ops.DENSITY_CUTOFF} (layers use the dense matmul above it)."
    )
    print()
    payload = {"machine": info, "args": {k: v for k, v in vars(args).items() if k != "skip"}}
    payload["args"]["skip"] = sorted(args.skip)
    if "a" in args.parts:
        payload["a_train_step"] = part_a(args, tf, keras, ks, versions, problems)
    if "b" in args.parts:
        # each activity builds its own in-graph functions, traced once each; TF's warning
        # about "retracing" counts those separate functions and is noise here
        level = tf.get_logger().level
        tf.get_logger().setLevel("ERROR")
        try:
            payload["b_streaming"] = part_b(args, tf, ks)
        finally:
            tf.get_logger().setLevel(level)
    if "c" in args.parts:
        payload["c_kernels"] = part_c(args, tf, ks)

    print("Versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()) + ".")
    load_end = os.getloadavg()
    print(f"Load average at the end: {', '.join(f'{v:.2f}' for v in load_end)}.")
    for line in problems:
        print(f"NOTE: {line}")
    if args.json:
        info["load_average_at_end"] = load_end
        payload["problems"] = problems
        with open(args.json, "w") as f:
            json.dump(payload, f, indent=2)
        print(f"\nWrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
