// KerasSpiking>EventConv2D: convolution of spike maps, touching only active inputs.
//
//   output[n, oh, ow, f] = sum over (kh, kw, c) of
//       input[n, oh * sh - pad_top + kh * dh, ow * sw - pad_left + kw * dw, c]
//       * filter[kh, kw, c - g * Cg, f]          (g = f / Fg, the feature group of f)
//
// the cross-correlation of tf.nn.conv2d (channels last, "VALID" or "SAME" padding as TF pads,
// strides, dilations, feature groups: Cg = C / groups input and Fg = F / groups output
// channels per group). It is computed the other way round: each nonzero input entry scatters
// its filter slice into the outputs it reaches, so the work is (active inputs) x KH x KW x Fg
// instead of (outputs) x KH x KW x Cg x F. Zeros are skipped and any other value (0/1 spikes
// or graded ones) is multiplied in, so the result equals tf.nn.conv2d for any input, up to
// the order of the additions. One difference from a dense convolution: a NaN or inf weight
// does not reach outputs whose inputs under it are all zero (a dense convolution gives
// 0 * inf = NaN there).
//
// KerasSpiking>EventConv2DGradFilter: d(loss)/d(filter), again over the active inputs only:
// each active input gathers the patch of the output gradient it reached, times its value.
// The gradient with respect to the input is dense and left to TF's Conv2DBackpropInput
// (keras_spiking/ops/conv.py). 1-D convolutions run as 2-D ones of height 1.
//
// The filter is repacked once per call to [C][KH][KW reversed][Fg], so that, with stride and
// dilation 1 along the width and one group, the outputs one input reaches along a filter row
// and the filter values it multiplies are both contiguous: one multiply-add loop of KW x F
// values per filter row (and four active channels of a pixel per pass over the outputs).
// Threads take whole images (forward) or contiguous ranges of images with a private copy of
// the filter gradient, summed in a fixed order (weight gradient): the results do not depend
// on the thread count.

#include <algorithm>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "common.h"
#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"
#include "tensorflow/core/framework/tensor_shape.h"

