r"""Event-driven synaptic input: C++ kernels that visit only the nonzero inputs.

* :func:`sparse_spike_matmul` computes ``y = x W`` of ``x: [rows, n_in]`` iterating only over
  the nonzero entries of each row, so the work is ``(active inputs) x n_out`` instead of
  ``rows x n_in x n_out``; its weight gradient ``x^T g`` likewise. Values other than 0 and 1
  are multiplied in, so the result equals ``tf.matmul`` for any input (the one difference: a
  NaN or inf weight does not reach outputs whose input for it is zero). The input gradient
  ``g W^T`` is dense (``tf.matmul``).
* :func:`synaptic_input` takes that kernel when a sample of the input is sparse enough
  (:func:`keras_spiking.ops.dispatch.density_cutoff`) and ``tf.matmul`` otherwise; in a
  training step the event kernel also returns the active inputs it found (offsets, input
  indices, values), and the weight gradient is computed from that list.
* :func:`sparse_lif_step` is one LIF step fused with its event-driven input, for streaming.

Pure-TF twins: :func:`keras_spiking.synapse.dense_current` and
:func:`keras_spiking.dynamics.dense_lif_step`.
"""

from __future__ import annotations

import tensorflow as tf

from keras_spiking.ops import library
from keras_spiking.ops.dispatch import (
    as_matrix,
    density_cutoff,
    input_density,
    record_call,
    with_leading_axes,
)


def sparse_spike_matmul(spikes: tf.Tensor, weights: tf.Tensor) -> tf.Tensor:
    """``spikes @ weights`` over the nonzero entries of ``spikes`` only (C++ kernel).

    Args:
        spikes: ``[..., n_in]`` float32/float64, typically 0/1 spikes (any values allowed).
        weights: ``[n_in, n_out]``, same dtype.

    Returns:
        ``[..., n_out]``. Gradients: weights through the event kernel, spikes densely.
    """
    lib = library.load()
    record_call("sparse_spike_matmul")
    spikes = tf.convert_to_tensor(spikes)
    weights = tf.convert_to_tensor(weights, spikes.dtype)

    @tf.custom_gradient
    def matmul(flat, weights):
        def grad(g):
            g_spikes = tf.matmul(g, weights, transpose_b=True)
            g_weights = lib.keras_spiking_sparse_spike_matmul_grad_weights(flat, g)
            return g_spikes, g_weights

        return lib.keras_spiking_sparse_spike_matmul(flat, weights), grad

    if spikes.shape.rank == 2:  # no reshapes: a streaming step stays one op
        return matmul(spikes, weights)
    return with_leading_axes(matmul(as_matrix(spikes), weights), spikes, weights)


def no_events(dtype: tf.DType) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """An empty event list (the dense branch's stand-in for the event kernels' extra outputs)."""
    return tf.zeros([0], tf.int64), tf.zeros([0], tf.int32), tf.zeros([0], dtype)


def kernel_gradient(lib, use_events, events, flat, grad, kernel):
    """``flat^T @ grad``: the weight gradient of the forward branch that was taken.

    From the event list the event kernel recorded (``flat`` unread), or by ``tf.matmul`` after
    the dense branch.
    """
    offsets, inputs, values = events
    n_in = tf.shape(kernel, out_type=tf.int64)[0]
    return tf.cond(
        use_events,
        lambda: lib.keras_spiking_sparse_events_grad_weights(offsets, inputs, values, grad, n_in),
        lambda: tf.matmul(flat, grad, transpose_a=True),
    )


def synaptic_input(inputs: tf.Tensor, kernel: tf.Tensor) -> tf.Tensor:
    """``inputs @ kernel`` by the event kernel when the inputs are sparse, else ``tf.matmul``.

    Both branches compute the same product; the choice (at least ``MIN_EVENT_OUTPUTS`` outputs
    and a sampled density below :func:`density_cutoff`) only affects speed.
    """
    kernel = tf.cast(kernel, inputs.dtype)
    cutoff = density_cutoff(kernel.shape[-1])
    if cutoff <= 0:
        record_call("synaptic_input/dense")
        return with_leading_axes(tf.matmul(as_matrix(inputs), kernel), inputs, kernel)
    lib = library.load()

    def events(flat, kernel):
        record_call("synaptic_input/events")
        return tuple(lib.keras_spiking_sparse_spike_matmul_events(flat, kernel))

    def dense(flat, kernel):
        record_call("synaptic_input/dense")
        return (tf.matmul(flat, kernel), *no_events(flat.dtype))

    @tf.custom_gradient
    def product(flat, kernel):
        use_events = input_density(flat) < cutoff
        out, *found = tf.cond(use_events, lambda: events(flat, kernel), lambda: dense(flat, kernel))

        def grad(g):
            # The input gradient stays outside the cond: a first layer's (unused) input
            # gradient is then pruned from the graph, which a branch of a cond never is.
            g_flat = tf.matmul(g, kernel, transpose_b=True)
            g_kernel = kernel_gradient(lib, use_events, found, flat, g, kernel)
            return g_flat, g_kernel

        return out, grad

    return with_leading_axes(product(as_matrix(inputs), kernel), inputs, kernel)


_SCALARS: dict[tuple[float, tf.DType], tf.Tensor] = {}


def _as_dtype(x, dtype):
    return x if getattr(x, "dtype", None) == dtype else tf.cast(x, dtype)


def scalar(value: float, dtype: tf.DType) -> tf.Tensor:
    """A scalar constant; in eager mode made once per value and dtype and reused."""
    if not tf.executing_eagerly():
        return tf.constant(value, dtype)
    key = (float(value), dtype)
    if key not in _SCALARS:
        _SCALARS[key] = tf.constant(value, dtype)
    return _SCALARS[key]


def sparse_lif_step(
    spikes: tf.Tensor,
    weights: tf.Tensor,
    v: tf.Tensor,
    beta: tf.Tensor,
    *,
    threshold: float = 1.0,
    reset: str = "subtract",
) -> tuple[tf.Tensor, tf.Tensor]:
    r"""One LIF step for streaming inference, fused with its event-driven input (one op).

    .. math::
        u = \beta v + x W, \qquad S = H(u - \theta), \qquad
        v' = u - \theta S \;\text{(subtract)} \quad\text{or}\quad u (1 - S) \;\text{(zero)}

    Only the active inputs of each row are visited (as in :func:`sparse_spike_matmul`). The op
    has no gradient: use the layers to train. Twin: :func:`keras_spiking.dynamics.dense_lif_step`.

    Args:
        spikes: ``[batch, n_in]`` input spikes (any values; zeros are skipped).
        weights: ``[n_in, n]`` synaptic weights.
        v: ``[batch, n]`` membrane after the previous step's reset.
        beta: ``[n]`` membrane decay per step.
        threshold: firing threshold > 0.
        reset: "subtract" or "zero".

    Returns:
        ``(S [batch, n], v' [batch, n])``.
    """
    lib = library.load()
    spikes = tf.convert_to_tensor(spikes)
    dtype = spikes.dtype
    # a streaming host loop calls this once per step: no cast when the dtype already matches,
    # and the threshold tensor is made once, so the step stays close to one op dispatch
    return lib.keras_spiking_sparse_lif_step(
        spikes,
        _as_dtype(weights, dtype),
        _as_dtype(v, dtype),
        _as_dtype(beta, dtype),
        scalar(threshold, dtype),
        reset=reset,
    )
