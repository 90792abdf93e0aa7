// Fused time scans of the LIF, current-based LIF and leaky-integrator neurons (forward and
// surrogate-gradient BPTT backward), one op each instead of a while loop of small TF ops. The
// semantics are those of keras_spiking/scan.py without recurrent weights (a recurrent layer
// keeps the TF scan):
//
//   LIF:     u[t] = beta * v[t-1] + x[t];  S[t] = H(u[t] - theta);
//            v[t] = u[t] - theta S[t]  (reset "subtract")  or  u[t] (1 - S[t])  ("zero")
//   CubaLIF: S[t] = H(U[t] - theta);  I[t+1] = alpha I[t] + x[t];
//            U[t+1] = beta U[t] + I[t] - theta S[t]  or  (beta U[t] + I[t]) (1 - S[t])
//
// Tensors are batch-major [batch, T, n]; decays `alpha`, `beta` are per neuron [n]; the
// threshold is a scalar tensor. Each batch row is independent, so rows run in parallel on
// TF's intra-op threads; a row's state vector [n] stays in L1 while it steps through time.
// The backward recomputes spikes and surrogate derivatives from the stored membrane.

#include <algorithm>
#include <initializer_list>
#include <string>
#include <vector>

#include "absl/container/inlined_vector.h"
#include "absl/types/span.h"
#include "common.h"
#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"
#include "tensorflow/core/framework/tensor_shape.h"

