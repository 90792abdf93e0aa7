r"""Classification losses and an accuracy metric for spiking outputs over time.

Every loss here takes predictions shaped ``[batch, time, classes]`` (the spikes of an output
layer, or the membrane voltages of a leaky-integrator readout) and **sparse** integer labels
``[batch]`` (or ``[batch, 1]``), reduces the time axis to one score per class, and compares
the scores with the labels:

========================== ==================================== =========================
loss                       score per class ``z_c``              comparison
========================== ==================================== =========================
SpikeCountCrossEntropy     ``a * sum_t s_{t,c}``                softmax cross-entropy
SpikeRateCrossEntropy      ``a * mean_t s_{t,c}``               softmax cross-entropy
MaxMembraneCrossEntropy    ``max_t u_{t,c}``                    softmax cross-entropy
LastMembraneCrossEntropy   ``u_{T-1,c}``                        softmax cross-entropy
MeanMembraneCrossEntropy   ``mean_t u_{t,c}``                   softmax cross-entropy
MembraneMSE                ``mean_t u_{t,c}``                   mean squared error
========================== ==================================== =========================

The softmax cross-entropy of scores ``z`` (used as logits) and label ``y`` is

.. math::  L = -z_y + \log \sum_c e^{z_c}

The scores are used as logits, which is why no ``from_logits`` argument exists: spike counts
and voltages are never probabilities. :func:`readout` does the same time reductions for
inference, and :class:`SparseReadoutAccuracy` is the matching accuracy metric.
"""

from __future__ import annotations

import math
from typing import Any

import keras
import tensorflow as tf

from keras_spiking import silence

# spike-time outputs (EventProp layers) have their own module; exported here with the others
from keras_spiking.first_spike import FirstSpikeAccuracy, FirstSpikeTimeCrossEntropy
from keras_spiking.sequence import last_unmasked

__all__ = [
    "readout",
    "READOUT_MODES",
    "SpikeCountCrossEntropy",
    "SpikeRateCrossEntropy",
    "MaxMembraneCrossEntropy",
    "LastMembraneCrossEntropy",
    "MeanMembraneCrossEntropy",
    "MembraneMSE",
    "SparseReadoutAccuracy",
    "FirstSpikeTimeCrossEntropy",
    "FirstSpikeAccuracy",
]

#: The time reductions understood by :func:`readout`.
READOUT_MODES: tuple[str, ...] = ("max", "last", "mean", "sum")


def _as_readout(y_pred: tf.Tensor, where: str) -> tf.Tensor:
    """``y_pred`` as ``[batch, time, classes]``, or a clear error.

    A conv readout (``ConvLI2D``) whose maps have shrunk to one position,
    ``[batch, time, 1, 1, classes]``, is taken as ``[batch, time, classes]``; larger maps are
    refused with the ways to reduce them.
    """
    rank = y_pred.shape.rank
    if rank is not None and rank > 3:
        spatial = tuple(y_pred.shape[2:-1])
        if all(dim == 1 for dim in spatial):
            return tf.reshape(y_pred, tf.concat([tf.shape(y_pred)[:2], [-1]], 0))
        raise ValueError(
            f"{where}: `y_pred` must have shape [batch, time, classes], got the spike/membrane "
            f"maps of a conv layer, shape {tuple(y_pred.shape)}; end the model with "
            "keras_spiking.layers.SpatialFlatten() and a dense LI readout, or shrink the maps to "
            "one position (a conv readout whose kernel covers the map, or pooling)"
        )
    if rank != 3:
        raise ValueError(
            f"{where}: `y_pred` must have shape [batch, time, classes], got shape "
            f"{tuple(y_pred.shape)}"
        )
    return y_pred


def _check_mode(mode: Any, where: str) -> str:
    if mode not in READOUT_MODES:
        raise ValueError(f"{where}: `mode` must be one of {READOUT_MODES}, got {mode!r}")
    return mode


def _reduce_time(y_pred: tf.Tensor, mode: str, mask: tf.Tensor | None = None) -> tf.Tensor:
    """``y_pred [batch, T, classes] -> [batch, classes]``; only the steps where ``mask``."""
    if mask is not None:
        return _reduce_masked_time(y_pred, mode, tf.cast(mask, tf.bool))
    if mode == "max":
        return tf.reduce_max(y_pred, axis=1)
    if mode == "last":
        return y_pred[:, -1]
    if mode == "mean":
        return tf.reduce_mean(y_pred, axis=1)
    return tf.reduce_sum(y_pred, axis=1)


