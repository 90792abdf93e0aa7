"""Peak memory and step time of EventProp vs surrogate-gradient BPTT as the window T grows.

One training step (forward, backward, Adam) of the same network trained two ways:

* **EventProp**: ``SpikeTime [B, 100, 2] -> EventPropCubaLIF(200) -> EventPropLI(10, "max")``;
  spike-time tensors between layers, per-spike buffers in the backward.
* **BPTT**: ``spikes [B, T, 100] -> CubaLIF(200) -> LI(10)`` with the fast-sigmoid surrogate
  and ``MaxMembraneCrossEntropy`` (the library's default path: C++ fused scans when built).

The same spikes at every T: each of the 100 inputs spikes twice at uniform random times in
the first 100 ms, so the network's activity (and its number of spikes, printed) is the same
and only the window grows. dt = 1 ms, batch 32, T = 100, 1000, 5000 steps.

Each (method, T) runs in a fresh subprocess with TensorFlow's BFC allocator on the CPU
(``TF_CPU_ALLOCATOR_USE_BFC=true``), whose statistics count every tensor TensorFlow
allocates, the kernels' outputs included. **Peak** is the step's peak tensor memory above
what was live before it (``tf.config.experimental.get_memory_info``, after a warm-up step
and ``reset_memory_stats``). Scratch memory inside the C++ kernels (per-thread gradient
partials, event lists: O(inputs x units + spikes), not O(T)) is not in that count (the
resident set is no cross-check here: the BFC allocator keeps its pool). Time is the median
of 5 steps.

Run: ``.venv/bin/python benchmarks/eventprop_memory.py`` (about 2 minutes).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

INPUTS, HIDDEN, OUTPUTS, BATCH, SPIKES_PER_INPUT, DT = 100, 200, 10, 32, 2, 1e-3


def _measure(method: str, steps: int) -> dict:
    import keras
    import numpy as np
    import tensorflow as tf

    import keras_spiking as ks

    rng = np.random.default_rng(0)
    times = np.sort(rng.uniform(0, 0.1, (BATCH, INPUTS, SPIKES_PER_INPUT)), axis=-1)
    labels = rng.integers(0, OUTPUTS, BATCH)
    keras.utils.set_random_seed(0)
    if method == "eventprop":
        x = tf.constant(times, tf.float32)
        model = keras.Sequential(
            [
                keras.Input((INPUTS, SPIKES_PER_INPUT)),
                ks.layers.EventPropCubaLIF(
                    HIDDEN,
                    steps=steps,
                    max_spikes=16,
                    on_overflow="warn",
                    kernel_initializer=keras.initializers.RandomNormal(0.1, 0.5),
                ),
                ks.layers.EventPropLI(OUTPUTS, steps=steps, readout="max"),
            ]
        )
        loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    else:
        dense = np.zeros((BATCH, steps, INPUTS), "float32")
        step_index = np.minimum((times / DT).astype(int), steps - 1)
        for b, i, k in np.ndindex(*times.shape):
            dense[b, step_index[b, i, k], i] = 1.0
        x = tf.constant(dense)
        model = keras.Sequential(
            [
                keras.Input((steps, INPUTS)),
                ks.layers.CubaLIF(HIDDEN, tau_mem=20e-3, tau_syn=5e-3),
                ks.layers.LI(OUTPUTS),
            ]
        )
        loss_fn = ks.losses.MaxMembraneCrossEntropy()
    y = tf.constant(labels)
    optimizer = keras.optimizers.Adam(1e-3)

    @tf.function
    def train_step():
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    train_step()  # trace and warm up
    tf.config.experimental.reset_memory_stats("CPU:0")
    live_before = tf.config.experimental.get_memory_info("CPU:0")["current"]
    train_step().numpy()
    peak = tf.config.experimental.get_memory_info("CPU:0")["peak"] - live_before
    durations = []
    for _ in range(5):
        start = time.perf_counter()
        train_step().numpy()
        durations.append(time.perf_counter() - start)
    hidden_spikes = None
    if method == "eventprop":
        hidden = model.layers[0](x)
        hidden_spikes = float(np.isfinite(hidden.numpy()).sum() / BATCH)
    return {
        "method": method,
        "steps": steps,
        "peak_mib": peak / 2**20,
        "step_ms": 1e3 * float(np.median(durations)),
        "hidden_spikes_per_sample": hidden_spikes,
        "kernels": bool(ks.ops.enabled("auto")),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, nargs="+", default=[100, 1000, 5000])
    parser.add_argument("--child", nargs=2, metavar=("METHOD", "STEPS"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(_measure(args.child[0], int(args.child[1]))))
        return
    env = dict(os.environ, TF_CPU_ALLOCATOR_USE_BFC="true", TF_CPP_MIN_LOG_LEVEL="2")
    results = {}
    for steps in args.steps:
        for method in ("eventprop", "bptt"):
            out = subprocess.run(
                [sys.executable, __file__, "--child", method, str(steps)],
                env=env,
                capture_output=True,
                text=True,
                check=True,
            )
            results[method, steps] = json.loads(out.stdout.strip().splitlines()[-1])
            row = results[method, steps]
            print(
                f"  measured {method:9s} T={steps:5d}: {row['peak_mib']:8.1f} MiB, "
                f"{row['step_ms']:8.1f} ms/step",
                flush=True,
            )
    print(
        f"\nOne training step, {INPUTS}-{HIDDEN}-{OUTPUTS}, batch {BATCH}, dt 1 ms, "
        f"{SPIKES_PER_INPUT} spikes per input at every T; peak tensor memory of the step"
    )
    kernels = results["eventprop", args.steps[0]]["kernels"]
    print(f"C++ kernels: {'on' if kernels else 'off (pure TF)'}\n")
    print(
        "| T | EventProp peak | BPTT peak | BPTT / EventProp | EventProp step | BPTT step |"
        " hidden spikes / sample |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for steps in args.steps:
        ep, bp = results["eventprop", steps], results["bptt", steps]
        print(
            f"| {steps} | {ep['peak_mib']:.1f} MiB | {bp['peak_mib']:.1f} MiB | "
            f"{bp['peak_mib'] / max(ep['peak_mib'], 1e-3):.1f}x | {ep['step_ms']:.1f} ms | "
            f"{bp['step_ms']:.1f} ms | {ep['hidden_spikes_per_sample']:.0f} |"
        )
    first, last = results["eventprop", args.steps[0]], results["eventprop", args.steps[-1]]
    growth = last["peak_mib"] / max(first["peak_mib"], 1e-3) - 1
    print(
        f"\nEventProp peak from T={args.steps[0]} to T={args.steps[-1]}: {100 * growth:+.0f} % "
        "(goal: within 20 %)"
    )
    if 1000 in args.steps:
        ratio = results["bptt", 1000]["peak_mib"] / max(
            results["eventprop", 1000]["peak_mib"], 1e-3
        )
        print(f"BPTT / EventProp peak at T=1000: {ratio:.1f}x (goal: >= 3x)")


if __name__ == "__main__":
    main()
