// The C++ binding: XLA FFI handlers over the kernel library's C ABI, exposed
// to Python by pybind11 as the extension module _jax_flash_attn_cpp.
//
// The module's Python surface is the contract the Rust binding (rust/) keeps
// too; python/frontend relies on nothing else:
//   registrations()      {"fwd", "bwd", "varlen_fwd", "varlen_bwd", "kvcache_fwd": capsule}
//                        of XLA FFI handlers
//   has_kernel(dtype, head_dim), has_kvcache_kernel(dtype, head_dim),
//   build_config(), abi_version()
//   bwd_workspace_elems(batch, seqlen_q, num_heads, head_dim, deterministic=False,
//                       num_sms=0) -> (int, int)   (num_sms 0: ask num_sms())
//   varlen_bwd_workspace_elems(batch, total_q, num_heads, head_dim, deterministic=False,
//                              num_sms=0) -> (int, int)
//   kvcache_splits(batch, seqlen_q, seqlen_k, num_heads, head_dim, num_splits,
//                  num_sms) -> (splits, workspace_elems)   (num_splits 0: heuristic)
//   num_sms(device=-1) -> int   (RuntimeError without a GPU)
//   has_sm90_kernel(dtype, head_dim, backward=False) -> bool   (our Hopper kernels cover them)
//   uses_sm90(dtype, batch, seqlen_q, seqlen_k, num_heads, num_heads_k, head_dim,
//             cc_major, cc_minor, is_causal=False, window_left=-1, window_right=-1,
//             softcap=0.0, has_alibi=False, is_varlen=False, backward=False,
//             deterministic=False) -> bool
//                        (the C ABI's dispatch rules, jfa_fwd_uses_sm90 / jfa_bwd_uses_sm90)
// All arguments are positional-only.
//
// The FFI contract (both bindings decode it alike):
//   forward:  args (q, k, v, alibi_slopes), rets (out, softmax_lse)
//   backward: args (dout, q, k, v, out, softmax_lse, alibi_slopes),
//             rets (dq, dk, dv, dq_accum, softmax_d)
//   attrs:    softmax_scale f32, is_causal pred, window_left s32, window_right s32,
//             softcap f32, has_alibi pred; backward also deterministic pred
//   alibi_slopes is float32 [batch, heads], or the empty float32 [0] when the
//   call has no ALiBi (refused with has_alibi); read only when has_alibi.
//   Both also take scratch from XLA's allocator at run time, of
//   jfa_fwd_workspace_bytes() and jfa_bwd_workspace_bytes() (the Hopper
//   kernels' cut last round).
//   varlen forward:  args (q, k, v, cu_seqlens_q, cu_seqlens_k, alibi_slopes),
//                    rets (out, softmax_lse)
//   varlen backward: args (dout, q, k, v, out, softmax_lse, cu_seqlens_q,
//                    cu_seqlens_k, alibi_slopes), rets (dq, dk, dv, dq_accum, softmax_d)
//   varlen attrs:    the above plus max_seqlen_q s32, max_seqlen_k s32 (and
//                    deterministic pred for the backward)
//   KV-cache forward: args (q, k_cache, v_cache, seqlens_k, block_table, alibi_slopes),
//                     rets (out, softmax_lse, workspace); attrs the six options
//                     plus has_block_table pred, num_splits s32

#include <cuda_runtime_api.h>
#include <pybind11/pybind11.h>

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <mutex>
#include <optional>
#include <stdexcept>
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
                            int32_t window_right, float softcap, bool deterministic) {
  jfa_attention_shape s{};
  s.softmax_scale = softmax_scale;
  s.is_causal = is_causal;
  s.window_left = window_left;
  s.window_right = window_right;
  s.softcap = softcap;
  s.deterministic = deterministic;
  return s;
}

// The slopes buffer is [batch, num_heads] (validated with the others).
const float* alibi(const ffi::AnyBuffer& slopes, bool has_alibi) {
  return has_alibi ? static_cast<const float*>(slopes.untyped_data()) : nullptr;
}

