"""Spiking sequence layers over ``[batch, time, features]`` inputs.

Each layer owns a cell from :mod:`keras_spiking.cells` (its weights and parameters), computes the
feed-forward synaptic input of every time step in one matmul, and runs only the neuron state
through time with a fused scan (:mod:`keras_spiking.scan`, XLA-compiled, hand-written BPTT).
The numbers equal ``keras.layers.RNN(cell)`` step by step; the fused path is much faster.

Example::

    model = keras.Sequential([
        keras.Input((100, 700)),
        keras_spiking.layers.LIF(256, surrogate="fast_sigmoid"),
        keras_spiking.layers.LI(20),
    ])
    model.compile("adam", keras_spiking.losses.MaxMembraneCrossEntropy())
"""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf

from keras_spiking import _validation, cells, eventprop, ops, scan


class SpikingSequence(keras.layers.Layer):
    """Base of the sequence layers: input checks, states, ``stateful`` streaming (abstract).

    Args:
        return_sequences: return the output of every step ``[batch, time, units]`` (default)
            or only of the last step ``[batch, units]``.
        return_state: also return the final states (a list, as ``keras.layers.RNN`` does).
        stateful: keep the final states of one call as the initial states of the next (for
            streaming a long sequence in chunks); needs a fixed batch size. ``reset_states()``
            sets them back to zero.
        jit_compile: XLA-compile the time scan (default True; set False where XLA is missing).
        check_inputs: raise a clear error on NaN or infinite inputs (checked on the final
            states, a few elements per call; see ``_check_finite``).
        use_custom_ops: ``"auto"`` (default: the global setting of :mod:`keras_spiking.ops`),
            True (require the C++ kernels) or False (pure TF). The kernels (event-driven
            synaptic input for sparse inputs, fused LIF/CubaLIF scans) run in training and
            eager calls; graph-traced inference and anything saved or exported use standard
            TF ops. Both paths give the same numbers up to float32 rounding.
        **cell_kwargs: the neuron parameters, passed to the layer's cell.

    Call arguments:
        inputs: ``[batch, time, features]`` float tensor.
        initial_state: optional list of ``[batch, units]`` tensors (see the cell's
            ``state_size``); default zeros, or the stored states when ``stateful``.
        training: no dropout here; selects where the custom kernels may run (see
            ``use_custom_ops``).
    """

    cell_class: type[cells.NeuronCell] = cells.NeuronCell
    state_names: tuple[str, ...] = ()

    def __init__(
        self,
        units: int,
        *,
        return_sequences: bool = True,
        return_state: bool = False,
        stateful: bool = False,
        jit_compile: bool = True,
        check_inputs: bool = True,
        use_custom_ops: str | bool = "auto",
        name: str | None = None,
        dtype=None,
        trainable: bool = True,
        **cell_kwargs,
    ):
        super().__init__(name=name, dtype=dtype, trainable=trainable)
        if "gradient" in cell_kwargs:
            # only CubaLIF takes a gradient rule; say so rather than Keras' "unrecognized
            # keyword arguments passed to LIFCell"
            raise TypeError(
                f"{type(self).__name__}: unexpected argument `gradient` (got "
                f"{cell_kwargs['gradient']!r}); it trains with surrogate gradients (choose one "
                "with `surrogate=`), and only CubaLIF takes gradient='eventprop'"
            )
        self.cell = self.cell_class(units, dtype=dtype, name="cell", **cell_kwargs)
        self.units = self.cell.units
        self.return_sequences = bool(return_sequences)
        self.return_state = bool(return_state)
        self.stateful = bool(stateful)
        self.jit_compile = bool(jit_compile)
        self.check_inputs = bool(check_inputs)
        self.use_custom_ops = ops.validate_setting(use_custom_ops)
        self.spiking = self.cell.spiking
        # XLA for the whole train step is slower on CPU than our own XLA scan between plain
        # TF matmuls, so `compile(jit_compile="auto")` should not pick it for these layers.
        self.supports_jit = False
        self.states = None

    def __getattr__(self, name):
        # Expose the cell's neuron parameters (tau_mem, threshold, surrogate, ...) on the layer.
        if not name.startswith("_") and name != "cell" and "cell" in self.__dict__:
            try:
                return getattr(self.__dict__["cell"], name)
            except AttributeError:
                pass
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __call__(self, *args, **kwargs):
        # before Keras builds the layer or traces `call`: a ragged or sparse input would fail
        # deep inside the scan with a message that names neither the input nor a way out
        inputs = args[0] if args else kwargs.get("inputs")
        _validation.dense_sequence(
            inputs, f"{type(self).__name__} ({self.name})", masking=self.supports_masking
        )
        return super().__call__(*args, **kwargs)

    def build(self, input_shape):
        input_shape = tuple(input_shape)
        if len(input_shape) != 3:
            raise ValueError(
                f"{type(self).__name__} expects inputs of shape [batch, time, features], got "
                f"shape {input_shape}"
            )
        self.cell.build(input_shape)
        # the rank is checked in `call` with our own message; Keras checks the feature axis
        self.input_spec = keras.layers.InputSpec(axes={-1: input_shape[-1]})
        if self.stateful:
            if input_shape[0] is None:
                raise ValueError(
                    f"{type(self).__name__}(stateful=True) needs a fixed batch size, got input "
                    f"shape {input_shape}; use keras.Input(shape, batch_size=N)"
                )
            self.states = [
                self.add_weight(
                    shape=(input_shape[0], self.units),
                    initializer="zeros",
                    trainable=False,
                    name=f"state_{name}",
                )
                for name in self.state_names
            ]
        self.built = True

    def reset_states(self) -> None:
        """Sets the stored states of a ``stateful`` layer back to zero."""
        if not self.stateful:
            raise ValueError(f"{type(self).__name__}: reset_states() needs stateful=True")
        for state in self.states:
            state.assign(tf.zeros_like(state))

    def _check_rank(self, inputs):
        if inputs.shape.rank != 3:
            raise ValueError(
                f"{type(self).__name__} expects inputs of shape [batch, time, features], got "
                f"shape {tuple(inputs.shape)}"
            )
        if not self.return_sequences and inputs.shape[1] == 0:
            raise ValueError(
                f"{type(self).__name__}(return_sequences=False) needs at least one time step, "
                f"got inputs of shape {tuple(inputs.shape)}"
            )

    def _check_finite(self, outputs, final_states):
        """Makes ``outputs`` fail with a clear error if any input was NaN or infinite.

        Every state of every model here stays non-finite once a non-finite value entered it
        (``beta * NaN``, ``inf - theta``, ``inf * 0`` are all non-finite), so checking the small
        final states catches a bad value anywhere in the inputs, for a few [batch, units]
        elements instead of the whole [batch, time, features] input.
        """
        message = (
            f"{type(self).__name__} ({self.name}): inputs contain NaN or inf (or the neuron "
            "state overflowed)"
        )
        checks = [tf.debugging.assert_all_finite(state, message) for state in final_states]
        with tf.control_dependencies(checks):
            return tf.identity(outputs), [tf.identity(state) for state in final_states]

    def _initial_states(self, inputs, initial_state):
        if initial_state is not None:
            if not isinstance(initial_state, (list, tuple)):
                initial_state = [initial_state]
            if len(initial_state) != len(self.state_names):
                raise ValueError(
                    f"{type(self).__name__}: `initial_state` must be a list of "
                    f"{len(self.state_names)} tensors {list(self.state_names)}, got "
                    f"{len(initial_state)}"
                )
            return [tf.cast(s, self.compute_dtype) for s in initial_state]
        if self.stateful:
            return [tf.cast(s, self.compute_dtype) for s in self.states]
        batch = tf.shape(inputs)[0]
        return [tf.zeros([batch, self.units], self.compute_dtype) for _ in self.state_names]

    def _kernels_active(self, inputs, training) -> bool:
        """Whether this call runs the C++ kernels (see ``use_custom_ops``)."""
        if inputs.dtype not in ops.KERNEL_DTYPES:
            return False
        return ops.enabled(ops.call_setting(self.use_custom_ops, training))

    def call(self, inputs, initial_state=None, training=None):
        inputs = tf.cast(inputs, self.compute_dtype)
        self._check_rank(inputs)
        kernels = self._kernels_active(inputs, training)
        states = self._initial_states(inputs, initial_state)
        fused = self._input_scan(inputs, states) if kernels else None
        if fused is not None:
            outputs, final_states = fused
        else:
            # [batch, time, units], one matmul (the event kernel when the kernels are on)
            currents = self.cell.input_current(inputs, ops.synaptic_input if kernels else None)
            outputs, final_states = self._scan(
                currents, states, kernels=kernels and self._fused_scan_supported()
            )
        if self.check_inputs:
            outputs, final_states = self._check_finite(outputs, final_states)
        if self.stateful:
            for variable, value in zip(self.states, final_states):
                variable.assign(tf.cast(value, variable.dtype))
        if not self.return_sequences:
            outputs = outputs[:, -1]
        if self.return_state:
            return [outputs, *final_states]
        return outputs

    def _scan(self, currents, states, kernels: bool = False):
        """Runs the neuron model over [batch, time, units] currents; returns (outputs, states).

        ``kernels``: by the fused C++ scan (only passed when it is supported), else the TF scan.
        """
        raise NotImplementedError

    def _input_scan(self, inputs, states):
        """The synaptic input and the scan in one C++ kernel, as ``(outputs, states)``.

        None where this layer has no such kernel: then the input current, then ``_scan``.
        """
        return None

    def _spike_options(self) -> dict[str, Any]:
        """The spiking cell's options shared by its TF and C++ scans."""
        cell = self.cell
        return {
            "threshold": cell.threshold,
            "surrogate": cell.surrogate,
            "reset": cell.reset,
            "detach_reset": cell.detach_reset,
            "decay_grad": cell.train_time_constants,
        }

    def _fused_scan_supported(self) -> bool:
        """Whether a fused C++ scan implements this layer's configuration."""
        if not self.spiking:
            return True  # the leaky integrator has a kernel for every configuration
        # the fused spiking scans have no recurrent weights and only the registered surrogates
        return self.cell.recurrent_kernel is None and ops.supports(
            self.cell.surrogate, self.compute_dtype
        )

    def compute_output_shape(self, inputs_shape, initial_state_shape=None):
        input_shape = inputs_shape
        batch, steps = input_shape[0], input_shape[1]
        output = (batch, steps, self.units) if self.return_sequences else (batch, self.units)
        if self.return_state:
            return [output] + [(batch, self.units) for _ in self.state_names]
        return output

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        cell_config = self.cell.get_config()
        for key in ("name", "trainable", "dtype"):
            cell_config.pop(key, None)
        config.update(cell_config)
        config.update(
            {
                "return_sequences": self.return_sequences,
                "return_state": self.return_state,
                "stateful": self.stateful,
                "jit_compile": self.jit_compile,
                "check_inputs": self.check_inputs,
                "use_custom_ops": self.use_custom_ops,
            }
        )
        return config