def _reduce_masked_time(y_pred: tf.Tensor, mode: str, mask: tf.Tensor) -> tf.Tensor:
    """:func:`_reduce_time` over the steps where ``mask [batch, T]`` is True.

    A sample with no step left gives zeros (a neutral score) in every mode.
    """
    keep = mask[..., None]
    any_step = tf.reduce_any(mask, axis=1)[:, None]
    zeros = tf.zeros_like(y_pred)
    if mode == "max":
        lowest = tf.reduce_min(y_pred, axis=1, keepdims=True)
        best = tf.reduce_max(tf.where(keep, y_pred, lowest), axis=1)
        return tf.where(any_step, best, zeros[:, 0])
    if mode == "last":
        return last_unmasked(y_pred, mask)
    total = tf.reduce_sum(tf.where(keep, y_pred, zeros), axis=1)
    if mode == "mean":
        count = tf.reduce_sum(tf.cast(mask, y_pred.dtype), axis=1)[:, None]
        return tf.math.divide_no_nan(total, count)
    return total


def _time_mask(y_pred):
    """The ``[batch, T]`` mask Keras attached to ``y_pred`` (e.g. after Masking), or None."""
    mask = getattr(y_pred, "_keras_mask", None)
    return mask if mask is not None and mask.shape.rank == 2 else None


_MEMBRANE_ADVICE = (
    "Give the model a non-spiking readout (keras_spiking.layers.LI) as its last layer, or "
    "train the spikes with a spike loss (keras_spiking.losses.SpikeCountCrossEntropy or "
    "SpikeRateCrossEntropy)."
)


class _TimeMaskedLoss(keras.losses.Loss):
    """A loss that reduces the time axis itself and so consumes the time mask.

    Keras would apply a ``[batch, T]`` mask to the ``[batch]`` loss values (a shape error);
    these losses read the mask, use only the unmasked steps, and hand Keras a tensor without it.
    """

    #: whether the loss reads a membrane voltage (it warns when given a layer's spikes)
    _reads_membrane = False

    def __call__(self, y_true, y_pred, sample_weight=None):
        if self._reads_membrane:
            silence.warn_if_spikes(y_pred, type(self).__name__, _MEMBRANE_ADVICE)
        self._mask = _time_mask(y_pred)
        if self._mask is not None:
            y_pred = tf.identity(y_pred)  # the same values, without the mask attribute
        try:
            return super().__call__(y_true, y_pred, sample_weight=sample_weight)
        finally:
            self._mask = None


def readout(y_pred: Any, mode: str = "max") -> tf.Tensor:
    """Reduce outputs over time to one score per class.

    Shapes: ``[batch, time, classes] -> [batch, classes]``.
    Modes: ``"max"`` (``max_t y_t``, for membrane voltages), ``"last"`` (``y_{T-1}``),
    ``"mean"`` (``(1/T) sum_t y_t``, e.g. firing rate in spikes per step) and ``"sum"``
    (``sum_t y_t``, e.g. spike counts). ``argmax`` of the result is the predicted class.

    Args:
        y_pred: outputs, shape ``[batch, time, classes]``.
        mode: one of :data:`READOUT_MODES`.

    Returns:
        Scores of shape ``[batch, classes]``, in the dtype of ``y_pred``.

    Raises:
        ValueError: if ``y_pred`` is not rank 3 or ``mode`` is unknown.
    """
    mode = _check_mode(mode, "readout")
    y_pred = tf.convert_to_tensor(y_pred)
    y_pred = _as_readout(y_pred, "readout")
    return _reduce_time(y_pred, mode)


def _sparse_labels(y_true: tf.Tensor, where: str) -> tf.Tensor:
    """Labels ``[batch]`` or ``[batch, 1]`` as int32 ``[batch]``."""
    y_true = tf.convert_to_tensor(y_true)
    rank = y_true.shape.rank
    if rank == 2 and y_true.shape[-1] == 1:
        y_true = y_true[:, 0]
    elif rank != 1:
        raise ValueError(
            f"{where}: `y_true` must be integer class labels of shape [batch] or [batch, 1], "
            f"got shape {tuple(y_true.shape)}"
        )
    return tf.cast(y_true, tf.int32)


def _check_scale(scale: Any, where: str) -> float:
    if isinstance(scale, bool) or not isinstance(scale, (int, float)):
        raise TypeError(f"{where}: `scale` must be a number > 0, got {scale!r}")
    scale = float(scale)
    if not math.isfinite(scale) or scale <= 0:
        raise ValueError(f"{where}: `scale` must be a finite number > 0, got {scale!r}")
    return scale


