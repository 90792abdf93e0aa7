r"""SavedModel export for serving (TF Serving, ``tf.saved_model.load``, ``saved_model_cli``).

:func:`to_saved_model` writes a SavedModel of a ``tf.Module`` with two signatures, both built
from the static graph of :mod:`keras_spiking.export._graph` (standard TF ops only, no
keras_spiking code or C++ kernel needed to load or serve it):

* ``"serving_default"``, the sequence model: input ``inputs`` ``[batch, T, features]``
  float32, output ``outputs``, the last layer's ``[batch, T, units]`` (``[batch, units]``
  when that layer has ``return_sequences=False``), from zero initial states. The time loop is
  a ``tf.while_loop`` over the one-step graph, so ``T`` may be left dynamic.
* ``"step"``, the streaming step: inputs ``x`` ``[batch, features]`` and one ``[batch, n]``
  tensor per neuron state, named after :func:`~keras_spiking.export._graph.state_specs` with
  ``"/"`` (and any character other than an ASCII letter, digit or ``_``) replaced by ``"_"``
  (``lif_v``, ``lif_s``, ``cuba_lif_i``, ...); outputs ``output`` (the last layer's
  ``[batch, units]``) and the new states under the same names. The client starts from zeros
  and feeds the new states back each step.

Conv networks (``ConvLIF2D`` ... ``SpatialFlatten``, :mod:`keras_spiking.export._graph`):
``inputs`` is ``[batch, T, *spatial, channels]`` and ``x`` one step's ``[batch, *spatial,
channels]``; a conv readout's ``outputs``/``output`` are maps ``[batch, (T,) *spatial_out,
filters]``. Conv states are flat ``[batch, neurons]`` (row-major over ``[*spatial_out,
filters]``; reshape to ``[batch, *spatial_out, filters]`` for the map). A model that starts
with ``RepeatSteps(T)`` (or ``RepeatVector(T)``) takes the static input ``[batch, *step]``
in ``serving_default`` (held for its ``T`` steps, as the model does) and the same
``x [batch, *step]`` at every call of ``step``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence

import keras
import tensorflow as tf

from keras_spiking.export import _graph
from keras_spiking.export._registry import ExportError

TARGET = "saved_model"

# op types of the optional C++ kernels; an exported graph must never contain them
CUSTOM_OP_PREFIX = "KerasSpiking"


def _check_positive_int(name: str, value) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(
            f"{name}: expected None or a positive int, got {type(value).__name__} {value!r}"
        )
    if value < 1:
        raise ValueError(f"{name}: expected None or a positive int, got {value!r}")
    return value


def _check_path(path) -> str:
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(
            f"path: expected a str or os.PathLike directory, got {type(path).__name__} {path!r}"
        )
    path = os.fspath(path)
    if isinstance(path, bytes) or not path:
        raise ValueError(f"path: expected a non-empty directory name, got {path!r}")
    if os.path.exists(path) and not os.path.isdir(path):
        raise ValueError(
            f"path: expected a directory for the SavedModel, got existing file {path!r}"
        )
    return path


def _check_model(model: keras.Model) -> list[_graph.NeuronLayer]:
    """The model's neuron specs; ExportError for what the signatures cannot express."""
    if not isinstance(model, keras.Model):
        raise TypeError(f"model: expected a keras.Model, got {type(model).__name__} {model!r}")
    specs = _graph.neuron_layers(model, TARGET, skip_leading_repeat=True)
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ExportError(
            f"{TARGET} export needs a model with one input and one output, got "
            f"{len(model.inputs)} inputs and {len(model.outputs)} outputs (is a layer "
            "return_state=True?)"
        )
    layers = {layer.name: layer for layer in model.layers}
    for spec in specs[:-1]:
        if not getattr(layers[spec.name], "return_sequences", True):
            raise ExportError(
                f"{TARGET} export: layer {spec.name!r} has return_sequences=False but is not "
                "the last layer; only the last layer may drop the time axis"
            )
    return specs


