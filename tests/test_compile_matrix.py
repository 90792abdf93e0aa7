"""The kernels compile for every CPU family users run, whatever CPU this test runs on.

A build with ``-march=native`` only proves the kernels compile for *this* CPU: TF 2.21's Eigen
headers, for one, break with g++ 12 under AVX-512-FP16 (Sapphire Rapids), which the AMD
development machines never showed. So this test compiles the kernel sources (compile only, no
link, all three in one translation unit to parse TensorFlow's headers once) for a matrix of
targets, standing in for ``-march=native`` on each family, through the same target fallback
the real build uses (``_op_library.candidate_targets``): each family must get a tuned build
(not the generic fallback). Targets run in parallel, one compiler per core.
"""

import os
import platform
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from keras_spiking import _op_library

# Zen 4's instruction set for compilers that predate -march=znver4 (g++ 12.2): Zen 3 plus its
# AVX-512 subsets, BF16 and the vector crypto extensions
ZEN4 = (
    "-march=znver3",
    *(f"-mavx512{x}" for x in ("f", "cd", "bw", "dq", "vl", "ifma", "vbmi", "vbmi2", "vnni")),
    *(f"-mavx512{x}" for x in ("bitalg", "vpopcntdq", "bf16")),
    "-mgfni",
    "-mvaes",
    "-mvpclmulqdq",
)
X86_FAMILIES = {
    "x86-64-v2": ("-march=x86-64-v2",),
    "x86-64-v3 (Haswell+, Zen 1-3 baseline)": ("-march=x86-64-v3",),
    "skylake-avx512 (Xeon 1st/2nd gen)": ("-march=skylake-avx512",),
    "icelake-server (Xeon 3rd gen)": ("-march=icelake-server",),
    "sapphirerapids (Xeon 4th/5th gen, AVX-512-FP16, AMX)": ("-march=sapphirerapids",),
    "znver3 (EPYC Milan)": ("-march=znver3",),
    "znver4 (EPYC Genoa)": ("-march=znver4",),
}
ARM_FAMILIES = {
    "armv8.2-a": ("-march=armv8.2-a",),
    "neoverse-n1 (Graviton 2)": ("-mcpu=neoverse-n1",),
    "neoverse-v1 (Graviton 3)": ("-mcpu=neoverse-v1",),
}


def _compiler_knows(flags: tuple[str, ...]) -> bool:
    result = subprocess.run(
        [*_op_library._compiler(), *flags, "-x", "c++", "-E", "-", "-o", os.devnull],
        input="",
        capture_output=True,
        text=True,
        timeout=60,
    )
    return result.returncode == 0


def _families() -> dict[str, tuple[str, ...]]:
    machine = platform.machine().lower()
    if machine in ("aarch64", "arm64"):
        return ARM_FAMILIES
    families = dict(X86_FAMILIES)
    if not _compiler_knows(families["znver4 (EPYC Genoa)"]):
        families["znver4 (EPYC Genoa)"] = ZEN4
    return families


def _compile_for(name: str, native: tuple[str, ...], work: Path) -> tuple[str, str, float, str]:
    """Tries the real build's candidates for a CPU whose -march=native is ``native``;
    returns (family, target chosen or '', seconds, output of the last failure)."""
    unity = work / "unity.cc"
    unity.write_text(
        "".join(f'#include "{_op_library.source_dir() / s}"\n' for s in _op_library.SOURCES)
    )
    start = time.perf_counter()
    output = ""
    for target in _op_library.candidate_targets(native):
        if target.name == "generic":
            break  # the generic fallback always compiles; the family must get a tuned build
        obj = work / f"{target.name}.o"
        code, output = _op_library.run_compilers([_op_library.compile_command(unity, obj, target)])
        if code == 0 and obj.exists():
            return name, target.describe(), time.perf_counter() - start, ""
    return name, "", time.perf_counter() - start, output


def test_kernels_compile_for_every_cpu_family(capsys):
    families = _families()
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as root:
        folders = {}
        for i, name in enumerate(families):
            folders[name] = Path(root) / str(i)
            folders[name].mkdir()
        with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
            results = list(
                pool.map(
                    lambda item: _compile_for(item[0], item[1], folders[item[0]]), families.items()
                )
            )
    wall = time.perf_counter() - start
    with capsys.disabled():
        print(f"\ncompile matrix ({len(results)} targets, {os.cpu_count()} cores, {wall:.0f} s):")
        for name, target, seconds, _ in results:
            print(f"  {name:<55} {target or 'FAILED':<45} {seconds:5.0f} s")
    failed = [
        (name, _op_library.error_summary(out)) for name, target, _, out in results if not target
    ]
    assert not failed, "the kernels do not compile for: " + "; ".join(
        f"{name}: {error}" for name, error in failed
    )