namespace keras_spiking {

namespace {

// Every argument of a scan op is of one of four kinds: a sequence [batch, T, n], a state
// [batch, n], a per-neuron decay [n], or the scalar threshold.
enum class Arg { kSeq, kState, kDecay, kScalar };

struct ScanArg {
  const char* name;
  Arg kind;
};

// The inputs and outputs of each op, in the order of its REGISTER_OP below. One table serves
// the op's shape function, its kernel's input checks and its kernel's output allocation.
constexpr ScanArg kLifScanIn[] = {
    {"currents", Arg::kSeq}, {"v0", Arg::kState}, {"beta", Arg::kDecay},
    {"threshold", Arg::kScalar}};
constexpr ScanArg kLifScanOut[] = {
    {"spikes", Arg::kSeq}, {"membrane", Arg::kSeq}, {"v_last", Arg::kState}};
constexpr ScanArg kLifScanGradIn[] = {
    {"grad_spikes", Arg::kSeq}, {"grad_v_last", Arg::kState}, {"membrane", Arg::kSeq},
    {"v0", Arg::kState},        {"beta", Arg::kDecay},        {"threshold", Arg::kScalar}};
constexpr ScanArg kLifScanGradOut[] = {
    {"grad_currents", Arg::kSeq}, {"grad_v0", Arg::kState}, {"grad_beta", Arg::kDecay}};
constexpr ScanArg kCubaLifScanIn[] = {
    {"currents", Arg::kSeq}, {"i0", Arg::kState},   {"v0", Arg::kState},
    {"alpha", Arg::kDecay},  {"beta", Arg::kDecay}, {"threshold", Arg::kScalar}};
constexpr ScanArg kCubaLifScanOut[] = {
    {"spikes", Arg::kSeq},    {"synaptic", Arg::kSeq}, {"membrane", Arg::kSeq},
    {"i_last", Arg::kState}, {"v_last", Arg::kState}};
constexpr ScanArg kCubaLifScanGradIn[] = {
    {"grad_spikes", Arg::kSeq}, {"grad_i_last", Arg::kState}, {"grad_v_last", Arg::kState},
    {"synaptic", Arg::kSeq},    {"membrane", Arg::kSeq},      {"alpha", Arg::kDecay},
    {"beta", Arg::kDecay},      {"threshold", Arg::kScalar}};
constexpr ScanArg kCubaLifScanGradOut[] = {
    {"grad_currents", Arg::kSeq}, {"grad_i0", Arg::kState},   {"grad_v0", Arg::kState},
    {"grad_alpha", Arg::kDecay},  {"grad_beta", Arg::kDecay}};
constexpr ScanArg kLiScanIn[] = {
    {"currents", Arg::kSeq}, {"v0", Arg::kState}, {"beta", Arg::kDecay}};
constexpr ScanArg kLiScanOut[] = {{"membrane", Arg::kSeq}, {"v_last", Arg::kState}};
constexpr ScanArg kLiScanGradIn[] = {
    {"grad_membrane", Arg::kSeq}, {"grad_v_last", Arg::kState}, {"membrane", Arg::kSeq},
    {"v0", Arg::kState},          {"beta", Arg::kDecay}};
constexpr ScanArg kLiScanGradOut[] = {
    {"grad_currents", Arg::kSeq}, {"grad_v0", Arg::kState}, {"grad_beta", Arg::kDecay}};

using ScanArgs = absl::Span<const ScanArg>;

// The dimensions of an argument of this kind over the scan's (batch, steps, units), which may
// be sizes (int64_t) or shape-inference handles.
template <typename D>
absl::InlinedVector<D, 3> DimsOf(Arg kind, D batch, D steps, D units) {
  switch (kind) {
    case Arg::kSeq: return {batch, steps, units};
    case Arg::kState: return {batch, units};
    case Arg::kDecay: return {units};
    case Arg::kScalar: return {};
  }
  return {};
}

// The shape function of a scan op: merges the dimensions of its inputs (so that mismatches
// fail when the graph is built) and sets its outputs' shapes.
tensorflow::OpShapeInferenceFn ScanShapeFn(ScanArgs inputs, ScanArgs outputs) {
  return [inputs, outputs](InferenceContext* c) -> Status {
    DimensionHandle batch = c->UnknownDim(), steps = c->UnknownDim(), units = c->UnknownDim();
    for (size_t i = 0; i < inputs.size(); ++i) {
      const auto merged = DimsOf<DimensionHandle*>(inputs[i].kind, &batch, &steps, &units);
      ShapeHandle s;
      TF_RETURN_IF_ERROR(c->WithRank(c->input(i), merged.size(), &s));
      for (size_t axis = 0; axis < merged.size(); ++axis) {
        TF_RETURN_IF_ERROR(c->Merge(*merged[axis], c->Dim(s, axis), merged[axis]));
      }
    }
    for (size_t i = 0; i < outputs.size(); ++i) {
      const auto dims = DimsOf<DimensionHandle>(outputs[i].kind, batch, steps, units);
      c->set_output(i, c->MakeShape(std::vector<DimensionHandle>(dims.begin(), dims.end())));
    }
    return Status();
  };
}

// The sizes of a scan: batch rows, time steps, neurons.
struct ScanSizes {
  int64_t batch, steps, n;
};

// Checks a kernel's inputs against its op's table (the first input, a sequence, sets the
// sizes) and allocates its outputs from the table, shapes built with overflow checks.
Status PrepareScan(OpKernelContext* context, const char* op, ScanArgs inputs, ScanArgs outputs,
                   std::initializer_list<Tensor**> tensors, ScanSizes* sizes) {
  const Tensor& first = context->input(0);
  TF_RETURN_IF_ERROR(CheckInput(op, inputs[0].name, first, {-1, -1, -1}));
  const ScanSizes z = {first.dim_size(0), first.dim_size(1), first.dim_size(2)};
  for (size_t i = 1; i < inputs.size(); ++i) {
    TF_RETURN_IF_ERROR(CheckInput(op, inputs[i].name, context->input(i),
                                  DimsOf(inputs[i].kind, z.batch, z.steps, z.n)));
  }
  if (tensors.size() != outputs.size()) {
    return errors::Internal(op, ": ", tensors.size(), " outputs requested, the op has ",
                            outputs.size());
  }
  int index = 0;
  for (Tensor** tensor : tensors) {
    const ScanArg& out = outputs[index];
    TF_RETURN_IF_ERROR(AllocateOutputChecked(context, op, index, out.name,
                                             DimsOf(out.kind, z.batch, z.steps, z.n), tensor));
    ++index;
  }
  *sizes = z;
  return Status();
}

}  // namespace

REGISTER_OP("KerasSpiking>LifScan")
    .Input("currents: T")
    .Input("v0: T")
    .Input("beta: T")
    .Input("threshold: T")
    .Output("spikes: T")
    .Output("membrane: T")
    .Output("v_last: T")
    .Attr("reset: {'subtract', 'zero'} = 'subtract'")
    .Attr("T: {float, double}")
    .SetShapeFn(ScanShapeFn(kLifScanIn, kLifScanOut))
    .Doc("LIF scan: spikes, pre-reset membrane u[t] and the final membrane.");

REGISTER_OP("KerasSpiking>LifScanGrad")
    .Input("grad_spikes: T")
    .Input("grad_v_last: T")
    .Input("membrane: T")
    .Input("v0: T")
    .Input("beta: T")
    .Input("threshold: T")
    .Output("grad_currents: T")
    .Output("grad_v0: T")
    .Output("grad_beta: T")
    .Attr("reset: {'subtract', 'zero'} = 'subtract'")
    .Attr("detach_reset: bool = true")
    .Attr("surrogate: string")
    .Attr("scale: float")
    .Attr("decay_grad: bool = true")
    .Attr("T: {float, double}")
    .SetShapeFn(ScanShapeFn(kLifScanGradIn, kLifScanGradOut))
    .Doc("Surrogate-gradient BPTT of LifScan.");

REGISTER_OP("KerasSpiking>CubaLifScan")
    .Input("currents: T")
    .Input("i0: T")
    .Input("v0: T")
    .Input("alpha: T")
    .Input("beta: T")
    .Input("threshold: T")
    .Output("spikes: T")
    .Output("synaptic: T")
    .Output("membrane: T")
    .Output("i_last: T")
    .Output("v_last: T")
    .Attr("reset: {'subtract', 'zero'} = 'subtract'")
    .Attr("T: {float, double}")
    .SetShapeFn(ScanShapeFn(kCubaLifScanIn, kCubaLifScanOut))
    .Doc("Current-based LIF scan: spikes, I[t], U[t] (states entering step t), final states.");

// The same attributes, in the same order, as LifScanGrad's (SurrogateGradOp reads them).
REGISTER_OP("KerasSpiking>CubaLifScanGrad")
    .Input("grad_spikes: T")
    .Input("grad_i_last: T")
    .Input("grad_v_last: T")
    .Input("synaptic: T")
    .Input("membrane: T")
    .Input("alpha: T")
    .Input("beta: T")
    .Input("threshold: T")
    .Output("grad_currents: T")
    .Output("grad_i0: T")
    .Output("grad_v0: T")
    .Output("grad_alpha: T")
    .Output("grad_beta: T")
    .Attr("reset: {'subtract', 'zero'} = 'subtract'")
    .Attr("detach_reset: bool = true")
    .Attr("surrogate: string")
    .Attr("scale: float")
    .Attr("decay_grad: bool = true")
    .Attr("T: {float, double}")
    .SetShapeFn(ScanShapeFn(kCubaLifScanGradIn, kCubaLifScanGradOut))
    .Doc("Surrogate-gradient BPTT of CubaLifScan.");

REGISTER_OP("KerasSpiking>LiScan")
    .Input("currents: T")
    .Input("v0: T")
    .Input("beta: T")
    .Output("membrane: T")
    .Output("v_last: T")
    .Attr("T: {float, double}")
    .SetShapeFn(ScanShapeFn(kLiScanIn, kLiScanOut))
    .Doc("Leaky integrator scan: v[t] = beta v[t-1] + x[t], all steps and the last.");

REGISTER_OP("KerasSpiking>LiScanGrad")
    .Input("grad_membrane: T")
    .Input("grad_v_last: T")
    .Input("membrane: T")
    .Input("v0: T")
    .Input("beta: T")
    .Output("grad_currents: T")
    .Output("grad_v0: T")
    .Output("grad_beta: T")
    .Attr("decay_grad: bool = true")
    .Attr("T: {float, double}")
    .SetShapeFn(ScanShapeFn(kLiScanGradIn, kLiScanGradOut))
    .Doc("BPTT of LiScan.");

namespace {

// The decay gradient [n] of a BPTT kernel into `out`: the per-part partial sums
// partial[p * n + j], added in part order, or zeros when the op was built with
// decay_grad = false.
template <typename T>
void WriteDecayGrad(bool decay_grad, const T* partial, int64_t parts, int64_t n, Tensor* out) {
  T* grad = out->flat<T>().data();
  std::fill(grad, grad + n, T(0));
  if (!decay_grad) return;
  for (int64_t p = 0; p < parts; ++p) {
    for (int64_t j = 0; j < n; ++j) grad[j] += partial[p * n + j];
  }
}

template <typename T>
T ScalarValue(const Tensor& t) {
  return t.scalar<T>()();
}

// One step back in time of the LIF BPTT over n neurons (see LifScanGrad). Separate functions
// with restrict pointers and by-value scalars, so that g++ vectorises them over neurons.
template <Surrogate kShape, typename T>
inline void LifGradStep(int64_t n, T k, T theta, bool reset_zero, bool detach, bool first,
                        const T* __restrict ut, const T* __restrict gst,
                        const T* __restrict prev, const T* __restrict beta, T* __restrict gxt,
                        T* __restrict g_beta, T* __restrict g_v) {
  // The options enter as 0/1 weights, not selects: g++ gives up on loops with several
  // loop-invariant selects. Multiplying by an exact 0 or 1 changes no finite value.
  const T zero_w = reset_zero ? T(1) : T(0);
  const T sub_w = T(1) - zero_w;
  const T attach_w = detach ? T(0) : T(1);
  const T later_w = first ? T(0) : T(1);
  for (int64_t j = 0; j < n; ++j) {
    const T u = ut[j];
    const T d = SurrogateDerivative<kShape, T>(k, u - theta);
    const T s = Spike(u, theta);
    // d v[t] / d u[t]: 1 - theta S' (subtract) or 1 - S - u S' (zero); S' only if attached
    const T g_u = g_v[j] * (T(1) - zero_w * s - attach_w * d * (zero_w * u + sub_w * theta)) +
                  gst[j] * d;
    gxt[j] = g_u;
    // v[t-1]: u[t-1] after its reset, or v0 itself at t = 0
    const T up = prev[j];
    const T sp = Spike(up, theta);
    g_beta[j] += g_u * (up - later_w * sp * (zero_w * up + sub_w * theta));
    g_v[j] = beta[j] * g_u;
  }
}

// One step back in time of the current-based LIF BPTT (see CubaLifScanGrad).
template <Surrogate kShape, typename T>
inline void CubaGradStep(int64_t n, T k, T theta, bool reset_zero, bool detach,
                         const T* __restrict vt, const T* __restrict it,
                         const T* __restrict gst, const T* __restrict alpha,
                         const T* __restrict beta, T* __restrict gxt, T* __restrict g_alpha,
                         T* __restrict g_beta, T* __restrict g_i, T* __restrict g_v) {
  const T zero_w = reset_zero ? T(1) : T(0);  // 0/1 weights instead of selects, as above
  const T sub_w = T(1) - zero_w;
  const T attach_w = detach ? T(0) : T(1);
  for (int64_t j = 0; j < n; ++j) {
    const T v = vt[j];
    const T cur = it[j];
    const T d = SurrogateDerivative<kShape, T>(k, v - theta);
    const T s = Spike(v, theta);
    const T gv = g_v[j];
    const T gi = g_i[j];
    const T g_pre = gv * (T(1) - zero_w * s);
    // the reset's own dependence on S: -theta (subtract) or -(beta U + I) (zero)
    const T through_reset = gv * (zero_w * (beta[j] * v + cur) + sub_w * theta);
    const T g_s = gst[j] - attach_w * through_reset;
    gxt[j] = gi;
    g_alpha[j] += gi * cur;
    g_beta[j] += g_pre * v;
    g_v[j] = beta[j] * g_pre + g_s * d;
    g_i[j] = g_pre + alpha[j] * gi;
  }
}

}  // namespace

// Base of the BPTT kernels: reads the attributes they share and dispatches Compute to
// Derived::Run<kShape>, so that the surrogate is a compile-time choice in the loops.
template <typename Derived>
class SurrogateGradOp : public ResetOpKernel {
 public:
  SurrogateGradOp(OpKernelConstruction* context, const char* name)
      : ResetOpKernel(context, name) {
    std::string surrogate;
    float scale;
    OP_REQUIRES_OK(context, context->GetAttr("detach_reset", &detach_reset_));
    OP_REQUIRES_OK(context, context->GetAttr("surrogate", &surrogate));
    OP_REQUIRES_OK(context, context->GetAttr("scale", &scale));
    OP_REQUIRES_OK(context, context->GetAttr("decay_grad", &decay_grad_));
    OP_REQUIRES(context, ParseSurrogate(surrogate, &surrogate_),
                errors::InvalidArgument(name, ": unknown surrogate '", surrogate, "'"));
    OP_REQUIRES(context, scale > 0,
                errors::InvalidArgument(name, ": scale must be > 0, got ", scale));
    scale_ = scale;
  }

