r"""TFLite export of LIF / CubaLIF / LI models: float or full int8, sequence or streaming.

The graph is rebuilt from the layers' weights by :mod:`keras_spiking.export._graph` (never by
converting the layers' time scan, whose while-loop neither calibrates nor runs in TFLite
Micro), traced as a ``tf.function`` with static shapes and converted by
``tf.lite.TFLiteConverter.from_concrete_functions``. Two forms:

* ``mode="sequence"``: the whole window of ``num_steps`` steps unrolled into one static graph,
  zero initial states; input ``x [batch, num_steps, features]`` (or ``[batch, features]`` for a
  model that starts with ``keras.layers.RepeatVector``, the constant-current "direct"
  encoding), output ``y [batch, num_steps, units]`` exactly as the Keras model returns it.
* ``mode="streaming"``: one time step whose neuron state is an explicit input and output, so
  the host (or a microcontroller's loop) keeps the state and feeds it back; there are no
  variables, loops or control flow in the graph. Inputs ``(x_t, *states)``, outputs
  ``(y_t, *new_states)``, states in the order of :func:`streaming_states` (``layer/v`` etc.).
  Start from zero states. When the last layer is an ``LI`` readout its output *is* its new
  membrane, so ``y_t`` and the last new state are the same tensor (listed twice).

Quantization ``"int8"`` is full integer: int8 inputs, outputs, weights and activations (int32
biases, as TFLite's int8 scheme has them). Scales come from calibration on
``representative_data``; for the streaming model the calibration states are produced by
running the float step over the representative sequences, so the states' int8 ranges cover
what the network really reaches. In int8 each state input and its new-state output have their
own scale: a host loop converts one to the other, :math:`q_{in} = \mathrm{round}((q_{out} -
z_{out}) s_{out} / s_{in}) + z_{in}` (see :func:`requantize`).

Spikes. The Heaviside step :math:`S = H(u - \theta)` is written so int8 keeps it exact 0/1:

* default: ``where(u > theta, 1, 0)`` (GREATER + SELECT_V2, all int8);
* ``edgetpu=True``: the Edge TPU has neither GREATER nor SELECT, so the step is a clipped steep
  ramp :math:`S = \min(\mathrm{relu}(k (u - \theta)), 1)` (SUB, MUL with the ReLU fused,
  MINIMUM), computed as :math:`k u - k \theta` so the int8 product keeps :math:`u`'s own grid.
  With :math:`k` at least one over :math:`u`'s int8 step (range / 255, from the float
  calibration run; four times that is used) the smallest non-zero value of the ramp is at
  least 1, so after the clip the spike is exactly 0 or 1 on the int8 grid, and the threshold
  is resolved to :math:`u`'s int8 step.

Known limits of the ramp form, measured on a digits model (hidden LIF layer exported alone,
8 steps): the converter's quantizer sometimes gives ``u`` of the *last* unrolled step the
scale of the ramp's product (``u`` then has a single consumer), which coarsens that step's
threshold (80% of its spikes agree with Keras against 96-99.9% for the other steps), and where
:math:`k\theta` falls within one unit below a grid point of :math:`k u` the clip lets a
fraction through (1.3% of the spikes of one step were fractional). Class decisions still
agreed with Keras on >= 99% of held-out images in the tests; the select form has neither issue.

Conv networks (``ConvLIF1D/2D``, ``ConvCubaLIF1D/2D``, ``ConvLI1D/2D``, the spike-map pooling
layers, ``SpatialFlatten``, a leading ``RepeatSteps``; see :mod:`keras_spiking.export._graph`)
export the same way: ``x`` is ``[batch, T, *spatial, channels]`` (``[batch, *spatial,
channels]`` after ``RepeatSteps``), each conv is a ``CONV_2D`` (1-D as height 1; ``groups > 1``
as SPLIT, one CONV_2D per group, CONCATENATION), pooling is ``AVERAGE_POOL_2D`` (times the
window for sum pooling; PAD first for ``"same"``) or ``MAX_POOL_2D``, and the streaming
model's conv states are flat ``[batch, neurons]`` (row-major over ``[*spatial_out,
filters]``), named ``layer/v`` etc. as the dense ones.

Use :func:`tflite_ops` to list the operators of a flatbuffer (every exported model's list is
checked in the tests: no Flex/SELECT_TF ops, no WHILE, SHAPE, FILL or GATHER).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from keras_spiking.export import _graph, _native_output
from keras_spiking.export._registry import ExportError

MODES = ("sequence", "streaming")
QUANTIZE = (None, "int8")
# steepness of the Edge TPU ramp: k = RAMP_GAIN * 255 / (narrowest calibrated range of u); a
# gain of at least one over u's int8 step is needed, the factor 4 is margin for the
# converter's own calibration of the same tensors
RAMP_GAIN = 4.0
_TARGET = "tflite"


# --------------------------------------------------------------------------------------------
# reading the model
# --------------------------------------------------------------------------------------------


def _read_model(model: keras.Model) -> tuple[list[_graph.NeuronLayer], int | None, int | None]:
    """The model's neuron layers, leading ``RepeatVector`` size and time dimension.

    Returns ``(specs, repeat, time_steps)``; ``repeat`` and ``time_steps`` are None when there
    is no ``RepeatVector`` or no static time dimension.
    """
    if not isinstance(model, keras.Model):
        raise TypeError(f"to_tflite: `model` must be a keras.Model, got {type(model).__name__}")
    specs = _graph.neuron_layers(model, _TARGET, skip_leading_repeat=True)
    layers = {layer.name: layer for layer in model.layers}
    for spec in specs[:-1]:
        if not getattr(layers.get(spec.name), "return_sequences", True):
            raise ExportError(
                f"{_TARGET} export: layer {spec.name!r} has return_sequences=False but is not "
                "the last layer; only the last layer may drop the time axis"
            )
    repeat = _graph.leading_repeat(model)
    shape = tuple(model.inputs[0].shape) if model.inputs else ()
    time_steps = repeat if repeat is not None else (shape[1] if len(shape) >= 3 else None)
    return specs, repeat, time_steps


def streaming_states(model: keras.Model) -> list[tuple[str, int]]:
    """``(name, units)`` of the streaming model's state inputs/outputs, in their order."""
    return _graph.state_specs(_read_model(model)[0])


