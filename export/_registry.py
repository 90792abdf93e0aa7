"""Registry from layer classes to per-target converters, and the errors of the exporters."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras


class ExportError(ValueError):
    """A model or option that an export target cannot express; the message names both."""


_CONVERTERS: dict[tuple[str, type], Callable[..., Any]] = {}


def register(target: str, *layer_classes: type) -> Callable:
    """Decorator: ``fn`` converts instances of ``layer_classes`` for ``target``."""

    def wrap(fn: Callable) -> Callable:
        for cls in layer_classes:
            _CONVERTERS[(target, cls)] = fn
        return fn

    return wrap


def converter(target: str, layer: keras.layers.Layer) -> Callable[..., Any]:
    """The converter of ``layer`` for ``target`` (most specific class first), or ExportError."""
    for cls in type(layer).__mro__:
        if (target, cls) in _CONVERTERS:
            return _CONVERTERS[(target, cls)]
    known = sorted({cls.__name__ for (t, cls) in _CONVERTERS if t == target})
    raise ExportError(
        f"{target} export cannot express layer {layer.name!r} of type {type(layer).__name__}; "
        f"it supports: {', '.join(known) or 'nothing yet'}"
    )


def supported(target: str) -> list[str]:
    """Names of the layer classes ``target`` can convert."""
    return sorted({cls.__name__ for (t, cls) in _CONVERTERS if t == target})
