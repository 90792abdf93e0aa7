"""Runs a TFLite model in the TensorFlow Lite Micro interpreter, in a child process.

TFLite Micro places every tensor in one caller-given "arena"; a microcontroller build has to
choose its size. :func:`tflm_check` finds the smallest arena that runs the model, counts the
operators one ``invoke`` executes, and runs given inputs, all in child processes that import
only NumPy and ``tflite_micro``: an arena far too small makes the interpreter crash the whole
process with SIGSEGV (a moderately small one raises "failed to allocate tensors"), and a
crash of a child is reported, never passed on to the caller.

The arena is found in two stages: one run with a generous arena records the allocation
(``print_allocations``, TFLM's ``RecordingMicroAllocator``), then a bisection over child
processes, to ``ARENA_STEP`` bytes, finds the smallest size whose allocation *and* invoke
succeed (at most the recorded total, within alignment). The arena of the host's 64-bit
build is close to, not equal to, a 32-bit microcontroller's: pointers and tensor structs are
larger here, so the number is an upper bound for a Cortex-M build of the same TFLM version.

Streaming models (``to_tflite(..., mode="streaming")``) can be run as a loop: ``streaming=True``
feeds ``x [N, T, ...]`` step by step, each new state back into its state input (converted
with :func:`keras_spiking.export.tflite.requantize` arithmetic where the scales differ),
from zero states at the start of every sequence.
"""

from __future__ import annotations

import collections
import json
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from typing import Any

import numpy as np

ARENA_STEP = 16  # bytes: TFLM aligns its allocations to 16
_TIMEOUT_PROBE = 120  # seconds for one probe child

# The child: only numpy and tflite_micro. argv: mode, model path, arena size, data dir.
_CHILD = r"""
import json, sys, time
import numpy as np
from tflite_micro.python.tflite_micro import runtime

mode, model_path, arena, folder = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
with open(model_path, "rb") as f:
    model = f.read()
n_in, n_out = int(sys.argv[5]), int(sys.argv[6])
interp = runtime.Interpreter.from_bytes(model, arena_size=arena)
ins = [interp.get_input_details(i) for i in range(n_in)]
outs = [interp.get_output_details(i) for i in range(n_out)]

def qparams(d):
    q = d.get("quantization_parameters") or {}
    s, z = q.get("scales"), q.get("zero_points")
    if s is None or len(s) == 0:
        return None
    return float(s[0]), int(z[0])

def to_input(array, d):
    array = np.asarray(array)
    dtype = np.dtype(d["dtype"])
    params = qparams(d)
    if np.issubdtype(array.dtype, np.floating) and dtype.kind == "i" and params:
        scale, zero = params
        info = np.iinfo(dtype)
        array = np.clip(np.round(array / scale) + zero, info.min, info.max)
    return np.ascontiguousarray(array.astype(dtype)).reshape(d["shape"])

def feed_back(q, d_from, d_to):
    p_from, p_to = qparams(d_from), qparams(d_to)
    if p_from is None or p_to is None or p_from == p_to:
        return q
    real = (q.astype(np.float32) - p_from[1]) * p_from[0]
    info = np.iinfo(np.dtype(d_to["dtype"]))
    return np.clip(np.round(real / p_to[0]) + p_to[1], info.min, info.max).astype(d_to["dtype"])

if mode in ("measure", "probe"):
    for i, d in enumerate(ins):
        interp.set_input(np.zeros(d["shape"], d["dtype"]), i)
    interp.invoke()
    if mode == "measure":
        interp.print_allocations()
    print(json.dumps({"ok": True}))
    sys.exit(0)

with np.load(folder + "/inputs.npz") as saved:  # an NpzFile re-reads on every [key]
    data = {key: saved[key] for key in saved.files}
streaming = mode == "stream"
count = data["in0"].shape[0]
results = [[] for _ in outs]
start, last = time.time(), time.time()
for n in range(count):
    if streaming:
        states = [to_input(np.zeros(d["shape"], np.float32), d) for d in ins[1:]]
        steps = [[] for _ in outs]
        for t in range(data["in0"].shape[1]):
            interp.set_input(to_input(data["in0"][n, t], ins[0]), 0)
            for i, s in enumerate(states):
                interp.set_input(s, i + 1)
            interp.invoke()
            got = [np.array(interp.get_output(i)) for i in range(n_out)]
            for i, g in enumerate(got):
                steps[i].append(g)
            states = [feed_back(g, outs[i + 1], ins[i + 1]) for i, g in enumerate(got[1:])]
        for i in range(n_out):
            results[i].append(np.stack(steps[i]))
    else:
        for i, d in enumerate(ins):
            interp.set_input(to_input(data[f"in{i}"][n], d), i)
        interp.invoke()
        for i in range(n_out):
            results[i].append(np.array(interp.get_output(i)))
    if time.time() - last > 10 and folder:
        last = time.time()
        print(f"tflm: {n + 1}/{count} ({last - start:.0f} s)", file=sys.stderr, flush=True)
np.savez(folder + "/outputs.npz", **{f"out{i}": np.stack(r) for i, r in enumerate(results)})
print(json.dumps({"ok": True, "params": [qparams(d) for d in outs]}))
"""


