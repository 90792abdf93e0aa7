r"""Custom C++ kernels for the CPU: event-driven synaptic input, fused neuron scans, EventProp.

The kernels (sources in ``custom_ops/``) accelerate the spiking layers; each has a pure-TF twin
that gives the same numbers up to float32 rounding, and which lives with the algorithm it
mirrors. One module a job, dependencies pointing one way (kernels never import algorithms):

==========================================  ===================================================
:mod:`~keras_spiking.ops.settings`          ``use_custom_ops``: values, global setting, env var
:mod:`~keras_spiking.ops.library`           loading the library once per process, ``status()``
:mod:`~keras_spiking.ops.dispatch`          the one decision kernels vs TF per layer call,
                                            input density and cutoffs, kernel-call counting
:mod:`~keras_spiking.ops.synaptic`          event-driven ``x W`` (twin:
                                            :func:`keras_spiking.synapse.dense_current`)
:mod:`~keras_spiking.ops.scans`             fused LIF / CubaLIF / LI scans (twins:
                                            :mod:`keras_spiking.scan`)
:mod:`~keras_spiking.ops.eventprop_kernels` EventProp forward/adjoint (twins:
                                            :mod:`keras_spiking.eventprop`)
:mod:`~keras_spiking.ops.cli`               ``python -m keras_spiking.custom_ops build``
==========================================  ===================================================

Switching: every spiking layer takes ``use_custom_ops="auto" | True | False``. ``True``
requires the kernels for that layer (an error says why when they cannot serve a call);
``False`` never uses them; ``"auto"`` (default) defers to the global setting,
:func:`set_use_custom_ops`, whose default comes from the environment variable
``KERAS_SPIKING_CUSTOM_OPS`` (``auto``/``1``/``0``). Where the kernels run: in training and
eager calls; graph-traced inference (``predict``, export, serving) uses standard TF ops, so a
saved or exported model never needs the ``.so`` (see :mod:`keras_spiking.ops.dispatch`).

The library is compiled on first use (about 20-60 s, once per TF version and source change;
see :mod:`keras_spiking._op_library` for the cache) or ahead of time with
``python -m keras_spiking.custom_ops build``.
"""

from __future__ import annotations

from keras_spiking import _deprecation
from keras_spiking.ops.conv import conv_input
from keras_spiking.ops.dispatch import (
    DENSITY_CUTOFF,
    KERNEL_DTYPES,
    KERNEL_SURROGATES,
    MIN_EVENT_OUTPUTS,
    NARROW_DENSITY_CUTOFF,
    NARROW_OUTPUTS,
    accelerator_in_use,
    call_setting,
    count_kernel_calls,
    density_cutoff,
    enabled,
    eventprop_enabled,
    input_density,
    kernels_for_call,
    supports,
)
from keras_spiking.ops.eventprop_kernels import (
    eventprop_backward,
    eventprop_readout_forward,
    eventprop_spiking_forward,
)
from keras_spiking.ops.library import OpLibraryError, available, load, status
from keras_spiking.ops.scans import (
    fused_cuba_lif_scan,
    fused_li_scan,
    fused_lif_scan,
    fused_lif_scan_with_input,
)
from keras_spiking.ops.settings import (
    ENV_SETTING,
    get_use_custom_ops,
    set_use_custom_ops,
    use_custom_ops,
    validate_setting,
)
from keras_spiking.ops.synaptic import sparse_lif_step, sparse_spike_matmul, synaptic_input

__all__ = [
    "DENSITY_CUTOFF",
    "ENV_SETTING",
    "KERNEL_DTYPES",
    "KERNEL_SURROGATES",
    "MIN_EVENT_OUTPUTS",
    "NARROW_DENSITY_CUTOFF",
    "NARROW_OUTPUTS",
    "OpLibraryError",
    "accelerator_in_use",
    "available",
    "call_setting",
    "conv_input",
    "count_kernel_calls",
    "density_cutoff",
    "enabled",
    "eventprop_backward",
    "eventprop_enabled",
    "eventprop_readout_forward",
    "eventprop_spiking_forward",
    "fused_cuba_lif_scan",
    "fused_li_scan",
    "fused_lif_scan",
    "fused_lif_scan_with_input",
    "get_use_custom_ops",
    "input_density",
    "kernels_for_call",
    "load",
    "set_use_custom_ops",
    "sparse_lif_step",
    "sparse_spike_matmul",
    "status",
    "supports",
    "synaptic_input",
    "use_custom_ops",
    "validate_setting",
]


def _deprecated_names() -> dict[str, tuple[str, str]]:
    """Old name -> (module, new name) of the names this module had before 0.2 (one release)."""
    return {
        "lif_scan": ("keras_spiking.ops.scans", "fused_lif_scan"),
        "lif_scan_with_input": ("keras_spiking.ops.scans", "fused_lif_scan_with_input"),
        "cuba_lif_scan": ("keras_spiking.ops.scans", "fused_cuba_lif_scan"),
        "li_scan": ("keras_spiking.ops.scans", "fused_li_scan"),
        "lif_step": ("keras_spiking.ops.synaptic", "sparse_lif_step"),
        "sparse_spike_matmul_reference": ("keras_spiking.synapse", "dense_current"),
        "lif_step_reference": ("keras_spiking.dynamics", "dense_lif_step"),
        "eventprop_spiking_forward_reference": (
            "keras_spiking.eventprop",
            "spiking_forward_reference",
        ),
        "eventprop_readout_forward_reference": (
            "keras_spiking.eventprop",
            "readout_forward_reference",
        ),
    }


def __getattr__(name: str):
    """The pre-split names, kept for one release with a DeprecationWarning naming the new one."""
    moved = _deprecated_names().get(name)
    if moved is None:
        raise AttributeError(f"module 'keras_spiking.ops' has no attribute {name!r}")
    module, new = moved
    return _deprecation.moved(f"keras_spiking.ops.{name}", module, new)
