// KerasSpiking>SparseSpikeMatmul: synaptic input from spikes, touching only active inputs.
//
//   output[r, :] = sum over k with spikes[r, k] != 0 of spikes[r, k] * weights[k, :]
//
// which equals spikes @ weights for any values (zeros are skipped, any other value, 0/1 spikes
// or graded ones, is multiplied in). The work is (active entries) x n_out instead of
// rows x n_in x n_out. One difference from a dense matmul: a NaN or inf weight row does not
// reach the outputs of rows whose input for it is zero (a dense matmul gives 0 * inf = NaN).
//
// KerasSpiking>SparseSpikeMatmulGradWeights: d(loss)/d(weights) = spikes^T @ grad, again only
// over the active entries. The gradient with respect to the spikes, grad @ weights^T, is dense
// and is left to TF's own matmul (keras_spiking/ops.py).
//
// The forward kernels that feed a training step (KerasSpiking>SparseSpikeMatmulEvents and
// KerasSpiking>SparseLifScan) also return the active inputs they found, as a compressed row
// list: event_offsets [rows + 1] (int64), event_inputs (int32 input index k) and event_values
// (spikes[r, k], or empty when every one is exactly 1, as for binary spikes); the events of
// row r are entries event_offsets[r] to event_offsets[r + 1].
// KerasSpiking>SparseEventsGradWeights computes the weight gradient from that list, so the
// backward pass does not read `spikes` (rows x n_in, often the largest tensor of the step)
// again.

#include <algorithm>
#include <limits>
#include <map>
#include <mutex>
#include <string>
#include <type_traits>
#include <vector>

#ifdef __AVX512F__
#include <immintrin.h>
#endif

#include "absl/container/inlined_vector.h"
#include "common.h"
#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"
#include "tensorflow/core/framework/tensor_shape.h"

