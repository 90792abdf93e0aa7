"""keras_spiking: spiking neural networks for Keras 3 / TensorFlow."""

from importlib import metadata as _metadata

try:
    __version__ = _metadata.version("keras-snn")
except _metadata.PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

from keras_spiking import (  # noqa: E402
    callbacks,
    cells,
    datasets,
    dynamics,
    encoders,
    eventprop,
    layers,
    losses,
    metrics,
    ops,
    scan,
    src,
    surrogates,
)

__all__ = [
    "callbacks",
    "cells",
    "datasets",
    "dynamics",
    "encoders",
    "eventprop",
    "layers",
    "losses",
    "metrics",
    "ops",
    "scan",
    "src",
    "surrogates",
    "__version__",
]