// The empty placeholder (float32 [0]) stands for no slopes: with has_alibi
// the call would read none.
ffi::Error check_slopes(const ffi::AnyBuffer& slopes, bool has_alibi) {
  if (has_alibi && slopes.element_count() == 0) {
    return ffi::Error::InvalidArgument(
        "alibi_slopes: has_alibi is set but the slopes are the empty placeholder, shape (0,)");
  }
  return ffi::Error::Success();
}

// The device pointers of a forward call, dense or varlen (buffers validated).
void set_fwd_buffers(jfa_fwd_args& a, const ffi::AnyBuffer& q, const ffi::AnyBuffer& k,
                     const ffi::AnyBuffer& v, const ffi::AnyBuffer& alibi_slopes, bool has_alibi,
                     ffi::AnyBuffer& out, ffi::AnyBuffer& lse) {
  a.q = q.untyped_data();
  a.k = k.untyped_data();
  a.v = v.untyped_data();
  a.out = out.untyped_data();
  a.softmax_lse = static_cast<float*>(lse.untyped_data());
  a.alibi_slopes = alibi(alibi_slopes, has_alibi);
  a.alibi_slopes_batch_stride = a.shape.num_heads;
}

// The same for a backward call.
void set_bwd_buffers(jfa_bwd_args& a, const ffi::AnyBuffer& dout, const ffi::AnyBuffer& q,
                     const ffi::AnyBuffer& k, const ffi::AnyBuffer& v, const ffi::AnyBuffer& out,
                     const ffi::AnyBuffer& lse, const ffi::AnyBuffer& alibi_slopes, bool has_alibi,
                     ffi::AnyBuffer& dq, ffi::AnyBuffer& dk, ffi::AnyBuffer& dv,
                     ffi::AnyBuffer& dq_accum, ffi::AnyBuffer& softmax_d) {
  a.dout = dout.untyped_data();
  a.q = q.untyped_data();
  a.k = k.untyped_data();
  a.v = v.untyped_data();
  a.out = out.untyped_data();
  a.softmax_lse = static_cast<const float*>(lse.untyped_data());
  a.dq = dq.untyped_data();
  a.dk = dk.untyped_data();
  a.dv = dv.untyped_data();
  a.dq_accum = static_cast<float*>(dq_accum.untyped_data());
  a.softmax_d = static_cast<float*>(softmax_d.untyped_data());
  a.dq_accum_elems = static_cast<int64_t>(dq_accum.element_count());
  a.alibi_slopes = alibi(alibi_slopes, has_alibi);
  a.alibi_slopes_batch_stride = a.shape.num_heads;
}

// Scratch for the Hopper kernels' cut last round, freed when `scratch` goes,
// after the launch: XLA's later work on the stream runs after the kernel.
// Without it the call only runs slower, which stderr is told once: a silent
// fallback once hid that every allocation failed. 16-byte aligned, as the C
// ABI asks: XLA refuses any alignment over 16 (its memory is 256-byte aligned
// anyway).
template <class Args>
void take_workspace(ffi::ScratchAllocator& scratch, int64_t bytes, Args& args) {
  if (bytes <= 0) return;
  if (std::optional<void*> mem = scratch.Allocate(static_cast<size_t>(bytes), 16)) {
    args.workspace = *mem;
    args.workspace_bytes = bytes;
    return;
  }
  static std::once_flag warned;
  std::call_once(warned, [bytes] {
    std::fprintf(stderr,
                 "jax_flash_attn: XLA gave no scratch (%lld bytes) for a Hopper kernel's cut last "
                 "round; such calls run uncut, slower (printed once)\n",
                 static_cast<long long>(bytes));
  });
}