  void DoCompute(OpKernelContext* context) override {
    auto* self = static_cast<Derived*>(this);
    switch (surrogate_) {
      case Surrogate::kFastSigmoid: return self->template Run<Surrogate::kFastSigmoid>(context);
      case Surrogate::kArcTan: return self->template Run<Surrogate::kArcTan>(context);
      case Surrogate::kSigmoid: return self->template Run<Surrogate::kSigmoid>(context);
      case Surrogate::kTriangle: return self->template Run<Surrogate::kTriangle>(context);
      case Surrogate::kExponential: return self->template Run<Surrogate::kExponential>(context);
      case Surrogate::kGaussian: return self->template Run<Surrogate::kGaussian>(context);
      case Surrogate::kStraightThrough:
        return self->template Run<Surrogate::kStraightThrough>(context);
    }
  }

 protected:
  Surrogate surrogate_ = Surrogate::kFastSigmoid;
  float scale_ = 1.0f;
  bool detach_reset_ = true;
  bool decay_grad_ = true;
};

// ------------------------------------------------------------------------------------------
// LIF
// ------------------------------------------------------------------------------------------
template <typename T>
class LifScanOp : public ResetOpKernel {
 public:
  explicit LifScanOp(OpKernelConstruction* context) : ResetOpKernel(context, "LifScan") {}

