"""Building, caching, checking and loading the custom-op library (see :mod:`keras_spiking.ops`).

The C++ sources ship with the package (``keras_spiking.custom_ops``). On first use they are
compiled with the flags ``tf.sysconfig`` reports plus ``-shared -fPIC -O3`` and a **target**:

* Which target: the first of :func:`candidate_targets` that the compiler and TensorFlow's
  headers accept, found by compiling a tiny translation unit that includes
  ``tensorflow/core/framework/op_kernel.h`` (a *probe*, about 15 s). On x86-64 the order is
  ``native`` (``-march=native``), ``native-no-fp16`` (adds ``-mno-avx512fp16``: TF 2.21's Eigen
  headers do not compile with g++ 12 on CPUs with AVX-512-FP16, such as Sapphire Rapids),
  ``native-no-avx512`` (``-mno-avx512f``) and ``generic`` (the compiler's default target, which
  runs on every CPU of the architecture). On aarch64 it is ``native`` (``-mcpu=native``) then
  ``generic``. If the full build fails for a target that passed the probe, the next one is
  tried. Every candidate targets the running CPU or a subset of it, so the result runs here.
* ``KERAS_SPIKING_OPS_TARGET`` fixes the target instead: ``native``, ``generic``, or any
  ``-march`` value (``x86-64-v2``, ``haswell``, ...); e.g. build a portable library for an
  image with ``KERAS_SPIKING_OPS_TARGET=x86-64-v2 python -m keras_spiking.custom_ops build``.

The library lands in a cache folder keyed by the TensorFlow version and flags, the sources, the
candidate targets and, for native targets, the CPU's feature flags (a ``-march=native``
binary may not run on another CPU). The compiler's version is not part of the key, so a cache
built in one image can be used in another without a compiler. A side file
(``_keras_spiking_ops.json``) records the TensorFlow version, the target, the flags, the
library's size and SHA-256; a library is loaded only when all of them check out, so a truncated
or corrupt file (an interrupted copy) is never mapped: it is rebuilt where the cache is
writable and refused with an :class:`OpLibraryError` where it is not. A read-only cache that
already holds a good library is used as it is (no lock file is written).

Environment variables:
    KERAS_SPIKING_OPS_CACHE: cache folder (default ``$XDG_CACHE_HOME/keras_spiking`` or
        ``~/.cache/keras_spiking``).
    KERAS_SPIKING_OPS_LIBRARY: a prebuilt ``.so`` to load instead of building (its ``.json``
        side file, written by the build, must name the running TensorFlow version and match
        the file's size and hash).
    KERAS_SPIKING_OPS_TARGET: fixes the compile target (see above).
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
import re
import shlex
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import tensorflow as tf

LIBRARY_NAME = "_keras_spiking_ops.so"
SOURCES = ("sparse_spike_matmul.cc", "neuron_scan.cc", "eventprop.cc", "event_conv.cc")
HEADERS = ("common.h",)
# -fno-math-errno lets g++ vectorise exp() (glibc's vector math); the kernels never read errno
BASE_FLAGS = ("-shared", "-fPIC", "-O3", "-fno-math-errno", "-w")
ENV_TARGET = "KERAS_SPIKING_OPS_TARGET"
# A compile that takes longer than this is treated as hung (a normal one takes 15-60 s)
COMPILE_TIMEOUT_S = 900
PROBE_SOURCE = (
    '#include "tensorflow/core/framework/op_kernel.h"\nint keras_spiking_probe() { return 0; }\n'
)
_ERROR_LINE = re.compile(r"\berror\b", re.IGNORECASE)


class OpLibraryError(RuntimeError):
    """The custom-op library could not be built or loaded; the message says why and what to do."""


@dataclass(frozen=True)
class Target:
    """A compile target: a short name and the flags that select it."""

    name: str
    flags: tuple[str, ...]

    def describe(self) -> str:
        return f"{self.name} ({' '.join(self.flags) or 'compiler default'})"


def source_dir() -> Path:
    """Folder of the C++ sources (``custom_ops/`` in a checkout)."""
    return Path(str(importlib.resources.files("keras_spiking.custom_ops")))


def _machine() -> str:
    return platform.machine().lower()


def candidate_targets(native: tuple[str, ...] | None = None) -> list[Target]:
    """The targets to try, best first (``KERAS_SPIKING_OPS_TARGET`` gives exactly one).

    Args:
        native: flags standing in for the running CPU (e.g. ``("-march=sapphirerapids",)``
            to see what a build for that CPU would try; the compile-matrix test does). When
            given, ``KERAS_SPIKING_OPS_TARGET`` is ignored.
    """
    machine = _machine()
    arm = machine in ("aarch64", "arm64")
    generic = Target("generic", ())
    fixed = "" if native else os.environ.get(ENV_TARGET, "").strip()
    if fixed == "generic":
        return [generic]
    if fixed and fixed != "native":
        if not re.fullmatch(r"[A-Za-z0-9_.+-]+", fixed):
            raise OpLibraryError(
                f"keras_spiking custom ops: {ENV_TARGET}={fixed!r} is not a target name; use "
                "'native', 'generic' or a -march value such as 'x86-64-v2'"
            )
        return [Target(fixed, (f"-mcpu={fixed}",) if arm else (f"-march={fixed}",))]
    if native is None:
        native = ("-mcpu=native",) if arm else ("-march=native",)
    first = Target("native", tuple(native))
    if fixed == "native":
        return [first]
    if machine in ("x86_64", "amd64", "i686", "i386"):
        return [
            first,
            Target("native-no-fp16", (*native, "-mno-avx512fp16")),
            Target("native-no-avx512", (*native, "-mno-avx512f")),
            generic,
        ]
    return [first, generic]


def _cpu_signature() -> str:
    # a native target ties the binary to this CPU's instruction set: key the cache on it
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return line
    except OSError:
        pass
    return platform.processor() or _machine()


def _compiler() -> list[str]:
    return shlex.split(os.environ.get("CXX", "g++")) or ["g++"]


def _compiler_version(compiler: list[str]) -> str:
    """First line of ``--version``; raises OpLibraryError when the compiler does not run."""
    try:
        result = subprocess.run(
            [*compiler, "--version"], capture_output=True, text=True, timeout=60, check=True
        )
    except (OSError, subprocess.SubprocessError) as error:
        raise OpLibraryError(
            f"keras_spiking custom ops: the C++ compiler {' '.join(compiler)!r} does not run "
            f"({error}); install g++ or set CXX, or use use_custom_ops=False"
        ) from error
    return result.stdout.splitlines()[0] if result.stdout else ""


def build_key() -> str:
    """Hash of what the binary depends on: sources, TF version and flags, targets, CPU."""
    digest = hashlib.sha256()
    folder = source_dir()
    for name in (*SOURCES, *HEADERS):
        digest.update(name.encode())
        try:
            digest.update((folder / name).read_bytes())
        except OSError as error:
            raise OpLibraryError(
                f"keras_spiking custom ops: cannot read the source {folder / name} ({error}); "
                "reinstall keras_spiking"
            ) from error
    targets = candidate_targets()
    native = any(t.name.startswith("native") for t in targets)
    for part in (
        tf.__version__,
        *tf.sysconfig.get_compile_flags(),
        *tf.sysconfig.get_link_flags(),
        *BASE_FLAGS,
        *(f"{t.name}={' '.join(t.flags)}" for t in targets),
        _machine(),
        _cpu_signature() if native else "",
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
    """Where the library for this TF version, target set, CPU and source tree lives (or will)."""
    return cache_dir() / f"ops-tf{tf.__version__}-{build_key()}" / LIBRARY_NAME


def side_file(path: Path) -> Path:
    """The ``.json`` next to a library: what it was built for, its size and hash."""
    return path.with_suffix(".json")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _cache_error(folder: Path, error: OSError) -> OpLibraryError:
    return OpLibraryError(
        f"keras_spiking custom ops: the cache folder {folder} cannot be written "
        f"({type(error).__name__}: {error.strerror or error}); set KERAS_SPIKING_OPS_CACHE to a "
        "writable folder, or build the library where you can "
        "(`python -m keras_spiking.custom_ops build`) and point KERAS_SPIKING_OPS_LIBRARY at it, "
        "or use use_custom_ops=False"
    )


@contextlib.contextmanager
def _file_lock(path: Path):
    """Exclusive lock on ``path`` (created); OSError from a read-only or broken cache."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def compile_command(source: Path, obj: Path, target: Target) -> list[str]:
    """The compiler command that compiles ``source`` into ``obj`` for ``target`` (no link)."""
    return [
        *_compiler(),
        "-c",
        str(source),
        "-o",
        str(obj),
        *tf.sysconfig.get_compile_flags(),
        *BASE_FLAGS,
        *target.flags,
    ]