namespace keras_spiking {
// A named namespace: tests/test_compile_matrix.py compiles every source as one translation
// unit, where the helpers of the files' anonymous namespaces would meet.
namespace event_conv {

// Strides, dilations, padding and groups of one op (attributes).
struct ConvAttrs {
  int64_t stride_h = 1, stride_w = 1, dilation_h = 1, dilation_w = 1, groups = 1;
  bool same = false;
};

// Everything the kernels need about one call's shapes.
struct ConvGeometry {
  int64_t batch = 0, in_h = 0, in_w = 0, channels = 0;
  int64_t k_h = 0, k_w = 0, group_channels = 0, filters = 0;
  int64_t group_filters = 0, groups = 1;
  int64_t stride_h = 1, stride_w = 1, dilation_h = 1, dilation_w = 1;
  int64_t out_h = 0, out_w = 0, pad_top = 0, pad_left = 0;
};

// The largest stride or dilation accepted: keeps every index computation far from int64
// overflow (dimensions are below 2^62).
constexpr int64_t kMaxStep = std::numeric_limits<int32_t>::max();

std::string ListString(const std::vector<int64_t>& values) {
  std::string out = "[";
  for (size_t i = 0; i < values.size(); ++i) {
    if (i) out += ", ";
    out += std::to_string(values[i]);
  }
  return out + "]";
}

std::string ShapeString(std::initializer_list<int64_t> dims) {
  return ListString(std::vector<int64_t>(dims));
}

// Reads and checks strides, dilations, padding and groups.
Status ReadAttrs(OpKernelConstruction* context, const char* op, ConvAttrs* attrs) {
  std::vector<int64_t> strides, dilations;
  std::string padding;
  int64_t groups = 1;
  TF_RETURN_IF_ERROR(context->GetAttr("strides", &strides));
  TF_RETURN_IF_ERROR(context->GetAttr("dilations", &dilations));
  TF_RETURN_IF_ERROR(context->GetAttr("padding", &padding));
  TF_RETURN_IF_ERROR(context->GetAttr("groups", &groups));
  for (const auto& [name, values] :
       {std::pair<const char*, const std::vector<int64_t>*>{"strides", &strides},
        {"dilations", &dilations}}) {
    bool ok = values->size() == 2;
    for (const int64_t v : *values) ok = ok && v >= 1 && v <= kMaxStep;
    if (!ok) {
      return errors::InvalidArgument(op, ": `", name,
                                     "` must hold 2 ints (height, width) in [1, ", kMaxStep,
                                     "], got ", ListString(*values));
    }
  }
  if (groups < 1 || groups > kMaxStep) {
    return errors::InvalidArgument(op, ": `groups` must be >= 1, got ", groups);
  }
  attrs->stride_h = strides[0];
  attrs->stride_w = strides[1];
  attrs->dilation_h = dilations[0];
  attrs->dilation_w = dilations[1];
  attrs->groups = groups;
  attrs->same = padding == "SAME";
  return Status();
}

// Output size and leading padding of one spatial axis, as TensorFlow computes them.
Status AxisSize(const char* op, const char* axis, int64_t in, int64_t k, int64_t stride,
                int64_t dilation, bool same, int64_t* out, int64_t* pad) {
  // (k - 1) * dilation + 1 without overflow: k is below 2^62, dilation below 2^31
  const __int128 effective = static_cast<__int128>(k - 1) * dilation + 1;
  if (k < 1 || effective > (__int128{1} << 62)) {
    return errors::InvalidArgument(op, ": the filter ", axis, " must be >= 1 (and, dilated by ",
                                   dilation, ", below 2^62), got ", k);
  }
  const int64_t eff = static_cast<int64_t>(effective);
  if (same) {
    *out = in / stride + (in % stride != 0);
    const __int128 total = static_cast<__int128>(*out - 1) * stride + eff - in;
    *pad = total > 0 ? static_cast<int64_t>(total / 2) : 0;
  } else {
    *out = in >= eff ? (in - eff) / stride + 1 : 0;
    *pad = 0;
  }
  if (*out <= 0) {
    return errors::InvalidArgument(op, ": the output ", axis, " would be ", *out, " (input ",
                                   axis, " ", in, ", filter ", axis, " ", k, " dilated to ",
                                   eff, ", stride ", stride, ", padding ",
                                   same ? "SAME" : "VALID", "); it must be >= 1");
  }
  return Status();
}

// The geometry of input [N, H, W, C] convolved with filter [KH, KW, Cg, F]: checks that the
// channels and groups agree and that the output is not empty.
Status MakeGeometry(const char* op, const int64_t in[4], const int64_t filter[4],
                    const ConvAttrs& attrs, ConvGeometry* g) {
  g->batch = in[0];
  g->in_h = in[1];
  g->in_w = in[2];
  g->channels = in[3];
  g->k_h = filter[0];
  g->k_w = filter[1];
  g->group_channels = filter[2];
  g->filters = filter[3];
  g->groups = attrs.groups;
  g->stride_h = attrs.stride_h;
  g->stride_w = attrs.stride_w;
  g->dilation_h = attrs.dilation_h;
  g->dilation_w = attrs.dilation_w;
  const int64_t groups = attrs.groups;
  if (g->channels % groups != 0) {
    return errors::InvalidArgument(op, ": `input` has ", g->channels,
                                   " channels, which `groups`=", groups, " does not divide");
  }
  if (g->group_channels * groups != g->channels) {
    return errors::InvalidArgument(
        op, ": `filter` has ", g->group_channels, " input channels (dimension 2) but `input` has ",
        g->channels, " channels and `groups`=", groups, "; expected ", g->channels / groups,
        " (channels / groups)");
  }
  if (g->filters % groups != 0) {
    return errors::InvalidArgument(op, ": `filter` has ", g->filters,
                                   " output channels (dimension 3), which `groups`=", groups,
                                   " does not divide");
  }
  g->group_filters = g->filters / groups;
  TF_RETURN_IF_ERROR(AxisSize(op, "height", g->in_h, g->k_h, g->stride_h, g->dilation_h,
                              attrs.same, &g->out_h, &g->pad_top));
  return AxisSize(op, "width", g->in_w, g->k_w, g->stride_w, g->dilation_w, attrs.same,
                  &g->out_w, &g->pad_left);
}

Status CheckRank4(const char* op, const char* name, const char* layout, const Tensor& t) {
  if (t.dims() != 4) {
    return errors::InvalidArgument(op, ": `", name, "` must have rank 4 ", layout,
                                   ", got shape ", t.shape().DebugString());
  }
  return Status();
}

void Dims4(const Tensor& t, int64_t dims[4]) {
  for (int i = 0; i < 4; ++i) dims[i] = t.dim_size(i);
}

// The filter taps one input position reaches along one axis: for input index i, the pairs
// (k, o) with o * stride = i + pad - k * dilation and 0 <= o < out, k ascending, as
// entries [begin[i], begin[i + 1]) of tap/output.
struct AxisTaps {
  std::vector<int64_t> begin, tap, output;

