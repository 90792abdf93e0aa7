"""Two revisions of keras_spiking timed in one run: does a change keep the speed?

Runs each revision's own ``benchmarks/train_step.py`` (keras_spiking rows only: the kernels,
pure TF and the matmul floor) and ``benchmarks/eventprop_kernels.py`` in separate processes,
alternating old and new within each round (the order flips every round), so that the load of
a shared machine hits both alike. Prints every round's medians and, per row, the median over
rounds of new / old; a ratio within the rounds' spread is noise.

The old revision is a checkout next to this one, e.g.::

    git worktree add /tmp/old_release e1520d9
    .venv/bin/python benchmarks/compare_revisions.py --old /tmp/old_release --rounds 3

Both run in this virtual environment with ``PYTHONPATH`` set to their tree; the script links
``export/`` and ``custom_ops/`` into the old tree's package (as the installed layout has them),
so the old revision imports its own sources (its kernels are compiled and cached separately).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import re
import statistics
import subprocess
import sys
import tempfile

HERE = pathlib.Path(__file__).resolve().parent.parent


def _cpu_model() -> str:
    for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown CPU"


def _prepare(tree: pathlib.Path) -> None:
    for name in ("export", "custom_ops"):
        link = tree / "keras_spiking" / name
        if not link.exists():
            link.symlink_to(tree / name, target_is_directory=True)


def _run(tree: pathlib.Path, args: list[str]) -> str:
    env = dict(os.environ, PYTHONPATH=str(tree), TF_CPP_MIN_LOG_LEVEL="2")
    done = subprocess.run(
        [sys.executable, *args], cwd=tree, env=env, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise SystemExit(f"{tree}: {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    return done.stdout


def _train_step(tree: pathlib.Path, repeats: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as folder:
        path = pathlib.Path(folder) / "out.json"
        _run(
            tree,
            [
                "benchmarks/train_step.py",
                "--skip",
                "fit,nojit,snntorch,norse",
                "--repeats",
                str(repeats),
                "--json",
                str(path),
            ],
        )
        results = json.loads(path.read_text())["results"]
    return {f"train_step: {name}": float(stats["median_ms"]) for name, stats in results.items()}


def _eventprop(tree: pathlib.Path, repeats: int) -> dict[str, float]:
    out = _run(tree, ["benchmarks/eventprop_kernels.py", "--repeats", str(repeats)])
    found = {}
    for line in out.splitlines():
        match = re.match(r"^(\S.*?)\s{2,}([\d.]+)\s+([\d.]+)\s+[\d.]+x", line)
        if match:
            found[f"eventprop kernels: {match.group(1)}"] = float(match.group(2))
            found[f"eventprop TF twin: {match.group(1)}"] = float(match.group(3))
    return found


def main(argv: list[str] | None = None) -> int:
    """Runs the rounds and prints the table; returns 0."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old", required=True, type=pathlib.Path, help="old revision's tree")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=20, help="timed steps per row and run")
    args = parser.parse_args(argv)
    old, new = args.old.resolve(), HERE
    _prepare(old)
    print(f"CPU: {_cpu_model()}, {os.cpu_count()} cores; old {old}, new {new}", flush=True)
    samples: dict[str, dict[str, list[float]]] = {"old": {}, "new": {}}
    for round_ in range(args.rounds):
        order = [("old", old), ("new", new)]
        if round_ % 2:
            order.reverse()
        for label, tree in order:
            measured = {**_train_step(tree, args.repeats), **_eventprop(tree, args.repeats)}
            for row, ms in measured.items():
                samples[label].setdefault(row, []).append(ms)
            print(
                f"round {round_ + 1} {label}: "
                + ", ".join(f"{row} {ms:.2f}" for row, ms in measured.items()),
                flush=True,
            )
    # the floor (two plain matmuls) does not depend on the package: its new/old ratio in a
    # round measures how the machine's speed moved between the two runs, so each row's ratio
    # divided by it is the change with that drift taken out
    floor = next((row for row in samples["old"] if "floor" in row), None)
    drift = [n / o for n, o in zip(samples["new"][floor], samples["old"][floor])] if floor else []
    print(
        f"\n{'row':<52} {'old ms':>8} {'new ms':>8} {'new/old':>8} {'/floor':>7}"
        "  (medians of rounds; per-round new/old)"
    )
    for row, old_ms in samples["old"].items():
        new_ms = samples["new"].get(row)
        if not new_ms:
            continue
        a, b = statistics.median(old_ms), statistics.median(new_ms)
        ratios = [n / o for n, o in zip(new_ms, old_ms)]
        relative = statistics.median(r / d for r, d in zip(ratios, drift)) if drift else 1.0
        print(
            f"{row:<52} {a:>8.2f} {b:>8.2f} {b / a:>8.3f} {relative:>7.3f}  "
            f"({', '.join(f'{r:.2f}' for r in ratios)})"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
