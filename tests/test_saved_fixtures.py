"""``.keras`` files saved by an earlier release still load and compute what they did.

The files and their recorded outputs in tests/data were written by the release named in their
names (``tests/data/save_release_fixtures.py``), before the sequence layers moved onto one
base and the stored states of ``stateful`` layers stopped being weights.
"""

from __future__ import annotations

import pathlib

import keras
import numpy as np
import pytest

import keras_spiking  # noqa: F401  (registers the layers)

DATA = pathlib.Path(__file__).parent / "data"
RELEASE = "e1520d9"


@pytest.fixture(scope="module")
def recorded():
    return np.load(DATA / f"release_{RELEASE}_outputs.npz")


@pytest.mark.parametrize("name", ["dense", "src", "eventprop", "stateful"])
def test_old_keras_file_loads_and_gives_the_recorded_output(name, recorded):
    model = keras.saving.load_model(DATA / f"release_{RELEASE}_{name}.keras")
    # float32 scans, the same operations in the same order: rounding-level differences only
    np.testing.assert_allclose(
        model(recorded[f"{name}_input"]), recorded[f"{name}_output"], rtol=1e-5, atol=1e-6
    )


def test_old_stateful_file_restores_its_stored_states(recorded):
    """The old file held the states as weights: they come back as the layer's stored states."""
    model = keras.saving.load_model(DATA / f"release_{RELEASE}_stateful.keras")
    lif = model.layers[0]
    assert lif.stateful and any(np.any(s.numpy() != 0) for s in lif.states)
    assert len(model.get_weights()) == 2  # two kernels; the states are no longer weights
