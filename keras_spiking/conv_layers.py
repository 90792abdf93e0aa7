r"""Spiking convolutional layers over ``[batch, time, *spatial, channels]`` sequences.

``ConvLIF1D/2D``, ``ConvCubaLIF1D/2D`` and the readout ``ConvLI1D/2D``: the neuron models of
:mod:`keras_spiking.layers` on the output sites of a convolution (the cells are in
:mod:`keras_spiking.conv_cells`). Naming and call conventions follow
``keras.layers.ConvLSTM1D/2D`` (``filters``, ``kernel_size``, ``strides``, ``padding``,
``dilation_rate``, ``return_sequences``, ``return_state``, ``stateful``, ``go_backwards``),
with the neuron options of the dense layers (``tau_mem``, ``threshold``, ``reset``,
``surrogate``, ...).

Why a conv neuron layer and not ``TimeDistributed(Conv2D)`` followed by a neuron layer: the
neuron layers take ``[batch, time, features]``, so the maps would have to be flattened in
between and could not be stacked; and a layer that owns both the synapse and the neurons can
run the whole sequence as one conv call plus one fused scan. How it runs:

1. the synaptic input of all time steps in one conv call (time folded into the batch:
   ``[batch * time, *spatial, channels]``), on the C++ event-driven conv kernel where the
   input spikes are sparse enough (:func:`keras_spiking.ops.conv_input`), else
   ``tf.nn.convolution``;
2. only the state is scanned, on the fused scans of the dense layers (C++ or XLA-compiled
   TF), over the ``positions x filters`` neurons.

The output is shaped as maps, ``[batch, time, *spatial_out, filters]``; the states (with
``return_state`` or ``initial_state``) as ``[batch, *spatial_out, filters]``.

Example (the network of Yang et al. 2021, 15C5-P2-40C5-P2-300-10, on images held for 5 steps)::

    model = keras.Sequential([
        keras.Input((28, 28, 1)),
        keras_spiking.layers.RepeatSteps(5),
        keras_spiking.layers.ConvLIF2D(15, 5),
        keras_spiking.layers.SumPooling2D(2),
        keras_spiking.layers.ConvLIF2D(40, 5),
        keras_spiking.layers.SumPooling2D(2),
        keras_spiking.layers.SpatialFlatten(),
        keras_spiking.layers.LIF(300),
        keras_spiking.layers.LI(10),
    ])
"""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf

from keras_spiking import conv_cells, layers, silence


