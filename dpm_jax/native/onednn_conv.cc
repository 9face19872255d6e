// 2-D convolutions on oneDNN for XLA:CPU through XLA's FFI (dpm_jax/onednn.py builds and
// registers them): the forward pass, the data gradient and the weight gradient. Activations
// NHWC, kernels HWIO, float32; explicit strides and padding, no bias, no dilation, no groups.
// Each shape's primitives are made once and cached; weights are reordered to and from the
// layout oneDNN picks. Errors come back to XLA as FFI errors.
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "oneapi/dnnl/dnnl.hpp"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;
using tag = dnnl::memory::format_tag;
using dt = dnnl::memory::data_type;

namespace {

dnnl::engine& Engine() {
  static dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  return engine;
}

// (kind: 0 forward, 1 data gradient, 2 weight gradient; N, H, W, C, KH, KW, O, OH, OW,
//  stride h, stride w, pad top, bottom, left, right)
using Key = std::vector<int64_t>;

struct Plan {
  dnnl::primitive prim;
  dnnl::memory::desc weights_md;  // the primitive's (maybe blocked) weights layout
  dnnl::memory::desc scratch_md;
  dnnl::memory::desc reorder_scratch_md;
  bool reorder_weights;
  dnnl::reorder reorder;  // user HWIO <-> primitive layout
};

std::mutex mu;
std::map<Key, std::shared_ptr<Plan>>& Cache() {
  static std::map<Key, std::shared_ptr<Plan>> cache;
  return cache;
}

struct Geometry {
  dnnl::memory::dims src, wei, dst, strides, pad_l, pad_r;
};

// Every primitive: float32 arithmetic whatever ONEDNN_DEFAULT_FPMATH_MODE says, and a
// scratchpad passed in per call (safe to run one primitive from several threads at once).
dnnl::primitive_attr Attr() {
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  attr.set_fpmath_mode(dnnl::fpmath_mode::strict);
  return attr;
}

Geometry Geo(const Key& k) {
  // src NCHW dims, weights OIHW dims, dst NCHW dims (oneDNN's logical order)
  return {{k[1], k[4], k[2], k[3]}, {k[7], k[4], k[5], k[6]}, {k[1], k[7], k[8], k[9]},
          {k[10], k[11]}, {k[12], k[14]}, {k[13], k[15]}};
}

template <typename Primitive, typename Pd>
void Use(Plan& plan, const Pd& pd, const dnnl::memory::desc& weights) {
  plan.prim = Primitive(pd);
  plan.weights_md = weights;
  plan.scratch_md = pd.scratchpad_desc();
}

std::shared_ptr<Plan> MakePlan(const Key& k) {
  Geometry g = Geo(k);
  auto plan = std::make_shared<Plan>();
  dnnl::memory::desc user_w(g.wei, dt::f32, tag::hwio);
  dnnl::primitive_attr attr = Attr();
  // Activations (or their gradients) NHWC; the weights (or theirs) in oneDNN's choice.
  dnnl::memory::desc src(g.src, dt::f32, tag::nhwc), dst(g.dst, dt::f32, tag::nhwc),
      wei(g.wei, dt::f32, tag::any);
  dnnl::convolution_forward::primitive_desc fwd(
      Engine(), dnnl::prop_kind::forward_training, dnnl::algorithm::convolution_direct, src, wei,
      dst, g.strides, g.pad_l, g.pad_r, attr);
  auto args = std::make_tuple(Engine(), dnnl::algorithm::convolution_direct, src, wei, dst,
                              g.strides, g.pad_l, g.pad_r, fwd, attr);
  if (k[0] == 0) {
    Use<dnnl::convolution_forward>(*plan, fwd, fwd.weights_desc());
  } else if (k[0] == 1) {
    auto pd = std::make_from_tuple<dnnl::convolution_backward_data::primitive_desc>(args);
    Use<dnnl::convolution_backward_data>(*plan, pd, pd.weights_desc());
  } else {
    auto pd = std::make_from_tuple<dnnl::convolution_backward_weights::primitive_desc>(args);
    Use<dnnl::convolution_backward_weights>(*plan, pd, pd.diff_weights_desc());
  }
  plan->reorder_weights = plan->weights_md != user_w;
  if (plan->reorder_weights) {
    dnnl::primitive_attr reorder_attr = Attr();
    auto pd = k[0] == 2 ? dnnl::reorder::primitive_desc(Engine(), plan->weights_md, Engine(),
                                                        user_w, reorder_attr)
                        : dnnl::reorder::primitive_desc(Engine(), user_w, Engine(),
                                                        plan->weights_md, reorder_attr);
    plan->reorder = dnnl::reorder(pd);
    plan->reorder_scratch_md = pd.scratchpad_desc();
  }
  return plan;
}

std::shared_ptr<Plan> GetPlan(const Key& k) {
  std::lock_guard<std::mutex> lock(mu);
  auto& cache = Cache();
  auto it = cache.find(k);
  if (it != cache.end()) return it->second;
  auto plan = MakePlan(k);
  cache.emplace(k, plan);
  return plan;
}

Key MakeKey(int64_t kind, ffi::Span<const int64_t> x, ffi::Span<const int64_t> w,
            ffi::Span<const int64_t> y, int64_t sh, int64_t sw, int64_t pt, int64_t pb,
            int64_t pl, int64_t pr) {
  return {kind, x[0], x[1], x[2], x[3], w[0], w[1], w[3], y[1], y[2], sh, sw, pt, pb, pl, pr};
}

ffi::Error Run(const Key& k, float* x, float* w, float* y) {
  try {
    auto plan = GetPlan(k);
    Geometry g = Geo(k);
    dnnl::stream stream(Engine());
    dnnl::memory xm({g.src, dt::f32, tag::nhwc}, Engine(), x);
    dnnl::memory ym({g.dst, dt::f32, tag::nhwc}, Engine(), y);
    dnnl::memory wm({g.wei, dt::f32, tag::hwio}, Engine(), w);
    dnnl::memory scratch(plan->scratch_md, Engine());
    dnnl::memory pw = wm, reorder_scratch;
    if (plan->reorder_weights) {
      pw = dnnl::memory(plan->weights_md, Engine());
      reorder_scratch = dnnl::memory(plan->reorder_scratch_md, Engine());
    }
    auto reorder = [&](dnnl::memory& from, dnnl::memory& to) {
      plan->reorder.execute(stream, {{DNNL_ARG_FROM, from}, {DNNL_ARG_TO, to},
                                     {DNNL_ARG_SCRATCHPAD, reorder_scratch}});
    };
    if (k[0] != 2 && plan->reorder_weights) reorder(wm, pw);  // weights in
    if (k[0] == 0) {
      plan->prim.execute(stream, {{DNNL_ARG_SRC, xm}, {DNNL_ARG_WEIGHTS, pw},
                                  {DNNL_ARG_DST, ym}, {DNNL_ARG_SCRATCHPAD, scratch}});
    } else if (k[0] == 1) {  // x is diff_src (output), y is diff_dst
      plan->prim.execute(stream, {{DNNL_ARG_DIFF_SRC, xm}, {DNNL_ARG_WEIGHTS, pw},
                                  {DNNL_ARG_DIFF_DST, ym}, {DNNL_ARG_SCRATCHPAD, scratch}});
    } else {  // w is diff_weights (output)
      plan->prim.execute(stream, {{DNNL_ARG_SRC, xm}, {DNNL_ARG_DIFF_WEIGHTS, pw},
                                  {DNNL_ARG_DIFF_DST, ym}, {DNNL_ARG_SCRATCHPAD, scratch}});
      if (plan->reorder_weights) reorder(pw, wm);
    }
    stream.wait();
  } catch (const dnnl::error& e) {
    return ffi::Error(ffi::ErrorCode::kInternal, std::string("oneDNN: ") + e.what());
  } catch (const std::exception& e) {
    return ffi::Error(ffi::ErrorCode::kInternal, std::string("dpm_jax oneDNN conv: ") + e.what());
  }
  return ffi::Error::Success();
}

}  // namespace

