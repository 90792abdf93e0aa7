"""The kernel library's build, cache and load checks (``keras_spiking._op_library``).

Most cases run the real build logic with a fake compiler (a shell script that writes its
``-o`` file, or fails on flags the test names), so target selection, the side file and every
failure path are exercised in seconds; the cases that must show the process survives a bad
library run a child process, and the real compiler builds once per test run (conftest).
"""

import json
import os
import stat
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from keras_spiking import _op_library, layers, ops

FAKE_COMPILER = """\
#!/bin/sh
# A stand-in for g++: answers --version, fails (like a header error) when its arguments match
# $FAKE_FAIL unless they also match $FAKE_UNLESS, and otherwise writes its -o file.
args=" $* "
case "$args" in *" --version "*) echo "fake-g++ 1.0"; exit 0;; esac
if [ -n "$FAKE_FAIL" ] && printf '%s' "$args" | grep -q -e "$FAKE_FAIL"; then
  if [ -z "$FAKE_UNLESS" ] || ! printf '%s' "$args" | grep -q -e "$FAKE_UNLESS"; then
    echo "PacketMathFP16.h:740:49: error: expected initializer before '<' token" >&2
    exit 1
  fi
fi
out=""; prev=""
for a in "$@"; do [ "$prev" = "-o" ] && out="$a"; prev="$a"; done
printf 'fake binary for%s\\n' "$args" > "$out"
"""


@pytest.fixture
def fake_cxx(tmp_path, monkeypatch):
    """A fake compiler as CXX and an empty cache; returns the cache folder."""
    script = tmp_path / "fake-g++"
    script.write_text(FAKE_COMPILER)
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    cache = tmp_path / "cache"
    monkeypatch.setenv("CXX", str(script))
    monkeypatch.setenv("KERAS_SPIKING_OPS_CACHE", str(cache))
    monkeypatch.delenv("KERAS_SPIKING_OPS_LIBRARY", raising=False)
    monkeypatch.delenv(_op_library.ENV_TARGET, raising=False)
    monkeypatch.delenv("FAKE_FAIL", raising=False)
    monkeypatch.delenv("FAKE_UNLESS", raising=False)
    return cache


def _read_only(monkeypatch):
    """Makes lock files fail as on a read-only mount (the tests run as root, where chmod
    does not stop writes)."""

    def refuse(path):
        raise OSError(30, "Read-only file system", str(path))

    monkeypatch.setattr(_op_library, "_file_lock", refuse)


# --------------------------------------------------------------------------------------------
# Targets and the cache key
# --------------------------------------------------------------------------------------------
def test_candidate_targets_per_architecture_and_override(monkeypatch):
    monkeypatch.delenv(_op_library.ENV_TARGET, raising=False)
    monkeypatch.setattr(_op_library, "_machine", lambda: "x86_64")
    names = [t.name for t in _op_library.candidate_targets()]
    assert names == ["native", "native-no-fp16", "native-no-avx512", "generic"]
    assert _op_library.candidate_targets()[1].flags == ("-march=native", "-mno-avx512fp16")
    assert _op_library.candidate_targets()[-1].flags == ()
    spr = _op_library.candidate_targets(("-march=sapphirerapids",))
    assert spr[1].flags == ("-march=sapphirerapids", "-mno-avx512fp16")
    monkeypatch.setattr(_op_library, "_machine", lambda: "aarch64")
    assert [t.flags for t in _op_library.candidate_targets()] == [("-mcpu=native",), ()]
    monkeypatch.setenv(_op_library.ENV_TARGET, "neoverse-v1")
    assert [t.flags for t in _op_library.candidate_targets()] == [("-mcpu=neoverse-v1",)]
    monkeypatch.setattr(_op_library, "_machine", lambda: "x86_64")
    monkeypatch.setenv(_op_library.ENV_TARGET, "x86-64-v2")
    assert [t.flags for t in _op_library.candidate_targets()] == [("-march=x86-64-v2",)]
    monkeypatch.setenv(_op_library.ENV_TARGET, "generic")
    assert [t.flags for t in _op_library.candidate_targets()] == [()]
    monkeypatch.setenv(_op_library.ENV_TARGET, "x; rm -rf /")
    with pytest.raises(_op_library.OpLibraryError, match="KERAS_SPIKING_OPS_TARGET.*not a"):
        _op_library.candidate_targets()


