"""One training step of a spiking conv network: keras_spiking side by side with its peers.

What is measured
----------------
One full training step -- forward, backward (BPTT with a surrogate gradient) and an Adam
update, the same in every implementation -- of the network 15C5-P2-40C5-P2-300-10::

    spikes [batch, T, 28, 28, 1]
      -> conv 15 x 5x5 LIF -> sum pool 2 -> conv 40 x 5x5 LIF -> sum pool 2
      -> flatten (640) -> 300 LIF -> 10 LI readout

batch 64, float32, no biases, valid padding, at ``T = 5`` and ``T = 20`` and input activity
5 % and 20 % (the input is a seeded Bernoulli spike tensor of that density, so the first
conv sees spikes). Loss: softmax cross-entropy of the readout membrane's maximum over time
(random labels). Dynamics everywhere (``beta = exp(-dt / tau) = exp(-1/20)``, threshold 1,
reset by subtraction, fast-sigmoid surrogate ``1 / (25 |x| + 1)^2``):

* LIF: ``u[t] = beta v[t-1] + I[t]``, ``S[t] = H(u[t] - 1)``, ``v[t] = u[t] - S[t]``;
* LI: ``v[t] = beta v[t-1] + I[t]``;
* sum pooling of spikes: spike counts per 2x2 window (what the next conv sees).

Rows, per (T, activity), timed round-robin in one process (``--threads`` for TF and torch):

* **keras_spiking** (the reference): ``keras.Sequential([Input, ConvLIF2D(15, 5),
  SumPooling2D(2), ConvLIF2D(40, 5), SumPooling2D(2), SpatialFlatten(), LIF(300), LI(10)])``,
  a ``tf.function`` with ``tf.GradientTape`` + ``keras.optimizers.Adam``, defaults
  (``use_custom_ops="auto"``: the C++ event conv kernel where the input density is below
  ``ops.dispatch.conv_density_cutoff``, the fused scans, the event matmul of the dense LIF);
* **keras_spiking, dense**: the same with ``use_custom_ops=False`` on every layer (oneDNN
  ``tf.nn.convolution``, dense matmuls, XLA-compiled scans);
* **floor**: only the dense convs and matmuls of the step, in TF, with no neuron at all:
  conv1 forward + weight gradient, conv2 forward + weight and input gradients, the 640x300
  and 300x10 products with their gradients. No dense implementation can be faster than this;
* **snnTorch, layer by layer**: ``nn.Conv2d`` / ``nn.Linear`` (no bias) over all ``T`` steps
  at once (time folded into the batch), then a Python loop over time of ``snn.Leaky``
  per layer (the fast way a careful user writes it);
* **snnTorch, per-step loop**: the tutorial way (snnTorch tutorial 6): one Python loop over
  time around the whole network, each step calling every conv, pool, ``Linear`` and
  ``snn.Leaky`` on one ``[batch, ...]`` slice;
* **Norse**: as the layer-by-layer snnTorch row, with ``norse.torch.LIFBoxCell`` and
  ``norse.torch.LI`` (see :meth:`TorchSide.net`).

Semantic differences of the peers (none changes the cost of a step): snnTorch
``Leaky(reset_delay=False)`` subtracts the threshold a second time at the next step when the
membrane is still above it after a reset (``u > 2``; our LIF subtracts once per spike); its
and Norse's resets are not detached from the gradient (ours is, by default); Norse's
SuperSpike surrogate ignores its ``alpha`` (width ``k = 1``, ours 25); Norse integrates
``v += dt/tau (I - v)``, so its weights are ours divided by ``1 - beta`` and its membrane
equals ours up to rounding.

Weights: Keras' Glorot-uniform draws (seeded), scaled per layer by ``GAINS`` so that every
layer fires (plain Glorot leaves the network silent at 5 % input: no spikes past conv1,
which would make every spike-driven path look free); the script prints the firing rates.
The same numbers go into every implementation (transposed to ``[out, in, kh, kw]`` for
``nn.Conv2d``, the 640 flattened features reordered from ``(h, w, c)`` to torch's
``(c, h, w)`` for the first ``nn.Linear``).

Correctness pre-check (before any timing, per (T, activity), on the first ``--check-batch``
samples): every implementation's spikes of the three LIF layers are compared with
keras_spiking's, and its loss; the dense keras_spiking path's weight gradients too. The
script exits with status 1 (after printing the table, without timing unless
``--ignore-check``) when they disagree beyond the tolerances ``TOL_*`` below.

Timing: ``--warmup`` untimed steps per row, then ``--repeats`` timed steps per row,
one step of each row per round (``--order``, as in ``train_step.py``). Median and
interquartile range in ms, each row's time over keras_spiking's and over the floor's.
Then a profile of the keras_spiking step (``--no-profile`` skips it): the pieces of the step
timed alone, warm (back-to-back calls), on the step's own tensors, for the default and the
dense path side by side.

Usage::

    python benchmarks/conv_step.py                  # 2 threads, 15 repeats, T 5,20, 5 %, 20 %
    python benchmarks/conv_step.py --quick          # smoke run
    python benchmarks/conv_step.py --steps 20 --densities 0.05 --repeats 30
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import train_step as ts  # machine info, TF setup, timing and statistics helpers

BATCH = 64
IMAGE = (28, 28, 1)
FILTERS1, FILTERS2, HIDDEN, CLASSES, KSIZE = 15, 40, 300, 10, 5
POOLED = (4, 4, FILTERS2)  # after the second pool: 640 features
DT = 1e-3
TAU = 20e-3
BETA = math.exp(-DT / TAU)
THRESHOLD = 1.0
SURROGATE_SCALE = 25.0
LEARNING_RATE = 1e-3
# Gains on the Glorot draws of conv1, conv2, fc (see the module docstring): at 5 % input,
# T = 20 the LIF layers fire at about 5 %, 10 % and 30 %.
GAINS = (4.0, 1.5, 1.5)

# Tolerances of the correctness pre-check: (least fraction of equal spike entries per LIF
# layer, largest |loss difference| / max(1, |loss|)). Summation orders differ (oneDNN, the
# event kernel, torch), which moves membranes by ~1e-6; a membrane that close to the
# threshold flips a spike, and a flip propagates to the layers above and to later steps, so
# spike agreement is a fraction, not equality.
TOL_OURS = (0.999, 1e-4)  # keras_spiking dense vs default
TOL_PEERS = (0.995, 5e-3)  # torch rows vs the row they are compared with
TOL_GRAD_OURS = 1e-3  # max |grad difference| / max |grad|, per weight, dense vs default

KS = "keras_spiking"
KS_DENSE = "keras_spiking, dense (use_custom_ops=False)"
KS_FORCED = "keras_spiking, event conv forced (cutoff patched to 1)"
FLOOR = "floor: dense convs + matmuls"
SNN_LAYER = "snnTorch, layer by layer"
SNN_STEP = "snnTorch, per-step loop"
NORSE = "Norse"
REF_OURS = "plain torch loop, our LIF (check only)"
REF_SNN = "plain torch loop, snnTorch's spike test (check only)"


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2, help="threads for TF and torch")
    parser.add_argument("--batch", type=int, default=BATCH)
    parser.add_argument("--steps", default="5,20", help="comma-separated T values")
    parser.add_argument("--densities", default="0.05,0.2", help="comma-separated activities")
    parser.add_argument("--repeats", type=int, default=15, help="timed steps per row")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per row")
    parser.add_argument("--check-batch", type=int, default=16, help="batch of the pre-check")
    parser.add_argument(
        "--order", choices=("interleaved", "rounds", "blocks"), default="interleaved"
    )
    parser.add_argument(
        "--omp-wait-policy",
        choices=("default", "passive", "active"),
        default="passive",
        help="OMP_WAIT_POLICY for torch's OpenMP threads (default here: passive; 'default' "
        "leaves torch's busy-waiting, which made the peers 10-40x slower on a loaded machine)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--skip",
        default="",
        help="rows to leave out: dense, forced, floor, snntorch, snntorch-step, norse",
    )
    parser.add_argument("--no-profile", action="store_true", help="skip the step profile")
    parser.add_argument(
        "--profile-repeats", type=int, default=10, help="timed calls per profile piece"
    )
    parser.add_argument(
        "--ignore-check", action="store_true", help="time even if the pre-check fails"
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: few repeats")
    args = parser.parse_args(argv)
    if args.quick:
        args.repeats, args.warmup, args.profile_repeats = 3, 1, 3
    try:
        args.steps = [int(s) for s in args.steps.split(",") if s.strip()]
        args.densities = [float(d) for d in args.densities.split(",") if d.strip()]
    except ValueError as error:
        parser.error(f"--steps / --densities: {error}")
    if not args.steps or min(args.steps) < 1:
        parser.error("--steps must be integers >= 1")
    if not args.densities or not all(0.0 <= d <= 1.0 for d in args.densities):
        parser.error("--densities must lie in [0, 1]")
    for name in ("threads", "batch", "repeats", "check_batch", "profile_repeats"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    args.skip = {s.strip().lower() for s in args.skip.split(",") if s.strip()}
    return args


# ------------------------------------------------------------------------------------------
# Workload
# ------------------------------------------------------------------------------------------
@dataclass
class Weights:
    """The initial weights, in keras_spiking's layout."""

    k1: np.ndarray  # [5, 5, 1, 15]
    k2: np.ndarray  # [5, 5, 15, 40]
    w3: np.ndarray  # [640, 300], rows in (h, w, c) order
    w4: np.ndarray  # [300, 10]


