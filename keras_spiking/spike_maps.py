r"""Pooling and reshaping of spike maps ``[batch, time, *spatial, channels]``, per time step.

With these a whole spiking conv network is a ``keras.Sequential``:

* :class:`RepeatSteps` holds a static input (an image) for ``T`` steps (direct input coding:
  the first layer's synaptic current is the same at every step);
* :class:`SumPooling1D`/:class:`SumPooling2D`, :class:`AveragePooling1D`/
  :class:`AveragePooling2D`, :class:`MaxPooling1D`/:class:`MaxPooling2D` pool each step's map
  over space (time and channels untouched):

  .. math::
      y[t]_{p, c} = \sum_{k \in \text{window}(p)} x[t]_{k, c} \;\text{(sum)},\quad
      \tfrac{1}{|\text{window}|}\sum \;\text{(average)},\quad \max \;\text{(max)}

  Sum pooling of spikes gives spike counts (integers, what a neuromorphic chip's synapses
  add up; NIR ``SumPool2d``); average pooling scales them by ``1 / |window|`` (NIR
  ``AvgPool2d``); max pooling of 0/1 spikes is an OR. With ``padding="same"`` the window at
  a border counts the missing (zero) entries: average pooling divides by the full window size
  (as NIR's ``AvgPool2d`` and a chip do; Keras' ``AveragePooling2D`` divides by the valid
  entries only).
* :class:`SpatialFlatten` flattens each step's map to ``[batch, time, features]`` (row-major
  over ``[*spatial, channels]``, as ``keras.layers.Flatten``) for the dense layers.
"""

from __future__ import annotations

import math
from typing import Any

import keras
import tensorflow as tf

from keras_spiking import _validation
from keras_spiking.conv_cells import PADDINGS, _int_tuple, conv_output_length, tag_held_input
from keras_spiking.sequence import time_mask


def _fold_time(inputs, rank: int, owner: str):
    """``[batch, time, *spatial, channels]`` -> ``[batch * time, *spatial, channels]``."""
    if inputs.shape.rank != rank + 3:
        spatial = "length" if rank == 1 else "height, width"
        raise ValueError(
            f"{owner} expects spike maps of shape [batch, time, {spatial}, channels], got shape "
            f"{tuple(inputs.shape)}"
        )
    return tf.reshape(inputs, [-1, *inputs.shape[2:]])


def _unfold_time(outputs, inputs):
    """Inverse of :func:`_fold_time`, with the static shape kept."""
    unfolded = tf.reshape(outputs, tf.concat([tf.shape(inputs)[:2], tf.shape(outputs)[1:]], 0))
    return tf.ensure_shape(unfolded, [*inputs.shape[:2], *outputs.shape[1:]])


