// EventProp (Wunderlich & Pehle 2021) for current-based LIF layers: the gridded forward pass
// with its per-spike record, the leaky-integrator readout, and the adjoint (backward) pass. The
// pure-TF twins are _spiking_forward, _readout_forward and _backward in
// keras_spiking/eventprop.py, whose module docstring has the model and the math; these kernels
// use the same formulas in the same dtype, and the same order where it matters.
//
//   KerasSpiking>EventPropSpikingForward: the spiking layer; per-spike buffers (time, step,
//       phi, slope D, current I^-), spike counts and the number of spikes lost to full buffers.
//   KerasSpiking>EventPropReadoutForward: the non-spiking readout (max, integral, last,
//       sequence of the membrane voltage) and the step of the maximum.
//   KerasSpiking>EventPropBackward: dL/d(input spike times), dL/dkernel, dL/drecurrent of
//       either (attr `spiking`), from dL/d(output spike times) or the readout's gradient.
//
// Event-driven: each input spike is decoded once (its step and its responses b(h), g(h),
// b'(h), g'(h)), the spikes of a batch row are bucketed by step, and a step touches the kernel
// rows of the inputs that spiked in it only (work ~ spikes x fan-out, plus steps x units for
// the neuron updates), both forward and backward; recurrent rows likewise for the neurons that
// spiked. Batch rows are independent and run in parallel on TF's intra-op threads; the weight
// gradients are summed per thread and then over threads.
//
// Memory: the per-thread scratch grows with the units and the spikes, not with `steps` (see
// StepIndex), so a long window costs time only; the attributes `steps` and `max_spikes` are
// refused outside [1, 2^31 - 1] (int32 indices, as in the twin), output shapes are built with
// overflow checks, and a host allocation that fails becomes a ResourceExhausted status
// (GuardedOpKernel in common.h) instead of an abort.
//
// The time constants, threshold and dt come in a float64 tensor `kinetics` = [tau_mem,
// tau_syn, threshold, dt] rather than float attrs (which are 32-bit): the twin derives its
// constants from Python floats, and float64 results only agree to ~1e-10 if the kernels start
// from the same doubles. As in the twin, derived constants (decays over dt, kappa, ...) are
// computed in double and then rounded to the tensor dtype.
//
// One difference from the twin's dense matmuls: a NaN or inf weight does not reach neurons
// through inputs that did not spike (a dense matmul gives 0 * inf = NaN), as in
// sparse_spike_matmul.cc.

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "Eigen/Core"
#include "common.h"
#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"
#include "tensorflow/core/framework/tensor_shape.h"

