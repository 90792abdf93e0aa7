r"""Time-to-first-spike loss and accuracy for spike-time outputs ``[batch, classes, slots]``.

The class of a sample is the output neuron that spikes first. Predictions are spike-time
tensors in seconds (sorted along the slots, ``+inf`` = no spike), such as the output of
:class:`keras_spiking.layers.EventPropCubaLIF`; a ``[batch, classes]`` tensor of first spike
times works too. Labels are sparse integers ``[batch]`` (or ``[batch, 1]``).
"""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf

from keras_spiking import _validation

__all__ = ["first_spike_times", "FirstSpikeTimeCrossEntropy", "FirstSpikeAccuracy"]


def first_spike_times(y_pred: Any) -> tf.Tensor:
    """``[batch, classes]`` first spike times of ``[batch, classes, slots]`` spike times."""
    y_pred = tf.convert_to_tensor(y_pred)
    if y_pred.shape.rank == 3:
        return y_pred[..., 0]
    if y_pred.shape.rank == 2:
        return y_pred
    raise ValueError(
        "first-spike losses expect spike times of shape [batch, classes, slots] or "
        f"[batch, classes], got shape {tuple(y_pred.shape)}"
    )


def _labels(y_true: tf.Tensor) -> tf.Tensor:
    y_true = tf.convert_to_tensor(y_true)
    if y_true.shape.rank == 2 and y_true.shape[-1] == 1:
        y_true = y_true[:, 0]
    if y_true.shape.rank != 1:
        raise ValueError(
            "first-spike losses expect sparse integer labels [batch] or [batch, 1], got shape "
            f"{tuple(y_true.shape)}"
        )
    return tf.cast(y_true, tf.int32)


@keras.saving.register_keras_serializable(package="keras_spiking")
class FirstSpikeTimeCrossEntropy(keras.losses.Loss):
    r"""The time-to-first-spike loss of Wunderlich & Pehle (2021) for Yin-Yang.

    .. math::
        L = -\log \frac{e^{-t_y / \tau_0}}{\sum_c e^{-t_c / \tau_0}}
            + \alpha \left(e^{t_y / \tau_1} - 1\right)

    with ``t_c`` the first spike time (seconds) of output neuron ``c`` and ``y`` the label:
    the label neuron should spike first, and early (the second term).

    Silent neurons (no spike, ``t = +inf``) enter the softmax as ``silent_time``, a constant
    without gradient, so they still push the spiking neurons later. If the label neuron is
    silent the regulariser term is dropped and the sample's only gradient is that push: as in
    the paper, a silent label neuron gives no gradient of its own (use the layers'
    ``silent_bump`` to revive it).

    Args:
        tau0: softmax temperature in seconds (default 0.5 ms).
        tau1: time constant of the early-spike regulariser in seconds (default 6.4 ms).
        alpha: strength of the regulariser (default 3e-3; 0 turns it off).
        silent_time: time in seconds that stands in for a silent neuron (default 0.1 s; keep it
            at or past the end of the simulated window).
    """

    def __init__(
        self,
        tau0: float = 0.5e-3,
        tau1: float = 6.4e-3,
        alpha: float = 3e-3,
        silent_time: float = 0.1,
        name: str = "first_spike_time_cross_entropy",
        **kwargs,
    ):
        super().__init__(name=name, **kwargs)
        owner = type(self).__name__
        self.tau0 = _validation.positive_number("tau0", tau0, owner)
        self.tau1 = _validation.positive_number("tau1", tau1, owner)
        self.alpha = _validation.non_negative_number("alpha", alpha, owner)
        self.silent_time = _validation.positive_number("silent_time", silent_time, owner)

    def call(self, y_true, y_pred):
        times = first_spike_times(y_pred)
        labels = _labels(y_true)
        spiked = tf.math.is_finite(times)
        silent = tf.fill(tf.shape(times), tf.constant(self.silent_time, times.dtype))
        times = tf.where(spiked, times, silent)
        cross_entropy = tf.nn.sparse_softmax_cross_entropy_with_logits(labels, -times / self.tau0)
        t_label = tf.gather(times, labels, axis=1, batch_dims=1)
        label_spiked = tf.gather(spiked, labels, axis=1, batch_dims=1)
        safe = tf.where(label_spiked, t_label, tf.zeros_like(t_label))
        regulariser = tf.where(
            label_spiked, self.alpha * (tf.exp(safe / self.tau1) - 1), tf.zeros_like(safe)
        )
        return cross_entropy + regulariser

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            {
                "tau0": self.tau0,
                "tau1": self.tau1,
                "alpha": self.alpha,
                "silent_time": self.silent_time,
            }
        )
        return config


def _first_spike_correct(y_true, y_pred):
    times = first_spike_times(y_pred)
    labels = _labels(y_true)
    t_label = tf.gather(times, labels, axis=1, batch_dims=1)
    others = tf.where(
        tf.one_hot(labels, tf.shape(times)[1], on_value=True, off_value=False),
        tf.fill(tf.shape(times), tf.constant(float("inf"), times.dtype)),
        times,
    )
    # correct: the label neuron spiked, strictly before every other neuron (ties count wrong)
    correct = tf.logical_and(tf.math.is_finite(t_label), t_label < tf.reduce_min(others, axis=1))
    return tf.cast(correct, keras.backend.floatx())


@keras.saving.register_keras_serializable(package="keras_spiking")
class FirstSpikeAccuracy(keras.metrics.MeanMetricWrapper):
    """Fraction of samples whose label neuron spikes first (strictly; silent counts wrong)."""

    def __init__(self, name: str = "first_spike_accuracy", dtype=None):
        super().__init__(_first_spike_correct, name=name, dtype=dtype)

    def get_config(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype}