namespace keras_spiking {

namespace {

// Shape function of spikes [rows, n_in] @ weights [n_in, n_out]: output 0 is [rows, n_out].
Status MatmulShape(InferenceContext* c) {
  ShapeHandle spikes, weights;
  TF_RETURN_IF_ERROR(c->WithRank(c->input(0), 2, &spikes));
  TF_RETURN_IF_ERROR(c->WithRank(c->input(1), 2, &weights));
  DimensionHandle unused;
  TF_RETURN_IF_ERROR(c->Merge(c->Dim(spikes, 1), c->Dim(weights, 0), &unused));
  c->set_output(0, c->Matrix(c->Dim(spikes, 0), c->Dim(weights, 1)));
  return Status();
}

// rows + 1 entries of event_offsets (unknown when rows is)
Status EventOffsetsShape(InferenceContext* c, DimensionHandle rows, ShapeHandle* out) {
  DimensionHandle size;
  TF_RETURN_IF_ERROR(c->Add(rows, 1, &size));
  *out = c->Vector(size);
  return Status();
}

// Shape function of the event-driven LIF ops: spikes [batch, (T,) n_in] (rank spikes_rank),
// weights [n_in, n], state [batch, n], beta [n], threshold []. Sets *batch and *units.
Status EventLifShape(InferenceContext* c, int spikes_rank, ShapeHandle* spikes,
                     DimensionHandle* batch, DimensionHandle* units) {
  ShapeHandle weights, state, beta, threshold;
  TF_RETURN_IF_ERROR(c->WithRank(c->input(0), spikes_rank, spikes));
  TF_RETURN_IF_ERROR(c->WithRank(c->input(1), 2, &weights));
  TF_RETURN_IF_ERROR(c->WithRank(c->input(2), 2, &state));
  TF_RETURN_IF_ERROR(c->WithRank(c->input(3), 1, &beta));
  TF_RETURN_IF_ERROR(c->WithRank(c->input(4), 0, &threshold));
  DimensionHandle unused;
  TF_RETURN_IF_ERROR(c->Merge(c->Dim(*spikes, spikes_rank - 1), c->Dim(weights, 0), &unused));
  TF_RETURN_IF_ERROR(c->Merge(c->Dim(*spikes, 0), c->Dim(state, 0), batch));
  TF_RETURN_IF_ERROR(c->Merge(c->Dim(weights, 1), c->Dim(state, 1), units));
  return c->Merge(*units, c->Dim(beta, 0), units);
}

}  // namespace

REGISTER_OP("KerasSpiking>SparseSpikeMatmul")
    .Input("spikes: T")
    .Input("weights: T")
    .Output("output: T")
    .Attr("T: {float, double}")
    .SetShapeFn(MatmulShape)
    .Doc("spikes [rows, n_in] @ weights [n_in, n_out], iterating over nonzero spikes only.");

REGISTER_OP("KerasSpiking>SparseSpikeMatmulGradWeights")
    .Input("spikes: T")
    .Input("grad: T")
    .Output("grad_weights: T")
    .Attr("T: {float, double}")
    .SetShapeFn([](InferenceContext* c) {
      ShapeHandle spikes, grad;
      TF_RETURN_IF_ERROR(c->WithRank(c->input(0), 2, &spikes));
      TF_RETURN_IF_ERROR(c->WithRank(c->input(1), 2, &grad));
      DimensionHandle unused;
      TF_RETURN_IF_ERROR(c->Merge(c->Dim(spikes, 0), c->Dim(grad, 0), &unused));
      c->set_output(0, c->Matrix(c->Dim(spikes, 1), c->Dim(grad, 1)));
      return Status();
    })
    .Doc("spikes^T [n_in, rows] @ grad [rows, n_out], iterating over nonzero spikes only.");

REGISTER_OP("KerasSpiking>SparseSpikeMatmulEvents")
    .Input("spikes: T")
    .Input("weights: T")
    .Output("output: T")
    .Output("event_offsets: int64")
    .Output("event_inputs: int32")
    .Output("event_values: T")
    .Attr("T: {float, double}")
    .SetShapeFn([](InferenceContext* c) {
      TF_RETURN_IF_ERROR(MatmulShape(c));
      ShapeHandle offsets;
      TF_RETURN_IF_ERROR(EventOffsetsShape(c, c->Dim(c->input(0), 0), &offsets));
      c->set_output(1, offsets);
      c->set_output(2, c->Vector(InferenceContext::kUnknownDim));
      c->set_output(3, c->Vector(InferenceContext::kUnknownDim));
      return Status();
    })
    .Doc("SparseSpikeMatmul that also returns the active inputs it found (compressed rows) "
         "for SparseEventsGradWeights.");

REGISTER_OP("KerasSpiking>SparseEventsGradWeights")
    .Input("event_offsets: int64")
    .Input("event_inputs: int32")
    .Input("event_values: T")
    .Input("grad: T")
    .Input("n_in: int64")
    .Output("grad_weights: T")
    .Attr("T: {float, double}")
    .SetShapeFn([](InferenceContext* c) {
      ShapeHandle offsets, inputs, values, grad, n_in_shape;
      TF_RETURN_IF_ERROR(c->WithRank(c->input(0), 1, &offsets));
      TF_RETURN_IF_ERROR(c->WithRank(c->input(1), 1, &inputs));
      TF_RETURN_IF_ERROR(c->WithRank(c->input(2), 1, &values));
      TF_RETURN_IF_ERROR(c->WithRank(c->input(3), 2, &grad));
      TF_RETURN_IF_ERROR(c->WithRank(c->input(4), 0, &n_in_shape));
      DimensionHandle n_in;
      TF_RETURN_IF_ERROR(c->MakeDimForScalarInput(4, &n_in));
      c->set_output(0, c->Matrix(n_in, c->Dim(grad, 1)));
      return Status();
    })
    .Doc("spikes^T [n_in, rows] @ grad [rows, n_out] from the event list of "
         "SparseSpikeMatmulEvents or SparseLifScan.");

REGISTER_OP("KerasSpiking>SparseLifStep")
    .Input("spikes: T")
    .Input("weights: T")
    .Input("v: T")
    .Input("beta: T")
    .Input("threshold: T")
    .Output("spikes_out: T")
    .Output("v_out: T")
    .Attr("reset: {'subtract', 'zero'} = 'subtract'")
    .Attr("T: {float, double}")
    .SetShapeFn([](InferenceContext* c) {
      ShapeHandle spikes;
      DimensionHandle batch, units;
      TF_RETURN_IF_ERROR(EventLifShape(c, 2, &spikes, &batch, &units));
      c->set_output(0, c->Matrix(batch, units));
      c->set_output(1, c->Matrix(batch, units));
      return Status();
    })
    .Doc("One streaming LIF step with event-driven input: u = beta v + spikes @ weights, "
         "S = H(u - theta), v' = reset(u). Inference only (no gradient).");

REGISTER_OP("KerasSpiking>SparseLifScan")
    .Input("spikes: T")
    .Input("weights: T")
    .Input("v0: T")
    .Input("beta: T")
    .Input("threshold: T")
    .Output("spikes_out: T")
    .Output("membrane: T")
    .Output("v_last: T")
    .Output("event_offsets: int64")
    .Output("event_inputs: int32")
    .Output("event_values: T")
    .Attr("reset: {'subtract', 'zero'} = 'subtract'")
    .Attr("T: {float, double}")
    .SetShapeFn([](InferenceContext* c) {
      ShapeHandle spikes, offsets;
      DimensionHandle batch, units;
      TF_RETURN_IF_ERROR(EventLifShape(c, 3, &spikes, &batch, &units));
      ShapeHandle seq = c->MakeShape({batch, c->Dim(spikes, 1), units});
      c->set_output(0, seq);
      c->set_output(1, seq);
      c->set_output(2, c->Matrix(batch, units));
      DimensionHandle rows;
      TF_RETURN_IF_ERROR(c->Multiply(batch, c->Dim(spikes, 1), &rows));
      TF_RETURN_IF_ERROR(EventOffsetsShape(c, rows, &offsets));
      c->set_output(3, offsets);
      c->set_output(4, c->Vector(InferenceContext::kUnknownDim));
      c->set_output(5, c->Vector(InferenceContext::kUnknownDim));
      return Status();
    })
    .Doc("LifScan of the event-driven input current spikes @ weights in one pass: the outputs "
         "of LifScan(SparseSpikeMatmul(spikes, weights), ...) without the currents tensor, "
         "and the active inputs (compressed rows over batch x T) for SparseEventsGradWeights.");

namespace {

// o[j] += sum_m c[m] * w[m][j] for 4 weight rows at once (one pass over o per 4 inputs).
template <typename T>
inline void Axpy4(T* __restrict o, const T* __restrict w0, const T* __restrict w1,
                  const T* __restrict w2, const T* __restrict w3, T c0, T c1, T c2, T c3,
                  int64_t n) {
  for (int64_t j = 0; j < n; ++j) {
    o[j] += c0 * w0[j] + c1 * w1[j] + c2 * w2[j] + c3 * w3[j];
  }
}

template <typename T>
inline void Axpy(T* __restrict o, const T* __restrict w, T c, int64_t n) {
  for (int64_t j = 0; j < n; ++j) o[j] += c * w[j];
}

// o[0:n) += sum over the events a < count of value(a) * row(a)[0:n): the inner loop of every
// event kernel (row(a) is a weight row in the forward pass, a row of `grad` in the weight
// gradient). Wide rows go four events per pass over o, which stays in L1.
template <typename T, typename RowFn, typename ValueFn>
inline void AddEventsGeneric(T* __restrict o, int64_t n, int64_t count, RowFn row,
                             ValueFn value) {
  int64_t a = 0;
  for (; a + 4 <= count; a += 4) {
    Axpy4(o, row(a), row(a + 1), row(a + 2), row(a + 3), value(a), value(a + 1), value(a + 2),
          value(a + 3), n);
  }
  for (; a < count; ++a) Axpy(o, row(a), value(a), n);
}

#ifdef __AVX512F__
// Narrow rows (at most kVectors x 16 floats, e.g. a 10-20 unit readout): o stays in registers
// over all events, masked loads for the tail, two accumulator sets so that consecutive events
// do not wait on each other's FMA. The compiler's loops spend most of an event on the
// remainder of a 20-float row otherwise.
template <int kVectors, typename RowFn, typename ValueFn>
inline void AddEventsNarrow(float* __restrict o, int64_t n, int64_t count, RowFn row,
                            ValueFn value) {
  __mmask16 mask[kVectors];
  __m512 even[kVectors], odd[kVectors];
  for (int i = 0; i < kVectors; ++i) {
    const int64_t rest = n - 16 * i;
    mask[i] = rest >= 16 ? static_cast<__mmask16>(0xFFFF)
                         : static_cast<__mmask16>((1u << rest) - 1);
    even[i] = _mm512_maskz_loadu_ps(mask[i], o + 16 * i);
    odd[i] = _mm512_setzero_ps();
  }
  int64_t a = 0;
  for (; a + 2 <= count; a += 2) {
    const float* w0 = row(a);
    const float* w1 = row(a + 1);
    const __m512 c0 = _mm512_set1_ps(value(a));
    const __m512 c1 = _mm512_set1_ps(value(a + 1));
    for (int i = 0; i < kVectors; ++i) {
      even[i] = _mm512_fmadd_ps(c0, _mm512_maskz_loadu_ps(mask[i], w0 + 16 * i), even[i]);
      odd[i] = _mm512_fmadd_ps(c1, _mm512_maskz_loadu_ps(mask[i], w1 + 16 * i), odd[i]);
    }
  }
  if (a < count) {
    const float* w0 = row(a);
    const __m512 c0 = _mm512_set1_ps(value(a));
    for (int i = 0; i < kVectors; ++i) {
      even[i] = _mm512_fmadd_ps(c0, _mm512_maskz_loadu_ps(mask[i], w0 + 16 * i), even[i]);
    }
  }
  for (int i = 0; i < kVectors; ++i) {
    _mm512_mask_storeu_ps(o + 16 * i, mask[i], _mm512_add_ps(even[i], odd[i]));
  }
}
#endif

template <typename T, typename RowFn, typename ValueFn>
inline void AddEvents(T* __restrict o, int64_t n, int64_t count, RowFn row, ValueFn value) {
#ifdef __AVX512F__
  if constexpr (std::is_same_v<T, float>) {
    if (count > 0 && n <= 64) {
      switch ((n + 15) / 16) {
        case 1: return AddEventsNarrow<1>(o, n, count, row, value);
        case 2: return AddEventsNarrow<2>(o, n, count, row, value);
        case 3: return AddEventsNarrow<3>(o, n, count, row, value);
        case 4: return AddEventsNarrow<4>(o, n, count, row, value);
        default: break;
      }
    }
  }
#endif
  AddEventsGeneric(o, n, count, row, value);
}

// Writes the indices k of the nonzero x[k] to `active` (room for n + 16 entries) and returns
// their count. Branch-free, so a random 1-20 % pattern costs no mispredictions; with AVX-512,
// sixteen floats at a time (compare to a mask, compress the indices in registers, store).
template <typename T>
inline int64_t CompactActiveScalar(const T* __restrict x, int64_t begin, int64_t n,
                                   int64_t count, int64_t* __restrict active) {
  for (int64_t k = begin; k < n; ++k) {
    active[count] = k;
    count += (x[k] != T(0));
  }
  return count;
}

template <typename T>
inline int64_t CompactActive(const T* __restrict x, int64_t n, int64_t* __restrict active) {
  return CompactActiveScalar(x, 0, n, 0, active);
}

#ifdef __AVX512F__
template <>
inline int64_t CompactActive<float>(const float* __restrict x, int64_t n,
                                    int64_t* __restrict active) {
  int64_t count = 0;
  int64_t k = 0;
  const __m512 zero = _mm512_setzero_ps();
  const __m512i lanes = _mm512_set_epi64(7, 6, 5, 4, 3, 2, 1, 0);
  for (; k + 16 <= n; k += 16) {
    // NEQ_UQ: true for NaN too, like `x != 0` in C++
    const __mmask16 mask = _mm512_cmp_ps_mask(_mm512_loadu_ps(x + k), zero, _CMP_NEQ_UQ);
    if (mask == 0) continue;
    const __m512i low = _mm512_add_epi64(lanes, _mm512_set1_epi64(k));
    const __m512i high = _mm512_add_epi64(low, _mm512_set1_epi64(8));
    const __mmask8 mask_low = static_cast<__mmask8>(mask & 0xFF);
    const __mmask8 mask_high = static_cast<__mmask8>(mask >> 8);
    _mm512_storeu_si512(active + count, _mm512_maskz_compress_epi64(mask_low, low));
    count += __builtin_popcount(mask_low);
    _mm512_storeu_si512(active + count, _mm512_maskz_compress_epi64(mask_high, high));
    count += __builtin_popcount(mask_high);
  }
  return CompactActiveScalar(x, k, n, count, active);
}
#endif

// The active inputs a forward kernel finds, kept for SparseEventsGradWeights. The kernel's
// threads each take a contiguous range of rows (a shard) and record its rows in order; Write
// lays the shards out as event_offsets / event_inputs / event_values (outputs first_output to
// first_output + 2). event_values is empty when every recorded value is exactly 1 (binary
// spikes, the usual case), so the list costs 4 bytes per event, against n_in x sizeof(T) per
// row for reading `spikes` again (4 + sizeof(T) per event for graded inputs).
template <typename T>
class EventRecorder {
 public:
  struct Shard {
    std::vector<int32_t> inputs;
    std::vector<T> values;  // empty while every value of the shard is 1
    bool graded = false;    // a value other than 1 was seen: `values` holds them all
  };

