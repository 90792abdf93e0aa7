"""Every Python code block of the README, of docs/*.md and of the package's docstrings runs.

Markdown blocks (```` ```python ````) run as written, each in a fresh namespace that holds
``keras``, ``np``, ``tf`` and ``ks`` (the imports the docs state they assume), in a temporary
working directory (they save models). An HTML comment on the line before a block steers it:

* ``<!-- doc-test: skip: REASON -->``: not run (only for placeholders of the user's own code);
* ``<!-- doc-test: check EXPRESSION -->``: after the block runs, ``EXPRESSION`` must be true
  in its namespace (e.g. ``accuracy > 0.8`` for the EventProp snippets' claim).

Docstring examples (an indented block after a line ending in ``::``, or ``>>>`` lines) run
in a namespace that also holds the names they use for "your" objects: ``model`` (a small
LIF -> LI model named like the examples), ``x``, ``x_train``, ``y_train``, ``x_val``, ``loss``,
``u`` and ``theta``.

No block may raise a keras_spiking warning (a silent layer, spikes given to a membrane loss,
a unit mistake): a documented example that does would teach the mistake.
"""

from __future__ import annotations

import ast
import re
import textwrap
import warnings
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_spiking as ks

ROOT = Path(__file__).resolve().parents[1]
_DIRECTIVE = re.compile(r"<!--\s*doc-test:\s*(skip|check)\s*:?\s*(.*?)\s*-->")


def _markdown_blocks() -> list[tuple[str, str, str | None, str | None]]:
    """(id, code, directive, argument) of every ```python block of README.md and docs/."""
    blocks = []
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        lines = path.read_text().splitlines()
        i = 0
        while i < len(lines):
            if lines[i].strip() == "```python":
                start = i
                j = i + 1
                while lines[j].strip() != "```":
                    j += 1
                code = "\n".join(lines[i + 1 : j])
                before = start - 1
                while before >= 0 and not lines[before].strip():
                    before -= 1
                match = _DIRECTIVE.search(lines[before]) if before >= 0 else None
                directive = (match.group(1), match.group(2)) if match else (None, None)
                blocks.append((f"{path.relative_to(ROOT)}:{start + 1}", code, *directive))
                i = j
            i += 1
    return blocks


def _docstring_examples() -> list[tuple[str, str]]:
    """(id, code) of every ``::`` block and ``>>>`` example in the package's docstrings."""
    examples = []
    files = sorted((ROOT / "keras_spiking").rglob("*.py")) + sorted((ROOT / "export").rglob("*.py"))
    for path in files:
        tree = ast.parse(path.read_text())
        nodes = [tree] + [
            n
            for n in ast.walk(tree)
            if isinstance(n, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
        ]
        for node in nodes:
            doc = ast.get_docstring(node, clean=True)
            if not doc:
                continue
            where = f"{path.relative_to(ROOT)}:{getattr(node, 'lineno', 1)}"
            lines = doc.splitlines()
            prompts = [line.strip()[4:] for line in lines if line.strip().startswith(">>> ")]
            if prompts:
                code = "\n".join(re.sub(r"\s*# doctest:.*$", "", p) for p in prompts)
                examples.append((f"{where} (>>>)", code))
            for k, line in enumerate(lines):
                if not line.rstrip().endswith("::") or line.strip().startswith(".. "):
                    continue
                indent = len(line) - len(line.lstrip())
                body = []
                for following in lines[k + 1 :]:
                    if following.strip() and len(following) - len(following.lstrip()) <= indent:
                        break
                    body.append(following)
                code = textwrap.dedent("\n".join(body)).strip()
                if code:
                    examples.append((f"{where} (::, line {k + 1} of the docstring)", code))
    return examples


MARKDOWN = _markdown_blocks()
DOCSTRINGS = _docstring_examples()


def _base_namespace() -> dict:
    return {"keras": keras, "np": np, "tf": tf, "ks": ks, "keras_spiking": ks}


def _example_namespace() -> dict:
    """The "your model, your data" names the docstring examples use."""
    rng = np.random.default_rng(0)
    x_train = (rng.uniform(size=(32, 100, 40)) < 0.2).astype("float32")
    model = keras.Sequential(
        [
            keras.Input((100, 40)),
            ks.layers.LIF(
                64, name="hidden", kernel_initializer=keras.initializers.RandomNormal(0.1, 0.2)
            ),
            ks.layers.LI(3),
        ]
    )
    loss = ks.losses.MaxMembraneCrossEntropy()
    model.compile("adam", loss)
    return {
        **_base_namespace(),
        "model": model,
        "loss": loss,
        "x_train": x_train,
        "y_train": rng.integers(0, 3, 32),
        "x_val": x_train,
        "x": x_train[:4],
        "u": tf.random.normal([8], seed=1),
        "theta": 1.0,
    }


def _run(code: str, namespace: dict, where: str) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        exec(compile(code, where, "exec"), namespace)  # noqa: S102 - our own documentation
    ours = [
        w
        for w in caught
        if issubclass(w.category, (ks.SilentLayerWarning, ks.SpikesAsMembraneWarning))
        or "keras_spiking" in str(w.filename)
    ]
    assert not ours, f"{where} raised: {[str(w.message) for w in ours]}"


def test_the_docs_have_code_to_run():
    """The collectors found the blocks (a broken parser must not make the tests vanish)."""
    assert sum(block[0].startswith("README.md") for block in MARKDOWN) >= 2
    assert sum(block[2] == "check" for block in MARKDOWN) >= 3  # the EventProp snippets
    assert len(DOCSTRINGS) >= 6


@pytest.mark.parametrize(
    "where, code, directive, argument", MARKDOWN, ids=[block[0] for block in MARKDOWN]
)
def test_markdown_block_runs(where, code, directive, argument, tmp_path, monkeypatch):
    if directive == "skip":
        assert argument, f"{where}: a skipped block needs a reason"
        pytest.skip(f"{where}: {argument}")
    monkeypatch.chdir(tmp_path)
    namespace = _base_namespace()
    _run(code, namespace, where)
    if directive == "check":
        assert eval(argument, namespace), f"{where}: {argument} is false"  # noqa: S307


@pytest.mark.parametrize("where, code", DOCSTRINGS, ids=[example[0] for example in DOCSTRINGS])
def test_docstring_example_runs(where, code, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _run(code, _example_namespace(), where)
