"""The density sample and the cutoffs that choose between the event kernel and a dense matmul.

``ops.input_density`` estimates the fraction of nonzero inputs from at most
``DENSITY_SAMPLE_ROWS`` rows of the input flattened to ``[rows, n]``, taken with a stride of
``max(rows // DENSITY_SAMPLE_ROWS, 1)`` from row 0. The inputs below are built so that the rows
the sample takes differ from the rows it skips: the results then show which rows were read,
and are exact (counts of nonzeros are small integers, exact in float32, and one correctly
rounded float32 division gives the same number in TensorFlow and NumPy).

``ops.density_cutoff`` maps the number of outputs of a layer to the density below which the
event kernel is used.
"""

import numpy as np
import pytest
import tensorflow as tf

from keras_spiking import ops
from keras_spiking.ops import dispatch

SAMPLE = dispatch.DENSITY_SAMPLE_ROWS


def _expected(nonzero: int, size: int) -> np.float32:
    return np.float32(nonzero) / np.float32(size)


def _density(x) -> float:
    return ops.input_density(tf.constant(x)).numpy()


@pytest.mark.parametrize(
    "shape",
    [(1, 7), (SAMPLE - 1, 5), (SAMPLE, 5), (3 * SAMPLE + 2, 4), (2, 3, 5), (SAMPLE, 3, 2)],
)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_all_zero_and_all_one(shape, dtype):
    assert _density(np.zeros(shape, dtype)) == 0.0
    assert _density(np.ones(shape, dtype)) == 1.0


@pytest.mark.parametrize("shape", [(0, 5), (4, 0), (0, 0), (0, 3, 5), (2, 0, 5), (2, 3, 0)])
def test_empty_input_is_zero(shape):
    assert _density(np.zeros(shape, "float32")) == 0.0


def test_fewer_rows_than_the_sample_reads_every_row():
    rows, n = SAMPLE // 2 + 3, 2 * SAMPLE
    x = np.zeros((rows, n), "float32")
    for r in range(rows):
        x[r, : r + 1] = 1.0  # row r has r + 1 nonzeros: every row counts differently
    want = _expected(rows * (rows + 1) // 2, rows * n)
    assert _density(x) == want


@pytest.mark.parametrize("stride", [2, 3, 5])
def test_rows_are_taken_with_a_stride(stride):
    # the sampled rows (multiples of the stride) hold 1 nonzero in 4, the others are all ones
    rows, n = stride * SAMPLE, 8
    x = np.ones((rows, n), "float32")
    x[::stride] = 0.0
    x[::stride, ::4] = 1.0
    assert _density(x) == _expected(2, n)
    assert np.count_nonzero(x) / x.size > 0.5  # the true density is far from the estimate


def test_the_sample_stops_after_its_rows():
    # rows = 2 * SAMPLE + 5: stride 2, so the range from row 0 holds SAMPLE + 3 rows and only
    # the first SAMPLE of them, rows 0, 2, ..., 2 * (SAMPLE - 1), are read
    rows, n = 2 * SAMPLE + 5, 6
    x = np.zeros((rows, n), "float32")
    x[2 * SAMPLE :] = 1.0  # rows 2 * SAMPLE, 2 * SAMPLE + 2, 2 * SAMPLE + 4 are past the sample
    x[0:2, 0] = 1.0  # row 0 (sampled, 1 nonzero) and row 1 (skipped)
    assert _density(x) == _expected(1, SAMPLE * n)


def test_rank_3_rows_are_batch_then_time():
    # [batch, T, n] flattens to rows b * T + t; with batch = SAMPLE and T = 3 the stride is 3,
    # so exactly the t = 0 rows are read
    batch, steps, n = SAMPLE, 3, 4
    x = np.zeros((batch, steps, n), "float32")
    x[:, 0] = 1.0
    assert _density(x) == 1.0
    x = np.ones((batch, steps, n), "float32")
    x[:, 0, 1:] = 0.0
    assert _density(x) == _expected(1, n)


def test_graded_negative_and_signed_zero_values():
    # any value other than zero counts, -0.0 counts as zero (it equals 0)
    x = np.array([[0.5, -2.0, -0.0, 0.0], [np.nan, 0.0, np.inf, -0.0]], "float32")
    assert _density(x) == _expected(4, 8)


def test_traced_with_unknown_shape():
    fn = tf.function(
        ops.input_density, input_signature=[tf.TensorSpec([None, None, None], tf.float32)]
    )
    x = np.zeros((SAMPLE, 3, 4), "float32")
    x[:, 0] = 1.0
    assert fn(tf.constant(x)).numpy() == 1.0
    assert fn(tf.zeros([0, 3, 4])).numpy() == 0.0


# --------------------------------------------------------------------------------------------
# density_cutoff
# --------------------------------------------------------------------------------------------
def test_cutoff_for_wide_or_unknown_outputs():
    assert ops.density_cutoff(None) == ops.DENSITY_CUTOFF
    assert ops.density_cutoff(ops.NARROW_OUTPUTS) == ops.DENSITY_CUTOFF
    assert ops.density_cutoff(ops.NARROW_OUTPUTS + 1) == ops.DENSITY_CUTOFF
    assert ops.density_cutoff(100 * ops.NARROW_OUTPUTS) == ops.DENSITY_CUTOFF


def test_cutoff_for_narrow_outputs():
    assert ops.density_cutoff(ops.MIN_EVENT_OUTPUTS) == ops.NARROW_DENSITY_CUTOFF
    assert ops.density_cutoff(ops.MIN_EVENT_OUTPUTS + 1) == ops.NARROW_DENSITY_CUTOFF
    assert ops.density_cutoff(ops.NARROW_OUTPUTS - 1) == ops.NARROW_DENSITY_CUTOFF


def test_cutoff_below_the_fewest_outputs_is_zero():
    assert ops.density_cutoff(ops.MIN_EVENT_OUTPUTS - 1) == 0.0
    assert ops.density_cutoff(1) == 0.0
    assert ops.density_cutoff(0) == 0.0


def test_cutoff_never_falls_as_outputs_grow():
    assert 0 < ops.MIN_EVENT_OUTPUTS < ops.NARROW_OUTPUTS
    assert 0.0 < ops.NARROW_DENSITY_CUTOFF < ops.DENSITY_CUTOFF
    cutoffs = [ops.density_cutoff(n) for n in range(2 * ops.NARROW_OUTPUTS)]
    assert cutoffs == sorted(cutoffs)
    assert set(cutoffs) == {0.0, ops.NARROW_DENSITY_CUTOFF, ops.DENSITY_CUTOFF}
