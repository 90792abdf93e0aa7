"""Neuron dynamics as pure step functions on tensors (no Keras state).

Every model is discretised with a fixed step ``dt`` (seconds, default :data:`DEFAULT_DT` = 1 ms);
a time constant ``tau`` (seconds) becomes the per-step decay factor ``exp(-dt / tau)``.

These step functions are the reference semantics of the package: the Keras cells
(:mod:`keras_spiking.cells`) call them directly, and the fused sequence scans
(:mod:`keras_spiking.scan`) must give the same numbers (the tests check this).

Conventions shared by all models:

* ``spike_fn(x)`` is a surrogate from :mod:`keras_spiking.surrogates`: ``H(x)`` forward
  (a spike when ``x = u - theta > 0``), surrogate derivative backward.
* ``reset="subtract"`` removes ``theta`` from the membrane after a spike (keeps the overshoot);
  ``reset="zero"`` sets the membrane to 0.
* ``detach_reset=True`` stops the gradient through the spike in the reset term (the common
  choice, Zenke & Vogels 2021): the reset still happens, but gradients do not flow through it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import tensorflow as tf

DEFAULT_DT = 1e-3
"""Default simulation step in seconds (1 ms)."""

RESET_MODES = ("subtract", "zero")

SpikeFn = Callable[[tf.Tensor], tf.Tensor]


def decay_factor(tau, dt: float = DEFAULT_DT):
    """Per-step decay ``exp(-dt / tau)`` of a leaky variable with time constant ``tau``.

    Args:
        tau: time constant(s) in seconds, > 0 (float, array or tensor).
        dt: simulation step in seconds.

    Returns:
        ``exp(-dt / tau)``, in (0, 1).
    """
    if isinstance(tau, (int, float)):
        return math.exp(-dt / tau)
    return tf.exp(-dt / tau)


class LIFState(NamedTuple):
    """State of a LIF neuron population: membrane ``v`` and last spikes ``s``, both [batch, n]."""

    v: tf.Tensor
    s: tf.Tensor


class CubaLIFState(NamedTuple):
    """State of a current-based LIF population: current ``i``, membrane ``v``, each [batch, n]."""

    i: tf.Tensor
    v: tf.Tensor


def apply_reset(u, s, threshold, reset: str, detach_reset: bool):
    """Membrane after the reset caused by spikes ``s``.

    ``subtract``: ``u - theta * s``; ``zero``: ``u * (1 - s)``.
    """
    s_reset = tf.stop_gradient(s) if detach_reset else s
    if reset == "subtract":
        return u - threshold * s_reset
    if reset == "zero":
        return u * (1.0 - s_reset)
    raise ValueError(f"`reset` must be one of {RESET_MODES}, got {reset!r}")


def lif_step(
    state: LIFState,
    current,
    *,
    beta,
    threshold,
    spike_fn: SpikeFn,
    reset: str = "subtract",
    detach_reset: bool = True,
    recurrent_kernel=None,
):
    r"""One step of a leaky integrate-and-fire (LIF) population.

    .. math::
        u[t] &= \beta\, v[t-1] + I[t] \\
        S[t] &= H(u[t] - \theta) \\
        v[t] &= u[t] - \theta S[t] \;\text{(subtract)} \quad\text{or}\quad u[t](1 - S[t])
        \;\text{(zero)}

    with ``beta = exp(-dt / tau_mem)``. ``I[t]`` is the synaptic input of this step (input
    spikes times weights, plus recurrent spikes times recurrent weights, plus bias), in units
    of the threshold. A spike is emitted in the same step the membrane crosses threshold.
    With recurrent weights ``R``, ``I[t]`` also holds ``S[t-1] R``.

    Args:
        state: ``LIFState(v[t-1], S[t-1])``, each [batch, n].
        current: feed-forward input current ``I[t]``, [batch, n].
        beta: membrane decay per step, scalar or [n].
        threshold: ``theta`` > 0.
        spike_fn: surrogate spike function.
        reset: "subtract" or "zero".
        detach_reset: stop the gradient through the reset.
        recurrent_kernel: optional ``R``, [n, n].

    Returns:
        ``(S[t], LIFState(v[t], S[t]))``.
    """
    if recurrent_kernel is not None:
        current = current + tf.matmul(state.s, recurrent_kernel)
    u = beta * state.v + current
    s = spike_fn(u - threshold)
    return s, LIFState(apply_reset(u, s, threshold, reset, detach_reset), s)


def cuba_lif_step(
    state: CubaLIFState,
    current,
    *,
    alpha,
    beta,
    threshold,
    spike_fn: SpikeFn,
    reset: str = "subtract",
    detach_reset: bool = True,
    recurrent_kernel=None,
):
    r"""One step of a current-based LIF population (Neftci, Mostafa & Zenke 2019, eqs. 2-5).

    .. math::
        S[n] &= H(U[n] - \theta) \\
        I[n+1] &= \alpha I[n] + W S_{in}[n] + V S[n] \\
        U[n+1] &= \beta U[n] + I[n] - \theta S[n] \;\text{(subtract)}
        \quad\text{or}\quad (\beta U[n] + I[n]) (1 - S[n]) \;\text{(zero)}

    with ``alpha = exp(-dt / tau_syn)``, ``beta = exp(-dt / tau_mem)``. The spike at step ``n``
    is read from the membrane *before* this step's update, so an input at step ``n`` reaches the
    current at ``n+1`` and the membrane at ``n+2``: the model has two steps of latency.

    Args:
        state: ``CubaLIFState(I[n], U[n])``, each [batch, n].
        current: this step's feed-forward drive ``W S_in[n]`` (+ bias), [batch, n].
        alpha: synaptic decay per step, scalar or [n].
        beta: membrane decay per step, scalar or [n].
        threshold: ``theta`` > 0.
        spike_fn: surrogate spike function.
        reset: "subtract" or "zero".
        detach_reset: stop the gradient through the reset.
        recurrent_kernel: optional ``V``, [n, n].

    Returns:
        ``(S[n], CubaLIFState(I[n+1], U[n+1]))``.
    """
    s = spike_fn(state.v - threshold)
    if recurrent_kernel is not None:
        current = current + tf.matmul(s, recurrent_kernel)
    v_next = apply_reset(beta * state.v + state.i, s, threshold, reset, detach_reset)
    i_next = alpha * state.i + current
    return s, CubaLIFState(i_next, v_next)


def li_step(v, current, *, beta):
    r"""One step of a non-spiking leaky integrator (readout).

    .. math::  v[t] = \beta\, v[t-1] + I[t]

    Args:
        v: previous membrane, [batch, n].
        current: input ``I[t]``, [batch, n].
        beta: decay per step ``exp(-dt / tau_mem)``, scalar or [n].

    Returns:
        ``v[t]``.
    """
    return beta * v + current


def dense_lif_step(spikes, weights, v, beta, *, threshold=1.0, reset: str = "subtract"):
    r"""One LIF step from input spikes, dense (twin of :func:`keras_spiking.ops.sparse_lif_step`).

    .. math::
        u = \beta v + x W, \qquad S = H(u - \theta), \qquad
        v' = u - \theta S \;\text{(subtract)} \quad\text{or}\quad u (1 - S) \;\text{(zero)}

    Returns:
        ``(S [batch, n], v' [batch, n])``.
    """
    u = beta * v + tf.matmul(spikes, weights)
    s = tf.cast(u > threshold, u.dtype)
    return s, (u - threshold * s if reset == "subtract" else u * (1 - s))