class _ReadoutCrossEntropy(_TimeMaskedLoss):
    """Softmax cross-entropy of sparse labels on ``scale * readout(y_pred, mode)``."""

    _mode = "max"

    def __init__(
        self,
        scale: float = 1.0,
        name: str | None = None,
        reduction: str | None = "sum_over_batch_size",
        dtype: Any = None,
    ):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.scale = _check_scale(scale, type(self).__name__)

    def call(self, y_true, y_pred):
        where = type(self).__name__
        y_pred = _as_readout(y_pred, where)
        labels = _sparse_labels(y_true, where)
        logits = _reduce_time(y_pred, self._mode, getattr(self, "_mask", None))
        if self.scale != 1.0:
            logits = logits * tf.constant(self.scale, dtype=logits.dtype)
        return tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(scale=self.scale, dtype=self.dtype)
        return config


@keras.saving.register_keras_serializable(package="keras_spiking")
class SpikeCountCrossEntropy(_ReadoutCrossEntropy):
    r"""Cross-entropy on spike counts: logits ``z_c = a * sum_t s_{t,c}``.

    .. math::  L = -z_y + \log \sum_c e^{z_c}, \qquad z_c = a \sum_t s_{t,c}

    The count is unbounded in ``T``, so ``scale`` ``a`` (logits per spike) sets how sharp the
    softmax is; ``a ~ 1 / (expected count)`` keeps the logits of order 1.

    Args:
        scale: ``a`` > 0, logits per spike.
        name: name of the loss.
        reduction: Keras reduction over the batch (default ``"sum_over_batch_size"``).
        dtype: dtype of the computation (default ``keras.config.floatx()``).
    """

    _mode = "sum"


@keras.saving.register_keras_serializable(package="keras_spiking")
class SpikeRateCrossEntropy(_ReadoutCrossEntropy):
    r"""Cross-entropy on firing rates: logits ``z_c = a * mean_t s_{t,c}``.

    .. math::  L = -z_y + \log \sum_c e^{z_c}, \qquad z_c = \frac{a}{T} \sum_t s_{t,c}

    The rate is in spikes per step, in ``[0, 1]``, so it does not depend on ``T``; a scale of
    about 5-10 lets the softmax become confident.

    Args:
        scale: ``a`` > 0, logits per (spike per step).
        name: name of the loss.
        reduction: Keras reduction over the batch.
        dtype: dtype of the computation.
    """

    _mode = "mean"


class _MembraneCrossEntropy(_ReadoutCrossEntropy):
    _reads_membrane = True

    def __init__(
        self,
        name: str | None = None,
        reduction: str | None = "sum_over_batch_size",
        dtype: Any = None,
    ):
        super().__init__(scale=1.0, name=name, reduction=reduction, dtype=dtype)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        del config["scale"]
        return config


@keras.saving.register_keras_serializable(package="keras_spiking")
class MaxMembraneCrossEntropy(_MembraneCrossEntropy):
    r"""Cross-entropy on the peak membrane voltage of a leaky-integrator readout.

    .. math::  L = -z_y + \log \sum_c e^{z_c}, \qquad z_c = \max_t u_{t,c}

    The voltages ``u`` (in the readout's units) are used as logits directly. The gradient flows
    only through the time step of each class's maximum.

    Args:
        name: name of the loss.
        reduction: Keras reduction over the batch.
        dtype: dtype of the computation.
    """

    _mode = "max"


@keras.saving.register_keras_serializable(package="keras_spiking")
class LastMembraneCrossEntropy(_MembraneCrossEntropy):
    r"""Cross-entropy on the membrane voltage at the last time step.

    .. math::  L = -z_y + \log \sum_c e^{z_c}, \qquad z_c = u_{T-1,c}

    Args:
        name: name of the loss.
        reduction: Keras reduction over the batch.
        dtype: dtype of the computation.
    """

    _mode = "last"


@keras.saving.register_keras_serializable(package="keras_spiking")
class MeanMembraneCrossEntropy(_MembraneCrossEntropy):
    r"""Cross-entropy on the time-averaged membrane voltage.

    .. math::  L = -z_y + \log \sum_c e^{z_c}, \qquad z_c = \frac{1}{T} \sum_t u_{t,c}

    Args:
        name: name of the loss.
        reduction: Keras reduction over the batch.
        dtype: dtype of the computation.
    """

    _mode = "mean"