@keras.saving.register_keras_serializable(package="keras_spiking")
class LIF(SpikingSequence):
    r"""Leaky integrate-and-fire neurons over a sequence.

    .. math::
        u[t] &= \beta\, v[t-1] + x[t] W + S[t-1] R + b \\
        S[t] &= H(u[t] - \theta) \\
        v[t] &= u[t] - \theta S[t] \;\text{(subtract)} \quad\text{or}\quad u[t](1 - S[t])
        \;\text{(zero)}

    with ``beta = exp(-dt / tau_mem)``, ``dt`` in seconds (default 1 ms). ``H`` is the Heaviside
    step forward and the chosen surrogate derivative backward. States: ``[v, S]``.

    Args:
        units: number of neurons.
        tau_mem: membrane time constant in seconds (default 20 ms), float or per neuron.
        threshold: firing threshold ``theta`` > 0 (default 1).
        reset: "subtract" (default) or "zero".
        surrogate: surrogate gradient name, dict, instance or callable (default fast sigmoid).
        detach_reset: stop the gradient through the reset (default True).
        dt: simulation step in seconds (default 1e-3).
        recurrent: add recurrent weights ``R`` (default False).
        use_bias: add a bias current ``b`` (default False).
        train_time_constants: learn ``tau_mem`` per neuron (default False).
        kernel_initializer, recurrent_initializer, bias_initializer, kernel_regularizer,
        recurrent_regularizer, bias_regularizer: as in ``keras.layers.SimpleRNN``.
        return_sequences, return_state, stateful, jit_compile, check_inputs: see
            :class:`SpikingSequence`.

    Call arguments:
        inputs: ``[batch, time, features]``.
        initial_state: optional ``[v, S]``.

    Returns:
        Spikes (0/1) ``[batch, time, units]`` (or ``[batch, units]`` without
        ``return_sequences``), followed by ``v, S`` if ``return_state``.
    """

    cell_class = cells.LIFCell
    state_names = ("v", "s")

    def _input_scan(self, inputs, states):
        # the event-driven input fused into the LIF scan: no bias, no recurrent weights, a
        # kernel surrogate (the fused scan's conditions)
        if self.cell.bias is not None or not self._fused_scan_supported():
            return None
        spikes, v, s = ops.lif_scan_with_input(
            inputs,
            self.cell.kernel,
            states[0],
            states[1],
            self.cell.decay("tau_mem"),
            **self._spike_options(),
        )
        return spikes, [v, s]

    def _scan(self, currents, states, kernels: bool = False):
        beta = self.cell.decay("tau_mem")
        options = self._spike_options()
        if kernels:
            spikes, v, s = ops.lif_scan(currents, states[0], states[1], beta, **options)
        else:
            spikes, v, s = scan.lif_scan(
                currents,
                states[0],
                states[1],
                beta,
                self.cell.recurrent_weights(),
                jit=self.jit_compile,
                **options,
            )
        return spikes, [v, s]


