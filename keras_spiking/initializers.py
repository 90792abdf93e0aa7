r"""Weight initializers for spiking layers.

A spiking layer learns only from neurons that fire. Keras' zero-mean defaults
(``GlorotUniform``) suit a surrogate-gradient layer, which still gets a gradient from a
membrane that stays below threshold, but leave an EventProp layer (exact spike-time
gradients: no spike, no gradient) silent on sparse spike-time inputs, and it then trains to
chance. :class:`FanInNormal` draws weights with a positive mean, both mean and spread scaled
by the fan-in as in Glorot / He initialisation:

.. math::  W_{ij} \sim \mathcal{N}\!\left(\frac{\mu}{\sqrt{n_{in}}},\
    \frac{\sigma}{\sqrt{n_{in}}}\right)

(threshold units). The ``1 / sqrt(n_in)`` scaling of the mean, rather than ``1 / n_in``, keeps
a layer that sees only a few active inputs of many (the sparse spikes of a hidden layer)
driven: on Yin-Yang the ``1 / n_in`` form left the 3 output neurons of the 5-200-3 network
silent (0 % first-spike accuracy), this one trains (``docs/training.md``).
"""

from __future__ import annotations

import math
from typing import Any

import keras

from keras_spiking import _validation

__all__ = ["FanInNormal"]


@keras.saving.register_keras_serializable(package="keras_spiking")
class FanInNormal(keras.initializers.Initializer):
    r"""Normal weights scaled by the fan-in: ``N(mean / sqrt(fan_in), stddev / sqrt(fan_in))``.

    The default of the spiking EventProp layers. ``fan_in`` is the product of all kernel
    dimensions but the last (the inputs of one neuron). The defaults ``mean = stddev = 3.35``
    give ``N(1.5, 1.5)`` for the 5 inputs of the Yin-Yang task, the hidden-layer initializer
    of ``examples/yin_yang_eventprop.py``, with which most hidden neurons fire on the first
    batch (``tau_syn = 5 ms, tau_mem = 20 ms``, threshold 1), and ``N(0.24, 0.24)`` for the 200
    inputs of its output layer (the example uses ``N(0.2, 0.4)`` there).

    Args:
        mean: ``mu``, the mean weight times ``sqrt(fan_in)`` (threshold units).
        stddev: ``sigma >= 0``, the weights' standard deviation times ``sqrt(fan_in)``.
        seed: optional int seed.
    """

    def __init__(self, mean: float = 3.35, stddev: float = 3.35, seed: int | None = None):
        owner = type(self).__name__
        self.mean = _validation.finite_number("mean", mean, owner)
        self.stddev = _validation.non_negative_number("stddev", stddev, owner)
        self.seed = seed
        self._normal = keras.initializers.RandomNormal(0.0, 1.0, seed=seed)

    def __call__(self, shape, dtype=None):
        shape = tuple(int(d) for d in shape)
        if len(shape) < 2:
            raise ValueError(
                f"FanInNormal: the kernel needs at least 2 dimensions [..., inputs, units], "
                f"got shape {shape}"
            )
        fan_in = max(1, math.prod(shape[:-1]))
        unit = self._normal(shape, dtype=dtype)
        return (unit * self.stddev + self.mean) / math.sqrt(fan_in)

    def get_config(self) -> dict[str, Any]:
        return {"mean": self.mean, "stddev": self.stddev, "seed": self.seed}
