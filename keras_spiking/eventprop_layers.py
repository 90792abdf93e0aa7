r"""Keras layers trained with EventProp (exact event-based gradients).

The layers pass **spike-time tensors** ``[batch, neurons, slots]`` (seconds, sorted along the
slots, ``+inf`` = no spike) instead of ``[batch, time, neurons]`` spike trains, so neither the
activations between layers nor what the backward pass keeps grow with the number of time
steps: memory grows with the number of spikes. Inputs come from
:func:`keras_spiking.encoders.latency_times` (or any spike-time tensor).

Example (Wunderlich & Pehle's Yin-Yang network)::

    model = keras.Sequential([
        keras.Input((5, 1)),   # (x, y, 1 - x, 1 - y, bias) spike times, one slot each
        keras_spiking.layers.EventPropCubaLIF(200, steps=60, max_spikes=8, min_slope=10.0),
        keras_spiking.layers.EventPropCubaLIF(3, steps=60, max_spikes=8, min_slope=10.0),
    ])
    model.compile("adam", keras_spiking.losses.FirstSpikeTimeCrossEntropy(silent_time=0.06),
                  metrics=[keras_spiking.metrics.FirstSpikeAccuracy()])

The equations, the grid and the gradient are documented in :mod:`keras_spiking.eventprop`.
"""

from __future__ import annotations

import math
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from keras_spiking import _validation, eventprop, initializers, ops, silence

__all__ = ["EventPropCubaLIF", "EventPropLI", "SpikeTimeDropout"]


class _EventPropBase(keras.layers.Layer):
    """Shared weights, arguments and input checks of the EventProp layers (abstract)."""

    def __init__(
        self,
        units: int,
        *,
        steps: int,
        dt: float = 1e-3,
        tau_mem: float = 20e-3,
        tau_syn: float = 5e-3,
        kernel_initializer=None,
        kernel_regularizer=None,
        check_inputs: bool = True,
        use_custom_ops: str | bool = "auto",
        input_format: str = "times",
        **kwargs,
    ):
        super().__init__(**kwargs)
        owner = type(self).__name__
        self.input_format = _validation.one_of(
            "input_format", input_format, ("times", "sequence"), owner
        )
        self.units = _validation.positive_int("units", units, owner)
        self.steps = _validation.positive_int("steps", steps, owner)  # <= 2**31 - 1
        self.dt = _validation.seconds("dt", dt, owner)
        self.tau_mem = _validation.seconds("tau_mem", tau_mem, owner)
        self.tau_syn = _validation.seconds("tau_syn", tau_syn, owner)
        _validation.time_units(owner, self.dt, tau_mem=self.tau_mem, tau_syn=self.tau_syn)
        if kernel_initializer is None:
            kernel_initializer = self._default_kernel_initializer()
        self.kernel_initializer = _validation.resolved(
            "kernel_initializer", kernel_initializer, keras.initializers.get, owner
        )
        self.kernel_regularizer = _validation.resolved(
            "kernel_regularizer", kernel_regularizer, keras.regularizers.get, owner
        )
        self.check_inputs = bool(check_inputs)
        self.use_custom_ops = ops.validate_setting(use_custom_ops)

    @staticmethod
    def _default_kernel_initializer():
        return "glorot_uniform"

    @property
    def window(self) -> float:
        """The simulated time ``steps * dt`` in seconds."""
        return self.steps * self.dt

    def _kinetics(self, threshold: float = 1.0) -> eventprop.Kinetics:
        return eventprop.Kinetics(
            tau_mem=self.tau_mem,
            tau_syn=self.tau_syn,
            threshold=threshold,
            dt=self.dt,
            steps=self.steps,
        )

    @property
    def _feature_axis(self) -> int:
        return 1 if self.input_format == "times" else 2

    def _expected_shape(self) -> str:
        if self.input_format == "times":
            return "spike times of shape [batch, inputs, slots]"
        return "an event sequence of shape [batch, time, inputs]"

    def build(self, input_shape):
        input_shape = tuple(input_shape)
        if len(input_shape) != 3 or input_shape[self._feature_axis] is None:
            raise ValueError(
                f"{type(self).__name__} expects {self._expected_shape()} with a known number "
                f"of inputs, got shape {input_shape}"
            )
        self.kernel = self.add_weight(
            shape=(input_shape[self._feature_axis], self.units),
            initializer=self.kernel_initializer,
            regularizer=self.kernel_regularizer,
            name="kernel",
        )
        axis = self._feature_axis
        self.input_spec = keras.layers.InputSpec(ndim=3, axes={axis: input_shape[axis]})
        self.built = True

    def _checked(self, inputs: tf.Tensor) -> tf.Tensor:
        """Spike times ``[batch, inputs, slots]`` in the compute dtype.

        Clear errors for impossible inputs; an event sequence (``input_format="sequence"``) is
        converted with :func:`keras_spiking.eventprop.sequence_to_times`.
        """
        if inputs.shape.rank != 3:
            raise ValueError(
                f"{type(self).__name__} expects {self._expected_shape()}, got shape "
                f"{tuple(inputs.shape)}"
            )
        times = tf.cast(inputs, self.compute_dtype)
        where = f"{type(self).__name__} ({self.name})"
        if self.input_format == "sequence":
            # a sequence longer than the window still fails the window check below
            times = eventprop.sequence_to_times(times, self.dt, check=self.check_inputs, name=where)
        if not self.check_inputs:
            return times
        # spikes of an upstream layer can land a rounding error past the window's end
        limit = self.window * (1 + 1e-6)
        finite = tf.math.is_finite(times)
        checks = [
            tf.debugging.Assert(
                tf.reduce_all(tf.logical_not(tf.math.is_nan(times))),
                [f"{where}: input spike times contain NaN"],
            ),
            tf.debugging.Assert(
                tf.reduce_all(times >= 0),
                [
                    f"{where}: input spike times must be >= 0 s (or +inf for no spike); min:",
                    tf.reduce_min(times),
                ],
            ),
            tf.debugging.Assert(
                tf.reduce_all(tf.logical_or(tf.logical_not(finite), times <= limit)),
                [
                    f"{where}: input spike times must lie in the window [0, steps * dt] = "
                    f"[0, {self.window:g}] s (or be +inf); max finite:",
                    tf.reduce_max(tf.where(finite, times, tf.zeros_like(times))),
                ],
            ),
        ]
        if times.shape[-1] is None or times.shape[-1] > 1:
            checks.append(
                tf.debugging.Assert(
                    tf.reduce_all(times[..., 1:] >= times[..., :-1]),
                    [
                        f"{where}: input spike times must be sorted along the last (slot) axis, "
                        "unused slots +inf at the end"
                    ],
                )
            )
        with tf.control_dependencies(checks):
            return tf.identity(times)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            {
                "units": self.units,
                "steps": self.steps,
                "dt": self.dt,
                "tau_mem": self.tau_mem,
                "tau_syn": self.tau_syn,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
                "kernel_regularizer": keras.regularizers.serialize(self.kernel_regularizer),
                "check_inputs": self.check_inputs,
                "use_custom_ops": self.use_custom_ops,
                "input_format": self.input_format,
            }
        )
        return config