static ffi::Error ConvFwd(ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> w,
                          ffi::ResultBuffer<ffi::F32> y, int64_t sh, int64_t sw, int64_t pt,
                          int64_t pb, int64_t pl, int64_t pr) {
  Key k = MakeKey(0, x.dimensions(), w.dimensions(), y->dimensions(), sh, sw, pt, pb, pl, pr);
  return Run(k, x.typed_data(), w.typed_data(), y->typed_data());
}

static ffi::Error ConvBwdData(ffi::Buffer<ffi::F32> dy, ffi::Buffer<ffi::F32> w,
                              ffi::ResultBuffer<ffi::F32> dx, int64_t sh, int64_t sw, int64_t pt,
                              int64_t pb, int64_t pl, int64_t pr) {
  Key k = MakeKey(1, dx->dimensions(), w.dimensions(), dy.dimensions(), sh, sw, pt, pb, pl, pr);
  return Run(k, dx->typed_data(), w.typed_data(), dy.typed_data());
}

static ffi::Error ConvBwdWeights(ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> dy,
                                 ffi::ResultBuffer<ffi::F32> dw, int64_t sh, int64_t sw,
                                 int64_t pt, int64_t pb, int64_t pl, int64_t pr) {
  Key k = MakeKey(2, x.dimensions(), dw->dimensions(), dy.dimensions(), sh, sw, pt, pb, pl, pr);
  return Run(k, x.typed_data(), dw->typed_data(), dy.typed_data());
}

#define DPM_CONV_BIND                                                                       \
  ffi::Ffi::Bind()                                                                         \
      .Arg<ffi::Buffer<ffi::F32>>()                                                        \
      .Arg<ffi::Buffer<ffi::F32>>()                                                        \
      .Ret<ffi::Buffer<ffi::F32>>()                                                        \
      .Attr<int64_t>("stride_h")                                                           \
      .Attr<int64_t>("stride_w")                                                           \
      .Attr<int64_t>("pad_top")                                                            \
      .Attr<int64_t>("pad_bottom")                                                         \
      .Attr<int64_t>("pad_left")                                                           \
      .Attr<int64_t>("pad_right")

XLA_FFI_DEFINE_HANDLER_SYMBOL(DpmConvForward, ConvFwd, DPM_CONV_BIND);
XLA_FFI_DEFINE_HANDLER_SYMBOL(DpmConvBackwardData, ConvBwdData, DPM_CONV_BIND);
XLA_FFI_DEFINE_HANDLER_SYMBOL(DpmConvBackwardWeights, ConvBwdWeights, DPM_CONV_BIND);