ffi::Error FlashFwd(cudaStream_t stream, ffi::ScratchAllocator scratch, ffi::AnyBuffer q,
                    ffi::AnyBuffer k, ffi::AnyBuffer v,
                    ffi::AnyBuffer alibi_slopes, ffi::Result<ffi::AnyBuffer> out,
                    ffi::Result<ffi::AnyBuffer> lse, float softmax_scale, bool is_causal,
                    int32_t window_left, int32_t window_right, float softcap, bool has_alibi) {
  char err[kErrLen] = {0};
  jfa_fwd_args args{};
  args.shape = options(softmax_scale, is_causal, window_left, window_right, softcap, false);
  const jfa_buffer buffers[] = {describe(q),            describe(k),    describe(v),
                                describe(alibi_slopes), describe(*out), describe(*lse)};
  int status = jfa_fwd_shape_from_buffers(buffers, 6, &args.shape, err, kErrLen);
  if (status != JFA_OK) return to_ffi_error(status, err);
  if (ffi::Error e = check_slopes(alibi_slopes, has_alibi); e.failure()) return e;
  set_fwd_buffers(args, q, k, v, alibi_slopes, has_alibi, *out, *lse);
  take_workspace(scratch, jfa_fwd_workspace_bytes(&args.shape, has_alibi), args);
  status = jfa_mha_fwd(&args, stream, err, kErrLen);
  return to_ffi_error(status, err);
}

ffi::Error FlashBwd(cudaStream_t stream, ffi::ScratchAllocator scratch, ffi::AnyBuffer dout,
                    ffi::AnyBuffer q, ffi::AnyBuffer k, ffi::AnyBuffer v, ffi::AnyBuffer out,
                    ffi::AnyBuffer lse, ffi::AnyBuffer alibi_slopes, ffi::Result<ffi::AnyBuffer> dq,
                    ffi::Result<ffi::AnyBuffer> dk, ffi::Result<ffi::AnyBuffer> dv,
                    ffi::Result<ffi::AnyBuffer> dq_accum, ffi::Result<ffi::AnyBuffer> softmax_d,
                    float softmax_scale, bool is_causal, int32_t window_left,
                    int32_t window_right, float softcap, bool has_alibi, bool deterministic) {
  char err[kErrLen] = {0};
  jfa_bwd_args args{};
  args.shape =
      options(softmax_scale, is_causal, window_left, window_right, softcap, deterministic);
  const jfa_buffer buffers[] = {
      describe(dout),         describe(q),   describe(k),   describe(v),
      describe(out),          describe(lse), describe(alibi_slopes),
      describe(*dq),          describe(*dk), describe(*dv), describe(*dq_accum),
      describe(*softmax_d)};
  int status = jfa_bwd_shape_from_buffers(buffers, 12, &args.shape, err, kErrLen);
  if (status != JFA_OK) return to_ffi_error(status, err);
  if (ffi::Error e = check_slopes(alibi_slopes, has_alibi); e.failure()) return e;
  set_bwd_buffers(args, dout, q, k, v, out, lse, alibi_slopes, has_alibi, *dq, *dk, *dv, *dq_accum,
                  *softmax_d);
  take_workspace(scratch, jfa_bwd_workspace_bytes(&args.shape, has_alibi), args);
  status = jfa_mha_bwd(&args, stream, err, kErrLen);
  return to_ffi_error(status, err);
}

ffi::Error FlashVarlenFwd(cudaStream_t stream, ffi::AnyBuffer q, ffi::AnyBuffer k,
                          ffi::AnyBuffer v, ffi::AnyBuffer cu_seqlens_q,
                          ffi::AnyBuffer cu_seqlens_k, ffi::AnyBuffer alibi_slopes,
                          ffi::Result<ffi::AnyBuffer> out, ffi::Result<ffi::AnyBuffer> lse,
                          float softmax_scale, bool is_causal, int32_t window_left,
                          int32_t window_right, float softcap, bool has_alibi,
                          int32_t max_seqlen_q, int32_t max_seqlen_k) {
  char err[kErrLen] = {0};
  jfa_varlen_fwd_args args{};
  jfa_fwd_args& base = args.base;
  base.shape = options(softmax_scale, is_causal, window_left, window_right, softcap, false);
  base.shape.seqlen_q = max_seqlen_q;
  base.shape.seqlen_k = max_seqlen_k;
  const jfa_buffer buffers[] = {describe(q),            describe(k),
                                describe(v),            describe(cu_seqlens_q),
                                describe(cu_seqlens_k), describe(alibi_slopes),
                                describe(*out),         describe(*lse)};
  int status = jfa_varlen_fwd_shape_from_buffers(buffers, 8, &base.shape, &args.total_q,
                                                 &args.total_k, err, kErrLen);
  if (status != JFA_OK) return to_ffi_error(status, err);
  if (ffi::Error e = check_slopes(alibi_slopes, has_alibi); e.failure()) return e;
  set_fwd_buffers(base, q, k, v, alibi_slopes, has_alibi, *out, *lse);
  args.cu_seqlens_q = static_cast<const int32_t*>(cu_seqlens_q.untyped_data());
  args.cu_seqlens_k = static_cast<const int32_t*>(cu_seqlens_k.untyped_data());
  status = jfa_mha_varlen_fwd(&args, stream, err, kErrLen);
  return to_ffi_error(status, err);
}