# --------------------------------------------------------------------------------------------
# the graphs
# --------------------------------------------------------------------------------------------


def _ramp_spike_fn(gain: float) -> _graph.SpikeFn:
    """``min(relu(gain * (u - theta)), 1)``: a step on the int8 grid, with Edge TPU ops only."""

    def spike(u, threshold):
        # k u - k theta (not k (u - theta)): the int8 MUL then keeps u's own grid, scaled by k.
        # k is a per-neuron vector: a MUL by a scalar constant is taken by the quantizer as a
        # pure rescale and its output scale pushed back onto u, which then loses its grid
        k = np.full(u.shape[-1], gain, np.float32)
        return tf.minimum(tf.nn.relu(u * k - threshold * k), 1.0)

    return spike


def _sequence(specs, x, num_steps: int, repeat: bool, spike_fns, batch_size: int):
    """The window unrolled from zero (constant) states; ``x`` is ``[b, T, f]`` or ``[b, f]``."""
    states = [tf.constant(s) for s in _graph.zero_states(specs, batch_size)]
    outputs = []
    for t in range(num_steps):
        y, states = _graph.step(specs, x if repeat else x[:, t], states, spike_fns)
        outputs.append(y)
    return tf.stack(outputs, axis=1)


def _state_key(name: str) -> str:
    """A signature-safe name of a state (``lif1/v`` -> ``lif1_v``)."""
    return "".join(c if c.isalnum() or c == "_" else "_" for c in name)


