"""One training step of a small spiking network: keras_spiking side by side with its peers.

What is measured
----------------
One full training step -- forward, backward (BPTT with a surrogate gradient) and an Adam update
-- of the network of the foundation issue::

    700 inputs -> 256 LIF (reset by subtraction, fast-sigmoid surrogate) -> 20 LI readout

over ``T = 100`` time steps, batch 64, Bernoulli input spikes at 5 % density (fixed seed),
float32, loss = softmax cross-entropy of the readout membrane's maximum over time. The dynamics
(``beta = exp(-dt / tau) = exp(-1/20)``, threshold 1):

* LIF: ``u[t] = beta v[t-1] + x[t] W1``, ``S[t] = H(u[t] - 1)``, ``v[t] = u[t] - S[t]``;
* LI: ``v[t] = beta v[t-1] + S[t] W2``.

Rows, timed one after another in one process with the same thread count (``--threads``):

* **keras_spiking** (the reference row): ``keras.Sequential([Input, LIF(256), LI(20)])`` trained
  by a ``tf.function`` with ``tf.GradientTape`` and ``keras.optimizers.Adam``, with the
  defaults (``use_custom_ops="auto"``: the C++ kernels when they build here);
* **keras_spiking, train_on_batch**: the same model after ``model.compile`` (Keras' overhead);
* **keras_spiking, pure TF**: ``use_custom_ops=False``: dense matmuls and the XLA scans;
* **keras_spiking, pure TF, jit_compile=False**: the plain (not XLA) while-loop scans;
* **floor**: only the two big matmuls of any dense implementation, the input current
  ``[B*T, 700] @ [700, 256]`` and its weight gradient ``[700, B*T] @ [B*T, 256]``;
* **snnTorch** (``snntorch.Leaky``) and **Norse** (``LIFBoxCell`` + ``LI``), when importable.

All implementations start from the same initial weights. Before timing, the script checks that
they compute the same thing: hidden firing rates, the fraction of matching hidden spikes against
keras_spiking, the initial loss, and the loss over a few training steps (the keras_spiking loss
must decrease). The peers are written the fast way a careful user would write them: the input
projection of all time steps in one matmul, layer by layer, not one ``nn.Linear`` call per step.

Timing: ``--warmup`` steps, then ``--repeats`` timed steps per row, taken round-robin (one step
of each row per round, so a burst of load from other processes hits all rows alike; use
``--order blocks`` for all steps of one row, then the next). The table reports the median and the
interquartile range in ms and each row's ratio to keras_spiking and to the floor. Threads: TF's
intra- and inter-op pools and ``torch.set_num_threads`` all get ``--threads``. On a machine where
other processes compete for the cores, torch's busy-waiting OpenMP threads made the peers' steps
erratic, at times ten times slower, which flatters keras_spiking; ``--omp-wait-policy passive``
makes them sleep when idle (steadier there, but about a quarter slower on a lightly loaded
machine, so it is not the default). The script prints the load average before and after and
warns when the machine is busy. ``--breakdown`` adds a table of the pieces of the keras_spiking
step.

What to expect (a finding recorded in the project's TOOLCHAIN.md, not a result of this script):
the two matmuls of the floor alone take about a quarter of snnTorch's step, so *no* dense
implementation can be more than about 4x faster than snnTorch on this workload. The 5x (and
10-20x) speed goals are for the sparse event kernels (the custom-ops issue), which touch only the
active 5 % of the input rows; the dense path's goal is to stay close to the floor
(``keras_spiking / floor`` near 1). The script prints the bound ``snnTorch / floor`` it measures.

Usage::

    python benchmarks/train_step.py                 # defaults above, 2 threads, 20 repeats
    python benchmarks/train_step.py --quick         # smoke run
    python benchmarks/train_step.py --threads 1 --json out.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

N_IN, N_HIDDEN, N_OUT = 700, 256, 20
DT = 1e-3
TAU_MEM = 20e-3
BETA = math.exp(-DT / TAU_MEM)
THRESHOLD = 1.0
SURROGATE_SCALE = 25.0  # fast sigmoid 1 / (k |x| + 1)^2: keras_spiking's and snnTorch's default
LEARNING_RATE = 1e-3

KS = "keras_spiking"
KS_FIT = "keras_spiking, train_on_batch"
KS_PURETF = "keras_spiking, pure TF (use_custom_ops=False)"
KS_NOJIT = "keras_spiking, pure TF, jit_compile=False"
FLOOR = "floor: the two matmuls"
SNNTORCH = "snnTorch"
NORSE = "Norse"


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2, help="threads for TF and torch")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=100, help="time steps T")
    parser.add_argument("--density", type=float, default=0.05, help="input spike probability")
    parser.add_argument("--repeats", type=int, default=20, help="timed steps per row")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps per row")
    parser.add_argument("--train-steps", type=int, default=8, help="steps of the loss check")
    parser.add_argument(
        "--order", choices=("interleaved", "rounds", "blocks"), default="interleaved"
    )
    parser.add_argument(
        "--omp-wait-policy",
        choices=("default", "passive", "active"),
        default="default",
        help="OMP_WAIT_POLICY for torch's OpenMP threads ('default' leaves torch's own "
        "setting; 'passive' is steadier on a busy machine); one already set in the "
        "environment wins",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--skip",
        default="",
        help="comma-separated rows to leave out: fit, puretf, nojit, floor, snntorch, norse",
    )
    parser.add_argument(
        "--breakdown", action="store_true", help="also time the pieces of the keras_spiking step"
    )
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    parser.add_argument("--quick", action="store_true", help="smoke run: few repeats")
    args = parser.parse_args(argv)
    if args.quick:
        args.repeats, args.warmup, args.train_steps = 3, 1, 3
    for name in ("threads", "batch", "steps", "repeats", "train_steps"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.warmup < 0 or not 0.0 <= args.density <= 1.0:
        parser.error("--warmup must be >= 0 and --density in [0, 1]")
    args.skip = {s.strip().lower() for s in args.skip.split(",") if s.strip()}
    return args


# ------------------------------------------------------------------------------------------
# Machine and workload
# ------------------------------------------------------------------------------------------
def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(args, versions: dict[str, str]) -> dict:
    return {
        "cpu": cpu_model(),
        "logical_cpus": os.cpu_count(),
        "threads": args.threads,
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "(unset)"),
        "load_average_at_start": os.getloadavg(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": versions,
    }


@dataclass
class Workload:
    """The shared input, labels and initial weights."""

    x: np.ndarray  # [batch, T, 700] float32 0/1
    y: np.ndarray  # [batch] int64 labels
    w1: np.ndarray  # [700, 256]
    w2: np.ndarray  # [256, 20]


def make_workload(args) -> Workload:
    rng = np.random.default_rng(args.seed)
    x = (rng.random((args.batch, args.steps, N_IN)) < args.density).astype(np.float32)
    y = rng.integers(0, N_OUT, size=args.batch).astype(np.int64)

    def glorot(fan_in, fan_out):  # keras' default kernel initializer
        limit = math.sqrt(6.0 / (fan_in + fan_out))
        return rng.uniform(-limit, limit, (fan_in, fan_out)).astype(np.float32)

    return Workload(x, y, glorot(N_IN, N_HIDDEN), glorot(N_HIDDEN, N_OUT))


@dataclass
class Row:
    """One implementation: a callable that runs one full, finished training step."""

    name: str
    step: Callable[[], float]
    note: str = ""
    times_ms: list[float] = field(default_factory=list)


@dataclass
class Check:
    """What one implementation computes from the shared initial weights."""

    name: str
    hidden_spikes: np.ndarray | None  # [T, batch, 256]
    initial_loss: float
    losses: list[float]


# ------------------------------------------------------------------------------------------
# TensorFlow / keras_spiking
# ------------------------------------------------------------------------------------------
def setup_tensorflow(threads: int):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    # Must happen before TF runs its first op.
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
    import keras

    import keras_spiking

    return tf, keras, keras_spiking


class TFSide:
    """The keras_spiking rows and the floor, in TensorFlow."""

    def __init__(self, tf, keras, keras_spiking, work: Workload):
        self.tf, self.keras, self.ks = tf, keras, keras_spiking
        self.work = work
        self.x = tf.constant(work.x)
        self.y = tf.constant(work.y.astype(np.int32))

    def loss(self, y, v):
        tf = self.tf
        logits = tf.reduce_max(v, axis=1)  # max over time of the readout membrane
        return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(y, logits))

    def model(self, jit: bool = True, custom_ops="auto"):
        keras, layers = self.keras, self.ks.layers
        model = keras.Sequential(
            [
                keras.Input((self.work.x.shape[1], N_IN)),
                layers.LIF(
                    N_HIDDEN,
                    tau_mem=TAU_MEM,
                    threshold=THRESHOLD,
                    reset="subtract",
                    surrogate="fast_sigmoid",
                    jit_compile=jit,
                    use_custom_ops=custom_ops,
                ),
                layers.LI(N_OUT, tau_mem=TAU_MEM, jit_compile=jit, use_custom_ops=custom_ops),
            ]
        )
        model.set_weights([self.work.w1, self.work.w2])
        return model

    def tape_step(self, model) -> Callable[[], float]:
        tf = self.tf
        optimizer = self.keras.optimizers.Adam(LEARNING_RATE)
        optimizer.build(model.trainable_variables)

        @tf.function
        def step(x, y):
            with tf.GradientTape() as tape:
                loss = self.loss(y, model(x, training=True))
            grads = tape.gradient(loss, model.trainable_variables)
            optimizer.apply_gradients(zip(grads, model.trainable_variables))
            return loss

        return lambda: float(step(self.x, self.y))

    def fit_step(self, model) -> tuple[Callable[[], float], str]:
        """``model.train_on_batch`` after ``compile``; returns it and the loss's name."""
        losses = getattr(self.ks, "losses", None)
        if losses is not None and hasattr(losses, "MaxMembraneCrossEntropy"):
            loss, name = losses.MaxMembraneCrossEntropy(), "losses.MaxMembraneCrossEntropy"
        else:  # the library's loss is missing: the same loss as a plain function

            def loss(y_true, y_pred):
                return self.loss(self.tf.cast(self.tf.reshape(y_true, [-1]), "int32"), y_pred)

            name = "a plain loss function"
        model.compile(optimizer=self.keras.optimizers.Adam(LEARNING_RATE), loss=loss)
        return (lambda: float(model.train_on_batch(self.x, self.y))), name

    def floor_step(self) -> Callable[[], float]:
        tf = self.tf
        batch, steps = self.work.x.shape[:2]
        x_flat = tf.reshape(self.x, [batch * steps, N_IN])
        kernel = tf.Variable(self.work.w1)
        rng = np.random.default_rng(1)
        g_current = tf.constant(rng.standard_normal((batch * steps, N_HIDDEN), np.float32))

        @tf.function
        def step():
            current = tf.matmul(x_flat, kernel)  # forward input current
            g_kernel = tf.matmul(x_flat, g_current, transpose_a=True)  # its weight gradient
            return current, g_kernel

        def run():
            current, g_kernel = step()
            return float(current[0, 0] + g_kernel[0, 0])

        return run

    def check(self, name: str, model, step: Callable[[], float], train_steps: int) -> Check:
        hidden = model.layers[0](self.x)
        v = model.layers[1](hidden)
        initial = float(self.loss(self.y, v))
        losses = [step() for _ in range(train_steps)]
        return Check(name, np.transpose(hidden.numpy(), (1, 0, 2)), initial, losses)