  explicit EventRecorder(int64_t rows) : counts_(rows, 0) {}

  // The shard of rows [first_row, first_row + rows) of n_in inputs each (each thread opens its
  // own; nullptr for no rows, which record nothing). Room for about 1 in 8 inputs active, up
  // to 1 Mi events, is reserved up front (address space only, the pages are touched as
  // events arrive), so that the usual shard never reallocates.
  Shard* Open(int64_t first_row, int64_t rows, int64_t n_in) {
    if (rows <= 0) return nullptr;
    Shard* shard;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      shard = &shards_[first_row];
    }
    const int64_t per_row = std::max<int64_t>(1, std::min<int64_t>(n_in, n_in / 8 + 4));
    shard->inputs.reserve(std::min<int64_t>(rows, (int64_t{1} << 20) / per_row) * per_row);
    return shard;
  }

  void Add(Shard* shard, int64_t row, const T* x_row, const int64_t* active, int64_t count) {
    counts_[row] = count;
    const size_t start = shard->inputs.size();
    shard->inputs.resize(start + count);
    int32_t* __restrict inputs = shard->inputs.data() + start;
    bool unit = true;
    for (int64_t a = 0; a < count; ++a) {
      inputs[a] = static_cast<int32_t>(active[a]);
      unit &= x_row[active[a]] == T(1);
    }
    if (unit && !shard->graded) return;
    if (!shard->graded) {
      shard->graded = true;
      shard->values.assign(start, T(1));  // the shard's earlier events were all 1
    }
    shard->values.resize(start + count);
    T* __restrict values = shard->values.data() + start;
    for (int64_t a = 0; a < count; ++a) values[a] = x_row[active[a]];
  }

