r"""Keras 3 RNN cells for the neuron models (one time step each).

The cells meet the ``keras.layers.RNN`` contract (``state_size``, ``output_size``,
``call(inputs, states)``, ``get_initial_state(batch_size)``), so they can be wrapped in
``keras.layers.RNN`` or used to build custom loops. The sequence layers in
:mod:`keras_spiking.layers` own one of these cells for their weights and run the whole
sequence with a fused scan instead (much faster); both give the same numbers.

Units: time constants in seconds, ``dt`` in seconds (default 1 ms); membrane potentials and
currents in units where the threshold is ``threshold`` (default 1).

Trainable time constants (``train_time_constants=True``) are learned as their natural log:
the weight ``log_<name>`` (e.g. ``log_tau_mem``) holds ``log(tau / 1 s)`` per neuron, and the
dynamics use ``tau = exp(log_tau)``, i.e. the per-step decay

.. math::  \beta = e^{-dt / \tau} = \exp\!\left(-dt\, e^{-\log\tau}\right) \in (0, 1).

Why: an optimizer such as Adam moves each variable by about its learning rate per step, in
the variable's own units. A time constant held in seconds moves by ~1 ms per step at lr 1e-3,
which takes a 5 ms constant below zero within a few steps; held as its log, one step scales
tau by a factor of about ``exp(+-lr)``, so tau stays positive (and the decay in (0, 1)) for
any learning rate, and the step is relative to the time constant's own size.
"""

from __future__ import annotations

import sys
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from keras_spiking import _validation, dynamics, surrogates, synapse

#: Key of the entry that ``NeuronCell.save_own_variables`` adds to a ``.keras`` file whose cell
#: holds trainable time constants as their log; a file without it (written before the log
#: parameterization) holds them in seconds and is converted on load.
LOG_TIME_CONSTANTS_KEY = "log_time_constants"

#: Files written before the log parameterization held trainable time constants in seconds,
#: and the dynamics then used ``max(tau, _OLD_MIN_TAU_FRACTION_OF_DT * dt)``: loading such a
#: file applies the same floor before taking the log, so the old model computes what it did.
_OLD_MIN_TAU_FRACTION_OF_DT = 1e-2