  AxisTaps(int64_t in, int64_t k, int64_t out, int64_t stride, int64_t dilation, int64_t pad)
      : begin(in + 1, 0) {
    for (int64_t i = 0; i < in; ++i) {
      for (int64_t j = 0; j < k; ++j) {
        const int64_t pos = i + pad - j * dilation;
        if (pos < 0) break;  // j ascending: pos only decreases
        if (pos % stride != 0 || pos / stride >= out) continue;
        tap.push_back(j);
        output.push_back(pos / stride);
      }
      begin[i + 1] = static_cast<int64_t>(tap.size());
    }
  }
};

// Packed filter [C][KH][KW reversed][Fg]: the slice of input channel c (group c / Cg).
template <typename T>
void PackFilter(const ConvGeometry& g, const T* filter, T* packed) {
  const int64_t kh_n = g.k_h, kw_n = g.k_w, cg = g.group_channels, fg = g.group_filters;
  for (int64_t c = 0; c < g.channels; ++c) {
    const int64_t group = c / cg, cl = c % cg;
    for (int64_t kh = 0; kh < kh_n; ++kh) {
      for (int64_t kw = 0; kw < kw_n; ++kw) {
        const T* src = filter + ((kh * kw_n + kw) * cg + cl) * g.filters + group * fg;
        T* dst = packed + ((c * kh_n + kh) * kw_n + (kw_n - 1 - kw)) * fg;
        std::copy(src, src + fg, dst);
      }
    }
  }
}

template <typename T>
void UnpackFilter(const ConvGeometry& g, const T* packed, T* filter) {
  const int64_t kh_n = g.k_h, kw_n = g.k_w, cg = g.group_channels, fg = g.group_filters;
  for (int64_t c = 0; c < g.channels; ++c) {
    const int64_t group = c / cg, cl = c % cg;
    for (int64_t kh = 0; kh < kh_n; ++kh) {
      for (int64_t kw = 0; kw < kw_n; ++kw) {
        const T* src = packed + ((c * kh_n + kh) * kw_n + (kw_n - 1 - kw)) * fg;
        T* dst = filter + ((kh * kw_n + kw) * cg + cl) * g.filters + group * fg;
        std::copy(src, src + fg, dst);
      }
    }
  }
}

template <typename T>
inline void ConvAxpy(T* __restrict o, const T* __restrict w, T c, int64_t n) {
  for (int64_t j = 0; j < n; ++j) o[j] += c * w[j];
}

// o += c0 w0 + c1 w1 + c2 w2 + c3 w3: four active channels of one pixel per pass over o.
template <typename T>
inline void ConvAxpy4(T* __restrict o, const T* __restrict w0, const T* __restrict w1,
                      const T* __restrict w2, const T* __restrict w3, T c0, T c1, T c2, T c3,
                      int64_t n) {
  for (int64_t j = 0; j < n; ++j) o[j] += c0 * w0[j] + c1 * w1[j] + c2 * w2[j] + c3 * w3[j];
}

// Calls visit(ih, iw, pixel, active, count) for every input pixel of image n with at least one
// nonzero channel (active[0:count) its channels, ascending; NaN counts as nonzero, as x != 0
// does) and at least one filter tap inside the output. The image's nonzero entries are found
// first in one branch-free pass (about a cycle per entry), so that the usual spike map, mostly
// zeros, costs little more than reading it. `active` has room for an image (H x W x C).
template <typename T, typename Visit>
inline void ForActivePixels(const ConvGeometry& g, const AxisTaps& rows, const AxisTaps& cols,
                            const T* x, int64_t n, int64_t* __restrict active, Visit visit) {
  const int64_t channels = g.channels, in_w = g.in_w;
  const int64_t size = g.in_h * in_w * channels;
  const T* __restrict image = x + n * size;
  int64_t count = 0;
  for (int64_t i = 0; i < size; ++i) {
    active[count] = i;
    count += (image[i] != T(0));
  }
  const int64_t* row_begin = rows.begin.data();
  const int64_t* col_begin = cols.begin.data();
  for (int64_t a = 0; a < count;) {
    const int64_t pixel = active[a] / channels;
    const int64_t first = pixel * channels, end = first + channels;
    int64_t b = a;
    for (; b < count && active[b] < end; ++b) active[b] -= first;  // now channel indices
    const int64_t ih = pixel / in_w, iw = pixel % in_w;
    if (row_begin[ih] != row_begin[ih + 1] && col_begin[iw] != col_begin[iw + 1]) {
      visit(ih, iw, image + first, static_cast<const int64_t*>(active + a), b - a);
    }
    a = b;
  }
}

// Whether the outputs one input reaches along a filter row are contiguous, and so are the
// packed filter values (stride and dilation 1 along the width, one group).
inline bool ContiguousRows(const ConvGeometry& g) {
  return g.stride_w == 1 && g.dilation_w == 1 && g.groups == 1;
}

// Forward pass of image n into out (zeroed): each active input scatters its filter slice.
template <typename T>
void ScatterImage(const ConvGeometry& g, const AxisTaps& rows, const AxisTaps& cols,
                  const T* x, const T* packed, int64_t n, int64_t* active, T* out) {
  const int64_t kh_n = g.k_h, kw_n = g.k_w, fg = g.group_filters, f = g.filters;
  const int64_t out_w = g.out_w, cg = g.group_channels;
  T* image = out + n * g.out_h * out_w * f;
  std::fill(image, image + g.out_h * out_w * f, T(0));  // in cache for the scatter below
  if (ContiguousRows(g)) {
    ForActivePixels(g, rows, cols, x, n, active,
                    [&](int64_t ih, int64_t iw, const T* pixel, const int64_t* act, int64_t count) {
                      const int64_t c0 = cols.begin[iw], c1 = cols.begin[iw + 1];
                      const int64_t kw_lo = cols.tap[c0], kw_hi = cols.tap[c1 - 1];
                      const int64_t ow_lo = cols.output[c1 - 1];
                      const int64_t len = (kw_hi - kw_lo + 1) * f;
                      const int64_t w_off = kw_n - 1 - kw_hi;
                      for (int64_t r = rows.begin[ih]; r < rows.begin[ih + 1]; ++r) {
                        const int64_t kh = rows.tap[r];
                        T* o = image + (rows.output[r] * out_w + ow_lo) * f;
                        auto w = [&](int64_t a) {
                          return packed + ((act[a] * kh_n + kh) * kw_n + w_off) * f;
                        };
                        int64_t a = 0;
                        for (; a + 4 <= count; a += 4) {
                          ConvAxpy4(o, w(a), w(a + 1), w(a + 2), w(a + 3), pixel[act[a]],
                                    pixel[act[a + 1]], pixel[act[a + 2]], pixel[act[a + 3]], len);
                        }
                        for (; a < count; ++a) ConvAxpy(o, w(a), pixel[act[a]], len);
                      }
                    });
    return;
  }
  ForActivePixels(
      g, rows, cols, x, n, active,
      [&](int64_t ih, int64_t iw, const T* pixel, const int64_t* act, int64_t count) {
        for (int64_t r = rows.begin[ih]; r < rows.begin[ih + 1]; ++r) {
          const int64_t kh = rows.tap[r];
          T* o_row = image + rows.output[r] * out_w * f;
          for (int64_t a = 0; a < count; ++a) {
            const int64_t c = act[a];
            const T v = pixel[c];
            const T* w_c = packed + (c * kh_n + kh) * kw_n * fg;
            T* o_group = o_row + (c / cg) * fg;
            for (int64_t q = cols.begin[iw]; q < cols.begin[iw + 1]; ++q) {
              ConvAxpy(o_group + cols.output[q] * f, w_c + (kw_n - 1 - cols.tap[q]) * fg, v, fg);
            }
          }
        }
      });
}

// Weight gradient of image n into packed (a [C][KH][KW reversed][Fg] accumulator): each
// active input gathers the output-gradient patch it reached in the forward pass.
template <typename T>
void GatherImage(const ConvGeometry& g, const AxisTaps& rows, const AxisTaps& cols,
                 const T* x, const T* grad, int64_t n, int64_t* active, T* packed) {
  const int64_t kh_n = g.k_h, kw_n = g.k_w, fg = g.group_filters, f = g.filters;
  const int64_t out_w = g.out_w, cg = g.group_channels;
  const T* image = grad + n * g.out_h * out_w * f;
  if (ContiguousRows(g)) {
    ForActivePixels(g, rows, cols, x, n, active,
                    [&](int64_t ih, int64_t iw, const T* pixel, const int64_t* act, int64_t count) {
                      const int64_t c0 = cols.begin[iw], c1 = cols.begin[iw + 1];
                      const int64_t kw_lo = cols.tap[c0], kw_hi = cols.tap[c1 - 1];
                      const int64_t ow_lo = cols.output[c1 - 1];
                      const int64_t len = (kw_hi - kw_lo + 1) * f;
                      const int64_t w_off = kw_n - 1 - kw_hi;
                      for (int64_t r = rows.begin[ih]; r < rows.begin[ih + 1]; ++r) {
                        const int64_t kh = rows.tap[r];
                        const T* gp = image + (rows.output[r] * out_w + ow_lo) * f;
                        for (int64_t a = 0; a < count; ++a) {
                          T* d = packed + ((act[a] * kh_n + kh) * kw_n + w_off) * f;
                          ConvAxpy(d, gp, pixel[act[a]], len);
                        }
                      }
                    });
    return;
  }
  ForActivePixels(
      g, rows, cols, x, n, active,
      [&](int64_t ih, int64_t iw, const T* pixel, const int64_t* act, int64_t count) {
        for (int64_t r = rows.begin[ih]; r < rows.begin[ih + 1]; ++r) {
          const int64_t kh = rows.tap[r];
          const T* g_row = image + rows.output[r] * out_w * f;
          for (int64_t a = 0; a < count; ++a) {
            const int64_t c = act[a];
            const T v = pixel[c];
            T* d_c = packed + (c * kh_n + kh) * kw_n * fg;
            const T* g_group = g_row + (c / cg) * fg;
            for (int64_t q = cols.begin[iw]; q < cols.begin[iw + 1]; ++q) {
              ConvAxpy(d_c + (kw_n - 1 - cols.tap[q]) * fg, g_group + cols.output[q] * f, v, fg);
            }
          }
        }
      });
}

// Rough cycles per image at a typical 10 % activity (only sets how finely work is split).
inline double ImageCost(const ConvGeometry& g) {
  const double pixels = static_cast<double>(g.in_h) * g.in_w;
  return pixels * g.channels * (1.0 + 0.1 * g.k_h * g.k_w * g.group_filters) + 1.0;
}

// Shape function of both ops' common part: sets *out to [N, OH, OW, F] where known.
Status OutputShape(InferenceContext* c, ShapeHandle input, ShapeHandle filter,
                   ShapeHandle* out) {
  ConvAttrs attrs;
  std::vector<int64_t> strides, dilations;
  std::string padding;
  TF_RETURN_IF_ERROR(c->GetAttr("strides", &strides));
  TF_RETURN_IF_ERROR(c->GetAttr("dilations", &dilations));
  TF_RETURN_IF_ERROR(c->GetAttr("padding", &padding));
  TF_RETURN_IF_ERROR(c->GetAttr("groups", &attrs.groups));
  const bool attrs_ok = strides.size() == 2 && dilations.size() == 2;
  int64_t in[4], fil[4];
  bool known = attrs_ok;
  for (int i = 0; i < 4; ++i) {
    in[i] = c->Value(c->Dim(input, i));
    fil[i] = c->Value(c->Dim(filter, i));
    // the batch may stay unknown; the rest is needed for the output size
    if (i > 0 && in[i] == InferenceContext::kUnknownDim) known = false;
    if (fil[i] == InferenceContext::kUnknownDim) known = false;
  }
  DimensionHandle out_h = c->UnknownDim(), out_w = c->UnknownDim();
  if (known) {
    attrs.stride_h = strides[0];
    attrs.stride_w = strides[1];
    attrs.dilation_h = dilations[0];
    attrs.dilation_w = dilations[1];
    attrs.same = padding == "SAME";
    bool attrs_valid = attrs.groups >= 1;
    for (const int64_t v : {strides[0], strides[1], dilations[0], dilations[1]}) {
      attrs_valid = attrs_valid && v >= 1 && v <= kMaxStep;
    }
    if (attrs_valid) {  // else the kernel's constructor reports it
      ConvGeometry g;
      if (in[0] == InferenceContext::kUnknownDim) in[0] = 0;
      TF_RETURN_IF_ERROR(MakeGeometry("EventConv2D", in, fil, attrs, &g));
      out_h = c->MakeDim(g.out_h);
      out_w = c->MakeDim(g.out_w);
    }
  }
  *out = c->MakeShape({c->Dim(input, 0), out_h, out_w, c->Dim(filter, 3)});
  return Status();
}

}  // namespace event_conv

REGISTER_OP("KerasSpiking>EventConv2D")
    .Input("input: T")
    .Input("filter: T")
    .Output("output: T")
    .Attr("T: {float, double}")
    .Attr("strides: list(int)")
    .Attr("dilations: list(int) = [1, 1]")
    .Attr("padding: {'SAME', 'VALID'}")
    .Attr("groups: int = 1")
    .SetShapeFn([](InferenceContext* c) {
      ShapeHandle input, filter, out;
      TF_RETURN_IF_ERROR(c->WithRank(c->input(0), 4, &input));
      TF_RETURN_IF_ERROR(c->WithRank(c->input(1), 4, &filter));
      TF_RETURN_IF_ERROR(event_conv::OutputShape(c, input, filter, &out));
      c->set_output(0, out);
      return Status();
    })
    .Doc("tf.nn.conv2d of input [N, H, W, C] and filter [KH, KW, C / groups, F] (NHWC), "
         "each nonzero input scattering its filter slice (zeros are skipped).");

REGISTER_OP("KerasSpiking>EventConv2DGradFilter")
    .Input("input: T")
    .Input("out_backprop: T")
    .Input("filter_sizes: int32")
    .Output("grad_filter: T")
    .Attr("T: {float, double}")
    .Attr("strides: list(int)")
    .Attr("dilations: list(int) = [1, 1]")
    .Attr("padding: {'SAME', 'VALID'}")
    .Attr("groups: int = 1")
    .SetShapeFn([](InferenceContext* c) {
      ShapeHandle input, grad, sizes, filter;
      TF_RETURN_IF_ERROR(c->WithRank(c->input(0), 4, &input));
      TF_RETURN_IF_ERROR(c->WithRank(c->input(1), 4, &grad));
      TF_RETURN_IF_ERROR(c->WithRank(c->input(2), 1, &sizes));
      TF_RETURN_IF_ERROR(c->MakeShapeFromShapeTensor(2, &filter));
      TF_RETURN_IF_ERROR(c->WithRank(filter, 4, &filter));
      c->set_output(0, filter);
      return Status();
    })
    .Doc("d(loss)/d(filter) of EventConv2D: each nonzero input gathers the out_backprop "
         "patch it reached, times its value.");

template <typename T>
class EventConv2DOp : public GuardedOpKernel {
 public:
  explicit EventConv2DOp(OpKernelConstruction* context)
      : GuardedOpKernel(context, "EventConv2D") {
    OP_REQUIRES_OK(context, event_conv::ReadAttrs(context, "EventConv2D", &attrs_));
  }