  Status Write(OpKernelContext* context, int first_output) {
    const int64_t rows = static_cast<int64_t>(counts_.size());
    Tensor *offsets_t, *inputs_t, *values_t;
    TF_RETURN_IF_ERROR(
        context->allocate_output(first_output, TensorShape({rows + 1}), &offsets_t));
    int64_t* offsets = offsets_t->flat<int64_t>().data();
    offsets[0] = 0;
    for (int64_t r = 0; r < rows; ++r) offsets[r + 1] = offsets[r] + counts_[r];
    const int64_t events = offsets[rows];
    bool graded = false;
    std::vector<std::pair<int64_t, const Shard*>> shards;
    for (const auto& [first_row, shard] : shards_) {
      shards.emplace_back(first_row, &shard);
      graded |= shard.graded;
    }
    TF_RETURN_IF_ERROR(
        context->allocate_output(first_output + 1, TensorShape({events}), &inputs_t));
    TF_RETURN_IF_ERROR(context->allocate_output(
        first_output + 2, TensorShape({graded ? events : 0}), &values_t));
    int32_t* inputs = inputs_t->flat<int32_t>().data();
    T* values = values_t->flat<T>().data();
    // one shard per thread, copied by as many threads
    ParallelRange(context, static_cast<int64_t>(shards.size()), events + 1,
                  [&](int64_t begin, int64_t end) {
                    for (int64_t i = begin; i < end; ++i) {
                      const auto& [first_row, shard] = shards[i];
                      const int64_t at = offsets[first_row];
                      std::copy(shard->inputs.begin(), shard->inputs.end(), inputs + at);
                      if (!graded) continue;
                      if (shard->graded) {
                        std::copy(shard->values.begin(), shard->values.end(), values + at);
                      } else {
                        std::fill_n(values + at, shard->inputs.size(), T(1));
                      }
                    }
                  });
    return Status();
  }

 private:
  std::mutex mutex_;
  std::map<int64_t, Shard> shards_;
  std::vector<int64_t> counts_;
};

// Event indices are int32: the recording kernels refuse wider inputs.
Status CheckEventIndexRange(int64_t n_in, const char* op) {
  if (n_in > std::numeric_limits<int32_t>::max()) {
    return errors::InvalidArgument(op, ": ", n_in,
                                   " inputs do not fit the int32 event list (at most ",
                                   std::numeric_limits<int32_t>::max(), ")");
  }
  return Status();
}

// The inputs of the event-driven LIF kernels: spikes [batch, (T,) n_in] of rank spikes_rank,
// weights [n_in, n], the membrane `state_name` [batch, n], beta [n] and a scalar threshold.
Status CheckEventLifInputs(OpKernelContext* context, const char* op, int spikes_rank,
                           const char* state_name) {
  const Tensor& spikes = context->input(0);
  const Tensor& weights = context->input(1);
  TF_RETURN_IF_ERROR(
      CheckInput(op, "spikes", spikes, absl::InlinedVector<int64_t, 3>(spikes_rank, -1)));
  TF_RETURN_IF_ERROR(CheckInput(op, "weights", weights, {-1, -1}));
  const int64_t batch = spikes.dim_size(0), n = weights.dim_size(1);
  TF_RETURN_IF_ERROR(CheckSameSize(op, "spikes", spikes.dim_size(spikes_rank - 1), "inputs",
                                   "weights", weights.dim_size(0), "rows"));
  TF_RETURN_IF_ERROR(CheckInput(op, state_name, context->input(2), {batch, n}));
  TF_RETURN_IF_ERROR(CheckInput(op, "beta", context->input(3), {n}));
  return CheckInput(op, "threshold", context->input(4), {});
}

}  // namespace

// kRecord: SparseSpikeMatmulEvents (also returns the event list), else SparseSpikeMatmul.
template <typename T, bool kRecord>
class SparseSpikeMatmulOp : public GuardedOpKernel {
 public:
  explicit SparseSpikeMatmulOp(OpKernelConstruction* context)
      : GuardedOpKernel(context, kRecord ? "SparseSpikeMatmulEvents" : "SparseSpikeMatmul") {}