# ------------------------------------------------------------------------------------------
# Peers (torch)
# ------------------------------------------------------------------------------------------
class TorchSide:
    """The peers (snnTorch, Norse): time-major input, weights copied from the workload."""

    def __init__(self, torch, work: Workload):
        self.torch = torch
        self.work = work
        self.x = torch.from_numpy(np.ascontiguousarray(np.transpose(work.x, (1, 0, 2))))  # [T,B,N]
        self.y = torch.from_numpy(work.y)

    def linear(self, weight: np.ndarray, scale: float = 1.0):
        layer = self.torch.nn.Linear(weight.shape[0], weight.shape[1], bias=False)
        with self.torch.no_grad():
            layer.weight.copy_(self.torch.from_numpy(weight.T * np.float32(scale)))
        return layer

    def loss(self, v):  # v: [T, batch, classes]
        return self.torch.nn.functional.cross_entropy(v.amax(dim=0), self.y)

    def train_step(self, net) -> Callable[[], float]:
        optimizer = self.torch.optim.Adam(net.parameters(), lr=LEARNING_RATE)

        def step():
            optimizer.zero_grad(set_to_none=True)
            _, v = net(self.x)
            loss = self.loss(v)
            loss.backward()
            optimizer.step()
            return loss.item()

        return step

    def check(self, name: str, net, step: Callable[[], float], train_steps: int) -> Check:
        with self.torch.no_grad():
            hidden, v = net(self.x)
            initial = float(self.loss(v))
        losses = [step() for _ in range(train_steps)]
        return Check(name, hidden.numpy(), initial, losses)

    def snntorch_net(self):
        """The snnTorch 1.0 network, with our semantics.

        ``snn.Leaky(reset_mechanism="subtract", reset_delay=False)`` computes
        ``u = beta v + I``, ``S = H(u - 1)``, ``v = u - S`` -- exactly our LIF, except when the
        membrane is still above threshold after a reset (u > 2): snnTorch then subtracts the
        threshold before it tests for the next spike. Its default ``reset_delay=True``
        applies the reset one step late and undecayed (``u = beta u_prev + I - S_prev``),
        which differs from our model. Differences in the backward pass: snnTorch's reset with
        ``reset_delay=False`` is not detached (keras_spiking detaches it by default); the cost
        is the same. The readout is ``snn.Leaky(reset_mechanism="none")``: ``v = beta v + I``
        (it also computes spikes nobody uses, as every snnTorch readout does).
        """
        torch = self.torch
        import snntorch as snn
        from snntorch import surrogate

        side = self

        class Net(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.fc1 = side.linear(side.work.w1)
                self.lif = snn.Leaky(
                    beta=BETA,
                    threshold=THRESHOLD,
                    reset_mechanism="subtract",
                    spike_grad=surrogate.fast_sigmoid(slope=SURROGATE_SCALE),
                    reset_delay=False,
                )
                self.fc2 = side.linear(side.work.w2)
                self.li = snn.Leaky(beta=BETA, reset_mechanism="none", reset_delay=False)

            def forward(self, x):
                current = self.fc1(x)  # [T, B, 256], all steps in one matmul
                mem = torch.zeros_like(current[0])
                spikes = []
                for t in range(current.shape[0]):
                    spk, mem = self.lif(current[t], mem)
                    spikes.append(spk)
                spikes = torch.stack(spikes)
                current = self.fc2(spikes)
                mem = torch.zeros_like(current[0])
                v = []
                for t in range(current.shape[0]):
                    _, mem = self.li(current[t], mem)
                    v.append(mem)
                return spikes, torch.stack(v)

        return Net()

    def norse_net(self):
        """The Norse 1.1 network, as close to our semantics as its models allow.

        Hidden layer: ``LIFBoxCell`` (a LIF without synaptic current) with
        ``reset_method=reset_subtract``, ``v_leak = v_reset = 0``, ``v_th = 1``. Norse integrates
        with an explicit Euler step, ``v += dt/tau (I - v)``, i.e. ``v = (1 - a) v + a I`` with
        ``a = dt/tau``: we set ``tau_mem_inv = (1 - beta) / dt`` so the decay is our ``beta``,
        and copy the weights divided by ``1 - beta`` so that ``a I`` equals our current: the
        membrane is then ours up to rounding. Readout: ``norse.torch.LI`` with
        ``tau_syn_inv = 1/dt`` (its synaptic current then lasts exactly one step) and the same
        ``tau_mem_inv``, weights likewise divided by ``1 - beta``: ``v = beta v + I``.
        Differences: Norse's "super" (SuperSpike) surrogate is ``1 / (|x| + 1)^2`` -- its
        ``alpha`` parameter is ignored in 1.1, so the width is that of ``k = 1``, not 25; its
        reset is not detached. Neither changes the cost of a step.
        """
        torch = self.torch
        import norse.torch as norse
        from norse.torch.functional.reset import reset_subtract

        a = 1.0 - BETA
        box = norse.LIFBoxParameters(
            tau_mem_inv=torch.as_tensor(a / DT),
            v_leak=torch.as_tensor(0.0),
            v_th=torch.as_tensor(THRESHOLD),
            v_reset=torch.as_tensor(0.0),
            method="super",
            alpha=torch.as_tensor(SURROGATE_SCALE),
            reset_method=reset_subtract,
        )
        li = norse.LIParameters(
            tau_syn_inv=torch.as_tensor(1.0 / DT),
            tau_mem_inv=torch.as_tensor(a / DT),
            v_leak=torch.as_tensor(0.0),
        )
        side = self

        class Net(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.fc1 = side.linear(side.work.w1, 1.0 / a)
                self.lif = norse.LIFBoxCell(box, dt=DT)
                self.fc2 = side.linear(side.work.w2, 1.0 / a)
                self.li = norse.LI(li, dt=DT)

            def forward(self, x):
                current = self.fc1(x)
                state = None
                spikes = []
                for t in range(current.shape[0]):
                    z, state = self.lif(current[t], state)
                    spikes.append(z)
                spikes = torch.stack(spikes)
                v, _ = self.li(self.fc2(spikes))
                return spikes, v

        return Net()


# ------------------------------------------------------------------------------------------
# Timing and reporting
# ------------------------------------------------------------------------------------------
ROUND_STEPS = 5  # timed steps per row and round in the "rounds" order


def run_timings(rows: list[Row], warmup: int, repeats: int, order: str) -> None:
    """Times ``repeats`` steps of every row (after ``warmup`` untimed ones) in ``order``.

    * ``interleaved``: one step of each row per round. Every timed step follows another
      implementation's step, so it starts cold: the previous row's data has displaced its
      own from the caches, and torch's OpenMP threads may still be spinning on the cores.
    * ``rounds``: per round, each row runs one untimed step and then ``ROUND_STEPS`` timed
      steps back to back, as steps follow each other in a training loop; rounds alternate
      the rows, so slow drifts of the machine's load still hit all rows alike.
    * ``blocks``: all steps of one row, then the next.
    """
    for row in rows:
        for _ in range(warmup):
            row.step()

    def timed(row):
        start = time.perf_counter()
        row.step()
        row.times_ms.append((time.perf_counter() - start) * 1e3)

    if order == "blocks":
        for row in rows:
            for _ in range(repeats):
                timed(row)
    elif order == "rounds":
        done = 0
        while done < repeats:
            block = min(ROUND_STEPS, repeats - done)
            for row in rows:
                row.step()
                for _ in range(block):
                    timed(row)
            done += block
    else:
        for _ in range(repeats):
            for row in rows:
                timed(row)


def stats(times_ms: list[float]) -> dict:
    q25, q50, q75 = np.percentile(times_ms, [25, 50, 75])
    return {"median_ms": float(q50), "iqr_ms": float(q75 - q25), "min_ms": float(min(times_ms))}


def fmt_ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def results_table(rows: list[Row]) -> tuple[str, dict]:
    summary = {row.name: stats(row.times_ms) for row in rows}
    ref = summary.get(KS, {}).get("median_ms")
    floor = summary.get(FLOOR, {}).get("median_ms")
    lines = [
        "| implementation | median (ms) | IQR (ms) | time / keras_spiking | time / floor |",
        "|---|---:|---:|---:|---:|",
    ]
    for row in rows:
        s = summary[row.name]
        s["over_keras_spiking"] = s["median_ms"] / ref if ref else None
        s["over_floor"] = s["median_ms"] / floor if floor else None
        s["note"] = row.note
        s["times_ms"] = row.times_ms
        name = row.name if not row.note else f"{row.name} ({row.note})"
        lines.append(
            f"| {name} | {s['median_ms']:.1f} | {s['iqr_ms']:.1f} | "
            f"{fmt_ratio(s['over_keras_spiking'])} | {fmt_ratio(s['over_floor'])} |"
        )
    return "\n".join(lines), summary


def consistency_report(checks: list[Check]) -> tuple[str, list[dict]]:
    ref = next((c for c in checks if c.name == KS), None)
    lines = [
        "| implementation | hidden firing rate | spikes equal to keras_spiking "
        "(all entries / among spikes) | initial loss | loss over the check steps |",
        "|---|---:|---:|---:|---|",
    ]
    out = []
    for c in checks:
        rate = float(c.hidden_spikes.mean())
        match_all = match_spikes = None
        if ref is not None and c is not ref and c.hidden_spikes.shape == ref.hidden_spikes.shape:
            a, b = c.hidden_spikes > 0.5, ref.hidden_spikes > 0.5
            match_all = float(np.mean(a == b))
            either = np.logical_or(a, b).sum()
            match_spikes = float(np.logical_and(a, b).sum() / either) if either else 1.0
        match = (
            "reference"
            if c is ref
            else ("-" if match_all is None else f"{match_all:.4%} / {match_spikes:.2%}")
        )
        trace = " -> ".join(f"{v:.3f}" for v in c.losses)
        lines.append(f"| {c.name} | {rate:.4f} | {match} | {c.initial_loss:.4f} | {trace} |")
        out.append(
            {
                "name": c.name,
                "hidden_firing_rate": rate,
                "match_all": match_all,
                "match_among_spikes": match_spikes,
                "initial_loss": c.initial_loss,
                "losses": c.losses,
            }
        )
    return "\n".join(lines), out


def breakdown(tf_side: TFSide, model, args) -> str:
    """Times the pieces of the keras_spiking step (forward, gradient, update, the scans)."""
    tf, ks = tf_side.tf, tf_side.ks
    lif, li = model.layers
    x, y = tf_side.x, tf_side.y
    variables = model.trainable_variables
    batch, steps = args.batch, args.steps
    rng = np.random.default_rng(2)
    # the scans take batch-major [batch, time, units] currents, as the layers produce them
    currents = tf.constant(rng.normal(0.0, 0.3, (batch, steps, N_HIDDEN)).astype(np.float32))
    currents2 = tf.constant(rng.normal(0.0, 0.3, (batch, steps, N_OUT)).astype(np.float32))
    beta_h = tf.constant(np.full(N_HIDDEN, BETA, np.float32))
    beta_o = tf.constant(np.full(N_OUT, BETA, np.float32))
    zeros_h = tf.zeros([batch, N_HIDDEN])
    zeros_o = tf.zeros([batch, N_OUT])

    @tf.function
    def forward():
        return tf_side.loss(y, model(x, training=True))

    @tf.function
    def forward_backward():
        with tf.GradientTape() as tape:
            loss = tf_side.loss(y, model(x, training=True))
        return tape.gradient(loss, variables)

    @tf.function
    def input_matmul():
        return lif.cell.input_current(x)

    @tf.function
    def lif_scan_fwd_bwd():
        with tf.GradientTape() as tape:
            tape.watch(currents)
            spikes, _, _ = ks.scan.lif_scan(
                currents,
                zeros_h,
                zeros_h,
                beta_h,
                threshold=THRESHOLD,
                surrogate=lif.cell.surrogate,
                reset="subtract",
            )
            target = tf.reduce_sum(spikes * currents)
        return tape.gradient(target, currents)

    @tf.function
    def lif_scan_fwd():
        spikes, _, _ = ks.scan.lif_scan(
            currents,
            zeros_h,
            zeros_h,
            beta_h,
            threshold=THRESHOLD,
            surrogate=lif.cell.surrogate,
            reset="subtract",
        )
        return spikes

    @tf.function
    def li_scan_fwd_bwd():
        with tf.GradientTape() as tape:
            tape.watch(currents2)
            v, _ = ks.scan.li_scan(currents2, zeros_o, beta_o)
            target = tf.reduce_sum(v * currents2)
        return tape.gradient(target, currents2)

    @tf.function
    def finite_check():
        return tf.debugging.assert_all_finite(x, "check")

    nocheck = tf_side.model(jit=True)
    for layer in nocheck.layers:
        layer.check_inputs = False
    full_step = tf_side.tape_step(model)
    nocheck_step = tf_side.tape_step(nocheck)

    @tf.function
    def transpose_currents():
        return tf.transpose(currents, [1, 0, 2])

    grads = forward_backward()
    optimizer = tf_side.keras.optimizers.Adam(LEARNING_RATE)
    optimizer.build(variables)

    @tf.function
    def adam_update():
        optimizer.apply_gradients(zip(grads, variables))

    pieces = [
        ("full step (as in the main table)", full_step),
        ("full step with check_inputs=False", nocheck_step),
        ("forward (loss)", forward),
        ("forward + backward (no update)", forward_backward),
        ("Adam update alone", adam_update),
        ("input matmul [B*T,700]@[700,256] alone", input_matmul),
        ("LIF scan forward alone", lif_scan_fwd),
        ("LIF scan forward + backward alone", lif_scan_fwd_bwd),
        ("LI scan forward + backward alone", li_scan_fwd_bwd),
        ("assert_all_finite on the whole input (not what check_inputs does)", finite_check),
        ("one batch/time transpose of [B,T,256]", transpose_currents),
    ]
    rows = []
    for name, fn in pieces:
        rows.append(Row(name, lambda fn=fn: (fn(), 0.0)[1]))
    run_timings(rows, max(args.warmup, 1), args.repeats, "interleaved")
    lines = ["| piece of the keras_spiking step | median (ms) | IQR (ms) |", "|---|---:|---:|"]
    for row in rows:
        s = stats(row.times_ms)
        lines.append(f"| {row.name} | {s['median_ms']:.1f} | {s['iqr_ms']:.1f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.omp_wait_policy != "default":  # read when torch loads its OpenMP runtime
        os.environ.setdefault("OMP_WAIT_POLICY", args.omp_wait_policy.upper())
    tf, keras, keras_spiking = setup_tensorflow(args.threads)
    versions = {
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "keras_spiking": getattr(keras_spiking, "__version__", "?"),
        "numpy": np.__version__,
    }
    work = make_workload(args)
    tf_side = TFSide(tf, keras, keras_spiking, work)

    rows: list[Row] = []
    checks: list[Check] = []
    problems: list[str] = []

    model = tf_side.model(jit=True)
    ks_step = tf_side.tape_step(model)
    rows.append(Row(KS, ks_step, "tf.function + GradientTape + Adam"))
    checks.append(tf_side.check(KS, model, ks_step, args.train_steps))
    if "fit" not in args.skip:
        fit_model = tf_side.model(jit=True)
        fit_step, loss_name = tf_side.fit_step(fit_model)
        rows.append(Row(KS_FIT, fit_step, f"after model.compile, {loss_name}"))
    if "puretf" not in args.skip:
        puretf_model = tf_side.model(custom_ops=False)
        puretf_step = tf_side.tape_step(puretf_model)
        rows.append(Row(KS_PURETF, puretf_step, "dense matmuls, XLA scans"))
        checks.append(tf_side.check(KS_PURETF, puretf_model, puretf_step, args.train_steps))
    if "nojit" not in args.skip:
        nojit_model = tf_side.model(jit=False, custom_ops=False)
        nojit_step = tf_side.tape_step(nojit_model)
        rows.append(Row(KS_NOJIT, nojit_step, "plain tf.while_loop scans"))
        checks.append(tf_side.check(KS_NOJIT, nojit_model, nojit_step, args.train_steps))
    if "floor" not in args.skip:
        rows.append(Row(FLOOR, tf_side.floor_step(), "forward + weight gradient"))

    peers = [(SNNTORCH, "snntorch", "snntorch_net"), (NORSE, "norse", "norse_net")]
    torch_side = None
    if any(key not in args.skip for _, key, _ in peers):
        try:
            import torch

            torch.set_num_threads(args.threads)
            try:
                torch.set_num_interop_threads(args.threads)
            except RuntimeError:  # already set in this process
                pass
            versions["torch"] = torch.__version__
            torch.manual_seed(args.seed)
            torch_side = TorchSide(torch, work)
        except Exception as error:  # noqa: BLE001 - any import failure means "skip the peers"
            problems.append(f"torch is not available ({error!r}): snnTorch and Norse skipped")
    for label, key, builder in peers:
        if torch_side is None or key in args.skip:
            continue
        try:
            module = __import__(key)
            versions[key] = getattr(module, "__version__", "?")
            net = getattr(torch_side, builder)()
            step = torch_side.train_step(net)
            checks.append(torch_side.check(label, net, step, args.train_steps))
            rows.append(Row(label, step))
        except Exception as error:  # noqa: BLE001 - a broken peer must not stop the others
            problems.append(f"{label} skipped: {type(error).__name__}: {error}")

    info = machine_info(args, versions)
    print("# Train step: 700 -> 256 LIF -> 20 LI")
    print()
    print(
        f"Workload: batch {args.batch}, T = {args.steps}, input density {args.density:g}, "
        f"float32, one Adam step, loss = softmax cross-entropy of max-over-time readout."
    )
    print(
        f"Machine: {info['cpu']}, {info['logical_cpus']} logical CPUs, {args.threads} thread(s) "
        f"for TF (intra/inter-op) and torch, OMP_WAIT_POLICY {info['omp_wait_policy']}; "
        f"load average at start "
        f"{', '.join(f'{v:.2f}' for v in info['load_average_at_start'])}."
    )
    print("Versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()) + ".")
    info["kernels"] = keras_spiking.ops.status()
    print(f"The default rows' kernels: {info['kernels']}.")
    busy = info["load_average_at_start"][0]
    if busy > 0.5 * (info["logical_cpus"] or 1):
        problems.append(
            f"load average {busy:.2f} on {info['logical_cpus']} CPUs: other processes compete "
            "for the cores, so all timings are inflated and noisy, the torch peers' the most "
            "(see --omp-wait-policy passive); compare rows of this run only"
        )
    for line in problems:
        print(f"NOTE: {line}")
    print()

    print("## Do they compute the same thing? (same initial weights, same input)")
    print()
    check_table, check_json = consistency_report(checks)
    print(check_table)
    ks_losses = checks[0].losses
    decreasing = len(ks_losses) > 1 and ks_losses[-1] < ks_losses[0]
    print()
    print(
        f"keras_spiking loss over {len(ks_losses)} steps: "
        f"{'decreases (OK)' if decreasing else 'DOES NOT DECREASE (check the model!)'}"
    )
    print()

    print(f"## Timings: {args.warmup} warm-up + {args.repeats} timed steps per row ({args.order})")
    print()
    run_timings(rows, args.warmup, args.repeats, args.order)
    table, summary = results_table(rows)
    print(table)
    print()
    if KS in summary and FLOOR in summary:
        print(f"keras_spiking / floor = {summary[KS]['over_floor']:.2f}x")
    for peer in (SNNTORCH, NORSE):
        if peer not in summary:
            continue
        parts = []
        if KS in summary:
            parts.append(f"{peer} / keras_spiking = {summary[peer]['over_keras_spiking']:.2f}x")
        if FLOOR in summary:
            parts.append(
                f"{peer} / floor = {summary[peer]['over_floor']:.2f}x (the most any dense "
                f"path can gain over {peer} here)"
            )
        print("; ".join(parts))
    load_end = os.getloadavg()
    print(f"Load average at the end: {', '.join(f'{v:.2f}' for v in load_end)}.")

    breakdown_table = None
    if args.breakdown:
        print()
        print("## Where the keras_spiking step spends its time")
        print()
        breakdown_table = breakdown(tf_side, tf_side.model(jit=True), args)
        print(breakdown_table)

    if args.json:
        info["load_average_at_end"] = load_end
        payload = {
            "workload": {
                "batch": args.batch,
                "steps": args.steps,
                "density": args.density,
                "seed": args.seed,
                "inputs": N_IN,
                "hidden": N_HIDDEN,
                "outputs": N_OUT,
                "beta": BETA,
            },
            "timing": {"warmup": args.warmup, "repeats": args.repeats, "order": args.order},
            "machine": info,
            "problems": problems,
            "consistency": check_json,
            "keras_spiking_loss_decreases": decreasing,
            "results": summary,
            "breakdown_markdown": breakdown_table,
        }
        with open(args.json, "w") as f:
            json.dump(payload, f, indent=2)
        print(f"\nWrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
