// Shared helpers of the keras_spiking kernels: surrogate derivatives and batch sharding.
#ifndef KERAS_SPIKING_CUSTOM_OPS_COMMON_H_
#define KERAS_SPIKING_CUSTOM_OPS_COMMON_H_

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

template <typename T>
inline T SurrogateDerivative(Surrogate shape, T k, T x) {
  switch (shape) {
    case Surrogate::kFastSigmoid: {
      const T d = k * std::abs(x) + T(1);
      return T(1) / (d * d);
    }
    case Surrogate::kArcTan: {
      const T z = T(M_PI) * k * x;
      return T(1) / (T(1) + z * z);
    }
    case Surrogate::kSigmoid: {
      const T s = T(1) / (T(1) + std::exp(-k * x));
      return k * s * (T(1) - s);
    }
    case Surrogate::kTriangle: {
      const T r = T(1) - k * std::abs(x);
      return r > T(0) ? r : T(0);
    }
    case Surrogate::kExponential:
      return std::exp(-k * std::abs(x));
    case Surrogate::kGaussian: {
      const T z = k * x;
      return std::exp(T(-0.5) * z * z);
    }
    case Surrogate::kStraightThrough:
      return k;
  }
  return T(0);
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
