"""Training callbacks that watch the spiking activity of a model.

* :class:`FiringRateMonitor` logs the mean firing rate and the number of never-firing ("dead")
  neurons of every spiking layer on a small fixed sample, so they appear in ``History``.
* :class:`SpikeRasterPlot` writes a spike raster image (time on x, neuron on y) per spiking
  layer and epoch.
* :func:`plot_spike_raster` draws one raster from a ``[time, neurons]`` array of spikes.

Example::

    monitor = keras_spiking.callbacks.FiringRateMonitor(x_train[:32], dt=1e-3)
    raster = keras_spiking.callbacks.SpikeRasterPlot(x_train[:1], "rasters/{layer}_{epoch}.png")
    history = model.fit(x_train, y_train, epochs=5, callbacks=[monitor, raster])
    history.history["hidden_rate"]  # mean rate (Hz) of layer "hidden" after each epoch

Plots use matplotlib's Agg renderer on their own figures (``pyplot`` and the global backend
are left alone); matplotlib is imported only when a plot is made.
"""

from __future__ import annotations

import os
import string
from typing import TYPE_CHECKING, Any

import keras
import numpy as np
import tensorflow as tf

from keras_spiking import _validation, metrics

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure

PATH_FIELDS = ("epoch", "layer")
"""Placeholders allowed in the ``path`` of :class:`SpikeRasterPlot`."""


