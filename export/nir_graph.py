r"""NIR export and import: :func:`to_nir` and :func:`from_nir` (target name ``"nir"``).

`NIR <https://neuroir.org>`_ (the neuromorphic intermediate representation, ``nir`` package)
describes neurons by continuous-time equations; our layers are discrete with a step ``dt``
(seconds). This module maps one onto the other so that a simulator integrating the NIR
equations over steps of ``dt`` reproduces our layers, and so that Keras -> NIR -> Keras gives
back the same weights, parameters and spikes.

Discrete reading of the NIR equations
-------------------------------------
Within one step, every input signal is held constant at its value of that step (zero-order
hold), and each linear equation is integrated *exactly* over ``dt`` (no Euler step). For a
NIR leaky node ``tau dv/dt = (v_leak - v) + r I`` with ``I`` constant over the step:

.. math::
    v(t + dt) = \beta\, v(t) + (1 - \beta)(v_{leak} + r I), \qquad \beta = e^{-dt/\tau}.

Spikes are sampled at the step boundaries; edges of a cycle (recurrent weights, reset
feedback) deliver the previous step's output, as in snnTorch's and Norse's NIR readers.

The mapping (exact in that reading)
-----------------------------------
Weights: our kernel ``W`` ([in, out], ``x W``) is NIR's ``weight = W^T`` ([out, in], ``W x``):
an ``Affine`` node (``bias = b``) if the layer has a bias, else a ``Linear`` node.

**LI** ``v[t] = beta v[t-1] + x[t] W + b`` -> ``nir.LI(tau=tau_mem, r=1/(1-beta), v_leak=0)``.
With ``r (1 - beta) = 1`` the exact solution above is our update term for term, so ``tau`` is
carried unchanged (no ``dt / (1 - beta)`` Euler approximation) and ``v`` has our units.
``1 - beta`` is computed as ``-expm1(-dt / tau)`` in float64.

**LIF**, ``reset="zero"``: ``u[t] = beta v[t-1] + x[t] W + b``; ``S[t] = H(u[t] - theta)``;
``v[t] = u[t] (1 - S[t])`` -> ``nir.LIF(tau=tau_mem, r=1/(1-beta), v_leak=0,
v_threshold=theta, v_reset=0)``. Subthreshold, the solution ``v(s)`` moves monotonically from
``v(t)`` towards ``r I``, so it crosses ``theta`` inside the step if and only if the end-of-step
value exceeds ``theta``: sampling at the step end decides the same spikes. NIR's ``z = 1 if
v > v_threshold`` is our ``H`` (a spike only when strictly above threshold). The reset to
``v_reset = 0`` happens at the sample where the spike is seen (Norse's ordering).

**LIF**, ``reset="subtract"`` (``v[t] = u[t] - theta S[t]``): NIR's ``LIF`` can only reset *to*
a value, so this is written with NIR primitives as a subgraph: ``nir.LI`` (as above, holding
``u``) -> ``nir.Threshold(theta)`` -> output, with the feedback ``Threshold -> nir.Scale(-beta
theta) -> LI``. Unrolling our update, ``u[t] = beta u[t-1] - beta theta S[t-1] + x[t] W + b``:
the subtracted ``theta`` decays by one ``beta`` before the next sample, which is what the
feedback of the previous step's spike adds (``r (1 - beta) = 1`` passes it through unscaled).

**Recurrent weights** ``R`` of a LIF (``u[t]`` also gets ``S[t-1] R``): a subgraph with a
``nir.Linear(weight=R^T)`` on the cycle from the spikes back to the neuron node (snnTorch's
``RLeaky`` layout: ``input -> lif -> output`` plus ``lif -> w_rec -> lif``).

**CubaLIF** (``S[n] = H(U[n] - theta)``; ``I[n+1] = alpha I[n] + x[n] W + b``;
``U[n+1] = (beta U[n] + I[n]) (1 - S[n])`` with ``reset="zero"``) -> ``nir.CubaLIF(
tau_syn, tau_mem, w_in=1/(1-alpha), r=1/(1-beta), v_leak=0, v_threshold=theta, v_reset=0)``.
Each of NIR's two equations is integrated exactly over the step with *its* input held at the
value at the start of the step (``x[n]`` for the synapse, ``I[n]`` for the membrane):
``I -> alpha I + (1 - alpha) w_in x`` and ``U -> beta U + (1 - beta) r I``, which with these
``w_in, r`` is our update (the exponential-Euler reading). Two honest caveats: (1) integrating
the *coupled* system exactly would also let the current arriving during the step move ``U``
in that step; no choice of ``w_in, r`` turns that into our two-step-latency update, so a
simulator that does so differs from us by that term. (2) Our reset holds the membrane at
``v_reset`` for the whole step after the spike sample (Neftci, Mostafa & Zenke 2019, and
snnTorch's ordering); a simulator that resets at the sample and then integrates the step gives
``U[n+1] = I[n]`` instead of 0.

What raises :class:`~keras_spiking.export.ExportError`
------------------------------------------------------
* CubaLIF with ``reset="subtract"`` (our update subtracts ``theta`` undecayed from the next
  membrane value: neither NIR's reset-to-value nor a feedback through the synapse expresses it)
  and CubaLIF with recurrent weights (our spikes enter the synapse in the step they are emitted,
  a NIR cycle delivers them one step later).
* Layers with no NIR converter (``SRC``, ``keras.layers.Conv2D``, ``Dense``, ...),
  ``MaxPooling1D/2D`` (NIR has no max-pooling node), conv layers with ``groups > 1`` (NIR
  1.0.8's type check reads a grouped conv's input as ``C / groups`` channels, so ``nir.read``
  rejects the graph), a ``padding="same"`` that TF splits unevenly where NIR needs explicit
  pads (strided convs, pooling), ``return_sequences=False``
  or ``return_state=True`` (a NIR graph maps whole input streams to whole output streams),
  models that are not a single chain, layers built with different ``dt``.
* On import: NIR ``IF``/``I``/``CubaLI``/``Delay``/... nodes (``IF`` has no leak; our
  ``LIF`` needs a finite ``tau_mem``), branches, a neuron node without a weight node before it,
  ``v_reset != 0``, a CubaLIF ``v_leak != 0``, inconsistent shapes.

Reading graphs written by other tools
-------------------------------------
:func:`from_nir` folds what our layers keep implicit into the weights, exactly: the input
gain ``c = r (1 - beta)`` (times ``w_in (1 - alpha)`` for CubaLIF; ``c = 1`` for our own
graphs, e.g. snnTorch writes ``r = tau / dt`` so ``c`` is close to but not 1) multiplies the
kernel, bias and recurrent weights of each neuron; a LIF/LI ``v_leak`` becomes the bias
``(1 - beta) v_leak``; per-neuron thresholds ``theta_i`` of spiking neurons are divided out
(``v_i -> v_i / theta_i`` scales weights and bias by ``1/theta_i``; spikes are unchanged) and
the layer gets ``threshold=1``. Time constants are never changed.

Conv networks
-------------
NIR is channels-first (PyTorch's layout, ``[C, *spatial]`` per step, no batch axis); our maps
are channels-last (``[*spatial, C]``). Every node is written in NIR's layout and read back
into ours, each a pure permutation, so the round trip is bit for bit:

* ``ConvLIF1D/2D``, ``ConvCubaLIF1D/2D``, ``ConvLI1D/2D`` -> ``nir.Conv1d``/``nir.Conv2d``
  (``weight [F, C, *k]`` = our kernel ``[*k, C, F]`` transposed; ``bias [F]``, zeros when the
  layer has none, and a zero bias reads back as ``use_bias=False``; ``stride``, ``dilation``,
  ``groups``; ``input_shape`` the spatial input size) followed by the neuron node of the
  dense layer (LIF, the subtract-reset LIF subgraph, CubaLIF or LI, the same mapping as
  above) whose parameters are per neuron, ``[F, *spatial_out]``, our per-filter values
  broadcast over the positions. On import they must be constant over the positions of each
  filter (our conv layers hold one per filter); per-filter thresholds are divided into that
  filter's kernel and bias, as for the dense layers.
* Padding: ``"valid"`` -> ``"valid"``; ``"same"`` of a stride-1 conv -> ``"same"`` (PyTorch
  puts an odd total's extra pad after, as TF does); otherwise explicit pads, which exist only
  where TF's split is even (else ExportError). Import maps ``"same"`` (stride 1), zero pads
  and pads equal to TF's ``"same"`` split back; a ``"same"`` that pads nothing reads back
  as ``"valid"`` (the same layer).
* ``SumPooling2D`` / ``AveragePooling2D`` -> ``nir.SumPool2d`` / ``nir.AvgPool2d``
  (``kernel_size``, ``stride``, ``padding`` as int pairs; average pooling divides by the
  full window, padding included, as ours). NIR 1.0.8 has no 1-D pooling node:
  ``SumPooling1D`` / ``AveragePooling1D`` are written as a ``nir.Conv1d`` from each channel
  to itself with every weight 1 (or ``1 / window``), 0 across channels, no bias (not a
  depthwise conv: see ``groups`` above), and read back as pooling: on import a conv node
  with no neuron node after it must be such a conv (or the depthwise form).
* ``SpatialFlatten`` -> ``nir.Flatten(start_dim=0)`` of the channels-first map, so its
  features are ordered ``(c, *position)`` where ours are ``(*position, c)``; the columns of
  the weight node after it are permuted to match, and permuted back on import.
* A leading ``RepeatSteps(T)`` / ``RepeatVector(T)`` (a static input held for T steps) is
  not a node: the graph maps input streams to output streams, and ``metadata[
  "keras_spiking_repeat_steps"] = T`` tells :func:`from_nir` to put ``RepeatSteps(T)`` back.
* The graph's Input and Output types are channels-first; feed a simulator ``[C, *spatial]``
  per step and transpose a conv readout's output back.

``dt`` is stored in the graph's ``metadata["dt"]`` (seconds); :func:`from_nir` uses its ``dt``
argument if given (re-discretising the continuous graph at that step), else the metadata.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import keras
import nir
import numpy as np

from keras_spiking import cells, conv_cells, conv_layers, layers, spike_maps
from keras_spiking.export._graph import INFERENCE_IDENTITY
from keras_spiking.export._registry import ExportError, converter, register

TARGET = "nir"

_GAIN_ATOL = 1e-12
"""Input gains ``c = r (1 - beta)`` within this of 1 are taken as exactly 1 (float64 rounding
of ``r = 1 / (1 - beta)`` leaves ``c`` within a few 1e-16), so our own graphs import with their
weights bit for bit."""

_RESET_RTOL = 1e-6
"""Relative tolerance when recognising a subtractive-reset feedback ``-beta theta``: float32
graphs written by other tools carry about 6e-8 relative rounding per value."""

Pieces = list[tuple[str, nir.NIRNode]]


# --------------------------------------------------------------------------------------------
# Keras -> NIR


def _positive_dt(value: Any, where: str) -> float:
    try:
        dt = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{where}: `dt` must be a step in seconds > 0, got {value!r}") from None
    if not math.isfinite(dt) or dt <= 0:
        raise ValueError(f"{where}: `dt` must be a step in seconds > 0, got {value!r}")
    return dt


def _numpy(variable) -> np.ndarray:
    return np.asarray(keras.ops.convert_to_numpy(variable))


def _time_constant(cell: cells.NeuronCell, name: str) -> np.ndarray:
    """Per-neuron time constant in seconds, float64 [units], as the layer's dynamics use it."""
    return cell.time_constant(name)


