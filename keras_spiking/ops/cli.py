"""``python -m keras_spiking.custom_ops build [--rebuild] | path | status``: the kernels' CLI."""

from __future__ import annotations

import argparse
import sys
import time

from keras_spiking import _op_library
from keras_spiking.ops.library import OpLibraryError, status


def main(argv: list[str] | None = None) -> int:
    """Runs the command; returns the exit status (1 with the reason on stderr on failure)."""
    parser = argparse.ArgumentParser(
        prog="python -m keras_spiking.custom_ops",
        description="Build the custom ops ahead of time, or show where they are.",
    )
    parser.add_argument("command", choices=["build", "path", "status"])
    parser.add_argument("--rebuild", action="store_true", help="compile even if cached")
    args = parser.parse_args(argv)
    try:
        if args.command == "path":
            print(_op_library.library_path())
            return 0
        if args.command == "status":
            print(status())
            return 0
        start = time.perf_counter()
        path, record, built = _op_library.locate(rebuild=args.rebuild)
        _op_library.load_library(path)  # checks that it loads, not only that it compiled
    except OpLibraryError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    how = f"built in {time.perf_counter() - start:.0f} s" if built else "cached"
    print(
        f"keras_spiking kernels: target {record['target']} "
        f"({' '.join(record['flags']) or 'compiler default'}) on {_op_library.cpu_model()}, "
        f"{how}",
        file=sys.stderr,
    )
    print(path)
    return 0
