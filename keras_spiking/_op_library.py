"""Building, caching and loading the custom-op library (see :mod:`keras_spiking.ops`).

The C++ sources ship with the package (``keras_spiking.custom_ops``). On first use they are
compiled with the flags ``tf.sysconfig`` reports plus ``-shared -fPIC -O3 -march=native`` into a
cache directory keyed by the TensorFlow version, the compiler, the CPU and a hash of the sources,
under a file lock (two processes starting at once build it once). A library is loaded only if
the TensorFlow version recorded next to it equals the running one.

Environment variables:
    KERAS_SPIKING_OPS_CACHE: cache directory (default ``$XDG_CACHE_HOME/keras_spiking`` or
        ``~/.cache/keras_spiking``).
    KERAS_SPIKING_OPS_LIBRARY: a prebuilt ``.so`` to load instead of building (its
        ``.json`` side file must name the running TensorFlow version).
    CXX: the C++ compiler (default ``g++``).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.resources
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import tensorflow as tf

LIBRARY_NAME = "_keras_spiking_ops.so"
SOURCES = ("sparse_spike_matmul.cc", "neuron_scan.cc", "eventprop.cc")
HEADERS = ("common.h",)
# -fno-math-errno lets g++ vectorise exp() (glibc's vector math); the kernels never read errno
EXTRA_FLAGS = ("-shared", "-fPIC", "-O3", "-march=native", "-fno-math-errno", "-w")


class OpLibraryError(RuntimeError):
    """The custom-op library could not be built or loaded; the message says why and what to do."""


def source_dir() -> Path:
    """Folder of the C++ sources (``custom_ops/`` in a checkout)."""
    return Path(str(importlib.resources.files("keras_spiking.custom_ops")))


def _cpu_signature() -> str:
    # -march=native ties the binary to this CPU's instruction set: key the cache on it
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return line
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _compiler() -> list[str]:
    return shlex.split(os.environ.get("CXX", "g++"))


def _compiler_version(compiler: list[str]) -> str:
    try:
        result = subprocess.run(
            [*compiler, "--version"], capture_output=True, text=True, timeout=30, check=True
        )
    except (OSError, subprocess.SubprocessError) as error:
        raise OpLibraryError(
            f"keras_spiking custom ops: the C++ compiler {' '.join(compiler)!r} does not run "
            f"({error}); install g++ or set CXX, or use use_custom_ops=False"
        ) from error
    return result.stdout.splitlines()[0] if result.stdout else ""


def build_key(compiler: list[str] | None = None) -> str:
    """Hash of everything the binary depends on: sources, TF version and flags, compiler, CPU."""
    compiler = compiler or _compiler()
    digest = hashlib.sha256()
    folder = source_dir()
    for name in (*SOURCES, *HEADERS):
        digest.update(name.encode())
        digest.update((folder / name).read_bytes())
    for part in (
        tf.__version__,
        *tf.sysconfig.get_compile_flags(),
        *tf.sysconfig.get_link_flags(),
        *EXTRA_FLAGS,
        _compiler_version(compiler),
        _cpu_signature(),
    ):
        digest.update(part.encode())
    return digest.hexdigest()[:16]


def cache_dir() -> Path:
    """Root of the build cache (see the module docstring)."""
    if os.environ.get("KERAS_SPIKING_OPS_CACHE"):
        return Path(os.environ["KERAS_SPIKING_OPS_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "keras_spiking"


def library_path() -> Path:
    """Where the library for this TF version, compiler, CPU and source tree lives (or will)."""
    return cache_dir() / f"ops-tf{tf.__version__}-{build_key()}" / LIBRARY_NAME


@contextlib.contextmanager
def _file_lock(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _run(command: list[str]) -> subprocess.Popen:
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def compile_library(target: Path, verbose: bool = True) -> Path:
    """Compiles the sources into ``target`` (each source in its own process, then one link)."""
    compiler = _compiler()
    compile_flags = [*tf.sysconfig.get_compile_flags(), *EXTRA_FLAGS]
    link_flags = tf.sysconfig.get_link_flags()
    folder = source_dir()
    target.parent.mkdir(parents=True, exist_ok=True)
    if verbose:
        print(
            f"keras_spiking: compiling the custom ops for TensorFlow {tf.__version__} into "
            f"{target.parent} (once per TF version and source change, about 20-40 s) ...",
            file=sys.stderr,
            flush=True,
        )
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(dir=target.parent) as work:
        objects, jobs = [], []
        for name in SOURCES:
            obj = Path(work) / (Path(name).stem + ".o")
            command = [*compiler, "-c", str(folder / name), "-o", str(obj), *compile_flags]
            jobs.append((command, _run(command)))
            objects.append(str(obj))
        for command, job in jobs:
            output, _ = job.communicate()
            if job.returncode != 0:
                raise OpLibraryError(
                    "keras_spiking custom ops: compiling failed:\n  "
                    + " ".join(command)
                    + "\n"
                    + output[-4000:]
                )
        partial = Path(work) / LIBRARY_NAME
        command = [*compiler, "-shared", *objects, "-o", str(partial), *link_flags]
        job = _run(command)
        output, _ = job.communicate()
        if job.returncode != 0:
            raise OpLibraryError(
                "keras_spiking custom ops: linking failed:\n  " + " ".join(command) + "\n" + output
            )
        target.with_suffix(".json").write_text(
            json.dumps({"tensorflow": tf.__version__, "key": target.parent.name})
        )
        os.replace(partial, target)  # atomic: other processes see the whole file or none
    if verbose:
        print(
            f"keras_spiking: custom ops built in {time.perf_counter() - start:.0f} s",
            file=sys.stderr,
            flush=True,
        )
    return target


def check_version(path: Path) -> None:
    """Raises unless the side file of ``path`` names the running TensorFlow version."""
    side = path.with_suffix(".json")
    try:
        built_for = json.loads(side.read_text())["tensorflow"]
    except (OSError, ValueError, KeyError) as error:
        raise OpLibraryError(
            f"keras_spiking custom ops: {side} is missing or unreadable ({error}); cannot tell "
            "which TensorFlow the library was built for"
        ) from error
    if built_for != tf.__version__:
        raise OpLibraryError(
            f"keras_spiking custom ops: {path} was built for TensorFlow {built_for}, but "
            f"TensorFlow {tf.__version__} is running; rebuild it with "
            "`python -m keras_spiking.custom_ops build` (or unset KERAS_SPIKING_OPS_LIBRARY)"
        )


def build_and_load(rebuild: bool = False, verbose: bool = True):
    """Returns the loaded op module, compiling it first if the cache has none."""
    prebuilt = os.environ.get("KERAS_SPIKING_OPS_LIBRARY")
    if prebuilt:
        path = Path(prebuilt)
    else:
        path = library_path()
        with _file_lock(path.parent.with_suffix(".lock")):
            if rebuild or not path.exists():
                compile_library(path, verbose=verbose)
    check_version(path)
    try:
        return tf.load_op_library(str(path))
    except (tf.errors.NotFoundError, OSError) as error:
        raise OpLibraryError(
            f"keras_spiking custom ops: loading {path} failed ({error}); rebuild with "
            "`python -m keras_spiking.custom_ops build --rebuild`"
        ) from error
