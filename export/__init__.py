"""Exporters of keras_spiking models (installed as ``keras_spiking.export``).

The TFLite (float, int8, TFLite Micro, Edge TPU) and NIR exporters are not written yet. What
works today: ``model.export(path)`` writes a SavedModel that needs only TensorFlow to run (no
``keras_spiking`` import and no custom ops), and ``model.save("m.keras")`` saves for reloading.
"""

__all__: list[str] = []
