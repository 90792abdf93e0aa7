"""C++ sources of keras_spiking's TensorFlow custom ops (installed as ``keras_spiking.custom_ops``).

``sparse_spike_matmul.cc`` holds the event-driven synaptic propagation, ``event_conv.cc`` the
event-driven convolution of spike maps, ``neuron_scan.cc`` the fused LIF / CubaLIF time scans,
``common.h`` the surrogate derivatives and thread-pool helper.
:mod:`keras_spiking.ops` compiles them on first use and loads the library lazily;
``python -m keras_spiking.custom_ops build`` compiles them ahead of time.
"""
