"""Fused neuron scans: a whole ``[batch, T, n]`` sequence in one C++ op, BPTT in another.

:func:`fused_lif_scan`, :func:`fused_cuba_lif_scan` and :func:`fused_li_scan` run
(non-recurrent) LIF, current-based LIF and leaky-integrator neurons with the semantics of the
pure-TF scans in :mod:`keras_spiking.scan` (their twins: the tests check forward passes and
every gradient against them and against float64 finite differences);
:func:`fused_lif_scan_with_input` fuses the event-driven synaptic input into the LIF scan.
The surrogate is passed to the backward kernel by its registry name
(:func:`keras_spiking.surrogates.registered_name`); a layer asks
:func:`keras_spiking.ops.dispatch.surrogate_problem` before it calls them.
"""

from __future__ import annotations

import tensorflow as tf

from keras_spiking import surrogates
from keras_spiking.ops import library
from keras_spiking.ops.dispatch import (
    as_matrix,
    density_cutoff,
    input_density,
    record_call,
    with_leading_axes,
)
from keras_spiking.ops.library import OpLibraryError
from keras_spiking.ops.synaptic import kernel_gradient, no_events, synaptic_input
from keras_spiking.surrogates import Surrogate


def _zeros_if_none(grad, like):
    return tf.zeros_like(like) if grad is None else grad


def surrogate_name(surrogate: Surrogate) -> str:
    """The kernels' name of ``surrogate``; OpLibraryError for one they do not implement."""
    name = surrogates.registered_name(surrogate)
    if name is None:
        raise OpLibraryError(
            f"keras_spiking custom ops: the fused scans implement the registered surrogates "
            f"only ({', '.join(surrogates.available())}), got {surrogate!r}"
        )
    return name


def _last_spikes(spikes, s0):
    steps = spikes.shape[1]
    if steps is not None:
        return spikes[:, -1] if steps > 0 else s0
    return tf.cond(tf.shape(spikes)[1] > 0, lambda: spikes[:, -1], lambda: s0)


def fused_lif_scan(
    currents,
    v0,
    s0,
    beta,
    *,
    threshold: float,
    surrogate: Surrogate,
    reset: str = "subtract",
    detach_reset: bool = True,
    decay_grad: bool = True,
):
    """Fused-kernel twin of :func:`keras_spiking.scan.lif_scan` without recurrent weights.

    Args:
        currents: ``[batch, T, n]`` input currents.
        v0: initial membrane ``[batch, n]``.
        s0: initial spikes ``[batch, n]`` (returned as the final spikes when T = 0).
        beta: membrane decay per step ``[n]``.
        threshold: firing threshold > 0.
        surrogate: a registered surrogate (``KERNEL_SURROGATES``).
        reset: "subtract" or "zero".
        detach_reset: no gradient through the reset term.
        decay_grad: compute the gradient of ``beta`` (else zeros).

    Returns:
        ``(spikes [batch, T, n], v_last [batch, n], s_last [batch, n])``.
    """
    lib = library.load()
    record_call("fused_lif_scan")
    kernel_surrogate = surrogate_name(surrogate)
    theta = tf.constant(threshold, currents.dtype)

    @tf.custom_gradient
    def scan(currents, v0, beta):
        spikes, membrane, v_last = lib.keras_spiking_lif_scan(
            currents, v0, beta, theta, reset=reset
        )

        def grad(g_spikes, g_v_last):
            return lib.keras_spiking_lif_scan_grad(
                _zeros_if_none(g_spikes, spikes),
                _zeros_if_none(g_v_last, v_last),
                membrane,
                v0,
                beta,
                theta,
                reset=reset,
                detach_reset=detach_reset,
                surrogate=kernel_surrogate,
                scale=surrogate.scale,
                decay_grad=decay_grad,
            )

        return (spikes, v_last), grad

    spikes, v_last = scan(currents, v0, beta)
    return spikes, v_last, _last_spikes(spikes, s0)


