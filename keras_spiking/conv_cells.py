r"""Neuron cells whose synapse is a convolution: conv LIF, conv CubaLIF and conv LI.

A conv cell is the dense cell of :mod:`keras_spiking.cells` with its feed-forward product
``x W`` replaced by a convolution over the spatial axes of ``x [..., *spatial, channels]``
(channels last, cross-correlation, the arguments and output sizes of ``keras.layers.Conv1D``
/ ``Conv2D``):

.. math::  I[t]_{p, f} = \sum_{k, c} x[t]_{s p + d k - \text{pad},\, c}\; W_{k, c, f} + b_f

for output position ``p``, filter ``f``, kernel offset ``k`` (stride ``s``, dilation ``d``).
The neurons are the ``positions x filters`` output sites; their dynamics are the dense cell's,
unchanged. What is shared per filter, as weights are shared by the convolution: the bias and
the time constants (``tau_mem``, ``tau_syn``; trainable ones are one ``log_tau`` per filter),
broadcast over the positions.

States are flat ``[batch, neurons]`` tensors (``neurons = prod(spatial_out) * filters``, in
the row-major order of ``[*spatial_out, filters]``), so every fused scan of the dense layers
runs them unchanged; the conv layers (:mod:`keras_spiking.conv_layers`) show them to the user
as maps ``[batch, *spatial_out, filters]``.
"""

from __future__ import annotations

import math
from typing import Any

import keras
import tensorflow as tf

from keras_spiking import _validation, cells, ops

PADDINGS = ("valid", "same")


def _int_tuple(name: str, value, rank: int, owner: str) -> tuple[int, ...]:
    """An int or ``rank`` ints, each >= 1, as a tuple (Keras' conv argument convention)."""
    values = (value,) * rank if isinstance(value, int) and not isinstance(value, bool) else value
    try:
        values = tuple(values)
    except TypeError:
        raise TypeError(
            f"{owner}: `{name}` must be an int or a tuple of {rank} ints, got {value!r}"
        ) from None
    if len(values) != rank or any(
        isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in values
    ):
        raise ValueError(
            f"{owner}: `{name}` must be an int >= 1 or a tuple of {rank} such ints, got {value!r}"
        )
    return values


def conv_output_length(size: int, kernel: int, stride: int, dilation: int, padding: str) -> int:
    """Output length of one spatial axis, as Keras' conv layers compute it."""
    span = (kernel - 1) * dilation + 1
    if padding == "same":
        return math.ceil(size / stride)
    return (size - span) // stride + 1 if size >= span else 0


#: Attribute of a tensor made by ``RepeatSteps``: the ``[batch, ...]`` input it holds for T
#: steps (see :func:`held_input`).
_HELD_INPUT = "_keras_spiking_held_input"


def tag_held_input(repeated: tf.Tensor, held: tf.Tensor) -> None:
    """Marks ``repeated [batch, T, ...]`` as ``held [batch, ...]`` repeated over time."""
    try:
        setattr(repeated, _HELD_INPUT, held)
    except AttributeError:  # a tensor type without attributes: no shortcut, same numbers
        pass


def held_input(inputs: tf.Tensor) -> tf.Tensor | None:
    """The ``[batch, ...]`` tensor that ``inputs [batch, T, ...]`` repeats at every step.

    None unless ``inputs`` is the unchanged output of ``RepeatSteps``.
    """
    held = getattr(inputs, _HELD_INPUT, None)
    if held is None or held.shape.rank != inputs.shape.rank - 1:
        return None
    return held