ffi::Error FlashVarlenBwd(cudaStream_t stream, ffi::AnyBuffer dout, ffi::AnyBuffer q,
                          ffi::AnyBuffer k, ffi::AnyBuffer v, ffi::AnyBuffer out,
                          ffi::AnyBuffer lse, ffi::AnyBuffer cu_seqlens_q,
                          ffi::AnyBuffer cu_seqlens_k, ffi::AnyBuffer alibi_slopes,
                          ffi::Result<ffi::AnyBuffer> dq, ffi::Result<ffi::AnyBuffer> dk,
                          ffi::Result<ffi::AnyBuffer> dv, ffi::Result<ffi::AnyBuffer> dq_accum,
                          ffi::Result<ffi::AnyBuffer> softmax_d, float softmax_scale,
                          bool is_causal, int32_t window_left, int32_t window_right,
                          float softcap, bool has_alibi, int32_t max_seqlen_q,
                          int32_t max_seqlen_k, bool deterministic) {
  char err[kErrLen] = {0};
  jfa_varlen_bwd_args args{};
  jfa_bwd_args& base = args.base;
  base.shape =
      options(softmax_scale, is_causal, window_left, window_right, softcap, deterministic);
  base.shape.seqlen_q = max_seqlen_q;
  base.shape.seqlen_k = max_seqlen_k;
  const jfa_buffer buffers[] = {
      describe(dout),         describe(q),            describe(k),
      describe(v),            describe(out),          describe(lse),
      describe(cu_seqlens_q), describe(cu_seqlens_k), describe(alibi_slopes),
      describe(*dq),          describe(*dk),          describe(*dv),
      describe(*dq_accum),    describe(*softmax_d)};
  int status = jfa_varlen_bwd_shape_from_buffers(buffers, 14, &base.shape, &args.total_q,
                                                 &args.total_k, err, kErrLen);
  if (status != JFA_OK) return to_ffi_error(status, err);
  if (ffi::Error e = check_slopes(alibi_slopes, has_alibi); e.failure()) return e;
  set_bwd_buffers(base, dout, q, k, v, out, lse, alibi_slopes, has_alibi, *dq, *dk, *dv, *dq_accum,
                  *softmax_d);
  args.cu_seqlens_q = static_cast<const int32_t*>(cu_seqlens_q.untyped_data());
  args.cu_seqlens_k = static_cast<const int32_t*>(cu_seqlens_k.untyped_data());
  status = jfa_mha_varlen_bwd(&args, stream, err, kErrLen);
  return to_ffi_error(status, err);
}

