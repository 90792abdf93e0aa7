r"""EventProp: exact event-based gradients of current-based LIF networks (the pure-TF twin).

Wunderlich & Pehle, "Event-based backpropagation can compute exact gradients for spiking
neural networks", Sci. Rep. 11:12829 (2021). The layers in
:mod:`keras_spiking.eventprop_layers` call the two functions here, :func:`spiking_layer` and
:func:`readout_layer`, whose gradients are defined with ``tf.custom_gradient``.

**Model.** Between events each neuron follows (time in seconds)

.. math::
    \tau_m \dot V = -V + I, \qquad \tau_s \dot I = -I

An input spike of presynaptic neuron ``i`` at time ``t_e`` adds ``W_ij`` to ``I_j``. Neuron
``j`` spikes when ``V_j`` crosses ``theta`` upward; its voltage is then reset to 0.

**Grid.** The state is kept at grid times ``t_n = n dt`` and advanced with the exact solution
of the linear dynamics, so there is no Euler error between events. With ``a(h) = e^{-h/tau_m}``,
``b(h) = e^{-h/tau_s}`` and the voltage response to a unit current step
``g(h) = tau_s / (tau_s - tau_m) (b(h) - a(h))`` (``(h / tau) e^{-h/tau}`` for equal taus),
an input spike at ``t_e`` in step ``n`` (``t_n <= t_e < t_{n+1}``, ``h_e = t_{n+1} - t_e``)
contributes exactly:

.. math::
    I^-_{n+1} &= b(dt) I_n + \sum_e W_{i_e} b(h_e) \\
    V^-_{n+1} &= a(dt) V_n + g(dt) I_n + \sum_e W_{i_e} g(h_e)

If ``V^-_{n+1} >= theta`` the neuron spikes within the step. With ``interpolate=True`` the
spike time is the linear interpolation of the crossing,
``t_k = t_n + phi dt``, ``phi = (theta - V_n) / (V^-_{n+1} - V_n)`` (error ``O(dt^2)``); with
``interpolate=False`` it is the grid time ``t_{n+1}``. The reset happens at ``t_k``: the
voltage at ``t_{n+1}`` is what the current integrates in the rest of the step,
``V_{n+1} = I^-_{n+1} q(h_k)`` with ``h_k = t_{n+1} - t_k`` and ``q(h) = g(h) / b(h)``.
Recurrent spikes (weights ``R``) reach their targets at ``t_k`` and enter the state at
``t_{n+1}`` the same way as input spikes, after the threshold check of the step.

**Gradient.** The backward pass is the adjoint of exactly this forward map (so it equals
finite differences of the loss wherever no spike appears or disappears). Between events the
adjoint ``(lambda_I, lambda_V) = dL/d(I, V)`` at the grid times obeys the transposed step

.. math::
    \lambda_{I,n} = b(dt) \lambda_{I,n+1} + g(dt) \lambda_{V,n+1}, \qquad
    \lambda_{V,n} = a(dt) \lambda_{V,n+1}

which is the closed-form solution of the paper's adjoint ODEs
(``tau_m lambda_V' = -lambda_V``, ``tau_s lambda_I' = -lambda_I + lambda_V`` in its own
scaling). At a spike, the loss gradient with respect to the spike time,
``G = dL/dt_k`` (from the loss, and from the targets: ``-sum_j W_ij (b'(h) lambda_{I,j}
+ g'(h) lambda_{V,j})``, the paper's ``W^T (lambda_V - lambda_I)`` term), makes the jump

.. math::
    \lambda^-_V \mathrel{+}= -G\, dt\, \phi / D, \qquad
    \lambda_{V,n} \mathrel{+}= -G\, dt\, (1 - \phi) / D, \qquad D = V^-_{n+1} - V_n

which tends to the paper's ``-G tau_m / (I - theta)`` as ``dt -> 0``. With
``interpolate=False`` the jump uses that continuous form directly (the mlGeNN
approximation), ``D = dt (I - theta) / tau_m``. Weight gradients are sampled at the
presynaptic spike times: ``dL/dW_ij = sum_e b(h_e) lambda_{I,j} + g(h_e) lambda_{V,j}``
(the paper's ``-tau_s sum lambda_I`` in its scaling).

**Memory.** The forward keeps, per spike, its time, step, ``phi``, ``D`` and the current at
the spike, in per-neuron buffers of ``max_spikes`` slots. No voltage trace is kept, so memory
grows with the number of spikes and not with the number of steps. The backward reads the
spikes of each step from these buffers.

Spike trains are passed between layers as **spike-time tensors** ``[batch, neurons, slots]``
in seconds, sorted along the last axis, with ``+inf`` in unused slots.
"""