  void DoCompute(OpKernelContext* context) override {
    const char* op = kRecord ? "SparseSpikeMatmulEvents" : "SparseSpikeMatmul";
    const Tensor& spikes = context->input(0);
    const Tensor& weights = context->input(1);
    OP_REQUIRES_OK(context, CheckInput(op, "spikes", spikes, {-1, -1}));
    OP_REQUIRES_OK(context, CheckInput(op, "weights", weights, {-1, -1}));
    const int64_t rows = spikes.dim_size(0);
    const int64_t n_in = spikes.dim_size(1);
    const int64_t n_out = weights.dim_size(1);
    OP_REQUIRES_OK(context, CheckSameSize(op, "spikes", n_in, "columns", "weights",
                                          weights.dim_size(0), "rows"));
    if (kRecord) OP_REQUIRES_OK(context, CheckEventIndexRange(n_in, op));
    // rows x n_out can pass int64 when n_in is 0 (both inputs empty): a checked shape
    Tensor* output = nullptr;
    OP_REQUIRES_OK(context,
                   AllocateOutputChecked(context, op, 0, "output", {rows, n_out}, &output));
    // without outputs the events are still recorded: the weight gradient [n_in, 0] is empty
    // either way, but the list must describe `spikes`
    EventRecorder<T> recorder(kRecord ? rows : 0);
    EventRecorder<T>* record = kRecord ? &recorder : nullptr;
    if (rows > 0 && (n_out > 0 || kRecord)) {
      const T* x = spikes.flat<T>().data();
      const T* w = weights.flat<T>().data();
      T* out = output->flat<T>().data();
      auto rows_fn = [x, w, out, n_in, n_out, record](int64_t begin, int64_t end) {
        std::vector<int64_t> active(n_in + 16);  // slack for 8-wide stores
        auto* shard = record ? record->Open(begin, end - begin, n_in) : nullptr;
        for (int64_t r = begin; r < end; ++r) {
          const T* xr = x + r * n_in;
          T* o = out + r * n_out;
          std::fill(o, o + n_out, T(0));
          const int64_t count = CompactActive(xr, n_in, active.data());
          const int64_t* act = active.data();
          if (record) record->Add(shard, r, xr, act, count);
          AddEvents(
              o, n_out, count, [=](int64_t a) { return w + act[a] * n_out; },
              [=](int64_t a) { return xr[act[a]]; });
        }
      };
      // cost of a row: the scan for active inputs plus, at a typical 10 % activity, the updates
      ParallelRange(context, rows, ShardCost(n_in + n_in * (n_out / 10.0) + 1, rows), rows_fn);
    }
    if (kRecord) OP_REQUIRES_OK(context, recorder.Write(context, 1));
  }
};

// The events of `spikes` rows, found by scanning them (SparseSpikeMatmulGradWeights).
template <typename T>
struct SpikesEventSource {
  const T* x;
  int64_t n_in;
  int64_t MaxEvents(int64_t /*row*/) const { return n_in; }
  // first size of the event buffers of a block of `rows` rows (they grow when needed)
  int64_t InitialCapacity(int64_t rows) const {
    return rows * std::min<int64_t>(n_in, n_in / 8 + 16) + n_in + 16;
  }
  // writes the active inputs of `row` and their values (room for MaxEvents + 16), returns
  // their count
  int64_t Gather(int64_t row, int64_t* inputs, T* values) const {
    const T* xr = x + row * n_in;
    const int64_t count = CompactActive(xr, n_in, inputs);
    for (int64_t a = 0; a < count; ++a) values[a] = xr[inputs[a]];
    return count;
  }
};

// The events of a recorded list (SparseEventsGradWeights), its indices already checked to lie
// in [0, n_in); values == nullptr: every value is 1.
template <typename T>
struct ListEventSource {
  const int64_t* offsets;
  const int32_t* inputs;
  const T* values;
  int64_t MaxEvents(int64_t row) const { return offsets[row + 1] - offsets[row]; }
  int64_t InitialCapacity(int64_t /*rows*/) const { return 4096; }
  int64_t Gather(int64_t row, int64_t* out_inputs, T* out_values) const {
    const int64_t begin = offsets[row], count = offsets[row + 1] - begin;
    for (int64_t a = 0; a < count; ++a) {
      out_inputs[a] = inputs[begin + a];
      out_values[a] = values != nullptr ? values[begin + a] : T(1);
    }
    return count;
  }
};

