r"""Metrics of spiking models: accuracies, firing rates, silent ("dead") neurons, spike rate.

The accuracies for ``compile(metrics=...)``: :class:`SparseReadoutAccuracy` (argmax of a
readout reduced over time, for the membrane and spike-count losses) and
:class:`FirstSpikeAccuracy` (the output neuron that spikes first, for EventProp's spike-time
loss); they are defined next to their losses and also importable from there.

A spiking layer is any layer with ``spiking = True`` (:class:`keras_spiking.layers.LIF` and
:class:`keras_spiking.layers.CubaLIF`); its output holds 0/1 spikes ``[batch, time, units]``.
The non-spiking readout :class:`keras_spiking.layers.LI` is skipped.

Rates are in spikes per time step, averaged over samples and steps:

.. math::  r_j = \frac{1}{N T} \sum_{n=1}^{N} \sum_{t=1}^{T} S_{n,t,j}

and, given the simulation step ``dt`` in seconds, in Hz: ``r_j / dt``. A neuron is *dead* on
some data when it never fires on it (``r_j = 0``).

Example::

    model = keras.Sequential([
        keras.Input((100, 40)),
        keras_spiking.layers.LIF(64, name="hidden"),
        keras_spiking.layers.LI(3),
    ])
    rates = keras_spiking.metrics.firing_rates(model, x_val[:64], dt=1e-3)  # {"hidden": [64] Hz}
    silent = keras_spiking.metrics.dead_neurons(model, x_val[:64])  # {"hidden": int}
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from keras_spiking import _validation
from keras_spiking.first_spike import FirstSpikeAccuracy
from keras_spiking.losses import SparseReadoutAccuracy

__all__ = [
    "FirstSpikeAccuracy",
    "SparseReadoutAccuracy",
    "SpikeRate",
    "dead_neurons",
    "firing_rates",
    "spike_trains",
    "spiking_layers",
]

DEFAULT_BATCH_SIZE = 32
"""Samples per forward pass when ``batch_size`` is None (as in ``keras.Model.predict``)."""


def _events(outputs: np.ndarray) -> np.ndarray:
    """0/1 events of a spiking layer's output: 1 where the output is > 0.

    For LIF / CubaLIF this is the spike train itself; for the SRC's graded pulses every step of
    a pulse counts (a pulse lasts a few steps, so SRC rates count pulse steps, not pulses).
    """
    return (outputs > 0).astype(outputs.dtype)


def _is_spiking(layer) -> bool:
    return bool(getattr(layer, "spiking", False))


def _has_spiking(model: keras.Model) -> bool:
    return any(
        _is_spiking(layer) or (isinstance(layer, keras.Model) and _has_spiking(layer))
        for layer in model.layers
    )


def _flat_neurons(layer: keras.layers.Layer, outputs: np.ndarray) -> np.ndarray:
    """A layer's outputs with its neurons on one last axis.

    A conv layer's spike maps ``[..., *spatial, filters]`` are flattened row-major to
    ``[..., neurons]`` (the order of its states); other layers' outputs are returned as they
    are.
    """
    cell = getattr(layer, "cell", None)
    map_shape = getattr(cell, "map_shape", None)
    if map_shape is None:
        return outputs
    return outputs.reshape(*outputs.shape[: outputs.ndim - len(map_shape)], -1)


def spiking_layers(model: keras.Model) -> list[keras.layers.Layer]:
    """The spiking layers of a model, in layer order, looking inside nested models.

    A layer counts as spiking when ``getattr(layer, "spiking", False)`` is true (``LIF``,
    ``CubaLIF``; not the ``LI`` readout). Sub-models (``keras.Model`` instances used as layers)
    are searched recursively; other container layers (wrappers) are not. A layer shared between
    several nested models is listed once.

    Args:
        model: a Keras model (Sequential, functional or subclassed).

    Returns:
        The spiking layers, outermost first in the order of ``model.layers``.

    Raises:
        TypeError: if ``model`` is not a ``keras.Model``.
    """
    if not isinstance(model, keras.Model):
        raise TypeError(f"spiking_layers: `model` must be a keras.Model, got {model!r}")
    found: list[keras.layers.Layer] = []
    seen: set[int] = set()

    def visit(container):
        for layer in container.layers:
            if _is_spiking(layer):
                if id(layer) not in seen:
                    seen.add(id(layer))
                    found.append(layer)
            elif isinstance(layer, keras.Model):
                visit(layer)

    visit(model)
    return found


def _first(output):
    """The main output of a layer (its first output when it also returns states)."""
    return output[0] if isinstance(output, (list, tuple)) else output


def _graph_input(model: keras.Model):
    """The symbolic input structure of a functional model (ValueError for subclassed models)."""
    try:
        inputs = model.inputs
    except AttributeError:
        inputs = None
    if not inputs:
        raise ValueError(
            f"Model {model.name!r} ({type(model).__name__}) has no symbolic inputs: spike "
            "probing needs a keras.Sequential or a functional model (a subclassed model has no "
            "graph of layer outputs to probe). Rebuild it as `keras.Model(inputs, outputs)` "
            "with `inputs = keras.Input((time, features))`, or as a keras.Sequential"
        )
    return model.input


def _nested_spiking_models(model: keras.Model) -> list[keras.Model]:
    return [
        layer
        for layer in model.layers
        if isinstance(layer, keras.Model) and not _is_spiking(layer) and _has_spiking(layer)
    ]


def _probe_function(model: keras.Model, with_output: bool) -> Callable[[Any], tuple[list, Any]]:
    """``fn(x) -> (spikes of each spiking layer, model output or None)``.

    A functional model becomes one probe model
    ``keras.Model(model.input, [layer.output for each spiking layer])``. A Sequential model
    runs layer by layer (so it works whether or not it was built with ``keras.Input`` and
    with layers shared with other models), probing its spiking sub-models in turn. The
    spiking layers inside sub-models of a functional model cannot be reached through the
    public Keras graph API, so that case is refused with a ValueError.
    """
    nested = _nested_spiking_models(model)
    if isinstance(model, keras.Sequential):
        steps = [
            (layer, _probe_function(layer, True) if any(layer is n for n in nested) else None)
            for layer in model.layers
        ]

        def run_sequential(x):
            spikes, h = [], x
            for layer, sub_probe in steps:
                if sub_probe is not None:
                    sub_spikes, h = sub_probe(h)
                    spikes.extend(sub_spikes)
                else:
                    h = layer(h, training=False)
                    if _is_spiking(layer):
                        spikes.append(_first(h))
            return spikes, h if with_output else None

        return run_sequential

    graph_input = _graph_input(model)
    if nested:
        raise ValueError(
            f"Functional model {model.name!r} holds spiking layers inside the nested "
            f"model(s) {[layer.name for layer in nested]}, whose outputs cannot be probed "
            "through the public Keras graph API. Call the spiking layers directly in the "
            "outer model, or make the outer model a keras.Sequential"
        )
    tensors = [_first(layer.output) for layer in spiking_layers(model)]
    count = len(tensors)
    outputs = list(model.outputs) if with_output else []
    try:
        probe = keras.Model(graph_input, tensors + outputs, name=f"{model.name}_spike_probe")
    except ValueError as error:
        raise ValueError(
            f"Could not build a probe of the spiking layers of model {model.name!r} (is a "
            f"spiking layer shared with a model it was first called in?): {error}"
        ) from error

    def run(x):
        results = probe(x, training=False)
        results = list(results) if isinstance(results, (list, tuple)) else [results]
        rest = results[count:]
        if not with_output:
            return results[:count], None
        return results[:count], rest[0] if len(rest) == 1 else rest

    return run


def _num_samples(x) -> int:
    sizes = {int(a.shape[0]) for a in tf.nest.flatten(x)}
    if len(sizes) != 1:
        raise ValueError(
            f"All inputs in `x` must have the same number of samples (first axis), got sizes "
            f"{sorted(sizes)}"
        )
    return sizes.pop()


def _prepare_inputs(model: keras.Model, x):
    """``x`` as numpy arrays/tensors in the input structure of ``model`` (or a Dataset)."""
    if isinstance(x, tf.data.Dataset):
        return x
    if x is None:
        raise ValueError("`x` must be an array (or structure of arrays) of inputs, got None")

    def convert(a):
        if isinstance(a, tf.Tensor):
            return a
        array = np.asarray(a)
        if array.dtype == object:
            raise TypeError(f"`x` must hold numeric arrays, got {type(a).__name__} {a!r:.80}")
        if array.ndim == 0:
            raise ValueError(f"`x` must have a batch axis, got a scalar {a!r}")
        return array

    try:
        num_inputs = len(model.inputs)
    except (AttributeError, TypeError):
        num_inputs = 1
    if isinstance(x, dict) or (isinstance(x, (list, tuple)) and num_inputs > 1):
        return tf.nest.map_structure(convert, x)
    return convert(x)


def _batches(x, batch_size: int | None) -> Iterator[Any]:
    if isinstance(x, tf.data.Dataset):
        if batch_size is not None:
            raise ValueError(
                f"`batch_size` must be None when `x` is a tf.data.Dataset (it is already "
                f"batched), got {batch_size!r}"
            )
        for element in x:
            yield keras.utils.unpack_x_y_sample_weight(element)[0]
        return
    size = DEFAULT_BATCH_SIZE if batch_size is None else batch_size
    total = _num_samples(x)
    for start in range(0, total, size):
        yield tf.nest.map_structure(lambda a, s=start: a[s : s + size], x)


def _checked_names(model: keras.Model) -> list[str]:
    """Names of the spiking layers of ``model``; ValueError if none or if two share a name."""
    names = [layer.name for layer in spiking_layers(model)]
    if not names:
        raise ValueError(
            f"Model {model.name!r} has no spiking layers (layers with `spiking=True`, such as "
            "keras_spiking.layers.LIF or CubaLIF)"
        )
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ValueError(
            f"Spiking layers of model {model.name!r} share the name(s) {duplicates}; give them "
            "unique names (`name=` argument) so their statistics can be told apart"
        )
    return names


def spike_trains(model: keras.Model, x) -> dict[str, np.ndarray]:
    """The spikes of every spiking layer for one batch ``x``, by layer name.

    Args:
        model: a built Sequential or functional model.
        x: one batch of inputs (keep it small: the whole ``[batch, time, units]`` spike
            tensor of every spiking layer is returned).

    Returns:
        Per spiking layer name, its 0/1 events (output > 0) as a NumPy array
        ``[batch, time, units]`` (a conv layer's maps flattened to ``units = positions x
        filters``, row-major over ``[*spatial, filters]``).
    """
    names = _checked_names(model)
    layers = spiking_layers(model)
    spikes, _ = _probe_function(model, with_output=False)(_prepare_inputs(model, x))
    return {
        name: _flat_neurons(layer, _events(keras.ops.convert_to_numpy(s)))
        for name, layer, s in zip(names, layers, spikes, strict=True)
    }


def _spike_counts(
    model: keras.Model, x, batch_size: int | None = None
) -> tuple[dict[str, np.ndarray], dict[str, int]]:
    """Spikes per neuron summed over ``x``, and the number of (sample, step) pairs summed.

    Returns:
        ``(counts, steps)``: per spiking layer name, a float64 ``[units]`` array of spike
        counts and the number of samples times time steps the counts are summed over.
    """
    if batch_size is not None:
        batch_size = _validation.positive_int("batch_size", batch_size, "firing_rates")
    names = _checked_names(model)
    layers = spiking_layers(model)
    run = _probe_function(model, with_output=False)
    x = _prepare_inputs(model, x)
    counts: dict[str, np.ndarray] = {}
    steps = dict.fromkeys(names, 0)
    for batch in _batches(x, batch_size):
        spikes, _ = run(batch)
        for name, layer, s in zip(names, layers, spikes, strict=True):
            s = _events(keras.ops.convert_to_numpy(s)).astype("float64")
            s = _flat_neurons(layer, s)  # conv maps: [..., neurons]
            s = s.reshape(-1, s.shape[-1])  # [batch * time, units]
            counts[name] = counts.get(name, 0.0) + s.sum(axis=0)
            steps[name] += s.shape[0]
    for name in names:
        if steps[name] == 0:
            raise ValueError(
                f"`x` gave no samples or no time steps for layer {name!r}: cannot compute "
                "firing rates from empty inputs"
            )
    return counts, steps


def firing_rates(
    model: keras.Model, x, *, batch_size: int | None = None, dt: float | None = None
) -> dict[str, np.ndarray]:
    r"""Mean firing rate of every neuron of every spiking layer on the inputs ``x``.

    .. math::  r_j = \frac{1}{N T} \sum_{n,t} S_{n,t,j} \quad \text{(spikes per step)},
        \qquad r_j / dt \quad \text{(Hz, when dt is given)}

    The model runs in inference mode (``training=False``), one batch at a time, summing spikes
    per neuron (the full spike trains are never held in memory). A functional model is probed
    with ``keras.Model(model.input, [layer.output for each spiking layer])``; a Sequential
    model runs layer by layer. A layer built with ``return_sequences=False`` contributes its
    last step only (``T = 1``). In a functional model, a layer called several times is
    measured at its first call.

    Args:
        model: a Sequential model, or a functional model built from ``keras.Input``; spiking
            layers inside nested sub-models are found when the outer model is Sequential.
        x: inputs: an array ``[samples, time, features]`` (or the structure of arrays the model
            takes: a list for several inputs, a dict by input name), or a ``tf.data.Dataset``
            yielding batches of ``x`` or ``(x, y[, sample_weight])``.
        batch_size: samples per forward pass (default 32); must be None for a Dataset.
        dt: simulation step in seconds; when given, the rates are in Hz (``spikes/step / dt``)
            instead of spikes per step.

    Returns:
        ``{layer name: float64 array [units]}`` of rates, in spikes per step (in [0, 1]) or Hz.

    Raises:
        ValueError: if the model is subclassed, has no spiking layers, has two spiking layers
            of the same name, is functional with spiking layers inside a nested model, or ``x``
            is empty; or for a bad ``batch_size`` or ``dt``.
    """
    if dt is not None:
        dt = _validation.positive_number("dt", dt, "firing_rates")
    counts, steps = _spike_counts(model, x, batch_size)
    scale = 1.0 if dt is None else 1.0 / dt
    return {name: counts[name] / steps[name] * scale for name in counts}


def dead_neurons(model: keras.Model, x, *, batch_size: int | None = None) -> dict[str, int]:
    """Number of neurons per spiking layer that never fire on the inputs ``x``.

    A neuron is dead on ``x`` when its spike count over all samples and time steps is zero.
    Many dead neurons after training usually mean the inputs are too weak for the threshold
    (rescale the inputs or the initial weights) or the surrogate gradient is too narrow.
    The result depends on ``x``: use a representative sample.

    Args:
        model: a Sequential or functional model (see :func:`firing_rates`).
        x: inputs, as for :func:`firing_rates`.
        batch_size: samples per forward pass (default 32); must be None for a Dataset.

    Returns:
        ``{layer name: number of silent neurons}``.

    Raises:
        ValueError: as :func:`firing_rates`.
    """
    counts, _ = _spike_counts(model, x, batch_size)
    return {name: int(np.count_nonzero(c == 0)) for name, c in counts.items()}


@keras.saving.register_keras_serializable(package="keras_spiking")
class SpikeRate(keras.metrics.Metric):
    r"""Mean of the predictions over all entries: the spike rate of a spiking output.

    For a model whose output (or one of its outputs) is a spiking layer with 0/1 spikes
    ``y_pred`` of shape ``[batch, time, units]``:

    .. math::  \text{spike\_rate} = \frac{\sum_i w_i\, y_i}{\sum_i w_i}
        \quad \text{(spikes per step per neuron, or Hz when divided by dt)}

    accumulated over the batches of an epoch. ``y_true`` is ignored. ``sample_weight`` (one
    weight per sample, or any shape broadcastable to ``y_pred`` from the left) weights the
    entries.

    Example::

        model.compile("adam", loss, metrics=[keras_spiking.metrics.SpikeRate()])

    Args:
        dt: simulation step in seconds; when given the result is in Hz (``rate / dt``),
            otherwise in spikes per step.
        name: metric name (default "spike_rate").
        dtype: dtype of the accumulators and result.
    """

    def __init__(self, dt: float | None = None, name: str = "spike_rate", dtype=None):
        super().__init__(name=name, dtype=dtype)
        self.dt = None if dt is None else _validation.positive_number("dt", dt, "SpikeRate")
        self.total = self.add_variable(shape=(), initializer="zeros", name="total")
        self.count = self.add_variable(shape=(), initializer="zeros", name="count")

    def update_state(self, y_true, y_pred, sample_weight=None):
        """Adds the (weighted) sum and count of the entries of ``y_pred``; ignores ``y_true``."""
        del y_true
        values = keras.ops.cast(y_pred, self.dtype)
        if sample_weight is None:
            self.total.assign_add(keras.ops.sum(values))
            self.count.assign_add(keras.ops.cast(keras.ops.size(values), self.dtype))
            return
        weights = keras.ops.cast(sample_weight, self.dtype)
        while len(weights.shape) < len(values.shape):
            weights = keras.ops.expand_dims(weights, -1)
        weights = keras.ops.broadcast_to(weights, keras.ops.shape(values))
        self.total.assign_add(keras.ops.sum(values * weights))
        self.count.assign_add(keras.ops.sum(weights))

    def result(self):
        rate = keras.ops.divide_no_nan(self.total, self.count)
        return rate if self.dt is None else rate / self.dt

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config["dt"] = self.dt
        return config