ffi::Error FlashKvcacheFwd(cudaStream_t stream, ffi::AnyBuffer q, ffi::AnyBuffer k_cache,
                           ffi::AnyBuffer v_cache, ffi::AnyBuffer seqlens_k,
                           ffi::AnyBuffer block_table, ffi::AnyBuffer alibi_slopes,
                           ffi::Result<ffi::AnyBuffer> out, ffi::Result<ffi::AnyBuffer> lse,
                           ffi::Result<ffi::AnyBuffer> workspace, float softmax_scale,
                           bool is_causal, int32_t window_left, int32_t window_right,
                           float softcap, bool has_alibi, bool has_block_table,
                           int32_t num_splits) {
  char err[kErrLen] = {0};
  jfa_kvcache_fwd_args args{};
  jfa_fwd_args& base = args.base;
  base.shape = options(softmax_scale, is_causal, window_left, window_right, softcap, false);
  const jfa_buffer buffers[] = {describe(q),           describe(k_cache),     describe(v_cache),
                                describe(seqlens_k),   describe(block_table), describe(alibi_slopes),
                                describe(*out),        describe(*lse),        describe(*workspace)};
  int status = jfa_kvcache_fwd_shape_from_buffers(buffers, 9, has_block_table, &base.shape,
                                                  &args.max_blocks_per_seq,
                                                  &args.page_block_size, err, kErrLen);
  if (status != JFA_OK) return to_ffi_error(status, err);
  if (ffi::Error e = check_slopes(alibi_slopes, has_alibi); e.failure()) return e;
  set_fwd_buffers(base, q, k_cache, v_cache, alibi_slopes, has_alibi, *out, *lse);
  args.seqlens_k = static_cast<const int32_t*>(seqlens_k.untyped_data());
  args.block_table =
      has_block_table ? static_cast<const int32_t*>(block_table.untyped_data()) : nullptr;
  args.num_splits = num_splits;
  args.workspace = static_cast<float*>(workspace->untyped_data());
  args.workspace_elems = static_cast<int64_t>(workspace->element_count());
  status = jfa_mha_kvcache_fwd(&args, stream, err, kErrLen);
  return to_ffi_error(status, err);
}

