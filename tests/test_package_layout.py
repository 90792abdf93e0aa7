"""The package's shape: small modules, and dependencies that point one way.

* No module of ``keras_spiking`` is longer than ``MAX_LINES`` unless its docstring says why
  ("Longer than 600 lines because ...").
* The kernel wrappers (``keras_spiking.ops``) never import the algorithms they accelerate:
  they may import the op library, the argument checks, the surrogate registry and each other.
"""

from __future__ import annotations

import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "keras_spiking"
MAX_LINES = 600
OPS_MAY_IMPORT = {
    "keras_spiking._deprecation",
    "keras_spiking._op_library",
    "keras_spiking._validation",
    "keras_spiking.surrogates",
}


def _modules():
    return sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_module_is_short_or_says_why(path):
    text = path.read_text()
    lines = text.count("\n")
    docstring = ast.get_docstring(ast.parse(text)) or ""
    assert lines <= MAX_LINES or "Longer than 600 lines because" in docstring, (
        f"{path.name}: {lines} lines and no reason in its docstring"
    )


def _imports(path: pathlib.Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {name for name in found if name.startswith("keras_spiking")}


@pytest.mark.parametrize("path", sorted((PACKAGE / "ops").glob("*.py")), ids=lambda p: p.name)
def test_kernel_wrappers_never_import_algorithms(path):
    for name in _imports(path):
        allowed = (
            name == "keras_spiking"
            or name.startswith("keras_spiking.ops")
            or any(name == ok or name.startswith(ok + ".") for ok in OPS_MAY_IMPORT)
        )
        assert allowed, f"{path.name} imports {name}"