def test_build_key_follows_sources_and_target_but_not_the_compiler(monkeypatch, tmp_path):
    for name in (*_op_library.SOURCES, *_op_library.HEADERS):
        (tmp_path / name).write_bytes((_op_library.source_dir() / name).read_bytes())
    monkeypatch.setattr(_op_library, "source_dir", lambda: tmp_path)
    monkeypatch.delenv(_op_library.ENV_TARGET, raising=False)
    before = _op_library.build_key()
    with open(tmp_path / "common.h", "a") as f:
        f.write("\n// changed\n")
    changed = _op_library.build_key()
    assert changed != before
    monkeypatch.setenv(_op_library.ENV_TARGET, "x86-64-v2")
    assert _op_library.build_key() != changed
    monkeypatch.delenv(_op_library.ENV_TARGET)
    # a cache built in one image is found in another that has no compiler
    monkeypatch.setenv("CXX", "no-such-compiler-xyz")
    assert _op_library.build_key() == changed


# --------------------------------------------------------------------------------------------
# Building (fake compiler)
# --------------------------------------------------------------------------------------------
def test_build_takes_the_first_target_the_headers_accept(fake_cxx, monkeypatch, capfd):
    # as on Sapphire Rapids with g++ 12: -march=native fails inside TF's Eigen headers
    monkeypatch.setenv("FAKE_FAIL", "-march=native")
    monkeypatch.setenv("FAKE_UNLESS", "-mno-avx512fp16")
    path, record, built = _op_library.locate()
    assert built and path.exists()
    assert record["target"] == "native-no-fp16"
    assert record["flags"] == ["-march=native", "-mno-avx512fp16"]
    assert b"neuron_scan-native-no-fp16.o" in path.read_bytes()  # linked the chosen objects
    err = capfd.readouterr().err
    assert "rejected by the compiler or TensorFlow's headers" in err
    assert "custom ops built for target native-no-fp16" in err
    # cached now: found again without compiling
    assert _op_library.locate() == (path, record, False)


def test_source_errors_fall_back_to_generic_once_then_explain(fake_cxx, monkeypatch, capfd):
    monkeypatch.setenv("FAKE_FAIL", "neuron_scan.cc")  # the probe passes, the sources do not
    with pytest.raises(_op_library.OpLibraryError) as info:
        _op_library.locate()
    message = str(info.value)
    assert "native (build), generic (build)" in message  # two builds, not four
    assert "expected initializer" in message and "build.log" in message
    folder = _op_library.library_path().parent
    assert "neuron_scan.cc" in (folder / "build.log").read_text()
    assert not (folder / _op_library.LIBRARY_NAME).exists()
    assert not _op_library.side_file(folder / _op_library.LIBRARY_NAME).exists()


@pytest.mark.parametrize("compiler", ["/bin/true", "no-such-compiler-xyz"])
def test_broken_compilers_raise_op_library_error_and_leave_nothing(fake_cxx, monkeypatch, compiler):
    monkeypatch.setenv("CXX", compiler)
    with pytest.raises(_op_library.OpLibraryError, match="wrote no object file|does not run"):
        _op_library.locate(verbose=False)
    leftovers = [p.name for p in fake_cxx.rglob("*") if p.suffix in (".so", ".json")]
    assert leftovers == []


# --------------------------------------------------------------------------------------------
# Checking what is cached
# --------------------------------------------------------------------------------------------
def test_verify_refuses_other_tf_missing_side_file_and_old_records(tmp_path):
    library = tmp_path / _op_library.LIBRARY_NAME
    library.write_bytes(b"library")
    side = _op_library.side_file(library)
    side.write_text(json.dumps({"tensorflow": "1.0.0"}))
    with pytest.raises(_op_library.OpLibraryError, match=r"built for TensorFlow 1\.0\.0.*rebuild"):
        _op_library.verify(library)
    side.write_text(json.dumps({"tensorflow": tf.__version__}))
    with pytest.raises(_op_library.OpLibraryError, match="no size and hash.*--rebuild"):
        _op_library.verify(library)
    side.unlink()
    with pytest.raises(_op_library.OpLibraryError, match="missing or unreadable"):
        _op_library.verify(library)