namespace keras_spiking {

namespace {

// Shape-function helpers. times_in [B, F, K], kernel [F, N], recurrent [N, N] or [0, 0],
// kinetics [4].
struct EventPropDims {
  DimensionHandle batch, inputs, units;
};

Status MergeInputsAndKernel(InferenceContext* c, EventPropDims* d) {
  ShapeHandle times, kernel, kinetics;
  TF_RETURN_IF_ERROR(c->WithRank(c->input(0), 3, &times));
  TF_RETURN_IF_ERROR(c->WithRank(c->input(1), 2, &kernel));
  d->batch = c->Dim(times, 0);
  TF_RETURN_IF_ERROR(c->Merge(c->Dim(times, 1), c->Dim(kernel, 0), &d->inputs));
  d->units = c->Dim(kernel, 1);
  return Status();
}

Status CheckKineticsShape(InferenceContext* c, int index) {
  ShapeHandle s;
  TF_RETURN_IF_ERROR(c->WithRank(c->input(index), 1, &s));
  DimensionHandle unused;
  return c->WithValue(c->Dim(s, 0), 4, &unused);
}

Status PositiveAttr(InferenceContext* c, const char* name, int64_t* value) {
  TF_RETURN_IF_ERROR(c->GetAttr(name, value));
  return CheckCountAttr("EventProp", name, *value);
}

}  // namespace

REGISTER_OP("KerasSpiking>EventPropSpikingForward")
    .Input("times_in: T")
    .Input("kernel: T")
    .Input("recurrent: T")
    .Input("kinetics: double")
    .Output("times: T")
    .Output("step: int32")
    .Output("phi: T")
    .Output("slope: T")
    .Output("current: T")
    .Output("counts: int32")
    .Output("overflow: int32")
    .Attr("steps: int")
    .Attr("max_spikes: int")
    .Attr("interpolate: bool = true")
    .Attr("T: {float, double}")
    .SetShapeFn([](InferenceContext* c) {
      EventPropDims d;
      TF_RETURN_IF_ERROR(MergeInputsAndKernel(c, &d));
      ShapeHandle recurrent;
      TF_RETURN_IF_ERROR(c->WithRank(c->input(2), 2, &recurrent));
      TF_RETURN_IF_ERROR(CheckKineticsShape(c, 3));
      int64_t steps, max_spikes;
      TF_RETURN_IF_ERROR(PositiveAttr(c, "steps", &steps));
      TF_RETURN_IF_ERROR(PositiveAttr(c, "max_spikes", &max_spikes));
      ShapeHandle buffer = c->MakeShape({d.batch, d.units, c->MakeDim(max_spikes)});
      for (int k = 0; k < 5; ++k) c->set_output(k, buffer);
      c->set_output(5, c->Matrix(d.batch, d.units));
      c->set_output(6, c->Scalar());
      return Status();
    })
    .Doc(R"doc(
EventProp spiking layer forward (twin: keras_spiking.eventprop._spiking_forward).

times_in: [batch, inputs, slots] input spike times in seconds, +inf where none.
kernel: [inputs, units].
recurrent: [units, units], or a [0, 0] tensor for none.
kinetics: [tau_mem, tau_syn, threshold, dt] (float64; seconds).
times, step, phi, slope, current: [batch, units, max_spikes] per-spike record (+inf, -1, 0, 0,
  0 in unused slots).
counts: [batch, units] spikes per neuron (including those not recorded).
overflow: number of spikes not recorded because a neuron's buffer was full.
)doc");

REGISTER_OP("KerasSpiking>EventPropReadoutForward")
    .Input("times_in: T")
    .Input("kernel: T")
    .Input("kinetics: double")
    .Output("output: T")
    .Output("argmax: int32")
    .Attr("steps: int")
    .Attr("readout: {'max', 'integral', 'last', 'sequence'} = 'max'")
    .Attr("T: {float, double}")
    .SetShapeFn([](InferenceContext* c) {
      EventPropDims d;
      TF_RETURN_IF_ERROR(MergeInputsAndKernel(c, &d));
      TF_RETURN_IF_ERROR(CheckKineticsShape(c, 2));
      int64_t steps;
      TF_RETURN_IF_ERROR(PositiveAttr(c, "steps", &steps));
      std::string readout;
      TF_RETURN_IF_ERROR(c->GetAttr("readout", &readout));
      if (readout == "sequence") {
        c->set_output(0, c->MakeShape({d.batch, c->MakeDim(steps), d.units}));
      } else {
        c->set_output(0, c->Matrix(d.batch, d.units));
      }
      c->set_output(1, c->Matrix(d.batch, d.units));
      return Status();
    })
    .Doc(R"doc(
EventProp leaky-integrator readout forward (twin: keras_spiking.eventprop._readout_forward).

output: [batch, units] (max, integral, last) or [batch, steps, units] (sequence).
argmax: [batch, units] step of the maximum for "max", zeros otherwise.
)doc");

REGISTER_OP("KerasSpiking>EventPropBackward")
    .Input("times_in: T")
    .Input("kernel: T")
    .Input("recurrent: T")
    .Input("kinetics: double")
    .Input("min_slope: double")
    .Input("spike_step: int32")
    .Input("spike_phi: T")
    .Input("spike_slope: T")
    .Input("spike_current: T")
    .Input("grad_times: T")
    .Input("readout_grad: T")
    .Input("argmax: int32")
    .Output("grad_times_in: T")
    .Output("grad_kernel: T")
    .Output("grad_recurrent: T")
    .Attr("steps: int")
    .Attr("spiking: bool")
    .Attr("readout: {'max', 'integral', 'last', 'sequence'} = 'max'")
    .Attr("interpolate: bool = true")
    .Attr("clamp_slope: bool = false")
    .Attr("T: {float, double}")
    .SetShapeFn([](InferenceContext* c) {
      EventPropDims d;
      TF_RETURN_IF_ERROR(MergeInputsAndKernel(c, &d));
      ShapeHandle recurrent, min_slope;
      TF_RETURN_IF_ERROR(c->WithRank(c->input(2), 2, &recurrent));
      TF_RETURN_IF_ERROR(CheckKineticsShape(c, 3));
      TF_RETURN_IF_ERROR(c->WithRank(c->input(4), 0, &min_slope));
      int64_t steps;
      TF_RETURN_IF_ERROR(PositiveAttr(c, "steps", &steps));
      c->set_output(0, c->input(0));
      c->set_output(1, c->input(1));
      c->set_output(2, c->input(2));
      return Status();
    })
    .Doc(R"doc(
EventProp adjoint pass of one layer (twin: keras_spiking.eventprop._backward).

spiking=true: the spiking layer. spike_step, spike_phi, spike_slope, spike_current are the
  forward's record [batch, units, max_spikes] and grad_times dL/d(recorded spike time), same
  shape; readout_grad and argmax are ignored (pass empty tensors).
spiking=false: a readout (`readout` names its mode). readout_grad is dL/d(output) ([batch,
  units], or [batch, steps, units] for "sequence") and argmax the forward's [batch, units]
  (read for "max" only); the spike inputs and recurrent are ignored (pass empty tensors).
min_slope: scalar (float64) used as max(D, min_slope * dt) when clamp_slope is true.
)doc");

namespace {

// The layer's time constants, threshold and grid as the twin's Python floats.
struct KineticsD {
  double tau_mem, tau_syn, threshold, dt;
};

Status ReadKinetics(const char* op, const Tensor& t, KineticsD* k) {
  if (t.dims() != 1 || t.dim_size(0) != 4) {
    return errors::InvalidArgument(op, ": `kinetics` must be [tau_mem, tau_syn, threshold, dt] ",
                                   "(shape [4]), got shape ", t.shape().DebugString());
  }
  const auto v = t.vec<double>();
  *k = {v(0), v(1), v(2), v(3)};
  if (!(std::isfinite(k->tau_mem) && k->tau_mem > 0) ||
      !(std::isfinite(k->tau_syn) && k->tau_syn > 0) || !(std::isfinite(k->dt) && k->dt > 0)) {
    return errors::InvalidArgument(op, ": tau_mem, tau_syn and dt must be finite and > 0, got ",
                                   k->tau_mem, ", ", k->tau_syn, ", ", k->dt);
  }
  if (!std::isfinite(k->threshold)) {
    return errors::InvalidArgument(op, ": threshold must be finite, got ", k->threshold);
  }
  return Status();
}

// Recurrent weights: [units, units], or [0, 0] for none. Sets *present.
Status CheckRecurrent(const char* op, const Tensor& t, int64_t units, bool* present) {
  if (t.dims() == 2 && t.dim_size(0) == 0 && t.dim_size(1) == 0) {
    *present = false;
    return Status();
  }
  *present = true;
  if (t.dims() != 2 || t.dim_size(0) != units || t.dim_size(1) != units) {
    return errors::InvalidArgument(op, ": `recurrent` must be [units, units] = [", units, ", ",
                                   units, "] or [0, 0] for none, got shape ",
                                   t.shape().DebugString());
  }
  return Status();
}

// What every EventProp kernel reads first: times_in [batch, inputs, slots], kernel [inputs,
// units], the recurrent weights (see CheckRecurrent; ops with them only) and the kinetics.
struct LayerInputs {
  int64_t batch = 0, inputs = 0, slots = 0, units = 0;
  bool has_rec = false;
  KineticsD kin = {};
};

// Reads and checks the inputs above: times_in and kernel are inputs 0 and 1, the recurrent
// weights input recurrent_index (none when negative), the kinetics input kinetics_index.
Status ReadLayerInputs(OpKernelContext* context, const char* op, int recurrent_index,
                       int kinetics_index, LayerInputs* in) {
  const Tensor& times_in = context->input(0);
  TF_RETURN_IF_ERROR(CheckInput(op, "times_in", times_in, {-1, -1, -1}));
  in->batch = times_in.dim_size(0);
  in->inputs = times_in.dim_size(1);
  in->slots = times_in.dim_size(2);
  const Tensor& kernel = context->input(1);
  TF_RETURN_IF_ERROR(CheckInput(op, "kernel", kernel, {in->inputs, -1}));
  in->units = kernel.dim_size(1);
  if (recurrent_index >= 0) {
    TF_RETURN_IF_ERROR(
        CheckRecurrent(op, context->input(recurrent_index), in->units, &in->has_rec));
  }
  return ReadKinetics(op, context->input(kinetics_index), &in->kin);
}

// The twin's constants (Kinetics.responses, reset_response, grid_decays and the readout's
// integral weights), derived in double as Python does and then rounded to T.
template <typename T>
struct Constants {
  Constants(const KineticsD& k, int64_t steps) {
    const double tau_m = k.tau_mem, tau_s = k.tau_syn, dt_d = k.dt;
    // the equal-time-constant limit, with the twin's test
    equal = std::abs(tau_s - tau_m) <= 1e-9 * tau_m;
    tau_mem = static_cast<T>(tau_m);
    tau_syn = static_cast<T>(tau_s);
    theta = static_cast<T>(k.threshold);
    dt = static_cast<T>(dt_d);
    kappa = equal ? T(0) : static_cast<T>(tau_s / (tau_s - tau_m));
    rate = equal ? T(0) : static_cast<T>(1 / tau_m - 1 / tau_s);
    const double a = std::exp(-dt_d / tau_m), b = std::exp(-dt_d / tau_s);
    const double g = equal ? dt_d / tau_m * a : tau_s / (tau_s - tau_m) * (b - a);
    a_dt = static_cast<T>(a);
    b_dt = static_cast<T>(b);
    g_dt = static_cast<T>(g);
    const double window_d = static_cast<double>(steps) * dt_d;  // Python: kin.steps * dt
    end = static_cast<T>(window_d);
    window = static_cast<T>(window_d);
    dt_over_window = static_cast<T>(dt_d / window_d);
  }

