"""Names renamed by the sequence-base refactor still work for one release, with a warning."""

from __future__ import annotations

import importlib

import pytest

from keras_spiking import dynamics, eventprop, ops, spiking_recurrent_cell, src_scan, synapse
from keras_spiking import layers as ks_layers

OPS_ALIASES = {
    "lif_scan": ops.fused_lif_scan,
    "lif_scan_with_input": ops.fused_lif_scan_with_input,
    "cuba_lif_scan": ops.fused_cuba_lif_scan,
    "li_scan": ops.fused_li_scan,
    "lif_step": ops.sparse_lif_step,
    "sparse_spike_matmul_reference": synapse.dense_current,
    "lif_step_reference": dynamics.dense_lif_step,
    "eventprop_spiking_forward_reference": eventprop.spiking_forward_reference,
    "eventprop_readout_forward_reference": eventprop.readout_forward_reference,
}

SRC_ALIASES = {
    "SRCState": spiking_recurrent_cell.SRCState,
    "src_step": spiking_recurrent_cell.src_step,
    "SpikingRecurrentCell": spiking_recurrent_cell.SpikingRecurrentCell,
    "MaxValue": spiking_recurrent_cell.MaxValue,
    "src_sequence": src_scan.src_sequence,
    "src_scan": src_scan.src_scan,
    "SRC": ks_layers.SRC,
}


@pytest.mark.parametrize("old, new", OPS_ALIASES.items(), ids=list(OPS_ALIASES))
def test_old_ops_names_warn_and_give_the_new_object(old, new):
    with pytest.warns(DeprecationWarning, match=f"keras_spiking.ops.{old} is deprecated.*use"):
        assert getattr(ops, old) is new


@pytest.mark.parametrize("old, new", SRC_ALIASES.items(), ids=list(SRC_ALIASES))
def test_keras_spiking_src_names_warn_and_give_the_new_object(old, new):
    src = importlib.import_module("keras_spiking.src")
    with pytest.warns(DeprecationWarning, match="keras_spiking.src is deprecated"):
        assert getattr(src, old) is new


def test_unknown_names_still_raise_attribute_error():
    with pytest.raises(AttributeError, match="no_such_name"):
        ops.no_such_name  # noqa: B018
    with pytest.raises(AttributeError, match="no_such_name"):
        importlib.import_module("keras_spiking.src").no_such_name  # noqa: B018