def _state_keys(specs: Sequence[_graph.NeuronLayer]) -> list[str]:
    """Signature names of the states: ``state_specs`` names with non-ASCII-word chars as ``_``."""
    keys = [re.sub(r"[^0-9A-Za-z_]", "_", name) for name, _ in _graph.state_specs(specs)]
    clashes = sorted({key for key in keys if keys.count(key) > 1 or key in ("x", "output")})
    if clashes:
        raise ExportError(
            f"{TARGET} export: state names {clashes} clash after replacing '/' and "
            "other non-ASCII-word characters with '_'; rename the layers"
        )
    return keys


class _Exported(tf.Module):
    """The exported network: the sequence and step functions over the static graph."""

    def __init__(
        self,
        specs: Sequence[_graph.NeuronLayer],
        last_sequences: bool,
        repeat: int | None = None,
    ):
        super().__init__(name="keras_spiking_export")
        self._specs = list(specs)
        self._units = [units for _, units in _graph.state_specs(specs)]
        self._last_sequences = last_sequences
        self._repeat = repeat

    def sequence(self, inputs: tf.Tensor) -> dict[str, tf.Tensor]:
        batch = tf.shape(inputs)[0]
        static_batch = inputs.shape[0]
        if self._repeat is not None:  # a static input held for `repeat` steps
            inputs = tf.repeat(inputs[:, None], self._repeat, axis=1)
        rank = inputs.shape.rank
        time_major = tf.transpose(inputs, [1, 0, *range(2, rank)])
        steps = tf.shape(time_major)[0]
        states = [tf.zeros(tf.stack([batch, units])) for units in self._units]
        out_shape = list(self._specs[-1].step_output_shape)
        outputs = tf.TensorArray(
            tf.float32, size=steps, element_shape=tf.TensorShape([static_batch, *out_shape])
        )

        def body(t, outputs, *states):
            out, new_states = _graph.step(self._specs, time_major[t], list(states))
            return (t + 1, outputs.write(t, out), *new_states)

        _, outputs, *_ = tf.while_loop(
            lambda t, *_: t < steps, body, (tf.constant(0), outputs, *states)
        )
        # an empty TensorArray with a dynamic batch cannot stack: T = 0 gives [batch, 0, units]
        stacked = tf.cond(
            steps > 0,
            outputs.stack,
            lambda: tf.zeros(tf.stack([0, batch, *out_shape])),
        )
        stacked.set_shape([inputs.shape[1], static_batch, *out_shape])  # lost in the loop
        sequence = tf.transpose(stacked, [1, 0, *range(2, len(out_shape) + 2)])
        return {"outputs": sequence if self._last_sequences else sequence[:, -1]}

    def step(self, x: tf.Tensor, states: Sequence[tf.Tensor], keys: Sequence[str]):
        out, new_states = _graph.step(self._specs, x, list(states))
        return {"output": out, **dict(zip(keys, new_states))}


def _op_types(function) -> set[str]:
    """Op types of a concrete function's graph, its library functions (loop bodies) included."""
    graph_def = function.graph.as_graph_def()
    types = {node.op for node in graph_def.node}
    for library_function in graph_def.library.function:
        types.update(node.op for node in library_function.node_def)
    return types