  void DoCompute(OpKernelContext* context) override {
    const char* op = "LifScan";
    Tensor *spikes, *membrane, *v_last;
    ScanSizes sizes;
    OP_REQUIRES_OK(context, PrepareScan(context, op, kLifScanIn, kLifScanOut,
                                        {&spikes, &membrane, &v_last}, &sizes));
    const int64_t batch = sizes.batch, steps = sizes.steps, n = sizes.n;
    const T* x = context->input(0).flat<T>().data();
    const T* v0 = context->input(1).flat<T>().data();
    const T* beta = context->input(2).flat<T>().data();
    const T theta = ScalarValue<T>(context->input(3));
    T* s_out = spikes->flat<T>().data();
    T* u_out = membrane->flat<T>().data();
    T* v_out = v_last->flat<T>().data();
    const bool reset_zero = this->reset_zero();
    ForEachPart(context, batch, NumParts(context, batch), static_cast<double>(steps) * n * 6,
                [&](int64_t, int64_t b0, int64_t b1) {
                  for (int64_t b = b0; b < b1; ++b) {
                    T* v = v_out + b * n;
                    std::copy(v0 + b * n, v0 + (b + 1) * n, v);
                    for (int64_t t = 0; t < steps; ++t) {
                      const int64_t off = (b * steps + t) * n;
                      const T* xt = x + off;
                      T* st = s_out + off;
                      T* ut = u_out + off;
                      #pragma GCC ivdep
                      for (int64_t j = 0; j < n; ++j) {
                        const T u = beta[j] * v[j] + xt[j];
                        const T s = Spike(u, theta);
                        ut[j] = u;
                        st[j] = s;
                        v[j] = AfterReset(u, s, theta, reset_zero);
                      }
                    }
                  }
                });
  }
};

template <typename T>
class LifScanGradOp : public SurrogateGradOp<LifScanGradOp<T>> {
 public:
  explicit LifScanGradOp(OpKernelConstruction* context)
      : SurrogateGradOp<LifScanGradOp<T>>(context, "LifScanGrad") {}