class _SpikePooling(keras.layers.Layer):
    """Pooling over the spatial axes of each time step (see the module docstring).

    Args:
        pool_size: int or tuple of ``rank`` ints (default 2).
        strides: int or tuple, default ``pool_size``.
        padding: ``"valid"`` (default) or ``"same"`` (zeros beyond the border).
    """

    rank = 2
    mode = "sum"

    def __init__(self, pool_size=2, strides=None, padding: str = "valid", **kwargs):
        super().__init__(**kwargs)
        owner = type(self).__name__
        self.pool_size = _int_tuple("pool_size", pool_size, self.rank, owner)
        self.strides = (
            self.pool_size if strides is None else _int_tuple("strides", strides, self.rank, owner)
        )
        if not isinstance(padding, str) or padding.lower() not in PADDINGS:
            raise ValueError(f"{owner}: `padding` must be 'valid' or 'same', got {padding!r}")
        self.padding = padding.lower()
        self.supports_masking = True

    def _pad(self, x):
        """Explicit zero padding for ``"same"`` (as TF splits it: the extra one at the end)."""
        if self.padding == "valid":
            return x
        pads = [[0, 0]]
        for size, window, stride in zip(x.shape[1:-1], self.pool_size, self.strides):
            out = math.ceil(size / stride)
            total = max((out - 1) * stride + window - size, 0)
            pads.append([total // 2, total - total // 2])
        pads.append([0, 0])
        value = -float("inf") if self.mode == "max" else 0.0
        return tf.pad(x, pads, constant_values=value)

    def call(self, inputs):
        owner = f"{type(self).__name__} ({self.name})"
        inputs = tf.convert_to_tensor(inputs)
        folded = self._pad(_fold_time(inputs, self.rank, owner))
        if self.mode == "max":
            pooled = tf.nn.max_pool(folded, self.pool_size, self.strides, "VALID")
        else:
            pooled = tf.nn.avg_pool(folded, self.pool_size, self.strides, "VALID")
            if self.mode == "sum":
                pooled = pooled * tf.cast(math.prod(self.pool_size), pooled.dtype)
        return _unfold_time(pooled, inputs)

    def compute_output_shape(self, input_shape):
        input_shape = tuple(input_shape)
        if len(input_shape) != self.rank + 3:
            raise ValueError(
                f"{type(self).__name__} expects spike maps [batch, time, *spatial, channels] "
                f"with {self.rank} spatial axes, got shape {input_shape}"
            )
        spatial = [
            None if n is None else conv_output_length(n, k, s, 1, self.padding)
            for n, k, s in zip(input_shape[2:-1], self.pool_size, self.strides)
        ]
        if any(n is not None and n < 1 for n in spatial):
            raise ValueError(
                f"{type(self).__name__}: pool_size {self.pool_size} is larger than the spatial "
                f"shape {input_shape[2:-1]} with padding='valid'"
            )
        return (*input_shape[:2], *spatial, input_shape[-1])

    def build(self, input_shape):
        self.compute_output_shape(input_shape)  # the checks, at build
        self.built = True

    def compute_mask(self, inputs, mask=None):
        return time_mask(mask)  # [batch, time]: the spatial axes change here

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            {"pool_size": self.pool_size, "strides": self.strides, "padding": self.padding}
        )
        return config


@keras.saving.register_keras_serializable(package="keras_spiking")
class SumPooling1D(_SpikePooling):
    """Sum pooling over the length of ``[batch, time, length, channels]``, per step."""

    rank, mode = 1, "sum"


@keras.saving.register_keras_serializable(package="keras_spiking")
class SumPooling2D(_SpikePooling):
    """Sum pooling over height and width of ``[batch, time, height, width, channels]``.

    Per step: spike counts per window (see :mod:`keras_spiking.spike_maps`).
    """

    rank, mode = 2, "sum"


@keras.saving.register_keras_serializable(package="keras_spiking")
class AveragePooling1D(_SpikePooling):
    """Average pooling over the length of ``[batch, time, length, channels]``, per step."""

    rank, mode = 1, "average"


@keras.saving.register_keras_serializable(package="keras_spiking")
class AveragePooling2D(_SpikePooling):
    """Average pooling over height and width of ``[batch, time, height, width, channels]``.

    Per step; divides by the full window, padding included.
    """

    rank, mode = 2, "average"


@keras.saving.register_keras_serializable(package="keras_spiking")
class MaxPooling1D(_SpikePooling):
    """Max pooling over the length of ``[batch, time, length, channels]``, per step."""

    rank, mode = 1, "max"


@keras.saving.register_keras_serializable(package="keras_spiking")
class MaxPooling2D(_SpikePooling):
    """Max pooling over height and width of ``[batch, time, height, width, channels]``.

    Per step; an OR over the window for 0/1 spikes.
    """

    rank, mode = 2, "max"


@keras.saving.register_keras_serializable(package="keras_spiking")
class SpatialFlatten(keras.layers.Layer):
    """``[batch, time, *spatial, channels]`` -> ``[batch, time, prod(spatial) * channels]``.

    Keeps the batch and time axes (``keras.layers.Flatten`` would merge time into the
    features); the order is row-major over ``[*spatial, channels]``.
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.supports_masking = True

    def call(self, inputs):
        inputs = tf.convert_to_tensor(inputs)
        if inputs.shape.rank is None or inputs.shape.rank < 3:
            raise ValueError(
                f"SpatialFlatten ({self.name}) expects [batch, time, *spatial, channels], got "
                f"shape {tuple(inputs.shape)}"
            )
        features = self.compute_output_shape(inputs.shape)[-1]
        flat = tf.reshape(inputs, tf.concat([tf.shape(inputs)[:2], [-1]], 0))
        return tf.ensure_shape(flat, [*inputs.shape[:2], features])

    def compute_output_shape(self, input_shape):
        input_shape = tuple(input_shape)
        if len(input_shape) < 3:
            raise ValueError(
                f"SpatialFlatten expects [batch, time, *spatial, channels], got {input_shape}"
            )
        rest = input_shape[2:]
        features = None if any(d is None for d in rest) else math.prod(rest)
        return (*input_shape[:2], features)

    def compute_mask(self, inputs, mask=None):
        return time_mask(mask)  # [batch, time]: the spatial axes change here


@keras.saving.register_keras_serializable(package="keras_spiking")
class RepeatSteps(keras.layers.Layer):
    """Holds a static input for ``num_steps`` time steps.

    ``[batch, ...]`` -> ``[batch, num_steps, ...]`` (``keras.layers.RepeatVector`` for inputs
    of any rank).

    Direct input coding: the first spiking layer then receives the same input current at
    every step (as in Yang et al. 2021 and most conv SNNs on static images).

    Args:
        num_steps: number of time steps ``T`` >= 1.
    """

    def __init__(self, num_steps: int, **kwargs):
        super().__init__(**kwargs)
        self.num_steps = _validation.positive_int("num_steps", num_steps, "RepeatSteps")

    def call(self, inputs):
        inputs = tf.convert_to_tensor(inputs)
        if inputs.shape.rank is None or inputs.shape.rank < 2:
            raise ValueError(
                f"RepeatSteps ({self.name}) expects [batch, ...], got shape {tuple(inputs.shape)}"
            )
        multiples = [1, self.num_steps] + [1] * (inputs.shape.rank - 1)
        repeated = tf.tile(tf.expand_dims(inputs, 1), multiples)
        # a conv layer that receives this tensor unchanged convolves `inputs` once
        tag_held_input(repeated, inputs)
        return repeated

    def compute_output_shape(self, input_shape):
        input_shape = tuple(input_shape)
        return (input_shape[0], self.num_steps, *input_shape[1:])

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config["num_steps"] = self.num_steps
        return config


__all__ = [
    "RepeatSteps",
    "SumPooling1D",
    "SumPooling2D",
    "AveragePooling1D",
    "AveragePooling2D",
    "MaxPooling1D",
    "MaxPooling2D",
    "SpatialFlatten",
]
