r"""The one base of every spiking sequence layer: states, streaming, masking, kernel dispatch.

:class:`SpikingSequence` runs a neuron population over ``[batch, time, features]`` inputs. It
owns everything that is the same for every neuron model, as ``keras.layers.RNN`` does for
Keras' cells: input checks, initial and stored (``stateful``) states, ``reset_state()``,
``return_sequences`` / ``return_state``, masking, the NaN/inf check, output shapes, config, and
the single choice per call between the C++ kernels and the pure-TF path
(:func:`keras_spiking.ops.dispatch.kernels_for_call`).

Contract for a new neuron (the toy neuron in ``tests/test_sequence_base.py`` is 30 lines):

* ``cell_class``: a Keras layer with ``units``, ``build(input_shape)`` (its weights) and
  ``call(x_t, states) -> (output_t, new_states)`` for one step ``x_t: [batch, features]``,
  states a list of ``[batch, units]`` tensors. That alone gives a working layer: the base runs
  the cell step by step in a ``tf.while_loop`` (:func:`step_loop`), masking included.
* ``state_names``: one name per state, in the cell's order.
* Optional, for speed: :meth:`SpikingSequence.tf_scan` (a whole-sequence TF scan,
  e.g. XLA-compiled with a hand-written backward), :meth:`SpikingSequence.kernel_scan` (the C++
  kernels) and :meth:`SpikingSequence.kernel_problem` (what the kernels cannot do for a call,
  so that ``use_custom_ops=True`` raises with that reason instead of silently running TF).
* Optional, for export: a cell with ``export_parameters() -> dict`` and a pure
  ``export_step(params, x_t, states, spike_fn)`` can be exported to TFLite and SavedModel
  through :mod:`keras_spiking.export` (see ``export/_graph.py``); the built-in neurons have
  their own converters.

Between layers the public interface is ``[batch, time, units]`` tensors. A layer whose kernels
find the active inputs of each row could hand them to the next layer; the hook for that is
``kernel_scan`` (it receives the inputs as they are, so a later change can pass events
alongside them without changing the layers' Keras interface).
"""

from __future__ import annotations

import warnings
from typing import Any

import keras
import tensorflow as tf

from keras_spiking import _validation, ops, silence


class _StoredStates(tf.Module):
    """The stored states of a ``stateful`` layer, held apart from Keras' weight tracking.

    Keras' layers track the variables assigned to them as weights; a ``tf.Module`` is not a
    Keras object, so its variables stay out of ``weights`` / ``get_weights()``, while
    TensorFlow still tracks them (``tf.saved_model.save`` and checkpoints see them), as
    ``keras.layers.RNN`` does for its states.
    """

    def __init__(self, variables: list):
        super().__init__(name="stored_states")
        self.variables_list = list(variables)


def step_loop(step, inputs, states, mask=None, *, units: int):
    """Runs ``step(x_t, states) -> (y_t, states)`` over ``inputs [batch, T, features]``.

    A pure-TF ``tf.while_loop`` differentiated by TensorFlow. Where ``mask[b, t]`` is False the
    state of sample ``b`` is kept and ``y_t`` is zero (as ``keras.layers.RNN`` with
    ``zero_output_for_mask=True``).

    Returns:
        ``(outputs [batch, T, units], final_states)``.
    """
    if inputs.shape[1] == 0:  # no step: the states pass through
        return tf.zeros(tf.stack([tf.shape(inputs)[0], 0, units]), inputs.dtype), list(states)
    steps = tf.shape(inputs)[1]
    # element shapes give the per-step tensors their static widths (any per-step rank: a conv
    # layer's steps are [batch, *spatial, channels])
    time_major = [1, 0, *range(2, inputs.shape.rank)]
    inputs_tm = tf.TensorArray(
        inputs.dtype, size=steps, element_shape=[None, *inputs.shape[2:]]
    ).unstack(tf.transpose(inputs, time_major))
    keep_tm = None if mask is None else tf.transpose(tf.cast(mask, tf.bool), [1, 0])[..., None]
    outputs = tf.TensorArray(inputs.dtype, size=steps, element_shape=[None, units])

    def body(t, outputs, *states):
        y, new_states = step(inputs_tm.read(t), list(states))
        new_states = [tf.cast(s, inputs.dtype) for s in new_states]
        if keep_tm is not None:
            keep = keep_tm[t]
            new_states = [tf.where(keep, new, old) for new, old in zip(new_states, states)]
            y = tf.where(keep, y, tf.zeros_like(y))
        return (t + 1, outputs.write(t, tf.cast(y, inputs.dtype)), *new_states)

    _, outputs, *final = tf.while_loop(
        lambda t, *_: t < steps,
        body,
        (tf.constant(0), outputs, *states),
        maximum_iterations=steps,
    )
    stacked = tf.transpose(outputs.stack(), [1, 0, 2])
    stacked = tf.reshape(stacked, tf.stack([tf.shape(inputs)[0], steps, units]))
    return stacked, final