def _one_minus_decay(tau: np.ndarray, dt: float) -> np.ndarray:
    """``1 - exp(-dt / tau)``, accurate also for ``dt << tau``."""
    return -np.expm1(-dt / tau)


def _check_sequence_layer(layer: layers.SpikingSequence) -> None:
    if not layer.return_sequences:
        raise ExportError(
            f"nir export cannot express layer {layer.name!r} with return_sequences=False: a NIR "
            "graph maps whole input streams to whole output streams; export the model with "
            "return_sequences=True and select time steps outside the graph"
        )
    if layer.return_state:
        raise ExportError(
            f"nir export cannot express layer {layer.name!r} with return_state=True (extra "
            "state outputs); set return_state=False"
        )
    if getattr(layer, "go_backwards", False):
        raise ExportError(
            f"nir export cannot express layer {layer.name!r} with go_backwards=True (a NIR "
            "graph runs forward in time); reverse the input stream outside the graph"
        )


def _weight_node(layer: layers.SpikingSequence) -> tuple[str, nir.NIRNode]:
    """The synaptic weights ``x W + b`` as NIR ``Affine`` (with bias) or ``Linear``."""
    weight = _numpy(layer.cell.kernel).T.copy()  # NIR: [out, in], y = W x
    if layer.cell.bias is not None:
        return "affine", nir.Affine(weight=weight, bias=_numpy(layer.cell.bias).copy())
    return "linear", nir.Linear(weight=weight)


def _subgraph(nodes: dict[str, nir.NIRNode], edges: list[tuple[str, str]], shape):
    shape = np.array(shape).reshape(-1)
    return nir.NIRGraph(
        nodes={"input": nir.Input(input_type=shape), **nodes, "output": nir.Output(shape)},
        edges=edges,
    )


def _dense_expand(values: np.ndarray) -> np.ndarray:
    return np.asarray(values, dtype="float64").copy()


def _conv_expand(map_shape) -> Callable[[np.ndarray], np.ndarray]:
    """Per-filter values ``[F]`` -> NIR's channels-first per-neuron array ``[F, *spatial]``."""
    spatial = tuple(int(d) for d in map_shape[:-1])

    def expand(values: np.ndarray) -> np.ndarray:
        values = np.asarray(values, dtype="float64").reshape(-1, *([1] * len(spatial)))
        return np.broadcast_to(values, (values.shape[0], *spatial)).copy()

    return expand


def _li_node(layer, dt: float, expand) -> tuple[str, nir.NIRNode]:
    tau = _time_constant(layer.cell, "tau_mem")
    node = nir.LI(
        tau=expand(tau), r=expand(1.0 / _one_minus_decay(tau, dt)), v_leak=expand(0 * tau)
    )
    return ("li", node)


def _lif_node(layer, dt: float, expand) -> tuple[str, nir.NIRNode]:
    cell = layer.cell
    n = cell.units
    tau = _time_constant(cell, "tau_mem")
    one_minus_beta = _one_minus_decay(tau, dt)
    r = expand(1.0 / one_minus_beta)
    theta = np.full(n, float(cell.threshold))
    zeros = expand(np.zeros(n))
    shape = zeros.shape
    recurrent = None
    if getattr(cell, "recurrent_kernel", None) is not None:
        recurrent = nir.Linear(weight=_numpy(cell.recurrent_kernel).T.copy())
    if cell.reset == "zero":
        lif = nir.LIF(
            tau=expand(tau), r=r, v_leak=zeros, v_threshold=expand(theta), v_reset=zeros.copy()
        )
        if recurrent is None:
            return ("lif", lif)
        block = _subgraph(
            {"lif": lif, "w_rec": recurrent},
            [("input", "lif"), ("lif", "w_rec"), ("w_rec", "lif"), ("lif", "output")],
            shape,
        )
        return ("lif", block)
    # reset="subtract": leaky integrator + threshold + spike feedback of -beta * theta
    nodes = {
        "li": nir.LI(tau=expand(tau), r=r, v_leak=zeros),
        "threshold": nir.Threshold(threshold=expand(theta)),
        "reset": nir.Scale(scale=expand(-(1.0 - one_minus_beta) * theta)),
    }
    edges = [
        ("input", "li"),
        ("li", "threshold"),
        ("threshold", "reset"),
        ("reset", "li"),
        ("threshold", "output"),
    ]
    if recurrent is not None:
        nodes["w_rec"] = recurrent
        edges += [("threshold", "w_rec"), ("w_rec", "li")]
    return ("lif", _subgraph(nodes, edges, shape))


