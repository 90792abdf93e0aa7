// Shared helpers of the keras_spiking kernels: the TensorFlow names they use, surrogate
// derivatives, the LIF spike and reset, input and attribute checks, batch sharding, and the
// guards that turn oversized shapes and failed host allocations into error statuses.
// Helpers used by more than one source live here, once: tests/test_compile_matrix.py compiles
// all sources as one translation unit, so two files may not define the same name (and what
// is defined here is inline or a template).
#ifndef KERAS_SPIKING_CUSTOM_OPS_COMMON_H_
#define KERAS_SPIKING_CUSTOM_OPS_COMMON_H_

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <exception>
#include <functional>
#include <initializer_list>
#include <limits>
#include <mutex>
#include <new>
#include <stdexcept>
#include <string>

#include "absl/types/span.h"
#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"
#include "tensorflow/core/framework/tensor.h"
#include "tensorflow/core/framework/tensor_shape.h"
#include "tensorflow/core/lib/core/errors.h"
#include "tensorflow/core/util/work_sharder.h"

namespace keras_spiking {

using ::tensorflow::DEVICE_CPU;
using ::tensorflow::OpKernelConstruction;
using ::tensorflow::OpKernelContext;
using ::tensorflow::Status;
using ::tensorflow::Tensor;
using ::tensorflow::TensorShape;
using ::tensorflow::TensorShapeUtils;
using ::tensorflow::shape_inference::DimensionHandle;
using ::tensorflow::shape_inference::InferenceContext;
using ::tensorflow::shape_inference::ShapeHandle;
namespace errors = ::tensorflow::errors;

// The surrogate shapes of keras_spiking/surrogates.py, by registry name. Each gives dS/dx at
// x = u - threshold for a sharpness k ("scale"); the Python classes hold the same formulas.
enum class Surrogate {
  kFastSigmoid,
  kArcTan,
  kSigmoid,
  kTriangle,
  kExponential,
  kGaussian,
  kStraightThrough,
};

inline bool ParseSurrogate(const std::string& name, Surrogate* out) {
  if (name == "fast_sigmoid") {
    *out = Surrogate::kFastSigmoid;
  } else if (name == "arctan") {
    *out = Surrogate::kArcTan;
  } else if (name == "sigmoid") {
    *out = Surrogate::kSigmoid;
  } else if (name == "triangle") {
    *out = Surrogate::kTriangle;
  } else if (name == "exponential") {
    *out = Surrogate::kExponential;
  } else if (name == "gaussian") {
    *out = Surrogate::kGaussian;
  } else if (name == "straight_through") {
    *out = Surrogate::kStraightThrough;
  } else {
    return false;
  }
  return true;
}

// dS/dx of the surrogate `kShape`; a template so that the choice is made at compile time and
// the neuron loops that call it stay branch-free (and vectorise).
template <Surrogate kShape, typename T>
inline T SurrogateDerivative(T k, T x) {
  if constexpr (kShape == Surrogate::kFastSigmoid) {
    const T d = k * std::abs(x) + T(1);
    return T(1) / (d * d);
  } else if constexpr (kShape == Surrogate::kArcTan) {
    const T z = T(M_PI) * k * x;
    return T(1) / (T(1) + z * z);
  } else if constexpr (kShape == Surrogate::kSigmoid) {
    const T s = T(1) / (T(1) + std::exp(-k * x));
    return k * s * (T(1) - s);
  } else if constexpr (kShape == Surrogate::kTriangle) {
    return std::max(T(1) - k * std::abs(x), T(0));
  } else if constexpr (kShape == Surrogate::kExponential) {
    return std::exp(-k * std::abs(x));
  } else if constexpr (kShape == Surrogate::kGaussian) {
    const T z = k * x;
    return std::exp(T(-0.5) * z * z);
  } else {
    static_assert(kShape == Surrogate::kStraightThrough, "unhandled surrogate");
    return k;
  }
}

// The spike of a membrane u against the threshold theta: S = H(u - theta), 1 when u > theta.
template <typename T>
inline T Spike(T u, T theta) {
  return u > theta ? T(1) : T(0);
}

// The membrane after the reset by a spike s (0 or 1): u - theta s ("subtract") or u (1 - s)
// ("zero"); the forward rule of every LIF and CubaLIF kernel.
template <typename T>
inline T AfterReset(T u, T s, T theta, bool reset_zero) {
  return reset_zero ? u * (T(1) - s) : u - theta * s;
}

// The largest count an int attribute (steps, max_spikes) may hold: the kernels store step
// indices and spike counts as int32, as the pure-TF twins do.
constexpr int64_t kMaxCount = std::numeric_limits<int32_t>::max();

// A sharding cost per unit, computed in double so that products of large sizes cannot wrap,
// and clamped so that `total * cost` stays far from int64 overflow inside tensorflow::Shard.
inline int64_t ShardCost(double cost, int64_t total) {
  const double cap = 4.0e18 / static_cast<double>(std::max<int64_t>(total, 1));
  if (!(cost >= 1.0)) return 1;  // also NaN
  return static_cast<int64_t>(std::min({cost, cap, 1.0e15}));
}

// Runs fn(begin, end) over [0, total) on TF's intra-op thread pool; cost_per_unit is a rough
// count of cycles per unit of work (it only sets how finely the range is split).
//
// A C++ exception thrown by fn (std::bad_alloc from a scratch vector, ...) must not unwind
// through TF's thread pool, which would terminate the process: it is caught on the worker,
// kept, and rethrown here on the calling thread once every shard has finished, where
// GuardedOpKernel::Compute turns it into an error status.
inline void ParallelRange(OpKernelContext* context, int64_t total, int64_t cost_per_unit,
                          const std::function<void(int64_t, int64_t)>& fn) {
  if (total <= 0) return;
  std::mutex mutex;
  std::exception_ptr error;
  auto guarded = [&](int64_t begin, int64_t end) {
    try {
      fn(begin, end);
    } catch (...) {
      std::lock_guard<std::mutex> lock(mutex);
      if (!error) error = std::current_exception();
    }
  };
  auto* threads = context->device()->tensorflow_cpu_worker_threads();
  tensorflow::Shard(threads->num_threads, threads->workers, total,
                    ShardCost(static_cast<double>(cost_per_unit), total), guarded);
  if (error) std::rethrow_exception(error);
}

// Number of worker threads of this op's device (at least 1).
inline int NumThreads(OpKernelContext* context) {
  const int n = context->device()->tensorflow_cpu_worker_threads()->num_threads;
  return n > 0 ? n : 1;
}

// Validates one input against the expected rank and dimensions (-1: any), e.g.
// CheckInput(op, "beta", beta, {n}); {} is a scalar.
inline Status CheckInput(const char* op, const char* name, const Tensor& t,
                         absl::Span<const int64_t> dims) {
  if (t.dims() != static_cast<int>(dims.size())) {
    return errors::InvalidArgument(op, ": `", name, "` must have rank ", dims.size(),
                                   ", got shape ", t.shape().DebugString());
  }
  int axis = 0;
  for (int64_t want : dims) {
    if (want >= 0 && t.dim_size(axis) != want) {
      return errors::InvalidArgument(op, ": `", name, "` has shape ", t.shape().DebugString(),
                                     "; dimension ", axis, " must be ", want);
    }
    ++axis;
  }
  return Status();
}

// The check of two sizes that must agree (e.g. the columns of `spikes` and the rows of
// `weights`): "op: `a` has A <what_a> but `b` has B <what_b>; they must match".
inline Status CheckSameSize(const char* op, const char* a, int64_t size_a, const char* what_a,
                            const char* b, int64_t size_b, const char* what_b) {
  if (size_a == size_b) return Status();
  return errors::InvalidArgument(op, ": `", a, "` has ", size_a, " ", what_a, " but `", b,
                                 "` has ", size_b, " ", what_b, "; they must match");
}

// The number of contiguous parts [0, batch) is split into: at most one per thread (per-part
// partial sums are sized by it).
inline int64_t NumParts(OpKernelContext* context, int64_t batch) {
  return std::max<int64_t>(1, std::min<int64_t>(batch, NumThreads(context)));
}

// Runs fn(part, begin, end) over `parts` contiguous parts of [0, batch) on TF's pool.
template <typename Fn>
void ForEachPart(OpKernelContext* context, int64_t batch, int64_t parts, double cost_per_row,
                 Fn fn) {
  const int64_t rows_per_part = (batch + parts - 1) / std::max<int64_t>(parts, 1);
  const double cost = static_cast<double>(rows_per_part) * cost_per_row + 1;
  ParallelRange(context, parts, ShardCost(cost, parts), [&](int64_t begin, int64_t end) {
    for (int64_t p = begin; p < end; ++p) {
      const int64_t b0 = p * rows_per_part;
      const int64_t b1 = std::min(batch, b0 + rows_per_part);
      if (b0 < b1) fn(p, b0, b1);
    }
  });
}

// An output or scratch shape whose element count is checked for int64 overflow (the
// TensorShape constructor aborts the process instead). `what` names the tensor in the error.
inline Status CheckedShape(const char* op, const char* what, absl::Span<const int64_t> dims,
                           TensorShape* out) {
  const Status status = TensorShape::BuildTensorShape(dims, out);
  if (status.ok()) return status;
  std::string listed;
  for (const int64_t d : dims) {
    if (!listed.empty()) listed += ", ";
    listed += std::to_string(d);
  }
  return errors::InvalidArgument(op, ": `", what, "` of shape [", listed, "] is too large: ",
                                 status.message());
}

// allocate_output of a shape built by CheckedShape.
inline Status AllocateOutputChecked(OpKernelContext* context, const char* op, int index,
                                    const char* what, absl::Span<const int64_t> dims,
                                    Tensor** out) {
  TensorShape shape;
  TF_RETURN_IF_ERROR(CheckedShape(op, what, dims, &shape));
  return context->allocate_output(index, shape, out);
}

// An int attribute that counts something (steps, max_spikes): in [1, kMaxCount].
inline Status CheckCountAttr(const char* op, const char* name, int64_t value) {
  if (value < 1 || value > kMaxCount) {
    return errors::InvalidArgument(op, ": `", name, "` must be >= 1 and <= ", kMaxCount,
                                   " (it is stored as int32), got ", value);
  }
  return Status();
}

// Base of every keras_spiking kernel: Compute runs DoCompute and converts a C++ exception
// that escapes it (a host allocation that failed, a std::vector too long for its size) into
// an error status, so that Python gets a tf.errors exception instead of a dead process.
class GuardedOpKernel : public tensorflow::OpKernel {
 public:
  GuardedOpKernel(OpKernelConstruction* context, const char* op)
      : tensorflow::OpKernel(context), op_(op) {}