  template <Surrogate kShape>
  void Run(OpKernelContext* context) {
    const char* op = "LifScanGrad";
    Tensor *g_x_t, *g_v0_t, *g_beta_t;
    ScanSizes sizes;
    OP_REQUIRES_OK(context, PrepareScan(context, op, kLifScanGradIn, kLifScanGradOut,
                                        {&g_x_t, &g_v0_t, &g_beta_t}, &sizes));
    const int64_t batch = sizes.batch, steps = sizes.steps, n = sizes.n;
    const T* gs = context->input(0).flat<T>().data();
    const T* g_v_last = context->input(1).flat<T>().data();
    const T* u_all = context->input(2).flat<T>().data();
    const T* v0 = context->input(3).flat<T>().data();
    const T* beta = context->input(4).flat<T>().data();
    const T theta = ScalarValue<T>(context->input(5));
    T* g_x = g_x_t->flat<T>().data();
    T* g_v0 = g_v0_t->flat<T>().data();
    const T k = static_cast<T>(this->scale_);
    const bool reset_zero = this->reset_zero(), detach = this->detach_reset_;
    const int64_t parts = NumParts(context, batch);
    // The loop bodies are branch-free (loop-invariant options become selects and the decay
    // gradient is always accumulated) so that the compiler vectorises them over neurons.
    std::vector<T> partial(parts * n, T(0));
    const double row_cost = static_cast<double>(steps) * n * 12;
    ForEachPart(context, batch, parts, row_cost, [&](int64_t p, int64_t b0, int64_t b1) {
      T* __restrict g_beta_part = partial.data() + p * n;
      // A slice of kSlice neurons at a time walks all steps back, its dL/dv and decay gradient
      // in small local buffers: carried in place in the [batch, n] output and the partial sums,
      // their stores each step stalled the loads of the next (the step took 4-5x the forward
      // scan); the slice's rows of the big tensors stay in L2 between slices.
      constexpr int64_t kSlice = 32;
      alignas(64) T g_v[kSlice];
      alignas(64) T g_b[kSlice];
      for (int64_t b = b0; b < b1; ++b) {
        for (int64_t c = 0; c < n; c += kSlice) {
          const int64_t w = std::min(kSlice, n - c);
          std::copy(g_v_last + b * n + c, g_v_last + b * n + c + w, g_v);
          std::fill(g_b, g_b + w, T(0));
          for (int64_t t = steps - 1; t >= 0; --t) {
            const int64_t off = (b * steps + t) * n + c;
            const T* __restrict ut = u_all + off;
            const T* __restrict gst = gs + off;
            T* __restrict gxt = g_x + off;
            // v[t-1]: the reset of u[t-1], or v0 at t = 0
            const bool first = t == 0;
            const T* __restrict prev = first ? v0 + b * n + c : u_all + off - n;
            LifGradStep<kShape, T>(w, k, theta, reset_zero, detach, first, ut, gst, prev,
                                   beta + c, gxt, g_b, g_v);
          }
          std::copy(g_v, g_v + w, g_v0 + b * n + c);  // dL/dv0
          for (int64_t j = 0; j < w; ++j) g_beta_part[c + j] += g_b[j];
        }
      }
    });
    WriteDecayGrad(this->decay_grad_, partial.data(), parts, n, g_beta_t);
  }
};

// ------------------------------------------------------------------------------------------
// Current-based LIF
// ------------------------------------------------------------------------------------------
template <typename T>
class CubaLifScanOp : public ResetOpKernel {
 public:
  explicit CubaLifScanOp(OpKernelConstruction* context)
      : ResetOpKernel(context, "CubaLifScan") {}