class ConvNeurons:
    """Mixin for the neuron layers of :mod:`keras_spiking.layers`: a conv synapse.

    Args:
        filters: number of feature maps (output channels); the time constants, the bias and
            the trainable time constants are per filter.
        kernel_size: int or tuple of ``rank`` ints.
        strides: int or tuple (default 1).
        padding: ``"valid"`` (default) or ``"same"`` (as ``keras.layers.Conv2D``).
        dilation_rate: int or tuple (default 1).
        groups: feature groups (default 1): input channels and ``filters`` divisible by it.
        kernel_initializer, bias_initializer, kernel_regularizer, bias_regularizer,
        kernel_constraint, bias_constraint: as in ``keras.layers.Conv2D``.
        **kwargs: the neuron and sequence options of the dense layer.
    """

    rank = 2

    def __init__(
        self,
        filters: int,
        kernel_size,
        *,
        strides=1,
        padding: str = "valid",
        dilation_rate=1,
        groups: int = 1,
        **kwargs,
    ):
        owner = type(self).__name__
        if "units" in kwargs:
            raise TypeError(f"{owner}: pass the number of feature maps as `filters`, not `units`")
        if kwargs.get("gradient", "surrogate") != "surrogate":
            raise ValueError(
                f"{owner}: only gradient='surrogate' is supported by the conv layers, got "
                f"gradient={kwargs['gradient']!r} (EventProp has dense layers only: "
                "keras_spiking.layers.CubaLIF(gradient='eventprop') after a SpatialFlatten)"
            )
        kwargs.pop("rank", None)  # a layer's rank is its class's
        super().__init__(
            filters,
            rank=self.rank,
            kernel_size=kernel_size,
            strides=strides,
            padding=padding,
            dilation_rate=dilation_rate,
            groups=groups,
            **kwargs,
        )
        self.filters = self.cell.filters

    @property
    def _step_rank(self) -> int:
        """Rank of one step: ``[batch, *spatial, channels]``."""
        return self.rank + 2

    # ---- shapes --------------------------------------------------------------------------
    def _expected(self) -> str:
        spatial = "length" if self.rank == 1 else "height, width"
        return f"[batch, time, {spatial}, channels]"

    def _no_time_axis(self, shape: tuple) -> str:
        return (
            f"{type(self).__name__} ({self.name}) expects inputs of shape {self._expected()}, got "
            f"shape {shape} (no time axis). For a static input held over T steps put "
            "keras_spiking.layers.RepeatSteps(T) before it; for spikes, an encoder "
            "(keras_spiking.encoders.RateEncoder / LatencyEncoder take any shape); for one step "
            "at a time, stateful=True (a stateful layer takes one step without the time axis)."
        )

    def build(self, input_shape):
        shape = tuple(input_shape)
        if len(shape) == self._step_rank:
            if not self.stateful:
                raise ValueError(self._no_time_axis(shape))
            shape = (shape[0], 1, *shape[1:])
        if len(shape) != self.rank + 3:
            raise ValueError(
                f"{type(self).__name__} ({self.name}) expects inputs of shape "
                f"{self._expected()}, got shape {shape}"
            )
        self.cell.build(shape)
        self.units = self.cell.neurons
        self.input_spec = keras.layers.InputSpec(
            axes={-1 - i: dim for i, dim in enumerate(reversed(shape[2:]))}
        )
        self._build_stored_states(shape)
        self.built = True

    def _check_rank(self, inputs):
        if inputs.shape.rank != self.rank + 3:
            raise ValueError(
                f"{type(self).__name__} ({self.name}) expects inputs of shape "
                f"{self._expected()}, got shape {tuple(inputs.shape)}"
            )
        if not self.return_sequences and inputs.shape[1] == 0:
            raise ValueError(
                f"{type(self).__name__}(return_sequences=False) needs at least one time step, "
                f"got inputs of shape {tuple(inputs.shape)}"
            )

    def _to_maps(self, flat):
        """``[..., neurons]`` -> ``[..., *spatial_out, filters]``."""
        maps = tf.reshape(flat, tf.concat([tf.shape(flat)[:-1], self.cell.map_shape], axis=0))
        return tf.ensure_shape(maps, [*flat.shape[:-1], *self.cell.map_shape])

    def _initial_states(self, inputs, initial_state):
        if initial_state is not None:
            if not isinstance(initial_state, (list, tuple)):
                initial_state = [initial_state]
            flat = []
            for name, state in zip(self.state_names, initial_state):
                state = tf.convert_to_tensor(state)
                if tuple(state.shape[1:]) != tuple(self.cell.map_shape):
                    raise ValueError(
                        f"{type(self).__name__} ({self.name}): initial state {name!r} must have "
                        f"shape [batch, {', '.join(map(str, self.cell.map_shape))}], got "
                        f"{tuple(state.shape)}"
                    )
                flat.append(tf.reshape(state, [-1, self.units]))
            initial_state = flat + list(initial_state[len(flat) :])
        return super()._initial_states(inputs, initial_state)

    def call(self, inputs, initial_state=None, mask=None, training=None):
        result = super().call(inputs, initial_state=initial_state, mask=mask, training=training)
        outputs, states = (result[0], result[1:]) if self.return_state else (result, [])
        outputs = self._to_maps(outputs)
        if self.spiking:
            silence.tag_spikes(outputs, self)
        if self.return_state:
            return [outputs, *[self._to_maps(state) for state in states]]
        return outputs

    def compute_output_shape(self, inputs_shape, initial_state_shape=None):
        inputs_shape = tuple(inputs_shape)
        map_shape = self.cell.output_map_shape(inputs_shape[-(self.rank + 1) :])
        batch = inputs_shape[0]
        state = (batch, *map_shape)
        if len(inputs_shape) == self._step_rank or not self.return_sequences:
            output = state
        else:
            output = (batch, inputs_shape[1], *map_shape)
        if self.return_state:  # a tuple, as keras.layers.ConvLSTM2D
            return (output, *[state for _ in self.state_names])
        return output

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.pop("rank", None)
        config.pop("units", None)
        return config


