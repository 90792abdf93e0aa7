r"""EventProp's pure-TF passes: the forward recurrences and the adjoint, per layer.

These are the twins of the C++ kernels in :mod:`keras_spiking.ops.eventprop_kernels` (same
inputs, same outputs): the exact event-driven forward of a spiking layer
(:func:`_spiking_forward`) and of a readout (:func:`_readout_forward`), and the adjoint pass
with jumps at the spike times (:func:`_backward`), with the model's :class:`Kinetics`. The
equations, and how the gradient is wired into Keras layers, are in
:mod:`keras_spiking.eventprop`, which calls these or the kernels.
"""

from __future__ import annotations

import dataclasses
import math
from typing import NamedTuple

import tensorflow as tf

from keras_spiking import _validation
from keras_spiking.ops import eventprop_kernels

__all__ = ["Kinetics", "spiking_forward_reference", "readout_forward_reference"]


@dataclasses.dataclass(frozen=True)
class Kinetics:
    """Time constants, threshold and grid of one EventProp layer (seconds).

    ``tau_mem``, ``tau_syn`` and ``dt`` are seconds within the float32 range (about
    ``1.2e-38`` to ``3.4e38``), ``threshold`` finite, ``steps`` an integer in
    ``[1, 2**31 - 1]`` (step indices are int32 in the kernels and in the TF twin); anything else
    raises a TypeError or ValueError naming the field.
    """

    tau_mem: float = 20e-3
    tau_syn: float = 5e-3
    threshold: float = 1.0
    dt: float = 1e-3
    steps: int = 100

    def __post_init__(self):
        owner = type(self).__name__
        values = {
            "tau_mem": _validation.seconds("tau_mem", self.tau_mem, owner),
            "tau_syn": _validation.seconds("tau_syn", self.tau_syn, owner),
            "threshold": _validation.finite_number("threshold", self.threshold, owner),
            "dt": _validation.seconds("dt", self.dt, owner),
            "steps": _validation.positive_int("steps", self.steps, owner),
        }
        for name, value in values.items():  # plain Python numbers, whatever came in
            object.__setattr__(self, name, value)

    @property
    def equal_taus(self) -> bool:
        """``tau_syn == tau_mem`` (to 1e-9): the responses take their limit form."""
        return abs(self.tau_syn - self.tau_mem) <= 1e-9 * self.tau_mem

    def voltage_response(self, h, exp=tf.exp):
        """``g(h)``: voltage at ``h`` after a unit current step.

        ``exp`` is ``tf.exp`` for tensors or ``math.exp`` for Python floats.
        """
        tau_m, tau_s = self.tau_mem, self.tau_syn
        a = exp(-h / tau_m)
        if self.equal_taus:
            return h / tau_m * a
        return tau_s / (tau_s - tau_m) * (exp(-h / tau_s) - a)

    def responses(self, h):
        """``b(h), g(h), b'(h), g'(h)``: current and voltage at ``h`` after a unit current step."""
        tau_m, tau_s = self.tau_mem, self.tau_syn
        a, b = tf.exp(-h / tau_m), tf.exp(-h / tau_s)
        if self.equal_taus:
            dg = a / tau_m * (1 - h / tau_m)
        else:
            dg = tau_s / (tau_s - tau_m) * (a / tau_m - b / tau_s)
        return b, self.voltage_response(h), -b / tau_s, dg

    def reset_response(self, h):
        """``q(h) = g(h) / b(h)`` and ``q'(h)``.

        ``q(h)`` is the voltage at the end of a step after a reset ``h`` before its end, per unit
        of current at the end of the step.
        """
        tau_m, tau_s = self.tau_mem, self.tau_syn
        if self.equal_taus:
            return h / tau_m, tf.ones_like(h) / tau_m
        rate = 1 / tau_m - 1 / tau_s
        ratio = tf.exp(-h * rate)
        return tau_s / (tau_s - tau_m) * (1 - ratio), ratio / tau_m

    @property
    def grid_decays(self) -> tuple[float, float, float]:
        """``a(dt), b(dt), g(dt)`` as Python floats."""
        dt = self.dt
        a, b = math.exp(-dt / self.tau_mem), math.exp(-dt / self.tau_syn)
        return a, b, self.voltage_response(dt, math.exp)