def _child(
    mode: str,
    model_path: str,
    arena: int,
    folder: str,
    n_in: int,
    n_out: int,
    timeout: float,
    progress: bool = False,
) -> tuple[bool, str]:
    """Runs one child; ``(succeeded, stderr + stdout text)``; a crash is a False, never raised."""
    command = [
        sys.executable,
        "-c",
        _CHILD,
        mode,
        model_path,
        str(arena),
        folder,
        str(n_in),
        str(n_out),
    ]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    try:
        done = subprocess.run(
            command,
            stdout=subprocess.PIPE,
            stderr=None if progress else subprocess.PIPE,
            text=True,
            timeout=timeout,
            env=env,
        )
    except subprocess.TimeoutExpired:
        return False, f"timed out after {timeout} s"
    text = (done.stderr or "") + done.stdout
    if done.returncode < 0:
        text += f"\nchild killed by signal {-done.returncode}"
    return done.returncode == 0 and '"ok": true' in done.stdout, text


def _io_counts(model_bytes: bytes) -> tuple[int, int]:
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromPackedBuf(model_bytes, 0)
    graph = model.subgraphs[0]
    return len(graph.inputs), len(graph.outputs)


def tflm_check(
    model_bytes: bytes,
    *,
    inputs: Sequence[np.ndarray] | np.ndarray | None = None,
    arena_sizes: Sequence[int] | None = None,
    streaming: bool = False,
    timeout: float = 3600.0,
    progress: bool = False,
) -> dict[str, Any]:
    """Runs ``model_bytes`` in TFLite Micro (child processes) and reports on it.

    Args:
        model_bytes: a TFLite flatbuffer (int8 for a microcontroller; float also runs).
        inputs: optional data to run at the found arena size. Without ``streaming``: one array
            per model input, each ``[N, *input_shape]`` (N invokes). With ``streaming``: the
            step inputs ``x [N, T, *x_shape]`` only (the states start at zero and are fed
            back). Float arrays given to an int8 input are quantized with its scale.
        arena_sizes: candidate arena sizes in bytes to try (smallest working one wins); None
            (default) finds the smallest to ``ARENA_STEP`` bytes by bisection.
        streaming: run a streaming model as a loop (see the module docstring).
        timeout: seconds allowed for the run over ``inputs``.
        progress: let the child print progress lines to stderr while it runs ``inputs``.

    Returns:
        A dict: ``ok`` (bool), ``error`` (None or the interpreter's message), ``arena_bytes``
        (smallest working arena), ``recorded_arena_bytes`` (TFLM's own allocation total),
        ``model_bytes`` (flatbuffer size), ``ops`` (operators executed by one invoke, in
        order), ``op_counts`` (per operator name), ``ops_per_invoke``, ``outputs`` (list of
        raw output arrays ``[N, ...]``, or ``[N, T, ...]`` when streaming; None without
        inputs) and ``output_quantization`` (``(scale, zero_point)`` or None per output).
    """
    from keras_spiking.export.tflite import tflite_ops

    if not isinstance(model_bytes, (bytes, bytearray)):
        raise TypeError(
            f"tflm_check: `model_bytes` expected bytes, got {type(model_bytes).__name__}"
        )
    if arena_sizes is not None:
        sizes = list(arena_sizes)
        if not sizes or any(
            isinstance(s, bool) or not isinstance(s, (int, np.integer)) or s < 1 for s in sizes
        ):
            raise ValueError(
                f"tflm_check: `arena_sizes` expected None or ints >= 1, got {arena_sizes!r}"
            )
        sizes = sorted(int(s) for s in sizes)
    if not isinstance(streaming, bool):
        raise TypeError(f"tflm_check: `streaming` expected a bool, got {streaming!r}")
    model_bytes = bytes(model_bytes)
    ops = tflite_ops(model_bytes)
    n_in, n_out = _io_counts(model_bytes)
    arrays = None
    if inputs is not None:
        arrays = [np.asarray(inputs)] if streaming else [np.asarray(a) for a in inputs]
        if not streaming and len(arrays) != n_in:
            raise ValueError(
                f"tflm_check: `inputs` expected {n_in} arrays (one per model input), "
                f"got {len(arrays)}"
            )
        if streaming and arrays[0].ndim < 3:
            raise ValueError(
                f"tflm_check: streaming `inputs` expected [N, T, ...x shape], got shape "
                f"{arrays[0].shape}"
            )
        if len({a.shape[0] for a in arrays}) != 1:
            raise ValueError("tflm_check: every `inputs` array needs the same leading size N")
    report: dict[str, Any] = {
        "ok": False,
        "error": None,
        "arena_bytes": None,
        "recorded_arena_bytes": None,
        "model_bytes": len(model_bytes),
        "ops": ops,
        "op_counts": dict(collections.Counter(ops)),
        "ops_per_invoke": len(ops),
        "outputs": None,
        "output_quantization": None,
    }
    with tempfile.TemporaryDirectory(prefix="tflm_check_") as folder:
        model_path = os.path.join(folder, "model.tflite")
        with open(model_path, "wb") as file:
            file.write(model_bytes)

        def works(size: int) -> tuple[bool, str]:
            return _child("probe", model_path, size, folder, n_in, n_out, _TIMEOUT_PROBE)

        if arena_sizes is None:
            generous = max(10 * len(model_bytes), 1 << 20)
            ok, text = _child("measure", model_path, generous, folder, n_in, n_out, _TIMEOUT_PROBE)
            found = re.search(r"Arena allocation total (\d+) bytes", text)
            if not ok or found is None:
                report["error"] = _tail(text)
                return report
            recorded = int(found.group(1))
            report["recorded_arena_bytes"] = recorded
            # the recorded total leaves out some of what the interpreter needs (the python
            # wrapper's and the kernels' scratch): grow from it by a quarter until it works
            low, high = 0, -(-recorded // ARENA_STEP) * ARENA_STEP
            while not works(high)[0]:
                low, high = high, -(-int(high * 1.25) // ARENA_STEP) * ARENA_STEP
                if low >= generous:
                    report["error"] = "no arena up to the recording run's size worked"
                    return report
            while high - low > ARENA_STEP:
                middle = (low + high) // 2 // ARENA_STEP * ARENA_STEP or ARENA_STEP
                if middle <= low:
                    break
                if works(middle)[0]:
                    high = middle
                else:
                    low = middle
            arena = high
        else:
            arena, text = None, ""
            for size in sizes:
                ok, text = works(size)
                if ok:
                    arena = size
                    break
            if arena is None:
                report["error"] = f"no arena in {sizes} worked: {_tail(text)}"
                return report
        report["arena_bytes"] = arena
        if arrays is not None:
            np.savez(
                os.path.join(folder, "inputs.npz"), **{f"in{i}": a for i, a in enumerate(arrays)}
            )
            ok, text = _child(
                "stream" if streaming else "run",
                model_path,
                arena,
                folder,
                n_in,
                n_out,
                timeout,
                progress,
            )
            if not ok:
                report["error"] = _tail(text)
                return report
            with np.load(os.path.join(folder, "outputs.npz")) as saved:
                report["outputs"] = [saved[f"out{i}"] for i in range(n_out)]
            params = json.loads(text.strip().splitlines()[-1])["params"]
            report["output_quantization"] = [None if p is None else tuple(p) for p in params]
    report["ok"] = True
    return report


def _tail(text: str, lines: int = 12) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])
