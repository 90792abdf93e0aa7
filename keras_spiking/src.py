r"""Spiking Recurrent Cell (SRC) of De Geeter, Ernst & Drion: step function, Keras cell and layer.

Paper: "Spike-based computation using classical recurrent neural networks", arXiv 2306.03623,
Neuromorph. Comput. Eng. 2024.

The SRC is a GRU reduced to the bistable recurrent cell with constant gates (fast positive
feedback ``r``), plus a slow variable ``h_s`` that feeds back negatively (``r_s < 0``) with a
voltage-dependent time constant. Together they turn bistability into relaxation oscillations:
the cell emits pulses ("spikes") while every operation stays differentiable, so plain
backpropagation through time trains it, with no surrogate gradient. Per neuron and step ``t``:

.. math::
    i[t]   &= \alpha\, i[t-1] + W_s\, s_{in}[t]
        && \text{input integration} \\
    x[t]   &= \rho \tanh(i[t] / \rho)
        && \text{bounded input} \\
    z_s[t] &= z^{hyp} + (z^{dep} - z^{hyp})\, \sigma\big(k\,(h[t-1] - 0.5)\big)
        && \text{voltage-dependent slow gate} \\
    h[t]   &= z\, h[t-1] + (1 - z) \tanh\big(x[t] + r\, h[t-1] + r_s\, h_s[t-1] + b_h\big)
        && \text{fast variable} \\
    h_s[t] &= z_s[t]\, h_s[t-1] + (1 - z_s[t])\, h[t-1]
        && \text{slow variable} \\
    s[t]   &= \mathrm{ReLU}(h[t])
        && \text{output pulse}

Defaults: ``alpha = 0.9``, ``rho = 3``, ``r = 2``, ``r_s = -7``, ``z = 0``, ``z_hyp = 0.9``,
``z_dep = 0``, slow-gate slope ``k = 10`` (``sigma`` the logistic function), bias ``b_h``
initialised at -6 and kept <= -4. Trainable: ``W_s`` and ``b_h``. All states start at 0. With
the defaults and no input the cell rests near ``h = -0.9`` (no output); a constant input above
about 0.2 per step makes periodic pulses of 2-3 steps (inter-pulse interval about 20-25 steps).
The output ``s`` is a graded pulse in [0, 1), not a 0/1 spike.

Checked against the paper
-------------------------
Checked (with a search of stored public pages and code) against what could be reached of the
paper and of code from the authors' group; the paper's full text (the equations section, the
PDF) could *not* be reached, so no equation below is quoted from the paper itself.

Sources:

* [P] the paper's abstract (arXiv 2306.03623 and its paperswithcode page) and the alphaxiv
  overview, https://www.alphaxiv.org/overview/2306.03623 ("completely differentiable";
  constant gates ``r = 2``, ``r_s = -7``, ``z = 0``; a slow variable ``h_s`` with negative
  feedback; a voltage-dependent gate ``z_s[h]``, formula not shown).
* [F] the floating-point reference that a co-author of the group's FPGA paper (Harmeling,
  De Geeter & Drion, arXiv 2605.10679) labels "the method of Florent" (F. De Geeter, the
  paper's first author) and runs with De Geeter's trained MNIST parameters: GitHub
  ``Harmel-lab/SRC---SNN---01``, file
  ``01 - Julia/03 - SNN-SRC-Flo-PsV/01 - SNN-NETWORK-SRC-NPY-FloVsPsV.txt``, with the
  training configuration ``.../model/DossierTest/config.txt`` of the same repository.
* [R] ``/work/shared/ALGORITHMS.md`` §3 and the third-party PyTorch re-implementation it
  drew on (an ``SRC`` module with ``bh_init=-6.``, ``bh_max=-4.``, ``detach_rec``,
  ``relu_bypass``).

Equation by equation:

* input integrator ``i[t] = alpha i[t-1] + W_s s_in[t]``: as in [F]; ``alpha = 0.9`` is the
  ``alphas: [0.9]`` of [F]'s configuration (its fixed-point version uses
  ``1 - 1/16 - 1/32 = 0.906``). Confirmed.
* bounded input ``x = rho tanh(i / rho)``: the form is [F]'s (``tanh``, not a clip); [F] loads
  ``rho`` per neuron from a binary array that could not be read, so ``rho = 3`` rests on [R]
  only. Form confirmed, value unverified.
* fast variable ``h[t] = tanh(x[t] + r h[t-1] + r_s h_s[t-1] + b_h)`` (``z = 0``): as in [F];
  ``r = 2``, ``r_s = -7``, ``z = 0`` as in [P]. Confirmed.
* slow gate ``z_s[t] = z_hyp + (z_dep - z_hyp) sigmoid(10 (h[t-1] - 0.5))``: exactly [F]'s
  ``zs_hyp - (zs_hyp - zs_dep) / (1 + exp(-10 (h[t-1] - 0.5)))``: a logistic of ``h[t-1]``
  with slope 10, centred at 0.5. This confirms the module's slope of 10 (first written from
  memory) and differs from ALGORITHMS.md §3 and [R], which use a Heaviside step
  ``H(h[t-1] - 0.5)`` (``slow_gate_slope=None`` gives that variant; the two ``z_s`` differ by
  at most ``0.9 sigmoid(-10 |h - 0.5|)``, below 0.006 once ``|h - 0.5| > 0.5``, and the step's
  derivative is zero almost everywhere).
* slow variable ``h_s[t] = z_s[t] h_s[t-1] + (1 - z_s[t]) h[t-1]``: as in [F]. Its time
  constant at rest is ``1 / (1 - z_hyp)`` = 10 steps with ``z_hyp = 0.9``, and during a pulse
  (``z_dep = 0``) ``h_s`` follows ``h[t-1]`` within a step. [F] loads ``z_hyp`` and ``z_dep``
  per neuron from unreadable arrays and then sets ``z_hyp = 0.9`` for all neurons (after a
  trial with 0.81); so ``z_hyp = 0.9`` agrees with [F]'s script and [R], ``z_dep = 0`` with
  [R] only.
* output ``s = ReLU(h)``: [F]'s configuration names the activation ``surrogate_relu`` (a ReLU
  output with a replaced gradient; its backward formula is not in the files reached), which
  agrees with [R]'s straight-through ReLU. [F]'s own output ``h > 0.5`` is its FPGA
  simplification, not the paper's.
* bias: ``bias_max: -4.0`` in [F]'s configuration confirms the upper bound -4. The initial
  value -6 comes from [R] only (unverified). [F]'s trained bias values could not be read.
* constants per neuron: [F] stores ``r``, ``rho``, ``r_s``, ``z_hyp``, ``z_dep`` and the
  initial ``i, h, h_s`` as per-neuron arrays; this module accepts a scalar or one value per
  neuron for every constant (initial states: the ``initial_state`` call argument).
* [F]'s configuration also shows the group's MNIST setup: rate coding with ``rate_gain``
  0.25, 20 zero-input steps before 200 input steps (which lets the slow variable settle:
  from the zero state a neuron is silent for its first 10-20 steps), one hidden layer, and a
  leaky-integrator readout. ``examples/mnist_src.py`` uses 50 steps without the prefix.

Nothing in :func:`src_step` had to change. Two choices in ALGORITHMS.md come from [R] and
are options here:

* ``bias_max`` (default -4): [R] clamps ``b_h`` in the forward pass
  (``clamp(b_h, max=-4)``, zero gradient above the bound). Here it is a Keras constraint
  (:class:`MaxValue`) that the optimizer applies after each update (a projection): the forward
  pass uses the stored bias, so a bias initialised above the bound is used as is until the
  first optimizer step.
* ``detach_recurrent`` (default False): stop the gradient through ``h[t-1]`` and
  ``h_s[t-1]`` in every use at step ``t`` ([R]'s default is True and its docstring says the
  paper does this; not verified). The gradient still flows through the input integrator ``i``.
* ``straight_through`` (default False): forward ``ReLU(h)``, backward identity ([R]'s
  ``relu_bypass=True``; [F]'s ``surrogate_relu`` is probably the same, unverified).

Implementation notes: :func:`src_step` is the reference step; :class:`SpikingRecurrentCell`
calls it for ``keras.layers.RNN``; the sequence layer :class:`SRC` computes ``W_s s_in`` for all
steps in one matmul and runs :func:`src_step` over time in :func:`src_sequence` (a
``tf.while_loop`` over time-major ``TensorArray``\ s), so all give the same numbers. With a
mask, a masked step leaves the state unchanged and outputs zeros (``keras.layers.RNN`` with
``zero_output_for_mask=True``); without ``return_sequences`` the layer returns the output of the
last unmasked step.

The time loop is differentiated in one of two ways (the ``jit_compile`` option of :class:`SRC`):

* ``jit_compile=True`` (default): :func:`src_scan`, a ``tf.custom_gradient`` whose forward
  pass is :func:`src_sequence` compiled with XLA (also recording the states ``i, h, h_s`` of
  every step) and whose backward pass :func:`_src_backward` is a hand-written reverse loop,
  also XLA-compiled: it recomputes each step's element-wise quantities from the stored
  state of the previous step (equations in its docstring). The cell has no recurrent matrix,
  so the loop body is a handful of fused element-wise ops. The tests compare it with the
  plain path (float64, outputs, states and all gradients, with and without mask, every
  option) and with finite differences.
* ``jit_compile=False``: the same :func:`src_sequence` in plain TensorFlow, differentiated by
  TensorFlow's autodiff (BPTT through ``tf.while_loop``); slower, for platforms without XLA.

A first version of the XLA path let TensorFlow's autodiff run *inside* the compiled backward
(recompute the loop under a ``tf.GradientTape`` in the XLA function and return
``tape.gradient(outputs, inputs, output_gradients=upstream)``; this avoids the "TensorList
crossing the XLA/TF boundary" error). It gave the same numbers but its backward pass was
slower than the plain path's (one measurement, batch 64, T = 100, 100 units, 1 thread:
forward + backward 46 ms against 33 ms plain, forward alone 4.5 ms against 9.7 ms), so it was
replaced by the hand-written backward (``benchmarks/src_step.py`` times the result).
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import keras
import numpy as np
import tensorflow as tf

from keras_spiking import _validation, ops
from keras_spiking.scan import _compiled, _zeros_if_none

__all__ = [
    "SRCState",
    "src_step",
    "src_sequence",
    "src_scan",
    "MaxValue",
    "SpikingRecurrentCell",
    "SRC",
]

DEFAULT_BIAS = -6.0
"""Initial value of the bias ``b_h`` (every neuron at rest, far below the spiking regime)."""

STATE_NAMES = ("i", "h", "h_s")


class SRCState(NamedTuple):
    """State of an SRC population, each ``[batch, units]``.

    Attributes:
        i: integrated input current.
        h: fast variable ("membrane").
        h_s: slow variable (negative feedback).
    """

    i: tf.Tensor
    h: tf.Tensor
    h_s: tf.Tensor


@tf.custom_gradient
def _straight_through_relu(h):
    def grad(upstream):
        return upstream

    return tf.nn.relu(h), grad


def slow_gate(h_prev, *, z_hyp=0.9, z_dep=0.0, slope=10.0):
    r"""Voltage-dependent slow gate ``z_s = z_hyp + (z_dep - z_hyp) g(h[t-1] - 0.5)``.

    Args:
        h_prev: ``h[t-1]``.
        z_hyp: gate when hyperpolarised (``h`` well below 0.5): slow ``h_s``.
        z_dep: gate when depolarised (``h`` well above 0.5): fast ``h_s``.
        slope: ``g(x) = sigmoid(slope * x)`` (the paper: 10); None for the Heaviside step
            ``g(x) = H(x)`` (1 where ``x > 0``).

    Returns:
        ``z_s``, the shape of ``h_prev``.
    """
    if slope is None:
        gate = tf.cast(h_prev > 0.5, h_prev.dtype)
    else:
        gate = tf.sigmoid(slope * (h_prev - 0.5))
    return z_hyp + (z_dep - z_hyp) * gate


def src_step(
    state: SRCState,
    current,
    *,
    bias,
    alpha=0.9,
    rho=3.0,
    r=2.0,
    r_s=-7.0,
    z=0.0,
    z_hyp=0.9,
    z_dep=0.0,
    slow_gate_slope: float | None = 10.0,
    detach_recurrent: bool = False,
    straight_through: bool = False,
):
    r"""One step of a Spiking Recurrent Cell population (pure function, no Keras state).

    .. math::
        i[t] &= \alpha\, i[t-1] + I[t], \qquad x[t] = \rho \tanh(i[t] / \rho) \\
        z_s[t] &= z^{hyp} + (z^{dep} - z^{hyp})\, \sigma(k (h[t-1] - 0.5)) \\
        h[t] &= z\, h[t-1] + (1 - z) \tanh(x[t] + r\, h[t-1] + r_s\, h_s[t-1] + b_h) \\
        h_s[t] &= z_s[t]\, h_s[t-1] + (1 - z_s[t])\, h[t-1] \\
        s[t] &= \mathrm{ReLU}(h[t])

    Args:
        state: ``SRCState(i[t-1], h[t-1], h_s[t-1])``, each [batch, n].
        current: this step's synaptic input ``I[t] = W_s s_in[t]``, [batch, n].
        bias: ``b_h``, scalar or [n].
        alpha: input integration factor in [0, 1), scalar or [n].
        rho: input bound > 0, scalar or [n].
        r: fast positive feedback, scalar or [n].
        r_s: slow feedback (negative for spiking), scalar or [n].
        z: update gate of ``h`` in [0, 1], scalar or [n].
        z_hyp: slow gate at rest, in [0, 1], scalar or [n].
        z_dep: slow gate during a pulse, in [0, 1], scalar or [n].
        slow_gate_slope: slope ``k`` of the logistic slow gate (the paper: 10), or None for the
            Heaviside gate ``H(h[t-1] - 0.5)``.
        detach_recurrent: stop the gradient through ``h[t-1]`` and ``h_s[t-1]``.
        straight_through: output ``ReLU(h)`` forward with an identity gradient backward.

    Returns:
        ``(s[t], SRCState(i[t], h[t], h_s[t]))``.
    """
    i = alpha * state.i + current
    x = rho * tf.tanh(i / rho)
    h_prev, hs_prev = state.h, state.h_s
    if detach_recurrent:
        h_prev, hs_prev = tf.stop_gradient(h_prev), tf.stop_gradient(hs_prev)
    z_s = slow_gate(h_prev, z_hyp=z_hyp, z_dep=z_dep, slope=slow_gate_slope)
    h = z * h_prev + (1.0 - z) * tf.tanh(x + r * h_prev + r_s * hs_prev + bias)
    h_s = z_s * hs_prev + (1.0 - z_s) * h_prev
    s = _straight_through_relu(h) if straight_through else tf.nn.relu(h)
    return s, SRCState(i, h, h_s)


# ---- sequence scan ---------------------------------------------------------------------------
def src_sequence(
    currents,
    i0,
    h0,
    hs0,
    mask,
    bias,
    *,
    constants: tuple = (),
    slow_gate_slope: float | None = 10.0,
    detach_recurrent: bool = False,
    straight_through: bool = False,
    masked: bool = False,
    record: bool = False,
):
    r"""Runs :func:`src_step` over a sequence with a ``tf.while_loop`` (pure function).

    For ``t = 0 .. T-1``: ``s[t], state[t] = src_step(state[t-1], I[t])``; where ``mask[b, t]``
    is 0 the state of sample ``b`` is kept (``state[t] = state[t-1]``) and ``s[t] = 0``. The
    output ``last`` is ``s`` of the last unmasked step (zeros if none).

    Args:
        currents: synaptic input ``I = W_s s_in``, [batch, T, n].
        i0: initial ``i`` [batch, n].
        h0: initial ``h`` [batch, n].
        hs0: initial ``h_s`` [batch, n].
        mask: [batch, T] with 1 (step used) or 0 (step skipped), in the dtype of ``currents``;
            ignored (pass any tensor) unless ``masked``.
        bias: ``b_h``, [n].
        constants: ``(name, value)`` pairs of the constants of :func:`src_step` (``alpha``,
            ``rho``, ``r``, ``r_s``, ``z``, ``z_hyp``, ``z_dep``), each a float or a tuple of
            ``n`` floats (hashable, so the pairs can key a compiled function).
        slow_gate_slope: as in :func:`src_step`.
        detach_recurrent: as in :func:`src_step`.
        straight_through: as in :func:`src_step`.
        masked: whether ``mask`` is used.
        record: also return the states after every step, time-major ``[T, batch, n]`` each
            (for the hand-written backward pass).

    Returns:
        ``(outputs [batch, T, n], last [batch, n], i [batch, n], h [batch, n], h_s [batch, n])``,
        then ``(i_all, h_all, hs_all)`` if ``record``.
    """
    dtype = currents.dtype
    params = {name: tf.constant(value, dtype=dtype) for name, value in constants}
    params.update(
        bias=bias,
        slow_gate_slope=slow_gate_slope,
        detach_recurrent=detach_recurrent,
        straight_through=straight_through,
    )
    num_steps = tf.shape(currents)[1]
    currents_ta = tf.TensorArray(dtype, size=num_steps, clear_after_read=False)
    currents_ta = currents_ta.unstack(tf.transpose(currents, [1, 0, 2]))
    masks = None
    if masked:
        masks = tf.transpose(mask, [1, 0])[..., None] > 0.5  # [T, batch, 1]
    arrays = [tf.TensorArray(dtype, size=num_steps) for _ in range(4 if record else 1)]

    def body(t, i, h, h_s, last, *arrays):
        state = SRCState(i, h, h_s)
        s, new_state = src_step(state, currents_ta.read(t), **params)
        if masks is not None:
            keep = masks[t]
            new_state = SRCState(*[tf.where(keep, a, b) for a, b in zip(new_state, state)])
            s = tf.where(keep, s, tf.zeros_like(s))
            last = tf.where(keep, s, last)
        else:
            last = s
        arrays = [a.write(t, v) for a, v in zip(arrays, (s, *new_state))]
        return (t + 1, *new_state, last, *arrays)

    _, i, h, h_s, last, *arrays = tf.while_loop(
        lambda t, *_: t < num_steps,
        body,
        (tf.constant(0), i0, h0, hs0, tf.zeros_like(i0), *arrays),
        maximum_iterations=num_steps,
    )
    outputs = tf.transpose(arrays[0].stack(), [1, 0, 2])
    outputs.set_shape(currents.shape)
    if record:
        return (outputs, last, i, h, h_s, *[a.stack() for a in arrays[1:]])
    return outputs, last, i, h, h_s


def _src_backward(
    g_outputs,
    g_last,
    g_i,
    g_h,
    g_hs,
    currents,
    i0,
    h0,
    hs0,
    i_all,
    h_all,
    hs_all,
    mask,
    bias,
    *,
    constants: tuple = (),
    slow_gate_slope: float | None = 10.0,
    detach_recurrent: bool = False,
    straight_through: bool = False,
    masked: bool = False,
):
    r"""Hand-written BPTT of :func:`src_sequence` (reverse loop, element-wise per step).

    Step ``t`` is recomputed from the stored state ``[t-1]`` and ``I[t]``; with
    ``q = tanh(pre)``, ``pre = x + r h' + r_s h_s' + b`` and upstream gradients
    ``G_i, G_h, G_s`` of ``i[t], h[t], h_s[t]`` (``G_h`` including ``dL/ds[t] ReLU'(h[t])``):

    .. math::
        \bar p &= (1 - z)(1 - q^2) G_h, \qquad
        \bar\imath = G_i + \bar p\,(1 - \tanh^2(i / \rho)) \\
        \bar h' &= z G_h + r \bar p + (1 - z_s) G_s + (h_s' - h')\, z_s'(h') G_s, \qquad
        \bar h_s' = r_s \bar p + z_s G_s \\
        \bar\imath' &= \alpha \bar\imath, \quad \bar I[t] = \bar\imath, \quad
        \bar b \mathrel{+}= \textstyle\sum_{batch} \bar p

    with ``z_s'(h) = (z_dep - z_hyp) k sigma (1 - sigma)`` (0 for the Heaviside gate),
    ``\bar h' = \bar h_s' = 0`` from the step with ``detach_recurrent``, and masked steps
    passing the state gradients through unchanged.

    Returns:
        Gradients with respect to ``currents, i0, h0, hs0, bias``.
    """
    dtype = currents.dtype
    p = {name: tf.constant(value, dtype=dtype) for name, value in constants}
    alpha, rho, r, r_s, z = p["alpha"], p["rho"], p["r"], p["r_s"], p["z"]
    z_hyp, z_dep = p["z_hyp"], p["z_dep"]
    num_steps = tf.shape(currents)[1]
    currents_tm = tf.transpose(currents, [1, 0, 2])
    g_out_tm = tf.transpose(g_outputs, [1, 0, 2])
    prev = [tf.concat([s0[None], a[:-1]], axis=0) for s0, a in ((h0, h_all), (hs0, hs_all))]
    i_prev_all = tf.concat([i0[None], i_all[:-1]], axis=0)
    keep_all = tf.transpose(mask, [1, 0])[..., None] if masked else None  # [T, batch, 1]

    def body(t, g_i, g_h, g_hs, g_last, g_bias, g_cur):
        h_p, hs_p, i_p = prev[0][t], prev[1][t], i_prev_all[t]
        i = alpha * i_p + currents_tm[t]
        tanh_i = tf.tanh(i / rho)
        pre = rho * tanh_i + r * h_p + r_s * hs_p + bias
        q = tf.tanh(pre)
        h = z * h_p + (1.0 - z) * q
        g_s = g_out_tm[t]
        if masked:
            keep = keep_all[t]
            g_s = g_s + keep * g_last
            g_last = (1.0 - keep) * g_last
        else:
            g_s = g_s + g_last
            g_last = tf.zeros_like(g_last)
        relu_grad = 1.0 if straight_through else tf.cast(h > 0.0, dtype)
        g_h_total = g_h + g_s * relu_grad
        g_pre = (1.0 - z) * (1.0 - q * q) * g_h_total
        g_i_now = g_i + g_pre * (1.0 - tanh_i * tanh_i)
        if detach_recurrent:
            g_h_prev = tf.zeros_like(g_h)
            g_hs_prev = tf.zeros_like(g_hs)
        else:
            z_s = slow_gate(h_p, z_hyp=z_hyp, z_dep=z_dep, slope=slow_gate_slope)
            g_h_prev = z * g_h_total + r * g_pre + (1.0 - z_s) * g_hs
            if slow_gate_slope is not None:
                gate = tf.sigmoid(slow_gate_slope * (h_p - 0.5))
                dz_s = (z_dep - z_hyp) * slow_gate_slope * gate * (1.0 - gate)
                g_h_prev = g_h_prev + (hs_p - h_p) * dz_s * g_hs
            g_hs_prev = r_s * g_pre + z_s * g_hs
        g_i_prev = alpha * g_i_now
        if masked:
            g_i_prev = keep * g_i_prev + (1.0 - keep) * g_i
            g_h_prev = keep * g_h_prev + (1.0 - keep) * g_h
            g_hs_prev = keep * g_hs_prev + (1.0 - keep) * g_hs
            g_pre = keep * g_pre
            g_i_now = keep * g_i_now
        return (
            g_i_prev,
            g_h_prev,
            g_hs_prev,
            g_last,
            g_bias + g_pre,
            g_cur.write(t, g_i_now),
        )

    def step(k, *loop_vars):
        return (k + 1, *body(num_steps - 1 - k, *loop_vars))

    _, g_i0, g_h0, g_hs0, _, g_bias, g_cur = tf.while_loop(
        lambda k, *_: k < num_steps,
        step,
        (
            tf.constant(0),
            g_i,
            g_h,
            g_hs,
            g_last,
            tf.zeros_like(g_i),
            tf.TensorArray(dtype, size=num_steps),
        ),
        maximum_iterations=num_steps,
    )
    g_currents = tf.transpose(g_cur.stack(), [1, 0, 2])
    g_bias = tf.reduce_sum(g_bias, axis=0)
    return g_currents, g_i0, g_h0, g_hs0, g_bias


def src_scan(currents, i0, h0, hs0, bias, mask=None, *, jit: bool = True, **static):
    """:func:`src_sequence` with an XLA-compiled forward and backward pass (``jit=True``).

    With ``jit=True`` the scan is a ``tf.custom_gradient``: the forward pass is
    :func:`src_sequence` compiled with XLA (recording the states of every step); the backward
    pass is the hand-written reverse loop :func:`_src_backward`, also compiled with XLA. With
    ``jit=False`` it is :func:`src_sequence` differentiated by TensorFlow's autodiff. Both give
    the same numbers (up to float rounding).

    Args:
        currents: [batch, T, n] synaptic input.
        i0: initial ``i`` [batch, n].
        h0: initial ``h`` [batch, n].
        hs0: initial ``h_s`` [batch, n].
        bias: ``b_h`` [n] (a tensor, not a variable: read it before calling).
        mask: optional [batch, T] boolean or 0/1 mask.
        jit: XLA-compile both passes.
        **static: the keyword arguments of :func:`src_sequence` (``constants``,
            ``slow_gate_slope``, ``detach_recurrent``, ``straight_through``).

    Returns:
        ``(outputs [batch, T, n], last [batch, n], i, h, h_s)``.
    """
    masked = mask is not None
    mask = tf.cast(mask, currents.dtype) if masked else tf.zeros([0], currents.dtype)
    static = dict(static, masked=masked)
    if currents.shape[1] == 0:  # no step: the states pass through
        return currents, tf.zeros_like(i0), i0, h0, hs0
    if not jit:
        return src_sequence(currents, i0, h0, hs0, mask, bias, **static)
    fwd = _compiled(src_sequence, True, record=True, **static)
    bwd = _compiled(_src_backward, True, **static)

    @tf.custom_gradient
    def scan(currents, i0, h0, hs0, bias):
        *results, i_all, h_all, hs_all = fwd(currents, i0, h0, hs0, mask, bias)

        def grad(*upstream):
            upstream = [_zeros_if_none(g, r) for g, r in zip(upstream, results)]
            return bwd(*upstream, currents, i0, h0, hs0, i_all, h_all, hs_all, mask, bias)

        return tuple(results), grad

    outputs, last, i, h, h_s = scan(currents, i0, h0, hs0, bias)
    outputs.set_shape(currents.shape)
    return outputs, last, i, h, h_s


# ---- argument checks -------------------------------------------------------------------------
def _constant(name: str, value, units: int, owner: str, check, requirement: str):
    """A float, or a tuple of ``units`` floats, each finite and passing ``check``."""
    if value is None or isinstance(value, (bool, np.bool_, str)):
        raise ValueError(f"{owner}: `{name}` must be {requirement}, got {value!r}")
    if np.isscalar(value):
        try:
            number = float(value)
        except (TypeError, ValueError, OverflowError):  # ints beyond the float range too
            raise ValueError(f"{owner}: `{name}` must be {requirement}, got {value!r}") from None
        if not (math.isfinite(number) and check(number)):
            raise ValueError(f"{owner}: `{name}` must be {requirement}, got {value!r}")
        return number
    try:
        array = np.asarray(value, dtype="float64")
    except (TypeError, ValueError, OverflowError):  # ints beyond the float range too
        raise ValueError(
            f"{owner}: `{name}` must be {requirement} (a float or a list of {units} per-neuron "
            f"values), got {value!r}"
        ) from None
    if array.ndim != 1 or array.shape[0] != units:
        raise ValueError(
            f"{owner}: `{name}` must be a float or a list of {units} per-neuron values, got "
            f"shape {array.shape}"
        )
    if not all(math.isfinite(v) and check(v) for v in array):
        raise ValueError(f"{owner}: every `{name}` must be {requirement}, got {value!r}")
    return tuple(float(v) for v in array)


_CHECKS = {
    "alpha": (lambda v: 0.0 <= v < 1.0, "a number in [0, 1)"),
    "rho": (lambda v: v > 0.0, "a finite number > 0"),
    "r": (lambda v: True, "a finite number"),
    "r_s": (lambda v: True, "a finite number"),
    "z": (lambda v: 0.0 <= v <= 1.0, "a number in [0, 1]"),
    "z_hyp": (lambda v: 0.0 <= v <= 1.0, "a number in [0, 1]"),
    "z_dep": (lambda v: 0.0 <= v <= 1.0, "a number in [0, 1]"),
}
CONSTANT_NAMES = tuple(_CHECKS)


def _optional_number(name: str, value, owner: str, check, requirement: str):
    if value is None:
        return None
    if isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{owner}: `{name}` must be {requirement} or None, got {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):  # ints beyond the float range too
        raise ValueError(
            f"{owner}: `{name}` must be {requirement} or None, got {value!r}"
        ) from None
    if not (math.isfinite(number) and check(number)):
        raise ValueError(f"{owner}: `{name}` must be {requirement} or None, got {value!r}")
    return number


def _flag(name: str, value, owner: str) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{owner}: `{name}` must be True or False, got {value!r}")
    return bool(value)


# ---- bias constraint -------------------------------------------------------------------------
@keras.saving.register_keras_serializable(package="keras_spiking")
class MaxValue(keras.constraints.Constraint):
    """Clips a weight from above: ``w <- min(w, max_value)`` (applied by the optimizer).

    Args:
        max_value: the upper bound (finite float).
    """

    def __init__(self, max_value: float):
        self.max_value = _optional_number(
            "max_value", max_value, "MaxValue", lambda v: True, "a finite number"
        )
        if self.max_value is None:
            raise ValueError("MaxValue: `max_value` must be a finite number, got None")

    def __call__(self, w):
        return keras.ops.minimum(w, keras.ops.cast(self.max_value, w.dtype))

    def get_config(self) -> dict[str, Any]:
        return {"max_value": self.max_value}


# ---- cell ------------------------------------------------------------------------------------
@keras.saving.register_keras_serializable(package="keras_spiking")
class SpikingRecurrentCell(keras.layers.Layer):
    r"""Spiking Recurrent Cell (De Geeter, Ernst & Drion 2024), one time step.

    .. math::
        i[t] &= \alpha\, i[t-1] + W_s\, s_{in}[t], \qquad x[t] = \rho \tanh(i[t] / \rho) \\
        z_s[t] &= z^{hyp} + (z^{dep} - z^{hyp})\, \sigma(k (h[t-1] - 0.5)) \\
        h[t] &= z\, h[t-1] + (1 - z) \tanh(x[t] + r\, h[t-1] + r_s\, h_s[t-1] + b_h) \\
        h_s[t] &= z_s[t]\, h_s[t-1] + (1 - z_s[t])\, h[t-1] \\
        s[t] &= \mathrm{ReLU}(h[t])

    Meets the ``keras.layers.RNN`` contract; see :func:`src_step` and the module docstring
    (differences from ALGORITHMS.md). Trainable weights: ``kernel`` ``W_s`` [features, units]
    and ``bias`` ``b_h`` [units].

    Args:
        units: number of neurons.
        alpha: input integration factor in [0, 1) (default 0.9), float or per neuron.
        rho: input bound > 0 (default 3), float or per neuron.
        r: fast positive feedback (default 2), float or per neuron.
        r_s: slow negative feedback (default -7), float or per neuron.
        z: update gate of ``h`` in [0, 1] (default 0), float or per neuron.
        z_hyp: slow gate at rest in [0, 1] (default 0.9), float or per neuron.
        z_dep: slow gate during a pulse in [0, 1] (default 0), float or per neuron.
        slow_gate_slope: slope ``k`` > 0 of the logistic slow gate (default 10, the paper), or
            None for the Heaviside step ``H(h[t-1] - 0.5)`` of ALGORITHMS.md.
        bias_initializer: initializer of ``b_h`` (default ``Constant(-6)``).
        bias_max: upper bound of ``b_h`` enforced after each optimizer step through the
            :class:`MaxValue` constraint (default -4), or None for no bound.
        detach_recurrent: stop the gradient through ``h`` and ``h_s`` carried across time
            (default False; the gradient through the input integrator ``i`` remains).
        straight_through: forward ``ReLU(h)``, backward identity (default False).
        kernel_initializer: initializer of ``W_s`` (default "glorot_uniform").
        kernel_regularizer, bias_regularizer: optional Keras regularizers.
        **kwargs: ``keras.layers.Layer`` arguments (name, dtype, trainable).

    Call arguments:
        inputs: [batch, features] input of one step.
        states: ``[i, h, h_s]``, each [batch, units].
        training: unused.

    Returns:
        ``(s [batch, units], [i, h, h_s])``.
    """

    spiking = True

    def __init__(
        self,
        units: int,
        *,
        alpha=0.9,
        rho=3.0,
        r=2.0,
        r_s=-7.0,
        z=0.0,
        z_hyp=0.9,
        z_dep=0.0,
        slow_gate_slope: float | None = 10.0,
        bias_initializer=None,
        bias_max: float | None = -4.0,
        detach_recurrent: bool = False,
        straight_through: bool = False,
        kernel_initializer="glorot_uniform",
        kernel_regularizer=None,
        bias_regularizer=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        owner = type(self).__name__
        self.units = _validation.positive_int("units", units, owner)
        values = dict(alpha=alpha, rho=rho, r=r, r_s=r_s, z=z, z_hyp=z_hyp, z_dep=z_dep)
        for name, value in values.items():
            check, requirement = _CHECKS[name]
            setattr(self, name, _constant(name, value, self.units, owner, check, requirement))
        self.slow_gate_slope = _optional_number(
            "slow_gate_slope", slow_gate_slope, owner, lambda v: v > 0, "a finite number > 0"
        )
        self.bias_max = _optional_number(
            "bias_max", bias_max, owner, lambda v: True, "a finite number"
        )
        self.detach_recurrent = _flag("detach_recurrent", detach_recurrent, owner)
        self.straight_through = _flag("straight_through", straight_through, owner)
        self.bias_initializer = keras.initializers.get(
            keras.initializers.Constant(DEFAULT_BIAS)
            if bias_initializer is None
            else bias_initializer
        )
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.bias_regularizer = keras.regularizers.get(bias_regularizer)
        self.state_size = [self.units, self.units, self.units]
        self.output_size = self.units

    def build(self, input_shape):
        input_dim = input_shape[-1]
        if input_dim is None:
            raise ValueError(
                f"{type(self).__name__}: the last (feature) axis of the input must be known, "
                f"got input shape {tuple(input_shape)}"
            )
        self.kernel = self.add_weight(
            shape=(input_dim, self.units),
            initializer=self.kernel_initializer,
            regularizer=self.kernel_regularizer,
            name="kernel",
        )
        self.bias = self.add_weight(
            shape=(self.units,),
            initializer=self.bias_initializer,
            regularizer=self.bias_regularizer,
            constraint=None if self.bias_max is None else MaxValue(self.bias_max),
            name="bias",
        )
        self.built = True

    def step_params(self, dtype) -> dict[str, Any]:
        """Keyword arguments of :func:`src_step` (constants and bias as ``dtype`` tensors)."""
        params: dict[str, Any] = {
            name: tf.constant(getattr(self, name), dtype=dtype) for name in CONSTANT_NAMES
        }
        params.update(
            bias=tf.cast(self.bias, dtype),
            slow_gate_slope=self.slow_gate_slope,
            detach_recurrent=self.detach_recurrent,
            straight_through=self.straight_through,
        )
        return params

    def input_current(self, inputs):
        """Feed-forward synaptic input ``inputs @ W_s`` over the last axis (any rank >= 2)."""
        return ops.sparse_spike_matmul_reference(inputs, tf.cast(self.kernel, inputs.dtype))

    def call(self, inputs, states, training=None):
        inputs = tf.cast(inputs, self.compute_dtype)
        state = SRCState(*[tf.cast(s, self.compute_dtype) for s in states])
        s, new_state = src_step(
            state, self.input_current(inputs), **self.step_params(self.compute_dtype)
        )
        return s, list(new_state)

    def get_initial_state(self, batch_size=None):
        """Zero states ``[i, h, h_s]``, each [batch, units]."""
        return [tf.zeros([batch_size, self.units], dtype=self.compute_dtype) for _ in range(3)]

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config["units"] = self.units
        for name in CONSTANT_NAMES:
            value = getattr(self, name)
            config[name] = list(value) if isinstance(value, tuple) else value
        config.update(
            {
                "slow_gate_slope": self.slow_gate_slope,
                "bias_max": self.bias_max,
                "detach_recurrent": self.detach_recurrent,
                "straight_through": self.straight_through,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
                "bias_initializer": keras.initializers.serialize(self.bias_initializer),
                "kernel_regularizer": keras.regularizers.serialize(self.kernel_regularizer),
                "bias_regularizer": keras.regularizers.serialize(self.bias_regularizer),
            }
        )
        return config


# ---- sequence layer --------------------------------------------------------------------------
@keras.saving.register_keras_serializable(package="keras_spiking")
class SRC(keras.layers.Layer):
    r"""Spiking Recurrent Cell neurons over a ``[batch, time, features]`` sequence.

    .. math::
        i[t] &= \alpha\, i[t-1] + W_s\, s_{in}[t], \qquad x[t] = \rho \tanh(i[t] / \rho) \\
        z_s[t] &= z^{hyp} + (z^{dep} - z^{hyp})\, \sigma(k (h[t-1] - 0.5)) \\
        h[t] &= z\, h[t-1] + (1 - z) \tanh(x[t] + r\, h[t-1] + r_s\, h_s[t-1] + b_h) \\
        h_s[t] &= z_s[t]\, h_s[t-1] + (1 - z_s[t])\, h[t-1] \\
        s[t] &= \mathrm{ReLU}(h[t])

    ``W_s s_in`` is computed for all steps in one matmul; the state ``[i, h, h_s]`` is scanned
    with a ``tf.while_loop`` (:func:`src_sequence`), by default XLA-compiled with an
    XLA-compiled backward pass (:func:`src_scan`; see the module docstring). Same numbers as
    ``keras.layers.RNN(SpikingRecurrentCell(...), zero_output_for_mask=True)``.

    Args:
        units: number of neurons.
        return_sequences: return the output of every step ``[batch, time, units]`` (default)
            or only of the last (unmasked) step ``[batch, units]``.
        return_state: also return the final states ``i, h, h_s`` (as ``keras.layers.RNN``).
        stateful: keep the final states of a call as the initial states of the next (streaming
            a long sequence in chunks); needs a fixed batch size. ``reset_states()`` zeroes them.
        jit_compile: XLA-compile the time loop and its gradient (default True); False runs
            the plain ``tf.while_loop`` differentiated by TensorFlow (same numbers, slower).
        **cell_kwargs: the options of :class:`SpikingRecurrentCell` (alpha, rho, r, r_s, z,
            z_hyp, z_dep, slow_gate_slope, bias_initializer, bias_max, detach_recurrent,
            straight_through, kernel_initializer, kernel_regularizer, bias_regularizer).

    Call arguments:
        inputs: ``[batch, time, features]``.
        initial_state: optional list ``[i, h, h_s]`` of [batch, units] tensors (default zeros,
            or the stored states when ``stateful``).
        mask: optional boolean ``[batch, time]`` (from ``keras.layers.Masking`` or an
            ``Embedding(mask_zero=True)``): a masked step leaves the state unchanged and
            outputs zeros.
        training: unused.

    Returns:
        Pulses ``[batch, time, units]`` (or ``[batch, units]``), then ``i, h, h_s`` if
        ``return_state``.
    """

    spiking = True
    state_names = STATE_NAMES

    def __init__(
        self,
        units: int,
        *,
        return_sequences: bool = True,
        return_state: bool = False,
        stateful: bool = False,
        jit_compile: bool = True,
        name: str | None = None,
        dtype=None,
        trainable: bool = True,
        **cell_kwargs,
    ):
        super().__init__(name=name, dtype=dtype, trainable=trainable)
        self.cell = SpikingRecurrentCell(units, dtype=dtype, name="cell", **cell_kwargs)
        self.jit_compile = _flag("jit_compile", jit_compile, type(self).__name__)
        self.units = self.cell.units
        owner = type(self).__name__
        self.return_sequences = _flag("return_sequences", return_sequences, owner)
        self.return_state = _flag("return_state", return_state, owner)
        self.stateful = _flag("stateful", stateful, owner)
        self.supports_masking = True
        # keep `compile(jit_compile="auto")` from XLA-compiling the whole train step (as the
        # other sequence layers of the package)
        self.supports_jit = False
        self.states = None

    def __call__(self, *args, **kwargs):
        # the same check as the other sequence layers (keras_spiking.layers.SpikingSequence)
        inputs = args[0] if args else kwargs.get("inputs")
        _validation.dense_sequence(
            inputs, f"{type(self).__name__} ({self.name})", masking=self.supports_masking
        )
        return super().__call__(*args, **kwargs)

    def build(self, input_shape):
        input_shape = tuple(input_shape)
        if len(input_shape) != 3:
            raise ValueError(
                f"{type(self).__name__} expects inputs of shape [batch, time, features], got "
                f"shape {input_shape}"
            )
        self.cell.build(input_shape)
        self.input_spec = keras.layers.InputSpec(axes={-1: input_shape[-1]})
        if self.stateful:
            if input_shape[0] is None:
                raise ValueError(
                    f"{type(self).__name__}(stateful=True) needs a fixed batch size, got input "
                    f"shape {input_shape}; use keras.Input(shape, batch_size=N)"
                )
            self.states = [
                self.add_weight(
                    shape=(input_shape[0], self.units),
                    initializer="zeros",
                    trainable=False,
                    name=f"state_{name}",
                )
                for name in self.state_names
            ]
        self.built = True

    def reset_states(self) -> None:
        """Sets the stored states of a ``stateful`` layer back to zero."""
        if not self.stateful:
            raise ValueError(f"{type(self).__name__}: reset_states() needs stateful=True")
        for state in self.states:
            state.assign(tf.zeros_like(state))

    def _initial_states(self, inputs, initial_state) -> list:
        if initial_state is not None:
            if not isinstance(initial_state, (list, tuple)):
                initial_state = [initial_state]
            if len(initial_state) != len(self.state_names):
                raise ValueError(
                    f"{type(self).__name__}: `initial_state` must be a list of "
                    f"{len(self.state_names)} tensors {list(self.state_names)}, got "
                    f"{len(initial_state)}"
                )
            return [tf.cast(s, self.compute_dtype) for s in initial_state]
        if self.stateful:
            return [tf.cast(s, self.compute_dtype) for s in self.states]
        batch = tf.shape(inputs)[0]
        return [tf.zeros([batch, self.units], self.compute_dtype) for _ in self.state_names]

    def call(self, inputs, initial_state=None, mask=None, training=None):
        inputs = tf.cast(inputs, self.compute_dtype)
        if inputs.shape.rank != 3:
            raise ValueError(
                f"{type(self).__name__} expects inputs of shape [batch, time, features], got "
                f"shape {tuple(inputs.shape)}"
            )
        if not self.return_sequences and inputs.shape[1] == 0:
            raise ValueError(
                f"{type(self).__name__}(return_sequences=False) needs at least one time step, "
                f"got inputs of shape {tuple(inputs.shape)}"
            )
        states = self._initial_states(inputs, initial_state)
        currents = self.cell.input_current(inputs)  # [batch, time, units], one matmul
        outputs, last_output, final_states = self._scan(currents, states, mask)
        if self.stateful:
            for variable, value in zip(self.states, final_states):
                variable.assign(tf.cast(value, variable.dtype))
        output = outputs if self.return_sequences else last_output
        if self.return_state:
            return [output, *final_states]
        return output

    def _scan(self, currents, states, mask):
        """Runs :func:`src_step` over time; returns (outputs [B, T, n], last output, states)."""
        cell = self.cell
        outputs, last, i, h, h_s = src_scan(
            currents,
            *states,
            tf.cast(cell.bias, currents.dtype),
            mask,
            jit=self.jit_compile,
            constants=tuple((name, getattr(cell, name)) for name in CONSTANT_NAMES),
            slow_gate_slope=cell.slow_gate_slope,
            detach_recurrent=cell.detach_recurrent,
            straight_through=cell.straight_through,
        )
        return outputs, last, [i, h, h_s]

    def compute_mask(self, inputs, mask=None):
        output_mask = mask if self.return_sequences else None
        if self.return_state:
            return [output_mask] + [None for _ in self.state_names]
        return output_mask

    def compute_output_shape(self, inputs_shape, initial_state_shape=None):
        batch, steps = inputs_shape[0], inputs_shape[1]
        output = (batch, steps, self.units) if self.return_sequences else (batch, self.units)
        if self.return_state:
            return [output] + [(batch, self.units) for _ in self.state_names]
        return output

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        cell_config = self.cell.get_config()
        for key in ("name", "trainable", "dtype"):
            cell_config.pop(key, None)
        config.update(cell_config)
        config.update(
            {
                "return_sequences": self.return_sequences,
                "return_state": self.return_state,
                "stateful": self.stateful,
                "jit_compile": self.jit_compile,
            }
        )
        return config