def _gradient_rule(gradient, owner: str) -> eventprop.EventProp | None:
    """``gradient=`` of a layer as its rule (None: surrogate BPTT), or a clear error.

    A dict is deserialized by Keras, which returns whatever it decodes (a plain dict for a
    dict without ``class_name``, a layer for a layer's config): only an ``EventProp`` is a
    rule, anything else is refused here instead of failing at the first call.
    """
    expected = (
        "'surrogate', 'eventprop', a keras_spiking.eventprop.EventProp or the dict "
        "keras.saving.serialize_keras_object gives for one"
    )
    try:
        rule = eventprop.get_rule(gradient)
    except (TypeError, ValueError) as error:
        kind = TypeError if not isinstance(gradient, (str, dict)) else ValueError
        raise kind(f"{owner}: `gradient` must be {expected}, got {gradient!r}") from error
    if rule is not None and not isinstance(rule, eventprop.EventProp):
        raise ValueError(
            f"{owner}: `gradient` must be {expected}, got {gradient!r} (which deserializes to "
            f"a {type(rule).__name__}, not an EventProp)"
        )
    return rule


@keras.saving.register_keras_serializable(package="keras_spiking")
class CubaLIF(SpikingSequence):
    r"""Current-based LIF neurons over a sequence (Neftci, Mostafa & Zenke 2019, eqs. 2-5).

    .. math::
        S[n] &= H(U[n] - \theta) \\
        I[n+1] &= \alpha I[n] + x[n] W + S[n] V + b \\
        U[n+1] &= \beta U[n] + I[n] - \theta S[n] \;\text{(subtract)}
        \quad\text{or}\quad (\beta U[n] + I[n])(1 - S[n]) \;\text{(zero)}

    with ``alpha = exp(-dt / tau_syn)``, ``beta = exp(-dt / tau_mem)``. An input at step ``n``
    can make a spike at ``n + 2`` at the earliest. States: ``[I, U]``.

    Args:
        units: number of neurons.
        tau_syn: synaptic time constant in seconds (default 5 ms), float or per neuron.
        tau_mem: membrane time constant in seconds (default 10 ms), float or per neuron.
        **kwargs: the other options of :class:`LIF`.

        gradient: "surrogate" (default: the model above, BPTT with the surrogate) or
            "eventprop" / a :class:`keras_spiking.eventprop.EventProp` rule: exact EventProp
            gradients. EventProp is defined for the continuous-time model
            ``tau_m dV/dt = -V + I``, ``tau_s dI/dt = -I`` with reset to zero, so with it
            the layer runs that model (exact exponential updates on the ``dt`` grid, spike
            times interpolated within the step; see :mod:`keras_spiking.eventprop`) instead of
            the discrete update above, and needs ``reset="zero"``, scalar time constants, no
            bias, no trainable time constants, no ``stateful``/``return_state``/
            ``initial_state`` and a fixed number of steps. Input and output values are
            events: a value ``phi`` in ``(0, 1]`` at step ``n`` is a spike at
            ``(n + phi) dt`` (binary spikes sit at the end of their step), which carries the
            spike timing, and its gradient, from layer to layer.

    Returns:
        Spikes ``[batch, time, units]`` (or the last step), then ``I, U`` if ``return_state``.
    """

    cell_class = cells.CubaLIFCell
    state_names = ("i", "v")

    def __init__(self, units: int, *, gradient="surrogate", **kwargs):
        super().__init__(units, **kwargs)
        self.gradient = _gradient_rule(gradient, type(self).__name__)
        if self.gradient is not None:
            self._check_eventprop_options()

    def _check_eventprop_options(self) -> None:
        cell, owner = self.cell, f"{type(self).__name__}(gradient=EventProp)"
        problems = []
        if cell.reset != "zero":
            problems.append(f"reset='zero' (got {cell.reset!r})")
        if cell.use_bias:
            problems.append("use_bias=False")
        if cell.train_time_constants:
            problems.append("train_time_constants=False")
        if isinstance(cell.tau_mem, tuple) or isinstance(cell.tau_syn, tuple):
            problems.append("scalar tau_mem and tau_syn")
        if self.stateful or self.return_state:
            problems.append("stateful=False and return_state=False")
        if problems:
            raise ValueError(f"{owner} needs " + ", ".join(problems))

    def call(self, inputs, initial_state=None, training=None):
        if self.gradient is None:
            return super().call(inputs, initial_state=initial_state, training=training)
        return self._eventprop_call(inputs, initial_state, training)

    def _eventprop_call(self, inputs, initial_state, training):
        where = f"{type(self).__name__} ({self.name}, gradient=EventProp)"
        if initial_state is not None:
            raise ValueError(f"{where}: `initial_state` is not supported; the state starts at 0")
        inputs = tf.cast(inputs, self.compute_dtype)
        self._check_rank(inputs)
        steps = inputs.shape[1]
        if steps is None:
            raise ValueError(
                f"{where} needs a fixed number of time steps, got shape {tuple(inputs.shape)}"
            )
        cell = self.cell
        kin = eventprop.Kinetics(
            tau_mem=cell.tau_mem,
            tau_syn=cell.tau_syn,
            threshold=cell.threshold,
            dt=cell.dt,
            steps=int(steps),
        )
        recurrent = cell.recurrent_kernel
        times = eventprop.spiking_layer(
            eventprop.sequence_to_times(inputs, cell.dt, check=self.check_inputs, name=where),
            tf.convert_to_tensor(cell.kernel),
            None if recurrent is None else tf.convert_to_tensor(recurrent),
            kinetics=kin,
            name=where,
            use_custom_ops=ops.call_setting(self.use_custom_ops, training),
            **self.gradient.options(),
        )
        outputs = eventprop.times_to_sequence(times, int(steps), cell.dt)
        return outputs if self.return_sequences else outputs[:, -1]

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config["gradient"] = (
            "surrogate"
            if self.gradient is None
            else keras.saving.serialize_keras_object(self.gradient)
        )
        return config

    def _scan(self, currents, states, kernels: bool = False):
        decays = (self.cell.decay("tau_syn"), self.cell.decay("tau_mem"))
        options = self._spike_options()
        if kernels:
            spikes, i, v = ops.cuba_lif_scan(currents, *states, *decays, **options)
        else:
            spikes, i, v = scan.cuba_lif_scan(
                currents,
                *states,
                *decays,
                self.cell.recurrent_weights(),
                jit=self.jit_compile,
                **options,
            )
        return spikes, [i, v]