  void DoCompute(OpKernelContext* context) override {
    const char* op = "CubaLifScan";
    Tensor *spikes, *i_all, *v_all, *i_last, *v_last;
    ScanSizes sizes;
    OP_REQUIRES_OK(context, PrepareScan(context, op, kCubaLifScanIn, kCubaLifScanOut,
                                        {&spikes, &i_all, &v_all, &i_last, &v_last}, &sizes));
    const int64_t batch = sizes.batch, steps = sizes.steps, n = sizes.n;
    const T* x = context->input(0).flat<T>().data();
    const T* i0 = context->input(1).flat<T>().data();
    const T* v0 = context->input(2).flat<T>().data();
    const T* alpha = context->input(3).flat<T>().data();
    const T* beta = context->input(4).flat<T>().data();
    const T theta = ScalarValue<T>(context->input(5));
    T* s_out = spikes->flat<T>().data();
    T* i_out = i_all->flat<T>().data();
    T* v_out = v_all->flat<T>().data();
    T* i_state = i_last->flat<T>().data();
    T* v_state = v_last->flat<T>().data();
    const bool reset_zero = this->reset_zero();
    ForEachPart(context, batch, NumParts(context, batch), static_cast<double>(steps) * n * 8,
                [&](int64_t, int64_t b0, int64_t b1) {
                  for (int64_t b = b0; b < b1; ++b) {
                    T* cur = i_state + b * n;
                    T* v = v_state + b * n;
                    std::copy(i0 + b * n, i0 + (b + 1) * n, cur);
                    std::copy(v0 + b * n, v0 + (b + 1) * n, v);
                    for (int64_t t = 0; t < steps; ++t) {
                      const int64_t off = (b * steps + t) * n;
                      #pragma GCC ivdep
                      for (int64_t j = 0; j < n; ++j) {
                        const T s = Spike(v[j], theta);
                        s_out[off + j] = s;
                        i_out[off + j] = cur[j];
                        v_out[off + j] = v[j];
                        v[j] = AfterReset(beta[j] * v[j] + cur[j], s, theta, reset_zero);
                        cur[j] = alpha[j] * cur[j] + x[off + j];
                      }
                    }
                  }
                });
  }
};

template <typename T>
class CubaLifScanGradOp : public SurrogateGradOp<CubaLifScanGradOp<T>> {
 public:
  explicit CubaLifScanGradOp(OpKernelConstruction* context)
      : SurrogateGradOp<CubaLifScanGradOp<T>>(context, "CubaLifScanGrad") {}