class _Inputs(NamedTuple):
    """Input spikes decoded onto the grid, all ``[batch, inputs, slots]``."""

    step: tf.Tensor  # int32 step of each spike, -1 where none (inf or past the window)
    resp_i: tf.Tensor  # b(h_e): current it adds at the end of its step, per unit weight
    resp_v: tf.Tensor  # g(h_e): voltage it adds at the end of its step
    dresp_i: tf.Tensor  # b'(h_e)
    dresp_v: tf.Tensor  # g'(h_e)


def _decode(times: tf.Tensor, kin: Kinetics) -> _Inputs:
    dt = kin.dt
    inside = times < kin.steps * dt  # False for +inf (no spike) and spikes past the window
    safe = tf.where(inside, times, tf.zeros_like(times))
    step = tf.cast(tf.floor(safe / dt), tf.int32)
    h = (tf.cast(step, times.dtype) + 1) * dt - safe
    zero = tf.zeros_like(times)
    resp = kin.responses(h)
    step = tf.where(inside, step, -tf.ones_like(step))
    return _Inputs(step, *(tf.where(inside, r, zero) for r in resp))


def _at_step(values: tf.Tensor, step: tf.Tensor, n) -> tf.Tensor:
    """Sum over the slot axis of ``values`` where ``step == n``: ``[B, X, K] -> [B, X]``."""
    return tf.reduce_sum(tf.where(tf.equal(step, n), values, tf.zeros_like(values)), axis=-1)


def _input_at(inputs: _Inputs, n):
    return _at_step(inputs.resp_i, inputs.step, n), _at_step(inputs.resp_v, inputs.step, n)


class _Spikes(NamedTuple):
    """The forward's per-spike record, all ``[batch, units, max_spikes]``."""

    times: tf.Tensor  # spike time in seconds, +inf in unused slots
    step: tf.Tensor  # int32 step, -1 in unused slots
    phi: tf.Tensor  # position of the spike in its step, (0, 1] (0: forced at the step start)
    slope: tf.Tensor  # D: V^- - V_n (interpolated) or dt (I - theta) / tau_m
    current: tf.Tensor  # I^-_{n+1}, the current at the end of the spike's step


def _spiking_forward(
    times_in, kernel, recurrent, *, kin: Kinetics, max_spikes: int, interpolate: bool
):
    """Runs the layer; returns (_Spikes, counts [B, N] int32, overflow count scalar int32)."""
    dtype = kernel.dtype
    inputs = _decode(times_in, kin)
    batch = tf.shape(times_in)[0]
    units = tf.shape(kernel)[1]
    a_dt, b_dt, g_dt = kin.grid_decays
    theta, dt = kin.threshold, kin.dt
    zeros = tf.zeros([batch, units], dtype)
    buffer_shape = [batch, units, max_spikes]
    slots = tf.range(max_spikes, dtype=tf.int32)

    def body(n, i, v, count, overflow, rec):
        x_i, x_v = _input_at(inputs, n)
        i_pre = b_dt * i + tf.matmul(x_i, kernel)
        v_pre = a_dt * v + g_dt * i + tf.matmul(x_v, kernel)
        below = v < theta
        spike = tf.logical_or(v_pre >= theta, tf.logical_not(below))
        if interpolate:
            rise = v_pre - v
            crossing = tf.logical_and(spike, below)
            phi = tf.where(
                crossing, (theta - v) / tf.where(crossing, rise, tf.ones_like(rise)), zeros
            )
            slope = rise
        else:
            phi = tf.ones_like(v)
            slope = dt * (i_pre - theta) / kin.tau_mem
        h_out = (1 - phi) * dt
        q, _ = kin.reset_response(h_out)
        v_post = tf.where(spike, i_pre * q, v_pre)
        i_post = i_pre
        if recurrent is not None:
            b_h, g_h, _, _ = kin.responses(h_out)
            i_post += tf.matmul(tf.where(spike, b_h, zeros), recurrent)
            v_post += tf.matmul(tf.where(spike, g_h, zeros), recurrent)
        t_out = (tf.cast(n, dtype) + phi) * dt
        write = tf.logical_and(spike[..., None], tf.equal(count[..., None], slots))
        n_vec = tf.zeros_like(rec.step) + n
        rec = _Spikes(
            tf.where(write, t_out[..., None], rec.times),
            tf.where(write, n_vec, rec.step),
            tf.where(write, phi[..., None], rec.phi),
            tf.where(write, slope[..., None], rec.slope),
            tf.where(write, i_pre[..., None], rec.current),
        )
        lost = tf.logical_and(spike, count >= max_spikes)
        overflow += tf.reduce_sum(tf.cast(lost, tf.int32))
        count += tf.cast(spike, tf.int32)
        return n + 1, i_post, v_post, count, overflow, rec

    empty = tf.zeros(buffer_shape, dtype)
    rec0 = _Spikes(
        tf.fill(buffer_shape, tf.constant(math.inf, dtype)),
        -tf.ones(buffer_shape, tf.int32),
        empty,
        empty,
        empty,
    )
    count0 = tf.zeros([batch, units], tf.int32)
    _, _, _, count, overflow, rec = tf.while_loop(
        lambda n, *_: n < kin.steps,
        body,
        (tf.constant(0), zeros, zeros, count0, tf.constant(0), rec0),
        parallel_iterations=1,
    )
    return rec, count, overflow


