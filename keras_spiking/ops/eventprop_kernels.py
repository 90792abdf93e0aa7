"""EventProp kernels: the forward and adjoint passes of one layer in C++ (``eventprop.cc``).

Wrappers only: the algorithm, its pure-TF twins and the gradient wiring live in
:mod:`keras_spiking.eventprop`, which calls these when
:func:`keras_spiking.ops.dispatch.eventprop_enabled` says so. This module never imports it:
``kinetics`` is any object with ``tau_mem``, ``tau_syn``, ``threshold``, ``dt`` and ``steps``.
"""

from __future__ import annotations

import tensorflow as tf

from keras_spiking import _validation
from keras_spiking.ops.dispatch import record_call
from keras_spiking.ops.library import eventprop_library

# the readouts the readout kernel implements (keras_spiking.eventprop.READOUTS: the same)
READOUTS = ("max", "integral", "last", "sequence")


def _kinetics_vector(kinetics) -> tf.Tensor:
    """``[tau_mem, tau_syn, threshold, dt]`` as float64, the kernels' ``kinetics`` input.

    float64 whatever the layer's dtype: the TF twin derives its constants from these Python
    floats, and float attrs (32-bit) would round them before the kernels could.
    """
    return tf.constant(
        [kinetics.tau_mem, kinetics.tau_syn, kinetics.threshold, kinetics.dt], tf.float64
    )


def _no_recurrent(dtype):
    return tf.zeros([0, 0], dtype)


def checked_eventprop_args(
    owner: str, times_in, kernel, kinetics, *, max_spikes=None, readout=None
) -> tuple[int, int | None]:
    """The EventProp kernels' attributes, checked before they reach an op.

    ``steps`` (from ``kinetics``) and ``max_spikes`` are integers in ``[1, 2**31 - 1]``
    (the kernels refuse others too, with an InvalidArgumentError), and the buffers they size
    with the batch and the units (``batch x units x max_spikes``; ``batch x steps x units``
    for the "sequence" readout) stay within ``2**40`` elements where those sizes are known.
    Returns ``(steps, max_spikes)``; raises TypeError / ValueError naming the argument.
    """
    steps = _validation.positive_int("kinetics.steps", getattr(kinetics, "steps", None), owner)
    batch, units = _validation.static_dim(times_in, 0), _validation.static_dim(kernel, -1)
    if max_spikes is not None:
        max_spikes = _validation.positive_int("max_spikes", max_spikes, owner)
        dims = {"batch": batch, "units": units, "max_spikes": max_spikes}
        _validation.buffer_size("max_spikes", max_spikes, dims, "the spike buffers", owner)
    if readout is not None:
        _validation.one_of("readout", readout, READOUTS, owner)
        if readout == "sequence":
            dims = {"batch": batch, "steps": steps, "units": units}
            _validation.buffer_size("steps", steps, dims, 'the "sequence" readout', owner)
    return steps, max_spikes


def eventprop_spiking_forward(
    times_in, kernel, recurrent=None, *, kinetics, max_spikes: int, interpolate: bool = True
):
    """EventProp forward pass of a spiking layer in C++ (no gradient of its own).

    Twin: :func:`keras_spiking.eventprop.spiking_forward_reference`.

    Args:
        times_in: ``[batch, inputs, slots]`` input spike times in seconds (``+inf`` = none).
        kernel: ``[inputs, units]``, same dtype (float32/float64).
        recurrent: optional ``[units, units]``.
        kinetics: the layer's kinetics (a :class:`keras_spiking.eventprop.Kinetics` or any
            object with ``tau_mem``, ``tau_syn``, ``threshold``, ``dt`` and ``steps``).
        max_spikes: buffer slots per neuron.
        interpolate: interpolated spike times (else on the grid).

    Returns:
        ``((times, step, phi, slope, current), counts, overflow)``: the per-spike record, each
        ``[batch, units, max_spikes]`` (``step`` int32), the spike counts ``[batch, units]``
        int32 and the number of spikes not recorded (int32 scalar).

    Raises:
        ValueError: ``kinetics.steps`` or ``max_spikes`` outside ``[1, 2**31 - 1]``, or
            ``batch x units x max_spikes`` above ``2**40`` elements.
    """
    steps, max_spikes = checked_eventprop_args(
        "eventprop_spiking_forward", times_in, kernel, kinetics, max_spikes=max_spikes
    )
    lib = eventprop_library()
    record_call("eventprop_spiking_forward")
    times_in = tf.convert_to_tensor(times_in)
    kernel = tf.convert_to_tensor(kernel, times_in.dtype)
    recurrent = (
        _no_recurrent(kernel.dtype)
        if recurrent is None
        else tf.convert_to_tensor(recurrent, kernel.dtype)
    )
    times, step, phi, slope, current, counts, overflow = (
        lib.keras_spiking_event_prop_spiking_forward(
            times_in,
            kernel,
            recurrent,
            _kinetics_vector(kinetics),
            steps=steps,
            max_spikes=max_spikes,
            interpolate=bool(interpolate),
        )
    )
    return (times, step, phi, slope, current), counts, overflow