def _matplotlib_figure():
    """``(Figure, FigureCanvasAgg)`` from matplotlib, imported on first use."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as error:
        raise ImportError(
            "Spike raster plots need matplotlib, which is not installed: "
            "`pip install matplotlib` (or `pip install keras-snn[test]`)"
        ) from error
    return Figure, FigureCanvasAgg


def plot_spike_raster(
    spikes,
    path: str | os.PathLike | None = None,
    *,
    title: str | None = None,
    dt: float | None = None,
    max_neurons: int = 200,
) -> Figure:
    """Draws a spike raster: one dark tick at ``(t, j)`` for every spike of neuron ``j`` at ``t``.

    Time runs along x (step index ``t``, or ``t * dt`` seconds when ``dt`` is given), neuron
    index along y. Only the first ``max_neurons`` neurons are drawn (the y label then says
    how many there are). The ticks are a single scatter collection,
    ``figure.axes[0].collections[0]``, whose offsets are the ``(time, neuron)`` of each spike.

    Args:
        spikes: 0/1 (or boolean) array ``[time, neurons]``, e.g. one sample of a spiking
            layer's output.
        path: if given, the figure is saved there (format from the extension, PNG by default).
        title: axes title.
        dt: simulation step in seconds; when given the time axis is in seconds.
        max_neurons: draw at most this many neurons (the first ones).

    Returns:
        The ``matplotlib.figure.Figure`` (not registered with ``pyplot``; it is freed when no
        longer referenced).

    Raises:
        ValueError: if ``spikes`` is not rank 2, holds values other than 0 and 1, or for a
            bad ``dt`` or ``max_neurons``.
        ImportError: if matplotlib is not installed.
    """
    array = np.asarray(spikes)
    if array.ndim != 2:
        raise ValueError(
            f"plot_spike_raster: `spikes` must be a [time, neurons] array, got shape {array.shape}"
        )
    if array.dtype == bool:
        array = array.astype("float32")
    if not np.issubdtype(array.dtype, np.number):
        raise ValueError(f"plot_spike_raster: `spikes` must be numeric, got dtype {array.dtype}")
    invalid = array[(array != 0) & (array != 1)]
    if invalid.size:
        raise ValueError(
            f"plot_spike_raster: `spikes` must hold only 0 and 1, got {invalid.size} other "
            f"value(s), e.g. {invalid.flat[0]!r}"
        )
    max_neurons = _validation.positive_int("max_neurons", max_neurons, "plot_spike_raster")
    if dt is not None:
        dt = _validation.positive_number("dt", dt, "plot_spike_raster")

    figure_class, canvas_class = _matplotlib_figure()
    num_steps, num_neurons = array.shape
    shown = min(num_neurons, max_neurons)
    steps, neurons = np.nonzero(array[:, :shown])
    scale = 1.0 if dt is None else dt
    figure = figure_class(figsize=(8.0, max(2.5, min(8.0, 1.5 + shown / 40.0))), dpi=100)
    canvas_class(figure)
    axes = figure.add_subplot(1, 1, 1)
    axes.scatter(
        steps * scale,
        neurons,
        marker="|",
        s=max(4.0, 600.0 / max(shown, 1)),
        c="black",
        linewidths=1.0,
    )
    axes.set_xlim(-0.5 * scale, (num_steps - 0.5) * scale)
    axes.set_ylim(-0.5, shown - 0.5)
    axes.set_xlabel("time step" if dt is None else "time (s)")
    truncated = f" (first {shown} of {num_neurons})" if shown < num_neurons else ""
    axes.set_ylabel(f"neuron{truncated}")
    if title is not None:
        axes.set_title(title)
    figure.tight_layout()
    if path is not None:
        figure.savefig(os.fspath(path))
    return figure


def _check_path_template(path) -> str:
    path = os.fspath(path)
    for _, field, _, _ in string.Formatter().parse(path):
        if field is not None and field not in PATH_FIELDS:
            raise ValueError(
                f"SpikeRasterPlot: `path` may only hold the placeholders {{epoch}} and "
                f"{{layer}}, got {{{field}}} in {path!r}"
            )
    return path


def _is_input_structure(x) -> bool:
    """Whether ``x`` holds several model inputs: a dict, or a list/tuple of arrays."""
    if isinstance(x, dict):
        return True
    return (
        isinstance(x, (list, tuple))
        and len(x) > 0
        and all(isinstance(a, (np.ndarray, tf.Tensor)) for a in x)
    )


def _select_sample(x, sample: int):
    """``x[sample : sample + 1]`` for an array or a structure of arrays."""
    if isinstance(x, tf.data.Dataset):
        raise TypeError(
            "SpikeRasterPlot: `x` must be an array (or a list/dict of arrays), not a "
            "tf.data.Dataset; pass a few samples as arrays"
        )
    if _is_input_structure(x):
        flat = tf.nest.flatten(x)
        arrays = [a if isinstance(a, tf.Tensor) else np.asarray(a) for a in flat]
    else:  # one array, possibly given as nested lists
        x = x if isinstance(x, tf.Tensor) else np.asarray(x)
        arrays = [x]
    sizes = {int(a.shape[0]) if a.ndim else 0 for a in arrays}
    if len(sizes) != 1 or sizes == {0}:
        raise ValueError(
            f"SpikeRasterPlot: `x` must hold at least one sample along its first axis, got "
            f"first-axis sizes {sorted(sizes)}"
        )
    size = sizes.pop()
    if isinstance(sample, bool) or not isinstance(sample, (int, np.integer)):
        raise ValueError(f"SpikeRasterPlot: `sample` must be an integer, got {sample!r}")
    if not -size <= sample < size:
        raise ValueError(
            f"SpikeRasterPlot: `sample` must index one of the {size} samples of `x`, got {sample!r}"
        )
    index = int(sample) % size
    picked = [a[index : index + 1] for a in arrays]
    return tf.nest.pack_sequence_as(x, picked)


def _check_every(every, owner: str) -> int:
    return _validation.positive_int("every", every, owner)


def _inputs_to_config(x, owner: str):
    """``x`` serialized by Keras (arrays as values plus dtype, structure kept)."""
    if isinstance(x, tf.data.Dataset):
        raise TypeError(
            f"{owner}.get_config: `x` is a tf.data.Dataset, which cannot be serialized; pass "
            "the sample as arrays to make the callback serializable"
        )
    if _is_input_structure(x):
        arrays = tf.nest.map_structure(np.asarray, x)
    else:
        arrays = np.asarray(x)
    return keras.saving.serialize_keras_object(arrays)


def _inputs_from_config(config: dict[str, Any]) -> dict[str, Any]:
    config = dict(config)
    config["x"] = keras.saving.deserialize_keras_object(config["x"])
    return config


class LoggedCount(float):
    """A count in Keras' ``logs``: a float, as Keras' callbacks expect, that prints as an integer.

    Keras' progress bar averages every logged value and prints it with four decimals
    (``hidden_dead: 3.0000``); arithmetic on a ``LoggedCount`` keeps the type, and an integral
    value formats as an integer (``hidden_dead: 3``) whatever the format spec.
    """

    def _same(self, value) -> LoggedCount | float:
        return LoggedCount(value) if isinstance(value, float) else value

    def __format__(self, spec: str) -> str:
        return str(int(self)) if self.is_integer() else float.__format__(self, spec)

    def __repr__(self) -> str:
        return self.__format__("")

    __str__ = __repr__

    def __add__(self, other):
        return self._same(float(self) + other)

    __radd__ = __add__

    def __mul__(self, other):
        return self._same(float(self) * other)

    __rmul__ = __mul__

    def __truediv__(self, other):
        return self._same(float(self) / other)


@keras.saving.register_keras_serializable(package="keras_spiking")
class FiringRateMonitor(keras.callbacks.Callback):
    r"""Tracks the firing rates and the never-firing neurons of every spiking layer during fit.

    At the end of every ``every``-th epoch the model is run in inference mode on the fixed
    sample ``x`` and, for every spiking layer ``L`` (as listed by
    :func:`keras_spiking.metrics.spiking_layers`), the monitor

    * adds ``logs[f"{L}_rate"]``: the mean firing rate over neurons, samples and steps,
      :math:`\bar r = \frac{1}{N T U} \sum_{n,t,j} S_{n,t,j}` in spikes per step (in Hz,
      ``rate / dt``, when ``dt`` is given), and ``logs[f"{L}_dead"]``: the number of neurons
      that never fire on ``x`` (a :class:`LoggedCount`: printed as an integer). Callbacks
      after it (``History``, ``EarlyStopping``, ``CSVLogger``) see them. Like Keras'
      ``val_*`` entries with ``validation_freq``, the keys exist only on the epochs that were
      measured.
    * appends ``{"epoch": epoch, "rates": {L: [units] array}, "dead": {L: int}}`` to
      :attr:`history` (``epoch`` counts from 0, as in ``History.epoch``); the history grows
      over successive ``fit`` calls.
    * prints one line when ``verbose``.

    Every measurement is an extra forward pass over ``x``: keep it small (tens of samples),
    but large enough that a neuron that fires on the data set is likely to fire on it.

    Args:
        x: the inputs to measure on: an array ``[samples, time, features]``, a structure of
            arrays matching the model inputs, or a small ``tf.data.Dataset`` (see
            :func:`keras_spiking.metrics.firing_rates`).
        every: measure every this many epochs (default 1).
        verbose: print a line of rates after each measurement (default 1; 0 is silent).
        dt: simulation step in seconds; when given, rates are logged in Hz.
        batch_size: samples per forward pass (default 32; None for a Dataset).

    Attributes:
        history: list of the measurements, one dict per measured epoch.
    """

    def __init__(
        self,
        x,
        *,
        every: int = 1,
        verbose: int = 1,
        dt: float | None = None,
        batch_size: int | None = None,
    ):
        super().__init__()
        if x is None:
            raise ValueError("FiringRateMonitor: `x` must hold the inputs to measure on, got None")
        self.x = x
        self.every = _check_every(every, type(self).__name__)
        self.verbose = int(verbose)
        self.dt = None if dt is None else _validation.positive_number("dt", dt, "FiringRateMonitor")
        self.batch_size = (
            None
            if batch_size is None
            else _validation.positive_int("batch_size", batch_size, "FiringRateMonitor")
        )
        self.history: list[dict[str, Any]] = []

    def get_config(self) -> dict[str, Any]:
        """The constructor arguments; ``x`` serialized as values (so keep it small)."""
        return {
            "x": _inputs_to_config(self.x, type(self).__name__),
            "every": self.every,
            "verbose": self.verbose,
            "dt": self.dt,
            "batch_size": self.batch_size,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]):
        """A callback from the output of :meth:`get_config`."""
        return cls(**_inputs_from_config(config))

    def measure(self) -> dict[str, Any]:
        """Measures the current model on ``x``; returns ``{"rates": ..., "dead": ...}``."""
        rates = metrics.firing_rates(self.model, self.x, batch_size=self.batch_size, dt=self.dt)
        dead = {name: int(np.count_nonzero(rate == 0)) for name, rate in rates.items()}
        return {"rates": rates, "dead": dead}

    def on_epoch_end(self, epoch, logs=None):
        if (epoch + 1) % self.every != 0:
            return
        result = self.measure()
        self.history.append({"epoch": int(epoch), **result})
        if logs is not None:
            for name, rate in result["rates"].items():
                logs[f"{name}_rate"] = float(np.mean(rate))
                logs[f"{name}_dead"] = LoggedCount(result["dead"][name])
        if self.verbose:
            unit = "spikes/step" if self.dt is None else "Hz"
            parts = [
                f"{name}: rate {np.mean(rate):.4g} {unit}, dead {result['dead'][name]}/{rate.size}"
                for name, rate in result["rates"].items()
            ]
            print(f"FiringRateMonitor epoch {epoch + 1}: " + "; ".join(parts))


@keras.saving.register_keras_serializable(package="keras_spiking")
class SpikeRasterPlot(keras.callbacks.Callback):
    """Saves a spike raster image of one sample for each spiking layer during fit.

    At the end of every ``every``-th epoch the model runs (inference mode) on sample
    ``sample`` of ``x`` and :func:`plot_spike_raster` draws the spikes ``[time, units]`` of
    each spiking layer (or only of ``layer``) to ``path.format(epoch=epoch + 1, layer=name)``
    (epochs counted from 1, as ``keras.callbacks.ModelCheckpoint`` does). Missing folders are
    created. The written files are listed in :attr:`paths`.

    Args:
        x: inputs holding the sample: an array ``[samples, time, features]`` or a list/dict of
            arrays matching the model inputs (not a Dataset). Only one sample is kept.
        path: file name template, e.g. ``"rasters/{layer}_epoch{epoch:03d}.png"``; may contain
            ``{epoch}`` and ``{layer}``. Without ``{epoch}`` each epoch overwrites the last
            image; without ``{layer}`` the model (or ``layer``) must have one spiking layer.
        layer: name of the spiking layer to plot (default: all spiking layers).
        sample: index of the sample in ``x`` (default 0).
        every: plot every this many epochs (default 1).
        max_neurons: draw at most this many neurons per layer (the first ones; default 200).
        dt: simulation step in seconds; when given the time axis is in seconds.

    Attributes:
        paths: the files written so far, in order.
    """

    def __init__(
        self,
        x,
        path: str | os.PathLike,
        *,
        layer: str | None = None,
        sample: int = 0,
        every: int = 1,
        max_neurons: int = 200,
        dt: float | None = None,
    ):
        super().__init__()
        owner = type(self).__name__
        self.path = _check_path_template(path)
        self.x = _select_sample(x, sample)
        self.layer = layer
        self.sample = int(sample)
        self.every = _check_every(every, owner)
        self.max_neurons = _validation.positive_int("max_neurons", max_neurons, owner)
        self.dt = None if dt is None else _validation.positive_number("dt", dt, owner)
        self.paths: list[str] = []
        _matplotlib_figure()  # fail at construction, not after the first epoch

    def get_config(self) -> dict[str, Any]:
        """The constructor arguments; ``x`` holds only the chosen sample, so ``sample`` is 0."""
        return {
            "x": _inputs_to_config(self.x, type(self).__name__),
            "path": self.path,
            "layer": self.layer,
            "sample": 0,
            "every": self.every,
            "max_neurons": self.max_neurons,
            "dt": self.dt,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]):
        """A callback from the output of :meth:`get_config`."""
        return cls(**_inputs_from_config(config))

    def _layer_names(self) -> list[str]:
        names = [layer.name for layer in metrics.spiking_layers(self.model)]
        if not names:
            raise ValueError(
                f"SpikeRasterPlot: model {self.model.name!r} has no spiking layers to plot"
            )
        if self.layer is not None:
            if self.layer not in names:
                raise ValueError(
                    f"SpikeRasterPlot: `layer` must name a spiking layer of the model, one of "
                    f"{names}, got {self.layer!r}"
                )
            names = [self.layer]
        fields = {field for _, field, _, _ in string.Formatter().parse(self.path) if field}
        if len(names) > 1 and "layer" not in fields:
            raise ValueError(
                f"SpikeRasterPlot: the model has {len(names)} spiking layers {names}, so `path` "
                f"needs a {{layer}} placeholder (or pass `layer=`), got {self.path!r}"
            )
        return names

    def on_train_begin(self, logs=None):
        self._layer_names()  # check the names and the path template before training

    def on_epoch_end(self, epoch, logs=None):
        if (epoch + 1) % self.every != 0:
            return
        names = self._layer_names()
        spikes = metrics.spike_trains(self.model, self.x)
        for name in names:
            train = spikes[name][0]
            if train.ndim == 1:  # return_sequences=False: a single step
                train = train[None, :]
            path = self.path.format(epoch=epoch + 1, layer=name)
            folder = os.path.dirname(path)
            if folder:
                os.makedirs(folder, exist_ok=True)
            plot_spike_raster(
                train,
                path,
                title=f"{name}: epoch {epoch + 1}, sample {self.sample}",
                dt=self.dt,
                max_neurons=self.max_neurons,
            )
            self.paths.append(path)