def _backward(
    inputs: _Inputs,
    kernel,
    recurrent,
    spikes: _Spikes | None,
    grad_times,
    readout_grad,
    *,
    kin: Kinetics,
    interpolate: bool,
    min_slope: float | None,
):
    """The adjoint pass of one layer, from t_T back to t_0.

    ``spikes`` and ``grad_times`` (dL/dt of each recorded spike) are None for a readout;
    ``readout_grad(n)`` gives dL/dV_{n+1} from the readout (or None).
    Returns (dL/dtimes_in, dL/dkernel, dL/drecurrent or None).
    """
    dtype = kernel.dtype
    a_dt, b_dt, g_dt = kin.grid_decays
    dt = kin.dt
    batch = tf.shape(inputs.step)[0]
    units = tf.shape(kernel)[1]
    zeros = tf.zeros([batch, units], dtype)
    kernel_t = tf.transpose(kernel)
    recurrent_t = None if recurrent is None else tf.transpose(recurrent)

    def body(n, lam_i, lam_v, d_kernel, d_rec, d_times):
        if readout_grad is not None:
            lam_v += readout_grad(n)
        if spikes is not None:
            at = tf.equal(spikes.step, n)
            spike = tf.reduce_any(at, axis=-1)
            phi = _at_step(spikes.phi, spikes.step, n)
            slope = _at_step(spikes.slope, spikes.step, n)
            current = _at_step(spikes.current, spikes.step, n)
            g_t = _at_step(grad_times, spikes.step, n)
            h_out = (1 - phi) * dt
            d_h = zeros
            if recurrent is not None:
                b_h, g_h, db_h, dg_h = kin.responses(h_out)
                b_h, g_h = tf.where(spike, b_h, zeros), tf.where(spike, g_h, zeros)
                d_rec += tf.matmul(b_h, lam_i, transpose_a=True)
                d_rec += tf.matmul(g_h, lam_v, transpose_a=True)
                d_h += tf.where(
                    spike,
                    db_h * tf.matmul(lam_i, recurrent_t) + dg_h * tf.matmul(lam_v, recurrent_t),
                    zeros,
                )
            # reset: V_{n+1} = I^- q(h_k) for the neurons that spiked
            q, dq = kin.reset_response(h_out)
            lam_i_pre = lam_i + tf.where(spike, lam_v * q, zeros)
            d_h += tf.where(spike, lam_v * current * dq, zeros)
            # dL/dt_k: from the loss and through h_k = t_{n+1} - t_k
            g_k = g_t - d_h
            if min_slope is not None:
                slope = tf.maximum(slope, min_slope * dt)
            # phi = 0: forced at the step start (no dependence on V); slope <= 0 only on the grid
            # (interpolate=False) when I <= theta at the crossing: no jump rather than 1 / 0
            moves = tf.logical_and(spike, tf.logical_and(phi > 0, slope > 0))
            safe_slope = tf.where(moves, slope, tf.ones_like(slope))
            jump = tf.where(moves, -g_k * dt / safe_slope, zeros)
            if interpolate:
                lam_v_pre = tf.where(spike, phi * jump, lam_v)
                carry = (1 - phi) * jump
            else:
                lam_v_pre = tf.where(spike, jump, lam_v)
                carry = zeros
        else:
            lam_i_pre, lam_v_pre, carry = lam_i, lam_v, zeros
        x_i, x_v = _input_at(inputs, n)
        d_kernel += tf.matmul(x_i, lam_i_pre, transpose_a=True)
        d_kernel += tf.matmul(x_v, lam_v_pre, transpose_a=True)
        u_i = tf.matmul(lam_i_pre, kernel_t)[..., None]
        u_v = tf.matmul(lam_v_pre, kernel_t)[..., None]
        d_h_in = inputs.dresp_i * u_i + inputs.dresp_v * u_v
        d_times -= tf.where(tf.equal(inputs.step, n), d_h_in, tf.zeros_like(d_h_in))
        lam_i = b_dt * lam_i_pre + g_dt * lam_v_pre
        lam_v = a_dt * lam_v_pre + carry
        return n - 1, lam_i, lam_v, d_kernel, d_rec, d_times

    d_rec0 = tf.zeros([1, 1], dtype) if recurrent is None else tf.zeros_like(recurrent)
    _, _, _, d_kernel, d_rec, d_times = tf.while_loop(
        lambda n, *_: n >= 0,
        body,
        (
            tf.constant(kin.steps - 1),
            zeros,
            zeros,
            tf.zeros_like(kernel),
            d_rec0,
            tf.zeros_like(inputs.resp_i),
        ),
        parallel_iterations=1,
    )
    return d_times, d_kernel, (None if recurrent is None else d_rec)