def eventprop_readout_forward(times_in, kernel, *, kinetics, readout: str = "max"):
    """EventProp forward pass of a readout layer in C++.

    Twin: :func:`keras_spiking.eventprop.readout_forward_reference`.

    Returns:
        ``(output, argmax)``: ``[batch, units]`` (``[batch, steps, units]`` for "sequence") and
        the int32 step of each maximum ``[batch, units]`` (zeros unless ``readout="max"``).

    Raises:
        ValueError: an unknown ``readout``, ``kinetics.steps`` outside ``[1, 2**31 - 1]``, or
            for "sequence" ``batch x steps x units`` above ``2**40`` elements.
    """
    steps, _ = checked_eventprop_args(
        "eventprop_readout_forward", times_in, kernel, kinetics, readout=readout
    )
    lib = eventprop_library()
    record_call("eventprop_readout_forward")
    times_in = tf.convert_to_tensor(times_in)
    return lib.keras_spiking_event_prop_readout_forward(
        times_in,
        tf.convert_to_tensor(kernel, times_in.dtype),
        _kinetics_vector(kinetics),
        steps=steps,
        readout=readout,
    )


def eventprop_backward(
    times_in,
    kernel,
    recurrent=None,
    spikes=None,
    grad_times=None,
    *,
    kinetics,
    readout_grad=None,
    argmax=None,
    readout: str | None = None,
    interpolate: bool = True,
    min_slope: float | None = None,
):
    """The EventProp adjoint (backward) pass of one layer in C++.

    Twin: ``keras_spiking.eventprop_passes._backward``.

    (Its twin is exercised through the layers: ``spiking_layer`` / ``readout_layer`` with
    ``use_custom_ops=False`` build the same arguments for ``_backward``.)

    A spiking layer passes ``spikes`` (the forward's ``(times, step, phi, slope, current)``)
    and ``grad_times`` (dL/d of each recorded spike time, zero in unused slots); a readout
    passes ``readout`` (its mode), ``readout_grad`` (dL/d its output) and, for "max", the
    forward's ``argmax``.

    Returns:
        ``(d_times_in, d_kernel, d_recurrent or None)``.
    """
    lib = eventprop_library()
    record_call("eventprop_backward")
    times_in = tf.convert_to_tensor(times_in)
    dtype = times_in.dtype
    kernel = tf.convert_to_tensor(kernel, dtype)
    spiking = spikes is not None
    if spiking == (readout is not None):
        raise ValueError("eventprop_backward: pass either `spikes` (spiking) or `readout`")
    steps, _ = checked_eventprop_args(
        "eventprop_backward", times_in, kernel, kinetics, readout=readout
    )
    rec = _no_recurrent(dtype) if recurrent is None else tf.convert_to_tensor(recurrent, dtype)
    empty3 = tf.zeros([0, 0, 0], dtype)
    empty2 = tf.zeros([0, 0], dtype)
    if spiking:
        _, step, phi, slope, current = spikes
        spike_args = (step, phi, slope, current, tf.convert_to_tensor(grad_times, dtype))
        readout_args = (empty2, tf.zeros([0, 0], tf.int32))
    else:
        spike_args = (tf.zeros([0, 0, 0], tf.int32), empty3, empty3, empty3, empty3)
        readout_args = (
            tf.convert_to_tensor(readout_grad, dtype),
            tf.zeros([0, 0], tf.int32) if argmax is None else argmax,
        )
    d_times, d_kernel, d_rec = lib.keras_spiking_event_prop_backward(
        times_in,
        kernel,
        rec,
        _kinetics_vector(kinetics),
        tf.constant(0.0 if min_slope is None else min_slope, tf.float64),
        *spike_args,
        *readout_args,
        steps=steps,
        spiking=spiking,
        readout=readout or "max",
        interpolate=bool(interpolate),
        clamp_slope=min_slope is not None,
    )
    return d_times, d_kernel, (None if recurrent is None else d_rec)