  // b(h), g(h), b'(h), g'(h): Kinetics.responses.
  void Responses(T h, T* b, T* g, T* db, T* dg) const {
    const T a = std::exp(-h / tau_mem);
    *b = std::exp(-h / tau_syn);
    if (equal) {
      *g = h / tau_mem * a;
      *dg = a / tau_mem * (T(1) - h / tau_mem);
    } else {
      *g = kappa * (*b - a);
      *dg = kappa * (a / tau_mem - *b / tau_syn);
    }
    *db = -*b / tau_syn;
  }

  // q(h) and q'(h): Kinetics.reset_response.
  void ResetResponse(T h, T* q, T* dq) const {
    if (equal) {
      *q = h / tau_mem;
      *dq = T(1) / tau_mem;
      return;
    }
    const T ratio = std::exp(-h * rate);
    *q = kappa * (T(1) - ratio);
    *dq = ratio / tau_mem;
  }

  bool equal;
  T tau_mem, tau_syn, theta, dt, kappa, rate, a_dt, b_dt, g_dt, end, window, dt_over_window;
};

// Groups items by their step, stably (the items of one step keep the order in which they
// were listed), and finds the items of a step. Scratch grows with the number of items, never
// with the window alone: a counting sort over the steps when there are few steps next to the
// items (the usual case: O(items + steps), O(1) lookups), else a comparison sort and binary
// searches, so that a window of millions of steps needs no steps-sized buffer per thread.
class StepIndex {
 public:
  // keys[i]: the step of item i, in [0, steps). Sets order to the items sorted by step.
  void Sort(const std::vector<int32_t>& keys, int64_t steps, std::vector<int64_t>* order) {
    const int64_t count = static_cast<int64_t>(keys.size());
    order->resize(count);
    dense_ = steps < std::max<int64_t>(kDenseSteps, 4 * count);
    if (dense_) {
      start_.assign(steps + 1, 0);
      for (const int32_t k : keys) ++start_[k + 1];
      for (int64_t n = 0; n < steps; ++n) start_[n + 1] += start_[n];
      fill_.assign(start_.begin(), start_.end() - 1);
      for (int64_t i = 0; i < count; ++i) (*order)[fill_[keys[i]]++] = i;
      return;
    }
    for (int64_t i = 0; i < count; ++i) (*order)[i] = i;
    std::sort(order->begin(), order->end(), [&keys](int64_t a, int64_t b) {
      return keys[a] != keys[b] ? keys[a] < keys[b] : a < b;
    });
    sorted_.resize(count);
    for (int64_t i = 0; i < count; ++i) sorted_[i] = keys[(*order)[i]];
  }

  // [*begin, *end): the positions in `order` of the items of step n.
  void Range(int64_t n, int64_t* begin, int64_t* end) const {
    if (dense_) {
      *begin = start_[n];
      *end = start_[n + 1];
      return;
    }
    const auto range = std::equal_range(sorted_.begin(), sorted_.end(), static_cast<int32_t>(n));
    *begin = range.first - sorted_.begin();
    *end = range.second - sorted_.begin();
  }

 private:
  static constexpr int64_t kDenseSteps = int64_t{1} << 16;  // 512 KiB of offsets
  bool dense_ = true;
  std::vector<int64_t> start_, fill_;
  std::vector<int32_t> sorted_;
};

// One decoded input spike (twin: _decode).
template <typename T>
struct InputEvent {
  int64_t input;  // presynaptic neuron f
  int64_t slot;   // its slot k in times_in[b, f, :]
  T resp_i, resp_v, dresp_i, dresp_v;
};

// The input spikes of one batch row, grouped by step: the events of step n are
// events[begin .. end) of Range(n), ordered by input and then slot (so the spikes of one input
// in one step are adjacent and are summed first, as the twin's slot sum is).
template <typename T>
struct RowInputs {
  std::vector<InputEvent<T>> events;

  void Decode(const T* times, int64_t inputs, int64_t slots, int64_t steps,
              const Constants<T>& c, bool derivatives) {
    const int64_t total = inputs * slots;
    listed_.clear();
    keys_.clear();
    for (int64_t e = 0; e < total; ++e) {
      const T t = times[e];
      // inside the window (false for +inf, NaN and spikes past it); the twin's floor may give
      // a negative step or `steps` itself by rounding: no step of the loop matches those
      if (!(t < c.end)) continue;
      const T s = std::floor(t / c.dt);
      if (!(s >= T(0) && s < static_cast<T>(steps))) continue;
      const int32_t step = static_cast<int32_t>(s);
      InputEvent<T> ev;
      ev.input = e / slots;
      ev.slot = e % slots;
      const T h = (static_cast<T>(step) + T(1)) * c.dt - t;
      T b, g, db, dg;
      if (derivatives) {
        c.Responses(h, &b, &g, &db, &dg);
      } else {
        ResponsesOnly(c, h, &b, &g);
        db = dg = T(0);
      }
      ev.resp_i = b;
      ev.resp_v = g;
      ev.dresp_i = db;
      ev.dresp_v = dg;
      listed_.push_back(ev);
      keys_.push_back(step);
    }
    index_.Sort(keys_, steps, &order_);
    events.resize(listed_.size());
    for (size_t i = 0; i < order_.size(); ++i) events[i] = listed_[order_[i]];
  }

