"""Writes the `.keras` files that tests/test_saved_fixtures.py loads (run once per release).

Saved by the release named in the file names; the test loads them with the current code and
checks the outputs recorded here, so a refactor that breaks loading old files fails.

    .venv/bin/python tests/data/save_release_fixtures.py
"""

from __future__ import annotations

import pathlib

import keras
import numpy as np

import keras_spiking as ks

HERE = pathlib.Path(__file__).parent
RELEASE = "e1520d9"


def _models() -> dict[str, keras.Model]:
    keras.utils.set_random_seed(7)
    dense = keras.Sequential(
        [
            keras.Input((12, 6)),
            ks.layers.LIF(8, recurrent=True, train_time_constants=True, surrogate="arctan"),
            ks.layers.CubaLIF(7, use_bias=True, reset="zero"),
            ks.layers.LI(3, tau_mem=0.01),
        ]
    )
    src = keras.Sequential(
        [
            keras.Input((12, 6)),
            ks.layers.SRC(5, bias_initializer=keras.initializers.Constant(-4.5)),
            ks.layers.LI(3),
        ]
    )
    eventprop = keras.Sequential(
        [
            keras.Input((12, 6)),
            ks.layers.CubaLIF(
                9,
                reset="zero",
                gradient=ks.eventprop.EventProp(max_spikes=12),
                kernel_initializer=keras.initializers.RandomNormal(0.5, 0.3, seed=1),
            ),
            ks.layers.EventPropLI(3, steps=12, input_format="sequence"),
        ]
    )
    stateful = keras.Sequential(
        [keras.Input((4, 6), batch_size=2), ks.layers.LIF(5, stateful=True), ks.layers.LI(3)]
    )
    return {"dense": dense, "src": src, "eventprop": eventprop, "stateful": stateful}


def main() -> None:
    rng = np.random.default_rng(3)
    inputs = {
        "dense": (rng.random((2, 12, 6)) < 0.4).astype("float32") * 2.0,
        "src": (rng.random((2, 12, 6)) < 0.4).astype("float32"),
        "eventprop": (rng.random((2, 12, 6)) < 0.4).astype("float32"),
        "stateful": (rng.random((2, 4, 6)) < 0.5).astype("float32") * 2.0,
    }
    arrays = {}
    for name, model in _models().items():
        # two calls on the stateful model: the file then holds non-zero stored states
        if name == "stateful":
            model(inputs[name])
        model.save(HERE / f"release_{RELEASE}_{name}.keras")
        arrays[f"{name}_input"] = inputs[name]
        arrays[f"{name}_output"] = keras.ops.convert_to_numpy(model(inputs[name]))
    np.savez(HERE / f"release_{RELEASE}_outputs.npz", **arrays)


if __name__ == "__main__":
    main()
