// Shared helpers of the keras_spiking kernels: surrogate derivatives and batch sharding.
#ifndef KERAS_SPIKING_CUSTOM_OPS_COMMON_H_
#define KERAS_SPIKING_CUSTOM_OPS_COMMON_H_

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <string>

#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/lib/core/errors.h"
#include "tensorflow/core/util/work_sharder.h"

namespace keras_spiking {

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

// Runs fn(begin, end) over [0, total) on TF's intra-op thread pool; cost_per_unit is a rough
// count of cycles per unit of work (it only sets how finely the range is split).
inline void ParallelRange(tensorflow::OpKernelContext* context, int64_t total,
                          int64_t cost_per_unit,
                          const std::function<void(int64_t, int64_t)>& fn) {
  if (total <= 0) return;
  auto* threads = context->device()->tensorflow_cpu_worker_threads();
  tensorflow::Shard(threads->num_threads, threads->workers, total, cost_per_unit, fn);
}

// Number of worker threads of this op's device (at least 1).
inline int NumThreads(tensorflow::OpKernelContext* context) {
  const int n = context->device()->tensorflow_cpu_worker_threads()->num_threads;
  return n > 0 ? n : 1;
}

}  // namespace keras_spiking

#endif  // KERAS_SPIKING_CUSTOM_OPS_COMMON_H_
