r"""The dense synaptic current ``x W`` over the last axis: the layers' default product.

The cells compute the feed-forward input of all time steps with it (one matmul for
``[batch, T, features]``), and it is the pure-TF twin of the event-driven kernels
:func:`keras_spiking.ops.sparse_spike_matmul` and :func:`keras_spiking.ops.synaptic_input`.
"""

from __future__ import annotations

import tensorflow as tf

from keras_spiking.ops.dispatch import as_matrix, with_leading_axes


def dense_current(inputs: tf.Tensor, kernel: tf.Tensor) -> tf.Tensor:
    r"""Synaptic current :math:`I = x W` over the last axis of ``inputs``, by ``tf.matmul``.

    Args:
        inputs: ``[..., n_in]`` (any rank >= 2; empty shapes allowed), e.g. spikes.
        kernel: ``[n_in, n_out]`` weights (cast to the inputs' dtype).

    Returns:
        ``[..., n_out]``.
    """
    inputs = tf.convert_to_tensor(inputs)
    kernel = tf.cast(kernel, inputs.dtype)
    if inputs.shape.rank == 2:
        return tf.matmul(inputs, kernel)
    return with_leading_axes(tf.matmul(as_matrix(inputs), kernel), inputs, kernel)


def add_kernel(layer, input_shape, initializer, regularizer=None):
    """Adds the synaptic weights ``kernel [features, layer.units]`` to a cell's ``build``.

    Raises:
        ValueError: the feature axis of ``input_shape`` is unknown (names the layer).
    """
    input_dim = input_shape[-1]
    if input_dim is None:
        raise ValueError(
            f"{type(layer).__name__}: the last (feature) axis of the input must be known, "
            f"got input shape {tuple(input_shape)}"
        )
    return layer.add_weight(
        shape=(input_dim, layer.units),
        initializer=initializer,
        regularizer=regularizer,
        name="kernel",
    )
