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
    event_data,
    eventprop,
    initializers,
    layers,
    losses,
    metrics,
    ops,
    scan,
    sequence,
    silence,
    spiking_recurrent_cell,
    src_scan,
    surrogates,
    synapse,
)
from keras_spiking.silence import SilentLayerWarning, SpikesAsMembraneWarning  # noqa: E402

__all__ = [
    "callbacks",
    "cells",
    "datasets",
    "dynamics",
    "encoders",
    "event_data",
    "eventprop",
    "export",
    "initializers",
    "layers",
    "losses",
    "metrics",
    "ops",
    "scan",
    "sequence",
    "silence",
    "spiking_recurrent_cell",
    "src_scan",
    "surrogates",
    "synapse",
    "SilentLayerWarning",
    "SpikesAsMembraneWarning",
    "__version__",
]

# imported on first use: the exporters pull in the TFLite converter and NIR
_LAZY_MODULES = ("export",)


def __getattr__(name: str):
    # `keras_spiking.export` and `keras_spiking.src` (deprecated, warns on import) are
    # imported on first use
    if name in _LAZY_MODULES or name == "src":
        import importlib

        return importlib.import_module(f"keras_spiking.{name}")
    raise AttributeError(f"module 'keras_spiking' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