def make_weights(seed: int) -> Weights:
    rng = np.random.default_rng(seed)

    def glorot(shape, fan_in, fan_out, gain=1.0):  # keras' default kernel initializer
        limit = math.sqrt(6.0 / (fan_in + fan_out))
        return (gain * rng.uniform(-limit, limit, shape)).astype(np.float32)

    area = KSIZE * KSIZE
    return Weights(
        glorot((KSIZE, KSIZE, 1, FILTERS1), area, area * FILTERS1, GAINS[0]),
        glorot((KSIZE, KSIZE, FILTERS1, FILTERS2), area * FILTERS1, area * FILTERS2, GAINS[1]),
        glorot((math.prod(POOLED), HIDDEN), math.prod(POOLED), HIDDEN, GAINS[2]),
        glorot((HIDDEN, CLASSES), HIDDEN, CLASSES),
    )


@dataclass
class Inputs:
    """One workload's input spikes and labels."""

    x: np.ndarray  # [batch, T, 28, 28, 1] float32 0/1
    y: np.ndarray  # [batch] int64


def make_inputs(batch: int, steps: int, density: float, seed: int) -> Inputs:
    rng = np.random.default_rng([seed, steps, int(round(density * 1e6))])
    x = (rng.random((batch, steps, *IMAGE)) < density).astype(np.float32)
    return Inputs(x, rng.integers(0, CLASSES, size=batch).astype(np.int64))


@dataclass
class Row:
    """One implementation: a callable that runs one full, finished training step."""

    name: str
    step: Callable[[], float]
    note: str = ""
    times_ms: list[float] = field(default_factory=list)


@dataclass
class Forward:
    """What one implementation computes on the check batch, in keras_spiking's layout."""

    name: str
    spikes: list[np.ndarray]  # the three LIF layers' spikes, [batch, T, ...] channels last
    loss: float