def test_truncated_library_is_rebuilt_where_the_cache_is_writable(fake_cxx, capfd):
    path, record, _ = _op_library.locate(verbose=False)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # an interrupted copy
    with pytest.raises(_op_library.OpLibraryError, match="corrupt or truncated.*not loaded"):
        _op_library.verify(path)
    new_path, new_record, built = _op_library.locate()
    assert built and new_path == path and _op_library.verify(path) == new_record
    assert "corrupt or truncated" in capfd.readouterr().err
    data = path.read_bytes()
    path.write_bytes(data[:-1] + b"X")  # same size, other bytes: the hash catches it
    with pytest.raises(_op_library.OpLibraryError, match="SHA-256"):
        _op_library.verify(path)


def test_read_only_cache_uses_a_good_library_and_refuses_a_corrupt_one(fake_cxx, monkeypatch):
    path, record, _ = _op_library.locate(verbose=False)
    _read_only(monkeypatch)
    assert _op_library.locate() == (path, record, False)  # no lock file needed
    path.write_bytes(path.read_bytes()[:10])
    with pytest.raises(_op_library.OpLibraryError, match="corrupt or truncated"):
        _op_library.locate()
    path.unlink()
    with pytest.raises(_op_library.OpLibraryError, match="cannot be written.*Read-only.*CACHE"):
        _op_library.locate()


def test_cache_folder_under_a_file_gives_op_library_error(fake_cxx, monkeypatch, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("KERAS_SPIKING_OPS_CACHE", str(blocker / "cache"))
    with pytest.raises(_op_library.OpLibraryError, match="a-file/cache.*cannot be written"):
        _op_library.locate()
    monkeypatch.delenv("KERAS_SPIKING_OPS_CACHE")
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(blocker))
    with pytest.raises(_op_library.OpLibraryError, match="cannot be written.*KERAS_SPIKING_OPS"):
        _op_library.locate()


def test_prebuilt_library_is_checked_and_never_rebuilt(fake_cxx, monkeypatch):
    path, _, _ = _op_library.locate(verbose=False)
    monkeypatch.setenv("KERAS_SPIKING_OPS_LIBRARY", str(path))
    _read_only(monkeypatch)
    assert _op_library.locate()[0] == path
    path.write_bytes(b"")
    with pytest.raises(_op_library.OpLibraryError, match="corrupt or truncated"):
        _op_library.locate()


def test_fresh_cache_builds_once_under_concurrent_starts(fake_cxx):
    """Two processes start on an empty cache at once: one compiles, the other waits."""
    code = textwrap.dedent(
        """
        from keras_spiking import _op_library
        path, record, built = _op_library.locate(verbose=False)
        print(path, built)
        """
    )
    env = {**os.environ, "FAKE_FAIL": "", "TF_CPP_MIN_LOG_LEVEL": "3"}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    results = [proc.communicate(timeout=300) for proc in procs]
    assert all(proc.returncode == 0 for proc in procs), results
    lines = [out.strip().splitlines()[-1].split() for out, _ in results]
    assert lines[0][0] == lines[1][0] and Path(lines[0][0]).exists()
    assert sorted(built for _, built in lines) == ["False", "True"], results


# --------------------------------------------------------------------------------------------
# A bad library never kills the process (child processes: a crash is a negative return code)
# --------------------------------------------------------------------------------------------
CHILD = textwrap.dedent(
    """
    import warnings
    import numpy as np
    import keras_spiking as ks
    from keras_spiking import ops

    x = np.random.default_rng(0).random((2, 5, 70)).astype("float32")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(3):
            out = ks.layers.LIF(70)(x)  # "auto": falls back
    fallbacks = [w for w in caught if "falls back" in str(w.message)]
    assert out.shape == (2, 5, 70), out.shape
    assert len(fallbacks) == 1, [str(w.message) for w in caught]
    print("WARNING:", str(fallbacks[0].message).splitlines()[0])
    try:
        ks.layers.LIF(70, use_custom_ops=True)(x)
    except ops.OpLibraryError as error:
        print("RAISED:", " ".join(str(error).split()))
    """
)