def _readout_forward(times_in, kernel, *, kin: Kinetics, readout: str):
    dtype = kernel.dtype
    inputs = _decode(times_in, kin)
    batch = tf.shape(times_in)[0]
    units = tf.shape(kernel)[1]
    a_dt, b_dt, g_dt = kin.grid_decays
    zeros = tf.zeros([batch, units], dtype)
    weights = _integral_weights(kin, dtype)

    def body(n, i, v, best, arg, acc, seq):
        x_i, x_v = _input_at(inputs, n)
        v = a_dt * v + g_dt * i + tf.matmul(x_v, kernel)
        i = b_dt * i + tf.matmul(x_i, kernel)
        if readout == "max":
            better = v > best
            best = tf.where(better, v, best)
            arg = tf.where(better, tf.fill(tf.shape(arg), n), arg)
        elif readout == "integral":
            acc += weights[n] * v
        elif readout == "sequence":
            seq = seq.write(n, v)
        return n + 1, i, v, best, arg, acc, seq

    seq0 = tf.TensorArray(dtype, size=kin.steps if readout == "sequence" else 0, element_shape=None)
    _, _, v, best, arg, acc, seq = tf.while_loop(
        lambda n, *_: n < kin.steps,
        body,
        (
            tf.constant(0),
            zeros,
            zeros,
            tf.fill([batch, units], tf.constant(-math.inf, dtype)),
            tf.zeros([batch, units], tf.int32),
            zeros,
            seq0,
        ),
        parallel_iterations=1,
    )
    if readout == "max":
        return best, arg
    if readout == "integral":
        return acc, None
    if readout == "last":
        return v, None
    return tf.transpose(seq.stack(), [1, 0, 2]), None


def _integral_weights(kin: Kinetics, dtype) -> tf.Tensor:
    """``w_n = exp(-t_{n+1} / T) dt / T`` for the integrated-voltage readout (Nowotny et al.)."""
    window = kin.steps * kin.dt
    t = (tf.range(kin.steps, dtype=dtype) + 1) * kin.dt
    return tf.exp(-t / window) * (kin.dt / window)


def spiking_forward_reference(
    times_in, kernel, recurrent=None, *, kinetics, max_spikes: int, interpolate: bool = True
):
    """Pure-TF twin of :func:`keras_spiking.ops.eventprop_spiking_forward` (same outputs)."""
    _, max_spikes = eventprop_kernels.checked_eventprop_args(
        "spiking_forward_reference", times_in, kernel, kinetics, max_spikes=max_spikes
    )
    spikes, counts, overflow = _spiking_forward(
        times_in,
        kernel,
        recurrent,
        kin=kinetics,
        max_spikes=max_spikes,
        interpolate=bool(interpolate),
    )
    return tuple(spikes), counts, overflow


def readout_forward_reference(times_in, kernel, *, kinetics, readout: str = "max"):
    """Pure-TF twin of :func:`keras_spiking.ops.eventprop_readout_forward`.

    Its argmax is zeros unless ``readout="max"`` (as the kernel's).
    """
    eventprop_kernels.checked_eventprop_args(
        "readout_forward_reference", times_in, kernel, kinetics, readout=readout
    )
    out, arg = _readout_forward(times_in, kernel, kin=kinetics, readout=readout)
    if arg is None:
        arg = tf.zeros(tf.stack([tf.shape(times_in)[0], tf.shape(kernel)[1]]), tf.int32)
    return out, arg