  template <Surrogate kShape>
  void Run(OpKernelContext* context) {
    const char* op = "CubaLifScanGrad";
    Tensor *g_x_t, *g_i0_t, *g_v0_t, *g_alpha_t, *g_beta_t;
    ScanSizes sizes;
    OP_REQUIRES_OK(context, PrepareScan(context, op, kCubaLifScanGradIn, kCubaLifScanGradOut,
                                        {&g_x_t, &g_i0_t, &g_v0_t, &g_alpha_t, &g_beta_t}, &sizes));
    const int64_t batch = sizes.batch, steps = sizes.steps, n = sizes.n;
    const T* gs = context->input(0).flat<T>().data();
    const T* g_i_last = context->input(1).flat<T>().data();
    const T* g_v_last = context->input(2).flat<T>().data();
    const T* i_all = context->input(3).flat<T>().data();
    const T* v_all = context->input(4).flat<T>().data();
    const T* alpha = context->input(5).flat<T>().data();
    const T* beta = context->input(6).flat<T>().data();
    const T theta = ScalarValue<T>(context->input(7));
    T* g_x = g_x_t->flat<T>().data();
    T* g_i0 = g_i0_t->flat<T>().data();
    T* g_v0 = g_v0_t->flat<T>().data();
    const T k = static_cast<T>(this->scale_);
    const bool reset_zero = this->reset_zero(), detach = this->detach_reset_;
    const int64_t parts = NumParts(context, batch);
    // branch-free loop body, as in LifScanGrad, so that it vectorises over neurons; the
    // partial sums of the alpha gradient, then those of the beta gradient
    std::vector<T> partial(2 * parts * n, T(0));
    const double row_cost = static_cast<double>(steps) * n * 14;
    ForEachPart(context, batch, parts, row_cost, [&](int64_t p, int64_t b0, int64_t b1) {
      T* __restrict g_alpha_part = partial.data() + p * n;
      T* __restrict g_beta_part = partial.data() + (parts + p) * n;
      for (int64_t b = b0; b < b1; ++b) {
        T* __restrict g_i = g_i0 + b * n;  // dL/dI[t+1], carried backward in place
        T* __restrict g_v = g_v0 + b * n;  // dL/dU[t+1]
        std::copy(g_i_last + b * n, g_i_last + (b + 1) * n, g_i);
        std::copy(g_v_last + b * n, g_v_last + (b + 1) * n, g_v);
        for (int64_t t = steps - 1; t >= 0; --t) {
          const int64_t off = (b * steps + t) * n;
          const T* __restrict vt = v_all + off;
          const T* __restrict it = i_all + off;
          const T* __restrict gst = gs + off;
          T* __restrict gxt = g_x + off;
          CubaGradStep<kShape, T>(n, k, theta, reset_zero, detach, vt, it, gst, alpha, beta, gxt,
                                  g_alpha_part, g_beta_part, g_i, g_v);
        }
      }
    });
    WriteDecayGrad(this->decay_grad_, partial.data(), parts, n, g_alpha_t);
    WriteDecayGrad(this->decay_grad_, partial.data() + parts * n, parts, n, g_beta_t);
  }
};

// ------------------------------------------------------------------------------------------
// Leaky integrator (the non-spiking readout)
// ------------------------------------------------------------------------------------------
template <typename T>
class LiScanOp : public GuardedOpKernel {
 public:
  explicit LiScanOp(OpKernelConstruction* context) : GuardedOpKernel(context, "LiScan") {}

  void DoCompute(OpKernelContext* context) override {
    const char* op = "LiScan";
    Tensor *membrane, *v_last;
    ScanSizes sizes;
    OP_REQUIRES_OK(context, PrepareScan(context, op, kLiScanIn, kLiScanOut,
                                        {&membrane, &v_last}, &sizes));
    const int64_t batch = sizes.batch, steps = sizes.steps, n = sizes.n;
    const T* x = context->input(0).flat<T>().data();
    const T* v0 = context->input(1).flat<T>().data();
    const T* beta = context->input(2).flat<T>().data();
    T* v_out = membrane->flat<T>().data();
    T* v_state = v_last->flat<T>().data();
    ForEachPart(context, batch, NumParts(context, batch), static_cast<double>(steps) * n * 3,
                [&](int64_t, int64_t b0, int64_t b1) {
                  for (int64_t b = b0; b < b1; ++b) {
                    T* __restrict v = v_state + b * n;
                    std::copy(v0 + b * n, v0 + (b + 1) * n, v);
                    for (int64_t t = 0; t < steps; ++t) {
                      const int64_t off = (b * steps + t) * n;
                      const T* __restrict xt = x + off;
                      T* __restrict vt = v_out + off;
                      for (int64_t j = 0; j < n; ++j) {
                        v[j] = beta[j] * v[j] + xt[j];
                        vt[j] = v[j];
                      }
                    }
                  }
                });
  }
};

template <typename T>
class LiScanGradOp : public GuardedOpKernel {
 public:
  explicit LiScanGradOp(OpKernelConstruction* context)
      : GuardedOpKernel(context, "LiScanGrad") {
    OP_REQUIRES_OK(context, context->GetAttr("decay_grad", &decay_grad_));
  }

