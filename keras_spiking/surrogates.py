r"""Spike function with surrogate gradients.

The forward pass of a spiking neuron is a Heaviside step of the distance to threshold,
``x = u - theta``:

.. math::  S = H(x) = 1 \text{ if } x > 0 \text{ else } 0

Its true derivative is zero almost everywhere, so training replaces ``dS/dx`` in the backward
pass by a smooth *surrogate* ``sigma'(x)`` (Neftci, Mostafa & Zenke 2019). Each surrogate below
is a small serializable class with a ``scale`` parameter ``k`` (units: 1 / membrane units) that
sets its width; Zenke & Vogels (2021) found learning robust to the shape but sensitive to ``k``.

Calling a surrogate on ``x`` returns the spikes with that surrogate attached to the gradient::

    surrogate = keras_spiking.surrogates.get("fast_sigmoid")
    spikes = surrogate(u - theta)       # 0/1 forward, 1/(k|x|+1)^2 backward
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import keras
import tensorflow as tf

__all__ = [
    "Surrogate",
    "FastSigmoid",
    "ArcTan",
    "Sigmoid",
    "Triangle",
    "Exponential",
    "Gaussian",
    "StraightThrough",
    "CustomSurrogate",
    "spike",
    "get",
    "serialize",
    "deserialize",
    "available",
    "registered_name",
]

_REGISTRY: dict[str, type[Surrogate]] = {}


def _register(name: str):
    def wrap(cls):
        cls.name = name
        _REGISTRY[name] = cls
        return keras.saving.register_keras_serializable(package="keras_spiking")(cls)

    return wrap


def spike(x: tf.Tensor, derivative: Callable[[tf.Tensor], tf.Tensor]) -> tf.Tensor:
    """Heaviside step with a surrogate derivative.

    Args:
        x: distance to threshold ``u - theta`` (any shape, float dtype).
        derivative: function of ``x`` returning the surrogate ``dS/dx`` (same shape).

    Returns:
        ``H(x)``: 1.0 where ``x > 0``, else 0.0, in the dtype of ``x``. Its gradient with
        respect to ``x`` is ``upstream * derivative(x)``.
    """

    @tf.custom_gradient
    def _spike(x):
        out = tf.where(x > 0, tf.ones_like(x), tf.zeros_like(x))

        def grad(upstream):
            return upstream * tf.cast(derivative(x), upstream.dtype)

        return out, grad

    return _spike(x)


class Surrogate:
    """Base class: a Heaviside forward with the surrogate ``derivative`` backward.

    Subclasses implement :meth:`derivative`. Instances are callable: ``surrogate(x)`` is
    ``spike(x, surrogate.derivative)``.

    Args:
        scale: the sharpness ``k`` of the surrogate, > 0 (units: 1 / membrane units).
    """

    name = "surrogate"
    default_scale = 1.0

    def __init__(self, scale: float | None = None):
        scale = self.default_scale if scale is None else scale
        try:
            scale = float(scale)
        except (TypeError, ValueError):
            raise TypeError(
                f"{type(self).__name__}: `scale` must be a number, got {scale!r}"
            ) from None
        if not math.isfinite(scale) or scale <= 0:
            raise ValueError(
                f"{type(self).__name__}: `scale` must be a finite number > 0, got {scale!r}"
            )
        self.scale = scale

    def derivative(self, x: tf.Tensor) -> tf.Tensor:
        """The surrogate ``dS/dx`` at ``x = u - theta``."""
        raise NotImplementedError

    def __call__(self, x: tf.Tensor) -> tf.Tensor:
        return spike(x, self.derivative)

    def get_config(self) -> dict[str, Any]:
        return {"scale": self.scale}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Surrogate:
        return cls(**config)

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and self.get_config() == other.get_config()

    def __hash__(self) -> int:
        return hash((type(self).__name__, tuple(sorted(self.get_config().items()))))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(scale={self.scale})"


@_register("fast_sigmoid")
class FastSigmoid(Surrogate):
    """SuperSpike / fast-sigmoid surrogate (Zenke & Ganguli 2018).

    ``sigma'(x) = 1 / (k |x| + 1)^2``; peak 1 at threshold. SpyTorch uses ``k = 100`` with
    ``theta = 1``; snnTorch's default is 25, which is ours.
    """

    default_scale = 25.0

    def derivative(self, x):
        return 1.0 / tf.square(self.scale * tf.abs(x) + 1.0)


@_register("arctan")
class ArcTan(Surrogate):
    """Arctangent surrogate: ``sigma'(x) = 1 / (1 + (pi k x)^2)``; peak 1 at threshold."""

    default_scale = 1.0

    def derivative(self, x):
        return 1.0 / (1.0 + tf.square(math.pi * self.scale * x))


@_register("sigmoid")
class Sigmoid(Surrogate):
    """Logistic surrogate: ``sigma'(x) = k s(k x) (1 - s(k x))``, ``s`` the logistic; peak k/4."""

    default_scale = 25.0

    def derivative(self, x):
        s = tf.sigmoid(self.scale * x)
        return self.scale * s * (1.0 - s)