from __future__ import annotations

import math

import keras
import numpy as np
import tensorflow as tf

from keras_spiking import _validation, ops
from keras_spiking.eventprop_passes import (
    Kinetics,
    _backward,
    _decode,
    _integral_weights,
    _readout_forward,
    _Spikes,
    _spiking_forward,
    readout_forward_reference,
    spiking_forward_reference,
)
from keras_spiking.ops import eventprop_kernels

__all__ = [
    "EventProp",
    "get_rule",
    "Kinetics",
    "spiking_layer",
    "readout_layer",
    "sequence_to_times",
    "times_to_sequence",
    "spiking_forward_reference",
    "readout_forward_reference",
    "READOUTS",
    "OVERFLOW_POLICIES",
]

#: What :func:`readout_layer` returns per output neuron.
READOUTS = eventprop_kernels.READOUTS  # the kernels implement every readout
#: What a spiking layer does when a neuron spikes more often than it has buffer slots.
OVERFLOW_POLICIES = ("raise", "warn")


def _count_gradient(counts, spikes: _Spikes, target: float, strength: float):
    """dL/dt_k of the spike-count regulariser (see ``EventPropCubaLIF``), per recorded spike."""
    per_neuron = -strength * (tf.cast(counts, spikes.times.dtype) - target)
    recorded = spikes.step >= 0
    return tf.where(recorded, per_neuron[..., None], tf.zeros_like(spikes.times))