  void Range(int64_t n, int64_t* begin, int64_t* end) const { index_.Range(n, begin, end); }

  static void ResponsesOnly(const Constants<T>& c, T h, T* b, T* g) {
    const T a = std::exp(-h / c.tau_mem);
    *b = std::exp(-h / c.tau_syn);
    *g = c.equal ? h / c.tau_mem * a : c.kappa * (*b - a);
  }

 private:
  std::vector<InputEvent<T>> listed_;  // in (input, slot) order
  std::vector<int32_t> keys_;          // the step of each listed event
  std::vector<int64_t> order_;
  StepIndex index_;
};

// acc_x += x * row and acc_y += y * row over n entries (one pass over the row).
template <typename T>
inline void Axpy2(int64_t n, T x, T y, const T* __restrict row, T* __restrict acc_x,
                  T* __restrict acc_y) {
  for (int64_t j = 0; j < n; ++j) {
    acc_x[j] += x * row[j];
    acc_y[j] += y * row[j];
  }
}

// acc += x * u + y * v, in that order (the twin's two matmul updates, one after the other).
template <typename T>
inline void Axpy2Into(int64_t n, T x, const T* __restrict u, T y, const T* __restrict v,
                      T* __restrict acc) {
  for (int64_t j = 0; j < n; ++j) acc[j] = (acc[j] + x * u[j]) + y * v[j];
}

// (u . row, v . row). Eigen's dot products keep several vector accumulators (a plain running
// sum is a serial chain the compiler must keep in order without -ffast-math); they change only
// the summation order of the twin's matmul.
template <typename T>
inline void Dot2(int64_t n, const T* u, const T* v, const T* row, T* out_u, T* out_v) {
  using Vector = Eigen::Map<const Eigen::Matrix<T, Eigen::Dynamic, 1>>;
  const Vector r(row, n);
  *out_u = Vector(u, n).dot(r);
  *out_v = Vector(v, n).dot(r);
}

// Adds the synaptic input of the spikes of step n, x_i @ W and x_v @ W, to acc_i and acc_v.
template <typename T>
void AddInputs(const RowInputs<T>& in, int64_t n, const T* kernel, int64_t units, T* acc_i,
               T* acc_v) {
  int64_t e, end;
  in.Range(n, &e, &end);
  while (e < end) {
    const int64_t f = in.events[e].input;
    T x_i = T(0), x_v = T(0);
    for (; e < end && in.events[e].input == f; ++e) {
      x_i += in.events[e].resp_i;
      x_v += in.events[e].resp_v;
    }
    Axpy2(units, x_i, x_v, kernel + f * units, acc_i, acc_v);
  }
}

// steps in [1, 2^31 - 1]: the step indices are int32 (in the record and in the twin).
Status ReadStepsAttr(OpKernelConstruction* context, const char* op, int64_t* steps) {
  TF_RETURN_IF_ERROR(context->GetAttr("steps", steps));
  return CheckCountAttr(op, "steps", *steps);
}

// Sharding cost of one batch row: computed in double, since steps * units can pass int64.
int64_t RowCost(int64_t steps, int64_t units, int64_t per_unit, int64_t inputs, int64_t slots,
                int64_t per_input) {
  return ShardCost(static_cast<double>(steps) * static_cast<double>(units) * per_unit +
                       static_cast<double>(inputs) * static_cast<double>(slots) * per_input,
                   1);
}

}  // namespace

// ------------------------------------------------------------------------------------------
// Spiking forward
// ------------------------------------------------------------------------------------------
template <typename T>
class EventPropSpikingForwardOp : public GuardedOpKernel {
 public:
  explicit EventPropSpikingForwardOp(OpKernelConstruction* context)
      : GuardedOpKernel(context, "EventPropSpikingForward") {
    const char* op = "EventPropSpikingForward";
    OP_REQUIRES_OK(context, ReadStepsAttr(context, op, &steps_));
    OP_REQUIRES_OK(context, context->GetAttr("max_spikes", &max_spikes_));
    // spike counts and slots are int32 (as in the twin)
    OP_REQUIRES_OK(context, CheckCountAttr(op, "max_spikes", max_spikes_));
    OP_REQUIRES_OK(context, context->GetAttr("interpolate", &interpolate_));
  }