def _cuba_lif_node(layer, dt: float, expand) -> tuple[str, nir.NIRNode]:
    cell = layer.cell
    if cell.reset != "zero":
        raise ExportError(
            f"nir export cannot express layer {layer.name!r} ({type(layer).__name__}) with "
            f"reset={cell.reset!r}: NIR's CubaLIF resets to v_reset, and our subtractive reset "
            "removes theta undecayed from the next membrane value, which no NIR feedback "
            "through the synapse reproduces; use reset='zero'"
        )
    if getattr(cell, "recurrent_kernel", None) is not None:
        raise ExportError(
            f"nir export cannot express layer {layer.name!r} (CubaLIF) with recurrent weights: "
            "our spikes S[n] enter the synaptic current I[n+1] in the step they are emitted, "
            "while a NIR cycle delivers them one step later"
        )
    n = cell.units
    tau_syn = _time_constant(cell, "tau_syn")
    tau_mem = _time_constant(cell, "tau_mem")
    node = nir.CubaLIF(
        tau_syn=expand(tau_syn),
        tau_mem=expand(tau_mem),
        r=expand(1.0 / _one_minus_decay(tau_mem, dt)),
        v_leak=expand(np.zeros(n)),
        v_threshold=expand(np.full(n, float(cell.threshold))),
        v_reset=expand(np.zeros(n)),
        w_in=expand(1.0 / _one_minus_decay(tau_syn, dt)),
    )
    return ("cubalif", node)


@register(TARGET, layers.LI)
def _convert_li(layer: layers.LI, dt: float, **_) -> Pieces:
    _check_sequence_layer(layer)
    return [_weight_node(layer), _li_node(layer, dt, _dense_expand)]


@register(TARGET, layers.LIF)
def _convert_lif(layer: layers.LIF, dt: float, **_) -> Pieces:
    _check_sequence_layer(layer)
    return [_weight_node(layer), _lif_node(layer, dt, _dense_expand)]


@register(TARGET, layers.CubaLIF)
def _convert_cuba_lif(layer: layers.CubaLIF, dt: float, **_) -> Pieces:
    _check_sequence_layer(layer)
    return [_weight_node(layer), _cuba_lif_node(layer, dt, _dense_expand)]


# --- conv networks (see "Conv networks" in the module docstring) ------------------------------


def _channels_first(shape) -> tuple[int, ...]:
    """Our channels-last step shape ``(*spatial, C)`` as NIR's ``(C, *spatial)``."""
    shape = tuple(int(d) for d in shape)
    return shape if len(shape) <= 1 else (shape[-1], *shape[:-1])