@_register("triangle")
class Triangle(Surrogate):
    """Triangle / piecewise-linear surrogate: ``sigma'(x) = max(0, 1 - k |x|)``; support 1/k."""

    default_scale = 1.0

    def derivative(self, x):
        return tf.nn.relu(1.0 - self.scale * tf.abs(x))


@_register("exponential")
class Exponential(Surrogate):
    """Exponential (Laplace-shaped) surrogate: ``sigma'(x) = exp(-k |x|)``; peak 1."""

    default_scale = 5.0

    def derivative(self, x):
        return tf.exp(-self.scale * tf.abs(x))


@_register("gaussian")
class Gaussian(Surrogate):
    """Gaussian surrogate: ``sigma'(x) = exp(-(k x)^2 / 2)``; peak 1, standard deviation 1/k."""

    default_scale = 5.0

    def derivative(self, x):
        return tf.exp(-0.5 * tf.square(self.scale * x))


@_register("straight_through")
class StraightThrough(Surrogate):
    """Straight-through estimator: ``sigma'(x) = k`` everywhere (unchanged gradient at k = 1)."""

    default_scale = 1.0

    def derivative(self, x):
        return tf.fill(tf.shape(x), tf.constant(self.scale, dtype=x.dtype))


@keras.saving.register_keras_serializable(package="keras_spiking")
class CustomSurrogate(Surrogate):
    """Wraps a user function ``fn(x) -> dS/dx`` as a surrogate.

    It serializes by the function's registered Keras name: decorate ``fn`` with
    ``keras.saving.register_keras_serializable`` to save models that use it.

    Args:
        fn: callable mapping ``x = u - theta`` to the surrogate derivative.
    """

    name = "custom"

    def __init__(self, fn: Callable[[tf.Tensor], tf.Tensor]):
        if not callable(fn):
            raise TypeError(f"CustomSurrogate: `fn` must be callable, got {fn!r}")
        self.fn = fn
        self.scale = 1.0

    def derivative(self, x):
        return self.fn(x)

    def get_config(self):
        return {"fn": keras.saving.serialize_keras_object(self.fn)}

    @classmethod
    def from_config(cls, config):
        return cls(keras.saving.deserialize_keras_object(config["fn"]))

    def __eq__(self, other):
        return type(self) is type(other) and self.fn is other.fn

    def __hash__(self):
        return hash(("CustomSurrogate", id(self.fn)))

    def __repr__(self):
        return f"CustomSurrogate({self.fn!r})"


def available() -> list[str]:
    """Names of the registered surrogate shapes.

    The C++ scan kernels implement every one of them (``custom_ops/common.h`` lists the same
    names; ``tests/test_kernel_sources.py`` checks that the two lists agree).
    """
    return sorted(_REGISTRY)


def registered_name(surrogate: Surrogate) -> str | None:
    """The registry name of ``surrogate`` if it is exactly a registered shape, else None.

    None for a :class:`CustomSurrogate` and for subclasses of the registered classes (which may
    change the derivative, so a kernel that knows the shape by name cannot stand in for them).
    """
    name = getattr(surrogate, "name", None)
    if name in _REGISTRY and type(surrogate) is _REGISTRY[name]:
        return name
    return None


def serialize(surrogate: Surrogate) -> dict[str, Any]:
    """Config dict ``{"class_name": name, "config": {...}}`` of a surrogate."""
    if isinstance(surrogate, CustomSurrogate):
        return {"class_name": "custom", "config": surrogate.get_config()}
    return {"class_name": surrogate.name, "config": surrogate.get_config()}


def deserialize(config: dict[str, Any]) -> Surrogate:
    """Inverse of :func:`serialize`."""
    name = config.get("class_name")
    if name == "custom":
        return CustomSurrogate.from_config(config["config"])
    if name not in _REGISTRY:
        raise ValueError(f"Unknown surrogate {name!r}; known surrogates: {', '.join(available())}")
    return _REGISTRY[name].from_config(config.get("config", {}))


def get(identifier: str | dict | Surrogate | Callable | None) -> Surrogate:
    """Returns a surrogate from a name, a config dict, an instance or a callable.

    Args:
        identifier: ``"fast_sigmoid"`` (any of :func:`available`), a dict such as
            ``{"class_name": "arctan", "config": {"scale": 2.0}}``, a :class:`Surrogate`
            instance (returned as is), or a callable ``fn(x) -> dS/dx``
            (wrapped in :class:`CustomSurrogate`). ``None`` gives the default fast sigmoid.

    Raises:
        ValueError: an unknown name (the message lists the known ones).
        TypeError: any other kind of identifier.
    """
    if identifier is None:
        return FastSigmoid()
    if isinstance(identifier, Surrogate):
        return identifier
    if isinstance(identifier, str):
        if identifier not in _REGISTRY:
            raise ValueError(
                f"Unknown surrogate {identifier!r}; known surrogates: {', '.join(available())}"
            )
        return _REGISTRY[identifier]()
    if isinstance(identifier, dict):
        return deserialize(identifier)
    if callable(identifier):
        return CustomSurrogate(identifier)
    raise TypeError(
        "`surrogate` must be a name, a config dict, a Surrogate or a callable, "
        f"got {identifier!r} of type {type(identifier).__name__}"
    )