  void DoCompute(OpKernelContext* context) override {
    const char* op = "EventPropSpikingForward";
    LayerInputs in;
    OP_REQUIRES_OK(context, ReadLayerInputs(context, op, 2, 3, &in));
    const Tensor& times_in = context->input(0);
    const Tensor& kernel = context->input(1);
    const int64_t batch = in.batch, inputs = in.inputs, slots = in.slots, units = in.units;
    const bool has_rec = in.has_rec;
    const KineticsD& kin = in.kin;
    const int64_t steps = steps_, max_spikes = max_spikes_;
    // batch x units x max_spikes can pass int64 (a huge max_spikes, or empty inputs with
    // huge other dimensions): checked shapes, not the aborting TensorShape constructor
    TensorShape buffer, counts_shape;
    OP_REQUIRES_OK(context, CheckedShape(op, "spike buffers [batch, units, max_spikes]",
                                         {batch, units, max_spikes}, &buffer));
    OP_REQUIRES_OK(context, CheckedShape(op, "counts", {batch, units}, &counts_shape));
    Tensor *times_t, *step_t, *phi_t, *slope_t, *current_t, *counts_t, *overflow_t;
    OP_REQUIRES_OK(context, context->allocate_output(0, buffer, &times_t));
    OP_REQUIRES_OK(context, context->allocate_output(1, buffer, &step_t));
    OP_REQUIRES_OK(context, context->allocate_output(2, buffer, &phi_t));
    OP_REQUIRES_OK(context, context->allocate_output(3, buffer, &slope_t));
    OP_REQUIRES_OK(context, context->allocate_output(4, buffer, &current_t));
    OP_REQUIRES_OK(context, context->allocate_output(5, counts_shape, &counts_t));
    OP_REQUIRES_OK(context, context->allocate_output(6, TensorShape(), &overflow_t));
    T* out_times = times_t->flat<T>().data();
    int32_t* out_step = step_t->flat<int32_t>().data();
    T* out_phi = phi_t->flat<T>().data();
    T* out_slope = slope_t->flat<T>().data();
    T* out_current = current_t->flat<T>().data();
    int32_t* out_counts = counts_t->flat<int32_t>().data();
    const int64_t buffer_size = buffer.num_elements();
    std::fill(out_times, out_times + buffer_size, std::numeric_limits<T>::infinity());
    std::fill(out_step, out_step + buffer_size, -1);
    std::fill(out_phi, out_phi + buffer_size, T(0));
    std::fill(out_slope, out_slope + buffer_size, T(0));
    std::fill(out_current, out_current + buffer_size, T(0));
    std::fill(out_counts, out_counts + counts_shape.num_elements(), 0);
    overflow_t->scalar<int32_t>()() = 0;
    // no neurons: nothing to simulate (and empty inputs can come with a huge batch)
    if (units == 0) return;

    const Constants<T> c(kin, steps);
    const T* times = times_in.flat<T>().data();
    const T* w = kernel.flat<T>().data();
    const T* rec = has_rec ? context->input(2).flat<T>().data() : nullptr;
    const bool interpolate = interpolate_;
    std::atomic<int64_t> lost{0};  // spikes not recorded (full buffers), over all rows
    const int64_t cost = RowCost(steps, units, 20, inputs, slots, 60);
    ParallelRange(context, batch, cost, [&](int64_t b0, int64_t b1) {
      int64_t lost_here = 0;
      RowInputs<T> in;
      std::vector<T> cur(units), v(units), acc_i(units), acc_v(units);
      std::vector<T> rec_i(units), rec_v(units), b_h(units), g_h(units);
      std::vector<int64_t> fired;
      fired.reserve(units);
      for (int64_t b = b0; b < b1; ++b) {
        in.Decode(times + b * inputs * slots, inputs, slots, steps, c, false);
        std::fill(cur.begin(), cur.end(), T(0));
        std::fill(v.begin(), v.end(), T(0));
        int32_t* count = out_counts + b * units;
        const int64_t row_offset = b * units * max_spikes;
        for (int64_t n = 0; n < steps; ++n) {
          std::fill(acc_i.begin(), acc_i.end(), T(0));
          std::fill(acc_v.begin(), acc_v.end(), T(0));
          AddInputs(in, n, w, units, acc_i.data(), acc_v.data());
          fired.clear();
          // the grid step for all neurons (vectorised): acc_i, acc_v become I^-, V^-
          T* __restrict i_pre_all = acc_i.data();
          T* __restrict v_pre_all = acc_v.data();
          const T* __restrict cur_in = cur.data();
          const T* __restrict v_in = v.data();
          for (int64_t j = 0; j < units; ++j) {
            i_pre_all[j] = c.b_dt * cur_in[j] + i_pre_all[j];
            v_pre_all[j] = c.a_dt * v_in[j] + c.g_dt * cur_in[j] + v_pre_all[j];
          }
          // the few neurons that spike: reset (into v_pre_all) and record
          for (int64_t j = 0; j < units; ++j) {
            const T v_pre = v_pre_all[j];
            const bool below = v[j] < c.theta;
            if (!(v_pre >= c.theta || !below)) continue;
            const T i_pre = i_pre_all[j];
            T phi, slope;
            if (interpolate) {
              const T rise = v_pre - v[j];
              phi = below ? (c.theta - v[j]) / rise : T(0);
              slope = rise;
            } else {
              phi = T(1);
              slope = c.dt * (i_pre - c.theta) / c.tau_mem;
            }
            const T h_out = (T(1) - phi) * c.dt;
            T q, dq;
            c.ResetResponse(h_out, &q, &dq);
            v_pre_all[j] = i_pre * q;
            if (rec != nullptr) {
              T db, dg;
              c.Responses(h_out, &b_h[j], &g_h[j], &db, &dg);
              fired.push_back(j);
            }
            if (count[j] < max_spikes) {
              const int64_t at = row_offset + j * max_spikes + count[j];
              out_times[at] = (static_cast<T>(n) + phi) * c.dt;
              out_step[at] = static_cast<int32_t>(n);
              out_phi[at] = phi;
              out_slope[at] = slope;
              out_current[at] = i_pre;
            } else {
              ++lost_here;
            }
            ++count[j];
          }
          std::swap(cur, acc_i);
          std::swap(v, acc_v);
          // recurrent spikes arrive at t_k and enter the state at t_{n+1}, after the
          // threshold check of the step: (b(h) R, g(h) R) summed over the neurons that fired
          if (!fired.empty()) {
            std::fill(rec_i.begin(), rec_i.end(), T(0));
            std::fill(rec_v.begin(), rec_v.end(), T(0));
            for (const int64_t k : fired) {
              Axpy2(units, b_h[k], g_h[k], rec + k * units, rec_i.data(), rec_v.data());
            }
            for (int64_t j = 0; j < units; ++j) {
              cur[j] += rec_i[j];
              v[j] += rec_v[j];
            }
          }
        }
      }
      lost += lost_here;
    });
    overflow_t->scalar<int32_t>()() = static_cast<int32_t>(
        std::min<int64_t>(lost.load(), std::numeric_limits<int32_t>::max()));
  }

 private:
  int64_t steps_ = 1;
  int64_t max_spikes_ = 1;
  bool interpolate_ = true;
};

// ------------------------------------------------------------------------------------------
// Readout forward
// ------------------------------------------------------------------------------------------
enum class Readout { kMax, kIntegral, kLast, kSequence };

Status ParseReadout(OpKernelConstruction* context, Readout* out) {
  std::string readout;
  TF_RETURN_IF_ERROR(context->GetAttr("readout", &readout));
  if (readout == "max") {
    *out = Readout::kMax;
  } else if (readout == "integral") {
    *out = Readout::kIntegral;
  } else if (readout == "last") {
    *out = Readout::kLast;
  } else if (readout == "sequence") {
    *out = Readout::kSequence;
  } else {
    return errors::InvalidArgument("EventProp: unknown readout '", readout, "'");
  }
  return Status();
}

template <typename T>
T IntegralWeight(const Constants<T>& c, int64_t n) {
  // _integral_weights: exp(-t_{n+1} / T) dt / T, t computed in the dtype
  const T t = (static_cast<T>(n) + T(1)) * c.dt;
  return std::exp(-t / c.window) * c.dt_over_window;
}

template <typename T>
class EventPropReadoutForwardOp : public GuardedOpKernel {
 public:
  explicit EventPropReadoutForwardOp(OpKernelConstruction* context)
      : GuardedOpKernel(context, "EventPropReadoutForward") {
    OP_REQUIRES_OK(context, ReadStepsAttr(context, "EventPropReadoutForward", &steps_));
    OP_REQUIRES_OK(context, ParseReadout(context, &readout_));
  }