  void DoCompute(OpKernelContext* context) override {
    const char* op = "EventConv2D";
    const Tensor& input = context->input(0);
    const Tensor& filter = context->input(1);
    OP_REQUIRES_OK(context, event_conv::CheckRank4(op, "input", "[batch, height, width, channels]",
                                                   input));
    OP_REQUIRES_OK(context, event_conv::CheckRank4(
                                op, "filter", "[height, width, channels / groups, filters]",
                                filter));
    int64_t in_dims[4], filter_dims[4];
    event_conv::Dims4(input, in_dims);
    event_conv::Dims4(filter, filter_dims);
    event_conv::ConvGeometry g;
    OP_REQUIRES_OK(context, event_conv::MakeGeometry(op, in_dims, filter_dims, attrs_, &g));
    Tensor* output = nullptr;
    OP_REQUIRES_OK(context, AllocateOutputChecked(context, op, 0, "output",
                                                  {g.batch, g.out_h, g.out_w, g.filters},
                                                  &output));
    T* out = output->flat<T>().data();
    if (g.batch == 0 || g.filters == 0) return;
    std::vector<T> packed(filter.NumElements());
    event_conv::PackFilter(g, filter.flat<T>().data(), packed.data());
    const event_conv::AxisTaps rows(g.in_h, g.k_h, g.out_h, g.stride_h, g.dilation_h, g.pad_top);
    const event_conv::AxisTaps cols(g.in_w, g.k_w, g.out_w, g.stride_w, g.dilation_w,
                                    g.pad_left);
    const T* x = input.flat<T>().data();
    const T* w = packed.data();
    ParallelRange(context, g.batch, ShardCost(event_conv::ImageCost(g), g.batch),
                  [&](int64_t begin, int64_t end) {
                    std::vector<int64_t> active(g.in_h * g.in_w * g.channels);
                    for (int64_t n = begin; n < end; ++n) {
                      event_conv::ScatterImage(g, rows, cols, x, w, n, active.data(), out);
                    }
                  });
  }

