"""keras_spiking: spiking neural networks for Keras 3 / TensorFlow."""

import os as _os
import sys as _sys
from importlib import metadata as _metadata

if _os.path.basename(_sys.argv[0] if _sys.argv else "") == "keras-spiking":
    # the console script prints one line per command: keep TensorFlow's C++ start-up lines
    # (read once, when TensorFlow loads) out of it unless the user set a level
    _os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

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
    sequence,
    spiking_recurrent_cell,
    src_scan,
    surrogates,
    synapse,
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
    "sequence",
    "spiking_recurrent_cell",
    "src_scan",
    "surrogates",
    "synapse",
    "__version__",
]


def __getattr__(name: str):
    # `keras_spiking.src` (deprecated): imported on first use, so that it warns only then
    if name == "src":
        import importlib

        return importlib.import_module("keras_spiking.src")
    raise AttributeError(f"module 'keras_spiking' has no attribute {name!r}")