def spiking_layer(
    times_in: tf.Tensor,
    kernel: tf.Tensor,
    recurrent: tf.Tensor | None = None,
    *,
    kinetics: Kinetics,
    max_spikes: int,
    interpolate: bool = True,
    min_slope: float | None = None,
    on_overflow: str = "raise",
    count_target: float = 0.0,
    count_strength: float = 0.0,
    silent_bump: float = 0.0,
    name: str = "eventprop",
    use_custom_ops: str | bool = "auto",
):
    """One current-based LIF layer with the EventProp gradient (see the module docstring).

    Args:
        times_in: ``[batch, inputs, slots]`` input spike times in seconds (``+inf`` = none).
        kernel: ``[inputs, units]`` weights ``W``.
        recurrent: optional ``[units, units]`` weights ``R``.
        kinetics: time constants, threshold, ``dt`` and the number of steps.
        max_spikes: buffer slots per neuron (and sample).
        interpolate: spike times interpolated within the step (exact gradient of the gridded
            model) or on the grid (the continuous-time jump as an approximation).
        min_slope: if set, the backward uses ``max(D, min_slope * dt)`` for the slope ``D`` at a
            spike (``min_slope`` in threshold units per second): clamps the ``1 / (I - theta)``
            blow-up of grazing crossings, at the price of exactness where it applies.
        on_overflow: a neuron spiking more than ``max_spikes`` times: "raise" an error, or
            "warn" (printed once per call; the extra spikes still reset the neuron but are not
            passed on and get no gradient).
        count_target: spikes per neuron and sample that the count regulariser aims at.
        count_strength: strength of the spike-count regulariser, in 1/s (0 = off). It is a
            heuristic, not an exact gradient (counts are piecewise constant): each recorded
            spike of a neuron that spiked ``c`` times gets
            ``dL/dt_k += -count_strength (c - count_target)``, which moves the spikes of
            too-active neurons later (out of the window) and of too-quiet ones earlier.
        silent_bump: for each neuron silent in every sample of the batch, the weight gradient of
            its input column gets ``-silent_bump`` (gradient descent then raises its weights), the
            usual cure for neurons that never spike and so never get a gradient.
        name: used in error messages.
        use_custom_ops: run the C++ kernels (``custom_ops/eventprop.cc``) instead of this
            module's TF code, for float32/float64: ``"auto"`` (the global setting of
            :mod:`keras_spiking.ops`), True or False. Same numbers up to rounding.

    Returns:
        ``[batch, units, max_spikes]`` output spike times in seconds, sorted, ``+inf`` unused.

    Raises:
        ValueError: ``max_spikes`` outside ``[1, 2**31 - 1]``, or a spike buffer
            ``batch x units x max_spikes`` above ``2**40`` elements (checked where the batch
            is known when the layer is traced; a batch only known at run time that is too large
            fails with a TensorFlow error instead).
    """
    kin, interp = _checked_kinetics(kinetics, name), bool(interpolate)
    max_spikes = _validation.positive_int("max_spikes", max_spikes, name)
    on_overflow = _validation.one_of("on_overflow", on_overflow, OVERFLOW_POLICIES, name)
    setting = ops.validate_setting(use_custom_ops)
    _validation.buffer_size(
        "max_spikes",
        max_spikes,
        {
            "batch": _validation.static_dim(times_in, 0),
            "units": _validation.static_dim(kernel, -1),
            "max_spikes": max_spikes,
        },
        "the spike buffers",
        name,
    )

    @tf.custom_gradient
    def layer(times, w, *rec_weights):
        rec = rec_weights[0] if rec_weights else None
        kernels = ops.eventprop_enabled(setting, w.dtype)
        if kernels:
            record, counts, overflow = ops.eventprop_spiking_forward(
                times, w, rec, kinetics=kin, max_spikes=max_spikes, interpolate=interp
            )
            spikes = _Spikes(*record)
        else:
            spikes, counts, overflow = _spiking_forward(
                times, w, rec, kin=kin, max_spikes=max_spikes, interpolate=interp
            )
        if on_overflow == "raise":
            check = tf.debugging.Assert(
                tf.equal(overflow, 0),
                [
                    f"{name}: a neuron spiked more than max_spikes={max_spikes} times in the "
                    "window; raise `max_spikes` (memory grows with it) or pass "
                    "on_overflow='warn' to drop the extra spikes. Spikes not recorded:",
                    overflow,
                ],
            )
            with tf.control_dependencies([check]):
                out = tf.identity(spikes.times)
        else:
            printed = tf.cond(
                overflow > 0,
                lambda: _print_warning(name, max_spikes, overflow),
                lambda: tf.constant(True),
            )
            with tf.control_dependencies([printed]):
                out = tf.identity(spikes.times)

        def grad(g_out):
            g_out = tf.where(spikes.step >= 0, g_out, tf.zeros_like(g_out))
            g_out = _finite_gradient(g_out, name)
            if count_strength:
                g_out += _count_gradient(counts, spikes, count_target, count_strength)
            if kernels:
                d_times, d_w, d_rec = ops.eventprop_backward(
                    times,
                    w,
                    rec,
                    spikes,
                    g_out,
                    kinetics=kin,
                    interpolate=interp,
                    min_slope=min_slope,
                )
            else:
                d_times, d_w, d_rec = _backward(
                    _decode(times, kin),
                    w,
                    rec,
                    spikes,
                    g_out,
                    None,
                    kin=kin,
                    interpolate=interp,
                    min_slope=min_slope,
                )
            if silent_bump:
                silent = tf.reduce_all(tf.equal(counts, 0), axis=0)
                d_w -= silent_bump * tf.cast(silent, d_w.dtype)[None, :]
            return (d_times, d_w) + ((d_rec,) if rec is not None else ())

        return out, grad

    args = (times_in, kernel) + ((recurrent,) if recurrent is not None else ())
    return layer(*args)


def _finite_gradient(g_out, name: str):
    """``g_out`` with a clear error if the gradient arriving from the loss is NaN or inf."""
    check = tf.debugging.assert_all_finite(
        g_out,
        f"{name}: the gradient reaching this layer is NaN or inf (is the loss NaN? e.g. a "
        "loss on +inf spike times of silent neurons)",
    )
    with tf.control_dependencies([check]):
        return tf.identity(g_out)


def _print_warning(name: str, max_spikes: int, overflow):
    """Prints the on_overflow="warn" message: what was lost, and the fix (more slots)."""
    with tf.control_dependencies(
        [
            tf.print(
                f"WARNING: {name}:",
                overflow,
                f"spikes not recorded: a neuron spiked more than max_spikes={max_spikes} times "
                "in the window (the extra spikes still reset it, but are not passed on and get "
                f"no gradient); raise `max_spikes` above {max_spikes} to keep them (memory "
                "grows with it)",
                output_stream="file:///dev/stderr",
            )
        ]
    ):
        return tf.constant(True)


