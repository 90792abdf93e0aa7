"""Keeps the TFLite converter's C++ chatter off the terminal unless something goes wrong.

``TFLiteConverter.convert()`` writes a dozen lines from C++ (``Reading SavedModel from``,
``Estimated count of arithmetic ops``, ``fully_quantize: 0, ...``) straight to file
descriptors 1 and 2, where Python's ``sys.stdout``/``sys.stderr`` cannot catch them. The
exporters run the converter inside :func:`captured`, which points both descriptors at a
temporary file for the block: on success the lines are dropped, on an exception they are
written out (they explain it). ``TF_CPP_MIN_LOG_LEVEL=0`` or ``1`` shows them as they come.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator


def _wanted() -> bool:
    """Whether the user asked for TensorFlow's C++ logs (TF_CPP_MIN_LOG_LEVEL below 2)."""
    level = os.environ.get("TF_CPP_MIN_LOG_LEVEL", "")
    return level.strip() in ("0", "1")


@contextlib.contextmanager
def captured() -> Iterator[None]:
    """Redirects file descriptors 1 and 2 for the block (see the module docstring).

    Output from other threads during the block is captured too; Python-level output is kept
    (written out with the rest) when the block raises.
    """
    if _wanted():
        yield
        return
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    try:
        saved = [os.dup(1), os.dup(2)]
    except OSError:  # no usable descriptors (an embedded interpreter): nothing to redirect
        yield
        return
    with tempfile.TemporaryFile() as sink:
        failed = True
        try:
            os.dup2(sink.fileno(), 1)
            os.dup2(sink.fileno(), 2)
            yield
            failed = False
        finally:
            for stream in (sys.stdout, sys.stderr):
                with contextlib.suppress(Exception):
                    stream.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)
            if failed:
                sink.seek(0)
                text = sink.read().decode(errors="replace")
                if text:
                    sys.stderr.write(text)
                    sys.stderr.flush()