def fused_lif_scan_with_input(
    inputs,
    kernel,
    v0,
    s0,
    beta,
    *,
    threshold: float,
    surrogate: Surrogate,
    reset: str = "subtract",
    detach_reset: bool = True,
    decay_grad: bool = True,
):
    """:func:`fused_lif_scan` of the synaptic input ``inputs @ kernel``, fused where it is sparse.

    Below the density cutoff of :func:`synaptic_input` one kernel computes each step's input
    current from the active inputs and runs the LIF update on it (the ``[batch, T, n]``
    currents never go through memory); above it, ``tf.matmul`` and the LIF scan kernel. The
    gradient is the LIF BPTT kernel, then the weight gradient of the branch taken (the event
    kernel on the active inputs the forward kernel recorded, or ``tf.matmul``) and the dense
    input gradient. Same numbers as
    ``fused_lif_scan(synaptic_input(inputs, kernel), ...)``.

    Args:
        inputs: ``[batch, T, n_in]`` input spikes (any values; zeros are skipped).
        kernel: ``[n_in, n]`` synaptic weights.
        v0: initial membrane ``[batch, n]``.
        s0: initial spikes ``[batch, n]`` (returned as the final spikes when T = 0).
        beta: membrane decay per step ``[n]``.
        threshold: firing threshold > 0.
        surrogate: a registered surrogate (``KERNEL_SURROGATES``).
        reset: "subtract" or "zero".
        detach_reset: no gradient through the reset term.
        decay_grad: compute the gradient of ``beta`` (else zeros).

    Returns:
        ``(spikes [batch, T, n], v_last [batch, n], s_last [batch, n])``.
    """
    kernel = tf.cast(kernel, inputs.dtype)
    cutoff = density_cutoff(kernel.shape[-1])
    options = dict(
        threshold=threshold,
        surrogate=surrogate,
        reset=reset,
        detach_reset=detach_reset,
        decay_grad=decay_grad,
    )
    if cutoff <= 0 or inputs.shape.rank != 3:
        return fused_lif_scan(synaptic_input(inputs, kernel), v0, s0, beta, **options)
    lib = library.load()
    kernel_surrogate = surrogate_name(surrogate)
    theta = tf.constant(threshold, inputs.dtype)

    @tf.custom_gradient
    def scan(inputs, kernel, v0, beta):
        flat = as_matrix(inputs)
        use_events = input_density(flat) < cutoff

        def event_branch():
            record_call("fused_lif_scan_with_input/events")
            return tuple(
                lib.keras_spiking_sparse_lif_scan(inputs, kernel, v0, beta, theta, reset=reset)
            )

        def dense_branch():
            record_call("fused_lif_scan_with_input/dense")
            currents = with_leading_axes(tf.matmul(flat, kernel), inputs, kernel)
            scanned = lib.keras_spiking_lif_scan(currents, v0, beta, theta, reset=reset)
            return (*scanned, *no_events(inputs.dtype))

        spikes, membrane, v_last, *events = tf.cond(use_events, event_branch, dense_branch)

        def grad(g_spikes, g_v_last):
            g_currents, g_v0, g_beta = lib.keras_spiking_lif_scan_grad(
                _zeros_if_none(g_spikes, spikes),
                _zeros_if_none(g_v_last, v_last),
                membrane,
                v0,
                beta,
                theta,
                reset=reset,
                detach_reset=detach_reset,
                surrogate=kernel_surrogate,
                scale=surrogate.scale,
                decay_grad=decay_grad,
            )
            g_flat = as_matrix(g_currents)
            # outside the cond, so that a first layer's unused input gradient is pruned
            g_inputs = tf.reshape(tf.matmul(g_flat, kernel, transpose_b=True), tf.shape(inputs))
            g_kernel = kernel_gradient(lib, use_events, events, flat, g_flat, kernel)
            return g_inputs, g_kernel, g_v0, g_beta

        return (spikes, v_last), grad

    spikes, v_last = scan(inputs, kernel, v0, beta)
    return spikes, v_last, _last_spikes(spikes, s0)


def fused_cuba_lif_scan(
    currents,
    i0,
    v0,
    alpha,
    beta,
    *,
    threshold: float,
    surrogate: Surrogate,
    reset: str = "subtract",
    detach_reset: bool = True,
    decay_grad: bool = True,
):
    """Fused-kernel twin of :func:`keras_spiking.scan.cuba_lif_scan` without recurrence.

    Returns:
        ``(spikes [batch, T, n], i_last [batch, n], v_last [batch, n])``.
    """
    lib = library.load()
    record_call("fused_cuba_lif_scan")
    kernel_surrogate = surrogate_name(surrogate)
    theta = tf.constant(threshold, currents.dtype)

    @tf.custom_gradient
    def scan(currents, i0, v0, alpha, beta):
        spikes, i_all, v_all, i_last, v_last = lib.keras_spiking_cuba_lif_scan(
            currents, i0, v0, alpha, beta, theta, reset=reset
        )

        def grad(g_spikes, g_i_last, g_v_last):
            return lib.keras_spiking_cuba_lif_scan_grad(
                _zeros_if_none(g_spikes, spikes),
                _zeros_if_none(g_i_last, i_last),
                _zeros_if_none(g_v_last, v_last),
                i_all,
                v_all,
                alpha,
                beta,
                theta,
                reset=reset,
                detach_reset=detach_reset,
                surrogate=kernel_surrogate,
                scale=surrogate.scale,
                decay_grad=decay_grad,
            )

        return (spikes, i_last, v_last), grad

    return scan(currents, i0, v0, alpha, beta)


def fused_li_scan(currents, v0, beta, *, decay_grad: bool = True):
    """Fused-kernel twin of :func:`keras_spiking.scan.li_scan`.

    Args:
        currents: ``[batch, T, n]`` input currents.
        v0: initial membrane ``[batch, n]``.
        beta: decay per step ``[n]``.
        decay_grad: compute the gradient of ``beta`` (else zeros).

    Returns:
        ``(v [batch, T, n], v_last [batch, n])``.
    """
    lib = library.load()
    record_call("fused_li_scan")

    @tf.custom_gradient
    def scan(currents, v0, beta):
        v_all, v_last = lib.keras_spiking_li_scan(currents, v0, beta)

        def grad(g_v_all, g_v_last):
            return lib.keras_spiking_li_scan_grad(
                _zeros_if_none(g_v_all, v_all),
                _zeros_if_none(g_v_last, v_last),
                v_all,
                v0,
                beta,
                decay_grad=decay_grad,
            )

        return (v_all, v_last), grad

    return scan(currents, v0, beta)