  void Compute(OpKernelContext* context) final {
    try {
      DoCompute(context);
    } catch (const std::bad_alloc&) {
      context->SetStatus(errors::ResourceExhausted(
          op_, ": out of host memory for the kernel's scratch buffers (the inputs or the "
               "layer's sizes are too large for this machine)"));
    } catch (const std::length_error& e) {
      context->SetStatus(errors::ResourceExhausted(
          op_, ": a scratch buffer would be too large (", e.what(), ")"));
    } catch (const std::exception& e) {
      context->SetStatus(errors::Internal(op_, ": ", e.what()));
    } catch (...) {
      context->SetStatus(errors::Internal(op_, ": unknown C++ exception"));
    }
  }

 protected:
  virtual void DoCompute(OpKernelContext* context) = 0;
  const char* op_name() const { return op_; }

 private:
  const char* op_;
};

// Base of the kernels of ops with the attribute `reset: {'subtract', 'zero'}` (the LIF and
// CubaLIF scans, their gradients, the event-driven LIF kernels): reads it once.
class ResetOpKernel : public GuardedOpKernel {
 public:
  ResetOpKernel(OpKernelConstruction* context, const char* op) : GuardedOpKernel(context, op) {
    std::string reset;
    OP_REQUIRES_OK(context, context->GetAttr("reset", &reset));
    reset_zero_ = reset == "zero";
  }

 protected:
  // reset "zero" (else "subtract"), the argument of AfterReset
  bool reset_zero() const { return reset_zero_; }

 private:
  bool reset_zero_ = false;
};

}  // namespace keras_spiking

#endif  // KERAS_SPIKING_CUSTOM_OPS_COMMON_H_