def _run_child(env_changes: dict) -> subprocess.CompletedProcess:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **env_changes}
    for name in ("KERAS_SPIKING_CUSTOM_OPS", "KERAS_SPIKING_OPS_LIBRARY"):
        if name not in env_changes:
            env.pop(name, None)
    return subprocess.run(
        [sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, timeout=300
    )


def _assert_fell_back(result, reason):
    assert result.returncode == 0, (
        f"child died (return code {result.returncode}; negative = signal)\n{result.stderr[-3000:]}"
    )
    assert "WARNING:" in result.stdout and "RAISED:" in result.stdout, result.stdout
    for line in result.stdout.splitlines():
        if line.startswith(("WARNING:", "RAISED:")):
            assert reason in line, (reason, line)


def test_truncated_library_falls_back_instead_of_crashing(tmp_path):
    """A half-copied library (SIGBUS when mapped before this check) is refused: 'auto' warns
    once and runs pure TF, True raises."""
    good, _, _ = _op_library.locate(verbose=False)  # built by conftest
    copy = tmp_path / _op_library.LIBRARY_NAME
    copy.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    _op_library.side_file(copy).write_bytes(_op_library.side_file(good).read_bytes())
    result = _run_child({"KERAS_SPIKING_OPS_LIBRARY": str(copy)})
    _assert_fell_back(result, "corrupt or truncated")


def test_unusable_cache_and_compiler_fall_back_with_one_warning(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    result = _run_child({"KERAS_SPIKING_OPS_CACHE": str(blocker / "cache")})
    _assert_fell_back(result, "cannot be written")
    result = _run_child({"KERAS_SPIKING_OPS_CACHE": str(tmp_path / "c"), "CXX": "/bin/true"})
    _assert_fell_back(result, "compiling failed for every target")
    assert not list((tmp_path / "c").rglob("*.json"))


def test_cli_reports_target_and_time():
    result = subprocess.run(
        [sys.executable, "-m", "keras_spiking.custom_ops", "build"],
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    assert result.returncode == 0, result.stderr
    assert "keras_spiking kernels: target " in result.stderr
    assert ("cached" in result.stderr) or ("built in" in result.stderr)
    assert Path(result.stdout.strip().splitlines()[-1]).exists()
    status = subprocess.run(
        [sys.executable, "-m", "keras_spiking.custom_ops", "status"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert status.stdout.startswith("keras_spiking kernels: loaded, target"), status


# --------------------------------------------------------------------------------------------
# Where the kernels run: never on a GPU/TPU (device list mocked: no accelerator here)
# --------------------------------------------------------------------------------------------
@pytest.fixture
def fake_gpu(monkeypatch):
    monkeypatch.setattr(ops.dispatch, "accelerator_devices", lambda: ["/device:GPU:0"])
    monkeypatch.setattr(ops.settings, "_global_setting", "auto")
    placement = {"device": ""}
    monkeypatch.setattr(ops.dispatch, "placement", lambda: placement["device"])
    return placement


def test_auto_uses_pure_tf_on_an_accelerator_and_true_raises(fake_gpu, monkeypatch):
    def no_kernels(*_, **__):
        raise AssertionError("the kernel library was asked for on a GPU")

    monkeypatch.setattr(ops.library, "load", no_kernels)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # choosing the GPU path is not a fallback: no warning
        assert ops.enabled("auto") is False
        x = tf.ones((2, 3, 4))
        assert layers.LIF(2)(x).shape == (2, 3, 2)
    with pytest.raises(ops.OpLibraryError, match="runs on /device:GPU:0.*CPU only"):
        ops.enabled(True)
    with pytest.raises(ops.OpLibraryError, match="GPU"):
        layers.LIF(2, use_custom_ops=True)(x)
    fake_gpu["device"] = "/job:localhost/replica:0/task:0/device:GPU:1"
    with pytest.raises(ops.OpLibraryError, match="DEVICE:GPU:1"):
        ops.enabled(True)


def test_a_cpu_scope_on_a_gpu_machine_keeps_the_kernels(fake_gpu, rng):
    fake_gpu["device"] = "/job:localhost/replica:0/task:0/device:CPU:0"
    assert ops.enabled(True) is True
    assert ops.enabled("auto") is True
    x = (rng.random((2, 4, 8)) < 0.3).astype("float32")
    np.testing.assert_allclose(
        layers.LIF(3, use_custom_ops=True, kernel_initializer="ones")(x),
        layers.LIF(3, use_custom_ops=False, kernel_initializer="ones")(x),
    )


def test_placement_reads_the_device_scope():
    with tf.device("/CPU:0"):
        assert "CPU" in ops.dispatch.placement().upper()
    assert ops.accelerator_in_use() is None  # this machine has no GPU/TPU
