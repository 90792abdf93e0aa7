r"""Static graphs of a spiking model built from its layers' weights, for the exporters.

The exporters do not convert the layers' own ``call`` (a time scan that converters cannot
express); they read each layer's parameters into a :class:`NeuronLayer` and rebuild the
dynamics from plain ops, either one time step with the neuron state as explicit inputs and
outputs (:func:`step`, for streaming) or the whole window unrolled (:func:`unrolled`). The
equations are those of :mod:`keras_spiking.dynamics`, per layer and step ``t``:

* LIF: :math:`u = \beta v + x W + b + S_{t-1} R`, :math:`S = H(u - \theta)`,
  :math:`v' = u - \theta S` (subtract) or :math:`u (1 - S)` (zero); states ``v`` (and ``S``
  with recurrent weights).
* CubaLIF: :math:`S = H(U - \theta)`, :math:`I' = \alpha I + x W + b + S R`,
  :math:`U' = \beta U + I - \theta S` (or :math:`(\beta U + I)(1 - S)`); output ``S``; states
  ``I, U``.
* LI: :math:`v' = \beta v + x W + b`; output ``v'``; state ``v``.
* SRC (Spiking Recurrent Cell): :func:`keras_spiking.spiking_recurrent_cell.src_step` on the
  current ``x W``;
  output the pulse ``ReLU(h)``; states ``i, h, h_s`` (smooth ops only: tanh, sigmoid, ReLU).

``spike_fn(u, theta)`` makes the Heaviside step; the default, ``where(u > theta, 1, 0)``, keeps
the graph integer under int8 quantization; targets without a select op pass their own.

Conv networks (``keras_spiking.conv_layers`` and ``keras_spiking.spike_maps``)
----------------------------------------------------------------------------
A step's input and output need not be flat: what flows from layer to layer in :func:`step` is
one time step ``[batch, *shape]`` (``NeuronLayer.input_shape`` / ``output_shape``).

* ConvLIF / ConvCubaLIF / ConvLI (1-D and 2-D): the synaptic current ``x W`` above is the
  convolution of the step's map ``[batch, *spatial, channels]`` (``CONV_2D`` in TFLite; a 1-D
  conv is a 2-D conv over a map of height 1; ``groups > 1`` is split into one conv per group
  and concatenated, which every TFLite runtime runs), plus the per-filter bias, flattened to
  ``[batch, neurons]`` in the row-major order of ``[*spatial_out, filters]``. The neuron
  update is the dense one on that flat vector, with the per-filter decays repeated at every
  position. The output (spikes, or the LI membrane) is reshaped to the map
  ``[batch, *spatial_out, filters]``. **States stay flat**, ``[batch, neurons]`` in that same
  row-major order (the cells' own state layout; ``reshape(state, [batch, *map_shape])`` gives
  the map that ``return_state=True`` shows), named ``layer/v`` etc. as for the dense layers:
  every state is then a rank-2 tensor, which TFLite Micro loops and the Edge TPU (rank <= 3)
  take as they take the dense states.
* Pooling layers (kind ``"op"``, no state): the step's map pooled over space as the layer
  does it per step (sum = average pool times the window size; ``padding="same"`` average
  and sum pooling pad zeros explicitly and divide by the full window; max pooling uses the
  runtime's own ``SAME`` padding, which ignores the border as the layer's ``-inf`` padding
  does). ``SpatialFlatten``: a reshape to ``[batch, features]`` (row-major, as the layer).
* A leading ``RepeatSteps(T)`` is the constant-input encoding, like ``RepeatVector``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import keras
import numpy as np
import tensorflow as tf

from keras_spiking import conv_layers as ks_conv
from keras_spiking import layers as ks_layers
from keras_spiking import spike_maps as ks_maps
from keras_spiking import spiking_recurrent_cell as ks_src
from keras_spiking.export._registry import ExportError

SpikeFn = Callable[[tf.Tensor, float], tf.Tensor]

# layers that are the identity at inference (regularizers and training-time augmentation,
# each checked to return its input unchanged with training=False): skipped by the exporters
INFERENCE_IDENTITY = (
    keras.layers.Dropout,  # and SpatialDropout1D/2D/3D, its subclasses
    keras.layers.GaussianNoise,
    keras.layers.GaussianDropout,
    keras.layers.AlphaDropout,
    keras.layers.ActivityRegularization,
    keras.layers.RandomTranslation,
    keras.layers.RandomRotation,
    keras.layers.RandomZoom,
    keras.layers.RandomFlip,
    keras.layers.RandomContrast,
    keras.layers.RandomBrightness,
)
PASS_THROUGH = (keras.layers.InputLayer, *INFERENCE_IDENTITY)
# layers that hold a static input for T steps (the constant-input encoding), when leading
REPEAT = (keras.layers.RepeatVector, ks_maps.RepeatSteps)
POOLING = (
    ks_maps.SumPooling1D,
    ks_maps.SumPooling2D,
    ks_maps.AveragePooling1D,
    ks_maps.AveragePooling2D,
    ks_maps.MaxPooling1D,
    ks_maps.MaxPooling2D,
)


@dataclass
class ConvParams:
    """The convolution of a conv neuron layer (the Keras layer's arguments, as tuples)."""

    rank: int  # 1 or 2 spatial axes
    strides: tuple[int, ...]
    padding: str  # "valid" or "same"
    dilation_rate: tuple[int, ...]
    groups: int
    input_map_shape: tuple[int, ...]  # one step's input [*spatial, channels]
    map_shape: tuple[int, ...]  # one step's output [*spatial_out, filters]


@dataclass
class NeuronLayer:
    """One spiking layer's parameters as NumPy arrays (float32 unless said)."""

    kind: str  # "lif", "cuba", "li" or "src"
    name: str
    kernel: np.ndarray  # [n_in, n]
    bias: np.ndarray | None  # [n]
    recurrent: np.ndarray | None  # [n, n]
    beta: np.ndarray  # [n], membrane decay per step
    alpha: np.ndarray | None  # [n], synaptic decay per step (CubaLIF)
    threshold: float
    reset: str
    dt: float
    src_params: dict | None = None  # SRC: constants and bias for src_step, as NumPy arrays
    # a neuron of the sequence-layer contract (kind "cell"): its cell's export_step, the
    # parameters it takes (NumPy) and its state names
    cell_step: Callable | None = None
    cell_params: dict | None = None
    cell_states: tuple[str, ...] = ()
    # conv neuron layers: kernel is the Keras conv kernel [*k, C / groups, F], bias [F], and
    # beta / alpha per neuron [neurons] (flat, row-major over [*spatial_out, F])
    conv: ConvParams | None = None
    # stateless layers (kind "op": pooling, SpatialFlatten): the step's function and shapes
    op: Callable | None = None
    input_shape: tuple[int, ...] | None = None  # one step, without batch (default: [n_in])
    output_shape: tuple[int, ...] | None = None  # one step, without batch (default: [units])

    @property
    def units(self) -> int:
        """Neurons of the layer (the width of each state); 0 for a stateless op."""
        if self.kind == "op":
            return 0
        if self.conv is not None:
            return int(np.prod(self.conv.map_shape))
        return int(self.kernel.shape[1])

    @property
    def step_input_shape(self) -> tuple[int, ...]:
        """One step's input shape without the batch axis."""
        if self.input_shape is not None:
            return tuple(self.input_shape)
        if self.conv is not None:
            return tuple(self.conv.input_map_shape)
        return (int(self.kernel.shape[0]),)

    @property
    def step_output_shape(self) -> tuple[int, ...]:
        """One step's output shape without the batch axis."""
        if self.output_shape is not None:
            return tuple(self.output_shape)
        if self.conv is not None:
            return tuple(self.conv.map_shape)
        return (self.units,)

    @property
    def state_names(self) -> tuple[str, ...]:
        if self.kind == "lif":
            return ("v", "s") if self.recurrent is not None else ("v",)
        if self.kind == "cuba":
            return ("i", "v")
        if self.kind == "src":
            return ("i", "h", "h_s")
        if self.kind == "cell":
            return self.cell_states
        if self.kind == "op":
            return ()
        return ("v",)


def _array(value) -> np.ndarray:
    return np.asarray(keras.ops.convert_to_numpy(value), dtype=np.float32)


def _src_layer(layer) -> NeuronLayer:
    cell = layer.cell
    params = {
        name: value.numpy() if hasattr(value, "numpy") else value
        for name, value in cell.step_params(tf.float32).items()
    }
    # inference: the training-only gradient options change nothing forward
    params.update(detach_recurrent=False, straight_through=False)
    units = int(cell.units)
    return NeuronLayer(
        kind="src",
        name=layer.name,
        kernel=_array(cell.kernel),
        bias=None,
        recurrent=None,
        beta=np.ones(units, np.float32),
        alpha=None,
        threshold=0.0,
        reset="none",
        dt=float("nan"),
        src_params=params,
    )


def _cell_layer(layer) -> NeuronLayer:
    """A neuron of the sequence-layer contract whose cell has ``export_step``."""
    cell = layer.cell
    params = {
        name: np.asarray(keras.ops.convert_to_numpy(value), np.float32)
        for name, value in cell.export_parameters().items()
    }
    units = int(layer.units)
    return NeuronLayer(
        kind="cell",
        name=layer.name,
        # the exporters read the input width from the kernel's shape; the weights themselves
        # are in the cell's parameters
        kernel=np.zeros((int(layer.input_spec.axes[-1]), units), np.float32),
        bias=None,
        recurrent=None,
        beta=np.ones(units, np.float32),
        alpha=None,
        threshold=0.0,  # the cell's export_step applies its own threshold
        reset="none",
        dt=float("nan"),
        cell_step=cell.export_step,
        cell_params=params,
        cell_states=tuple(layer.state_names),
    )


def neuron_layer(layer: keras.layers.Layer) -> NeuronLayer:
    """Reads a LIF / CubaLIF / LI / SRC layer's parameters (ExportError for any other layer).

    A layer on :class:`keras_spiking.sequence.SpikingSequence` whose cell defines
    ``export_parameters()`` and ``export_step(params, x, states, spike_fn)`` is exported
    through them (kind "cell").
    """
    if getattr(layer, "gradient", None) is not None:
        raise ExportError(
            f"layer {layer.name!r} is a CubaLIF with gradient=EventProp: it runs the "
            "continuous-time model (exact exponential updates, spike times within the step), "
            "which the discrete CubaLIF graph would not reproduce; no converter for it yet"
        )
    if getattr(layer, "go_backwards", False):
        raise ExportError(
            f"layer {layer.name!r} has go_backwards=True: the exported graphs (unrolled and "
            "streaming) run forward in time; reverse the input outside the model instead"
        )
    if isinstance(layer, ks_layers.SRC):
        return _src_layer(layer)
    if isinstance(layer, ks_layers.SpikingSequence) and hasattr(layer.cell, "export_step"):
        return _cell_layer(layer)
    kinds = {ks_layers.CubaLIF: "cuba", ks_layers.LIF: "lif", ks_layers.LI: "li"}
    kind = next((k for cls, k in kinds.items() if isinstance(layer, cls)), None)
    if kind is None:
        raise ExportError(
            f"layer {layer.name!r} of type {type(layer).__name__} has no static-graph "
            "converter; supported: LIF, CubaLIF, LI, SRC, their conv forms (ConvLIF1D/2D, "
            "ConvCubaLIF1D/2D, ConvLI1D/2D), Sum/Average/MaxPooling1D/2D, SpatialFlatten, a "
            "leading RepeatSteps or RepeatVector (and layers that are the identity at "
            "inference, skipped: Dropout, GaussianNoise, RandomTranslation, ...)"
        )
    cell = layer.cell
    recurrent = getattr(cell, "recurrent_kernel", None)
    conv = None
    if isinstance(layer, ks_conv.ConvNeurons):
        conv = ConvParams(
            rank=int(cell.rank),
            strides=tuple(int(v) for v in cell.strides),
            padding=str(cell.padding),
            dilation_rate=tuple(int(v) for v in cell.dilation_rate),
            groups=int(cell.groups),
            input_map_shape=tuple(int(v) for v in cell.input_map_shape),
            map_shape=tuple(int(v) for v in cell.map_shape),
        )
    return NeuronLayer(
        kind=kind,
        name=layer.name,
        kernel=_array(cell.kernel),
        bias=None if cell.bias is None else _array(cell.bias),
        recurrent=None if recurrent is None else _array(recurrent),
        beta=_array(cell.decay("tau_mem")),
        alpha=_array(cell.decay("tau_syn")) if kind == "cuba" else None,
        threshold=float(getattr(cell, "threshold", 0.0) or 0.0),
        reset=getattr(cell, "reset", "subtract"),
        dt=float(cell.dt),
        conv=conv,
    )


def _same_pads(shape, window, strides, dilation=None) -> list[list[int]]:
    """TF's ``"same"`` padding ``[before, after]`` per spatial axis (the extra one after)."""
    dilation = dilation or (1,) * len(window)
    pads = []
    for size, k, s, d in zip(shape, window, strides, dilation):
        out = -(-size // s)
        total = max((out - 1) * s + (k - 1) * d + 1 - size, 0)
        pads.append([total // 2, total - total // 2])
    return pads


def _as_2d(x, rank: int, shape):
    """A 1-D step ``[b, L, C]`` as a map of height 1 ``[b, 1, L, C]`` (2-D unchanged)."""
    return tf.reshape(x, [-1, 1, *shape]) if rank == 1 else x


def _pooling_op(layer, in_shape: tuple[int, ...]) -> NeuronLayer:
    """A pooling layer as a stateless op on one step's map (see the module docstring)."""
    rank, mode = int(layer.rank), layer.mode
    pool, strides, padding = tuple(layer.pool_size), tuple(layer.strides), layer.padding
    out_shape = tuple(int(v) for v in layer.compute_output_shape((1, 1, *in_shape))[2:])
    window = (1, *pool) if rank == 1 else pool
    steps = (1, *strides) if rank == 1 else strides
    pads = _same_pads(in_shape[:-1], pool, strides)
    if rank == 1:
        pads = [[0, 0], *pads]

    def pool_step(x):
        x = _as_2d(x, rank, in_shape)
        if mode == "max":
            y = tf.nn.max_pool2d(x, window, steps, "SAME" if padding == "same" else "VALID")
        else:
            if padding == "same" and any(sum(p) for p in pads):
                x = tf.pad(x, [[0, 0], *pads, [0, 0]])
            y = tf.nn.avg_pool2d(x, window, steps, "VALID")
            if mode == "sum":
                y = y * float(np.prod(pool))
        return tf.reshape(y, [-1, *out_shape]) if rank == 1 else y

    return _op_layer(layer.name, pool_step, in_shape, out_shape)


def _op_layer(name: str, fn: Callable, in_shape, out_shape) -> NeuronLayer:
    empty = np.zeros((0, 0), np.float32)
    return NeuronLayer(
        kind="op",
        name=name,
        kernel=empty,
        bias=None,
        recurrent=None,
        beta=np.zeros(0, np.float32),
        alpha=None,
        threshold=0.0,
        reset="none",
        dt=float("nan"),
        op=fn,
        input_shape=tuple(in_shape),
        output_shape=tuple(out_shape),
    )


def map_layer(layer: keras.layers.Layer, in_shape: tuple[int, ...]) -> NeuronLayer | None:
    """A stateless spike-map layer (pooling, SpatialFlatten) as an op; None for other layers.

    ``in_shape``: one step's input shape without batch and time.
    """
    if isinstance(layer, (*POOLING, ks_maps.SpatialFlatten)) and (not in_shape or None in in_shape):
        raise ExportError(
            f"layer {layer.name!r} ({type(layer).__name__}) needs steps of a static shape, got "
            f"{in_shape}"
        )
    if isinstance(layer, POOLING):
        if len(in_shape) != int(layer.rank) + 1:
            raise ExportError(
                f"layer {layer.name!r} ({type(layer).__name__}) takes maps with "
                f"{layer.rank} spatial axes, got steps of shape {in_shape}"
            )
        return _pooling_op(layer, in_shape)
    if isinstance(layer, ks_maps.SpatialFlatten):
        features = int(np.prod(in_shape))
        return _op_layer(layer.name, lambda x: tf.reshape(x, [-1, features]), in_shape, (features,))
    return None


def _check_chain(model: keras.Model, target: str) -> None:
    """ExportError unless each layer of a functional model feeds only the next one."""
    if isinstance(model, keras.Sequential):
        return
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ExportError(
            f"{target} export takes a chain of layers with one input and one output, got "
            f"{len(model.inputs)} inputs and {len(model.outputs)} outputs"
        )
    previous = model.inputs[0]
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        try:
            fed_by_previous = layer.input is previous
        except (AttributeError, ValueError):  # a layer called more than once
            fed_by_previous = False
        if not fed_by_previous:
            raise ExportError(
                f"{target} export takes a chain of layers, each feeding the next; layer "
                f"{layer.name!r} is not fed by the layer before it (branches, merges and shared "
                "layers cannot be exported)"
            )
        previous = layer.output
    if previous is not model.outputs[0]:
        raise ExportError(f"{target} export: the model's output is not its last layer's output")


def leading_repeat(model: keras.Model) -> int | None:
    """``n`` of a ``RepeatVector`` or ``RepeatSteps`` before the first neuron layer.

    (the constant-input encoding)
    """
    for layer in model.layers:
        if isinstance(layer, keras.layers.RepeatVector):
            return int(layer.n)
        if isinstance(layer, ks_maps.RepeatSteps):
            return int(layer.num_steps)
        if not isinstance(layer, PASS_THROUGH):
            return None
    return None


def neuron_layers(
    model: keras.Model, target: str, *, skip_leading_repeat: bool = False
) -> list[NeuronLayer]:
    """The model's spiking layers in order; ExportError names a layer ``target`` cannot take.

    ``skip_leading_repeat``: the target repeats the input itself (see :func:`leading_repeat`),
    so a ``RepeatVector`` before the first neuron layer is skipped instead of refused.
    """
    if not model.built:
        raise ExportError(f"{target} export needs a built model (call it once or give an Input)")
    _check_chain(model, target)
    repeat = leading_repeat(model)
    skip_repeat = skip_leading_repeat and repeat is not None
    shape = tuple(model.inputs[0].shape)[1:] if model.inputs else ()
    # one step's shape without batch (and time), as it flows through the chain
    step_shape = shape if skip_repeat else shape[1:]
    found = []
    for layer in model.layers:
        if isinstance(layer, PASS_THROUGH):
            continue
        if skip_repeat and isinstance(layer, REPEAT):
            skip_repeat = False  # only the one before the first neuron layer
            continue
        try:
            spec = map_layer(layer, step_shape)
            if spec is None:
                spec = neuron_layer(layer)
        except ExportError as error:
            raise ExportError(f"{target} export: {error}") from None
        step_shape = spec.step_output_shape
        found.append(spec)
    if not any(spec.kind != "op" for spec in found):
        raise ExportError(f"{target} export: the model has no LIF, CubaLIF, LI or SRC layer")
    return found


def default_spike_fn(u: tf.Tensor, threshold: float) -> tf.Tensor:
    """``H(u - theta)`` as a select, which int8 quantization keeps integer."""
    return keras.ops.where(u > threshold, 1.0, 0.0)


def _reset(u, s, threshold: float, reset: str):
    return u - threshold * s if reset == "subtract" else u * (1.0 - s)


def _conv_current(spec: NeuronLayer, x):
    """The conv synaptic current of one step's map, flat ``[batch, neurons]`` (bias added)."""
    conv = spec.conv
    x = _as_2d(x, conv.rank, conv.input_map_shape)
    kernel = spec.kernel[None] if conv.rank == 1 else spec.kernel
    strides = (1, *conv.strides) if conv.rank == 1 else conv.strides
    dilations = (1, *conv.dilation_rate) if conv.rank == 1 else conv.dilation_rate
    padding = conv.padding.upper()
    if conv.groups == 1:
        current = tf.nn.conv2d(x, kernel, strides, padding, dilations=dilations)
    else:
        # one conv per group (SPLIT, CONV_2D each, CONCATENATION): the runtimes' CONV_2D
        # kernels do not all take grouped filters; filter f belongs to group f // (F / groups)
        per_group = kernel.shape[-1] // conv.groups
        parts = tf.split(x, conv.groups, axis=-1)
        current = tf.concat(
            [
                tf.nn.conv2d(
                    part,
                    kernel[..., g * per_group : (g + 1) * per_group],
                    strides,
                    padding,
                    dilations=dilations,
                )
                for g, part in enumerate(parts)
            ],
            axis=-1,
        )
    if spec.bias is not None:
        current = current + spec.bias
    return tf.reshape(current, [-1, spec.units])


def _input_current(spec: NeuronLayer, x, s_prev=None):
    if spec.conv is not None:
        return _conv_current(spec, x)
    current = tf.matmul(x, spec.kernel)
    if spec.bias is not None:
        current = current + spec.bias
    if spec.recurrent is not None and s_prev is not None:
        current = current + tf.matmul(s_prev, spec.recurrent)
    return current


def layer_step(spec: NeuronLayer, x, states: Sequence, spike_fn: SpikeFn = default_spike_fn):
    """One step of one layer: ``(output, new_states)`` (states in ``spec.state_names`` order)."""
    if spec.kind == "op":
        return spec.op(x), []
    output, new_states = _neuron_step(spec, x, states, spike_fn)
    if spec.conv is not None:  # flat neurons -> the map the next layer takes
        output = tf.reshape(output, [-1, *spec.conv.map_shape])
    return output, new_states


def _neuron_step(spec: NeuronLayer, x, states: Sequence, spike_fn: SpikeFn):
    if spec.kind == "lif":
        v = states[0]
        s_prev = states[1] if spec.recurrent is not None else None
        u = spec.beta * v + _input_current(spec, x, s_prev)
        s = spike_fn(u, spec.threshold)
        v_next = _reset(u, s, spec.threshold, spec.reset)
        return s, ([v_next, s] if spec.recurrent is not None else [v_next])
    if spec.kind == "cuba":
        i, v = states
        s = spike_fn(v, spec.threshold)
        i_next = spec.alpha * i + _input_current(spec, x, s)
        v_next = _reset(spec.beta * v + i, s, spec.threshold, spec.reset)
        return s, [i_next, v_next]
    if spec.kind == "cell":
        params = {name: tf.constant(value) for name, value in spec.cell_params.items()}
        out, new = spec.cell_step(params, x, list(states), spike_fn)
        return out, list(new)
    if spec.kind == "src":
        state = ks_src.SRCState(*states)
        s, new = ks_src.src_step(state, tf.matmul(x, spec.kernel), **spec.src_params)
        return s, list(new)
    v = spec.beta * states[0] + _input_current(spec, x)
    return v, [v]


def step(
    specs: Sequence[NeuronLayer],
    x,
    states: Sequence,
    spike_fn: SpikeFn | Sequence[SpikeFn] = default_spike_fn,
):
    """One time step of the whole network: ``(output, new_states)``.

    States are flattened in layer order, each layer's in ``state_names`` order. ``spike_fn``
    is one function for all layers or a sequence of one per layer.
    """
    spike_fns = spike_fn if isinstance(spike_fn, Sequence) else [spike_fn] * len(specs)
    new_states, index = [], 0
    for spec, spike_fn in zip(specs, spike_fns, strict=True):
        count = len(spec.state_names)
        x, layer_states = layer_step(spec, x, states[index : index + count], spike_fn)
        new_states.extend(layer_states)
        index += count
    return x, new_states


def state_specs(specs: Sequence[NeuronLayer]) -> list[tuple[str, int]]:
    """``(name, units)`` of every state tensor, in :func:`step` order (``layer/state``).

    Conv layers' states are flat: ``units`` is their neuron count ``prod(map_shape)``.
    """
    return [(f"{spec.name}/{name}", spec.units) for spec in specs for name in spec.state_names]


def zero_states(specs: Sequence[NeuronLayer], batch_size: int) -> list[np.ndarray]:
    """Initial (zero) states for :func:`step`."""
    return [np.zeros((batch_size, units), np.float32) for _, units in state_specs(specs)]


def unrolled(
    specs: Sequence[NeuronLayer],
    inputs,
    num_steps: int,
    spike_fn: SpikeFn = default_spike_fn,
):
    """The whole window, unrolled, from zero states.

    Maps ``inputs [batch, num_steps, *step_shape]`` to ``[batch, num_steps, *out_shape]`` of
    the last layer.
    """
    batch = tf.shape(inputs)[0]
    states = [tf.zeros(tf.stack([batch, units])) for _, units in state_specs(specs)]
    outputs = []
    for t in range(num_steps):
        out, states = step(specs, inputs[:, t], states, spike_fn)
        outputs.append(out)
    return tf.stack(outputs, axis=1)