  void DoCompute(OpKernelContext* context) override {
    const char* op = "LiScanGrad";
    Tensor *g_x_t, *g_v0_t, *g_beta_t;
    ScanSizes sizes;
    OP_REQUIRES_OK(context, PrepareScan(context, op, kLiScanGradIn, kLiScanGradOut,
                                        {&g_x_t, &g_v0_t, &g_beta_t}, &sizes));
    const int64_t batch = sizes.batch, steps = sizes.steps, n = sizes.n;
    const T* gm = context->input(0).flat<T>().data();
    const T* g_v_last = context->input(1).flat<T>().data();
    const T* v_all = context->input(2).flat<T>().data();
    const T* v0 = context->input(3).flat<T>().data();
    const T* beta = context->input(4).flat<T>().data();
    T* g_x = g_x_t->flat<T>().data();
    T* g_v0 = g_v0_t->flat<T>().data();
    const int64_t parts = NumParts(context, batch);
    std::vector<T> partial(parts * n, T(0));
    const double row_cost = static_cast<double>(steps) * n * 4;
    ForEachPart(context, batch, parts, row_cost, [&](int64_t p, int64_t b0, int64_t b1) {
      T* __restrict g_beta = partial.data() + p * n;
      for (int64_t b = b0; b < b1; ++b) {
        T* __restrict g_v = g_v0 + b * n;  // dL/dv[t] from later steps, carried backward
        std::copy(g_v_last + b * n, g_v_last + (b + 1) * n, g_v);
        for (int64_t t = steps - 1; t >= 0; --t) {
          const int64_t off = (b * steps + t) * n;
          const T* __restrict gmt = gm + off;
          const T* __restrict prev = t > 0 ? v_all + off - n : v0 + b * n;  // v[t-1]
          T* __restrict gxt = g_x + off;
          for (int64_t j = 0; j < n; ++j) {
            const T g = gmt[j] + g_v[j];
            gxt[j] = g;
            g_beta[j] += g * prev[j];
            g_v[j] = beta[j] * g;
          }
        }
      }
    });
    WriteDecayGrad(decay_grad_, partial.data(), parts, n, g_beta_t);
  }

 private:
  bool decay_grad_ = true;
};

#define REGISTER_KERNELS(T)                                                               \
  REGISTER_KERNEL_BUILDER(                                                                \
      Name("KerasSpiking>LifScan").Device(DEVICE_CPU).TypeConstraint<T>("T"),             \
      LifScanOp<T>);                                                                      \
  REGISTER_KERNEL_BUILDER(                                                                \
      Name("KerasSpiking>LifScanGrad").Device(DEVICE_CPU).TypeConstraint<T>("T"),         \
      LifScanGradOp<T>);                                                                  \
  REGISTER_KERNEL_BUILDER(                                                                \
      Name("KerasSpiking>CubaLifScan").Device(DEVICE_CPU).TypeConstraint<T>("T"),         \
      CubaLifScanOp<T>);                                                                  \
  REGISTER_KERNEL_BUILDER(                                                                \
      Name("KerasSpiking>CubaLifScanGrad").Device(DEVICE_CPU).TypeConstraint<T>("T"),     \
      CubaLifScanGradOp<T>);                                                              \
  REGISTER_KERNEL_BUILDER(                                                                \
      Name("KerasSpiking>LiScan").Device(DEVICE_CPU).TypeConstraint<T>("T"), LiScanOp<T>); \
  REGISTER_KERNEL_BUILDER(                                                                \
      Name("KerasSpiking>LiScanGrad").Device(DEVICE_CPU).TypeConstraint<T>("T"),          \
      LiScanGradOp<T>);

REGISTER_KERNELS(float);
REGISTER_KERNELS(double);
#undef REGISTER_KERNELS

}  // namespace keras_spiking