def to_saved_model(
    model: keras.Model,
    path: str | os.PathLike,
    *,
    num_steps: int | None = None,
    batch_size: int | None = None,
) -> str:
    """Writes ``model`` as a SavedModel with a sequence and a streaming-step serving signature.

    The graph is rebuilt from the layers' weights (LIF with either reset and optional
    recurrent weights, CubaLIF, LI, their conv forms; layers that are the identity at
    inference, such as Dropout or RandomTranslation, are skipped) with standard TF ops,
    weights as constants: loading it needs only TensorFlow (``tf.saved_model.load``, TF Serving,
    ``saved_model_cli``), neither keras_spiking nor its C++ kernels. Both signatures start
    from the state the client gives; the sequence signature from zeros (a ``stateful``
    layer's stored state is not exported: stream with the ``"step"`` signature instead).

    Signatures (see the module docstring for the names):

    * ``"serving_default"``: ``inputs [batch, T, features]`` -> ``outputs [batch, T, units]``
      (``[batch, units]`` when the last layer has ``return_sequences=False``). The steps run
      in a ``tf.while_loop`` (a serving box, unlike TFLite, needs no static unrolling), so
      ``T`` may be dynamic.
    * ``"step"``: ``x [batch, features]`` plus one ``[batch, n]`` input per state ->
      ``output [batch, units]`` plus the new states under the input names.

    Args:
        model: a built Keras model whose layers form one chain of LIF / CubaLIF / LI layers
            (and Dropout), one input, one output.
        path: directory to write the SavedModel into (created; files of an earlier
            SavedModel there are overwritten, as ``tf.saved_model.save`` does).
        num_steps: time steps ``T`` of the ``"serving_default"`` input; default the model's
            time dimension, and a model with a dynamic time dimension exports a dynamic
            ``T``. The dynamics do not depend on ``T``, so any value may be given.
        batch_size: fixed batch size of both signatures; default None (dynamic).

    Returns:
        ``path`` as a string.

    Raises:
        ExportError: for a layer the export cannot express (named, with the target
            ``saved_model``), an unbuilt model, more than one input or output, or
            ``return_sequences=False`` on a layer that is not the last.
        TypeError: ``model`` not a ``keras.Model``; ``path``, ``num_steps`` or
            ``batch_size`` of the wrong type.
        ValueError: an empty ``path`` or one that is an existing file; ``num_steps`` or
            ``batch_size`` below 1.

    Example (``model`` a built keras_spiking model, ``x`` a batch of its inputs)::

        path = keras_spiking.export.to_saved_model(model, "snn_savedmodel")
        served = tf.saved_model.load(path)
        y = served.signatures["serving_default"](inputs=x)["outputs"]
    """
    num_steps = _check_positive_int("num_steps", num_steps)
    batch_size = _check_positive_int("batch_size", batch_size)
    path = _check_path(path)
    specs = _check_model(model)
    keys = _state_keys(specs)
    repeat = _graph.leading_repeat(model)
    step_shape = list(specs[0].step_input_shape)
    if repeat is not None:
        sequence_shape = [batch_size, *step_shape]
    else:
        if num_steps is None:
            num_steps = model.inputs[0].shape[1]
        sequence_shape = [batch_size, num_steps, *step_shape]
    last_sequences = bool(getattr(model.get_layer(specs[-1].name), "return_sequences", True))

    module = _Exported(specs, last_sequences, repeat)
    sequence = tf.function(
        module.sequence,
        input_signature=[tf.TensorSpec(sequence_shape, tf.float32, "inputs")],
    ).get_concrete_function()
    state_signature = [
        tf.TensorSpec([batch_size, units], tf.float32, key)
        for key, (_, units) in zip(keys, _graph.state_specs(specs))
    ]

    def step(x, *states):
        return module.step(x, states, keys)

    step = tf.function(
        step,
        input_signature=[
            tf.TensorSpec([batch_size, *step_shape], tf.float32, "x"),
            *state_signature,
        ],
    ).get_concrete_function()

    custom = sorted(
        op
        for function in (sequence, step)
        for op in _op_types(function)
        if op.startswith(CUSTOM_OP_PREFIX)
    )
    if custom:  # _graph builds from standard ops; guard against a regression there
        raise ExportError(f"{TARGET} export: the graph contains custom ops {custom}")

    tf.saved_model.save(module, path, signatures={"serving_default": sequence, "step": step})
    return path
