"""The C++ kernels' list of surrogates agrees with the Python registry.

The surrogate shapes are defined in Python (``keras_spiking/surrogates.py``, a registry of
names), offered to the kernels by name (``keras_spiking.ops.KERNEL_SURROGATES``), and mapped
from the op's ``surrogate`` string attribute to a C++ enum in ``custom_ops/common.h``
(``ParseSurrogate``). C++ cannot read the Python registry, so the names are listed there
again; this test reads that list from the source and compares.

That each C++ derivative equals its Python twin is not repeated here: ``tests/test_ops.py``
runs the fused LIF and CubaLIF backward passes against the TF scans' for every name of
``ops.KERNEL_SURROGATES`` (``test_lif_scan_equals_twin``, ``test_cuba_lif_scan_equals_twin``,
float64, both resets, reset attached and detached), so a derivative that differs, or a name
the kernels do not know, fails there.
"""

import importlib.resources
import re

from keras_spiking import ops, surrogates


def _common_h() -> str:
    return (importlib.resources.files("keras_spiking.custom_ops") / "common.h").read_text()


def _body(source: str, start: str) -> str:
    """The text from ``start`` to the brace that closes the block it opens."""
    begin = source.index(start)
    depth = 0
    for at in range(source.index("{", begin), len(source)):
        depth += {"{": 1, "}": -1}.get(source[at], 0)
        if depth == 0:
            return source[begin : at + 1]
    raise AssertionError(f"unbalanced braces after {start!r}")


def _enum_members(source: str) -> list[str]:
    body = _body(source, "enum class Surrogate")
    inner = body[body.index("{") + 1 : -1]
    inner = re.sub(r"//[^\n]*", "", inner)
    return [m.strip() for m in inner.split(",") if m.strip()]


def _parsed_names(source: str) -> dict[str, str]:
    """``{attribute string: enum member}`` from the if-chain of ``ParseSurrogate``."""
    body = _body(source, "inline bool ParseSurrogate")
    pairs = re.findall(r'name == "([^"]+)"\)\s*\{\s*\*out = Surrogate::(\w+);', body)
    names = [name for name, _ in pairs]
    assert len(names) == len(set(names)), f"a name is mapped twice: {names}"
    assert len(pairs) == body.count("name =="), "a branch of ParseSurrogate was not parsed"
    return dict(pairs)


def test_the_parser_reads_the_header():
    source = _common_h()
    parsed = _parsed_names(source)
    assert parsed, "no surrogate names found in ParseSurrogate"
    # every enum member is reachable from exactly one name, and no name maps elsewhere
    assert sorted(parsed.values()) == sorted(_enum_members(source))


def test_kernel_names_equal_the_python_list():
    names = set(_parsed_names(_common_h()))
    assert names == set(ops.KERNEL_SURROGATES)
    assert len(ops.KERNEL_SURROGATES) == len(set(ops.KERNEL_SURROGATES))


def test_kernel_names_are_registered_surrogates():
    registered = set(surrogates.available())
    for name in _parsed_names(_common_h()):
        assert name in registered, name
        assert surrogates.get(name).name == name