@keras.saving.register_keras_serializable(package="keras_spiking")
class EventPropCubaLIF(_EventPropBase):
    r"""Current-based LIF neurons trained with EventProp; spike times in, spike times out.

    .. math::
        \tau_m \dot V = -V + I, \qquad \tau_s \dot I = -I, \qquad
        I \mathrel{+}= W_{i\cdot} \text{ at each input spike of } i, \qquad
        V \ge \theta \Rightarrow \text{spike}, V \leftarrow 0

    simulated on a grid of ``steps`` steps of ``dt`` seconds with the exact exponential
    solution, the spike time interpolated within its step (see
    :mod:`keras_spiking.eventprop`). The gradient is the adjoint of that forward pass: it equals
    finite differences of the loss wherever no spike appears or disappears.

    Args:
        units: number of neurons, at most ``2**31 - 1``.
        steps: number of grid steps, at most ``2**31 - 1`` (step indices are int32); the
            window is ``[0, steps * dt]``. Memory does not grow with it.
        dt: grid step in seconds (default 1 ms).
        tau_mem: membrane time constant ``tau_m`` in seconds (default 20 ms, as in the paper).
        tau_syn: synaptic time constant ``tau_s`` in seconds (default 5 ms). ``dt``, ``tau_mem``
            and ``tau_syn`` must be float32-representable (about ``1.2e-38`` to ``3.4e38``).
        threshold: ``theta`` > 0 (default 1).
        max_spikes: buffer slots per neuron and sample (default 8), at most ``2**31 - 1``: the
            output has this many slots. Memory grows with it, not with ``steps``: the spike
            buffers hold ``batch x units x max_spikes`` elements, which may not pass ``2**40``
            (a ValueError at construction for ``units x max_spikes``, and at the call once the
            batch is known).
        on_overflow: what happens when a neuron spikes more than ``max_spikes`` times:
            "raise" (default) an InvalidArgumentError, or "warn" (printed to stderr; the extra
            spikes still reset the neuron but are not passed on and get no gradient).
        recurrent: add recurrent weights ``R`` (spikes reach the layer's own neurons).
        interpolate: interpolate spike times within the step (default; the gradient is then
            exact for the gridded model). False puts spikes on the grid and uses the
            continuous-time jump ``1 / (I - theta)`` as an approximation (mlGeNN style).
        min_slope: denominator clamp: the backward uses at least ``min_slope * dt`` for the rise
            of ``V`` in a spike's step (``min_slope`` in threshold units per second, e.g. 10),
            which bounds the ``1 / (I - theta)`` blow-up at grazing crossings. None (default):
            exact.
        count_target, count_strength: spike-count regulariser, a heuristic push on every
            spike's time: ``dL/dt_k += -count_strength (c - count_target)`` for a neuron that
            spiked ``c`` times in the sample (``count_strength`` in 1/s; 0 = off).
        silent_bump: silent-neuron handling: a neuron that stays silent for the whole batch gets
            ``-silent_bump`` on the gradient of each of its input weights, so training raises
            them until it spikes (0 = off).
        kernel_initializer: default :class:`keras_spiking.initializers.FanInNormal` (a
            positive mean scaled by the fan-in, so that the neurons fire from the first
            batch: EventProp has no gradient without spikes, and Keras' zero-mean Glorot
            default leaves this layer silent on latency-coded inputs).
        recurrent_initializer, kernel_regularizer, recurrent_regularizer: as in
            ``keras.layers.SimpleRNN``.
        check_inputs: raise clear errors for NaN, negative, out-of-window or unsorted spike
            times (default True).
        use_custom_ops: "auto", True or False: the C++ kernels or the pure-TF twin.
        input_format: "times" (default): spike-time tensors; "sequence": ``[batch, time,
            inputs]`` event sequences, where a value ``phi`` in ``(0, 1]`` at step ``n`` is a
            spike at ``(n + phi) dt`` (binary spikes sit at the end of their step), as written
            by ``CubaLIF(gradient="eventprop")``.

    Call arguments:
        inputs: ``[batch, inputs, slots]`` spike times in seconds, sorted along the slots,
            ``+inf`` for none (or an event sequence, see ``input_format``).

    Returns:
        ``[batch, units, max_spikes]`` spike times in seconds, sorted, ``+inf`` for none.
    """

    def __init__(
        self,
        units: int,
        *,
        steps: int,
        threshold: float = 1.0,
        max_spikes: int = 8,
        on_overflow: str = "raise",
        recurrent: bool = False,
        interpolate: bool = True,
        min_slope: float | None = None,
        count_target: float = 0.0,
        count_strength: float = 0.0,
        silent_bump: float = 0.0,
        recurrent_initializer="orthogonal",
        recurrent_regularizer=None,
        **kwargs,
    ):
        super().__init__(units, steps=steps, **kwargs)
        owner = type(self).__name__
        self.threshold = _validation.positive_number("threshold", threshold, owner)
        self.recurrent = bool(recurrent)
        # the EventProp options, validated once by the rule that CubaLIF(gradient=...) uses
        self.rule = eventprop.EventProp(
            max_spikes=max_spikes,
            on_overflow=on_overflow,
            interpolate=interpolate,
            min_slope=min_slope,
            count_target=count_target,
            count_strength=count_strength,
            silent_bump=silent_bump,
        )
        _validation.buffer_size(
            "max_spikes",
            self.rule.max_spikes,
            {"batch": None, "units": self.units, "max_spikes": self.rule.max_spikes},
            "the spike buffers",
            owner,
        )
        self.recurrent_initializer = _validation.resolved(
            "recurrent_initializer", recurrent_initializer, keras.initializers.get, owner
        )
        self.recurrent_regularizer = _validation.resolved(
            "recurrent_regularizer", recurrent_regularizer, keras.regularizers.get, owner
        )

    def build(self, input_shape):
        super().build(input_shape)
        self.recurrent_kernel = None
        if self.recurrent:
            self.recurrent_kernel = self.add_weight(
                shape=(self.units, self.units),
                initializer=self.recurrent_initializer,
                regularizer=self.recurrent_regularizer,
                name="recurrent_kernel",
            )

    @staticmethod
    def _default_kernel_initializer():
        # no spike, no EventProp gradient: Glorot's zero-mean weights leave the few input
        # spikes of a latency code below threshold and the layer trains to chance
        return initializers.FanInNormal()

    def call(self, inputs, training=None):
        times = self._checked(inputs)
        recurrent = (
            None if self.recurrent_kernel is None else tf.convert_to_tensor(self.recurrent_kernel)
        )
        out_times = eventprop.spiking_layer(
            times,
            tf.convert_to_tensor(self.kernel),
            recurrent,
            kinetics=self._kinetics(self.threshold),
            **self.rule.options(),
            name=f"{type(self).__name__} ({self.name})",
            use_custom_ops=ops.call_setting(self.use_custom_ops, training),
        )
        if training:
            silence.check_fires(
                self,
                tf.reduce_any(tf.math.is_finite(out_times)),
                tf.shape(out_times),
                axes=("samples", "neurons", "spike slots"),
                gradient="eventprop",
            )
        return out_times

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.units, self.rule.max_spikes)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            {
                "threshold": self.threshold,
                "recurrent": self.recurrent,
                **self.rule.get_config(),
                "recurrent_initializer": keras.initializers.serialize(self.recurrent_initializer),
                "recurrent_regularizer": keras.regularizers.serialize(self.recurrent_regularizer),
            }
        )
        return config


