r"""Spiking Recurrent Cell (SRC) of De Geeter, Ernst & Drion: the step function and Keras cell.

Paper: "Spike-based computation using classical recurrent neural networks", arXiv 2306.03623,
Neuromorph. Comput. Eng. 2024.

The SRC is a GRU reduced to the bistable recurrent cell with constant gates (fast positive
feedback ``r``), plus a slow variable ``h_s`` that feeds back negatively (``r_s < 0``) with a
voltage-dependent time constant. Together they turn bistability into relaxation oscillations:
the cell emits pulses ("spikes") while every operation stays differentiable, so plain
backpropagation through time trains it, with no surrogate gradient. Per neuron and step ``t``:

.. math::
    i[t]   &= \alpha\, i[t-1] + W_s\, s_{in}[t]
        && \text{input integration} \\
    x[t]   &= \rho \tanh(i[t] / \rho)
        && \text{bounded input} \\
    z_s[t] &= z^{hyp} + (z^{dep} - z^{hyp})\, \sigma\big(k\,(h[t-1] - 0.5)\big)
        && \text{voltage-dependent slow gate} \\
    h[t]   &= z\, h[t-1] + (1 - z) \tanh\big(x[t] + r\, h[t-1] + r_s\, h_s[t-1] + b_h\big)
        && \text{fast variable} \\
    h_s[t] &= z_s[t]\, h_s[t-1] + (1 - z_s[t])\, h[t-1]
        && \text{slow variable} \\
    s[t]   &= \mathrm{ReLU}(h[t])
        && \text{output pulse}

Defaults: ``alpha = 0.9``, ``rho = 3``, ``r = 2``, ``r_s = -7``, ``z = 0``, ``z_hyp = 0.9``,
``z_dep = 0``, slow-gate slope ``k = 10`` (``sigma`` the logistic function), bias ``b_h``
initialised at -6 and kept <= -4. Trainable: ``W_s`` and ``b_h``. All states start at 0. With
the defaults and no input the cell rests near ``h = -0.9`` (no output); a constant input above
about 0.2 per step makes periodic pulses of 2-3 steps (inter-pulse interval about 20-25 steps).
The output ``s`` is a graded pulse in [0, 1), not a 0/1 spike.

Where each equation, default and option comes from (the paper, the authors' group's code, the
third-party re-implementation ALGORITHMS.md drew on), and what could not be verified:
``docs/src.md``. The sequence scan with its hand-written backward is in
:mod:`keras_spiking.src_scan`; the layer is :class:`keras_spiking.layers.SRC`.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import keras
import numpy as np
import tensorflow as tf

from keras_spiking import _validation, synapse

__all__ = [
    "SRCState",
    "src_step",
    "slow_gate",
    "MaxValue",
    "SpikingRecurrentCell",
    "CONSTANT_NAMES",
    "STATE_NAMES",
]


DEFAULT_BIAS = -6.0
"""Initial value of the bias ``b_h`` (every neuron at rest, far below the spiking regime)."""

STATE_NAMES = ("i", "h", "h_s")


class SRCState(NamedTuple):
    """State of an SRC population, each ``[batch, units]``.

    Attributes:
        i: integrated input current.
        h: fast variable ("membrane").
        h_s: slow variable (negative feedback).
    """

    i: tf.Tensor
    h: tf.Tensor
    h_s: tf.Tensor


@tf.custom_gradient
def _straight_through_relu(h):
    def grad(upstream):
        return upstream

    return tf.nn.relu(h), grad


def slow_gate(h_prev, *, z_hyp=0.9, z_dep=0.0, slope=10.0):
    r"""Voltage-dependent slow gate ``z_s = z_hyp + (z_dep - z_hyp) g(h[t-1] - 0.5)``.

    Args:
        h_prev: ``h[t-1]``.
        z_hyp: gate when hyperpolarised (``h`` well below 0.5): slow ``h_s``.
        z_dep: gate when depolarised (``h`` well above 0.5): fast ``h_s``.
        slope: ``g(x) = sigmoid(slope * x)`` (the paper: 10); None for the Heaviside step
            ``g(x) = H(x)`` (1 where ``x > 0``).

    Returns:
        ``z_s``, the shape of ``h_prev``.
    """
    if slope is None:
        gate = tf.cast(h_prev > 0.5, h_prev.dtype)
    else:
        gate = tf.sigmoid(slope * (h_prev - 0.5))
    return z_hyp + (z_dep - z_hyp) * gate


def src_step(
    state: SRCState,
    current,
    *,
    bias,
    alpha=0.9,
    rho=3.0,
    r=2.0,
    r_s=-7.0,
    z=0.0,
    z_hyp=0.9,
    z_dep=0.0,
    slow_gate_slope: float | None = 10.0,
    detach_recurrent: bool = False,
    straight_through: bool = False,
):
    r"""One step of a Spiking Recurrent Cell population (pure function, no Keras state).

    .. math::
        i[t] &= \alpha\, i[t-1] + I[t], \qquad x[t] = \rho \tanh(i[t] / \rho) \\
        z_s[t] &= z^{hyp} + (z^{dep} - z^{hyp})\, \sigma(k (h[t-1] - 0.5)) \\
        h[t] &= z\, h[t-1] + (1 - z) \tanh(x[t] + r\, h[t-1] + r_s\, h_s[t-1] + b_h) \\
        h_s[t] &= z_s[t]\, h_s[t-1] + (1 - z_s[t])\, h[t-1] \\
        s[t] &= \mathrm{ReLU}(h[t])

    Args:
        state: ``SRCState(i[t-1], h[t-1], h_s[t-1])``, each [batch, n].
        current: this step's synaptic input ``I[t] = W_s s_in[t]``, [batch, n].
        bias: ``b_h``, scalar or [n].
        alpha: input integration factor in [0, 1), scalar or [n].
        rho: input bound > 0, scalar or [n].
        r: fast positive feedback, scalar or [n].
        r_s: slow feedback (negative for spiking), scalar or [n].
        z: update gate of ``h`` in [0, 1], scalar or [n].
        z_hyp: slow gate at rest, in [0, 1], scalar or [n].
        z_dep: slow gate during a pulse, in [0, 1], scalar or [n].
        slow_gate_slope: slope ``k`` of the logistic slow gate (the paper: 10), or None for the
            Heaviside gate ``H(h[t-1] - 0.5)``.
        detach_recurrent: stop the gradient through ``h[t-1]`` and ``h_s[t-1]``.
        straight_through: output ``ReLU(h)`` forward with an identity gradient backward.

    Returns:
        ``(s[t], SRCState(i[t], h[t], h_s[t]))``.
    """
    i = alpha * state.i + current
    x = rho * tf.tanh(i / rho)
    h_prev, hs_prev = state.h, state.h_s
    if detach_recurrent:
        h_prev, hs_prev = tf.stop_gradient(h_prev), tf.stop_gradient(hs_prev)
    z_s = slow_gate(h_prev, z_hyp=z_hyp, z_dep=z_dep, slope=slow_gate_slope)
    h = z * h_prev + (1.0 - z) * tf.tanh(x + r * h_prev + r_s * hs_prev + bias)
    h_s = z_s * hs_prev + (1.0 - z_s) * h_prev
    s = _straight_through_relu(h) if straight_through else tf.nn.relu(h)
    return s, SRCState(i, h, h_s)


# ---- argument checks -------------------------------------------------------------------------
def _constant(name: str, value, units: int, owner: str, check, requirement: str):
    """A float, or a tuple of ``units`` floats, each finite and passing ``check``."""
    if value is None or isinstance(value, (bool, np.bool_, str)):
        raise ValueError(f"{owner}: `{name}` must be {requirement}, got {value!r}")
    if np.isscalar(value):
        try:
            number = float(value)
        except (TypeError, ValueError, OverflowError):  # ints beyond the float range too
            raise ValueError(f"{owner}: `{name}` must be {requirement}, got {value!r}") from None
        if not (math.isfinite(number) and check(number)):
            raise ValueError(f"{owner}: `{name}` must be {requirement}, got {value!r}")
        return number
    try:
        array = np.asarray(value, dtype="float64")
    except (TypeError, ValueError, OverflowError):  # ints beyond the float range too
        raise ValueError(
            f"{owner}: `{name}` must be {requirement} (a float or a list of {units} per-neuron "
            f"values), got {value!r}"
        ) from None
    if array.ndim != 1 or array.shape[0] != units:
        raise ValueError(
            f"{owner}: `{name}` must be a float or a list of {units} per-neuron values, got "
            f"shape {array.shape}"
        )
    if not all(math.isfinite(v) and check(v) for v in array):
        raise ValueError(f"{owner}: every `{name}` must be {requirement}, got {value!r}")
    return tuple(float(v) for v in array)


_CHECKS = {
    "alpha": (lambda v: 0.0 <= v < 1.0, "a number in [0, 1)"),
    "rho": (lambda v: v > 0.0, "a finite number > 0"),
    "r": (lambda v: True, "a finite number"),
    "r_s": (lambda v: True, "a finite number"),
    "z": (lambda v: 0.0 <= v <= 1.0, "a number in [0, 1]"),
    "z_hyp": (lambda v: 0.0 <= v <= 1.0, "a number in [0, 1]"),
    "z_dep": (lambda v: 0.0 <= v <= 1.0, "a number in [0, 1]"),
}
CONSTANT_NAMES = tuple(_CHECKS)


def _optional_number(name: str, value, owner: str, check, requirement: str):
    if value is None:
        return None
    if isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{owner}: `{name}` must be {requirement} or None, got {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):  # ints beyond the float range too
        raise ValueError(
            f"{owner}: `{name}` must be {requirement} or None, got {value!r}"
        ) from None
    if not (math.isfinite(number) and check(number)):
        raise ValueError(f"{owner}: `{name}` must be {requirement} or None, got {value!r}")
    return number


# ---- bias constraint -------------------------------------------------------------------------
@keras.saving.register_keras_serializable(package="keras_spiking")
class MaxValue(keras.constraints.Constraint):
    """Clips a weight from above: ``w <- min(w, max_value)`` (applied by the optimizer).

    Args:
        max_value: the upper bound (finite float).
    """

    def __init__(self, max_value: float):
        self.max_value = _optional_number(
            "max_value", max_value, "MaxValue", lambda v: True, "a finite number"
        )
        if self.max_value is None:
            raise ValueError("MaxValue: `max_value` must be a finite number, got None")

    def __call__(self, w):
        return keras.ops.minimum(w, keras.ops.cast(self.max_value, w.dtype))

    def get_config(self) -> dict[str, Any]:
        return {"max_value": self.max_value}


# ---- cell ------------------------------------------------------------------------------------
@keras.saving.register_keras_serializable(package="keras_spiking")
class SpikingRecurrentCell(keras.layers.Layer):
    r"""Spiking Recurrent Cell (De Geeter, Ernst & Drion 2024), one time step.

    .. math::
        i[t] &= \alpha\, i[t-1] + W_s\, s_{in}[t], \qquad x[t] = \rho \tanh(i[t] / \rho) \\
        z_s[t] &= z^{hyp} + (z^{dep} - z^{hyp})\, \sigma(k (h[t-1] - 0.5)) \\
        h[t] &= z\, h[t-1] + (1 - z) \tanh(x[t] + r\, h[t-1] + r_s\, h_s[t-1] + b_h) \\
        h_s[t] &= z_s[t]\, h_s[t-1] + (1 - z_s[t])\, h[t-1] \\
        s[t] &= \mathrm{ReLU}(h[t])

    Meets the ``keras.layers.RNN`` contract; see :func:`src_step` and the module docstring
    (differences from ALGORITHMS.md). Trainable weights: ``kernel`` ``W_s`` [features, units]
    and ``bias`` ``b_h`` [units].

    Args:
        units: number of neurons.
        alpha: input integration factor in [0, 1) (default 0.9), float or per neuron.
        rho: input bound > 0 (default 3), float or per neuron.
        r: fast positive feedback (default 2), float or per neuron.
        r_s: slow negative feedback (default -7), float or per neuron.
        z: update gate of ``h`` in [0, 1] (default 0), float or per neuron.
        z_hyp: slow gate at rest in [0, 1] (default 0.9), float or per neuron.
        z_dep: slow gate during a pulse in [0, 1] (default 0), float or per neuron.
        slow_gate_slope: slope ``k`` > 0 of the logistic slow gate (default 10, the paper), or
            None for the Heaviside step ``H(h[t-1] - 0.5)`` of ALGORITHMS.md.
        bias_initializer: initializer of ``b_h`` (default ``Constant(-6)``).
        bias_max: upper bound of ``b_h`` enforced after each optimizer step through the
            :class:`MaxValue` constraint (default -4), or None for no bound.
        detach_recurrent: stop the gradient through ``h`` and ``h_s`` carried across time
            (default False; the gradient through the input integrator ``i`` remains).
        straight_through: forward ``ReLU(h)``, backward identity (default False).
        kernel_initializer: initializer of ``W_s`` (default "glorot_uniform").
        kernel_regularizer, bias_regularizer: optional Keras regularizers.
        **kwargs: ``keras.layers.Layer`` arguments (name, dtype, trainable).

    Call arguments:
        inputs: [batch, features] input of one step.
        states: ``[i, h, h_s]``, each [batch, units].
        training: unused.

    Returns:
        ``(s [batch, units], [i, h, h_s])``.
    """

    spiking = True

    def __init__(
        self,
        units: int,
        *,
        alpha=0.9,
        rho=3.0,
        r=2.0,
        r_s=-7.0,
        z=0.0,
        z_hyp=0.9,
        z_dep=0.0,
        slow_gate_slope: float | None = 10.0,
        bias_initializer=None,
        bias_max: float | None = -4.0,
        detach_recurrent: bool = False,
        straight_through: bool = False,
        kernel_initializer="glorot_uniform",
        kernel_regularizer=None,
        bias_regularizer=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        owner = type(self).__name__
        self.units = _validation.positive_int("units", units, owner)
        values = dict(alpha=alpha, rho=rho, r=r, r_s=r_s, z=z, z_hyp=z_hyp, z_dep=z_dep)
        for name, value in values.items():
            check, requirement = _CHECKS[name]
            setattr(self, name, _constant(name, value, self.units, owner, check, requirement))
        self.slow_gate_slope = _optional_number(
            "slow_gate_slope", slow_gate_slope, owner, lambda v: v > 0, "a finite number > 0"
        )
        self.bias_max = _optional_number(
            "bias_max", bias_max, owner, lambda v: True, "a finite number"
        )
        self.detach_recurrent = _validation.flag("detach_recurrent", detach_recurrent, owner)
        self.straight_through = _validation.flag("straight_through", straight_through, owner)
        self.bias_initializer = keras.initializers.get(
            keras.initializers.Constant(DEFAULT_BIAS)
            if bias_initializer is None
            else bias_initializer
        )
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.bias_regularizer = keras.regularizers.get(bias_regularizer)
        self.state_size = [self.units, self.units, self.units]
        self.output_size = self.units

    def build(self, input_shape):
        self.kernel = synapse.add_kernel(
            self, input_shape, self.kernel_initializer, self.kernel_regularizer
        )
        self.bias = self.add_weight(
            shape=(self.units,),
            initializer=self.bias_initializer,
            regularizer=self.bias_regularizer,
            constraint=None if self.bias_max is None else MaxValue(self.bias_max),
            name="bias",
        )
        self.built = True

    def step_params(self, dtype) -> dict[str, Any]:
        """Keyword arguments of :func:`src_step` (constants and bias as ``dtype`` tensors)."""
        params: dict[str, Any] = {
            name: tf.constant(getattr(self, name), dtype=dtype) for name in CONSTANT_NAMES
        }
        params.update(
            bias=tf.cast(self.bias, dtype),
            slow_gate_slope=self.slow_gate_slope,
            detach_recurrent=self.detach_recurrent,
            straight_through=self.straight_through,
        )
        return params

    def input_current(self, inputs):
        """Feed-forward synaptic input ``inputs @ W_s`` over the last axis (any rank >= 2)."""
        return synapse.dense_current(inputs, self.kernel)

    def call(self, inputs, states, training=None):
        inputs = tf.cast(inputs, self.compute_dtype)
        state = SRCState(*[tf.cast(s, self.compute_dtype) for s in states])
        s, new_state = src_step(
            state, self.input_current(inputs), **self.step_params(self.compute_dtype)
        )
        return s, list(new_state)

    def get_initial_state(self, batch_size=None):
        """Zero states ``[i, h, h_s]``, each [batch, units]."""
        return [tf.zeros([batch_size, self.units], dtype=self.compute_dtype) for _ in range(3)]

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config["units"] = self.units
        for name in CONSTANT_NAMES:
            value = getattr(self, name)
            config[name] = list(value) if isinstance(value, tuple) else value
        config.update(
            {
                "slow_gate_slope": self.slow_gate_slope,
                "bias_max": self.bias_max,
                "detach_recurrent": self.detach_recurrent,
                "straight_through": self.straight_through,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
                "bias_initializer": keras.initializers.serialize(self.bias_initializer),
                "kernel_regularizer": keras.regularizers.serialize(self.kernel_regularizer),
                "bias_regularizer": keras.regularizers.serialize(self.bias_regularizer),
            }
        )
        return config