def _checked_kinetics(kinetics, owner: str) -> Kinetics:
    if not isinstance(kinetics, Kinetics):
        raise TypeError(
            f"{owner}: `kinetics` must be a keras_spiking.eventprop.Kinetics, got {kinetics!r}"
        )
    return kinetics


def readout_layer(
    times_in: tf.Tensor,
    kernel: tf.Tensor,
    *,
    kinetics: Kinetics,
    readout: str = "max",
    use_custom_ops: str | bool = "auto",
    name: str = "EventProp readout",
) -> tf.Tensor:
    r"""A non-spiking leaky-integrator layer read out over the window, with the EventProp gradient.

    Same current and voltage dynamics as :func:`spiking_layer`, no threshold. ``readout``:

    - "max": ``max_n V(t_n)`` (the paper's MNIST loss takes its softmax cross-entropy);
      the gradient enters ``lambda_V`` at the step of the maximum.
    - "integral": ``sum_n e^{-t_n / T} V(t_n) dt / T`` (the integrated-voltage loss of
      Nowotny, Turner & Knight 2022), ``T`` the window.
    - "last": ``V(t_T)``.
    - "sequence": ``V(t_n)`` for every step, ``[batch, steps, units]`` (memory grows with
      the steps).

    ``use_custom_ops``: as in :func:`spiking_layer`; ``name`` is used in error messages.

    Returns:
        ``[batch, units]`` (or ``[batch, steps, units]`` for "sequence").

    Raises:
        ValueError: an unknown ``readout``, or for "sequence" an output
            ``batch x steps x units`` above ``2**40`` elements (where the batch is known when
            the layer is traced).
    """
    kin = _checked_kinetics(kinetics, name)
    readout = _validation.one_of("readout", readout, READOUTS, name)
    setting = ops.validate_setting(use_custom_ops)
    if readout == "sequence":
        _validation.buffer_size(
            "steps",
            kin.steps,
            {
                "batch": _validation.static_dim(times_in, 0),
                "steps": kin.steps,
                "units": _validation.static_dim(kernel, -1),
            },
            'the "sequence" readout',
            name,
        )

    @tf.custom_gradient
    def layer(times, w):
        kernels = ops.eventprop_enabled(setting, w.dtype)
        if kernels:
            out, arg = ops.eventprop_readout_forward(times, w, kinetics=kin, readout=readout)
        else:
            out, arg = _readout_forward(times, w, kin=kin, readout=readout)

        def grad(g_out):
            g_out = _finite_gradient(g_out, name)
            if kernels:
                d_times, d_w, _ = ops.eventprop_backward(
                    times, w, kinetics=kin, readout=readout, readout_grad=g_out, argmax=arg
                )
                return d_times, d_w
            weights = _integral_weights(kin, w.dtype)

            def readout_grad(n):
                if readout == "max":
                    return tf.where(tf.equal(arg, n), g_out, tf.zeros_like(g_out))
                if readout == "integral":
                    return weights[n] * g_out
                if readout == "last":
                    return tf.cast(tf.equal(n, kin.steps - 1), g_out.dtype) * g_out
                return tf.gather(g_out, n, axis=1)

            d_times, d_w, _ = _backward(
                _decode(times, kin),
                w,
                None,
                None,
                None,
                readout_grad,
                kin=kin,
                interpolate=True,
                min_slope=None,
            )
            return d_times, d_w

        return out, grad

    return layer(times_in, kernel)


# ------------------------------------------------------------------------------------------
# [batch, time, neurons] event sequences <-> spike-time tensors
# ------------------------------------------------------------------------------------------