 private:
  event_conv::ConvAttrs attrs_;
};

template <typename T>
class EventConv2DGradFilterOp : public GuardedOpKernel {
 public:
  explicit EventConv2DGradFilterOp(OpKernelConstruction* context)
      : GuardedOpKernel(context, "EventConv2DGradFilter") {
    OP_REQUIRES_OK(context, event_conv::ReadAttrs(context, "EventConv2DGradFilter", &attrs_));
  }

  void DoCompute(OpKernelContext* context) override {
    const char* op = "EventConv2DGradFilter";
    const Tensor& input = context->input(0);
    const Tensor& grad = context->input(1);
    const Tensor& sizes = context->input(2);
    OP_REQUIRES_OK(context, event_conv::CheckRank4(op, "input", "[batch, height, width, channels]",
                                                   input));
    OP_REQUIRES_OK(context, event_conv::CheckRank4(
                                op, "out_backprop", "[batch, out_height, out_width, filters]",
                                grad));
    OP_REQUIRES(context, TensorShapeUtils::IsVector(sizes.shape()) && sizes.dim_size(0) == 4,
                errors::InvalidArgument(op, ": `filter_sizes` must be a vector of 4 ints, got "
                                            "shape ",
                                        sizes.shape().DebugString()));
    int64_t in_dims[4], filter_dims[4];
    event_conv::Dims4(input, in_dims);
    const auto sizes_flat = sizes.flat<int32_t>();
    for (int i = 0; i < 4; ++i) {
      filter_dims[i] = sizes_flat(i);
      OP_REQUIRES(context, filter_dims[i] >= 0,
                  errors::InvalidArgument(op, ": `filter_sizes` must not be negative, got [",
                                          sizes_flat(0), ", ", sizes_flat(1), ", ",
                                          sizes_flat(2), ", ", sizes_flat(3), "]"));
    }
    event_conv::ConvGeometry g;
    OP_REQUIRES_OK(context, event_conv::MakeGeometry(op, in_dims, filter_dims, attrs_, &g));
    bool grad_ok = true;
    const int64_t want[4] = {g.batch, g.out_h, g.out_w, g.filters};
    for (int i = 0; i < 4; ++i) grad_ok = grad_ok && grad.dim_size(i) == want[i];
    OP_REQUIRES(context, grad_ok,
                errors::InvalidArgument(
                    op, ": `out_backprop` has shape ", grad.shape().DebugString(),
                    "; expected ", event_conv::ShapeString({want[0], want[1], want[2], want[3]}),
                    " (the output of the convolution)"));
    Tensor* output = nullptr;
    OP_REQUIRES_OK(context, AllocateOutputChecked(
                                context, op, 0, "grad_filter",
                                {filter_dims[0], filter_dims[1], filter_dims[2], filter_dims[3]},
                                &output));
    const int64_t size = output->NumElements();
    T* dw = output->flat<T>().data();
    std::fill(dw, dw + size, T(0));
    if (g.batch == 0 || size == 0) return;
    const event_conv::AxisTaps rows(g.in_h, g.k_h, g.out_h, g.stride_h, g.dilation_h, g.pad_top);
    const event_conv::AxisTaps cols(g.in_w, g.k_w, g.out_w, g.stride_w, g.dilation_w,
                                    g.pad_left);
    // one packed accumulator per part (a contiguous range of images), at most about 16 Mi
    // values in all, summed in part order afterwards
    const int64_t budget = std::max<int64_t>(1, (int64_t{1} << 24) / size);
    const int64_t parts = std::min<int64_t>(NumParts(context, g.batch), budget);
    std::vector<T> packed(parts * size, T(0));
    const T* x = input.flat<T>().data();
    const T* gr = grad.flat<T>().data();
    T* acc = packed.data();
    ForEachPart(context, g.batch, parts, event_conv::ImageCost(g),
                [&](int64_t part, int64_t b0, int64_t b1) {
                  std::vector<int64_t> active(g.in_h * g.in_w * g.channels);
                  for (int64_t n = b0; n < b1; ++n) {
                    event_conv::GatherImage(g, rows, cols, x, gr, n, active.data(),
                                            acc + part * size);
                  }
                });
    ParallelRange(context, size, parts + 1, [&](int64_t begin, int64_t end) {
      for (int64_t part = 1; part < parts; ++part) {
        const T* __restrict src = acc + part * size;
        T* __restrict dst = acc;
        for (int64_t i = begin; i < end; ++i) dst[i] += src[i];
      }
    });
    event_conv::UnpackFilter(g, acc, dw);
  }

 private:
  event_conv::ConvAttrs attrs_;
};

#define KERAS_SPIKING_REGISTER_EVENT_CONV(T)                                          \
  REGISTER_KERNEL_BUILDER(                                                            \
      Name("KerasSpiking>EventConv2D").Device(DEVICE_CPU).TypeConstraint<T>("T"),     \
      EventConv2DOp<T>);                                                              \
  REGISTER_KERNEL_BUILDER(Name("KerasSpiking>EventConv2DGradFilter")                  \
                              .Device(DEVICE_CPU)                                     \
                              .TypeConstraint<T>("T"),                                \
                          EventConv2DGradFilterOp<T>);

KERAS_SPIKING_REGISTER_EVENT_CONV(float);
KERAS_SPIKING_REGISTER_EVENT_CONV(double);
#undef KERAS_SPIKING_REGISTER_EVENT_CONV

}  // namespace keras_spiking