class ConvSynapse:
    """Mixin for :class:`keras_spiking.cells.NeuronCell` subclasses: a conv synapse.

    Args:
        filters: number of output channels (the time constants are per filter).
        rank: number of spatial axes (1 or 2).
        kernel_size: int or tuple of ``rank`` ints.
        strides: int or tuple (default 1).
        padding: ``"valid"`` (default) or ``"same"``.
        dilation_rate: int or tuple (default 1); strides and dilation > 1 together are refused
            (as Keras).
        groups: feature groups: input channels and ``filters`` divisible by it (default 1).
        kernel_constraint, bias_constraint: Keras constraints (applied by the optimizer).
        **kwargs: the dense cell's neuron options (``recurrent`` is refused: a conv layer has
            no recurrent weights).
    """

    fused_input = False

    def __init__(
        self,
        filters: int,
        *,
        rank: int,
        kernel_size,
        strides=1,
        padding: str = "valid",
        dilation_rate=1,
        groups: int = 1,
        kernel_constraint=None,
        bias_constraint=None,
        **kwargs,
    ):
        owner = type(self).__name__
        # checked here so that the error names `filters` (the dense cell calls it `units`)
        # and the layer the user wrote
        _validation.positive_int("filters", filters, self._constructing_layer_name())
        if kwargs.get("recurrent"):
            raise ValueError(
                f"{owner}: `recurrent=True` is not supported by the conv layers (no recurrent "
                "weights between feature maps); use a dense LIF(recurrent=True) after a "
                "SpatialFlatten"
            )
        kwargs.pop("recurrent", None)
        if rank not in (1, 2):
            raise ValueError(f"{owner}: `rank` must be 1 or 2, got {rank!r}")
        super().__init__(filters, **kwargs)
        self.rank = rank
        self.filters = self.units
        self.kernel_size = _int_tuple("kernel_size", kernel_size, rank, owner)
        self.strides = _int_tuple("strides", strides, rank, owner)
        self.dilation_rate = _int_tuple("dilation_rate", dilation_rate, rank, owner)
        if max(self.strides) > 1 and max(self.dilation_rate) > 1:
            raise ValueError(
                f"{owner}: strides > 1 and dilation_rate > 1 together are not supported (as in "
                f"Keras), got strides={self.strides}, dilation_rate={self.dilation_rate}"
            )
        if not isinstance(padding, str) or padding.lower() not in PADDINGS:
            raise ValueError(f"{owner}: `padding` must be 'valid' or 'same', got {padding!r}")
        self.padding = padding.lower()
        if isinstance(groups, bool) or not isinstance(groups, int) or groups < 1:
            raise ValueError(f"{owner}: `groups` must be an int >= 1, got {groups!r}")
        if self.filters % groups:
            raise ValueError(
                f"{owner}: `filters` ({self.filters}) must be divisible by `groups` ({groups})"
            )
        self.groups = groups
        self.kernel_constraint = keras.constraints.get(kernel_constraint)
        self.bias_constraint = keras.constraints.get(bias_constraint)
        self.input_map_shape: tuple[int, ...] | None = None  # [*spatial, channels], at build
        self.map_shape: tuple[int, ...] | None = None  # [*spatial_out, filters], at build

    # ---- shapes --------------------------------------------------------------------------
    @property
    def positions(self) -> int:
        """Number of output positions ``prod(spatial_out)`` (after build)."""
        return math.prod(self.map_shape[:-1])

    @property
    def neurons(self) -> int:
        """Number of neurons ``positions * filters`` (after build)."""
        return math.prod(self.map_shape)

    def output_map_shape(self, input_map_shape) -> tuple[int, ...]:
        """``[*spatial_out, filters]`` for one step's ``[*spatial, channels]``; checks it."""
        owner = type(self).__name__
        input_map_shape = tuple(input_map_shape)
        if len(input_map_shape) != self.rank + 1:
            raise ValueError(
                f"{owner}: one step of the input must be [*spatial ({self.rank} axes), channels], "
                f"got {input_map_shape}"
            )
        if any(dim is None for dim in input_map_shape):
            raise ValueError(
                f"{owner}: the spatial and channel axes of the input must be known (the neurons "
                f"are the output sites), got one step of shape {input_map_shape}"
            )
        channels = input_map_shape[-1]
        if channels % self.groups:
            raise ValueError(
                f"{owner}: the input channels ({channels}) must be divisible by `groups` "
                f"({self.groups})"
            )
        spatial = [
            conv_output_length(n, k, s, d, self.padding)
            for n, k, s, d in zip(
                input_map_shape[:-1], self.kernel_size, self.strides, self.dilation_rate
            )
        ]
        if min(spatial) < 1:
            raise ValueError(
                f"{owner}: the kernel (kernel_size={self.kernel_size}, dilation_rate="
                f"{self.dilation_rate}) does not fit the input's spatial shape "
                f"{input_map_shape[:-1]} with padding='valid'; use a smaller kernel or "
                "padding='same'"
            )
        return (*spatial, self.filters)

    # ---- weights -------------------------------------------------------------------------
    def _build_synapse(self, input_shape) -> None:
        """``kernel [*kernel_size, channels // groups, filters]`` and ``bias [filters]``.

        ``input_shape`` ends with one step's ``[*spatial, channels]`` (leading axes ignored).
        """
        input_map_shape = tuple(input_shape)[-(self.rank + 1) :]
        self.map_shape = self.output_map_shape(input_map_shape)
        self.input_map_shape = input_map_shape
        channels = input_map_shape[-1]
        self.kernel = self.add_weight(
            shape=(*self.kernel_size, channels // self.groups, self.filters),
            initializer=self.kernel_initializer,
            regularizer=self.kernel_regularizer,
            constraint=self.kernel_constraint,
            name="kernel",
        )
        self.recurrent_kernel = None
        self.bias = None
        if self.use_bias:
            self.bias = self.add_weight(
                shape=(self.filters,),
                initializer=self.bias_initializer,
                regularizer=self.bias_regularizer,
                constraint=self.bias_constraint,
                name="bias",
            )

    # ---- dynamics ------------------------------------------------------------------------
    def input_current(self, inputs, matmul=None):
        """Conv synaptic input of ``inputs [..., *spatial, channels]`` as ``[..., neurons]``.

        The leading axes (batch, time) are folded into one batch axis for a single conv call.
        A static input held for T steps by ``RepeatSteps`` (direct input coding) is convolved
        once per sample and the current repeated over the steps: the same numbers, T times
        less conv work.

        Args:
            inputs: any number of leading axes, then one step's ``[*spatial, channels]``.
            matmul: the dense cells' hook for the event-driven product; here only whether it
                is given matters: the dispatch allows the C++ event conv kernel for this call
                (:func:`keras_spiking.ops.conv_input` then picks it by input density).
        """
        inputs = tf.convert_to_tensor(inputs)
        held = held_input(inputs) if inputs.shape.rank == self.rank + 3 else None
        if held is not None:
            # the same map at every step (RepeatSteps): convolve it once, repeat the current
            once = self.input_current(tf.cast(held, inputs.dtype), matmul)  # [batch, neurons]
            repeated = tf.tile(once[:, None], tf.stack([1, tf.shape(inputs)[1], 1]))
            return tf.ensure_shape(repeated, [*inputs.shape[:2], self.neurons])
        leading = tf.shape(inputs)[: inputs.shape.rank - self.rank - 1]
        folded = tf.reshape(inputs, [-1, *self.input_map_shape])
        current = ops.conv_input(
            folded,
            tf.cast(self.kernel, inputs.dtype),
            strides=self.strides,
            padding=self.padding,
            dilation_rate=self.dilation_rate,
            groups=self.groups,
            use_kernel=matmul is not None,
        )
        if self.bias is not None:
            current = current + tf.cast(self.bias, inputs.dtype)
        flat = tf.reshape(current, tf.concat([leading, [self.neurons]], axis=0))
        static_leading = inputs.shape[: inputs.shape.rank - self.rank - 1]
        return tf.ensure_shape(flat, [*static_leading, self.neurons])

    def decay(self, name: str) -> tf.Tensor:
        """Per-neuron decay ``[neurons]``: the per-filter decay repeated at every position."""
        return tf.tile(super().decay(name), [self.positions])

    def get_initial_state(self, batch_size=None):
        """Zero states, one flat ``[batch, neurons]`` tensor each."""
        return [tf.zeros([batch_size, self.neurons], self.compute_dtype) for _ in self.state_size]

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        for name in ("recurrent", "recurrent_initializer", "recurrent_regularizer"):
            config.pop(name, None)
        config["filters"] = config.pop("units")
        config.update(
            {
                "rank": self.rank,
                "kernel_size": self.kernel_size,
                "strides": self.strides,
                "padding": self.padding,
                "dilation_rate": self.dilation_rate,
                "groups": self.groups,
                "kernel_constraint": keras.constraints.serialize(self.kernel_constraint),
                "bias_constraint": keras.constraints.serialize(self.bias_constraint),
            }
        )
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        return cls(config.pop("filters"), **config)


def _with_conv_state_size(cell) -> None:
    """Sets a conv cell's ``state_size`` to its neuron count, known once built.

    The dense cell sets ``units`` per state, which for a conv cell is the filter count.
    """
    cell.state_size = [cell.neurons] * len(cell.state_size)


@keras.saving.register_keras_serializable(package="keras_spiking")
class ConvLIFCell(ConvSynapse, cells.LIFCell):
    """LIF neurons on the output sites of a convolution (one step; see the module docstring).

    The dynamics of :class:`keras_spiking.cells.LIFCell` with ``x W`` replaced by the conv of
    one step's map ``x [batch, *spatial, channels]``; states ``[v, S]`` flat
    ``[batch, neurons]``.
    """

    def build(self, input_shape):
        super().build(input_shape)
        _with_conv_state_size(self)


@keras.saving.register_keras_serializable(package="keras_spiking")
class ConvCubaLIFCell(ConvSynapse, cells.CubaLIFCell):
    """Current-based LIF neurons on the output sites of a convolution (one step).

    The dynamics of :class:`keras_spiking.cells.CubaLIFCell` with a conv synapse; states
    ``[I, U]`` flat ``[batch, neurons]``.
    """

    def build(self, input_shape):
        super().build(input_shape)
        _with_conv_state_size(self)


@keras.saving.register_keras_serializable(package="keras_spiking")
class ConvLICell(ConvSynapse, cells.LICell):
    """Leaky integrators on the output sites of a convolution (one step, non-spiking).

    The dynamics of :class:`keras_spiking.cells.LICell` with a conv synapse; state ``[v]`` flat
    ``[batch, neurons]``.
    """

    def build(self, input_shape):
        super().build(input_shape)
        _with_conv_state_size(self)


__all__ = ["ConvSynapse", "ConvLIFCell", "ConvCubaLIFCell", "ConvLICell", "conv_output_length"]
