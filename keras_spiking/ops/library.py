"""Loading the kernel library once per process, and saying whether it runs here.

The compiling, caching and target probing live in :mod:`keras_spiking._op_library`; this module
holds the loaded library (or the reason it did not load) for the process.
"""

from __future__ import annotations

import threading
import warnings

from keras_spiking import _op_library
from keras_spiking.ops.settings import ENV_SETTING, get_use_custom_ops

OpLibraryError = _op_library.OpLibraryError

# the ops custom_ops/eventprop.cc registers (an older prebuilt library may lack them)
EVENTPROP_OPS = (
    "keras_spiking_event_prop_spiking_forward",
    "keras_spiking_event_prop_readout_forward",
    "keras_spiking_event_prop_backward",
)

_lock = threading.Lock()
_library = None
_load_error: OpLibraryError | None = None
_warned = False


def load(rebuild: bool = False):
    """Builds (if needed) and loads the library; returns the op module.

    Raises:
        OpLibraryError: the compiler is missing, compiling failed, or the library was built
            for another TensorFlow version; the message says how to rebuild.
    """
    global _library, _load_error
    with _lock:
        if rebuild:
            _library, _load_error = None, None
        if _library is None and _load_error is None:
            try:
                _library = _op_library.build_and_load(rebuild=rebuild)
            except OpLibraryError as error:
                _load_error = error
        if _load_error is not None:
            raise _load_error
        return _library


def available() -> bool:
    """Whether the kernels load here (builds them on the first call)."""
    try:
        load()
    except OpLibraryError:
        return False
    return True


def eventprop_library():
    """The loaded library, checked to hold the EventProp kernels (``custom_ops/eventprop.cc``).

    Raises:
        OpLibraryError: the library does not load, or was built without ``eventprop.cc``
            (e.g. an older ``KERAS_SPIKING_OPS_LIBRARY``).
    """
    lib = load()
    if not all(hasattr(lib, name) for name in EVENTPROP_OPS):
        raise OpLibraryError(
            "keras_spiking custom ops: the loaded library has no EventProp kernels "
            "(custom_ops/eventprop.cc was not compiled into it: it must be listed in "
            "keras_spiking._op_library.SOURCES, and a prebuilt KERAS_SPIKING_OPS_LIBRARY "
            "rebuilt with `python -m keras_spiking.custom_ops build --rebuild`); or use "
            "use_custom_ops=False"
        )
    return lib


def warn_fallback(error: OpLibraryError) -> None:
    """Warns once per process that the pure-TF path replaces kernels that did not load."""
    global _warned
    if _warned:
        return
    _warned = True
    warnings.warn(
        f"{error}\nkeras_spiking falls back to its pure-TensorFlow path (same results, "
        f"slower); set {ENV_SETTING}=0 to silence this.",
        RuntimeWarning,
        stacklevel=4,
    )


def status() -> str:
    """One line saying whether the kernels run here, for which target, or why not.

    Builds the library if needed (it never raises: a failure is part of the line).
    """
    from keras_spiking.ops.dispatch import accelerator_devices

    if get_use_custom_ops() is False:
        return f"keras_spiking kernels: off ({ENV_SETTING}=0); using the pure-TensorFlow path"
    accelerators = accelerator_devices()
    where = f" (not used on {', '.join(accelerators)}: pure TF/XLA there)" if accelerators else ""
    try:
        load()
        path, record, _ = _op_library.locate(verbose=False)
    except OpLibraryError as error:
        reason = str(error).splitlines()[0]
        return f"keras_spiking kernels: NOT available ({reason}); using the pure-TensorFlow path"
    return (
        f"keras_spiking kernels: loaded, target {record.get('target', '?')} "
        f"{' '.join(record.get('flags', []))} on {_op_library.cpu_model()}{where} [{path}]"
    )