@keras.saving.register_keras_serializable(package="keras_spiking")
class ConvLIF1D(ConvNeurons, layers.LIF):
    """LIF neurons on the output sites of a convolution.

    Inputs ``[batch, time, length, channels]``.

    The dynamics of :class:`keras_spiking.layers.LIF` (equations there) with ``x[t] W``
    replaced by the convolution of step ``t``'s map (:class:`keras_spiking.conv_cells.ConvLIFCell`);
    one neuron per output position and filter; time constants and bias per filter.

    Args:
        filters, kernel_size, strides, padding, dilation_rate, groups, kernel_constraint,
        bias_constraint: as ``keras.layers.Conv1D`` (see :class:`ConvNeurons`).
        **kwargs: the options of :class:`keras_spiking.layers.LIF` except ``units`` and
            ``recurrent``.

    Returns:
        Spikes (0/1) ``[batch, time, length_out, filters]`` (or the last step), then the
        states ``[batch, length_out, filters]`` if ``return_state``.
    """

    cell_class = conv_cells.ConvLIFCell
    rank = 1


@keras.saving.register_keras_serializable(package="keras_spiking")
class ConvLIF2D(ConvNeurons, layers.LIF):
    """LIF neurons on the output sites of a convolution.

    Inputs ``[batch, time, height, width, channels]``.

    The dynamics of :class:`keras_spiking.layers.LIF` (equations there) with ``x[t] W``
    replaced by the convolution of step ``t``'s map (:class:`keras_spiking.conv_cells.ConvLIFCell`);
    one neuron per output position and filter; time constants and bias per filter.

    Args:
        filters, kernel_size, strides, padding, dilation_rate, groups, kernel_constraint,
        bias_constraint: as ``keras.layers.Conv2D`` (see :class:`ConvNeurons`).
        **kwargs: the options of :class:`keras_spiking.layers.LIF` except ``units`` and
            ``recurrent``.

    Returns:
        Spikes (0/1) ``[batch, time, height_out, width_out, filters]`` (or the last step), then the
        states ``[batch, height_out, width_out, filters]`` if ``return_state``.
    """

    cell_class = conv_cells.ConvLIFCell
    rank = 2


@keras.saving.register_keras_serializable(package="keras_spiking")
class ConvCubaLIF1D(ConvNeurons, layers.CubaLIF):
    """Current-based LIF neurons on the output sites of a convolution.

    Inputs ``[batch, time, length, channels]``.

    The dynamics of :class:`keras_spiking.layers.CubaLIF` (equations there) with ``x[t] W``
    replaced by the convolution of step ``t``'s map
    (:class:`keras_spiking.conv_cells.ConvCubaLIFCell`); one neuron per output position and
    filter; time constants and bias per filter.

    Args:
        filters, kernel_size, strides, padding, dilation_rate, groups, kernel_constraint,
        bias_constraint: as ``keras.layers.Conv1D`` (see :class:`ConvNeurons`).
        **kwargs: the options of :class:`keras_spiking.layers.CubaLIF` except ``units`` and
            ``recurrent``.

    Returns:
        Spikes (0/1) ``[batch, time, length_out, filters]`` (or the last step), then the
        states ``[batch, length_out, filters]`` if ``return_state``.
    """

    cell_class = conv_cells.ConvCubaLIFCell
    rank = 1