def time_mask(mask):
    """A mask as ``[batch, time]``: a step counts when any of its entries does.

    ``keras.layers.Masking`` reduces only the last axis, so in front of a conv layer it gives
    ``[batch, time, *spatial]``; a step is masked only when every entry equals the mask
    value. A ``[batch, time]`` mask (or None) is returned as it is.
    """
    if mask is None:
        return None
    rank = len(mask.shape)  # keras.ops: also called on symbolic KerasTensors (compute_mask)
    if rank > 2:
        return keras.ops.any(keras.ops.cast(mask, "bool"), axis=tuple(range(2, rank)))
    return mask


def last_unmasked(outputs, mask):
    """``outputs[:, t]`` at each sample's last step where ``mask`` is True (zeros if none)."""
    mask = tf.cast(mask, tf.bool)
    steps = tf.shape(mask)[1]
    last = (
        steps
        - 1
        - tf.argmax(tf.cast(tf.reverse(mask, [1]), tf.int32), axis=1, output_type=tf.int32)
    )
    picked = tf.gather(outputs, tf.maximum(last, 0), axis=1, batch_dims=1)
    any_step = tf.reduce_any(mask, axis=1)[:, None]
    return tf.where(any_step, picked, tf.zeros_like(picked))


class SpikingSequence(keras.layers.Layer):
    """Base of the spiking sequence layers (see the module docstring for the contract).

    Args:
        units: number of neurons.
        return_sequences: return the output of every step ``[batch, time, units]`` (default)
            or only of the last (unmasked) step ``[batch, units]``.
        return_state: also return the final states (a list, as ``keras.layers.RNN`` does).
        stateful: keep the final states of one call as the initial states of the next (for
            streaming a long sequence in chunks); needs a fixed batch size. ``reset_state()``
            sets them back to zero. The stored states are not weights: ``get_weights()`` and
            ``set_weights()`` leave them out (as for Keras' stateful RNNs).
        go_backwards: run over the time axis in reverse and return the reversed sequence (as
            ``keras.layers.RNN``; ``keras.layers.Bidirectional`` sets it on its backward copy).
        jit_compile: XLA-compile the layer's own time scan (default True; set False where XLA
            is missing). Masked calls run the uncompiled step loop. This is not the model's
            ``compile(jit_compile=...)``: a model with spiking layers is not XLA-compiled as a
            whole (the C++ kernels have no XLA form; see :attr:`supports_jit`).
        check_inputs: raise a clear error on NaN or infinite inputs (checked on the final
            states, a few elements per call; see ``_check_finite``).
        use_custom_ops: ``"auto"`` (default: the global setting of :mod:`keras_spiking.ops`),
            True (require the C++ kernels: a training or eager call they cannot serve raises
            with the reason) or False (pure TF). The kernels run in training and eager calls;
            graph-traced inference and anything saved or exported use standard TF ops. Both
            paths give the same numbers up to float32 rounding.
        **cell_kwargs: the neuron parameters, passed to the layer's cell.

    Call arguments:
        inputs: ``[batch, time, features]`` float tensor. A ``stateful`` layer also takes one
            step ``[batch, features]`` (streaming sample by sample) and then returns
            ``[batch, units]``; other layers refuse rank-2 inputs with the ways to add a time
            axis (a rank-2 input to a non-stateful layer is usually a missing
            ``keras.layers.RepeatVector`` or encoder).
        initial_state: optional list of ``[batch, units]`` tensors (see ``state_names``);
            default zeros, or the stored states when ``stateful``.
        mask: optional boolean ``[batch, time]`` (from ``keras.layers.Masking`` or an
            ``Embedding(mask_zero=True)``): a masked step leaves the state unchanged and
            outputs zeros. Masked calls run the pure-TF step loop.
        training: selects where the custom kernels may run (see ``use_custom_ops``).
    """

    cell_class: type[keras.layers.Layer] = keras.layers.Layer
    state_names: tuple[str, ...] = ()
    #: whether the output is spikes (False for a readout such as LI)
    spiking: bool = True
    #: whether ``tf_scan`` can take the event-driven synaptic input kernel
    event_input: bool = False

    def __init__(
        self,
        units: int,
        *,
        return_sequences: bool = True,
        return_state: bool = False,
        stateful: bool = False,
        go_backwards: bool = False,
        jit_compile: bool = True,
        check_inputs: bool = True,
        use_custom_ops: str | bool = "auto",
        name: str | None = None,
        dtype=None,
        trainable: bool = True,
        **cell_kwargs,
    ):
        super().__init__(name=name, dtype=dtype, trainable=trainable)
        owner = type(self).__name__
        if "gradient" in cell_kwargs:
            # only CubaLIF takes a gradient rule; say so rather than Keras' "unrecognized
            # keyword arguments passed to LIFCell"
            raise TypeError(
                f"{owner}: unexpected argument `gradient` (got {cell_kwargs['gradient']!r}); it "
                "trains with its own gradient (surrogate layers choose one with `surrogate=`), "
                "and only CubaLIF takes gradient='eventprop'"
            )
        self.cell = self.cell_class(units, dtype=dtype, name="cell", **cell_kwargs)
        self.units = self.cell.units
        self.return_sequences = _validation.flag("return_sequences", return_sequences, owner)
        self.return_state = _validation.flag("return_state", return_state, owner)
        self.stateful = _validation.flag("stateful", stateful, owner)
        self.go_backwards = _validation.flag("go_backwards", go_backwards, owner)
        self.jit_compile = _validation.flag("jit_compile", jit_compile, owner)
        self.check_inputs = _validation.flag("check_inputs", check_inputs, owner)
        self.use_custom_ops = ops.validate_setting(use_custom_ops)
        self.supports_masking = True
        # the stored states of a stateful layer (see _StoredStates: not weights)
        self._stored_states = None
        self._jit_explained = False

    @property
    def supports_jit(self) -> bool:
        """False: a model with this layer is not XLA-compiled as a whole.

        Keras reads this when ``compile(jit_compile=True)`` asks for XLA (and for
        ``jit_compile="auto"`` on a GPU machine); the first read says why, once per layer:
        in training the layer runs C++ kernels, which have no XLA form, and a host-side check
        that its neurons fire. The layer's own time scan is XLA-compiled (``jit_compile=True``
        on the layer, the default), so the step still runs a compiled scan between plain TF
        ops; that is the fast form on a CPU.
        """
        if not self._jit_explained:
            self._jit_explained = True
            warnings.warn(
                f"{type(self).__name__} layer {self.name!r}: Keras asked whether the model can "
                "be XLA-compiled as a whole (compile(jit_compile=True), or 'auto' on a machine "
                "with a GPU); a model with keras_spiking layers cannot, so its train step runs "
                "as a TensorFlow graph without whole-step XLA (Keras says so next if you asked "
                "for True). Why: in training these layers run C++ kernels, which have no XLA "
                "form, and check on the host that their neurons fire. What is compiled instead: "
                "each layer's own time scan (the layer's jit_compile=True, the default). Pass "
                "compile(jit_compile=False) to skip this message.",
                UserWarning,
                stacklevel=2,
            )
        return False

    @supports_jit.setter
    def supports_jit(self, value) -> None:
        # keras.layers.Layer.__init__ sets the attribute; the property above decides
        pass

    @property
    def states(self) -> list | None:
        """The stored states of a ``stateful`` layer (``tf.Variable``, not weights), or None."""
        return None if self._stored_states is None else self._stored_states.variables_list

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

    # ---- build and stored states ---------------------------------------------------------
    def build(self, input_shape):
        input_shape = tuple(input_shape)
        if len(input_shape) == 2:
            if not self.stateful:
                raise ValueError(self._no_time_axis(input_shape))
            input_shape = (input_shape[0], 1, input_shape[1])  # one step
        if len(input_shape) != 3:
            raise ValueError(
                f"{type(self).__name__} expects inputs of shape [batch, time, features], got "
                f"shape {input_shape}"
            )
        self.cell.build(input_shape)
        # the rank is checked in `call` with our own message; Keras checks the feature axis
        self.input_spec = keras.layers.InputSpec(axes={-1: input_shape[-1]})
        self._build_stored_states(input_shape)
        self.built = True

    def _build_stored_states(self, input_shape) -> None:
        """The stored states of a ``stateful`` layer, ``[batch, units]`` each (else nothing)."""
        if self.stateful:
            if input_shape[0] is None:
                raise ValueError(
                    f"{type(self).__name__}(stateful=True) needs a fixed batch size, got input "
                    f"shape {input_shape}; use keras.Input(shape, batch_size=N)"
                )
            states = [
                tf.Variable(
                    tf.zeros((input_shape[0], self.units), self.variable_dtype),
                    trainable=False,
                    name=f"state_{name}",
                )
                for name in self.state_names
            ]
            self._stored_states = _StoredStates(states)

    def reset_state(self) -> None:
        """Sets the stored states of a ``stateful`` layer back to zero."""
        if not self.stateful:
            raise ValueError(
                f"{type(self).__name__}: reset_state() (or reset_states()) needs stateful=True"
            )
        for state in self.states or []:
            state.assign(tf.zeros_like(state))

    def reset_states(self) -> None:
        """Alias of :meth:`reset_state` (the Keras 2 name)."""
        self.reset_state()

    def load_own_variables(self, store):
        """Loads a ``.keras`` file; files written before 0.2 hold the stored states as weights.

        Those states are restored into a ``stateful`` layer (as they were) and otherwise
        ignored; any other variables in the file are an error naming the layer.
        """
        keys = list(store.keys())
        cell_weights = {id(w) for w in self.cell.weights}
        if any(id(w) not in cell_weights for w in self.weights):
            super().load_own_variables(store)  # a subclass with weights of its own: Keras' rule
            return
        if not keys:
            return
        if len(keys) == len(self.state_names):
            if self.stateful and self.states is not None:
                for i, state in enumerate(self.states):
                    state.assign(tf.cast(store[f"{i}"], state.dtype))
            return
        raise ValueError(
            f"{type(self).__name__} ({self.name}): the file holds {len(keys)} variables of the "
            f"layer itself; expected none (or the {len(self.state_names)} stored states "
            f"{list(self.state_names)} of a file written before the states stopped being "
            "weights)"
        )

    # ---- call ----------------------------------------------------------------------------
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

    #: rank of one step of the input, ``[batch, features]`` (a conv layer's is higher)
    _step_rank = 2

    def call(self, inputs, initial_state=None, mask=None, training=None):
        mask = time_mask(mask)
        one_step = self._one_step(inputs)
        if one_step:
            inputs = tf.expand_dims(inputs, 1)
        if self.go_backwards:
            inputs = tf.reverse(inputs, [1])
            mask = None if mask is None else tf.reverse(mask, [1])
        result = self._sequence_call(inputs, initial_state, mask, training)
        outputs = result[0] if self.return_state else result
        if one_step and self.return_sequences:
            outputs = outputs[:, 0]
        if self.spiking:
            silence.tag_spikes(outputs, self)
        return [outputs, *result[1:]] if self.return_state else outputs

    def _one_step(self, inputs) -> bool:
        """Whether a rank-2 input is one step of a stateful layer (else rank 2 is refused)."""
        rank = getattr(inputs, "shape", None)
        if rank is None or len(inputs.shape) != self._step_rank:
            return False
        if self.stateful:
            return True
        raise ValueError(self._no_time_axis(tuple(inputs.shape)))

    def _no_time_axis(self, shape: tuple) -> str:
        return (
            f"{type(self).__name__} ({self.name}) expects inputs of shape [batch, time, "
            f"features], got shape {shape} (no time axis). For a constant input over T steps "
            "put keras.layers.RepeatVector(T) before it; for spikes, an encoder "
            "(keras_spiking.encoders.RateEncoder / LatencyEncoder); for one step at a time, "
            "stateful=True (a stateful layer takes [batch, features] as one step) or "
            "x[:, None, :]."
        )

    def _check_fires(self, outputs, training) -> None:
        """Warns once if no neuron fired over the training batch (``outputs``: all steps).

        The test ``any(outputs > 0)`` runs in two stages: the last step ``[batch, units]``
        first, and the whole ``[batch, time, units]`` output only when no neuron fired there.
        Same result; the full pass (a compare and a reduction over every output, ~10 ms of a
        ~180 ms step for a conv layer of 24x24x15 neurons at batch 64, T = 20) then runs only
        for a layer that is silent at its last step.
        """
        if not (training and self.spiking):
            return
        if outputs.shape[1] is None or outputs.shape[1] == 0:
            fired = tf.reduce_any(outputs > 0)
        else:
            fired = tf.cond(
                tf.reduce_any(outputs[:, -1] > 0),
                lambda: tf.constant(True),
                lambda: tf.reduce_any(outputs > 0),
            )
        silence.check_fires(
            self,
            fired,
            tf.shape(outputs),
            axes=("samples", "steps", "neurons"),
            gradient="surrogate",
        )

    def _sequence_call(self, inputs, initial_state, mask, training):
        """The layer's call on a ``[batch, time, features]`` sequence (``call`` wraps it)."""
        inputs = tf.cast(inputs, self.compute_dtype)
        self._check_rank(inputs)
        states = self._initial_states(inputs, initial_state)
        problem = self.kernel_problem(inputs.dtype, masked=mask is not None)
        # without the fused path, the event-driven synaptic input may still serve the TF scan
        partial = (
            self.event_input and mask is None and ops.dispatch.dtype_problem(inputs.dtype) is None
        )
        kernels = ops.kernels_for_call(
            self.use_custom_ops,
            training,
            problem=problem,
            usable=problem is None or partial,
            owner=f"{type(self).__name__} ({self.name})",
        )
        if kernels and problem is None:
            outputs, final_states = self.kernel_scan(inputs, states)
        else:
            outputs, final_states = self.tf_scan(inputs, states, mask, event_input=kernels)
        if self.check_inputs:
            outputs, final_states = self._check_finite(outputs, final_states)
        self._check_fires(outputs, training)  # on every step, before `return_sequences`
        if self.stateful:
            for variable, value in zip(self.states, final_states):
                variable.assign(tf.cast(value, variable.dtype))
        if not self.return_sequences:
            outputs = outputs[:, -1] if mask is None else last_unmasked(outputs, mask)
        if self.return_state:
            return [outputs, *final_states]
        return outputs

    # ---- what a neuron layer may override --------------------------------------------------
    def tf_scan(self, inputs, states, mask=None, event_input: bool = False):
        """The TF scan: ``(outputs [batch, T, units], final_states)``.

        Default: the cell's step in a ``tf.while_loop`` (:func:`step_loop`), masking included.
        Layers override it with a whole-sequence scan and call this one for masked inputs.
        ``event_input``: the dispatch allows the event-driven synaptic input kernel
        (:func:`keras_spiking.ops.synaptic_input`) for the input current; False means pure TF.
        """
        return step_loop(lambda x, s: self.cell(x, s), inputs, states, mask, units=self.units)

    def kernel_scan(self, inputs, states):
        """The C++ path, same contract as :meth:`tf_scan` without a mask.

        Called only when :meth:`kernel_problem` returned None and the dispatch chose the
        kernels.
        """
        raise NotImplementedError(f"{type(self).__name__} has no C++ kernels")

    def kernel_problem(self, dtype, masked: bool = False) -> str | None:
        """What the C++ kernels cannot do for a call (None: they can serve it).

        Layers with kernels extend it with their own limits (surrogate, recurrence, ...).
        """
        if type(self).kernel_scan is SpikingSequence.kernel_scan:
            return f"{type(self).__name__} has no C++ kernels"
        if masked:
            return "a mask (the kernels do not skip masked steps; masked calls run the TF loop)"
        return ops.dispatch.dtype_problem(dtype)

    # ---- Keras plumbing ------------------------------------------------------------------
    def compute_mask(self, inputs, mask=None):
        output_mask = time_mask(mask) if self.return_sequences else None
        if output_mask is not None and self.go_backwards:
            output_mask = tf.reverse(output_mask, [1])  # the outputs are in reversed order
        if self.return_state:
            return [output_mask] + [None for _ in self.state_names]
        return output_mask

    def compute_output_shape(self, inputs_shape, initial_state_shape=None):
        batch, steps = inputs_shape[0], inputs_shape[1]
        output = (batch, steps, self.units) if self.return_sequences else (batch, self.units)
        if len(inputs_shape) == 2:  # one step of a stateful layer
            output = (batch, self.units)
        if self.return_state:  # a tuple, as keras.layers.RNN (Bidirectional concatenates it)
            return (output, *[(batch, self.units) for _ in self.state_names])
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
                "go_backwards": self.go_backwards,
                "jit_compile": self.jit_compile,
                "check_inputs": self.check_inputs,
                "use_custom_ops": self.use_custom_ops,
            }
        )
        return config