def _same_pads(shape, window, strides, dilation=None) -> list[tuple[int, int]]:
    """TF's ``"same"`` padding ``(before, after)`` per spatial axis (the extra one after)."""
    dilation = dilation or (1,) * len(window)
    pads = []
    for size, k, stride, d in zip(shape, window, strides, dilation):
        out = -(-int(size) // int(stride))
        total = max((out - 1) * stride + (k - 1) * d + 1 - size, 0)
        pads.append((total // 2, total - total // 2))
    return pads


def _nir_padding(name, kind, padding, spatial, window, strides, dilation=None):
    """Our ``"valid"``/``"same"`` as a NIR (PyTorch-semantics) padding, or ExportError.

    ``"valid"`` is no padding. ``"same"`` pads ``(before, after)`` as TF does (the extra one
    after): NIR's (PyTorch's) string ``"same"`` is that split for a conv of stride 1; with
    strides it is written as explicit symmetric pads, which exist only when TF's split is
    symmetric.
    """
    rank = len(spatial)
    if padding == "valid":
        return "valid"
    if kind == "conv" and all(s == 1 for s in strides):
        return "same"
    pads = _same_pads(spatial, window, strides, dilation)
    if any(a != b for a, b in pads):
        raise ExportError(
            f"nir export cannot express layer {name!r} with padding='same' here: TF pads "
            f"{pads} (before, after) for input {tuple(spatial)}, window {tuple(window)}, strides "
            f"{tuple(strides)}; NIR (PyTorch semantics) pads both sides equally. Use "
            "padding='valid', or an input size that makes the padding even"
        )
    return pads[0][0] if rank == 1 else tuple(a for a, _ in pads)


def _conv_node(layer) -> tuple[str, nir.NIRNode]:
    """The layer's convolution as ``nir.Conv1d`` / ``nir.Conv2d`` (channels-first weights)."""
    cell = layer.cell
    if int(cell.groups) != 1:
        raise ExportError(
            f"nir export cannot write layer {layer.name!r} with groups={cell.groups}: NIR "
            "1.0.8 types a conv's input as weight.shape[1] = C / groups channels, so nir.read "
            "rejects the graph it wrote (type mismatch); use groups=1"
        )
    kernel = _numpy(cell.kernel)  # Keras: [*k, C / groups, F]
    rank = int(cell.rank)
    # NIR (PyTorch): [F, C / groups, *k]
    weight = np.transpose(kernel, (rank + 1, rank, *range(rank))).copy()
    bias = np.zeros(weight.shape[0], kernel.dtype)
    if cell.bias is not None:
        bias = _numpy(cell.bias).copy()
    spatial = tuple(int(d) for d in cell.input_map_shape[:-1])
    padding = _nir_padding(
        layer.name,
        "conv",
        cell.padding,
        spatial,
        cell.kernel_size,
        cell.strides,
        cell.dilation_rate,
    )
    if rank == 1:
        node = nir.Conv1d(
            input_shape=spatial[0],
            weight=weight,
            stride=int(cell.strides[0]),
            padding=padding,
            dilation=int(cell.dilation_rate[0]),
            groups=int(cell.groups),
            bias=bias,
        )
        return "conv1d", node
    node = nir.Conv2d(
        input_shape=spatial,
        weight=weight,
        stride=tuple(int(v) for v in cell.strides),
        padding=padding,
        dilation=tuple(int(v) for v in cell.dilation_rate),
        groups=int(cell.groups),
        bias=bias,
    )
    return "conv2d", node


_CONV_NEURONS = {
    conv_layers.ConvLI1D: _li_node,
    conv_layers.ConvLI2D: _li_node,
    conv_layers.ConvLIF1D: _lif_node,
    conv_layers.ConvLIF2D: _lif_node,
    conv_layers.ConvCubaLIF1D: _cuba_lif_node,
    conv_layers.ConvCubaLIF2D: _cuba_lif_node,
}


@register(TARGET, *_CONV_NEURONS)
def _convert_conv(layer, dt: float, **_) -> Pieces:
    _check_sequence_layer(layer)
    neuron = next(fn for cls, fn in _CONV_NEURONS.items() if isinstance(layer, cls))
    return [_conv_node(layer), neuron(layer, dt, _conv_expand(layer.cell.map_shape))]


@register(
    TARGET,
    spike_maps.SumPooling1D,
    spike_maps.SumPooling2D,
    spike_maps.AveragePooling1D,
    spike_maps.AveragePooling2D,
)
def _convert_pooling(layer, dt: float, *, in_shape, **_) -> Pieces:
    spatial, channels = tuple(in_shape[:-1]), int(in_shape[-1])
    padding = _nir_padding(
        layer.name, "pool", layer.padding, spatial, layer.pool_size, layer.strides
    )
    window = np.array(layer.pool_size)
    if layer.rank == 2:
        pads = np.zeros(2, int) if padding == "valid" else np.array(padding)
        node_class = nir.SumPool2d if layer.mode == "sum" else nir.AvgPool2d
        node = node_class(kernel_size=window, stride=np.array(layer.strides), padding=pads)
        return [(f"{layer.mode[:3]}pool2d", node)]
    # NIR 1.0.8 has no 1-D pooling node: a Conv1d whose weight is 1 (sum) or 1 / window
    # (average) from each channel to itself and 0 across channels, no bias, computes the same
    # per step, zero padding included (average pooling divides by the full window, as ours).
    # Not a depthwise conv (groups = channels): NIR 1.0.8 types a grouped conv's input with
    # C / groups channels, and nir.read rejects such a graph
    value = 1.0 if layer.mode == "sum" else 1.0 / float(window[0])
    weight = np.zeros((channels, channels, int(window[0])), np.float32)
    weight[np.arange(channels), np.arange(channels), :] = value
    node = nir.Conv1d(
        input_shape=int(spatial[0]),
        weight=weight,
        stride=int(layer.strides[0]),
        padding=padding,
        dilation=1,
        groups=1,
        bias=np.zeros(channels, np.float32),
    )
    return [(f"{layer.mode[:3]}pool1d", node)]


@register(TARGET, spike_maps.MaxPooling1D, spike_maps.MaxPooling2D)
def _convert_max_pooling(layer, dt: float, **_) -> Pieces:
    raise ExportError(
        f"nir export cannot express layer {layer.name!r} ({type(layer).__name__}): NIR 1.0.8 "
        "has no max-pooling node (its pooling nodes are SumPool2d and AvgPool2d); use "
        "SumPooling or AveragePooling"
    )


@register(TARGET, spike_maps.SpatialFlatten)
def _convert_flatten(layer, dt: float, *, in_shape, **_) -> Pieces:
    # NIR is channels-first: its Flatten of [C, *spatial] orders the features (c, *position),
    # ours (SpatialFlatten of [*spatial, C]) orders them (*position, c); to_nir permutes the
    # columns of the weight node that follows, so that graph computes our values
    shape = np.array(_channels_first(in_shape))
    return [("flatten", nir.Flatten(input_type={"input": shape}, start_dim=0, end_dim=-1))]


def _convert_identity(layer: keras.layers.Layer, dt: float, **_) -> Pieces:
    return []  # the identity at inference (Dropout, GaussianNoise, RandomTranslation, ...)


register(TARGET, *INFERENCE_IDENTITY)(_convert_identity)


def _chain(model: keras.Model) -> list[keras.layers.Layer]:
    """The model's layers in order, checking that they form one chain."""
    if not isinstance(model, keras.Model):
        raise TypeError(f"to_nir: `model` must be a keras.Model, got {type(model).__name__}")
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ExportError(
            f"nir export needs a model with one input and one output, got {len(model.inputs)} "
            f"inputs and {len(model.outputs)} outputs"
        )
    chain = [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]
    if not isinstance(model, keras.Sequential):
        previous = model.inputs[0]
        for layer in chain:
            try:
                source = layer.input
            except (AttributeError, ValueError):
                source = None
            if source is not previous:
                raise ExportError(
                    f"nir export needs a chain of layers; layer {layer.name!r} does not take "
                    "the previous layer's output as its only input"
                )
            previous = layer.output
        if previous is not model.outputs[0]:
            raise ExportError("nir export needs a chain of layers ending at the model output")
    return chain


def _graph_dt(chain: list[keras.layers.Layer], dt: float | None) -> float:
    steps = {
        layer.name: float(layer.cell.dt)
        for layer in chain
        if isinstance(layer, layers.SpikingSequence)
    }
    if dt is not None:
        dt = _positive_dt(dt, "to_nir")
        for name, step in steps.items():
            if not math.isclose(step, dt, rel_tol=1e-12):
                raise ValueError(
                    f"to_nir: `dt` must match the layers' step; got dt={dt!r} but layer "
                    f"{name!r} runs with dt={step!r}"
                )
        return dt
    if not steps:
        raise ValueError("to_nir: the model has no neuron layers, so pass `dt` (seconds)")
    if len(set(steps.values())) > 1:
        raise ExportError(f"nir export needs one dt for all layers, got {steps}")
    return next(iter(steps.values()))


def to_nir(model: keras.Model, *, dt: float | None = None) -> nir.NIRGraph:
    r"""Writes a chain of keras_spiking layers as a NIR graph.

    The graph is ``Input -> [Affine|Linear -> neuron] ... -> Output``; a LIF with
    ``reset="subtract"`` or recurrent weights becomes a subgraph node. Time constants are
    carried unchanged (seconds) and the resistances are ``r = 1 / (1 - exp(-dt / tau))``, so
    that integrating NIR's ``tau dv/dt = (v_leak - v) + r I`` exactly over one step with the
    input held constant gives our ``v[t] = beta v[t-1] + x[t] W + b`` (see the module
    docstring for every layer and for what raises).

    Args:
        model: a ``keras.Sequential`` or functional chain of ``keras_spiking.layers.LIF``,
            ``CubaLIF`` and ``LI`` and their conv forms, with the spike-map layers (plus
            ``keras.layers.Dropout``, ``RandomTranslation`` and the other layers that are the
            identity at inference, skipped).
        dt: the simulation step in seconds; default: the layers' common ``dt``. If given it
            must equal every layer's ``dt``.

    Returns:
        A ``nir.NIRGraph`` with ``metadata["dt"]`` (seconds); write it with ``nir.write``.

    Raises:
        ExportError: a layer or configuration NIR cannot express (names layer and target).
        ValueError: ``dt`` not positive or not matching the layers'.
        TypeError: ``model`` is not a ``keras.Model``.
    """
    # the identity at inference: left out of the graph (also in front of a RepeatSteps)
    chain = [layer for layer in _chain(model) if not isinstance(layer, INFERENCE_IDENTITY)]
    repeat = None
    if chain and isinstance(chain[0], (spike_maps.RepeatSteps, keras.layers.RepeatVector)):
        first = chain.pop(0)
        repeat = int(first.num_steps if hasattr(first, "num_steps") else first.n)
    converters = [converter(TARGET, layer) for layer in chain]  # unsupported layers raise here
    step = _graph_dt(chain, dt)
    input_shape = tuple(model.inputs[0].shape)
    step_shape = input_shape[1:] if repeat is not None else input_shape[2:]
    if (
        len(input_shape) < (2 if repeat is not None else 3)
        or len(step_shape) not in (1, 2, 3)
        or None in step_shape
    ):
        raise ExportError(
            "nir export needs inputs of shape [batch, time, features] or [batch, time, "
            "*spatial, channels] (1 or 2 spatial axes) with every axis after time known, "
            f"got {input_shape}"
        )
    shape = tuple(int(d) for d in step_shape)  # one step, ours (channels last)
    nodes: dict[str, nir.NIRNode] = {
        "input": nir.Input(input_type=np.array(_channels_first(shape)))
    }
    edges: list[tuple[str, str]] = []
    previous = "input"
    flattened = None  # our map shape before a SpatialFlatten whose features feed a weight
    for layer, convert in zip(chain, converters):
        for suffix, node in convert(layer, step, in_shape=shape):
            key = f"{layer.name}_{suffix}"
            if key in nodes or key == "output":
                raise ExportError(f"nir export: node name {key!r} is used twice")
            if isinstance(node, nir.Flatten):
                flattened = shape
            elif flattened is not None and isinstance(node, (nir.Affine, nir.Linear)):
                node.weight = _to_nir_feature_order(node.weight, flattened)
                flattened = None
            elif flattened is not None:
                raise ExportError(
                    f"nir export: layer {layer.name!r} follows a SpatialFlatten; only a dense "
                    "neuron layer (its weights take the flattened features) may"
                )
            nodes[key] = node
            edges.append((previous, key))
            previous = key
        shape = _our_output_shape(layer, shape)
    nodes["output"] = nir.Output(output_type=np.array(_channels_first(shape)))
    edges.append((previous, "output"))
    metadata: dict[str, Any] = {"dt": step, "generator": "keras_spiking"}
    if repeat is not None:
        metadata[REPEAT_KEY] = repeat
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata=metadata)


REPEAT_KEY = "keras_spiking_repeat_steps"
"""Metadata entry of a graph whose model held a static input for T steps (a leading
``RepeatSteps(T)`` or ``RepeatVector(T)``): the graph itself maps input streams to output
streams (its input is one step); :func:`from_nir` puts ``RepeatSteps(T)`` back in front."""


def _our_output_shape(layer, shape: tuple[int, ...]) -> tuple[int, ...]:
    """One step's output shape (channels last, no batch/time) of a chain layer."""
    if isinstance(layer, INFERENCE_IDENTITY):
        return shape
    out = layer.compute_output_shape((1, 1, *shape))
    if isinstance(out, (list, tuple)) and out and isinstance(out[0], (list, tuple)):
        out = out[0]
    return tuple(int(d) for d in tuple(out)[2:])


def _to_nir_feature_order(weight: np.ndarray, map_shape) -> np.ndarray:
    """Weight columns from our flattened ``(*position, c)`` order to NIR's ``(c, *position)``."""
    weight = np.asarray(weight)
    rank = len(map_shape)
    if rank == 1:
        return weight
    columns = weight.reshape(weight.shape[0], *map_shape)  # [out, *spatial, C]
    order = (0, rank, *range(1, rank))  # [out, C, *spatial]
    return np.transpose(columns, order).reshape(weight.shape[0], -1).copy()


def _from_nir_feature_order(kernel: np.ndarray, map_shape) -> np.ndarray:
    """Kernel rows ``[in, out]`` from NIR's ``(c, *position)`` order to ours."""
    rank = len(map_shape)
    if rank == 1:
        return kernel
    nir_shape = _channels_first(map_shape)
    rows = kernel.reshape(*nir_shape, kernel.shape[1])  # [C, *spatial, out]
    order = (*range(1, rank), 0, rank)  # [*spatial, C, out]
    return np.transpose(rows, order).reshape(-1, kernel.shape[1]).copy()


# --------------------------------------------------------------------------------------------
# NIR -> Keras


def _graph_dt_from(graph: nir.NIRGraph, dt: float | None) -> float:
    if dt is not None:
        return _positive_dt(dt, "from_nir")
    metadata = graph.metadata if isinstance(graph.metadata, dict) else {}
    if "dt" not in metadata:
        raise ValueError(
            "from_nir: NIR graphs are continuous-time, so a simulation step is needed: pass "
            "`dt` (seconds); the graph's metadata has no 'dt' entry either"
        )
    return _positive_dt(np.asarray(metadata["dt"]).item(), "from_nir (graph metadata)")


def _walk(graph: nir.NIRGraph, where: str) -> list[str]:
    """Node keys of a chain graph from its Input to its Output (both excluded)."""
    inputs = [k for k, node in graph.nodes.items() if isinstance(node, nir.Input)]
    outputs = [k for k, node in graph.nodes.items() if isinstance(node, nir.Output)]
    if len(inputs) != 1 or len(outputs) != 1:
        raise ExportError(
            f"from_nir: {where} must have one Input and one Output node, got inputs {inputs} "
            f"and outputs {outputs}"
        )
    successors: dict[str, list[str]] = {k: [] for k in graph.nodes}
    predecessors: dict[str, list[str]] = {k: [] for k in graph.nodes}
    for src, dst in graph.edges:
        if src not in graph.nodes or dst not in graph.nodes:
            raise ExportError(f"from_nir: {where} has an edge to a missing node: {(src, dst)}")
        successors[src].append(dst)
        predecessors[dst].append(src)
    order, key = [], inputs[0]
    while True:
        if len(successors[key]) != 1:
            raise ExportError(
                f"from_nir: {where} is not a chain: node {key!r} feeds {successors[key]} (a "
                "branch, a cycle outside a subgraph, or a dead end)"
            )
        key = successors[key][0]
        if len(predecessors[key]) != 1:
            raise ExportError(
                f"from_nir: {where} is not a chain: node {key!r} has inputs {predecessors[key]}"
            )
        if key == outputs[0]:
            break
        if key in order:
            raise ExportError(f"from_nir: {where} has a cycle through node {key!r}")
        order.append(key)
    unused = set(graph.nodes) - set(order) - {inputs[0], outputs[0]}
    if unused:
        raise ExportError(f"from_nir: {where} has nodes off the chain: {sorted(unused)}")
    return order


def _vector(value, n: int, name: str, key: str) -> np.ndarray:
    array = np.asarray(value, dtype="float64")
    try:
        return np.broadcast_to(array, (n,)).copy()
    except ValueError:
        raise ExportError(
            f"from_nir: node {key!r}: `{name}` has shape {array.shape}, expected ({n},)"
        ) from None


class _Spec:
    """Everything one of our layers needs, in our units: built up from NIR nodes.

    A conv layer's spec (``conv`` set) holds the Keras conv kernel ``[*k, C / groups, F]``,
    its ``units`` are its filters and its per-neuron parameters are read per filter.
    """

    def __init__(self, kind: str, key: str, weight: np.ndarray, bias: np.ndarray | None):
        self.kind, self.key = kind, key
        self.kernel = np.asarray(weight).T  # [in, out]
        self.bias = None if bias is None else np.asarray(bias)
        self.recurrent: np.ndarray | None = None  # [units, units], ours: S @ R
        self.taus: dict[str, np.ndarray] = {}
        self.threshold = 1.0
        self.reset = "zero"
        self.conv: dict[str, Any] | None = None  # conv arguments of the Keras layer
        self.map_shape: tuple[int, ...] = ()  # conv: one step's output [*spatial_out, F]

    @property
    def units(self) -> int:
        return self.kernel.shape[-1]

    def vector(self, value, name: str, key: str) -> np.ndarray:
        """A neuron parameter as ``[units]``: per neuron (dense) or per filter (conv).

        A conv layer's NIR parameter is ``[F, *spatial_out]`` (channels first) or broadcasts
        to it; our conv layers hold one value per filter, so it must not vary over positions.
        """
        if self.conv is None:
            return _vector(value, self.units, name, key)
        array = np.asarray(value, dtype="float64")
        spatial = self.map_shape[:-1]
        full = (self.units, *spatial)
        if array.ndim == 1 and array.size == self.units:
            array = array.reshape(-1, *([1] * len(spatial)))
        try:
            per_filter = np.broadcast_to(array, full).reshape(self.units, -1)
        except ValueError:
            raise ExportError(
                f"from_nir: node {key!r}: `{name}` has shape {array.shape}, expected {full} "
                "(filters, *spatial) or one value per filter"
            ) from None
        if np.any(per_filter != per_filter[:, :1]):
            raise ExportError(
                f"from_nir: node {key!r}: `{name}` varies over the positions of a filter; "
                "keras_spiking's conv layers hold one value per filter"
            )
        return per_filter[:, 0].copy()

    def scale_inputs(self, gain: np.ndarray) -> None:
        """Multiplies every input current of neuron ``i`` by ``gain[i]`` (exactly 1 skipped)."""
        if np.allclose(gain, 1.0, rtol=0.0, atol=_GAIN_ATOL):
            return
        self.kernel = self.kernel * gain
        if self.bias is not None:
            self.bias = self.bias * gain
        if self.recurrent is not None:
            self.recurrent = self.recurrent * gain

    def add_bias(self, extra: np.ndarray) -> None:
        if np.all(extra == 0):
            return
        self.bias = extra if self.bias is None else self.bias + extra

    def set_threshold(self, theta: np.ndarray) -> None:
        """Uniform thresholds are kept; per-neuron ones are divided into the input weights."""
        if np.any(theta <= 0):
            raise ExportError(f"from_nir: node {self.key!r}: thresholds must be > 0, got {theta}")
        if np.all(theta == theta[0]):
            self.threshold = float(theta[0])
        else:
            self.scale_inputs(1.0 / theta)
            self.threshold = 1.0


def _check_zero(value: np.ndarray, name: str, key: str, why: str) -> None:
    if np.any(value != 0):
        raise ExportError(f"from_nir: node {key!r}: {name} must be 0 ({why}), got {value}")


def _leaky(spec: _Spec, node, key: str, dt: float, tau_name: str) -> np.ndarray:
    """Sets ``tau`` and folds ``r (1 - beta)`` and ``v_leak`` of a LI/LIF node; returns beta."""
    tau = spec.vector(node.tau, "tau", key)
    if np.any(~np.isfinite(tau)) or np.any(tau <= 0):
        raise ExportError(f"from_nir: node {key!r}: tau must be finite and > 0, got {tau}")
    one_minus_beta = _one_minus_decay(tau, dt)
    spec.taus[tau_name] = tau
    spec.scale_inputs(spec.vector(node.r, "r", key) * one_minus_beta)
    spec.add_bias(one_minus_beta * spec.vector(node.v_leak, "v_leak", key))
    return 1.0 - one_minus_beta


def _lif_block(spec: _Spec, block: nir.NIRGraph, key: str, dt: float) -> None:
    """A recurrent and/or subtractive-reset LIF subgraph (the layouts :func:`to_nir` writes)."""
    kinds = {k: type(node).__name__ for k, node in block.nodes.items()}
    neurons = [k for k, node in block.nodes.items() if isinstance(node, (nir.LIF, nir.LI))]
    thresholds = [k for k, node in block.nodes.items() if isinstance(node, nir.Threshold)]
    resets = [k for k, node in block.nodes.items() if isinstance(node, nir.Scale)]
    recurrent = [k for k, node in block.nodes.items() if isinstance(node, nir.Linear)]
    expected_count = 2 + len(neurons) + len(thresholds) + len(resets) + len(recurrent)
    if (
        len(neurons) != 1
        or len(recurrent) > 1
        or expected_count != len(block.nodes)
        or (isinstance(block.nodes[neurons[0]], nir.LIF) and (thresholds or resets))
        or (
            isinstance(block.nodes[neurons[0]], nir.LI) and (len(thresholds), len(resets)) != (1, 1)
        )
    ):
        raise ExportError(
            f"from_nir: subgraph {key!r} has nodes {kinds}; a keras_spiking LIF reads only "
            "LIF (+ Linear w_rec cycle) or LI -> Threshold (+ Scale reset and Linear w_rec "
            "cycles)"
        )
    entry = next(k for k, node in block.nodes.items() if isinstance(node, nir.Input))
    exit_ = next(k for k, node in block.nodes.items() if isinstance(node, nir.Output))
    neuron = neurons[0]
    spikes = thresholds[0] if thresholds else neuron
    expected = {(entry, neuron), (spikes, exit_)}
    if thresholds:
        expected |= {(neuron, spikes), (spikes, resets[0]), (resets[0], neuron)}
    if recurrent:
        expected |= {(spikes, recurrent[0]), (recurrent[0], neuron)}
    got = {(a, b) for a, b in block.edges}
    if got != expected or len(block.edges) != len(got):
        raise ExportError(
            f"from_nir: subgraph {key!r} has edges {sorted(got)}, expected {sorted(expected)}"
        )
    n = spec.units
    if recurrent and spec.conv is not None:
        raise ExportError(
            f"from_nir: subgraph {key!r} has a recurrent weight after a conv node; "
            "keras_spiking's conv layers have no recurrent weights"
        )
    if recurrent:
        weight = np.asarray(block.nodes[recurrent[0]].weight)
        if weight.shape != (n, n):
            raise ExportError(
                f"from_nir: node {key!r}.{recurrent[0]}: recurrent weight has shape "
                f"{weight.shape}, expected {(n, n)}"
            )
        spec.recurrent = weight.T
    node = block.nodes[neuron]
    beta = _leaky(spec, node, f"{key}.{neuron}", dt, "tau_mem")
    if thresholds:
        theta = spec.vector(block.nodes[spikes].threshold, "threshold", f"{key}.{spikes}")
        removed = -spec.vector(block.nodes[resets[0]].scale, "scale", f"{key}.{resets[0]}")
        removed = removed * spec.vector(node.r, "r", key) * (1.0 - beta)  # in our units
        if not np.allclose(removed, beta * theta, rtol=_RESET_RTOL, atol=0.0):
            raise ExportError(
                f"from_nir: subgraph {key!r}: the feedback {resets[0]!r} removes {removed} per "
                f"spike, but a subtractive reset removes beta * threshold = {beta * theta}"
            )
        spec.reset = "subtract"
        spec.set_threshold(theta)
    else:
        _check_zero(spec.vector(node.v_reset, "v_reset", key), "v_reset", key, "reset to zero")
        spec.reset = "zero"
        spec.set_threshold(spec.vector(node.v_threshold, "v_threshold", key))


def _neuron(spec: _Spec, node, key: str, dt: float) -> None:
    """Fills ``spec`` from the neuron node (or subgraph) that follows the weights."""
    if isinstance(node, nir.NIRGraph):
        spec.kind = "LIF"
        _lif_block(spec, node, key, dt)
    elif isinstance(node, nir.LIF):
        spec.kind = "LIF"
        _leaky(spec, node, key, dt, "tau_mem")
        _check_zero(spec.vector(node.v_reset, "v_reset", key), "v_reset", key, "reset to zero")
        spec.set_threshold(spec.vector(node.v_threshold, "v_threshold", key))
    elif isinstance(node, nir.LI):
        spec.kind = "LI"
        _leaky(spec, node, key, dt, "tau_mem")
    elif isinstance(node, nir.CubaLIF):
        spec.kind = "CubaLIF"
        tau_syn = spec.vector(node.tau_syn, "tau_syn", key)
        tau_mem = spec.vector(node.tau_mem, "tau_mem", key)
        for name, tau in (("tau_syn", tau_syn), ("tau_mem", tau_mem)):
            if np.any(~np.isfinite(tau)) or np.any(tau <= 0):
                raise ExportError(f"from_nir: node {key!r}: {name} must be finite > 0, got {tau}")
        spec.taus = {"tau_syn": tau_syn, "tau_mem": tau_mem}
        _check_zero(
            spec.vector(node.v_leak, "v_leak", key), "v_leak", key, "our bias enters the synapse"
        )
        _check_zero(spec.vector(node.v_reset, "v_reset", key), "v_reset", key, "reset to zero")
        gain = spec.vector(node.w_in, "w_in", key) * _one_minus_decay(tau_syn, dt)
        gain = gain * spec.vector(node.r, "r", key) * _one_minus_decay(tau_mem, dt)
        spec.scale_inputs(gain)
        spec.set_threshold(spec.vector(node.v_threshold, "v_threshold", key))
    else:
        hint = (
            " (IF has no leak; our LIF needs a finite tau_mem)" if isinstance(node, nir.IF) else ""
        )
        raise ExportError(
            f"from_nir: node {key!r} of type {type(node).__name__} has no keras_spiking "
            f"layer{hint}; supported after Affine/Linear: LIF, LI, CubaLIF and the LIF subgraphs "
            "to_nir writes"
        )


def _build(spec: _Spec, dt: float, name: str) -> layers.SpikingSequence:
    taus = {
        k: float(v[0]) if np.all(v == v[0]) else [float(x) for x in v] for k, v in spec.taus.items()
    }
    options: dict[str, Any] = {"dt": dt, "use_bias": spec.bias is not None, "name": name}
    if spec.kind != "LI":
        options.update(
            threshold=spec.threshold, reset=spec.reset, recurrent=spec.recurrent is not None
        )
    if spec.conv is not None:
        options.pop("recurrent", None)
        rank = len(spec.conv["kernel_size"])
        layer_class = getattr(conv_layers, f"Conv{spec.kind}{rank}D")
        return layer_class(spec.units, **spec.conv, **taus, **options)
    layer_class: Callable[..., layers.SpikingSequence] = getattr(layers, spec.kind)
    return layer_class(spec.units, **taus, **options)


def _ints(value, rank: int, name: str, key: str) -> tuple[int, ...]:
    """An int or ``rank`` ints (a NIR stride, dilation, kernel size) as a tuple."""
    array = np.asarray(value).reshape(-1)
    if array.size == 1:
        array = np.repeat(array, rank)
    if array.size != rank or np.any(array != np.round(array)):
        raise ExportError(f"from_nir: node {key!r}: `{name}` {value!r} is not {rank} ints")
    return tuple(int(v) for v in array)


def _our_padding(padding, spatial, window, strides, dilation, key: str) -> str:
    """A NIR (PyTorch-semantics) padding as our ``"valid"`` / ``"same"``, or ExportError."""
    if isinstance(padding, bytes):
        padding = padding.decode()
    if isinstance(padding, str):
        if padding == "valid":
            return "valid"
        if padding == "same" and all(s == 1 for s in strides):
            return "same"  # PyTorch's "same" (stride 1) splits as TF does
        raise ExportError(
            f"from_nir: node {key!r}: padding {padding!r} with strides {strides} has no "
            "keras_spiking equivalent"
        )
    pads = _ints(padding, len(spatial), "padding", key)
    if all(p == 0 for p in pads):
        return "valid"
    same = _same_pads(spatial, window, strides, dilation)
    if all(a == b == p for (a, b), p in zip(same, pads)):
        return "same"
    raise ExportError(
        f"from_nir: node {key!r}: padding {pads} is neither none nor TF's 'same' padding "
        f"{same} for input {tuple(spatial)}; keras_spiking's layers take 'valid' or 'same'"
    )


def _conv_spec(node, key: str, shape: tuple[int, ...]) -> _Spec:
    """A Conv1d / Conv2d node as a conv layer's spec (the neuron node follows)."""
    rank = 1 if isinstance(node, nir.Conv1d) else 2
    if len(shape) != rank + 1:
        raise ExportError(
            f"from_nir: node {key!r} ({type(node).__name__}) takes maps with {rank} spatial "
            f"axes, got steps of shape {_channels_first(shape)} (channels first)"
        )
    weight = np.asarray(node.weight)  # [F, C / groups, *k]
    groups = int(node.groups)
    if weight.ndim != rank + 2 or weight.shape[1] * groups != shape[-1]:
        raise ExportError(
            f"from_nir: node {key!r}: weight has shape {weight.shape} with groups={groups}, "
            f"expected (filters, {shape[-1]} / groups, *kernel)"
        )
    bias = np.asarray(node.bias).reshape(-1)
    if bias.shape != (weight.shape[0],):
        raise ExportError(
            f"from_nir: node {key!r}: bias has shape {bias.shape}, expected ({weight.shape[0]},)"
        )
    kernel_size = tuple(int(k) for k in weight.shape[2:])
    strides = _ints(node.stride, rank, "stride", key)
    dilation = _ints(node.dilation, rank, "dilation", key)
    spatial = shape[:-1]
    padding = _our_padding(node.padding, spatial, kernel_size, strides, dilation, key)
    spec = _Spec("", key, np.zeros((1, 1)), None if not np.any(bias) else bias.copy())
    # Keras: [*k, C / groups, F]
    spec.kernel = np.transpose(weight, (*range(2, rank + 2), 1, 0)).copy()
    spec.conv = {
        "kernel_size": kernel_size,
        "strides": strides,
        "padding": padding,
        "dilation_rate": dilation,
        "groups": groups,
    }
    out = [
        conv_cells.conv_output_length(n, k, st, d, padding)
        for n, k, st, d in zip(spatial, kernel_size, strides, dilation)
    ]
    spec.map_shape = (*out, weight.shape[0])
    return spec


def _pooling_from_conv(spec: _Spec, channels: int) -> keras.layers.Layer:
    """A conv node with no neuron node after it: a per-channel uniform conv is a pooling layer.

    (:func:`to_nir` writes 1-D pooling so, NIR 1.0.8 having no 1-D pooling node.) Read:
    every weight 1 (sum) or 1 / window (average) from each channel to itself, 0 across
    channels (``groups=1``), or a depthwise conv (``groups`` = channels) of those weights; no
    bias, no dilation.
    """
    conv = spec.conv
    kernel = spec.kernel  # [*k, C / groups, F]
    window = int(np.prod(conv["kernel_size"]))
    mode = None
    rank = len(conv["kernel_size"])
    for name, value in (("Sum", 1.0), ("Average", float(np.float32(1.0 / window)))):
        if conv["groups"] == channels == spec.units and kernel.shape[-2] == 1:
            expected = np.full(kernel.shape, value)
        elif conv["groups"] == 1 and kernel.shape[-2:] == (channels, channels):
            expected = np.zeros(kernel.shape)
            expected[..., np.arange(channels), np.arange(channels)] = value
        else:
            break
        # ours: float32 weights of exactly 1 or float32(1 / window); another tool's float64
        # 1 / window is taken within float32 rounding
        if np.array_equal(kernel, expected) or (
            name == "Average" and np.allclose(kernel, expected, rtol=1e-7, atol=0)
        ):
            mode = name
            break
    if (
        mode is None
        or spec.bias is not None
        or spec.units != channels
        or any(d != 1 for d in conv["dilation_rate"])
    ):
        raise ExportError(
            f"from_nir: conv node {spec.key!r} has no neuron node after it; keras_spiking "
            "reads such a node only as pooling (each channel to itself with every weight 1 "
            "or 1 / window, 0 across channels, no bias, no dilation)"
        )
    layer_class = getattr(spike_maps, f"{mode}Pooling{rank}D")
    return layer_class(
        pool_size=conv["kernel_size"], strides=conv["strides"], padding=conv["padding"]
    )


def _pooling(node, key: str, shape: tuple[int, ...]) -> keras.layers.Layer:
    if len(shape) != 3:
        raise ExportError(
            f"from_nir: node {key!r} ({type(node).__name__}) takes 2-D maps, got steps of "
            f"shape {_channels_first(shape)} (channels first)"
        )
    window = _ints(node.kernel_size, 2, "kernel_size", key)
    strides = _ints(node.stride, 2, "stride", key)
    padding = _our_padding(node.padding, shape[:-1], window, strides, None, key)
    mode = "Sum" if isinstance(node, nir.SumPool2d) else "Average"
    return getattr(spike_maps, f"{mode}Pooling2D")(
        pool_size=window, strides=strides, padding=padding
    )


def _our_shape(nir_shape) -> tuple[int, ...]:
    """NIR's channels-first ``(C, *spatial)`` as our ``(*spatial, C)``."""
    shape = tuple(int(d) for d in np.asarray(nir_shape).reshape(-1))
    return shape if len(shape) <= 1 else (*shape[1:], shape[0])


def from_nir(graph: nir.NIRGraph, *, dt: float | None = None) -> keras.Model:
    r"""Builds a ``keras.Sequential`` of keras_spiking layers from a chain NIR graph.

    Reads ``Input -> [Affine|Linear -> LIF|LI|CubaLIF|LIF subgraph] ... -> Output`` (what
    :func:`to_nir` writes, and the same layout from other tools). Each NIR neuron is read in
    the discrete form of the module docstring: ``beta = exp(-dt / tau)``, and the input gain
    ``r (1 - beta)`` (CubaLIF: ``w_in (1 - alpha) r (1 - beta)``), ``v_leak`` and per-neuron
    thresholds folded exactly into the weights; for our own graphs the gain is 1 and the
    weights come back bit for bit.

    Conv networks: ``Conv1d``/``Conv2d`` followed by a neuron node become ``ConvLIF1D/2D``,
    ``ConvCubaLIF1D/2D`` or ``ConvLI1D/2D`` (neuron parameters one per filter), ``SumPool2d``
    / ``AvgPool2d`` become ``SumPooling2D`` / ``AveragePooling2D``, a depthwise uniform conv
    with no neuron node after it a 1-D (or 2-D) pooling layer, ``Flatten`` a
    ``SpatialFlatten`` (the next weight's columns permuted from NIR's channels-first order to
    ours). See "Conv networks" in the module docstring.

    Args:
        graph: the NIR graph (e.g. from ``nir.read(path)``).
        dt: simulation step in seconds; default ``graph.metadata["dt"]``. Given, it overrides
            the metadata (the continuous graph is re-discretised at that step).

    Returns:
        A ``keras.Sequential`` on inputs ``[batch, time, features]`` (conv graphs:
        ``[batch, time, *spatial, channels]``, channels last; with the metadata entry
        ``keras_spiking_repeat_steps`` = T: ``[batch, *step]`` held for T steps by a leading
        ``RepeatSteps``) whose layers return sequences; weights set from the graph (time
        constants fixed, not trainable).

    Raises:
        ValueError: no ``dt`` in the argument or the metadata, or ``dt`` not > 0.
        ExportError: a graph our layers cannot express (branches, unknown node types,
            inconsistent shapes, non-zero reset potentials, ...), naming the node.
        TypeError: ``graph`` is not a ``nir.NIRGraph``.
    """
    if not isinstance(graph, nir.NIRGraph):
        raise TypeError(f"from_nir: `graph` must be a nir.NIRGraph, got {type(graph).__name__}")
    step = _graph_dt_from(graph, dt)
    order = _walk(graph, "the graph")
    entry = next(k for k, node in graph.nodes.items() if isinstance(node, nir.Input))
    in_shape = np.asarray(graph.nodes[entry].input_type["input"]).reshape(-1)
    if in_shape.size not in (1, 2, 3):
        raise ExportError(
            "from_nir: the Input node must be 1-D (features) or a channels-first map "
            f"(channels, *spatial) with 1 or 2 spatial axes, got {in_shape}"
        )
    shape = _our_shape(in_shape)  # one step, ours (channels last)
    first_shape = shape
    items: list[_Spec | keras.layers.Layer] = []
    pending: _Spec | None = None
    flattened: tuple[int, ...] | None = None  # map shape before a Flatten (for the next weight)

    def close_pending() -> None:
        """A conv node with no neuron node after it is a pooling layer (or an error)."""
        nonlocal pending, shape
        if pending is None:
            return
        if pending.conv is None:
            raise ExportError(f"from_nir: weight node {pending.key!r} has no neuron node after it")
        channels = int(pending.kernel.shape[-1])
        items.append(_pooling_from_conv(pending, channels))
        shape = pending.map_shape
        pending = None

    for key in order:
        node = graph.nodes[key]
        if isinstance(node, (nir.Affine, nir.Linear)):
            if pending is not None and pending.conv is None:
                raise ExportError(
                    f"from_nir: node {key!r} follows weight node {pending.key!r}; our layers "
                    "hold one weight matrix before each neuron node"
                )
            close_pending()
            size = int(np.prod(shape))
            weight = np.asarray(node.weight)
            if len(shape) != 1 or weight.ndim != 2 or weight.shape[1] != size:
                raise ExportError(
                    f"from_nir: node {key!r}: weight has shape {weight.shape}, expected "
                    f"(units, {size})" + ("" if len(shape) == 1 else " after a Flatten of the map")
                )
            bias = None
            if isinstance(node, nir.Affine):
                bias = np.asarray(node.bias)
                if bias.shape != (weight.shape[0],):
                    raise ExportError(
                        f"from_nir: node {key!r}: bias has shape {bias.shape}, expected "
                        f"({weight.shape[0]},)"
                    )
            pending = _Spec("", key, weight, bias)
            if flattened is not None:
                pending.kernel = _from_nir_feature_order(pending.kernel, flattened)
                flattened = None
            shape = (weight.shape[0],)
        elif isinstance(node, (nir.Conv1d, nir.Conv2d)):
            close_pending()
            pending = _conv_spec(node, key, shape)
            shape = pending.map_shape
        elif isinstance(node, (nir.SumPool2d, nir.AvgPool2d)):
            close_pending()
            layer = _pooling(node, key, shape)
            items.append(layer)
            shape = _our_output_shape(layer, shape)
        elif isinstance(node, nir.Flatten):
            close_pending()
            nir_in = _channels_first(shape)
            out = nir.ir.utils.calc_flatten_output(nir_in, node.start_dim, node.end_dim)
            if np.asarray(out).size != 1:
                raise ExportError(
                    f"from_nir: node {key!r}: Flatten(start_dim={node.start_dim}, end_dim="
                    f"{node.end_dim}) of {nir_in} gives {list(out)}; keras_spiking's "
                    "SpatialFlatten flattens every axis of a step"
                )
            items.append(spike_maps.SpatialFlatten())
            flattened = shape if len(shape) > 1 else None
            shape = (int(np.prod(shape)),)
        elif pending is None:
            raise ExportError(
                f"from_nir: node {key!r} of type {type(node).__name__} must follow an Affine "
                "or Linear node (our layers own their input weights)"
            )
        else:
            _neuron(pending, node, key, step)
            items.append(pending)
            pending = None
        if flattened is not None and not isinstance(node, nir.Flatten):
            raise ExportError(
                f"from_nir: node {key!r} follows a Flatten; keras_spiking reads only a weight "
                "node (Affine or Linear) there"
            )
    close_pending()
    exit_ = next(k for k, node in graph.nodes.items() if isinstance(node, nir.Output))
    out_shape = np.asarray(graph.nodes[exit_].output_type["output"]).reshape(-1)
    if tuple(int(d) for d in out_shape) != _channels_first(shape):
        raise ExportError(
            f"from_nir: the Output node has shape {out_shape}, expected {_channels_first(shape)}"
        )
    built, count = [], 0
    for item in items:
        if isinstance(item, _Spec):
            prefix = item.kind.lower() if item.conv is None else f"conv{item.kind.lower()}"
            built.append(_build(item, step, f"{prefix}_{count}"))
            count += 1
        else:
            built.append(item)
    metadata = graph.metadata if isinstance(graph.metadata, dict) else {}
    repeat = metadata.get(REPEAT_KEY)
    if repeat is not None:
        head = [keras.Input(first_shape), spike_maps.RepeatSteps(int(np.asarray(repeat).item()))]
    else:
        head = [keras.Input((None, *first_shape))]
    model = keras.Sequential([*head, *built])
    for layer, item in zip(built, items):
        if not isinstance(item, _Spec):
            continue
        layer.cell.kernel.assign(item.kernel.astype(layer.cell.kernel.dtype))
        if item.bias is not None:
            layer.cell.bias.assign(item.bias.astype(layer.cell.bias.dtype))
        if item.recurrent is not None:
            layer.cell.recurrent_kernel.assign(
                item.recurrent.astype(layer.cell.recurrent_kernel.dtype)
            )
    return model


__all__ = ["to_nir", "from_nir"]