def _spike_gains(specs, batches, repeat: bool) -> list[float]:
    """Per spiking layer, the Edge TPU ramp gain from the float run over ``batches``.

    The int8 grid step of ``u`` is its calibrated range / 255, and in the unrolled sequence
    every step's ``u`` is its own tensor with its own range; the narrowest of them (over the
    steps, each range taken over all batches) sets the gain, so ``gain * step >= RAMP_GAIN``
    for every tensor.
    """
    low: dict[tuple[int, int], float] = {}
    high: dict[tuple[int, int], float] = {}
    step = [0]

    def record(index):
        def spike(u, threshold):
            key = (index, step[0])
            low[key] = min(low.get(key, np.inf), float(tf.reduce_min(u)))
            high[key] = max(high.get(key, -np.inf), float(tf.reduce_max(u)))
            return _graph.default_spike_fn(u, threshold)

        return spike

    fns = [record(i) for i in range(len(specs))]
    for x, num_steps in batches:
        states = _graph.zero_states(specs, x.shape[0])
        for t in range(num_steps):
            step[0] = t
            _, states = _graph.step(specs, x if repeat else x[:, t], states, fns)
    gains = []
    for index, spec in enumerate(specs):
        if spec.kind in ("li", "op"):
            gains.append(0.0)
            continue
        ranges = [high[key] - low[key] for key in high if key[0] == index]
        # zero is always inside a calibrated range, so a range is at least |theta|-free
        # positive unless u never moves; fall back to the threshold's own size then
        narrowest = min([r for r in ranges if r > 0], default=max(abs(spec.threshold), 1.0))
        gains.append(RAMP_GAIN * 255.0 / narrowest)
    return gains


# --------------------------------------------------------------------------------------------
# conversion
# --------------------------------------------------------------------------------------------


def _check_options(mode, quantize, representative_data, num_steps, batch_size, edgetpu, path):
    if mode not in MODES:
        raise ValueError(f"to_tflite: `mode` expected one of {MODES}, got {mode!r}")
    if quantize not in QUANTIZE:
        raise ValueError(f"to_tflite: `quantize` expected one of {QUANTIZE}, got {quantize!r}")
    if num_steps is not None and (
        isinstance(num_steps, bool) or not isinstance(num_steps, (int, np.integer)) or num_steps < 1
    ):
        raise ValueError(f"to_tflite: `num_steps` expected None or an int >= 1, got {num_steps!r}")
    if (
        isinstance(batch_size, bool)
        or not isinstance(batch_size, (int, np.integer))
        or batch_size < 1
    ):
        raise ValueError(f"to_tflite: `batch_size` expected an int >= 1, got {batch_size!r}")
    if not isinstance(edgetpu, bool):
        raise TypeError(f"to_tflite: `edgetpu` expected a bool, got {edgetpu!r}")
    if edgetpu and quantize != "int8":
        raise ValueError(
            f"to_tflite: `edgetpu=True` expected quantize='int8' (the Edge TPU runs int8 only), "
            f"got quantize={quantize!r}"
        )
    if quantize == "int8" and representative_data is None:
        raise ValueError(
            "to_tflite: quantize='int8' expected `representative_data` (input sequences to "
            "calibrate the int8 ranges, e.g. a few hundred training samples), got None"
        )
    if path is not None and not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"to_tflite: `path` expected None, a str or a path, got {path!r}")


