"""Deprecated module name (until the next release): the SRC lives in clearer places now.

* :mod:`keras_spiking.spiking_recurrent_cell`: ``src_step``, ``SRCState``, ``slow_gate``,
  ``SpikingRecurrentCell``, ``MaxValue``;
* :mod:`keras_spiking.src_scan`: ``src_sequence``, ``src_scan``;
* :mod:`keras_spiking.layers`: the ``SRC`` layer.

``keras_spiking.src`` read like a private source tree; each name here still works and warns.
Saved models are unaffected (layers are saved by their registered names).
"""

from __future__ import annotations

from keras_spiking import _deprecation

__all__ = [  # noqa: F822  (each name is served by __getattr__, with its warning)
    "SRCState",
    "src_step",
    "SpikingRecurrentCell",
    "MaxValue",
    "src_sequence",
    "src_scan",
    "SRC",
]

_MOVED = {
    "SRCState": "keras_spiking.spiking_recurrent_cell",
    "src_step": "keras_spiking.spiking_recurrent_cell",
    "slow_gate": "keras_spiking.spiking_recurrent_cell",
    "SpikingRecurrentCell": "keras_spiking.spiking_recurrent_cell",
    "MaxValue": "keras_spiking.spiking_recurrent_cell",
    "CONSTANT_NAMES": "keras_spiking.spiking_recurrent_cell",
    "STATE_NAMES": "keras_spiking.spiking_recurrent_cell",
    "DEFAULT_BIAS": "keras_spiking.spiking_recurrent_cell",
    "src_sequence": "keras_spiking.src_scan",
    "src_scan": "keras_spiking.src_scan",
    "SRC": "keras_spiking.layers",
}


def __getattr__(name: str):
    module = _MOVED.get(name)
    if module is None:
        raise AttributeError(f"module 'keras_spiking.src' has no attribute {name!r}")
    return _deprecation.moved("keras_spiking.src", module, name)


def __dir__() -> list[str]:
    return sorted(_MOVED)