def run_compilers(commands: list[list[str]]) -> tuple[int, str]:
    """Runs compiler commands in parallel; ``(0, '')`` when all succeed.

    Otherwise the first failure's return code, and its command followed by its output.
    """
    jobs = []
    for command in commands:
        try:
            jobs.append(
                subprocess.Popen(
                    command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
                )
            )
        except OSError as error:
            for job in jobs:
                job.kill()
                job.communicate()
            return -1, f"could not run {command[0]!r}: {error}"
    failure = (0, "")
    for command, job in zip(commands, jobs):
        try:
            output, _ = job.communicate(timeout=COMPILE_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            job.kill()
            job.communicate()
            output = f"timed out after {COMPILE_TIMEOUT_S} s"
        code = job.returncode if job.returncode is not None else -1
        if code != 0 and failure[0] == 0:
            failure = (code, " ".join(command) + "\n" + output)
    return failure


def error_summary(output: str, lines: int = 3) -> str:
    """The compiler's first error lines (what a user needs from a long log)."""
    found = [line.strip() for line in output.splitlines() if _ERROR_LINE.search(line)]
    return "\n".join(found[:lines]) or output.strip()[-500:]


def probe_target(target: Target, work: Path) -> tuple[bool, str]:
    """Whether the compiler and TF's headers accept ``target`` (compiles ``op_kernel.h``)."""
    source = work / "probe.cc"
    source.write_text(PROBE_SOURCE)
    obj = work / f"probe-{target.name}.o"
    command = compile_command(source, obj, target)
    code, output = run_compilers([command])
    ok = code == 0 and obj.exists() and obj.stat().st_size > 0
    if code == 0 and not ok:
        output = f"{command[0]} returned 0 but wrote no object file {obj}"
    return ok, output


def _log(message: str, verbose: bool) -> None:
    if verbose:
        print(f"keras_spiking: {message}", file=sys.stderr, flush=True)


def _build_for(target: Target, work: Path, partial: Path) -> tuple[int, str]:
    objects = [work / f"{Path(name).stem}-{target.name}.o" for name in SOURCES]
    code, output = run_compilers(
        [compile_command(source_dir() / name, obj, target) for name, obj in zip(SOURCES, objects)]
    )
    if code != 0:
        return code, output
    link = [*_compiler(), "-shared", *map(str, objects), "-o", str(partial)]
    code, output = run_compilers([[*link, *tf.sysconfig.get_link_flags()]])
    if code == 0 and not (partial.exists() and partial.stat().st_size > 0):
        return -1, f"{link[0]} returned 0 but wrote no library {partial}"
    return code, output


def compile_library(
    target_path: Path, verbose: bool = True, native: tuple[str, ...] | None = None
) -> dict:
    """Probes the targets, compiles the sources into ``target_path``; returns the side record.

    ``native`` stands in for the running CPU's flags (see :func:`candidate_targets`).

    The library and its side file appear atomically (other processes see all or nothing).
    The full compiler log of a failure is kept as ``build.log`` next to ``target_path``.
    """
    compiler_version = _compiler_version(_compiler())  # a missing compiler fails here
    folder = target_path.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
        work_dir = tempfile.TemporaryDirectory(dir=folder)
    except OSError as error:
        raise _cache_error(folder, error) from error
    start = time.perf_counter()
    failures = []
    with work_dir as work:
        work = Path(work)
        partial = work / LIBRARY_NAME
        targets = candidate_targets(native)
        while targets:
            target = targets.pop(0)
            ok, output = probe_target(target, work)
            if not ok:
                failures.append((target, "probe", output))
                _log(
                    f"compile target {target.describe()} rejected by the compiler or "
                    f"TensorFlow's headers: {error_summary(output, 1)}",
                    verbose,
                )
                continue
            _log(
                f"compiling the custom ops for TensorFlow {tf.__version__}, target "
                f"{target.describe()}, into {folder} (once per TF version and source change, "
                "about 20-60 s) ...",
                verbose,
            )
            code, output = _build_for(target, work, partial)
            if code == 0:
                break
            failures.append((target, "build", output))
            _log(f"build for {target.describe()} failed: {error_summary(output, 1)}", verbose)
            # the headers passed the probe, so the sources failed: only the most conservative
            # target is worth one more try (each full build costs 20-60 s)
            targets = [t for t in targets if t.name == "generic"]
        else:
            log = folder / "build.log"
            with contextlib.suppress(OSError):
                log.write_text(
                    "\n\n".join(f"== {t.describe()} ({stage})\n{out}" for t, stage, out in failures)
                )
            tried = ", ".join(f"{t.name} ({stage})" for t, stage, _ in failures)
            last = error_summary(failures[-1][2]) if failures else "no targets"
            raise OpLibraryError(
                f"keras_spiking custom ops: compiling failed for every target tried ({tried}); "
                f"the compiler said:\n{last}\nFull log: {log}. Check that g++ >= 9 and the "
                "TensorFlow headers are installed, or use use_custom_ops=False."
            )
        record = {
            "tensorflow": tf.__version__,
            "key": folder.name,
            "target": target.name,
            "flags": list(target.flags),
            "compiler": compiler_version,
            "size": partial.stat().st_size,
            "sha256": _sha256(partial),
            "build_seconds": round(time.perf_counter() - start, 1),
        }
        side_partial = work / "side.json"
        side_partial.write_text(json.dumps(record, indent=1))
        # the library first, then its side file: a reader that sees the new library without a
        # matching side file treats it as invalid and waits for the lock
        os.replace(partial, target_path)
        os.replace(side_partial, side_file(target_path))
    _log(
        f"custom ops built for target {target.describe()} in {record['build_seconds']:.0f} s",
        verbose,
    )
    return record


def verify(path: Path) -> dict:
    """Checks a library against its side file; returns the record or raises OpLibraryError.

    Refused: a missing or unreadable side file, another TensorFlow version, a size or SHA-256
    that differs from the recorded one (a truncated or corrupt file is never mapped).
    """
    side = side_file(path)
    try:
        record = json.loads(side.read_text())
        built_for = record["tensorflow"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise OpLibraryError(
            f"keras_spiking custom ops: {side} is missing or unreadable ({error}); cannot tell "
            "which TensorFlow the library was built for; rebuild it with "
            "`python -m keras_spiking.custom_ops build --rebuild`"
        ) from error
    if built_for != tf.__version__:
        raise OpLibraryError(
            f"keras_spiking custom ops: {path} was built for TensorFlow {built_for}, but "
            f"TensorFlow {tf.__version__} is running; rebuild it with "
            "`python -m keras_spiking.custom_ops build` (or unset KERAS_SPIKING_OPS_LIBRARY)"
        )
    try:
        size = path.stat().st_size
        if "size" not in record or "sha256" not in record:
            raise OpLibraryError(
                f"keras_spiking custom ops: {side} records no size and hash for {path} (built "
                "by an older keras_spiking); rebuild it with "
                "`python -m keras_spiking.custom_ops build --rebuild`"
            )
        if size != record["size"] or _sha256(path) != record["sha256"]:
            raise OpLibraryError(
                f"keras_spiking custom ops: {path} is corrupt or truncated ({size} bytes, "
                f"{record['size']} recorded, or its SHA-256 differs); it was not loaded. Delete "
                "it or rebuild with `python -m keras_spiking.custom_ops build --rebuild`"
            )
    except OSError as error:
        raise OpLibraryError(
            f"keras_spiking custom ops: cannot read {path} ({error}); rebuild it with "
            "`python -m keras_spiking.custom_ops build --rebuild`"
        ) from error
    return record


def load_library(path: Path):
    """``tf.load_op_library`` with its failures as OpLibraryError."""
    try:
        return tf.load_op_library(str(path))
    except (tf.errors.OpError, OSError, ValueError, RuntimeError) as error:
        raise OpLibraryError(
            f"keras_spiking custom ops: loading {path} failed ({error}); rebuild with "
            "`python -m keras_spiking.custom_ops build --rebuild`"
        ) from error


def locate(rebuild: bool = False, verbose: bool = True) -> tuple[Path, dict, bool]:
    """Finds or builds the library: ``(path, side record, whether it was built now)``.

    Raises:
        OpLibraryError: every failure (no compiler, compile error, unusable cache folder,
            corrupt library in a read-only cache, wrong TensorFlow version), saying what to do.
    """
    prebuilt = os.environ.get("KERAS_SPIKING_OPS_LIBRARY")
    if prebuilt:
        path = Path(prebuilt)
        return path, verify(path), False
    try:
        path = library_path()
    except OSError as error:  # e.g. HOME unset or unreadable sources
        raise OpLibraryError(
            f"keras_spiking custom ops: cannot find the cache folder ({error}); set "
            "KERAS_SPIKING_OPS_CACHE to a writable folder"
        ) from error
    if not rebuild:  # read-only caches: no lock needed to use a good library
        with contextlib.suppress(OpLibraryError):
            return path, verify(path), False
    lock = path.parent.with_suffix(".lock")
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(_file_lock(lock))
        except OSError as error:
            if path.exists():  # a library we may not replace: say why it cannot be used
                verify(path)
            raise _cache_error(lock.parent, error) from error
        if not rebuild:  # another process may have built it while we waited for the lock
            try:
                return path, verify(path), False
            except OpLibraryError as error:
                if path.exists():
                    _log(f"{error}; rebuilding", verbose)
        try:
            compile_library(path, verbose=verbose)
        except OSError as error:
            raise _cache_error(path.parent, error) from error
        return path, verify(path), True


def build_and_load(rebuild: bool = False, verbose: bool = True):
    """Returns the loaded op module, compiling it first if the cache has no good library."""
    path, _, _ = locate(rebuild=rebuild, verbose=verbose)
    return load_library(path)


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (for reports), else the platform's."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith(("model name", "cpu model", "hardware")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or _machine()