// grad_weights [n_in, n_out] = sum over the events (r, k, value) of value * grad[r, :] into
// row k, the events coming from `source` (scanned spikes or a recorded list).
//
// The rows are split into `parts` contiguous ranges, one per thread, each accumulating into
// its own copy of grad_weights (part 0 into the output itself), summed at the end. A part
// walks its rows in blocks small enough that the block's rows of `grad` stay in L2 (about
// 128 KiB) and, per block:
// 1. gathers the events of each row (from the source), counting the events per input;
// 2. regroups the block's events by input (a counting sort of a few thousand entries that
//    stays in L1/L2, rows in order within an input);
// 3. per input with events, adds their rows of `grad` (from L2) into that input's row of
//    grad_weights (held in L1 over the block), four at a time: the forward kernel's access
//    pattern with `grad` in the role of the weights.
// An earlier version sorted all events of the whole batch by input first (two extra passes
// over every event through memory): the sort cost more than the accumulation itself.
template <typename T, typename Source>
void AccumulateGradWeights(OpKernelContext* context, int64_t rows, int64_t n_in,
                           int64_t n_out, const T* g, T* dw, const Source& source) {
  if (rows == 0 || n_in == 0 || n_out == 0) {
    std::fill(dw, dw + n_in * n_out, T(0));
    return;
  }
  const int64_t row_block = std::max<int64_t>(
      16, std::min<int64_t>(rows, (128 << 10) / std::max<int64_t>(1, n_out * sizeof(T))));
  int64_t parts = std::min<int64_t>(NumThreads(context), (rows + row_block - 1) / row_block);
  // each extra part costs a copy of grad_weights: at most 64 MiB of them
  while (parts > 1 && (parts - 1) * n_in * n_out * static_cast<int64_t>(sizeof(T)) >
                          (int64_t{64} << 20)) {
    --parts;
  }
  parts = std::max<int64_t>(parts, 1);
  Tensor copies;
  if (parts > 1) {
    OP_REQUIRES_OK(context,
                   context->allocate_temp(tensorflow::DataTypeToEnum<T>::value,
                                          TensorShape({(parts - 1) * n_in * n_out}), &copies));
  }
  T* copy_data = parts > 1 ? copies.flat<T>().data() : nullptr;
  const int64_t rows_per_part = (rows + parts - 1) / parts;
  auto part_fn = [=, &source](int64_t part) {
    T* d = part == 0 ? dw : copy_data + (part - 1) * n_in * n_out;
    std::fill(d, d + n_in * n_out, T(0));
    const int64_t r_begin = part * rows_per_part;
    const int64_t r_end = std::min(rows, r_begin + rows_per_part);
    std::vector<int64_t> inputs;                // the block's events: active input per event
    std::vector<T> values;                      // and its value spikes[r, k]
    std::vector<int64_t> row_count(row_block);  // events per row of the block
    std::vector<int64_t> count(n_in);           // events per input, then the next slot
    std::vector<int32_t> event_row;             // regrouped: row in the block, by input
    std::vector<T> event_value;                 // the value of each regrouped event
    inputs.resize(source.InitialCapacity(row_block));
    values.resize(source.InitialCapacity(row_block));
    for (int64_t b0 = r_begin; b0 < r_end; b0 += row_block) {
      const int64_t b1 = std::min(r_end, b0 + row_block);
      std::fill(count.begin(), count.end(), 0);
      int64_t events = 0;
      for (int64_t r = b0; r < b1; ++r) {
        const int64_t room = events + source.MaxEvents(r) + 16;  // slack for 8-wide stores
        if (static_cast<int64_t>(inputs.size()) < room) {
          inputs.resize(2 * room);
          values.resize(2 * room);
        }
        const int64_t c = source.Gather(r, inputs.data() + events, values.data() + events);
        for (int64_t a = events; a < events + c; ++a) ++count[inputs[a]];
        row_count[r - b0] = c;
        events += c;
      }
      if (events == 0) continue;
      if (static_cast<int64_t>(event_row.size()) < events) {
        event_row.resize(events);
        event_value.resize(events);
      }
      int64_t offset = 0;
      for (int64_t k = 0; k < n_in; ++k) {
        const int64_t c = count[k];
        count[k] = offset;
        offset += c;
      }
      for (int64_t r = b0, e = 0; r < b1; ++r) {
        for (const int64_t stop = e + row_count[r - b0]; e < stop; ++e) {
          const int64_t slot = count[inputs[e]]++;
          event_row[slot] = static_cast<int32_t>(r - b0);
          event_value[slot] = values[e];
        }
      }
      // count[k] is now the end of input k's events (the start of input k + 1's)
      const T* gb = g + b0 * n_out;
      const int32_t* er = event_row.data();
      const T* ev = event_value.data();
      int64_t a = 0;
      for (int64_t k = 0; k < n_in; ++k) {
        const int64_t stop = count[k];
        if (a == stop) continue;
        const int32_t* rk = er + a;
        const T* vk = ev + a;
        AddEvents(
            d + k * n_out, n_out, stop - a, [=](int64_t e) { return gb + rk[e] * n_out; },
            [=](int64_t e) { return vk[e]; });
        a = stop;
      }
    }
  };
  if (parts == 1) {
    part_fn(0);
    return;
  }
  const double part_cost = static_cast<double>(rows_per_part) * (n_in + n_in * (n_out / 10.0));
  ParallelRange(context, parts, ShardCost(part_cost + 1, parts),
                [&part_fn](int64_t begin, int64_t end) {
                  for (int64_t part = begin; part < end; ++part) part_fn(part);
                });
  // sum the copies into the output, in part order, a slice of inputs per thread
  ParallelRange(context, n_in, parts * n_out + 1, [=](int64_t begin, int64_t end) {
    for (int64_t part = 1; part < parts; ++part) {
      const T* src = copy_data + (part - 1) * n_in * n_out;
      T* __restrict out = dw + begin * n_out;
      const T* __restrict in = src + begin * n_out;
      for (int64_t i = 0; i < (end - begin) * n_out; ++i) out[i] += in[i];
    }
  });
}

template <typename T>
class SparseSpikeMatmulGradWeightsOp : public GuardedOpKernel {
 public:
  explicit SparseSpikeMatmulGradWeightsOp(OpKernelConstruction* context)
      : GuardedOpKernel(context, "SparseSpikeMatmulGradWeights") {}

  void DoCompute(OpKernelContext* context) override {
    const char* op = "SparseSpikeMatmulGradWeights";
    const Tensor& spikes = context->input(0);
    const Tensor& grad = context->input(1);
    OP_REQUIRES_OK(context, CheckInput(op, "spikes", spikes, {-1, -1}));
    OP_REQUIRES_OK(context, CheckInput(op, "grad", grad, {-1, -1}));
    const int64_t rows = spikes.dim_size(0);
    const int64_t n_in = spikes.dim_size(1);
    const int64_t n_out = grad.dim_size(1);
    OP_REQUIRES_OK(context,
                   CheckSameSize(op, "spikes", rows, "rows", "grad", grad.dim_size(0), "rows"));
    // n_in x n_out can pass int64 when there are no rows: a checked shape
    Tensor* output = nullptr;
    OP_REQUIRES_OK(context,
                   AllocateOutputChecked(context, op, 0, "grad_weights", {n_in, n_out}, &output));
    const SpikesEventSource<T> source{spikes.flat<T>().data(), n_in};
    AccumulateGradWeights(context, rows, n_in, n_out, grad.flat<T>().data(),
                          output->flat<T>().data(), source);
  }
};

template <typename T>
class SparseEventsGradWeightsOp : public GuardedOpKernel {
 public:
  explicit SparseEventsGradWeightsOp(OpKernelConstruction* context)
      : GuardedOpKernel(context, "SparseEventsGradWeights") {}