def _representative(data, step_shape: tuple, repeat: bool, batch_size: int) -> np.ndarray:
    """``representative_data`` as float32 ``[n, T, *step]`` (``[n, *step]`` when repeated)."""
    try:
        array = np.asarray(data, dtype=np.float32)
    except (TypeError, ValueError):
        raise ValueError(
            "to_tflite: `representative_data` expected an array of input samples, "
            f"got {type(data).__name__}"
        ) from None
    want = len(step_shape) + (1 if repeat else 2)
    if len(step_shape) == 1:
        form = "[n, features]" if repeat else "[n, time, features]"
        what = f"{step_shape[0]} features"
    else:
        form = "[n, *step]" if repeat else "[n, time, *step]"
        what = f"steps of shape {step_shape}"
    if array.ndim != want or tuple(array.shape[-len(step_shape) :]) != tuple(step_shape):
        raise ValueError(
            f"to_tflite: `representative_data` expected shape {form} with {what}, "
            f"got shape {array.shape}"
        )
    if array.shape[0] < batch_size:
        raise ValueError(
            f"to_tflite: `representative_data` expected at least batch_size={batch_size} "
            f"samples, got {array.shape[0]}"
        )
    if not np.all(np.isfinite(array)):
        raise ValueError("to_tflite: `representative_data` expected finite values, got NaN or inf")
    return array