@keras.saving.register_keras_serializable(package="keras_spiking")
class ConvCubaLIF2D(ConvNeurons, layers.CubaLIF):
    """Current-based LIF neurons on the output sites of a convolution.

    Inputs ``[batch, time, height, width, channels]``.

    The dynamics of :class:`keras_spiking.layers.CubaLIF` (equations there) with ``x[t] W``
    replaced by the convolution of step ``t``'s map
    (:class:`keras_spiking.conv_cells.ConvCubaLIFCell`); one neuron per output position and
    filter; time constants and bias per filter.

    Args:
        filters, kernel_size, strides, padding, dilation_rate, groups, kernel_constraint,
        bias_constraint: as ``keras.layers.Conv2D`` (see :class:`ConvNeurons`).
        **kwargs: the options of :class:`keras_spiking.layers.CubaLIF` except ``units`` and
            ``recurrent``.

    Returns:
        Spikes (0/1) ``[batch, time, height_out, width_out, filters]`` (or the last step), then the
        states ``[batch, height_out, width_out, filters]`` if ``return_state``.
    """

    cell_class = conv_cells.ConvCubaLIFCell
    rank = 2


@keras.saving.register_keras_serializable(package="keras_spiking")
class ConvLI1D(ConvNeurons, layers.LI):
    """Leaky-integrator (non-spiking) neurons on the output sites of a convolution.

    Inputs ``[batch, time, length, channels]``.

    The dynamics of :class:`keras_spiking.layers.LI` (equations there) with ``x[t] W``
    replaced by the convolution of step ``t``'s map (:class:`keras_spiking.conv_cells.ConvLICell`);
    one neuron per output position and filter; time constants and bias per filter.

    Args:
        filters, kernel_size, strides, padding, dilation_rate, groups, kernel_constraint,
        bias_constraint: as ``keras.layers.Conv1D`` (see :class:`ConvNeurons`).
        **kwargs: the options of :class:`keras_spiking.layers.LI` except ``units`` and
            ``recurrent``.

    Returns:
        Membrane potentials ``[batch, time, length_out, filters]`` (or the last step), then the
        states ``[batch, length_out, filters]`` if ``return_state``.
    """

    cell_class = conv_cells.ConvLICell
    rank = 1


@keras.saving.register_keras_serializable(package="keras_spiking")
class ConvLI2D(ConvNeurons, layers.LI):
    """Leaky-integrator (non-spiking) neurons on the output sites of a convolution.

    Inputs ``[batch, time, height, width, channels]``.

    The dynamics of :class:`keras_spiking.layers.LI` (equations there) with ``x[t] W``
    replaced by the convolution of step ``t``'s map (:class:`keras_spiking.conv_cells.ConvLICell`);
    one neuron per output position and filter; time constants and bias per filter.

    Args:
        filters, kernel_size, strides, padding, dilation_rate, groups, kernel_constraint,
        bias_constraint: as ``keras.layers.Conv2D`` (see :class:`ConvNeurons`).
        **kwargs: the options of :class:`keras_spiking.layers.LI` except ``units`` and
            ``recurrent``.

    Returns:
        Membrane potentials ``[batch, time, height_out, width_out, filters]`` (or the last
        step), then the states ``[batch, height_out, width_out, filters]`` if ``return_state``.
    """

    cell_class = conv_cells.ConvLICell
    rank = 2


__all__ = [
    "ConvNeurons",
    "ConvLIF1D",
    "ConvLIF2D",
    "ConvCubaLIF1D",
    "ConvCubaLIF2D",
    "ConvLI1D",
    "ConvLI2D",
]