def sequence_to_times(
    events: tf.Tensor,
    dt: float,
    max_spikes: int | None = None,
    *,
    check: bool = True,
    name: str = "sequence_to_times",
) -> tf.Tensor:
    """Spike times ``[batch, neurons, slots]`` of an event sequence ``[batch, time, neurons]``.

    A nonzero value ``phi`` at step ``n`` is a spike at ``t = (n + phi) dt``: binary spike
    trains (``phi = 1``) put each spike at the end of its step, and the sequences written by
    :func:`times_to_sequence` carry the spike's position within the step, so the conversion
    keeps the timing (and its gradient: ``dt/dphi = dt``). Values must lie in ``[0, 1]``.

    Args:
        events: ``[batch, time, neurons]``.
        dt: step in seconds.
        max_spikes: slots of the result; None keeps one slot per step. More spikes than
            slots in any neuron raise an error.
        check: raise an InvalidArgumentError (naming ``name``) for values outside ``[0, 1]``
            or NaN.
        name: used in the error message.
    """
    dt = _validation.positive_number("dt", dt, name)
    if max_spikes is not None:
        max_spikes = _validation.positive_int("max_spikes", max_spikes, name)
    if check:
        in_range = tf.debugging.Assert(
            tf.reduce_all(tf.logical_and(events >= 0, events <= 1)),
            [f"{name}: input events must lie in [0, 1] (no NaN)"],
        )
        with tf.control_dependencies([in_range]):
            events = tf.identity(events)
    steps = tf.cast(tf.range(tf.shape(events)[1]), events.dtype)[None, :, None]
    spiking = events > 0
    never = tf.fill(tf.shape(events), tf.constant(math.inf, events.dtype))
    times = tf.where(spiking, (steps + events) * dt, never)
    times = tf.sort(tf.transpose(times, [0, 2, 1]), axis=-1)
    if max_spikes is None:
        # as many slots as the busiest neuron needs (at least one)
        busiest = tf.reduce_max(tf.reduce_sum(tf.cast(spiking, tf.int32), axis=1))
        return times[..., : tf.maximum(busiest, 1)]
    counts = tf.reduce_sum(tf.cast(spiking, tf.int32), axis=1)
    check = tf.debugging.assert_less_equal(
        tf.reduce_max(tf.concat([counts, tf.zeros([1, tf.shape(counts)[1]], tf.int32)], 0)),
        max_spikes,
        message=f"an input neuron spikes more than max_spikes={max_spikes} times",
    )
    with tf.control_dependencies([check]):
        times = tf.identity(times)
    pad = tf.maximum(max_spikes - tf.shape(times)[-1], 0)
    times = tf.pad(times, [[0, 0], [0, 0], [0, pad]], constant_values=math.inf)
    return times[..., :max_spikes]


def times_to_sequence(times: tf.Tensor, steps: int, dt: float) -> tf.Tensor:
    """Event sequence ``[batch, steps, neurons]`` of spike times ``[batch, neurons, slots]``.

    A spike at ``t`` in step ``n`` (``t_n < t <= t_{n+1}``) becomes the value
    ``phi = t / dt - n`` in ``(0, 1]`` at step ``n`` (the inverse of
    :func:`sequence_to_times`); spikes past the window and ``+inf`` slots are left out.
    Differentiable with respect to the spike times.

    One step holds at most one spike of a neuron. The grid simulation fires at most once per
    step, but two spikes in consecutive steps can round to the same step where they meet at
    a grid time (``t_1 = t_{n+1}`` exactly, ``t_2 = t_{n+1} + epsilon`` rounded down); the
    later one then moves to the start of the next step (``phi = 6.1e-5``, the smallest normal
    float16), a shift of a rounding error there, instead of being summed into a value above 1
    (the next layer's ``[0, 1]`` check failed on such sums before). In the window's last step
    there is no next step: the later spike is then left out, as spikes past the window are.
    """
    steps = _validation.positive_int("steps", steps, "times_to_sequence")
    dt = _validation.positive_number("dt", dt, "times_to_sequence")
    position = times / dt
    finite = tf.math.is_finite(times)
    safe = tf.where(finite, position, tf.zeros_like(position))
    step = tf.math.ceil(safe) - 1
    phi = safe - step
    # a spike exactly at a grid time t_n (phi rounds to 0) belongs to the end of step n - 1
    at_grid = phi <= 0
    step = tf.where(at_grid, step - 1, step)
    # the slots are sorted: make the steps of a neuron's spikes strictly increasing,
    # step_k' = k + max_{j <= k} (step_j - j) (a running max over the slot axis)
    slot = tf.cast(tf.range(tf.shape(times)[-1]), step.dtype)
    offsets = tf.transpose(tf.stop_gradient(step) - slot, [2, 0, 1])
    lowest = tf.fill(tf.shape(offsets)[1:], tf.constant(-math.inf, offsets.dtype))
    running = tf.scan(tf.maximum, offsets, initializer=lowest)  # no slots: no step
    moved = tf.transpose(running, [1, 2, 0]) + slot
    phi = tf.where(
        moved > step,
        # the smallest positive normal float16, representable in every float dtype
        tf.maximum(safe - moved, tf.constant(np.finfo(np.float16).tiny, times.dtype)),
        tf.where(at_grid, phi + 1, phi),
    )
    step = tf.cast(moved, tf.int32)
    keep = tf.logical_and(finite, tf.logical_and(step >= 0, step < steps))
    index = tf.where(keep)  # [spikes, 3]: batch, neuron, slot
    batch_neuron = index[:, :2]
    step_of = tf.gather_nd(step, index)
    scatter_index = tf.stack(
        [batch_neuron[:, 0], tf.cast(step_of, tf.int64), batch_neuron[:, 1]], axis=1
    )
    shape = tf.cast(tf.stack([tf.shape(times)[0], steps, tf.shape(times)[1]]), tf.int64)
    return tf.scatter_nd(scatter_index, tf.gather_nd(phi, index), shape)


