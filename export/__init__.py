"""Exporters of keras_spiking models (installed as ``keras_spiking.export``).

One module per target, each registering converters from layer classes to that target's graph
pieces in :mod:`keras_spiking.export._registry` (a layer a target cannot express raises
:class:`ExportError` naming the layer and the target):

* :func:`to_tflite` (``tflite``): TFLite flatbuffers, float or full int8, as an unrolled
  sequence model or a one-step streaming model whose neuron state is an explicit input and
  output; :func:`tflite_ops` lists a model's operators; :func:`streaming_states` and
  :func:`requantize` help drive an int8 streaming model's state loop.
* :func:`tflm_check` (``tflm``): runs a model in the TFLite Micro interpreter, reports the arena.
* :func:`edgetpu_report` (``edgetpu``): which operators the Edge TPU would run and which fall
  back to the CPU.
* :func:`to_saved_model` (``saved_model``): SavedModel with serving signatures for the sequence
  model and the streaming step.
* :func:`to_nir` / :func:`from_nir` (``nir_graph``): the neuromorphic intermediate
  representation.

Conv networks (``ConvLIF1D/2D``, ``ConvCubaLIF1D/2D``, ``ConvLI1D/2D``, the spike-map pooling
layers, ``SpatialFlatten``, a leading ``RepeatSteps``) export to every target; what a target
cannot express (max pooling and grouped convs in NIR, ...) raises ExportError naming the layer.

The command line ``keras-spiking export MODEL.keras --to TARGET -o OUT`` is :mod:`.cli`.
Modules are imported on first use, so ``import keras_spiking`` never needs the export extras.
"""

from __future__ import annotations

import importlib

from keras_spiking.export._registry import ExportError

# public name -> module that defines it
_LAZY = {
    "to_tflite": "tflite",
    "tflite_ops": "tflite",
    "streaming_states": "tflite",
    "requantize": "tflite",
    "tflm_check": "tflm",
    "edgetpu_report": "edgetpu",
    "to_saved_model": "saved_model",
    "to_nir": "nir_graph",
    "from_nir": "nir_graph",
}

__all__ = ["ExportError", *_LAZY]


def __dir__() -> list[str]:
    return sorted(__all__)


def __getattr__(name: str):
    if name in _LAZY:
        module = importlib.import_module(f"keras_spiking.export.{_LAZY[name]}")
        return getattr(module, name)
    raise AttributeError(f"module 'keras_spiking.export' has no attribute {name!r}")