# ------------------------------------------------------------------------------------------
# keras_spiking
# ------------------------------------------------------------------------------------------
class TFSide:
    """The keras_spiking models, their training step, the checks and the floor, in TF."""

    def __init__(self, tf, keras, ks, weights: Weights):
        self.tf, self.keras, self.ks = tf, keras, ks
        self.weights = weights

    def loss(self, y, v):
        tf = self.tf
        logits = tf.reduce_max(v, axis=1)
        return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(y, logits))

    def model(self, steps: int, custom_ops="auto"):
        keras, layers = self.keras, self.ks.layers
        lif = dict(
            tau_mem=TAU,
            threshold=THRESHOLD,
            reset="subtract",
            surrogate="fast_sigmoid",
            use_custom_ops=custom_ops,
        )
        model = keras.Sequential(
            [
                keras.Input((steps, *IMAGE)),
                layers.ConvLIF2D(FILTERS1, KSIZE, **lif),
                layers.SumPooling2D(2),
                layers.ConvLIF2D(FILTERS2, KSIZE, **lif),
                layers.SumPooling2D(2),
                layers.SpatialFlatten(),
                layers.LIF(HIDDEN, **lif),
                layers.LI(CLASSES, tau_mem=TAU, use_custom_ops=custom_ops),
            ]
        )
        w = self.weights
        model.set_weights([w.k1, w.k2, w.w3, w.w4])
        return model

    def forced_events_step(self, model, inputs: Inputs) -> Callable[[], float]:
        """The default step, traced with the event conv kernel on whatever the density.

        ``ops.dispatch.conv_density_cutoff`` is replaced by 1.0 while the step is traced (the
        cutoff is read at trace time), so both conv layers take the event kernel.
        """
        dispatch = self.ks.ops.dispatch
        step = self.train_step(model, inputs)
        original = dispatch.conv_density_cutoff
        dispatch.conv_density_cutoff = lambda *args, **kwargs: 1.0
        try:
            self.forced_first_loss = step()  # traces
        finally:
            dispatch.conv_density_cutoff = original
        return step

    def train_step(self, model, inputs: Inputs) -> Callable[[], float]:
        tf = self.tf
        x, y = tf.constant(inputs.x), tf.constant(inputs.y.astype(np.int32))
        optimizer = self.keras.optimizers.Adam(LEARNING_RATE)
        optimizer.build(model.trainable_variables)

        @tf.function
        def step(x, y):
            with tf.GradientTape() as tape:
                loss = self.loss(y, model(x, training=True))
            grads = tape.gradient(loss, model.trainable_variables)
            optimizer.apply_gradients(zip(grads, model.trainable_variables))
            return loss

        return lambda: float(step(x, y))

    def forward(self, name: str, model, inputs: Inputs):
        """Spikes, loss and weight gradients of one training-mode forward + backward."""
        tf = self.tf
        x, y = tf.constant(inputs.x), tf.constant(inputs.y.astype(np.int32))

        @tf.function
        def run(x, y):
            with tf.GradientTape() as tape:
                h, spikes = x, []
                for layer in model.layers:
                    h = layer(h, training=True)
                    if type(layer).__name__ in ("ConvLIF2D", "LIF"):
                        spikes.append(h)
                loss = self.loss(y, h)
            return spikes, loss, tape.gradient(loss, model.trainable_variables)

        spikes, loss, grads = run(x, y)
        return (
            Forward(name, [s.numpy() for s in spikes], float(loss)),
            [g.numpy() for g in grads],
        )

    def kernel_paths(self, model, inputs: Inputs) -> str:
        """Which kernel wrappers each layer ran in one eager training-mode forward pass.

        Eager: of each data-dependent choice only the branch taken runs, so the counts say
        whether the event kernel or the dense op served the layer (the backward pass takes
        the same branch).
        """
        h, parts = self.tf.constant(inputs.x), []
        for layer in model.layers:
            with self.ks.ops.count_kernel_calls() as counts:
                h = layer(h, training=True)
            if counts:
                parts.append(f"{layer.name}: {', '.join(sorted(counts))}")
        return "; ".join(parts) or "none"

    def floor_step(self, inputs: Inputs) -> Callable[[], float]:
        """The dense convs and matmuls of a step (forward + gradients), no neurons."""
        tf = self.tf
        batch, steps = inputs.x.shape[:2]
        n = batch * steps
        rng = np.random.default_rng(1)
        x = tf.constant(inputs.x.reshape(n, *IMAGE))
        pooled1 = tf.constant((rng.random((n, 12, 12, FILTERS1)) < 0.1).astype(np.float32))
        flat = tf.constant((rng.random((n, math.prod(POOLED))) < 0.2).astype(np.float32))
        hidden = tf.constant((rng.random((n, HIDDEN)) < 0.2).astype(np.float32))
        g1 = tf.constant(rng.standard_normal((n, 24, 24, FILTERS1), np.float32))
        g2 = tf.constant(rng.standard_normal((n, 8, 8, FILTERS2), np.float32))
        g3 = tf.constant(rng.standard_normal((n, HIDDEN), np.float32))
        g4 = tf.constant(rng.standard_normal((n, CLASSES), np.float32))
        w = self.weights
        k1, k2 = tf.Variable(w.k1), tf.Variable(w.k2)
        w3, w4 = tf.Variable(w.w3), tf.Variable(w.w4)
        raw = tf.raw_ops
        ones = [1, 1, 1, 1]

        @tf.function
        def step():
            out = [
                tf.nn.conv2d(x, k1, 1, "VALID"),
                raw.Conv2DBackpropFilter(
                    input=x,
                    filter_sizes=tf.shape(k1),
                    out_backprop=g1,
                    strides=ones,
                    padding="VALID",
                ),
                tf.nn.conv2d(pooled1, k2, 1, "VALID"),
                raw.Conv2DBackpropFilter(
                    input=pooled1,
                    filter_sizes=tf.shape(k2),
                    out_backprop=g2,
                    strides=ones,
                    padding="VALID",
                ),
                raw.Conv2DBackpropInput(
                    input_sizes=tf.shape(pooled1),
                    filter=k2,
                    out_backprop=g2,
                    strides=ones,
                    padding="VALID",
                ),
                tf.matmul(flat, w3),
                tf.matmul(flat, g3, transpose_a=True),
                tf.matmul(g3, w3, transpose_b=True),
                tf.matmul(hidden, w4),
                tf.matmul(hidden, g4, transpose_a=True),
                tf.matmul(g4, w4, transpose_b=True),
            ]
            return tf.add_n([tf.reduce_sum(o[..., :1]) for o in out])

        return lambda: float(step())