@keras.saving.register_keras_serializable(package="keras_spiking")
class EventPropLI(_EventPropBase):
    r"""Non-spiking leaky-integrator readout trained with EventProp.

    .. math::  \tau_m \dot V = -V + I, \qquad \tau_s \dot I = -I, \qquad
        I \mathrel{+}= W_{i\cdot} \text{ at each input spike of } i

    on the same grid as :class:`EventPropCubaLIF`, read out over the window:

    - ``readout="max"``: ``max_n V(t_n)``; with ``keras.losses.SparseCategoricalCrossentropy(
      from_logits=True)`` this is the paper's MNIST loss ``-log softmax(max_t V)[label]``.
    - ``"integral"``: ``sum_n e^{-t_n / T} V(t_n) dt / T`` (``T`` the window), the
      integrated-voltage loss of Nowotny, Turner & Knight (2022), which trains better.
    - ``"last"``: ``V(T)``.
    - ``"sequence"``: ``V(t_n)`` for ``n = 1..steps``, ``[batch, steps, units]`` for any other
      voltage loss (memory then grows with ``steps``: ``batch x steps x units`` may not pass
      ``2**40`` elements, a ValueError at construction for ``steps x units`` and at the call
      once the batch is known).

    Args:
        units: number of outputs.
        steps, dt, tau_mem, tau_syn, kernel_initializer, kernel_regularizer, check_inputs,
            use_custom_ops, input_format: as in :class:`EventPropCubaLIF`.
        readout: one of "max" (default), "integral", "last", "sequence".

    Returns:
        ``[batch, units]`` (``[batch, steps, units]`` for "sequence").
    """

    def __init__(self, units: int, *, steps: int, readout: str = "max", **kwargs):
        super().__init__(units, steps=steps, **kwargs)
        owner = type(self).__name__
        self.readout = _validation.one_of("readout", readout, eventprop.READOUTS, owner)
        if self.readout == "sequence":
            _validation.buffer_size(
                "steps",
                self.steps,
                {"batch": None, "steps": self.steps, "units": self.units},
                'the "sequence" readout',
                owner,
            )

    def call(self, inputs, training=None):
        return eventprop.readout_layer(
            self._checked(inputs),
            tf.convert_to_tensor(self.kernel),
            kinetics=self._kinetics(),
            readout=self.readout,
            use_custom_ops=ops.call_setting(self.use_custom_ops, training),
            name=f"{type(self).__name__} ({self.name})",
        )

    def compute_output_shape(self, input_shape):
        if self.readout == "sequence":
            return (input_shape[0], self.steps, self.units)
        return (input_shape[0], self.units)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config["readout"] = self.readout
        return config