# ------------------------------------------------------------------------------------------
# the rule object for CubaLIF(gradient=...)
# ------------------------------------------------------------------------------------------


@keras.saving.register_keras_serializable(package="keras_spiking")
class EventProp:
    """The EventProp gradient rule, for ``keras_spiking.layers.CubaLIF(gradient=...)``.

    ``gradient="eventprop"`` is ``EventProp()`` with these defaults. The arguments are those of
    :func:`spiking_layer` (and of :class:`keras_spiking.layers.EventPropCubaLIF`): ``max_spikes``
    buffer slots per neuron, ``on_overflow``, ``interpolate``, the ``min_slope`` denominator
    clamp, the spike-count regulariser (``count_target``, ``count_strength``) and
    ``silent_bump``.
    """

    def __init__(
        self,
        max_spikes: int = 8,
        on_overflow: str = "raise",
        interpolate: bool = True,
        min_slope: float | None = None,
        count_target: float = 0.0,
        count_strength: float = 0.0,
        silent_bump: float = 0.0,
    ):
        owner = type(self).__name__
        self.max_spikes = _validation.positive_int("max_spikes", max_spikes, owner)
        self.on_overflow = _validation.one_of("on_overflow", on_overflow, OVERFLOW_POLICIES, owner)
        self.interpolate = bool(interpolate)
        if min_slope is not None:
            min_slope = _validation.positive_number("min_slope", min_slope, owner)
        self.min_slope = min_slope
        self.count_target = _validation.non_negative_number("count_target", count_target, owner)
        self.count_strength = _validation.non_negative_number(
            "count_strength", count_strength, owner
        )
        self.silent_bump = _validation.non_negative_number("silent_bump", silent_bump, owner)

    def options(self) -> dict:
        """The keyword arguments of :func:`spiking_layer` this rule sets."""
        return self.get_config()

    def get_config(self) -> dict:
        return {
            "max_spikes": self.max_spikes,
            "on_overflow": self.on_overflow,
            "interpolate": self.interpolate,
            "min_slope": self.min_slope,
            "count_target": self.count_target,
            "count_strength": self.count_strength,
            "silent_bump": self.silent_bump,
        }

    @classmethod
    def from_config(cls, config: dict) -> EventProp:
        return cls(**config)

    def __eq__(self, other) -> bool:
        return type(other) is type(self) and other.get_config() == self.get_config()

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"EventProp({args})"


def get_rule(gradient) -> EventProp | None:
    """The gradient rule named by ``gradient``.

    None for "surrogate" (BPTT with the surrogate), an :class:`EventProp` for "eventprop", an
    ``EventProp`` instance, or its serialized dict (returned as Keras deserializes it). Anything
    else raises a ValueError naming ``gradient``.
    """
    if gradient is None or (isinstance(gradient, str) and gradient == "surrogate"):
        return None
    if isinstance(gradient, str) and gradient == "eventprop":
        return EventProp()
    if isinstance(gradient, EventProp):
        return gradient
    if isinstance(gradient, dict):
        # whatever Keras decodes (callers check that it is an EventProp and say what it is)
        try:
            return keras.saving.deserialize_keras_object(gradient)
        except Exception as error:  # Keras raises several kinds for a malformed config
            kind = TypeError if isinstance(error, TypeError) else ValueError
            raise kind(f"`gradient`: could not deserialize {gradient!r} ({error})") from None
    raise ValueError(
        "`gradient` must be 'surrogate', 'eventprop', a keras_spiking.eventprop.EventProp or "
        f"its serialized dict, got {gradient!r}"
    )
