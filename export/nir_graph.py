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
* Layers with no NIR converter (``SRC``, convolutions, ``Dense``, ...), ``return_sequences=False``
  or ``return_state=True`` (a NIR graph maps whole input streams to whole output streams),
  models that are not a single chain, layers built with different ``dt``.
* On import: NIR ``IF``/``I``/``CubaLI``/``Conv``/``Delay``/... nodes (``IF`` has no leak; our
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

from keras_spiking import cells, layers
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


def _subgraph(nodes: dict[str, nir.NIRNode], edges: list[tuple[str, str]], n: int):
    shape = np.array([n])
    return nir.NIRGraph(
        nodes={"input": nir.Input(input_type=shape), **nodes, "output": nir.Output(shape)},
        edges=edges,
    )


@register(TARGET, layers.LI)
def _convert_li(layer: layers.LI, dt: float) -> Pieces:
    _check_sequence_layer(layer)
    tau = _time_constant(layer.cell, "tau_mem")
    node = nir.LI(tau=tau, r=1.0 / _one_minus_decay(tau, dt), v_leak=np.zeros_like(tau))
    return [_weight_node(layer), ("li", node)]


@register(TARGET, layers.LIF)
def _convert_lif(layer: layers.LIF, dt: float) -> Pieces:
    _check_sequence_layer(layer)
    cell = layer.cell
    n = cell.units
    tau = _time_constant(cell, "tau_mem")
    one_minus_beta = _one_minus_decay(tau, dt)
    r = 1.0 / one_minus_beta
    theta = np.full(n, float(cell.threshold))
    zeros = np.zeros(n)
    recurrent = None
    if cell.recurrent_kernel is not None:
        recurrent = nir.Linear(weight=_numpy(cell.recurrent_kernel).T.copy())
    if cell.reset == "zero":
        lif = nir.LIF(tau=tau, r=r, v_leak=zeros, v_threshold=theta, v_reset=zeros.copy())
        if recurrent is None:
            return [_weight_node(layer), ("lif", lif)]
        block = _subgraph(
            {"lif": lif, "w_rec": recurrent},
            [("input", "lif"), ("lif", "w_rec"), ("w_rec", "lif"), ("lif", "output")],
            n,
        )
        return [_weight_node(layer), ("lif", block)]
    # reset="subtract": leaky integrator + threshold + spike feedback of -beta * theta
    nodes = {
        "li": nir.LI(tau=tau, r=r, v_leak=zeros),
        "threshold": nir.Threshold(threshold=theta),
        "reset": nir.Scale(scale=-(1.0 - one_minus_beta) * theta),
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
    return [_weight_node(layer), ("lif", _subgraph(nodes, edges, n))]


@register(TARGET, layers.CubaLIF)
def _convert_cuba_lif(layer: layers.CubaLIF, dt: float) -> Pieces:
    _check_sequence_layer(layer)
    cell = layer.cell
    if cell.reset != "zero":
        raise ExportError(
            f"nir export cannot express layer {layer.name!r} (CubaLIF) with "
            f"reset={cell.reset!r}: NIR's CubaLIF resets to v_reset, and our subtractive reset "
            "removes theta undecayed from the next membrane value, which no NIR feedback "
            "through the synapse reproduces; use reset='zero'"
        )
    if cell.recurrent_kernel is not None:
        raise ExportError(
            f"nir export cannot express layer {layer.name!r} (CubaLIF) with recurrent weights: "
            "our spikes S[n] enter the synaptic current I[n+1] in the step they are emitted, "
            "while a NIR cycle delivers them one step later"
        )
    n = cell.units
    tau_syn = _time_constant(cell, "tau_syn")
    tau_mem = _time_constant(cell, "tau_mem")
    node = nir.CubaLIF(
        tau_syn=tau_syn,
        tau_mem=tau_mem,
        r=1.0 / _one_minus_decay(tau_mem, dt),
        v_leak=np.zeros(n),
        v_threshold=np.full(n, float(cell.threshold)),
        v_reset=np.zeros(n),
        w_in=1.0 / _one_minus_decay(tau_syn, dt),
    )
    return [_weight_node(layer), ("cubalif", node)]


@register(TARGET, keras.layers.Dropout)
def _convert_dropout(layer: keras.layers.Layer, dt: float) -> Pieces:
    return []  # the identity at inference


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
            ``CubaLIF`` and ``LI`` (plus ``keras.layers.Dropout``, the identity at inference),
            on ``[batch, time, features]`` inputs.
        dt: the simulation step in seconds; default: the layers' common ``dt``. If given it
            must equal every layer's ``dt``.

    Returns:
        A ``nir.NIRGraph`` with ``metadata["dt"]`` (seconds); write it with ``nir.write``.

    Raises:
        ExportError: a layer or configuration NIR cannot express (names layer and target).
        ValueError: ``dt`` not positive or not matching the layers'.
        TypeError: ``model`` is not a ``keras.Model``.
    """
    chain = _chain(model)
    converters = [converter(TARGET, layer) for layer in chain]  # unsupported layers raise here
    step = _graph_dt(chain, dt)
    input_shape = tuple(model.inputs[0].shape)
    if len(input_shape) != 3 or input_shape[-1] is None:
        raise ExportError(
            f"nir export needs inputs of shape [batch, time, features] with known features, "
            f"got {input_shape}"
        )
    size = int(input_shape[-1])
    nodes: dict[str, nir.NIRNode] = {"input": nir.Input(input_type=np.array([size]))}
    edges: list[tuple[str, str]] = []
    previous = "input"
    for layer, convert in zip(chain, converters):
        for suffix, node in convert(layer, step):
            key = f"{layer.name}_{suffix}"
            if key in nodes or key == "output":
                raise ExportError(f"nir export: node name {key!r} is used twice")
            nodes[key] = node
            edges.append((previous, key))
            previous = key
            size = int(np.asarray(node.output_type["output"])[-1])
    nodes["output"] = nir.Output(output_type=np.array([size]))
    edges.append((previous, "output"))
    return nir.NIRGraph(
        nodes=nodes, edges=edges, metadata={"dt": step, "generator": "keras_spiking"}
    )


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
    """Everything one of our layers needs, in our units: built up from NIR nodes."""

    def __init__(self, kind: str, key: str, weight: np.ndarray, bias: np.ndarray | None):
        self.kind, self.key = kind, key
        self.kernel = np.asarray(weight).T  # [in, out]
        self.bias = None if bias is None else np.asarray(bias)
        self.recurrent: np.ndarray | None = None  # [units, units], ours: S @ R
        self.taus: dict[str, np.ndarray] = {}
        self.threshold = 1.0
        self.reset = "zero"

    @property
    def units(self) -> int:
        return self.kernel.shape[1]

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
    n = spec.units
    tau = _vector(node.tau, n, "tau", key)
    if np.any(~np.isfinite(tau)) or np.any(tau <= 0):
        raise ExportError(f"from_nir: node {key!r}: tau must be finite and > 0, got {tau}")
    one_minus_beta = _one_minus_decay(tau, dt)
    spec.taus[tau_name] = tau
    spec.scale_inputs(_vector(node.r, n, "r", key) * one_minus_beta)
    spec.add_bias(one_minus_beta * _vector(node.v_leak, n, "v_leak", key))
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
        theta = _vector(block.nodes[spikes].threshold, n, "threshold", f"{key}.{spikes}")
        removed = -_vector(block.nodes[resets[0]].scale, n, "scale", f"{key}.{resets[0]}")
        removed = removed * _vector(node.r, n, "r", key) * (1.0 - beta)  # in our units
        if not np.allclose(removed, beta * theta, rtol=_RESET_RTOL, atol=0.0):
            raise ExportError(
                f"from_nir: subgraph {key!r}: the feedback {resets[0]!r} removes {removed} per "
                f"spike, but a subtractive reset removes beta * threshold = {beta * theta}"
            )
        spec.reset = "subtract"
        spec.set_threshold(theta)
    else:
        _check_zero(_vector(node.v_reset, n, "v_reset", key), "v_reset", key, "reset to zero")
        spec.reset = "zero"
        spec.set_threshold(_vector(node.v_threshold, n, "v_threshold", key))


def _neuron(spec: _Spec, node, key: str, dt: float) -> None:
    """Fills ``spec`` from the neuron node (or subgraph) that follows the weights."""
    n = spec.units
    if isinstance(node, nir.NIRGraph):
        spec.kind = "LIF"
        _lif_block(spec, node, key, dt)
    elif isinstance(node, nir.LIF):
        spec.kind = "LIF"
        _leaky(spec, node, key, dt, "tau_mem")
        _check_zero(_vector(node.v_reset, n, "v_reset", key), "v_reset", key, "reset to zero")
        spec.set_threshold(_vector(node.v_threshold, n, "v_threshold", key))
    elif isinstance(node, nir.LI):
        spec.kind = "LI"
        _leaky(spec, node, key, dt, "tau_mem")
    elif isinstance(node, nir.CubaLIF):
        spec.kind = "CubaLIF"
        tau_syn = _vector(node.tau_syn, n, "tau_syn", key)
        tau_mem = _vector(node.tau_mem, n, "tau_mem", key)
        for name, tau in (("tau_syn", tau_syn), ("tau_mem", tau_mem)):
            if np.any(~np.isfinite(tau)) or np.any(tau <= 0):
                raise ExportError(f"from_nir: node {key!r}: {name} must be finite > 0, got {tau}")
        spec.taus = {"tau_syn": tau_syn, "tau_mem": tau_mem}
        _check_zero(
            _vector(node.v_leak, n, "v_leak", key), "v_leak", key, "our bias enters the synapse"
        )
        _check_zero(_vector(node.v_reset, n, "v_reset", key), "v_reset", key, "reset to zero")
        gain = _vector(node.w_in, n, "w_in", key) * _one_minus_decay(tau_syn, dt)
        gain = gain * _vector(node.r, n, "r", key) * _one_minus_decay(tau_mem, dt)
        spec.scale_inputs(gain)
        spec.set_threshold(_vector(node.v_threshold, n, "v_threshold", key))
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
    layer_class: Callable[..., layers.SpikingSequence] = getattr(layers, spec.kind)
    return layer_class(spec.units, **taus, **options)


def from_nir(graph: nir.NIRGraph, *, dt: float | None = None) -> keras.Model:
    r"""Builds a ``keras.Sequential`` of keras_spiking layers from a chain NIR graph.

    Reads ``Input -> [Affine|Linear -> LIF|LI|CubaLIF|LIF subgraph] ... -> Output`` (what
    :func:`to_nir` writes, and the same layout from other tools). Each NIR neuron is read in
    the discrete form of the module docstring: ``beta = exp(-dt / tau)``, and the input gain
    ``r (1 - beta)`` (CubaLIF: ``w_in (1 - alpha) r (1 - beta)``), ``v_leak`` and per-neuron
    thresholds folded exactly into the weights; for our own graphs the gain is 1 and the
    weights come back bit for bit.

    Args:
        graph: the NIR graph (e.g. from ``nir.read(path)``).
        dt: simulation step in seconds; default ``graph.metadata["dt"]``. Given, it overrides
            the metadata (the continuous graph is re-discretised at that step).

    Returns:
        A ``keras.Sequential`` on inputs ``[batch, time, features]`` whose layers return
        sequences; weights set from the graph (time constants fixed, not trainable).

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
    if in_shape.size != 1:
        raise ExportError(f"from_nir: the Input node must be 1-D (features), got {in_shape}")
    size = int(in_shape[0])
    specs: list[_Spec] = []
    pending: _Spec | None = None
    for key in order:
        node = graph.nodes[key]
        if isinstance(node, (nir.Affine, nir.Linear)):
            if pending is not None:
                raise ExportError(
                    f"from_nir: node {key!r} follows weight node {pending.key!r}; our layers "
                    "hold one weight matrix before each neuron node"
                )
            weight = np.asarray(node.weight)
            if weight.ndim != 2 or weight.shape[1] != size:
                raise ExportError(
                    f"from_nir: node {key!r}: weight has shape {weight.shape}, expected "
                    f"(units, {size})"
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
            size = weight.shape[0]
        elif pending is None:
            raise ExportError(
                f"from_nir: node {key!r} of type {type(node).__name__} must follow an Affine "
                "or Linear node (our layers own their input weights)"
            )
        else:
            _neuron(pending, node, key, step)
            specs.append(pending)
            pending = None
    if pending is not None:
        raise ExportError(f"from_nir: weight node {pending.key!r} has no neuron node after it")
    exit_ = next(k for k, node in graph.nodes.items() if isinstance(node, nir.Output))
    out_shape = np.asarray(graph.nodes[exit_].output_type["output"]).reshape(-1)
    if out_shape.size != 1 or int(out_shape[0]) != size:
        raise ExportError(f"from_nir: the Output node has shape {out_shape}, expected ({size},)")
    n_in = int(in_shape[0])
    built = [_build(spec, step, f"{spec.kind.lower()}_{i}") for i, spec in enumerate(specs)]
    model = keras.Sequential([keras.Input((None, n_in)), *built])
    for layer, spec in zip(built, specs):
        layer.cell.kernel.assign(spec.kernel.astype(layer.cell.kernel.dtype))
        if spec.bias is not None:
            layer.cell.bias.assign(spec.bias.astype(layer.cell.bias.dtype))
        if spec.recurrent is not None:
            layer.cell.recurrent_kernel.assign(
                spec.recurrent.astype(layer.cell.recurrent_kernel.dtype)
            )
    return model


__all__ = ["to_nir", "from_nir"]
