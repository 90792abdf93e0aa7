"""Spiking sequence layers over ``[batch, time, features]`` inputs: LIF, CubaLIF, LI and SRC.

Each layer is a thin class on :class:`keras_spiking.sequence.SpikingSequence` (which owns the
states, streaming, masking and the kernel dispatch): it names its cell (weights and
parameters, :mod:`keras_spiking.cells`), its states, and its scans. The feed-forward synaptic
input of every time step is one matmul (or the event-driven kernel), and only the neuron state
runs through time, on a fused scan: the C++ kernels (:mod:`keras_spiking.ops.scans`) or the
pure-TF twins (:mod:`keras_spiking.scan`, XLA-compiled, hand-written BPTT). The numbers equal
``keras.layers.RNN(cell)`` step by step; the fused path is much faster.

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

from keras_spiking import cells, eventprop, initializers, ops, scan, silence, src_scan
from keras_spiking.sequence import SpikingSequence
from keras_spiking.spiking_recurrent_cell import CONSTANT_NAMES, STATE_NAMES, SpikingRecurrentCell


def _spike_options(cell) -> dict[str, Any]:
    """The spiking cell's options shared by its TF and C++ scans."""
    return {
        "threshold": cell.threshold,
        "surrogate": cell.surrogate,
        "reset": cell.reset,
        "detach_reset": cell.detach_reset,
        "decay_grad": cell.train_time_constants,
    }


def _spiking_problem(layer: SpikingSequence, dtype, masked: bool) -> str | None:
    """What the fused spiking scans cannot do: recurrent weights, an unregistered surrogate."""
    problem = SpikingSequence.kernel_problem(layer, dtype, masked)
    if problem is None and layer.cell.recurrent_kernel is not None:
        problem = "recurrent weights (the fused scans have none)"
    return problem or ops.dispatch.surrogate_problem(layer.cell.surrogate)