  void DoCompute(OpKernelContext* context) override {
    const char* op = "EventPropReadoutForward";
    LayerInputs in;
    OP_REQUIRES_OK(context, ReadLayerInputs(context, op, -1, 2, &in));
    const Tensor& times_in = context->input(0);
    const Tensor& kernel = context->input(1);
    const int64_t batch = in.batch, inputs = in.inputs, slots = in.slots, units = in.units;
    const KineticsD& kin = in.kin;
    const int64_t steps = steps_;
    const Readout readout = readout_;
    // [batch, steps, units] for "sequence" passes int64 for a huge `steps`: checked shapes
    TensorShape out_shape, arg_shape;
    OP_REQUIRES_OK(context, CheckedShape(op, "argmax", {batch, units}, &arg_shape));
    if (readout == Readout::kSequence) {
      OP_REQUIRES_OK(context, CheckedShape(op, "output [batch, steps, units]",
                                           {batch, steps, units}, &out_shape));
    } else {
      out_shape = arg_shape;
    }
    Tensor *out_t, *arg_t;
    OP_REQUIRES_OK(context, context->allocate_output(0, out_shape, &out_t));
    OP_REQUIRES_OK(context, context->allocate_output(1, arg_shape, &arg_t));
    T* out = out_t->flat<T>().data();
    int32_t* arg = arg_t->flat<int32_t>().data();
    std::fill(arg, arg + arg_shape.num_elements(), 0);
    if (units == 0) return;  // nothing to simulate (empty inputs can come with a huge batch)
    const Constants<T> c(kin, steps);
    const T* times = times_in.flat<T>().data();
    const T* w = kernel.flat<T>().data();
    const int64_t cost = RowCost(steps, units, 8, inputs, slots, 60);
    ParallelRange(context, batch, cost, [&](int64_t b0, int64_t b1) {
      RowInputs<T> in;
      std::vector<T> cur(units), v(units), acc_i(units), acc_v(units);
      for (int64_t b = b0; b < b1; ++b) {
        in.Decode(times + b * inputs * slots, inputs, slots, steps, c, false);
        std::fill(cur.begin(), cur.end(), T(0));
        std::fill(v.begin(), v.end(), T(0));
        T* best = readout == Readout::kSequence ? nullptr : out + b * units;
        int32_t* row_arg = arg + b * units;
        if (readout == Readout::kMax) {
          std::fill(best, best + units, -std::numeric_limits<T>::infinity());
        } else if (readout == Readout::kIntegral) {
          std::fill(best, best + units, T(0));
        }
        for (int64_t n = 0; n < steps; ++n) {
          std::fill(acc_i.begin(), acc_i.end(), T(0));
          std::fill(acc_v.begin(), acc_v.end(), T(0));
          AddInputs(in, n, w, units, acc_i.data(), acc_v.data());
          for (int64_t j = 0; j < units; ++j) {
            v[j] = c.a_dt * v[j] + c.g_dt * cur[j] + acc_v[j];
            cur[j] = c.b_dt * cur[j] + acc_i[j];
          }
          switch (readout) {
            case Readout::kMax:
              for (int64_t j = 0; j < units; ++j) {
                if (v[j] > best[j]) {
                  best[j] = v[j];
                  row_arg[j] = static_cast<int32_t>(n);
                }
              }
              break;
            case Readout::kIntegral: {
              // computed per step (a steps-sized table would grow with the window)
              const T weight = IntegralWeight(c, n);
              for (int64_t j = 0; j < units; ++j) best[j] += weight * v[j];
              break;
            }
            case Readout::kSequence:
              std::copy(v.begin(), v.end(), out + (b * steps + n) * units);
              break;
            case Readout::kLast:
              break;
          }
        }
        if (readout == Readout::kLast) std::copy(v.begin(), v.end(), out + b * units);
      }
    });
  }

 private:
  int64_t steps_ = 1;
  Readout readout_ = Readout::kMax;
};

// ------------------------------------------------------------------------------------------
// Backward (adjoint) pass
// ------------------------------------------------------------------------------------------
template <typename T>
class EventPropBackwardOp : public GuardedOpKernel {
 public:
  explicit EventPropBackwardOp(OpKernelConstruction* context)
      : GuardedOpKernel(context, "EventPropBackward") {
    OP_REQUIRES_OK(context, ReadStepsAttr(context, "EventPropBackward", &steps_));
    OP_REQUIRES_OK(context, context->GetAttr("spiking", &spiking_));
    OP_REQUIRES_OK(context, ParseReadout(context, &readout_));
    OP_REQUIRES_OK(context, context->GetAttr("interpolate", &interpolate_));
    OP_REQUIRES_OK(context, context->GetAttr("clamp_slope", &clamp_slope_));
  }