def _reorder_io(flatbuffer: bytes, inputs: list[str], outputs: list[str]) -> bytes:
    """Puts the subgraph's inputs and outputs in the given signature-name order.

    The converter orders them by its own rules (sorted signature names, deduplicated
    tensors), not by the function's argument order; the signature keeps the names.
    """
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromPackedBuf(flatbuffer, 0)
    signature = model.signatureDefs[0]
    by_name = {t.name.decode(): t.tensorIndex for t in signature.inputs}
    by_name_out = {t.name.decode(): t.tensorIndex for t in signature.outputs}
    graph = model.subgraphs[signature.subgraphIndex]
    graph.inputs = np.array([by_name[name] for name in inputs], np.int32)
    graph.outputs = np.array([by_name_out[name] for name in outputs], np.int32)
    builder = flatbuffers.Builder(len(flatbuffer) + 1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


# int8 kernels that read their inputs' scales when they are prepared (and so take any scale);
# FULLY_CONNECTED only without a bias (an int32 bias is stored in input scale x weight scale)
_SCALE_FREE = {"ADD", "SUB", "MUL", "GREATER", "GREATER_EQUAL", "LESS", "LESS_EQUAL"}


def _tie_state_scales(flatbuffer: bytes) -> bytes:
    """Gives each int8 state input the scale and zero point of its new-state output.

    The new state of step ``t`` is the state input of step ``t + 1``, so the output's
    calibrated range is the right range for the input too (zero, the initial state, is always
    representable). With equal parameters a host or MCU loop copies the output bytes to the
    input unchanged. A state is left alone when one of its consumers fixes its input scale
    at conversion (see ``_SCALE_FREE``); :func:`requantize` then converts.
    """
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromPackedBuf(flatbuffer, 0)
    graph = model.subgraphs[0]
    names = _builtin_names()
    changed = False
    for position in range(1, len(graph.inputs)):
        tensor_in = graph.tensors[graph.inputs[position]]
        tensor_out = graph.tensors[graph.outputs[position]]
        q_in, q_out = tensor_in.quantization, tensor_out.quantization
        if q_in is None or q_out is None or q_in.scale is None or q_out.scale is None:
            continue
        safe = True
        for op in graph.operators:
            if graph.inputs[position] not in list(op.inputs):
                continue
            code = model.operatorCodes[op.opcodeIndex]
            op_name = names.get(max(code.builtinCode, code.deprecatedBuiltinCode), "")
            biased = op_name == "FULLY_CONNECTED" and len(op.inputs) > 2 and op.inputs[2] >= 0
            if op_name not in _SCALE_FREE | {"FULLY_CONNECTED"} or biased:
                safe = False
        if safe:
            q_in.scale = np.array(q_out.scale, np.float32)
            q_in.zeroPoint = np.array(q_out.zeroPoint, np.int64)
            changed = True
    if not changed:
        return flatbuffer
    builder = flatbuffers.Builder(len(flatbuffer) + 1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def to_tflite(
    model: keras.Model,
    *,
    mode: str = "sequence",
    quantize: str | None = None,
    representative_data: Any = None,
    num_steps: int | None = None,
    batch_size: int = 1,
    edgetpu: bool = False,
    path: str | os.PathLike | None = None,
) -> bytes:
    """Converts a LIF / CubaLIF / LI model to a TFLite flatbuffer (see the module docstring).

    Args:
        model: a built ``keras.Model`` of ``keras_spiking`` LIF, CubaLIF and LI layers
            and their conv forms (``Dropout``, ``RandomTranslation`` and other layers that are
            the identity at inference are skipped; a leading ``RepeatVector`` or
            ``RepeatSteps`` is the constant-input encoding).
        mode: ``"sequence"`` (window unrolled, ``x [batch, T, f] -> y [batch, T, units]``) or
            ``"streaming"`` (one step, ``(x_t, *states) -> (y_t, *new_states)``).
        quantize: None (float32) or ``"int8"`` (full integer, int8 inputs and outputs).
        representative_data: for int8, input samples shaped like the model's input
            (``[n, T, f]``, or ``[n, f]`` after a ``RepeatVector``), used for calibration.
        num_steps: window length of the sequence model (default: the model's time dimension;
            an error if that is unknown). Ignored by the streaming model.
        batch_size: the static batch dimension of the exported graph.
        edgetpu: build the spike as a clipped steep ramp so only Edge TPU ops appear (needs
            ``quantize="int8"``). The Edge TPU compiler is not run here; see
            :func:`keras_spiking.export.edgetpu_report`.
        path: also write the flatbuffer to this file.

    Returns:
        The flatbuffer bytes.

    Raises:
        ExportError: a layer the static graph cannot express (the EventProp spike-time
            layers, ``CubaLIF(gradient="eventprop")``, ``keras.layers.Bidirectional`` or a
            ``go_backwards`` layer; LIF, CubaLIF, LI and SRC export), or an unknown window
            length.
        ValueError / TypeError: a bad option, named with the expected and received value.
    """
    _check_options(mode, quantize, representative_data, num_steps, batch_size, edgetpu, path)
    specs, repeat_n, time_steps = _read_model(model)
    repeat = repeat_n is not None
    step_shape = specs[0].step_input_shape
    if mode == "sequence" and num_steps is None:
        num_steps = time_steps
        if num_steps is None:
            raise ExportError(
                "tflite export: mode='sequence' needs `num_steps`: the model's input has no "
                f"static time dimension (input shape {tuple(model.inputs[0].shape)})"
            )
    batch_size = int(batch_size)
    data = None
    if quantize == "int8":
        data = _representative(representative_data, step_shape, repeat, batch_size)
    # calibration / gain batches of the float model: (x, steps)
    calibration_steps = num_steps if mode == "sequence" else (repeat_n or None)

    def batches():
        usable = len(data) - len(data) % batch_size
        for start in range(0, usable, batch_size):
            x = data[start : start + batch_size]
            yield x, calibration_steps or x.shape[1]

    if edgetpu:
        spike_fns = [_ramp_spike_fn(g) for g in _spike_gains(specs, batches(), repeat)]
    else:
        spike_fns = [_graph.default_spike_fn] * len(specs)

    state_list = _graph.state_specs(specs)
    keys = [_state_key(name) for name, _ in state_list]
    if len(set(keys)) != len(keys) or "x" in keys:
        raise ExportError(f"tflite export: layer names give clashing state names {keys}")
    if mode == "sequence":
        x_shape = [batch_size, *step_shape] if repeat else [batch_size, num_steps, *step_shape]
        signature = [tf.TensorSpec(x_shape, tf.float32, name="x")]

        def function(x):
            return {"y": _sequence(specs, x, num_steps, repeat, spike_fns, batch_size)}

        input_names, output_names = ["x"], ["y"]
    else:
        signature = [tf.TensorSpec([batch_size, *step_shape], tf.float32, name="x")] + [
            tf.TensorSpec([batch_size, units], tf.float32, name=key)
            for key, (_, units) in zip(keys, state_list)
        ]

        def function(x, *states):
            y, new_states = _graph.step(specs, x, list(states), spike_fns)
            return {"y": y, **{f"{key}_next": s for key, s in zip(keys, new_states)}}

        input_names = ["x", *keys]
        output_names = ["y", *[f"{key}_next" for key in keys]]

    module = tf.Module()
    module.graph = tf.function(function, input_signature=signature, autograph=False)
    concrete = module.graph.get_concrete_function()
    converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete], module)
    if quantize == "int8":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
        converter.representative_dataset = _calibration(
            mode, specs, batches, spike_fns, keys, repeat
        )
    with warnings.catch_warnings(), _native_output.captured():
        # int8 calibration runs TF's own (deprecated) tf.lite.Interpreter internally; the
        # warning is about TF's code, not the caller's. The converter's C++ log lines are
        # shown only if it fails (see _native_output)
        warnings.filterwarnings("ignore", message=r"(?s).*tf\.lite\.Interpreter is deprecated")
        converted = converter.convert()
    flatbuffer = _reorder_io(converted, input_names, output_names)
    if mode == "streaming" and quantize == "int8":
        flatbuffer = _tie_state_scales(flatbuffer)
    if path is not None:
        with open(path, "wb") as file:
            file.write(flatbuffer)
    return flatbuffer