@keras.saving.register_keras_serializable(package="keras_spiking")
class LI(SpikingSequence):
    r"""Non-spiking leaky-integrator readout over a sequence.

    .. math::  v[t] = \beta\, v[t-1] + x[t] W + b, \qquad \beta = e^{-dt/\tau_{mem}}

    Use it as the output layer and read the class scores from the membrane with one of the
    membrane losses (max, last or mean over time). States: ``[v]``.

    Args:
        units: number of outputs.
        tau_mem: time constant in seconds (default 20 ms), float or per neuron.
        dt, use_bias, train_time_constants, initializers, regularizers: as in :class:`LIF`.
        return_sequences, return_state, stateful, jit_compile, check_inputs: see
            :class:`SpikingSequence`.

    Returns:
        Membrane potentials ``[batch, time, units]`` (or the last step), then ``v``.
    """

    cell_class = cells.LICell
    state_names = ("v",)

    def _scan(self, currents, states, kernels: bool = False):
        beta, decay_grad = self.cell.decay("tau_mem"), self.cell.train_time_constants
        if kernels:
            v_all, v_last = ops.li_scan(currents, states[0], beta, decay_grad=decay_grad)
        else:
            v_all, v_last = scan.li_scan(
                currents, states[0], beta, jit=self.jit_compile, decay_grad=decay_grad
            )
        return v_all, [v_last]


# The Spiking Recurrent Cell's layer and the EventProp layers (which take spike-time tensors
# instead of sequences) live in their own modules; exported here with the others.
from keras_spiking.eventprop_layers import (  # noqa: E402
    EventPropCubaLIF,
    EventPropLI,
    SpikeTimeDropout,
)
from keras_spiking.src import SRC  # noqa: E402

__all__ = [
    "SpikingSequence",
    "LIF",
    "CubaLIF",
    "LI",
    "SRC",
    "EventPropCubaLIF",
    "EventPropLI",
    "SpikeTimeDropout",
]