template <typename Binding>
auto with_options(Binding binding) {
  return std::move(binding)
      .template Attr<float>("softmax_scale")
      .template Attr<bool>("is_causal")
      .template Attr<int32_t>("window_left")
      .template Attr<int32_t>("window_right")
      .template Attr<float>("softcap")
      .template Attr<bool>("has_alibi");
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(
    JfaFlashFwd, FlashFwd,
    with_options(ffi::Ffi::Bind()
                     .Ctx<ffi::PlatformStream<cudaStream_t>>()
                     .Ctx<ffi::ScratchAllocator>()
                     .Arg<ffi::AnyBuffer>()    // q
                     .Arg<ffi::AnyBuffer>()    // k
                     .Arg<ffi::AnyBuffer>()    // v
                     .Arg<ffi::AnyBuffer>()    // alibi_slopes
                     .Ret<ffi::AnyBuffer>()    // out
                     .Ret<ffi::AnyBuffer>()));  // softmax_lse

XLA_FFI_DEFINE_HANDLER_SYMBOL(
    JfaFlashBwd, FlashBwd,
    with_options(ffi::Ffi::Bind()
                     .Ctx<ffi::PlatformStream<cudaStream_t>>()
                     .Ctx<ffi::ScratchAllocator>()
                     .Arg<ffi::AnyBuffer>()    // dout
                     .Arg<ffi::AnyBuffer>()    // q
                     .Arg<ffi::AnyBuffer>()    // k
                     .Arg<ffi::AnyBuffer>()    // v
                     .Arg<ffi::AnyBuffer>()    // out
                     .Arg<ffi::AnyBuffer>()    // softmax_lse
                     .Arg<ffi::AnyBuffer>()    // alibi_slopes
                     .Ret<ffi::AnyBuffer>()    // dq
                     .Ret<ffi::AnyBuffer>()    // dk (num_heads heads)
                     .Ret<ffi::AnyBuffer>()    // dv (num_heads heads)
                     .Ret<ffi::AnyBuffer>()    // dq_accum scratch
                     .Ret<ffi::AnyBuffer>())   // softmax_d scratch
        .Attr<bool>("deterministic"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(
    JfaFlashVarlenFwd, FlashVarlenFwd,
    with_options(ffi::Ffi::Bind()
                     .Ctx<ffi::PlatformStream<cudaStream_t>>()
                     .Arg<ffi::AnyBuffer>()    // q [total_q, heads, head_dim]
                     .Arg<ffi::AnyBuffer>()    // k
                     .Arg<ffi::AnyBuffer>()    // v
                     .Arg<ffi::AnyBuffer>()    // cu_seqlens_q
                     .Arg<ffi::AnyBuffer>()    // cu_seqlens_k
                     .Arg<ffi::AnyBuffer>()    // alibi_slopes
                     .Ret<ffi::AnyBuffer>()    // out
                     .Ret<ffi::AnyBuffer>())   // softmax_lse [heads, total_q]
        .Attr<int32_t>("max_seqlen_q")
        .Attr<int32_t>("max_seqlen_k"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(
    JfaFlashVarlenBwd, FlashVarlenBwd,
    with_options(ffi::Ffi::Bind()
                     .Ctx<ffi::PlatformStream<cudaStream_t>>()
                     .Arg<ffi::AnyBuffer>()    // dout
                     .Arg<ffi::AnyBuffer>()    // q
                     .Arg<ffi::AnyBuffer>()    // k
                     .Arg<ffi::AnyBuffer>()    // v
                     .Arg<ffi::AnyBuffer>()    // out
                     .Arg<ffi::AnyBuffer>()    // softmax_lse
                     .Arg<ffi::AnyBuffer>()    // cu_seqlens_q
                     .Arg<ffi::AnyBuffer>()    // cu_seqlens_k
                     .Arg<ffi::AnyBuffer>()    // alibi_slopes
                     .Ret<ffi::AnyBuffer>()    // dq
                     .Ret<ffi::AnyBuffer>()    // dk (num_heads heads)
                     .Ret<ffi::AnyBuffer>()    // dv (num_heads heads)
                     .Ret<ffi::AnyBuffer>()    // dq_accum scratch
                     .Ret<ffi::AnyBuffer>())   // softmax_d scratch
        .Attr<int32_t>("max_seqlen_q")
        .Attr<int32_t>("max_seqlen_k")
        .Attr<bool>("deterministic"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(
    JfaFlashKvcacheFwd, FlashKvcacheFwd,
    with_options(ffi::Ffi::Bind()
                     .Ctx<ffi::PlatformStream<cudaStream_t>>()
                     .Arg<ffi::AnyBuffer>()    // q
                     .Arg<ffi::AnyBuffer>()    // k_cache (contiguous or paged)
                     .Arg<ffi::AnyBuffer>()    // v_cache
                     .Arg<ffi::AnyBuffer>()    // seqlens_k
                     .Arg<ffi::AnyBuffer>()    // block_table
                     .Arg<ffi::AnyBuffer>()    // alibi_slopes
                     .Ret<ffi::AnyBuffer>()    // out
                     .Ret<ffi::AnyBuffer>()    // softmax_lse
                     .Ret<ffi::AnyBuffer>())   // workspace (split partial results)
        .Attr<bool>("has_block_table")
        .Attr<int32_t>("num_splits"));

namespace {

jfa_dtype parse_dtype(const std::string& name) {
  if (name == "float16") return JFA_FLOAT16;
  if (name == "bfloat16") return JFA_BFLOAT16;
  throw py::value_error("dtype must be 'float16' or 'bfloat16', got '" + name + "'");
}

// Integers the C ABI takes as int, saturated: past int32 a window is as
// unbounded, and a compute capability as far from 9.0, as at the limit.
int saturate(int64_t x) {
  return static_cast<int>(std::clamp<int64_t>(x, INT32_MIN, INT32_MAX));
}

int query_num_sms(int64_t device) {
  if (device < -1 || device > INT32_MAX) {
    throw py::value_error("device must be -1 (all) or a CUDA device ordinal, got " +
                          std::to_string(device));
  }
  char err[kErrLen] = {0};
  int sms = 0;
  if (jfa_num_sms(static_cast<int>(device), &sms, err, kErrLen) != JFA_OK) {
    throw std::runtime_error(err);
  }
  return sms;
}

// The (dq_accum, softmax_d) element counts of a backward; `count` fills the
// shape's sequence fields and calls the C ABI's dense or varlen function.
template <typename Count>
py::tuple workspace_elems(int64_t batch, int64_t num_heads, int64_t head_dim, bool deterministic,
                          int64_t num_sms, Count&& count) {
  if (num_sms < 0 || num_sms > INT32_MAX) {
    throw py::value_error("num_sms must be 0 (ask the GPU) or a positive SM count, got " +
                          std::to_string(num_sms));
  }
  jfa_attention_shape s{};
  s.batch = batch;
  s.num_heads = num_heads;
  s.head_dim = head_dim;
  s.deterministic = deterministic;
  if (deterministic && num_sms == 0) num_sms = query_num_sms(-1);
  int64_t dq_accum = 0, softmax_d = 0;
  count(s, static_cast<int>(num_sms), &dq_accum, &softmax_d);
  return py::make_tuple(dq_accum, softmax_d);
}

}  // namespace

PYBIND11_MODULE(_jax_flash_attn_cpp, m) {
  m.doc() = "jax-flash-attn C++ binding: XLA FFI handlers for FlashAttention kernels.";
  m.def("registrations", [] {
    py::dict targets;
    targets["fwd"] = py::capsule(reinterpret_cast<void*>(&JfaFlashFwd));
    targets["bwd"] = py::capsule(reinterpret_cast<void*>(&JfaFlashBwd));
    targets["varlen_fwd"] = py::capsule(reinterpret_cast<void*>(&JfaFlashVarlenFwd));
    targets["varlen_bwd"] = py::capsule(reinterpret_cast<void*>(&JfaFlashVarlenBwd));
    targets["kvcache_fwd"] = py::capsule(reinterpret_cast<void*>(&JfaFlashKvcacheFwd));
    return targets;
  });
  m.def("has_kernel", [](const std::string& dtype, int64_t head_dim) {
    return jfa_has_kernel(parse_dtype(dtype), head_dim) != 0;
  });
  m.def("has_kvcache_kernel", [](const std::string& dtype, int64_t head_dim) {
    return jfa_has_kvcache_kernel(parse_dtype(dtype), head_dim) != 0;
  });
  m.def(
      "has_sm90_kernel",
      [](const std::string& dtype, int64_t head_dim, bool backward) {
        const jfa_dtype t = parse_dtype(dtype);
        return (backward ? jfa_has_sm90_bwd_kernel(t, head_dim) : jfa_has_sm90_kernel(t, head_dim)) != 0;
      },
      py::arg("dtype"), py::arg("head_dim"), py::arg("backward").noconvert() = false, py::pos_only());
  m.def(
      "uses_sm90",
      [](const std::string& dtype, int64_t batch, int64_t seqlen_q, int64_t seqlen_k,
         int64_t num_heads, int64_t num_heads_k, int64_t head_dim, int64_t cc_major,
         int64_t cc_minor, bool is_causal, int64_t window_left, int64_t window_right,
         double softcap, bool has_alibi, bool is_varlen, bool backward, bool deterministic) {
        jfa_attention_shape s{};
        s.dtype = parse_dtype(dtype);
        s.batch = batch;
        s.seqlen_q = seqlen_q;
        s.seqlen_k = seqlen_k;
        s.num_heads = num_heads;
        s.num_heads_k = num_heads_k;
        s.head_dim = head_dim;
        s.softmax_scale = 1.f;  // the rule does not depend on it
        s.is_causal = is_causal;
        s.window_left = saturate(window_left);
        s.window_right = saturate(window_right);
        // As Rust's `as f32`: out of float's range is an infinity (refused).
        s.softcap = std::fabs(softcap) <= FLT_MAX ? static_cast<float>(softcap)
                                                  : std::copysign(INFINITY, softcap);
        s.deterministic = deterministic;
        return (backward ? jfa_bwd_uses_sm90 : jfa_fwd_uses_sm90)(
                   &s, has_alibi, is_varlen, saturate(cc_major), saturate(cc_minor)) != 0;
      },
      py::arg("dtype"), py::arg("batch"), py::arg("seqlen_q"), py::arg("seqlen_k"),
      py::arg("num_heads"), py::arg("num_heads_k"), py::arg("head_dim"), py::arg("cc_major"),
      py::arg("cc_minor"), py::arg("is_causal").noconvert() = false, py::arg("window_left") = -1,
      py::arg("window_right") = -1, py::arg("softcap") = 0.0,
      py::arg("has_alibi").noconvert() = false, py::arg("is_varlen").noconvert() = false,
      py::arg("backward").noconvert() = false, py::arg("deterministic").noconvert() = false,
      py::pos_only());
  m.def("build_config", [] { return std::string(jfa_build_config()); });
  m.def("abi_version", [] { return jfa_abi_version(); });
  m.def("launch_counts", [] {
    jfa_launch_counts c{};
    jfa_get_launch_counts(&c);
    py::dict counts;
    counts["fwd_cut"] = c.fwd_cut;
    counts["bwd_cut"] = c.bwd_cut;
    counts["uncut_for_scratch"] = c.uncut_for_scratch;
    return counts;
  });
  m.def(
      "bwd_workspace_elems",
      [](int64_t batch, int64_t seqlen_q, int64_t num_heads, int64_t head_dim, bool deterministic,
         int64_t num_sms) {
        return workspace_elems(batch, num_heads, head_dim, deterministic, num_sms,
                               [&](jfa_attention_shape& s, int sms, int64_t* dq, int64_t* d) {
                                 s.seqlen_q = seqlen_q;
                                 jfa_bwd_workspace_elems(&s, sms, dq, d);
                               });
      },
      py::arg("batch"), py::arg("seqlen_q"), py::arg("num_heads"), py::arg("head_dim"),
      py::arg("deterministic").noconvert() = false, py::arg("num_sms") = 0, py::pos_only());
  m.def(
      "varlen_bwd_workspace_elems",
      [](int64_t batch, int64_t total_q, int64_t num_heads, int64_t head_dim, bool deterministic,
         int64_t num_sms) {
        return workspace_elems(batch, num_heads, head_dim, deterministic, num_sms,
                               [&](jfa_attention_shape& s, int sms, int64_t* dq, int64_t* d) {
                                 jfa_varlen_bwd_workspace_elems(&s, total_q, sms, dq, d);
                               });
      },
      py::arg("batch"), py::arg("total_q"), py::arg("num_heads"), py::arg("head_dim"),
      py::arg("deterministic").noconvert() = false, py::arg("num_sms") = 0, py::pos_only());
  m.def(
      "kvcache_splits",
      [](int64_t batch, int64_t seqlen_q, int64_t seqlen_k, int64_t num_heads, int64_t head_dim,
         int64_t num_splits, int64_t num_sms) {
        if (num_splits < 0 || num_splits > 128) {
          throw py::value_error("num_splits must be 0 (choose) or in [1, 128], got " +
                                std::to_string(num_splits));
        }
        if (num_sms <= 0 || num_sms > INT32_MAX) {
          throw py::value_error("num_sms must be a positive SM count, got " +
                                std::to_string(num_sms));
        }
        jfa_attention_shape s{};
        s.batch = batch;
        s.seqlen_q = seqlen_q;
        s.seqlen_k = seqlen_k;
        s.num_heads = num_heads;
        s.head_dim = head_dim;
        const int32_t splits = jfa_kvcache_num_splits(&s, static_cast<int>(num_splits),
                                                      static_cast<int>(num_sms));
        return py::make_tuple(splits, jfa_kvcache_workspace_elems(&s, splits));
      },
      py::arg("batch"), py::arg("seqlen_q"), py::arg("seqlen_k"), py::arg("num_heads"),
      py::arg("head_dim"), py::arg("num_splits"), py::arg("num_sms"), py::pos_only());
  m.def("num_sms", &query_num_sms, py::arg("device") = -1, py::pos_only());
}