  void DoCompute(OpKernelContext* context) override {
    const char* op = "EventPropBackward";
    LayerInputs in;
    OP_REQUIRES_OK(context, ReadLayerInputs(context, op, 2, 3, &in));
    const Tensor& times_in = context->input(0);
    const Tensor& kernel = context->input(1);
    const Tensor& recurrent = context->input(2);
    const int64_t batch = in.batch, inputs = in.inputs, slots = in.slots, units = in.units;
    const bool has_rec = in.has_rec;
    const KineticsD& kin = in.kin;
    OP_REQUIRES_OK(context, CheckInput(op, "min_slope", context->input(4), {}));
    const double min_slope = context->input(4).scalar<double>()();
    OP_REQUIRES(context, !clamp_slope_ || !std::isnan(min_slope),
                errors::InvalidArgument(op, ": `min_slope` is NaN"));
    const int64_t steps = steps_;
    const bool spiking = spiking_;
    const Readout readout = readout_;
    int64_t max_spikes = 0;
    if (spiking) {
      const Tensor& step = context->input(5);
      OP_REQUIRES_OK(context, CheckInput(op, "spike_step", step, {batch, units, -1}));
      max_spikes = step.dim_size(2);
      const char* names[] = {"spike_phi", "spike_slope", "spike_current", "grad_times"};
      for (int k = 0; k < 4; ++k) {
        OP_REQUIRES_OK(context,
                       CheckInput(op, names[k], context->input(6 + k), {batch, units, max_spikes}));
      }
    } else {
      if (readout == Readout::kSequence) {
        OP_REQUIRES_OK(context,
                       CheckInput(op, "readout_grad", context->input(10), {batch, steps, units}));
      } else {
        OP_REQUIRES_OK(context, CheckInput(op, "readout_grad", context->input(10), {batch, units}));
      }
      if (readout == Readout::kMax) {
        OP_REQUIRES_OK(context, CheckInput(op, "argmax", context->input(11), {batch, units}));
      }
    }
    Tensor *d_times_t, *d_kernel_t, *d_rec_t;
    OP_REQUIRES_OK(context, context->allocate_output(0, times_in.shape(), &d_times_t));
    OP_REQUIRES_OK(context, context->allocate_output(1, kernel.shape(), &d_kernel_t));
    OP_REQUIRES_OK(context, context->allocate_output(2, recurrent.shape(), &d_rec_t));
    T* d_times = d_times_t->flat<T>().data();
    T* d_kernel = d_kernel_t->flat<T>().data();
    T* d_rec = d_rec_t->flat<T>().data();
    std::fill(d_times, d_times + d_times_t->NumElements(), T(0));
    std::fill(d_kernel, d_kernel + d_kernel_t->NumElements(), T(0));
    std::fill(d_rec, d_rec + d_rec_t->NumElements(), T(0));
    if (units == 0) return;  // no adjoint: every gradient is zero

    Params p(kin, steps);
    p.times = times_in.flat<T>().data();
    p.w = kernel.flat<T>().data();
    p.rec = spiking && has_rec ? recurrent.flat<T>().data() : nullptr;
    p.inputs = inputs;
    p.slots = slots;
    p.units = units;
    p.steps = steps;
    p.max_spikes = max_spikes;
    p.spiking = spiking;
    p.readout = readout;
    p.interpolate = interpolate_;
    p.clamp_slope = clamp_slope_;
    p.min_slope_dt = static_cast<T>(min_slope * kin.dt);
    if (spiking) {
      p.spike_step = context->input(5).flat<int32_t>().data();
      p.spike_phi = context->input(6).flat<T>().data();
      p.spike_slope = context->input(7).flat<T>().data();
      p.spike_current = context->input(8).flat<T>().data();
      p.grad_times = context->input(9).flat<T>().data();
    } else {
      p.readout_grad = context->input(10).flat<T>().data();
      if (readout == Readout::kMax) p.argmax = context->input(11).flat<int32_t>().data();
    }

    // per-part partial weight gradients; part 0 sums straight into the outputs
    const int64_t parts = NumParts(context, batch);
    // (sizes of existing tensors: kernel and recurrent are inputs)
    const int64_t kernel_size = inputs * units, rec_size = p.rec ? units * units : 0;
    TensorShape partial_shape;
    OP_REQUIRES_OK(context, CheckedShape(op, "per-thread weight gradients",
                                         {parts - 1, kernel_size + rec_size}, &partial_shape));
    Tensor partial_t;
    OP_REQUIRES_OK(context, context->allocate_temp(tensorflow::DataTypeToEnum<T>::value,
                                                   partial_shape, &partial_t));
    T* partial = partial_t.flat<T>().data();
    std::fill(partial, partial + partial_shape.num_elements(), T(0));
    const int64_t cost = RowCost(steps, units, 30, inputs, slots, 80);
    ForEachPart(context, batch, parts, cost, [&](int64_t part, int64_t b0, int64_t b1) {
      T* dk = d_kernel;
      T* dr = d_rec;
      if (part > 0) {
        dk = partial + (part - 1) * (kernel_size + rec_size);
        dr = dk + kernel_size;
      }
      Row row(p);
      for (int64_t b = b0; b < b1; ++b) row.Run(b, d_times, dk, dr);
    });
    for (int64_t part = 1; part < parts; ++part) {
      const T* dk = partial + (part - 1) * (kernel_size + rec_size);
      for (int64_t e = 0; e < kernel_size; ++e) d_kernel[e] += dk[e];
      for (int64_t e = 0; e < rec_size; ++e) d_rec[e] += dk[kernel_size + e];
    }
  }

 private:
  struct Params {
    Params(const KineticsD& kin, int64_t steps) : c(kin, steps) {}
    Constants<T> c;
    const T* times = nullptr;
    const T* w = nullptr;
    const T* rec = nullptr;
    int64_t inputs = 0, slots = 0, units = 0, steps = 0, max_spikes = 0;
    bool spiking = true, interpolate = true, clamp_slope = false;
    Readout readout = Readout::kMax;
    T min_slope_dt = T(0);
    const int32_t* spike_step = nullptr;
    const T* spike_phi = nullptr;
    const T* spike_slope = nullptr;
    const T* spike_current = nullptr;
    const T* grad_times = nullptr;
    const T* readout_grad = nullptr;
    const int32_t* argmax = nullptr;
  };

  // The adjoint pass of one batch row, with its scratch (reused across the rows of a part).
  class Row {
   public:
    explicit Row(const Params& p)
        : p_(p),
          lam_i_(p.units),
          lam_v_(p.units),
          carry_(p.units, T(0)),
          flag_(p.units, 0),
          phi_(p.units, T(0)),
          slope_(p.units, T(0)),
          current_(p.units, T(0)),
          g_t_(p.units, T(0)),
          d_h_(p.units, T(0)) {}

    void Run(int64_t b, T* d_times_all, T* d_kernel, T* d_rec) {
      const Params& p = p_;
      const Constants<T>& c = p.c;
      const int64_t units = p.units, steps = p.steps;
      in_.Decode(p.times + b * p.inputs * p.slots, p.inputs, p.slots, steps, c, true);
      T* d_times = d_times_all + b * p.inputs * p.slots;
      if (p.spiking) BucketSpikes(b);
      std::fill(lam_i_.begin(), lam_i_.end(), T(0));
      std::fill(lam_v_.begin(), lam_v_.end(), T(0));
      T* lam_i = lam_i_.data();
      T* lam_v = lam_v_.data();
      for (int64_t n = steps - 1; n >= 0; --n) {
        if (!p.spiking) AddReadoutGrad(b, n);
        if (p.spiking) SpikeJumps(n, d_rec);
        // the inputs of step n: weight gradient at the input spikes, input-time gradient
        int64_t e, end;
        in_.Range(n, &e, &end);
        while (e < end) {
          const int64_t first = e;
          const int64_t f = in_.events[e].input;
          T x_i = T(0), x_v = T(0);
          for (; e < end && in_.events[e].input == f; ++e) {
            x_i += in_.events[e].resp_i;
            x_v += in_.events[e].resp_v;
          }
          Axpy2Into(units, x_i, lam_i, x_v, lam_v, d_kernel + f * units);
          T u_i, u_v;
          Dot2(units, lam_i, lam_v, p.w + f * units, &u_i, &u_v);
          for (int64_t k = first; k < e; ++k) {
            const InputEvent<T>& ev = in_.events[k];
            d_times[f * p.slots + ev.slot] -= ev.dresp_i * u_i + ev.dresp_v * u_v;
          }
        }
        // the transposed grid step
        const T a = c.a_dt, bd = c.b_dt, g = c.g_dt;
        const T* __restrict carry = carry_.data();
        for (int64_t j = 0; j < units; ++j) {
          const T li = lam_i[j], lv = lam_v[j];
          lam_i[j] = bd * li + g * lv;
          lam_v[j] = a * lv + carry[j];
        }
        if (p.spiking) ClearStep();
      }
    }