def _calibration(mode, specs, batches, spike_fns, keys, repeat) -> Callable:
    """The converter's representative dataset: dicts by signature name (order-proof)."""

    def sequence():
        for x, _ in batches():
            yield {"x": x}

    def streaming():
        for x, num_steps in batches():
            states = _graph.zero_states(specs, x.shape[0])
            for t in range(num_steps):
                x_t = x if repeat else x[:, t]
                yield {"x": x_t, **{key: np.asarray(s) for key, s in zip(keys, states)}}
                _, states = _graph.step(specs, x_t, states, spike_fns)
                states = [np.asarray(s, np.float32) for s in states]

    return sequence if mode == "sequence" else streaming


# --------------------------------------------------------------------------------------------
# inspection helpers
# --------------------------------------------------------------------------------------------


def _builtin_names() -> dict[int, str]:
    from ai_edge_litert import schema_py_generated as schema

    return {
        value: name
        for name, value in vars(schema.BuiltinOperator).items()
        if not name.startswith("_") and isinstance(value, int)
    }


def tflite_ops(model_bytes: bytes) -> list[str]:
    """Operator names of every subgraph of a TFLite flatbuffer, in execution order.

    Builtin operators by their schema name (``FULLY_CONNECTED``); custom operators as
    ``CUSTOM:<name>`` (TensorFlow "Flex" ops appear as ``CUSTOM:Flex...``). Read from the
    flatbuffer with the schema bindings of ``ai_edge_litert``, so every subgraph is covered.
    """
    from ai_edge_litert import schema_py_generated as schema

    if not isinstance(model_bytes, (bytes, bytearray, memoryview)):
        raise TypeError(
            f"tflite_ops: `model_bytes` expected bytes, got {type(model_bytes).__name__}"
        )
    model = schema.ModelT.InitFromPackedBuf(bytes(model_bytes), 0)
    names = _builtin_names()
    found = []
    for graph in model.subgraphs or []:
        for op in graph.operators or []:
            code = model.operatorCodes[op.opcodeIndex]
            builtin = max(code.builtinCode, code.deprecatedBuiltinCode)
            if builtin == schema.BuiltinOperator.CUSTOM:
                found.append(f"CUSTOM:{(code.customCode or b'').decode()}")
            else:
                found.append(names.get(builtin, f"BUILTIN_{builtin}"))
    return found


def requantize(q: np.ndarray, source: tuple[float, int], target: tuple[float, int]) -> np.ndarray:
    """An int8 tensor from one ``(scale, zero_point)`` to another (a state fed back)."""
    (s_from, z_from), (s_to, z_to) = source, target
    real = (np.asarray(q, np.float32) - z_from) * s_from
    return np.clip(np.round(real / s_to) + z_to, -128, 127).astype(np.int8)
