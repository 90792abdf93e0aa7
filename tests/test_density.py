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
    # the sampled rows (row i of the sample is i * stride + (i * stride) // SAMPLE: one per
    # block of `stride` rows, at a phase sweeping the block) hold 1 nonzero in 4, the others
    # are all ones
    rows, n = stride * SAMPLE, 8
    index = np.arange(SAMPLE)
    sampled = index * stride + (index * stride) // SAMPLE
    x = np.ones((rows, n), "float32")
    x[sampled] = 0.0
    x[sampled, ::4] = 1.0
    assert _density(x) == _expected(2, n)
    assert np.count_nonzero(x) / x.size > 0.5  # the true density is far from the estimate


def test_the_sample_stops_after_its_rows():
    # rows = 2 * SAMPLE + 5: stride 2, so the sampled rows i * 2 + (2 * i) // SAMPLE
    # (i < SAMPLE) all lie below 2 * SAMPLE; the last 5 rows are never read
    rows, n = 2 * SAMPLE + 5, 6
    x = np.zeros((rows, n), "float32")
    x[2 * SAMPLE :] = 1.0  # rows 2 * SAMPLE, 2 * SAMPLE + 2, 2 * SAMPLE + 4 are past the sample
    x[0:2, 0] = 1.0  # row 0 (sampled, 1 nonzero) and row 1 (skipped: block 0 reads row 0)
    assert _density(x) == _expected(1, SAMPLE * n)


def test_rank_3_rows_are_batch_then_time():
    # [batch, T, n] flattens to rows b * T + t; with batch = SAMPLE and T = 3 the stride is 3,
    # and the sample reads rows i * 3 + (3 * i) // SAMPLE: time step (3 * i) // SAMPLE of
    # sample i (every step, about equally often; a plain stride of 3 would read only t = 0)
    batch, steps, n = SAMPLE, 3, 4
    index = np.arange(SAMPLE)
    for t in range(steps):
        x = np.zeros((batch, steps, n), "float32")
        x[:, t] = 1.0
        assert _density(x) == _expected(int(np.sum((3 * index) // SAMPLE == t)), SAMPLE)


def test_graded_negative_and_signed_zero_values():
    # any value other than zero counts, -0.0 counts as zero (it equals 0)
    x = np.array([[0.5, -2.0, -0.0, 0.0], [np.nan, 0.0, np.inf, -0.0]], "float32")
    assert _density(x) == _expected(4, 8)


def test_traced_with_unknown_shape():
    fn = tf.function(
        ops.input_density, input_signature=[tf.TensorSpec([None, None, None], tf.float32)]
    )
    x = np.zeros((SAMPLE, 3, 4), "float32")
    x[:, 0] = 1.0  # step 0 of every sample: the sampled rows of phase 0 of 3
    index = np.arange(SAMPLE)
    assert fn(tf.constant(x)).numpy() == np.mean((3 * index) // SAMPLE == 0)
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


@pytest.mark.parametrize("steps", [2, 5, 20, 100])
def test_density_samples_see_every_time_step_of_a_folded_batch(steps):
    """A [64, T, ...] input folded batch-major has period T in its rows: the sample must not
    land on one time step (it used to read only step 0, where deeper layers are silent)."""
    from keras_spiking.ops import conv, dispatch

    x = np.zeros((64, steps, 30), "float32")
    x[:, 1:] = 1.0  # silent at step 0, dense after
    expected = (steps - 1) / steps
    # 64 sampled rows over T phases: each phase 64 / T times, up to one row of rounding
    assert abs(float(dispatch.input_density(tf.constant(x))) - expected) <= 1 / steps
    maps = x.reshape(64 * steps, 5, 6, 1)
    assert abs(float(conv.image_density(tf.constant(maps))) - expected) <= 1 / steps
    rows = dispatch.sample_rows(tf.constant(64 * steps)).numpy()
    assert len(set(rows.tolist())) == 64 and rows.max() < 64 * steps
    phases = rows % steps  # the time steps read: all of them, or 64 spread over all T
    assert len(set(phases.tolist())) == min(steps, 64)
    assert phases.min() == 0 and phases.max() >= steps - -(-steps // 64)