class NeuronCell(keras.layers.Layer):
    """Shared weights and parameters of the neuron cells (abstract).

    Args:
        units: number of neurons.
        threshold: firing threshold ``theta`` > 0.
        reset: "subtract" (``v -= theta`` after a spike) or "zero" (``v = 0``).
        surrogate: surrogate gradient: a name from ``keras_spiking.surrogates.available()``,
            a config dict, a ``Surrogate`` or a callable ``fn(x) -> dS/dx``.
        detach_reset: stop the gradient through the reset term.
        dt: simulation step in seconds (default 1 ms).
        recurrent: add recurrent weights from the population's own spikes.
        use_bias: add a constant input current per neuron.
        train_time_constants: make the time constants trainable, one per neuron. Each is
            learned as its natural log (weight ``log_<name>``, ``tau = exp(log_tau)`` in
            seconds), so it stays positive for any learning rate; see the module docstring.
        kernel_initializer, recurrent_initializer, bias_initializer: Keras initializers.
        kernel_regularizer, recurrent_regularizer, bias_regularizer: Keras regularizers.
    """

    time_constant_names: tuple[str, ...] = ()
    spiking = True

    def __init__(
        self,
        units: int,
        *,
        threshold: float = 1.0,
        reset: str = "subtract",
        surrogate="fast_sigmoid",
        detach_reset: bool = True,
        dt: float = dynamics.DEFAULT_DT,
        recurrent: bool = False,
        use_bias: bool = False,
        train_time_constants: bool = False,
        kernel_initializer="glorot_uniform",
        recurrent_initializer="orthogonal",
        bias_initializer="zeros",
        kernel_regularizer=None,
        recurrent_regularizer=None,
        bias_regularizer=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        owner = type(self).__name__
        self.units = _validation.positive_int("units", units, owner)
        self.threshold = _validation.positive_number("threshold", threshold, owner)
        self.reset = _validation.one_of("reset", reset, dynamics.RESET_MODES, owner)
        self.surrogate = surrogates.get(surrogate)
        self.detach_reset = bool(detach_reset)
        self.dt = _validation.positive_number("dt", dt, owner)
        self.recurrent = bool(recurrent)
        self.use_bias = bool(use_bias)
        self.train_time_constants = bool(train_time_constants)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.recurrent_initializer = keras.initializers.get(recurrent_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.recurrent_regularizer = keras.regularizers.get(recurrent_regularizer)
        self.bias_regularizer = keras.regularizers.get(bias_regularizer)
        self.output_size = self.units
        self._log_tau_variables: dict[str, keras.Variable] = {}  # filled by build()

    def _set_time_constants(self, values: dict[str, Any]) -> None:
        """Validates and sets the time constants, and warns if they (or dt) look implausible."""
        owner = type(self).__name__
        for name, value in values.items():
            setattr(self, name, _validation.time_constant(name, value, self.units, owner))
        time_constants = {name: getattr(self, name) for name in values}
        if _validation.time_unit_problems(self.dt, **time_constants):  # only then find the name
            _validation.time_units(self._constructing_layer_name(), self.dt, **time_constants)

    def _constructing_layer_name(self) -> str:
        """The class name of the sequence layer constructing this cell, else the cell's own.

        The sequence layers (LIF, CubaLIF, LI) build their cell in their constructor: a warning
        about their arguments names the class the user wrote, found on the call stack as the
        nearest ``self`` whose ``cell_class`` this cell is (only looked up when warning).
        """
        frame = sys._getframe(1)
        while frame is not None:
            owner = frame.f_locals.get("self")
            cell_class = getattr(type(owner), "cell_class", None)
            if isinstance(cell_class, type) and isinstance(self, cell_class):
                return type(owner).__name__
            frame = frame.f_back
        return type(self).__name__

    #: whether the fused C++ scan may take the inputs and this cell's ``kernel`` itself (the
    #: dense ``x W``); False for a synapse it does not know (e.g. a convolution)
    fused_input = True

    def build(self, input_shape):
        self._build_synapse(input_shape)
        self._build_time_constants()
        self.built = True

    def _build_synapse(self, input_shape) -> None:
        """The weights from the inputs: ``kernel``, ``recurrent_kernel``, ``bias``."""
        self.kernel = synapse.add_kernel(
            self, input_shape, self.kernel_initializer, self.kernel_regularizer
        )
        self.recurrent_kernel = None
        if self.recurrent:
            self.recurrent_kernel = self.add_weight(
                shape=(self.units, self.units),
                initializer=self.recurrent_initializer,
                regularizer=self.recurrent_regularizer,
                name="recurrent_kernel",
            )
        self.bias = None
        if self.use_bias:
            self.bias = self.add_weight(
                shape=(self.units,),
                initializer=self.bias_initializer,
                regularizer=self.bias_regularizer,
                name="bias",
            )

    def _build_time_constants(self) -> None:
        """Trainable time constants as their natural log in seconds, one per ``units``.

        Keyed by the time constant's name (see the module docstring for why the log).
        """
        self._log_tau_variables = {}
        if self.train_time_constants:
            for name in self.time_constant_names:
                tau = np.broadcast_to(np.asarray(getattr(self, name), "float64"), (self.units,))
                variable = self.add_weight(
                    shape=(self.units,),
                    initializer=keras.initializers.Constant(np.log(tau)),
                    name=f"log_{name}",
                )
                self._log_tau_variables[name] = variable
                # an attribute too, so that tf.train.Checkpoint finds it (not only the dict)
                setattr(self, f"log_{name}", variable)

    def time_constant(self, name: str) -> np.ndarray:
        """Per-neuron time constant ``name`` in seconds as the dynamics use it, float64 [units].

        A trainable one is ``exp(log_tau)`` of its variable ``log_<name>`` (always > 0); a
        fixed one is broadcast to ``[units]``. The exporters read the time constants here.
        """
        if name in self._log_tau_variables:
            variable = self._log_tau_variables[name]
            return np.exp(np.asarray(keras.ops.convert_to_numpy(variable), "float64"))
        tau = np.asarray(getattr(self, name), dtype="float64")
        return np.broadcast_to(tau, (self.units,)).copy()

    def decay(self, name: str) -> tf.Tensor:
        r"""Per-neuron decay per step of time constant ``name``, shape [units], compute dtype.

        .. math::  \beta = e^{-dt/\tau} = \exp\!\left(-dt\, e^{-\log\tau}\right)

        For a trainable time constant this is computed from its variable ``log_<name>``
        (differentiable; ``d beta / d log_tau = beta dt / tau``), and lies in (0, 1) for any
        value of the variable: no clipping is needed. A fixed one is a constant.
        """
        dtype = self.compute_dtype
        if name in self._log_tau_variables:
            # in the variable's dtype (float32 under mixed precision): exp(-log_tau) overflows
            # float16 for tau below ~15 us, and beta = 0 would then get a NaN gradient
            log_tau = tf.convert_to_tensor(self._log_tau_variables[name])
            # log(dt) from float64 NumPy: tf.cast(python_float, float64) would round through
            # float32 first (a 1e-8 relative error in every decay)
            log_dt = tf.constant(np.log(float(self.dt)), dtype=log_tau.dtype)
            beta = tf.exp(-tf.exp(log_dt - log_tau))
            return tf.cast(beta, dtype)
        tau = np.broadcast_to(np.asarray(getattr(self, name), dtype="float64"), (self.units,))
        return tf.constant(np.exp(-self.dt / tau), dtype=dtype)

    # ---- saving: mark files whose time constants are logs --------------------------------
    def save_own_variables(self, store):
        """Keras' variables by index, plus a marker entry when the time constants are logs."""
        super().save_own_variables(store)
        if self._log_tau_variables:
            store[LOG_TIME_CONSTANTS_KEY] = np.ones((), dtype="float32")

    def load_own_variables(self, store):
        """Loads the variables; converts the time constants of a file from before the logs.

        A file written before the log parameterization (no ``log_time_constants`` entry) held
        each trainable time constant in seconds at the same index: it is loaded as
        ``log(max(tau, 1e-2 dt))``, the floor the dynamics of that version applied, so the
        model computes what it did.
        """
        keys = [key for key in store.keys() if key != LOG_TIME_CONSTANTS_KEY]
        if not self._log_tau_variables:
            if LOG_TIME_CONSTANTS_KEY in store:
                raise ValueError(
                    f"{type(self).__name__} ({self.name}): the file holds trainable time "
                    "constants but the cell has train_time_constants=False"
                )
            super().load_own_variables(store)
            return
        values = {key: store[key] for key in keys}
        if LOG_TIME_CONSTANTS_KEY not in store:
            all_vars = list(self.variables)  # a cell has no sublayers: Keras' saving order
            for variable in self._log_tau_variables.values():
                key = next(str(i) for i, v in enumerate(all_vars) if v is variable)
                if key in values:
                    tau = np.asarray(values[key], dtype="float64")
                    floor = _OLD_MIN_TAU_FRACTION_OF_DT * self.dt
                    values[key] = np.log(np.maximum(tau, floor)).astype(variable.dtype)
        super().load_own_variables(values)

    def input_current(self, inputs, matmul=None):
        """Feed-forward synaptic input ``inputs @ kernel (+ bias)``, over the last axis.

        Args:
            inputs: ``[..., features]``.
            matmul: ``fn(inputs, kernel)`` for the product; default the dense
                :func:`keras_spiking.synapse.dense_current` (the layers pass the event
                kernel, :func:`keras_spiking.ops.synaptic_input`, when it is on).
        """
        matmul = matmul or synapse.dense_current
        current = matmul(inputs, tf.cast(self.kernel, inputs.dtype))
        if self.bias is not None:
            current = current + tf.cast(self.bias, inputs.dtype)
        return current

    def recurrent_weights(self):
        """The recurrent kernel in the compute dtype, or None."""
        if self.recurrent_kernel is None:
            return None
        return tf.cast(self.recurrent_kernel, self.compute_dtype)

    def get_initial_state(self, batch_size=None):
        """Zero states, one [batch, units] tensor per entry of ``state_size``."""
        return [tf.zeros([batch_size, size], dtype=self.compute_dtype) for size in self.state_size]

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            {
                "units": self.units,
                "threshold": self.threshold,
                "reset": self.reset,
                "surrogate": surrogates.serialize(self.surrogate),
                "detach_reset": self.detach_reset,
                "dt": self.dt,
                "recurrent": self.recurrent,
                "use_bias": self.use_bias,
                "train_time_constants": self.train_time_constants,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
                "recurrent_initializer": keras.initializers.serialize(self.recurrent_initializer),
                "bias_initializer": keras.initializers.serialize(self.bias_initializer),
                "kernel_regularizer": keras.regularizers.serialize(self.kernel_regularizer),
                "recurrent_regularizer": keras.regularizers.serialize(self.recurrent_regularizer),
                "bias_regularizer": keras.regularizers.serialize(self.bias_regularizer),
            }
        )
        for name in self.time_constant_names:
            value = getattr(self, name)
            config[name] = list(value) if isinstance(value, tuple) else value
        return config


@keras.saving.register_keras_serializable(package="keras_spiking")
class LIFCell(NeuronCell):
    r"""Leaky integrate-and-fire cell, one time step.

    .. math::
        u[t] &= \beta\, v[t-1] + x[t] W + S[t-1] R + b \\
        S[t] &= H(u[t] - \theta) \\
        v[t] &= u[t] - \theta S[t] \;\text{(subtract)} \quad\text{or}\quad u[t](1 - S[t])

    with ``beta = exp(-dt / tau_mem)``; ``R`` only if ``recurrent``, ``b`` only if ``use_bias``.
    See :func:`keras_spiking.dynamics.lif_step`.

    Args:
        units: number of neurons.
        tau_mem: membrane time constant in seconds (float, or a list of ``units`` values),
            default 20 ms.
        **kwargs: the shared options of :class:`NeuronCell` (threshold, reset, surrogate,
            detach_reset, dt, recurrent, use_bias, train_time_constants, initializers, ...).

    Call arguments:
        inputs: [batch, features] input of one step.
        states: ``[v, S]``, each [batch, units].

    Returns:
        ``(spikes [batch, units], [v, S])``.
    """

    time_constant_names = ("tau_mem",)

    def __init__(self, units: int, tau_mem=20e-3, **kwargs):
        super().__init__(units, **kwargs)
        self._set_time_constants({"tau_mem": tau_mem})
        self.state_size = [self.units, self.units]

    def call(self, inputs, states, training=None):
        spikes, state = dynamics.lif_step(
            dynamics.LIFState(*states),
            self.input_current(inputs),
            beta=self.decay("tau_mem"),
            threshold=self.threshold,
            spike_fn=self.surrogate,
            reset=self.reset,
            detach_reset=self.detach_reset,
            recurrent_kernel=self.recurrent_weights(),
        )
        return spikes, list(state)


@keras.saving.register_keras_serializable(package="keras_spiking")
class CubaLIFCell(NeuronCell):
    r"""Current-based LIF cell (Neftci, Mostafa & Zenke 2019, eqs. 2-5), one time step.

    .. math::
        S[n] &= H(U[n] - \theta) \\
        I[n+1] &= \alpha I[n] + x[n] W + S[n] V + b \\
        U[n+1] &= \beta U[n] + I[n] - \theta S[n]

    with ``alpha = exp(-dt / tau_syn)``, ``beta = exp(-dt / tau_mem)`` (reset to zero:
    ``U[n+1] = (beta U[n] + I[n]) (1 - S[n])``). An input reaches the spikes two steps later.
    See :func:`keras_spiking.dynamics.cuba_lif_step`.

    Args:
        units: number of neurons.
        tau_syn: synaptic time constant in seconds (default 5 ms), float or per neuron.
        tau_mem: membrane time constant in seconds (default 10 ms), float or per neuron.
        **kwargs: the shared options of :class:`NeuronCell`.

    Call arguments:
        inputs: [batch, features] input of one step.
        states: ``[I, U]``, each [batch, units].

    Returns:
        ``(spikes [batch, units], [I, U])``.
    """

    time_constant_names = ("tau_syn", "tau_mem")

    def __init__(self, units: int, tau_syn=5e-3, tau_mem=10e-3, **kwargs):
        super().__init__(units, **kwargs)
        self._set_time_constants({"tau_syn": tau_syn, "tau_mem": tau_mem})
        self.state_size = [self.units, self.units]

    def call(self, inputs, states, training=None):
        spikes, state = dynamics.cuba_lif_step(
            dynamics.CubaLIFState(*states),
            self.input_current(inputs),
            alpha=self.decay("tau_syn"),
            beta=self.decay("tau_mem"),
            threshold=self.threshold,
            spike_fn=self.surrogate,
            reset=self.reset,
            detach_reset=self.detach_reset,
            recurrent_kernel=self.recurrent_weights(),
        )
        return spikes, list(state)


@keras.saving.register_keras_serializable(package="keras_spiking")
class LICell(NeuronCell):
    r"""Non-spiking leaky-integrator readout cell, one time step.

    .. math::  v[t] = \beta\, v[t-1] + x[t] W + b, \qquad \beta = e^{-dt/\tau_{mem}}

    Args:
        units: number of outputs.
        tau_mem: time constant in seconds (default 20 ms), float or per neuron.
        dt: simulation step in seconds.
        use_bias: add a bias current.
        train_time_constants: make ``tau_mem`` trainable per neuron.
        kernel_initializer, bias_initializer, kernel_regularizer, bias_regularizer: as in Dense.

    Call arguments:
        inputs: [batch, features] input of one step.
        states: ``[v]``, [batch, units].

    Returns:
        ``(v [batch, units], [v])``.
    """

    time_constant_names = ("tau_mem",)
    spiking = False

    def __init__(self, units: int, tau_mem=20e-3, **kwargs):
        for name in ("threshold", "reset", "surrogate", "detach_reset", "recurrent"):
            if name in kwargs:
                raise TypeError(f"{type(self).__name__} does not spike: `{name}` is not an option")
        super().__init__(units, **kwargs)
        self._set_time_constants({"tau_mem": tau_mem})
        self.state_size = [self.units]

    def call(self, inputs, states, training=None):
        v = dynamics.li_step(states[0], self.input_current(inputs), beta=self.decay("tau_mem"))
        return v, [v]

    def get_config(self):
        config = super().get_config()
        for name in (
            "threshold",
            "reset",
            "surrogate",
            "detach_reset",
            "recurrent",
            "recurrent_initializer",
            "recurrent_regularizer",
        ):
            config.pop(name)
        return config


from keras_spiking.spiking_recurrent_cell import SpikingRecurrentCell  # noqa: E402

__all__ = ["NeuronCell", "LIFCell", "CubaLIFCell", "LICell", "SpikingRecurrentCell"]