# ------------------------------------------------------------------------------------------
# Peers (torch)
# ------------------------------------------------------------------------------------------
class TorchSide:
    """snnTorch and Norse, time-major ``[T, batch, C, H, W]``, weights from :class:`Weights`."""

    def __init__(self, torch, weights: Weights):
        self.torch = torch
        self.weights = weights

    def inputs(self, inputs: Inputs):
        torch = self.torch
        x = np.ascontiguousarray(np.transpose(inputs.x, (1, 0, 4, 2, 3)))  # [T, B, 1, 28, 28]
        return torch.from_numpy(x), torch.from_numpy(inputs.y)

    def _layers(self, scale: float = 1.0):
        """conv1, conv2, fc1, fc2 with our weights (times ``scale``), torch layouts."""
        nn, torch, w = self.torch.nn, self.torch, self.weights
        conv1 = nn.Conv2d(1, FILTERS1, KSIZE, bias=False)
        conv2 = nn.Conv2d(FILTERS1, FILTERS2, KSIZE, bias=False)
        fc1 = nn.Linear(math.prod(POOLED), HIDDEN, bias=False)
        fc2 = nn.Linear(HIDDEN, CLASSES, bias=False)
        # (h, w, c) rows of our dense kernel -> torch's flatten order (c, h, w)
        w3 = w.w3.reshape(*POOLED, HIDDEN).transpose(2, 0, 1, 3).reshape(-1, HIDDEN)
        with torch.no_grad():
            for layer, value in (
                (conv1, w.k1.transpose(3, 2, 0, 1)),
                (conv2, w.k2.transpose(3, 2, 0, 1)),
                (fc1, w3.T),
                (fc2, w.w4.T),
            ):
                layer.weight.copy_(
                    torch.from_numpy(np.ascontiguousarray(value) * np.float32(scale))
                )
        return conv1, conv2, fc1, fc2

    def sum_pool(self, s):
        return self.torch.nn.functional.avg_pool2d(s, 2, divisor_override=1)

    def net(self, kind: str):
        """``kind``: "snntorch" (layer by layer), "snntorch-step" (tutorial loop), "norse".

        snnTorch: ``snn.Leaky(beta, threshold=1, reset_mechanism="subtract",
        spike_grad=fast_sigmoid(slope=25), reset_delay=False)`` computes ``u = beta v + I``,
        ``S = H(u - 1)``, ``v = u - S`` (its default ``reset_delay=True`` would reset one step
        late); the readout ``snn.Leaky(reset_mechanism="none")`` is ``v = beta v + I``.

        Norse: ``LIFBoxCell`` (no synaptic current) with ``reset_subtract``, ``v_th = 1``,
        ``tau_mem_inv = (1 - beta) / dt`` and weights divided by ``1 - beta``, so that its
        Euler step ``v += dt/tau (I - v)`` is our ``v = beta v + I``; readout ``norse.torch.LI``
        with ``tau_syn_inv = 1/dt`` (the synaptic current lasts one step), likewise.
        """
        torch = self.torch
        side = self
        if kind == "norse":
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
            li_params = norse.LIParameters(
                tau_syn_inv=torch.as_tensor(1.0 / DT),
                tau_mem_inv=torch.as_tensor(a / DT),
                v_leak=torch.as_tensor(0.0),
            )
            layers = self._layers(1.0 / a)

            def neuron():
                return norse.LIFBoxCell(box, dt=DT)

            def readout():
                return norse.LI(li_params, dt=DT)
        elif kind.startswith("ref-"):  # check only: plain torch loops, no library
            layers = self._layers()
            snntorch_test = kind == "ref-snntorch"

            def neuron():
                def cell(current, v):
                    u = BETA * v + current
                    # snnTorch tests u - theta [v > theta] against theta: its `mem_reset`
                    # of the previous (already reset) membrane is subtracted before the test
                    test = u - THRESHOLD * (v > THRESHOLD).float() if snntorch_test else u
                    s = (test > THRESHOLD).float()
                    return s, u - THRESHOLD * s

                return cell

            def readout():
                return lambda current, v: (None, BETA * v + current)
        else:
            import snntorch as snn
            from snntorch import surrogate

            layers = self._layers()

            def neuron():
                return snn.Leaky(
                    beta=BETA,
                    threshold=THRESHOLD,
                    reset_mechanism="subtract",
                    spike_grad=surrogate.fast_sigmoid(slope=SURROGATE_SCALE),
                    reset_delay=False,
                )

            def readout():
                return snn.Leaky(beta=BETA, reset_mechanism="none", reset_delay=False)

        def lif_loop(cell, current):  # current [T, ...] -> spikes [T, ...]
            out, state = [], None if kind == "norse" else torch.zeros_like(current[0])
            for t in range(current.shape[0]):
                z, state = cell(current[t], state)
                out.append(z)
            return torch.stack(out)

        def fold(f, x):  # apply f to [T * B, ...], return [T, B, ...]
            y = f(x.flatten(0, 1))
            return y.reshape(*x.shape[:2], *y.shape[1:])

        class Net(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.conv1, self.conv2, self.fc1, self.fc2 = layers
                self.lif1, self.lif2, self.lif3 = neuron(), neuron(), neuron()
                self.li = readout()

            def forward(self, x):  # x [T, B, 1, 28, 28] -> (spikes, v [T, B, 10])
                if kind == "snntorch-step":
                    return self.per_step(x)
                s1 = lif_loop(self.lif1, fold(self.conv1, x))
                s2 = lif_loop(self.lif2, fold(lambda s: self.conv2(side.sum_pool(s)), s1))
                s3 = lif_loop(self.lif3, self.fc1(fold(side.sum_pool, s2).flatten(2)))
                current = self.fc2(s3)
                if kind == "norse":
                    v, _ = self.li(current)
                else:
                    mem, v = torch.zeros_like(current[0]), []
                    for t in range(current.shape[0]):
                        _, mem = self.li(current[t], mem)
                        v.append(mem)
                    v = torch.stack(v)
                return (s1, s2, s3), v

            def per_step(self, x):
                """The snnTorch tutorial form: the whole network inside one loop over time."""
                batch = x.shape[1]
                mem1 = torch.zeros(batch, FILTERS1, 24, 24)
                mem2 = torch.zeros(batch, FILTERS2, 8, 8)
                mem3 = torch.zeros(batch, HIDDEN)
                mem4 = torch.zeros(batch, CLASSES)
                s1, s2, s3, v = [], [], [], []
                for t in range(x.shape[0]):
                    spk1, mem1 = self.lif1(self.conv1(x[t]), mem1)
                    spk2, mem2 = self.lif2(self.conv2(side.sum_pool(spk1)), mem2)
                    spk3, mem3 = self.lif3(self.fc1(side.sum_pool(spk2).flatten(1)), mem3)
                    _, mem4 = self.li(self.fc2(spk3), mem4)
                    s1.append(spk1), s2.append(spk2), s3.append(spk3), v.append(mem4)
                stack = torch.stack
                return (stack(s1), stack(s2), stack(s3)), stack(v)

        return Net()

    def loss(self, v, y):
        return self.torch.nn.functional.cross_entropy(v.amax(dim=0), y)

    def train_step(self, net, inputs: Inputs) -> Callable[[], float]:
        x, y = self.inputs(inputs)
        optimizer = self.torch.optim.Adam(net.parameters(), lr=LEARNING_RATE)

        def step():
            optimizer.zero_grad(set_to_none=True)
            _, v = net(x)
            loss = self.loss(v, y)
            loss.backward()
            optimizer.step()
            return loss.item()

        return step

    def forward(self, name: str, net, inputs: Inputs) -> Forward:
        x, y = self.inputs(inputs)
        with self.torch.no_grad():
            spikes, v = net(x)
            loss = float(self.loss(v, y))
        # [T, B, C, H, W] -> [B, T, H, W, C]; [T, B, N] -> [B, T, N]
        layout = [(1, 0, 3, 4, 2), (1, 0, 3, 4, 2), (1, 0, 2)]
        return Forward(name, [s.numpy().transpose(p) for s, p in zip(spikes, layout)], loss)


# ------------------------------------------------------------------------------------------
# Pre-check
# ------------------------------------------------------------------------------------------
def compare(ref: Forward, other: Forward, tol) -> tuple[list[str], bool]:
    """Cells of the check table for ``other`` against ``ref`` and whether it passes ``tol``.

    ``tol``: (least fraction of equal spike entries per layer, largest relative loss
    difference), or None (shown, not checked).
    """
    tol_spikes, tol_loss = tol if tol is not None else (0.0, math.inf)
    cells, ok = [], True
    for a, b in zip(ref.spikes, other.spikes):
        if a.shape != b.shape:
            cells.append(f"shape {b.shape} != {a.shape}")
            ok = False
            continue
        agree = float(np.mean((a > 0.5) == (b > 0.5)))
        ok &= agree >= tol_spikes
        cells.append(f"{b.mean():.4f} / {agree:.4%}")
    loss_err = abs(other.loss - ref.loss) / max(1.0, abs(ref.loss))
    ok &= loss_err <= tol_loss
    cells.append(f"{other.loss:.5f} ({loss_err:.1e})")
    return cells, ok


def grad_difference(ref: list[np.ndarray], other: list[np.ndarray]) -> float:
    return max(
        float(np.max(np.abs(a - b)) / max(float(np.max(np.abs(a))), 1e-30))
        for a, b in zip(ref, other)
    )


# ------------------------------------------------------------------------------------------
# Profile of the keras_spiking step
# ------------------------------------------------------------------------------------------
def profile_pieces(tf_side: TFSide, model, event: bool, inputs: Inputs) -> list:
    """``(name, callable)`` pieces of one model's training step, each a ``tf.function``.

    Forward + backward each, as in the step, with a random output gradient: the two conv
    synaptic inputs (``cell.input_current``: the conv with its weight gradient, and conv2's
    input gradient; ``event``: the call may take the event kernel, as the layer's own does),
    the two ConvLIF2D layers whole (conv + density sample + fused scan + checks), the pools
    and flatten, the dense LIF(300) layer, the LI readout, the loss, Adam; then the full step,
    forward alone, forward + backward, and an empty call (the cost of calling a function).
    """
    tf, ks = tf_side.tf, tf_side.ks
    x = tf.constant(inputs.x)
    y = tf.constant(inputs.y.astype(np.int32))
    rng = np.random.default_rng(3)
    conv1, pool1, conv2, pool2, flatten, lif3, li4 = model.layers
    acts = [x]  # every layer's input, from one training-mode forward
    for layer in model.layers:
        acts.append(layer(acts[-1], training=True))
    grads_out = [tf.constant(rng.standard_normal(a.shape).astype(np.float32)) for a in acts]
    matmul = ks.ops.synaptic_input if event else None

    def fwd_bwd(fn, index, watch_input=True, variables=()):
        """``fn(acts[index])`` forward + backward, output gradient of layer ``index``'s size."""
        inp = acts[index]

        @tf.function
        def run():
            with tf.GradientTape() as tape:
                if watch_input:
                    tape.watch(inp)
                out = fn(inp)
            sources = ([inp] if watch_input else []) + list(variables)
            g = tf.reshape(grads_out[index + 1], tf.shape(out))
            return tape.gradient(out, sources, output_gradients=g)

        return run

    def conv_input(cell):
        return lambda h: cell.input_current(h, matmul)

    def layer_fn(layer):
        return lambda h: layer(h, training=True)

    optimizer = tf_side.keras.optimizers.Adam(LEARNING_RATE)
    optimizer.build(model.trainable_variables)
    fixed = [
        tf.constant(rng.standard_normal(v.shape).astype(np.float32) * 1e-6)
        for v in model.trainable_variables
    ]

    @tf.function
    def adam():
        optimizer.apply_gradients(zip(fixed, model.trainable_variables))

    @tf.function
    def forward():
        return tf_side.loss(y, model(x, training=True))

    @tf.function
    def forward_backward():
        with tf.GradientTape() as tape:
            loss = tf_side.loss(y, model(x, training=True))
        return tape.gradient(loss, model.trainable_variables)

    @tf.function
    def loss_piece():
        v = acts[-1]
        with tf.GradientTape() as tape:
            tape.watch(v)
            loss = tf_side.loss(y, v)
        return tape.gradient(loss, v)

    @tf.function
    def empty():
        return tf.constant(0.0)

    return [
        (STEP, tf_side.train_step(model, inputs)),
        ("forward (loss)", forward),
        ("forward + backward", forward_backward),
        (CONV1, fwd_bwd(conv_input(conv1.cell), 0, False, [conv1.cell.kernel])),
        (CONV2, fwd_bwd(conv_input(conv2.cell), 2, True, [conv2.cell.kernel])),
        (LAYER1, fwd_bwd(layer_fn(conv1), 0, False, conv1.trainable_variables)),
        (LAYER2, fwd_bwd(layer_fn(conv2), 2, True, conv2.trainable_variables)),
        (POOL1, fwd_bwd(layer_fn(pool1), 1)),
        (POOL2, fwd_bwd(lambda h: flatten(pool2(h)), 3)),
        (LAYER3, fwd_bwd(layer_fn(lif3), 5, True, lif3.trainable_variables)),
        (LAYER4, fwd_bwd(layer_fn(li4), 6, True, li4.trainable_variables)),
        (LOSS, loss_piece),
        (ADAM, adam),
        (EMPTY, empty),
    ]


STEP = "full step (tf.function + tape + Adam)"
CONV1 = "conv1 input: conv fwd + weight grad"
CONV2 = "conv2 input: conv fwd + weight grad + input grad"
LAYER1 = "ConvLIF2D(15) whole layer fwd + bwd"
LAYER2 = "ConvLIF2D(40) whole layer fwd + bwd"
POOL1 = "sum pool 1 fwd + bwd"
POOL2 = "sum pool 2 + flatten fwd + bwd"
LAYER3 = "LIF(300) whole layer fwd + bwd"
LAYER4 = "LI(10) whole layer fwd + bwd"
LOSS = "loss fwd + bwd"
ADAM = "Adam update"
EMPTY = "empty tf.function call"


def profile(tf_side: TFSide, models: dict, inputs: Inputs, args) -> str:
    """Times the pieces of :func:`profile_pieces` for each model, warm, and sums them up."""
    pieces_by_model = {
        label: profile_pieces(tf_side, model, event, inputs)
        for label, (model, event) in models.items()
    }
    rows = []
    for label, pieces in pieces_by_model.items():
        for name, fn in pieces:
            rows.append(Row(f"{label}|{name}", lambda fn=fn: (fn(), 0.0)[1]))
    ts.run_timings(rows, 1, args.profile_repeats, "rounds")
    med = {row.name: ts.stats(row.times_ms)["median_ms"] for row in rows}
    labels = list(pieces_by_model)
    names = [name for name, _ in pieces_by_model[labels[0]]]
    lines = [
        "| piece (alone, warm, on the step's tensors) | "
        + " | ".join(f"{label} (ms)" for label in labels)
        + " |",
        "|---|" + "---:|" * len(labels),
    ]
    for name in names:
        lines.append(
            f"| {name} | " + " | ".join(f"{med[f'{lb}|{name}']:.1f}" for lb in labels) + " |"
        )
    # the summary: conv calls, the rest of the conv layers (scans, density sample, checks),
    # the dense layers, pools + loss + Adam, and what the sum of the parts leaves over
    lines.append("")
    lines.append(
        "| where the step's time goes (pieces net of the empty call) | "
        + " | ".join(f"{label} (ms, share)" for label in labels)
        + " |"
    )
    lines.append("|---|" + "---:|" * len(labels))
    groups = {}
    for lb in labels:
        m = {name: med[f"{lb}|{name}"] for name in names}
        empty_ms = m[EMPTY]

        def net(name, m=m, empty_ms=empty_ms):
            return max(m[name] - empty_ms, 0.0)

        conv = net(CONV1) + net(CONV2)
        conv_rest = net(LAYER1) + net(LAYER2) - conv
        dense = net(LAYER3) + net(LAYER4)
        other = net(POOL1) + net(POOL2) + net(LOSS) + net(ADAM)
        full = m[STEP]
        groups[lb] = [
            ("conv calls (conv1 fwd+wgrad, conv2 fwd+wgrad+igrad)", conv),
            ("rest of the ConvLIF2D layers (fused scans, density samples, checks)", conv_rest),
            ("LIF(300) + LI(10) layers (event/dense matmul + scans)", dense),
            ("pools, flatten, loss, Adam", other),
            ("unaccounted: full step - sum of the above", full - conv - conv_rest - dense - other),
            ("full step", full),
        ]
    for i, (name, _) in enumerate(groups[labels[0]]):
        cells = []
        for lb in labels:
            value, full = groups[lb][i][1], groups[lb][-1][1]
            cells.append(f"{value:.1f} ({value / full:.0%})")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------
# Main
# ------------------------------------------------------------------------------------------
def results_table(rows: list[Row]) -> tuple[str, dict]:
    summary = {row.name: ts.stats(row.times_ms) for row in rows}
    ref = summary.get(KS, {}).get("median_ms")
    floor = summary.get(FLOOR, {}).get("median_ms")
    lines = [
        "| implementation | median (ms) | IQR (ms) | time / keras_spiking | time / floor |",
        "|---|---:|---:|---:|---:|",
    ]
    for row in rows:
        s = summary[row.name]
        s["over_ks"] = s["median_ms"] / ref if ref else None
        s["over_floor"] = s["median_ms"] / floor if floor else None
        name = row.name if not row.note else f"{row.name} ({row.note})"
        lines.append(
            f"| {name} | {s['median_ms']:.1f} | {s['iqr_ms']:.1f} | "
            f"{ts.fmt_ratio(s['over_ks'])} | {ts.fmt_ratio(s['over_floor'])} |"
        )
    return "\n".join(lines), summary


def input_densities(tf, ks, model, inputs: Inputs) -> str:
    """Nonzero fraction of the inputs of the conv layers and the dense LIF.

    The whole batch's, and the sample the dispatch measures to choose the event or the dense
    path (``ops.dispatch.input_density`` of the folded ``[batch * T, features]`` input).
    """
    h, out = tf.constant(inputs.x), []
    for layer in model.layers:
        if type(layer).__name__ in ("ConvLIF2D", "LIF"):
            whole = float(np.mean(h.numpy() != 0))
            try:
                folded = tf.reshape(h, [-1, math.prod(h.shape[2:])])
                sampled = f"{float(ks.ops.dispatch.input_density(folded)):.4f}"
            except Exception:  # noqa: BLE001 - the dispatch's helpers may change
                sampled = "?"
            out.append(f"{layer.name} {whole:.4f} (sampled {sampled})")
        h = layer(h, training=True)
    return ", ".join(out)


def main(argv=None) -> int:
    args = parse_args(argv)
    sys.stdout.reconfigure(line_buffering=True)  # progress shows when piped to a file
    if args.omp_wait_policy != "default":  # read when torch loads its OpenMP runtime
        os.environ.setdefault("OMP_WAIT_POLICY", args.omp_wait_policy.upper())
    tf, keras, ks = ts.setup_tensorflow(args.threads)
    versions = {
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "keras_spiking": getattr(ks, "__version__", "?"),
        "numpy": np.__version__,
    }
    notes: list[str] = []
    weights = make_weights(args.seed)
    tf_side = TFSide(tf, keras, ks, weights)

    torch_side = None
    peers = [
        (SNN_LAYER, "snntorch", "snntorch"),
        (SNN_STEP, "snntorch-step", "snntorch"),
        (NORSE, "norse", "norse"),
    ]
    peers = [p for p in peers if p[1] not in args.skip]
    if peers:
        try:
            import torch

            torch.set_num_threads(args.threads)
            try:
                torch.set_num_interop_threads(args.threads)
            except RuntimeError:
                pass
            torch.manual_seed(args.seed)
            versions["torch"] = torch.__version__
            torch_side = TorchSide(torch, weights)
        except Exception as error:  # noqa: BLE001 - any import failure: time the others
            notes.append(f"torch is not available ({error!r}): the peers are skipped")
            peers = []
    available = []
    for label, kind, module in peers:
        try:
            versions[module] = getattr(__import__(module), "__version__", "?")
            available.append((label, kind))
        except Exception as error:  # noqa: BLE001
            notes.append(f"{label} skipped: {type(error).__name__}: {error}")

    load_start = os.getloadavg()
    print("# Conv train step: 15C5-P2-40C5-P2-300-10, spiking")
    print()
    print(
        f"Workload: batch {args.batch}, T in {args.steps}, input activity in "
        f"{[f'{d:.0%}' for d in args.densities]}, float32, one Adam step (forward + BPTT + "
        "update in every row), loss = softmax cross-entropy of the readout's max over time; "
        f"weight gains {GAINS} on Glorot."
    )
    print(
        f"Machine: {ts.cpu_model()}, {os.cpu_count()} logical CPUs, {args.threads} thread(s) "
        f"for TF (intra/inter-op) and torch, OMP_WAIT_POLICY "
        f"{os.environ.get('OMP_WAIT_POLICY', '(unset)')}; load average at start "
        f"{', '.join(f'{v:.2f}' for v in load_start)}."
    )
    print("Versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()) + ".")
    print(f"Kernels: {ks.ops.status()}.")
    if load_start[0] > 0.5 * (os.cpu_count() or 1):
        notes.append(
            f"load average {load_start[0]:.2f} on {os.cpu_count()} CPUs: other processes "
            "compete for the cores; compare rows of one (T, activity) block only"
        )
    for line in notes:
        print(f"NOTE: {line}")

    failed = False
    all_summaries = {}
    profile_inputs = {}
    for steps in args.steps:
        for density in args.densities:
            inputs = make_inputs(args.batch, steps, density, args.seed)
            small = Inputs(inputs.x[: args.check_batch], inputs.y[: args.check_batch])
            print()
            print(f"## T = {steps}, input activity {density:.0%}")
            print()
            model = tf_side.model(steps)
            dense_model = tf_side.model(steps, custom_ops=False)
            print(
                "Input density per layer (whole batch; the dispatch's sample): "
                + input_densities(tf, ks, model, inputs)
                + ". Kernel wrappers the default model ran per layer (eager training forward): "
                + tf_side.kernel_paths(model, inputs)
                + "."
            )
            print()

            # ---- pre-check ------------------------------------------------------------------
            ref, ref_grads = tf_side.forward(KS, model, small)
            dense_fwd, dense_grads = tf_side.forward(KS_DENSE, dense_model, small)
            checks = [(ref, None, None, None), (dense_fwd, ref, TOL_OURS, dense_grads)]
            nets = {}
            if torch_side is not None:
                ref_ours = torch_side.forward(REF_OURS, torch_side.net("ref-ours"), small)
                ref_snn = torch_side.forward(REF_SNN, torch_side.net("ref-snntorch"), small)
                checks.append((ref_ours, ref, TOL_PEERS, None))
                checks.append((ref_snn, ref, None, None))  # the semantic difference, shown
                for label, kind in available:
                    try:
                        nets[label] = torch_side.net(kind)
                        fwd = torch_side.forward(label, nets[label], small)
                    except Exception as error:  # noqa: BLE001 - a broken peer: report, go on
                        print(f"NOTE: {label} failed: {type(error).__name__}: {error}")
                        nets.pop(label, None)
                        continue
                    against = ref if kind == "norse" else ref_snn
                    checks.append((fwd, against, TOL_PEERS, None))
            print(
                f"Pre-check on {args.check_batch} samples, same weights: per LIF layer the "
                "firing rate / the fraction of spike entries equal to the compared row's; the "
                "loss (relative difference)"
            )
            print()
            print(
                "| implementation | compared with | conv1 LIF | conv2 LIF | LIF(300) | loss | "
                "weight grads | OK |"
            )
            print("|---|---|---:|---:|---:|---:|---:|---|")
            for fwd, against, tol, grads in checks:
                if against is None:
                    cells = [f"{sp.mean():.4f}" for sp in fwd.spikes] + [f"{fwd.loss:.5f}"]
                    ok = None
                else:
                    cells, ok = compare(against, fwd, tol)
                if grads is not None:
                    gdiff = grad_difference(ref_grads, grads)
                    ok = ok and gdiff <= TOL_GRAD_OURS
                    cells.append(f"{gdiff:.1e}")
                else:
                    cells.append("-")
                verdict = "-" if ok is None or tol is None else ("yes" if ok else "NO")
                failed |= verdict == "NO"
                name = against.name if against is not None else "-"
                print(f"| {fwd.name} | {name} | " + " | ".join(cells) + f" | {verdict} |")
            print()
            print(
                f"Tolerances: spikes equal >= {TOL_OURS[0]:.1%} and loss within "
                f"{TOL_OURS[1]:g} relative (keras_spiking dense vs default; weight gradients "
                f"within {TOL_GRAD_OURS:g} of the largest entry), >= {TOL_PEERS[0]:.1%} and "
                f"{TOL_PEERS[1]:g} (torch rows). snnTorch is compared with a plain torch loop "
                "of its own spike test (the row above it shows how far that test is from ours)."
            )
            if failed and not args.ignore_check:
                print()
                print("FAILED: the implementations disagree (see above); not timing.")
                return 1

            # ---- timing ---------------------------------------------------------------------
            rows = [Row(KS, tf_side.train_step(model, inputs), "use_custom_ops='auto'")]
            if "dense" not in args.skip:
                rows.append(Row(KS_DENSE, tf_side.train_step(dense_model, inputs)))
            if "forced" not in args.skip:
                forced = tf_side.model(steps)
                rows.append(Row(KS_FORCED, tf_side.forced_events_step(forced, inputs)))
            if "floor" not in args.skip:
                rows.append(Row(FLOOR, tf_side.floor_step(inputs), "TF, no neurons"))
            for label, net in nets.items():
                rows.append(Row(label, torch_side.train_step(net, inputs)))
            first_losses = {  # traces and warms up
                row.name: tf_side.forced_first_loss if row.name == KS_FORCED else row.step()
                for row in rows
            }
            start = time.perf_counter()
            ts.run_timings(rows, args.warmup, args.repeats, args.order)
            table, summary = results_table(rows)
            print()
            print(
                f"Timings: {args.warmup} warm-up + {args.repeats} timed steps per row "
                f"({args.order}), {time.perf_counter() - start:.0f} s"
            )
            print()
            print(table)
            print()
            losses = ", ".join(
                f"{name} {loss:.4f}" for name, loss in first_losses.items() if name != FLOOR
            )
            print(f"Loss of each row's first step: {losses}.")
            all_summaries[(steps, density)] = summary
            if not args.no_profile and density == min(args.densities):
                profile_inputs[steps] = (inputs, model, dense_model)

    # ---- summary and goals --------------------------------------------------------------
    print()
    print("## Summary: how many times longer than keras_spiking's (default) step")
    print()
    peers_present = [KS_DENSE, KS_FORCED, FLOOR] + [label for label, _ in available]
    print("| T | activity | ks ms | " + " | ".join(peers_present) + " |")
    print("|---:|---:|---:|" + "---:|" * len(peers_present))
    for (steps, density), summary in all_summaries.items():
        cells = [
            ts.fmt_ratio(summary[p]["over_ks"]) if p in summary else "-" for p in peers_present
        ]
        print(
            f"| {steps} | {density:.0%} | {summary[KS]['median_ms']:.1f} | "
            + " | ".join(cells)
            + " |"
        )
    print()
    for (steps, density), summary in all_summaries.items():
        if abs(density - 0.05) > 1e-9:
            continue
        goals = []
        if KS_DENSE in summary:
            r = summary[KS_DENSE]["over_ks"]
            goals.append(f">= 2x our dense path: {r:.2f}x {'MET' if r >= 2 else 'NOT met'}")
        snn = [summary[p]["over_ks"] for p in (SNN_LAYER, SNN_STEP) if p in summary]
        if snn:
            r = min(snn)
            goals.append(
                f">= 5x snnTorch (its faster row): {r:.2f}x {'MET' if r >= 5 else 'NOT met'}"
            )
        if FLOOR in summary:
            goals.append(f"keras_spiking / dense floor = {summary[KS]['over_floor']:.2f}x")
        print(f"Goals at T = {steps}, 5 %: " + "; ".join(goals) + ".")
    print(f"Load average at the end: {', '.join(f'{v:.2f}' for v in os.getloadavg())}.")

    for steps, (inputs, model, dense_model) in profile_inputs.items():
        print()
        print(
            f"## Profile of the keras_spiking step, T = {steps}, activity "
            f"{min(args.densities):.0%} ({args.profile_repeats} warm calls per piece)"
        )
        print()
        print(
            profile(
                tf_side,
                {"default": (model, True), "dense": (dense_model, False)},
                inputs,
                args,
            )
        )
    if failed:
        print()
        print("FAILED: the correctness pre-check did not pass (timed anyway: --ignore-check).")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