@keras.saving.register_keras_serializable(package="keras_spiking")
class SpikeTimeDropout(keras.layers.Layer):
    """Dropout for spike-time tensors ``[batch, neurons, slots]``.

    Each spike is removed (its time set to ``+inf``) with probability ``rate`` during
    training, and the survivors are re-sorted along the slots.

    Unlike ``keras.layers.Dropout`` nothing is rescaled: a spike is there or not (the input
    dropout of Wunderlich & Pehle's MNIST network). Identity at inference.

    Args:
        rate: probability of removing a spike, ``0 <= rate < 1``.
        seed: optional int seed (within the int64 range).
    """

    def __init__(self, rate: float, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        owner = type(self).__name__
        rate = _validation.non_negative_number("rate", rate, owner)
        if not rate < 1:
            raise ValueError(f"{owner}: `rate` must be < 1, got {rate!r}")
        if seed is not None:
            if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)):
                raise TypeError(f"{owner}: `seed` must be an integer or None, got {seed!r}")
            if not -(2**63) <= seed < 2**63:
                raise ValueError(f"{owner}: `seed` must lie in the int64 range, got {seed!r}")
            seed = int(seed)
        self.rate, self.seed = rate, seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, inputs, training=None):
        if not training or self.rate == 0:
            return inputs
        keep = keras.random.uniform(tf.shape(inputs), seed=self.seed_generator) >= self.rate
        dropped = tf.where(
            keep, inputs, tf.fill(tf.shape(inputs), tf.constant(math.inf, inputs.dtype))
        )
        return tf.sort(dropped, axis=-1)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update({"rate": self.rate, "seed": self.seed})
        return config