   private:
    // Groups the recorded spikes of row b by step (by neuron within a step).
    void BucketSpikes(int64_t b) {
      const Params& p = p_;
      const int64_t base = b * p.units * p.max_spikes, total = p.units * p.max_spikes;
      listed_.clear();
      spike_keys_.clear();
      for (int64_t e = 0; e < total; ++e) {
        const int32_t s = p.spike_step[base + e];
        if (s < 0 || s >= p.steps) continue;
        listed_.push_back(base + e);
        spike_keys_.push_back(s);
      }
      spike_index_.Sort(spike_keys_, p.steps, &order_);
      spike_entries_.resize(listed_.size());
      for (size_t k = 0; k < order_.size(); ++k) spike_entries_[k] = listed_[order_[k]];
    }

    void AddReadoutGrad(int64_t b, int64_t n) {
      const Params& p = p_;
      const int64_t units = p.units;
      T* lam_v = lam_v_.data();
      switch (p.readout) {
        case Readout::kMax: {
          const T* g = p.readout_grad + b * units;
          const int32_t* arg = p.argmax + b * units;
          for (int64_t j = 0; j < units; ++j) {
            if (arg[j] == n) lam_v[j] += g[j];
          }
          break;
        }
        case Readout::kIntegral: {
          const T* g = p.readout_grad + b * units;
          const T weight = IntegralWeight(p.c, n);
          for (int64_t j = 0; j < units; ++j) lam_v[j] += weight * g[j];
          break;
        }
        case Readout::kLast: {
          if (n != p.steps - 1) break;
          const T* g = p.readout_grad + b * units;
          for (int64_t j = 0; j < units; ++j) lam_v[j] += g[j];
          break;
        }
        case Readout::kSequence: {
          const T* g = p.readout_grad + (b * p.steps + n) * units;
          for (int64_t j = 0; j < units; ++j) lam_v[j] += g[j];
          break;
        }
      }
    }

    // The spikes of step n: recurrent weight gradient, the reset's adjoint and the jump of
    // lambda_V at each spike. Turns lam_i, lam_v into the twin's lam_i_pre, lam_v_pre in place
    // and sets carry for the neurons that fired.
    void SpikeJumps(int64_t n, T* d_rec) {
      const Params& p = p_;
      const Constants<T>& c = p.c;
      const int64_t units = p.units, ms = p.max_spikes;
      fired_.clear();
      int64_t first, last;
      spike_index_.Range(n, &first, &last);
      for (int64_t k = first; k < last; ++k) {
        const int64_t e = spike_entries_[k];
        const int64_t j = (e / ms) % units;
        if (!flag_[j]) {
          flag_[j] = 1;
          fired_.push_back(j);
        }
        phi_[j] += p.spike_phi[e];
        slope_[j] += p.spike_slope[e];
        current_[j] += p.spike_current[e];
        g_t_[j] += p.grad_times[e];
      }
      if (fired_.empty()) return;
      T* lam_i = lam_i_.data();
      T* lam_v = lam_v_.data();
      // recurrent terms first: they read lambda of every target before any reset adjoint
      if (p.rec != nullptr) {
        for (const int64_t j : fired_) {
          const T h_out = (T(1) - phi_[j]) * c.dt;
          T b_h, g_h, db_h, dg_h;
          c.Responses(h_out, &b_h, &g_h, &db_h, &dg_h);
          Axpy2Into(units, b_h, lam_i, g_h, lam_v, d_rec + j * units);
          T r_i, r_v;
          Dot2(units, lam_i, lam_v, p.rec + j * units, &r_i, &r_v);
          d_h_[j] = db_h * r_i + dg_h * r_v;
        }
      }
      for (const int64_t j : fired_) {
        const T phi = phi_[j];
        const T h_out = (T(1) - phi) * c.dt;
        T q, dq;
        c.ResetResponse(h_out, &q, &dq);
        const T lv = lam_v[j];
        lam_i[j] = lam_i[j] + lv * q;
        const T d_h = d_h_[j] + lv * current_[j] * dq;
        const T g_k = g_t_[j] - d_h;
        T slope = slope_[j];
        if (p.clamp_slope) slope = std::max(slope, p.min_slope_dt);
        const T jump = (phi > T(0) && slope > T(0)) ? -g_k * c.dt / slope : T(0);
        if (p.interpolate) {
          lam_v[j] = phi * jump;
          carry_[j] = (T(1) - phi) * jump;
        } else {
          lam_v[j] = jump;
        }
      }
    }

    void ClearStep() {
      for (const int64_t j : fired_) {
        flag_[j] = 0;
        phi_[j] = slope_[j] = current_[j] = g_t_[j] = d_h_[j] = carry_[j] = T(0);
      }
      fired_.clear();
    }

    const Params& p_;
    RowInputs<T> in_;
    std::vector<T> lam_i_, lam_v_, carry_;
    std::vector<char> flag_;
    std::vector<T> phi_, slope_, current_, g_t_, d_h_;
    std::vector<int64_t> fired_, spike_entries_, listed_, order_;
    std::vector<int32_t> spike_keys_;
    StepIndex spike_index_;
  };

  int64_t steps_ = 1;
  bool spiking_ = true;
  Readout readout_ = Readout::kMax;
  bool interpolate_ = true;
  bool clamp_slope_ = false;
};

#define REGISTER_KERNELS(T)                                                                   \
  REGISTER_KERNEL_BUILDER(                                                                    \
      Name("KerasSpiking>EventPropSpikingForward").Device(DEVICE_CPU).TypeConstraint<T>("T"), \
      EventPropSpikingForwardOp<T>);                                                          \
  REGISTER_KERNEL_BUILDER(                                                                    \
      Name("KerasSpiking>EventPropReadoutForward").Device(DEVICE_CPU).TypeConstraint<T>("T"), \
      EventPropReadoutForwardOp<T>);                                                          \
  REGISTER_KERNEL_BUILDER(                                                                    \
      Name("KerasSpiking>EventPropBackward").Device(DEVICE_CPU).TypeConstraint<T>("T"),       \
      EventPropBackwardOp<T>);

REGISTER_KERNELS(float);
REGISTER_KERNELS(double);
#undef REGISTER_KERNELS

}  // namespace keras_spiking
