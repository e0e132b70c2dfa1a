// The C++ binding: XLA FFI handlers over the kernel library's C ABI, exposed
// to Python by pybind11 as the extension module _jax_flash_attn_cpp.
//
// The module's Python surface is the contract the Rust binding (rust/) keeps
// too; python/frontend relies on nothing else:
//   registrations()      {"fwd": capsule, "bwd": capsule} of XLA FFI handlers
//   has_kernel(dtype, head_dim), build_config(), abi_version()
//   bwd_workspace_elems(batch, seqlen_q, num_heads, head_dim) -> (int, int)

#include <cuda_runtime_api.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "jax_flash_attn/flash_attn.h"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;
namespace py = pybind11;

namespace {

constexpr size_t kErrLen = 1024;

jfa_buffer describe(const ffi::AnyBuffer& b) {
  const auto dims = b.dimensions();
  return {static_cast<int32_t>(b.element_type()), static_cast<int64_t>(dims.size()),
          dims.size() ? &dims[0] : nullptr};
}

ffi::Error to_ffi_error(int status, const char* message) {
  if (status == JFA_OK) return ffi::Error::Success();
  if (status == JFA_INVALID_ARGUMENT) return ffi::Error::InvalidArgument(message);
  if (status == JFA_UNSUPPORTED) return ffi::Error(ffi::ErrorCode::kUnimplemented, message);
  return ffi::Error::Internal(message);
}

jfa_attention_shape options(float softmax_scale, bool is_causal, int32_t window_left,
                            int32_t window_right, float softcap) {
  jfa_attention_shape s{};
  s.softmax_scale = softmax_scale;
  s.is_causal = is_causal;
  s.window_left = window_left;
  s.window_right = window_right;
  s.softcap = softcap;
  return s;
}

ffi::Error FlashFwd(cudaStream_t stream, ffi::AnyBuffer q, ffi::AnyBuffer k, ffi::AnyBuffer v,
                    ffi::Result<ffi::AnyBuffer> out, ffi::Result<ffi::AnyBuffer> lse,
                    float softmax_scale, bool is_causal, int32_t window_left, int32_t window_right,
                    float softcap) {
  char err[kErrLen] = {0};
  jfa_fwd_args args{};
  args.shape = options(softmax_scale, is_causal, window_left, window_right, softcap);
  const jfa_buffer buffers[] = {describe(q), describe(k), describe(v), describe(*out),
                                describe(*lse)};
  int status = jfa_fwd_shape_from_buffers(buffers, 5, &args.shape, err, kErrLen);
  if (status != JFA_OK) return to_ffi_error(status, err);
  args.q = q.untyped_data();
  args.k = k.untyped_data();
  args.v = v.untyped_data();
  args.out = out->untyped_data();
  args.softmax_lse = static_cast<float*>(lse->untyped_data());
  status = jfa_mha_fwd(&args, stream, err, kErrLen);
  return to_ffi_error(status, err);
}

ffi::Error FlashBwd(cudaStream_t stream, ffi::AnyBuffer dout, ffi::AnyBuffer q, ffi::AnyBuffer k,
                    ffi::AnyBuffer v, ffi::AnyBuffer out, ffi::AnyBuffer lse,
                    ffi::Result<ffi::AnyBuffer> dq, ffi::Result<ffi::AnyBuffer> dk,
                    ffi::Result<ffi::AnyBuffer> dv, ffi::Result<ffi::AnyBuffer> dq_accum,
                    ffi::Result<ffi::AnyBuffer> softmax_d, float softmax_scale, bool is_causal,
                    int32_t window_left, int32_t window_right, float softcap) {
  char err[kErrLen] = {0};
  jfa_bwd_args args{};
  args.shape = options(softmax_scale, is_causal, window_left, window_right, softcap);
  const jfa_buffer buffers[] = {describe(dout), describe(q),   describe(k),        describe(v),
                                describe(out),  describe(lse), describe(*dq),      describe(*dk),
                                describe(*dv),  describe(*dq_accum), describe(*softmax_d)};
  int status = jfa_bwd_shape_from_buffers(buffers, 11, &args.shape, err, kErrLen);
  if (status != JFA_OK) return to_ffi_error(status, err);
  args.dout = dout.untyped_data();
  args.q = q.untyped_data();
  args.k = k.untyped_data();
  args.v = v.untyped_data();
  args.out = out.untyped_data();
  args.softmax_lse = static_cast<const float*>(lse.untyped_data());
  args.dq = dq->untyped_data();
  args.dk = dk->untyped_data();
  args.dv = dv->untyped_data();
  args.dq_accum = static_cast<float*>(dq_accum->untyped_data());
  args.softmax_d = static_cast<float*>(softmax_d->untyped_data());
  status = jfa_mha_bwd(&args, stream, err, kErrLen);
  return to_ffi_error(status, err);
}

template <typename Binding>
auto with_options(Binding binding) {
  return std::move(binding)
      .template Attr<float>("softmax_scale")
      .template Attr<bool>("is_causal")
      .template Attr<int32_t>("window_left")
      .template Attr<int32_t>("window_right")
      .template Attr<float>("softcap");
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(
    JfaFlashFwd, FlashFwd,
    with_options(ffi::Ffi::Bind()
                     .Ctx<ffi::PlatformStream<cudaStream_t>>()
                     .Arg<ffi::AnyBuffer>()    // q
                     .Arg<ffi::AnyBuffer>()    // k
                     .Arg<ffi::AnyBuffer>()    // v
                     .Ret<ffi::AnyBuffer>()    // out
                     .Ret<ffi::AnyBuffer>()));  // softmax_lse

XLA_FFI_DEFINE_HANDLER_SYMBOL(
    JfaFlashBwd, FlashBwd,
    with_options(ffi::Ffi::Bind()
                     .Ctx<ffi::PlatformStream<cudaStream_t>>()
                     .Arg<ffi::AnyBuffer>()    // dout
                     .Arg<ffi::AnyBuffer>()    // q
                     .Arg<ffi::AnyBuffer>()    // k
                     .Arg<ffi::AnyBuffer>()    // v
                     .Arg<ffi::AnyBuffer>()    // out
                     .Arg<ffi::AnyBuffer>()    // softmax_lse
                     .Ret<ffi::AnyBuffer>()    // dq
                     .Ret<ffi::AnyBuffer>()    // dk (num_heads heads)
                     .Ret<ffi::AnyBuffer>()    // dv (num_heads heads)
                     .Ret<ffi::AnyBuffer>()    // dq_accum scratch
                     .Ret<ffi::AnyBuffer>()));  // softmax_d scratch

namespace {

jfa_dtype parse_dtype(const std::string& name) {
  if (name == "float16") return JFA_FLOAT16;
  if (name == "bfloat16") return JFA_BFLOAT16;
  throw py::value_error("dtype must be 'float16' or 'bfloat16', got '" + name + "'");
}

}  // namespace

PYBIND11_MODULE(_jax_flash_attn_cpp, m) {
  m.doc() = "jax-flash-attn C++ binding: XLA FFI handlers for FlashAttention kernels.";
  m.def("registrations", [] {
    py::dict targets;
    targets["fwd"] = py::capsule(reinterpret_cast<void*>(&JfaFlashFwd));
    targets["bwd"] = py::capsule(reinterpret_cast<void*>(&JfaFlashBwd));
    return targets;
  });
  m.def("has_kernel", [](const std::string& dtype, int64_t head_dim) {
    return jfa_has_kernel(parse_dtype(dtype), head_dim) != 0;
  });
  m.def("build_config", [] { return std::string(jfa_build_config()); });
  m.def("abi_version", [] { return jfa_abi_version(); });
  m.def("bwd_workspace_elems",
        [](int64_t batch, int64_t seqlen_q, int64_t num_heads, int64_t head_dim) {
          jfa_attention_shape s{};
          s.batch = batch;
          s.seqlen_q = seqlen_q;
          s.num_heads = num_heads;
          s.head_dim = head_dim;
          int64_t dq_accum = 0, softmax_d = 0;
          jfa_bwd_workspace_elems(&s, &dq_accum, &softmax_d);
          return py::make_tuple(dq_accum, softmax_d);
        });
}