  void DoCompute(OpKernelContext* context) override {
    const char* op = "SparseEventsGradWeights";
    const Tensor& offsets_t = context->input(0);
    const Tensor& inputs_t = context->input(1);
    const Tensor& values_t = context->input(2);
    const Tensor& grad = context->input(3);
    const Tensor& n_in_t = context->input(4);
    OP_REQUIRES_OK(context, CheckInput(op, "grad", grad, {-1, -1}));
    OP_REQUIRES_OK(context, CheckInput(op, "n_in", n_in_t, {}));
    const int64_t n_in = n_in_t.scalar<int64_t>()();
    // every index of the list is an int32, so no wider input count can be meant
    OP_REQUIRES(context, n_in >= 0 && n_in <= int64_t{std::numeric_limits<int32_t>::max()},
                errors::InvalidArgument(op, ": `n_in` must be in [0, 2^31 - 1] (the event "
                                        "indices are int32), got ",
                                        n_in));
    const int64_t rows = grad.dim_size(0);
    const int64_t n_out = grad.dim_size(1);
    OP_REQUIRES(context,
                TensorShapeUtils::IsVector(offsets_t.shape()) &&
                    offsets_t.dim_size(0) == rows + 1,
                errors::InvalidArgument(op, ": `event_offsets` must have shape [", rows + 1,
                                        "] (rows of grad + 1), got ",
                                        offsets_t.shape().DebugString()));
    OP_REQUIRES(context,
                TensorShapeUtils::IsVector(inputs_t.shape()) &&
                    TensorShapeUtils::IsVector(values_t.shape()) &&
                    (values_t.dim_size(0) == 0 ||
                     inputs_t.dim_size(0) == values_t.dim_size(0)),
                errors::InvalidArgument(op, ": `event_values` must be a vector of the length "
                                        "of `event_inputs` (or empty: all values 1), got "
                                        "shapes ",
                                        inputs_t.shape().DebugString(), " and ",
                                        values_t.shape().DebugString()));
    const int64_t events = inputs_t.dim_size(0);
    const int64_t* offsets = offsets_t.flat<int64_t>().data();
    OP_REQUIRES(context, offsets[0] == 0 && offsets[rows] == events,
                errors::InvalidArgument(op, ": `event_offsets` must run from 0 to the ",
                                        events, " events, got ", offsets[0], " to ",
                                        offsets[rows]));
    for (int64_t r = 0; r < rows; ++r) {
      OP_REQUIRES(context, offsets[r] <= offsets[r + 1],
                  errors::InvalidArgument(op, ": `event_offsets` must not decrease, got ",
                                          offsets[r], " then ", offsets[r + 1], " at row ",
                                          r));
    }
    const int32_t* inputs = inputs_t.flat<int32_t>().data();
    for (int64_t e = 0; e < events; ++e) {
      OP_REQUIRES(context, inputs[e] >= 0 && inputs[e] < n_in,
                  errors::InvalidArgument(op, ": `event_inputs` holds ", inputs[e],
                                          " at entry ", e, ", outside [0, ", n_in, ")"));
    }
    // n_in x n_out may overflow: a checked shape
    Tensor* output = nullptr;
    OP_REQUIRES_OK(context,
                   AllocateOutputChecked(context, op, 0, "grad_weights", {n_in, n_out}, &output));
    const T* values = values_t.dim_size(0) > 0 ? values_t.flat<T>().data() : nullptr;
    const ListEventSource<T> source{offsets, inputs, values};
    AccumulateGradWeights(context, rows, n_in, n_out, grad.flat<T>().data(),
                          output->flat<T>().data(), source);
  }
};

// One LIF step for streaming inference, fused with its event-driven input (no gradient):
//   u = beta * v + sum over active k of spikes[b, k] * weights[k, :];  S = H(u - theta);
//   v' = u - theta S (subtract) or u (1 - S) (zero).
// A single op per time step keeps a step's cost near the work itself at batch 1.
template <typename T>
class SparseLifStepOp : public ResetOpKernel {
 public:
  explicit SparseLifStepOp(OpKernelConstruction* context)
      : ResetOpKernel(context, "SparseLifStep") {}

  void DoCompute(OpKernelContext* context) override {
    const char* op = "SparseLifStep";
    OP_REQUIRES_OK(context, CheckEventLifInputs(context, op, 2, "v"));
    const Tensor& spikes = context->input(0);
    const Tensor& weights = context->input(1);
    const int64_t batch = spikes.dim_size(0), n_in = spikes.dim_size(1);
    const int64_t n = weights.dim_size(1);
    Tensor *s_out_t, *v_out_t;
    OP_REQUIRES_OK(context,
                   AllocateOutputChecked(context, op, 0, "spikes_out", {batch, n}, &s_out_t));
    OP_REQUIRES_OK(context, AllocateOutputChecked(context, op, 1, "v_out", {batch, n}, &v_out_t));
    const T* x = spikes.flat<T>().data();
    const T* w = weights.flat<T>().data();
    const T* v = context->input(2).flat<T>().data();
    const T* beta = context->input(3).flat<T>().data();
    const T theta = context->input(4).scalar<T>()();
    T* s_out = s_out_t->flat<T>().data();
    T* v_out = v_out_t->flat<T>().data();
    const bool reset_zero = this->reset_zero();
    auto rows_fn = [=](int64_t begin, int64_t end) {
      std::vector<int64_t> active(n_in + 16);  // slack for 8-wide stores
      for (int64_t b = begin; b < end; ++b) {
        const T* xb = x + b * n_in;
        T* u = v_out + b * n;  // the input current accumulates in place of v'
        std::fill(u, u + n, T(0));
        const int64_t count = CompactActive(xb, n_in, active.data());
        const int64_t* act = active.data();
        AddEvents(
            u, n, count, [=](int64_t a) { return w + act[a] * n; },
            [=](int64_t a) { return xb[act[a]]; });
        const T* vb = v + b * n;
        T* sb = s_out + b * n;
        for (int64_t j = 0; j < n; ++j) {
          const T uj = beta[j] * vb[j] + u[j];
          const T s = Spike(uj, theta);
          sb[j] = s;
          u[j] = AfterReset(uj, s, theta, reset_zero);
        }
      }
    };
    if (batch == 1) {
      rows_fn(0, 1);  // one row: no thread hand-off
    } else {
      ParallelRange(context, batch, ShardCost(n_in + n_in * (n / 10.0) + n + 1, batch), rows_fn);
    }
  }
};