@keras.saving.register_keras_serializable(package="keras_spiking")
class MembraneMSE(_TimeMaskedLoss):
    r"""Mean squared error between the time-averaged voltage and scaled one-hot targets.

    .. math::

        L = \frac{1}{C} \sum_c \left(\bar u_c - v_c\right)^2, \qquad
        \bar u_c = \frac{1}{T} \sum_t u_{t,c}, \qquad
        v_c = \begin{cases} v_{on} & c = y \\ v_{off} & c \ne y \end{cases}

    ``v_on`` and ``v_off`` are in the units of the membrane voltage.

    Args:
        target_on: ``v_on``, target voltage of the labelled class.
        target_off: ``v_off``, target voltage of the other classes.
        name: name of the loss.
        reduction: Keras reduction over the batch.
        dtype: dtype of the computation.
    """

    _reads_membrane = True

    def __init__(
        self,
        target_on: float = 1.0,
        target_off: float = 0.0,
        name: str | None = None,
        reduction: str | None = "sum_over_batch_size",
        dtype: Any = None,
    ):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        where = type(self).__name__
        for arg, value in (("target_on", target_on), ("target_off", target_off)):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise TypeError(f"{where}: `{arg}` must be a number, got {value!r}")
            if not math.isfinite(value):
                raise ValueError(f"{where}: `{arg}` must be finite, got {value!r}")
        self.target_on = float(target_on)
        self.target_off = float(target_off)

    def call(self, y_true, y_pred):
        where = type(self).__name__
        y_pred = _as_readout(y_pred, where)
        labels = _sparse_labels(y_true, where)
        mean_u = _reduce_time(y_pred, "mean", getattr(self, "_mask", None))
        target = tf.one_hot(
            labels,
            tf.shape(mean_u)[-1],
            on_value=tf.constant(self.target_on, dtype=mean_u.dtype),
            off_value=tf.constant(self.target_off, dtype=mean_u.dtype),
        )
        return tf.reduce_mean(tf.square(mean_u - target), axis=-1)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(target_on=self.target_on, target_off=self.target_off, dtype=self.dtype)
        return config


def _readout_accuracy(
    y_true: tf.Tensor, y_pred: tf.Tensor, mode: str = "max", mask: tf.Tensor | None = None
) -> tf.Tensor:
    where = "SparseReadoutAccuracy"
    y_pred = tf.convert_to_tensor(y_pred)
    y_pred = _as_readout(y_pred, where)
    labels = _sparse_labels(y_true, where)
    predicted = tf.argmax(_reduce_time(y_pred, mode, mask), axis=-1, output_type=tf.int32)
    return tf.cast(tf.equal(predicted, labels), keras.config.floatx())


@keras.saving.register_keras_serializable(package="keras_spiking")
class SparseReadoutAccuracy(keras.metrics.MeanMetricWrapper):
    """Accuracy of ``argmax_c readout(y_pred, mode)`` against sparse labels.

    For predictions ``[batch, time, classes]`` and integer labels ``[batch]`` (or
    ``[batch, 1]``): the fraction of samples whose highest-scoring class after the time
    reduction :func:`readout` equals the label. Ties go to the lowest class index (``argmax``),
    so an output that never spikes predicts class 0 with the ``"sum"`` / ``"mean"`` modes.

    Args:
        mode: one of :data:`READOUT_MODES`; match it to the loss (``"sum"`` for
            :class:`SpikeCountCrossEntropy`, ``"max"`` for :class:`MaxMembraneCrossEntropy`, ...).
        name: name of the metric (default ``"readout_accuracy"``).
        dtype: dtype of the result.
    """

    def __init__(self, mode: str = "max", name: str = "readout_accuracy", dtype: Any = None):
        mode = _check_mode(mode, type(self).__name__)
        super().__init__(_readout_accuracy, name=name, dtype=dtype, mode=mode)
        self.mode = mode
        self._direction = "up"

    def update_state(self, y_true, y_pred, sample_weight=None):
        """As Keras' wrapper, but a time mask selects the steps instead of weighting samples."""
        mask = _time_mask(y_pred)
        if mask is None:
            return super().update_state(y_true, y_pred, sample_weight=sample_weight)
        values = _readout_accuracy(y_true, tf.identity(y_pred), self.mode, mask)
        return keras.metrics.Mean.update_state(self, values, sample_weight=sample_weight)

    def get_config(self) -> dict[str, Any]:
        return {"mode": self.mode, "name": self.name, "dtype": self.dtype}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> SparseReadoutAccuracy:
        return cls(**config)