def _input_current(cell, inputs, event_input: bool):
    return cell.input_current(inputs, ops.synaptic_input if event_input else None)


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
        return_sequences, return_state, stateful, jit_compile, check_inputs, use_custom_ops:
            see :class:`SpikingSequence`.

    Call arguments:
        inputs: ``[batch, time, features]``.
        initial_state: optional ``[v, S]``.

    Returns:
        Spikes (0/1) ``[batch, time, units]`` (or ``[batch, units]`` without
        ``return_sequences``), followed by ``v, S`` if ``return_state``.
    """

    cell_class = cells.LIFCell
    state_names = ("v", "s")
    event_input = True

    def kernel_problem(self, dtype, masked: bool = False) -> str | None:
        return _spiking_problem(self, dtype, masked)

    def kernel_scan(self, inputs, states):
        cell, options = self.cell, _spike_options(self.cell)
        beta = cell.decay("tau_mem")
        if cell.bias is None and cell.fused_input:  # the event-driven input fused into the scan
            spikes, v, s = ops.fused_lif_scan_with_input(
                inputs, cell.kernel, states[0], states[1], beta, **options
            )
        else:
            currents = _input_current(cell, inputs, event_input=True)
            spikes, v, s = ops.fused_lif_scan(currents, states[0], states[1], beta, **options)
        return spikes, [v, s]

    def tf_scan(self, inputs, states, mask=None, event_input: bool = False):
        if mask is not None:
            return super().tf_scan(inputs, states, mask)
        cell = self.cell
        spikes, v, s = scan.lif_scan(
            _input_current(cell, inputs, event_input),
            states[0],
            states[1],
            cell.decay("tau_mem"),
            cell.recurrent_weights(),
            jit=self.jit_compile,
            **_spike_options(cell),
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
            ``initial_state`` and a fixed number of steps. Its default
            ``kernel_initializer`` is :class:`keras_spiking.initializers.FanInNormal` (a
            positive mean, so that the neurons fire from the first batch: EventProp has no
            gradient without spikes). Input and output values are
            events: a value ``phi`` in ``(0, 1]`` at step ``n`` is a spike at
            ``(n + phi) dt`` (binary spikes sit at the end of their step), which carries the
            spike timing, and its gradient, from layer to layer.

    Returns:
        Spikes ``[batch, time, units]`` (or the last step), then ``I, U`` if ``return_state``.
    """

    cell_class = cells.CubaLIFCell
    state_names = ("i", "v")
    event_input = True

    def __init__(self, units: int, *, gradient="surrogate", **kwargs):
        rule = _gradient_rule(gradient, type(self).__name__)
        if rule is not None and kwargs.get("kernel_initializer") is None:
            # no spike, no EventProp gradient: Glorot's zero-mean weights leave sparse
            # latency-coded inputs below threshold, so the layer would train to chance
            kwargs["kernel_initializer"] = initializers.FanInNormal()
        super().__init__(units, **kwargs)
        self.gradient = rule
        if self.gradient is not None:
            self._check_eventprop_options()
            # the adjoint pass runs over the whole window: Keras drops an incoming mask with
            # its warning (as before the base took masks)
            self.supports_masking = False

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

    def _sequence_call(self, inputs, initial_state, mask, training):
        if self.gradient is None:
            return super()._sequence_call(inputs, initial_state, mask, training)
        return self._eventprop_call(inputs, initial_state, mask, training)

    def _check_fires(self, outputs, training) -> None:
        if self.gradient is None or not training:
            super()._check_fires(outputs, training)
            return
        silence.check_fires(
            self,
            tf.reduce_any(outputs > 0),
            tf.shape(outputs),
            axes=("samples", "steps", "neurons"),
            gradient="eventprop",
        )

    def _eventprop_call(self, inputs, initial_state, mask, training):
        where = f"{type(self).__name__} ({self.name}, gradient=EventProp)"
        if initial_state is not None:
            raise ValueError(f"{where}: `initial_state` is not supported; the state starts at 0")
        if mask is not None:
            raise ValueError(
                f"{where}: masked inputs are not supported (the adjoint pass runs over the whole "
                "window); remove the Masking layer or use the surrogate gradient"
            )
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
        self._check_fires(outputs, training)
        return outputs if self.return_sequences else outputs[:, -1]

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config["gradient"] = (
            "surrogate"
            if self.gradient is None
            else keras.saving.serialize_keras_object(self.gradient)
        )
        return config

    def _decays(self):
        return self.cell.decay("tau_syn"), self.cell.decay("tau_mem")

    def kernel_problem(self, dtype, masked: bool = False) -> str | None:
        return _spiking_problem(self, dtype, masked)

    def kernel_scan(self, inputs, states):
        currents = _input_current(self.cell, inputs, event_input=True)
        spikes, i, v = ops.fused_cuba_lif_scan(
            currents, *states, *self._decays(), **_spike_options(self.cell)
        )
        return spikes, [i, v]

    def tf_scan(self, inputs, states, mask=None, event_input: bool = False):
        if mask is not None:
            return super().tf_scan(inputs, states, mask)
        spikes, i, v = scan.cuba_lif_scan(
            _input_current(self.cell, inputs, event_input),
            *states,
            *self._decays(),
            self.cell.recurrent_weights(),
            jit=self.jit_compile,
            **_spike_options(self.cell),
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
        return_sequences, return_state, stateful, jit_compile, check_inputs, use_custom_ops:
            see :class:`SpikingSequence`.

    Returns:
        Membrane potentials ``[batch, time, units]`` (or the last step), then ``v``.
    """

    cell_class = cells.LICell
    state_names = ("v",)
    spiking = False
    event_input = True

    def kernel_scan(self, inputs, states):
        currents = _input_current(self.cell, inputs, event_input=True)
        beta, decay_grad = self.cell.decay("tau_mem"), self.cell.train_time_constants
        v_all, v_last = ops.fused_li_scan(currents, states[0], beta, decay_grad=decay_grad)
        return v_all, [v_last]

    def tf_scan(self, inputs, states, mask=None, event_input: bool = False):
        if mask is not None:
            return super().tf_scan(inputs, states, mask)
        beta, decay_grad = self.cell.decay("tau_mem"), self.cell.train_time_constants
        v_all, v_last = scan.li_scan(
            _input_current(self.cell, inputs, event_input),
            states[0],
            beta,
            jit=self.jit_compile,
            decay_grad=decay_grad,
        )
        return v_all, [v_last]


@keras.saving.register_keras_serializable(package="keras_spiking")
class SRC(SpikingSequence):
    r"""Spiking Recurrent Cell neurons over a ``[batch, time, features]`` sequence.

    The model of :class:`~keras_spiking.spiking_recurrent_cell.SpikingRecurrentCell` (De Geeter,
    Ernst & Drion 2024): an input integrator ``i``, a bistable fast variable ``h`` with slow
    negative feedback ``h_s``, and the output pulse ``s = ReLU(h)`` (equations there).

    ``W_s s_in`` is computed for all steps in one matmul; the state ``[i, h, h_s]`` is scanned
    with a ``tf.while_loop`` (:func:`keras_spiking.src_scan.src_sequence`), by default
    XLA-compiled with an XLA-compiled backward pass (:func:`keras_spiking.src_scan.src_scan`).
    Same numbers as
    ``keras.layers.RNN(SpikingRecurrentCell(...), zero_output_for_mask=True)``.

    Args:
        units: number of neurons.
        return_sequences: return the output of every step ``[batch, time, units]`` (default)
            or only of the last (unmasked) step ``[batch, units]``.
        return_state: also return the final states ``i, h, h_s`` (as ``keras.layers.RNN``).
        stateful: keep the final states of a call as the initial states of the next (streaming
            a long sequence in chunks); needs a fixed batch size. ``reset_states()`` zeroes them.
        jit_compile: XLA-compile the time loop and its gradient (default True); False runs
            the plain ``tf.while_loop`` differentiated by TensorFlow (same numbers, slower).
        check_inputs, use_custom_ops: see :class:`SpikingSequence` (SRC has no C++ kernels:
            ``use_custom_ops=True`` raises).
        **cell_kwargs: the options of
            :class:`~keras_spiking.spiking_recurrent_cell.SpikingRecurrentCell` (alpha, rho,
            r, r_s, z, z_hyp, z_dep, slow_gate_slope, bias_initializer, bias_max, detach_recurrent,
            straight_through, kernel_initializer, kernel_regularizer, bias_regularizer).

    Call arguments:
        inputs: ``[batch, time, features]``.
        initial_state: optional list ``[i, h, h_s]`` of [batch, units] tensors (default zeros,
            or the stored states when ``stateful``).
        mask: optional boolean ``[batch, time]`` (from ``keras.layers.Masking`` or an
            ``Embedding(mask_zero=True)``): a masked step leaves the state unchanged and
            outputs zeros.
        training: unused.

    Returns:
        Pulses ``[batch, time, units]`` (or ``[batch, units]``), then ``i, h, h_s`` if
        ``return_state``.
    """

    cell_class = SpikingRecurrentCell
    state_names = STATE_NAMES

    def tf_scan(self, inputs, states, mask=None, event_input: bool = False):
        cell = self.cell
        outputs, _, i, h, h_s = src_scan.src_scan(
            cell.input_current(inputs),  # [batch, time, units], one matmul
            *states,
            tf.cast(cell.bias, inputs.dtype),
            mask,
            jit=self.jit_compile,
            constants=tuple((name, getattr(cell, name)) for name in CONSTANT_NAMES),
            slow_gate_slope=cell.slow_gate_slope,
            detach_recurrent=cell.detach_recurrent,
            straight_through=cell.straight_through,
        )
        return outputs, [i, h, h_s]


# The EventProp layers take spike-time tensors instead of sequences; exported here too.
# Conv neuron layers and the spike-map pooling/reshaping layers (their own modules).
from keras_spiking.conv_layers import (  # noqa: E402
    ConvCubaLIF1D,
    ConvCubaLIF2D,
    ConvLI1D,
    ConvLI2D,
    ConvLIF1D,
    ConvLIF2D,
)
from keras_spiking.eventprop_layers import (  # noqa: E402
    EventPropCubaLIF,
    EventPropLI,
    SpikeTimeDropout,
)
from keras_spiking.spike_maps import (  # noqa: E402
    AveragePooling1D,
    AveragePooling2D,
    MaxPooling1D,
    MaxPooling2D,
    RepeatSteps,
    SpatialFlatten,
    SumPooling1D,
    SumPooling2D,
)

__all__ = [
    "SpikingSequence",
    "LIF",
    "CubaLIF",
    "LI",
    "SRC",
    "EventPropCubaLIF",
    "EventPropLI",
    "SpikeTimeDropout",
    "ConvLIF1D",
    "ConvLIF2D",
    "ConvCubaLIF1D",
    "ConvCubaLIF2D",
    "ConvLI1D",
    "ConvLI2D",
    "RepeatSteps",
    "SumPooling1D",
    "SumPooling2D",
    "AveragePooling1D",
    "AveragePooling2D",
    "MaxPooling1D",
    "MaxPooling2D",
    "SpatialFlatten",
]