// The LIF scan fed by its event-driven input, fused (training forward pass):
//   u[t] = beta * v[t-1] + sum over active k of spikes[b, t, k] * weights[k, :];
//   S[t] = H(u[t] - theta);  v[t] = u[t] - theta S[t] (subtract) or u[t] (1 - S[t]) (zero).
// Each step's input current accumulates in the row of `membrane` that u[t] then overwrites,
// so the [batch, T, n] currents are never written to memory and read back. The sums are
// SparseSpikeMatmul's and the update LifScan's, in the same order: the outputs equal the two
// ops in sequence. The gradient is LifScanGrad, then SparseEventsGradWeights on the events
// recorded here (keras_spiking/ops.py).
template <typename T>
class SparseLifScanOp : public ResetOpKernel {
 public:
  explicit SparseLifScanOp(OpKernelConstruction* context)
      : ResetOpKernel(context, "SparseLifScan") {}

  void DoCompute(OpKernelContext* context) override {
    const char* op = "SparseLifScan";
    OP_REQUIRES_OK(context, CheckEventLifInputs(context, op, 3, "v0"));
    const Tensor& spikes = context->input(0);
    const Tensor& weights = context->input(1);
    const int64_t batch = spikes.dim_size(0), steps = spikes.dim_size(1),
                  n_in = spikes.dim_size(2);
    const int64_t n = weights.dim_size(1);
    Tensor *s_out_t, *u_out_t, *v_out_t;
    // batch x steps x n can pass int64 when n_in is 0 (empty spikes): checked shapes
    TensorShape seq;
    OP_REQUIRES_OK(context, CheckedShape(op, "spikes_out", {batch, steps, n}, &seq));
    OP_REQUIRES_OK(context, context->allocate_output(0, seq, &s_out_t));
    OP_REQUIRES_OK(context, context->allocate_output(1, seq, &u_out_t));
    OP_REQUIRES_OK(context, AllocateOutputChecked(context, op, 2, "v_last", {batch, n}, &v_out_t));
    OP_REQUIRES_OK(context, CheckEventIndexRange(n_in, op));
    EventRecorder<T> recorder(batch * steps);
    // no early return for n = 0 (no neurons): the scan below still walks the rows, since the
    // event list must describe `spikes` whatever the layer's width
    const T* x = spikes.flat<T>().data();
    const T* w = weights.flat<T>().data();
    const T* v0 = context->input(2).flat<T>().data();
    const T* beta = context->input(3).flat<T>().data();
    const T theta = context->input(4).scalar<T>()();
    T* s_out = s_out_t->flat<T>().data();
    T* u_out = u_out_t->flat<T>().data();
    T* v_out = v_out_t->flat<T>().data();
    const bool reset_zero = this->reset_zero();
    EventRecorder<T>* record = &recorder;
    auto rows_fn = [=](int64_t begin, int64_t end) {
      std::vector<int64_t> active(n_in + 16);  // slack for 8-wide stores
      auto* shard = record->Open(begin * steps, (end - begin) * steps, n_in);
      for (int64_t b = begin; b < end; ++b) {
        T* __restrict v = v_out + b * n;
        std::copy(v0 + b * n, v0 + (b + 1) * n, v);
        for (int64_t t = 0; t < steps; ++t) {
          const int64_t row = b * steps + t;
          const T* xr = x + row * n_in;
          T* __restrict u = u_out + row * n;
          T* __restrict st = s_out + row * n;
          std::fill(u, u + n, T(0));
          const int64_t count = CompactActive(xr, n_in, active.data());
          const int64_t* act = active.data();
          record->Add(shard, row, xr, act, count);
          AddEvents(
              u, n, count, [=](int64_t a) { return w + act[a] * n; },
              [=](int64_t a) { return xr[act[a]]; });
          for (int64_t j = 0; j < n; ++j) {
            const T uj = beta[j] * v[j] + u[j];
            const T s = Spike(uj, theta);
            u[j] = uj;
            st[j] = s;
            v[j] = AfterReset(uj, s, theta, reset_zero);
          }
        }
      }
    };
    const double cost = static_cast<double>(steps) * (n_in + n_in * (n / 10.0) + 6.0 * n) + 1;
    ParallelRange(context, batch, ShardCost(cost, batch), rows_fn);
    OP_REQUIRES_OK(context, recorder.Write(context, 3));
  }
};

#define REGISTER_KERNELS(T)                                                    \
  REGISTER_KERNEL_BUILDER(Name("KerasSpiking>SparseSpikeMatmul")              \
                              .Device(DEVICE_CPU)                              \
                              .TypeConstraint<T>("T"),                         \
                          SparseSpikeMatmulOp<T, false>);                      \
  REGISTER_KERNEL_BUILDER(Name("KerasSpiking>SparseSpikeMatmulEvents")        \
                              .Device(DEVICE_CPU)                              \
                              .TypeConstraint<T>("T"),                         \
                          SparseSpikeMatmulOp<T, true>);                       \
  REGISTER_KERNEL_BUILDER(Name("KerasSpiking>SparseEventsGradWeights")        \
                              .Device(DEVICE_CPU)                              \
                              .TypeConstraint<T>("T"),                         \
                          SparseEventsGradWeightsOp<T>);                       \
  REGISTER_KERNEL_BUILDER(Name("KerasSpiking>SparseSpikeMatmulGradWeights")   \
                              .Device(DEVICE_CPU)                              \
                              .TypeConstraint<T>("T"),                         \
                          SparseSpikeMatmulGradWeightsOp<T>);                  \
  REGISTER_KERNEL_BUILDER(Name("KerasSpiking>SparseLifStep")                  \
                              .Device(DEVICE_CPU)                              \
                              .TypeConstraint<T>("T"),                         \
                          SparseLifStepOp<T>);                                 \
  REGISTER_KERNEL_BUILDER(Name("KerasSpiking>SparseLifScan")                  \
                              .Device(DEVICE_CPU)                              \
                              .TypeConstraint<T>("T"),                         \
                          SparseLifScanOp<T>);

REGISTER_KERNELS(float);
REGISTER_KERNELS(double);
#undef REGISTER_KERNELS

}  // namespace keras_spiking
