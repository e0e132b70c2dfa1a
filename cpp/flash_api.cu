// The C ABI of cpp/include/jax_flash_attn/flash_attn.h over FlashAttention-2's
// kernels and our Hopper kernels (sm90/): argument checks, the params structs,
// and dispatch by GPU, dtype, head dim and causality. Everything both bindings
// share lives here.

#include "jax_flash_attn/flash_attn.h"

#include <cuda_runtime.h>
#include <cutlass/numeric_types.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <stdexcept>
#include <string>

#include <c10/cuda/CUDAException.h>  // jfa::CudaError, thrown by the launch templates

#include "flash.h"
#include "flash_sm90.h"  // jfa_sm90::*: weak, null unless linked

namespace FLASH_NAMESPACE {

// Every kernel is referenced weakly: a build links only the kernel files it
// selected (--//cpp:head_dims, --//cpp:dtypes), and a kernel that was not
// linked has a null address, which jfa_has_kernel() reports.
#define JFA_DECLARE_KERNELS(T, D)                                                             \
  template <>                                                                                 \
  __attribute__((weak)) void run_mha_fwd_<T, D, false>(Flash_fwd_params&, cudaStream_t);      \
  template <>                                                                                 \
  __attribute__((weak)) void run_mha_fwd_<T, D, true>(Flash_fwd_params&, cudaStream_t);       \
  template <>                                                                                 \
  __attribute__((weak)) void run_mha_bwd_<T, D, false>(Flash_bwd_params&, cudaStream_t);      \
  template <>                                                                                 \
  __attribute__((weak)) void run_mha_bwd_<T, D, true>(Flash_bwd_params&, cudaStream_t);

// The split-KV kernel files (--//cpp:splitkv) instantiate these.
#define JFA_DECLARE_SPLITKV_KERNELS(T, D)                                                     \
  template <>                                                                                 \
  __attribute__((weak)) void run_mha_fwd_splitkv_dispatch<T, D, false>(Flash_fwd_params&,     \
                                                                       cudaStream_t);         \
  template <>                                                                                 \
  __attribute__((weak)) void run_mha_fwd_splitkv_dispatch<T, D, true>(Flash_fwd_params&,      \
                                                                      cudaStream_t);

#define JFA_FOR_EACH_HEAD_DIM(X, T) X(T, 32) X(T, 64) X(T, 96) X(T, 128) X(T, 192) X(T, 256)
JFA_FOR_EACH_HEAD_DIM(JFA_DECLARE_KERNELS, cutlass::half_t)
JFA_FOR_EACH_HEAD_DIM(JFA_DECLARE_KERNELS, cutlass::bfloat16_t)
JFA_FOR_EACH_HEAD_DIM(JFA_DECLARE_SPLITKV_KERNELS, cutlass::half_t)
JFA_FOR_EACH_HEAD_DIM(JFA_DECLARE_SPLITKV_KERNELS, cutlass::bfloat16_t)

}  // namespace FLASH_NAMESPACE

namespace {

using FLASH_NAMESPACE::Flash_bwd_params;
using FLASH_NAMESPACE::Flash_fwd_params;
using FwdFn = void (*)(Flash_fwd_params&, cudaStream_t);
using BwdFn = void (*)(Flash_bwd_params&, cudaStream_t);

struct Kernels {
  FwdFn fwd[2];  // [is_causal]
  BwdFn bwd[2];
  FwdFn splitkv[2];
};

class Error : public std::runtime_error {
 public:
  Error(jfa_status status, const std::string& message)
      : std::runtime_error(message), status(status) {}
  jfa_status status;
};

// FlashAttention-2 compiles one kernel per head-dim bucket; smaller head dims
// run in the next bucket up with masked columns.
int64_t head_dim_bucket(int64_t d) {
  for (int64_t bucket : {32, 64, 96, 128, 192, 256}) {
    if (d <= bucket) return bucket;
  }
  return 0;
}

int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

template <typename T, int D>
Kernels kernels_for() {
  using namespace FLASH_NAMESPACE;
  return {{&run_mha_fwd_<T, D, false>, &run_mha_fwd_<T, D, true>},
          {&run_mha_bwd_<T, D, false>, &run_mha_bwd_<T, D, true>},
          {&run_mha_fwd_splitkv_dispatch<T, D, false>, &run_mha_fwd_splitkv_dispatch<T, D, true>}};
}

template <typename T>
Kernels kernels_for_dim(int64_t bucket) {
  switch (bucket) {
    case 32: return kernels_for<T, 32>();
    case 64: return kernels_for<T, 64>();
    case 96: return kernels_for<T, 96>();
    case 128: return kernels_for<T, 128>();
    case 192: return kernels_for<T, 192>();
    case 256: return kernels_for<T, 256>();
  }
  return {};
}

Kernels lookup(jfa_dtype dtype, int64_t head_dim) {
  const int64_t bucket = head_dim_bucket(head_dim);
  return dtype == JFA_BFLOAT16 ? kernels_for_dim<cutlass::bfloat16_t>(bucket)
                               : kernels_for_dim<cutlass::half_t>(bucket);
}

const char* dtype_name(jfa_dtype dtype) { return dtype == JFA_BFLOAT16 ? "bfloat16" : "float16"; }

void require(bool ok, const std::string& message) {
  if (!ok) throw Error(JFA_INVALID_ARGUMENT, message);
}

void check_shape(const jfa_attention_shape& s) {
  require(s.dtype == JFA_FLOAT16 || s.dtype == JFA_BFLOAT16,
          "dtype must be float16 or bfloat16, got code " + std::to_string(s.dtype));
  require(s.batch > 0, "batch must be positive, got " + std::to_string(s.batch));
  require(s.seqlen_q > 0, "seqlen_q must be positive, got " + std::to_string(s.seqlen_q));
  require(s.seqlen_k > 0, "seqlen_k must be positive, got " + std::to_string(s.seqlen_k));
  require(s.seqlen_q < (int64_t{1} << 31) && s.seqlen_k < (int64_t{1} << 31),
          "sequence lengths must be below 2**31");
  require(s.num_heads > 0 && s.num_heads_k > 0, "num_heads and num_heads_k must be positive");
  require(s.num_heads % s.num_heads_k == 0,
          "num_heads (" + std::to_string(s.num_heads) + ") must be a multiple of num_heads_k (" +
              std::to_string(s.num_heads_k) + ")");
  require(s.head_dim > 0 && s.head_dim <= 256 && s.head_dim % 8 == 0,
          "head_dim must be a multiple of 8 in [8, 256], got " + std::to_string(s.head_dim));
  require(s.window_left >= -1 && s.window_right >= -1,
          "window sizes must be -1 (unbounded) or non-negative, got (" +
              std::to_string(s.window_left) + ", " + std::to_string(s.window_right) + ")");
  require(std::isfinite(s.softmax_scale), "softmax_scale must be finite");
  require(std::isfinite(s.softcap) && s.softcap >= 0.f, "softcap must be finite and >= 0");
}

// splitkv: the split-KV forward kernels (KV-cache calls) rather than the others.
Kernels require_kernels(const jfa_attention_shape& s, bool splitkv = false) {
  Kernels k = lookup(s.dtype, s.head_dim);
  if ((splitkv ? k.splitkv[0] : k.fwd[0]) == nullptr) {
    throw Error(JFA_UNSUPPORTED,
                std::string("this build has no ") + (splitkv ? "split-KV (KV-cache) " : "") +
                    "kernel for " + dtype_name(s.dtype) + " with head_dim " +
                    std::to_string(s.head_dim) + " (build config: " + jfa_build_config() + ")");
  }
  return k;
}

// Elements of one copy of the backward's float32 dq accumulator:
// [batch, round128(seqlen_q), num_heads, round32/64(head_dim)].
int64_t dq_accum_split_elems(const jfa_attention_shape& s) {
  const int64_t head_dim_rounded = round_up(s.head_dim, s.head_dim <= 128 ? 32 : 64);
  return s.batch * round_up(s.seqlen_q, 128) * s.num_heads * head_dim_rounded;
}

// What a varlen call adds to a dense one (jfa_varlen_*_args).
struct Varlen {
  const int32_t* cu_seqlens_q;
  const int32_t* cu_seqlens_k;
  int64_t total_q;
  int64_t total_k;
};

// The varlen backward's dq accumulator: every sequence's rows followed by one
// 128-row tile of slack (flash_bwd_kernel.h offsets sequence b by 128 * b rows).
int64_t varlen_dq_accum_split_elems(const jfa_attention_shape& s, int64_t total_q) {
  const int64_t head_dim_rounded = round_up(s.head_dim, s.head_dim <= 128 ? 32 : 64);
  return (total_q + 128 * s.batch) * s.num_heads * head_dim_rounded;
}

void check_varlen(const Varlen& v) {
  require(v.cu_seqlens_q && v.cu_seqlens_k, "null cu_seqlens pointer in varlen arguments");
  require(v.total_q > 0 && v.total_k > 0, "varlen calls need total_q and total_k > 0, got " +
                                              std::to_string(v.total_q) + " and " +
                                              std::to_string(v.total_k));
  // The kernels index tokens with 32-bit offsets (block_info.h).
  require(v.total_q < (int64_t{1} << 31) && v.total_k < (int64_t{1} << 31),
          "varlen token counts must be below 2**31");
}

// Switches dense params to the packed layout: sequence offsets come from
// cu_seqlens (batch strides unused), and the lse is [num_heads, total_q].
void set_varlen(Flash_fwd_params& p, const Varlen& v) {
  p.cu_seqlens_q = const_cast<int*>(v.cu_seqlens_q);
  p.cu_seqlens_k = const_cast<int*>(v.cu_seqlens_k);
  p.total_q = static_cast<int>(v.total_q);
  p.unpadded_lse = true;
  p.is_seqlens_k_cumulative = true;
}

// The number of dq copies FlashAttention-2's deterministic backward writes on
// a GPU with num_sms SMs: its kernel launches that many thread blocks per
// (batch, head) along the keys (flash_bwd_launch_template.h).
int64_t deterministic_splits(const jfa_attention_shape& s, int64_t num_sms) {
  const int64_t bh = std::max<int64_t>(1, s.batch * s.num_heads);
  return std::max<int64_t>(1, (num_sms + bh - 1) / bh);
}

void cuda_check(cudaError_t status, const char* what) {
  if (status != cudaSuccess) {
    cudaGetLastError();  // not sticky: leave no error for the caller's next launch check
    throw Error(JFA_CUDA_ERROR, std::string(what) + ": " + cudaGetErrorString(status));
  }
}

// The SM count of the current device, which is the one FlashAttention-2's
// backward launch queries (hardware_info.h) to size its grid.
int current_device_sms(int* device) {
  int sms = 0;
  cuda_check(cudaGetDevice(device), "cudaGetDevice");
  cuda_check(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, *device),
             "cudaDeviceGetAttribute(MultiProcessorCount)");
  return sms;
}

// A window as the kernels take it, relative to the bottom-right-aligned
// diagonal: query i sees key j when i + sk - sq - left <= j <= i + sk - sq +
// right, a negative side being unbounded. Causal is (-1, 0) (a left window
// kept); a side that reaches past every key is unbounded.
struct Window {
  int64_t left, right;
};

Window normalized_window(const jfa_attention_shape& s) {
  Window w{s.window_left, s.is_causal ? 0 : s.window_right};
  if (w.left >= s.seqlen_k) w.left = -1;
  if (w.right >= s.seqlen_k) w.right = -1;
  return w;
}

// Fills what the forward and backward params share. Layouts are dense
// [batch, seq, heads, dim], so strides follow from the shape.
void fill_fwd(Flash_fwd_params& p, const jfa_attention_shape& s, const void* q, const void* k,
              const void* v, const void* out, const float* lse, const float* alibi_slopes,
              int64_t alibi_slopes_batch_stride) {
  p = {};
  p.is_bf16 = s.dtype == JFA_BFLOAT16;
  p.q_ptr = const_cast<void*>(q);
  p.k_ptr = const_cast<void*>(k);
  p.v_ptr = const_cast<void*>(v);
  p.o_ptr = const_cast<void*>(out);
  p.softmax_lse_ptr = const_cast<float*>(lse);
  p.q_row_stride = p.o_row_stride = s.num_heads * s.head_dim;
  p.k_row_stride = p.v_row_stride = s.num_heads_k * s.head_dim;
  p.q_head_stride = p.k_head_stride = p.v_head_stride = p.o_head_stride = s.head_dim;
  p.q_batch_stride = p.o_batch_stride = s.seqlen_q * p.q_row_stride;
  p.k_batch_stride = p.v_batch_stride = s.seqlen_k * p.k_row_stride;

  p.b = static_cast<int>(s.batch);
  p.h = static_cast<int>(s.num_heads);
  p.h_k = static_cast<int>(s.num_heads_k);
  p.h_h_k_ratio = p.h / p.h_k;
  p.seqlen_q = static_cast<int>(s.seqlen_q);
  p.seqlen_k = static_cast<int>(s.seqlen_k);
  p.seqlen_q_rounded = static_cast<int>(round_up(s.seqlen_q, 128));
  p.seqlen_k_rounded = static_cast<int>(round_up(s.seqlen_k, 128));
  p.d = static_cast<int>(s.head_dim);
  p.d_rounded = static_cast<int>(round_up(s.head_dim, s.head_dim <= 128 ? 32 : 64));

  if (s.softcap > 0.f) {
    p.softcap = s.softmax_scale / s.softcap;
    p.scale_softmax = s.softcap;
  } else {
    p.softcap = 0.f;
    p.scale_softmax = s.softmax_scale;
  }
  p.scale_softmax_log2 = p.scale_softmax * static_cast<float>(M_LOG2E);

  // No dropout: the keep probability is 1.
  p.p_dropout = 1.f;
  p.p_dropout_in_uint8_t = 255;
  p.rp_dropout = 1.f;
  p.scale_softmax_rp_dropout = p.scale_softmax;

  // The kernels take the window (-1, 0) on their causal path.
  auto [left, right] = normalized_window(s);
  p.is_causal = left < 0 && right == 0;
  // A one-sided window: the open side must reach every key from every query.
  const int64_t unbounded = s.seqlen_k + s.seqlen_q;
  if (left < 0 && right >= 0) left = unbounded;
  if (left >= 0 && right < 0) right = unbounded;
  p.window_size_left = static_cast<int>(left);
  p.window_size_right = static_cast<int>(right);

  // ALiBi: the kernels add slope / scale_softmax times the distance to the
  // unscaled (or soft-capped) scores, i.e. slope times the distance to the
  // final logits; the causal kernels use slope * j, which differs from
  // -slope * |i + sk - sq - j| by a constant per row.
  if (alibi_slopes != nullptr) {
    require(alibi_slopes_batch_stride >= 0, "alibi_slopes_batch_stride must be >= 0, got " +
                                                std::to_string(alibi_slopes_batch_stride));
  }
  p.alibi_slopes_ptr = const_cast<float*>(alibi_slopes);
  p.alibi_slopes_batch_stride = alibi_slopes_batch_stride;

  p.is_seqlens_k_cumulative = true;
  p.num_splits = 0;
}

cudaStream_t as_stream(void* stream) { return static_cast<cudaStream_t>(stream); }

void launch_check(const char* what) {
  const cudaError_t status = cudaPeekAtLastError();
  if (status != cudaSuccess) {
    throw Error(JFA_CUDA_ERROR, std::string(what) + ": " + cudaGetErrorString(status));
  }
}

// --- Our Hopper kernels (sm90/flash_sm90.h) -------------------------------

// The Hopper kernels' view of a dense call of shape s.
jfa_sm90::Shape sm90_shape(const jfa_attention_shape& s) {
  jfa_sm90::Shape p{};
  p.batch = static_cast<int>(s.batch);
  p.seqlen_q = static_cast<int>(s.seqlen_q);
  p.seqlen_k = static_cast<int>(s.seqlen_k);
  p.heads = static_cast<int>(s.num_heads);
  p.heads_k = static_cast<int>(s.num_heads_k);
  p.head_dim = static_cast<int>(s.head_dim);
  p.bf16 = s.dtype == JFA_BFLOAT16;
  p.softmax_scale = s.softmax_scale;
  const Window w = normalized_window(s);
  p.window_left = static_cast<int>(w.left);
  p.window_right = static_cast<int>(w.right);
  return p;
}

// Linked (--//cpp:sm90_kernels on a build for sm_90) and covering s.
bool sm90_supports(const jfa_sm90::Shape& s) {
  return jfa_sm90::fwd_supported != nullptr && jfa_sm90::run_fwd != nullptr &&
         jfa_sm90::fwd_supported(s);
}

// The dispatch rule, written once: jfa_fwd_uses_sm90 publishes it and
// mha_fwd follows it. sm_90a code runs on compute capability 9.0 only (its
// wgmma and setmaxnreg are not carried to later GPUs); ALiBi, softcap and
// packed sequences are FlashAttention-2's alone.
bool uses_sm90(const jfa_attention_shape& s, bool has_alibi, bool is_varlen, int cc_major,
               int cc_minor) {
  if (is_varlen || has_alibi || s.softcap != 0.f) return false;
  if (cc_major != 9 || cc_minor != 0) return false;
  return sm90_supports(sm90_shape(s));
}

// The backward's rule: the forward's, for the head dims the Hopper backward
// covers, and not deterministic (it adds dQ with float32 reductions whose
// order varies).
bool uses_sm90_bwd(const jfa_attention_shape& s, bool has_alibi, bool is_varlen, int cc_major,
                   int cc_minor) {
  if (s.deterministic || !uses_sm90(s, has_alibi, is_varlen, cc_major, cc_minor)) return false;
  return jfa_sm90::bwd_supported != nullptr && jfa_sm90::run_bwd != nullptr &&
         jfa_sm90::bwd_supported(sm90_shape(s));
}

// What jfa_has_sm90_kernel asks about: an ordinary call of that dtype and
// head dim (one 128-row tile, no window).
jfa_attention_shape ordinary_call(jfa_dtype dtype, int64_t head_dim) {
  jfa_attention_shape s{};
  s.batch = s.num_heads = s.num_heads_k = 1;
  s.seqlen_q = s.seqlen_k = 128;
  s.head_dim = head_dim;
  s.dtype = dtype;
  s.softmax_scale = 1.f;
  s.window_left = s.window_right = -1;
  return s;
}

// JAX_FLASH_ATTN_SM90=0 keeps every call on FlashAttention-2. Read at each
// call, so that one process (a test) can run both paths on the same inputs.
bool sm90_enabled_by_env() {
  const char* value = std::getenv("JAX_FLASH_ATTN_SM90");
  return value == nullptr || std::strcmp(value, "0") != 0;
}

// The compute capability of the current device (XLA makes the call's device
// current), cached per device ordinal since it cannot change while the
// process runs; ordinals past the cache are asked each time.
void current_device_cc(int* major, int* minor) {
  int device = 0;
  cuda_check(cudaGetDevice(&device), "cudaGetDevice");
  static std::atomic<int> cache[64];  // (major << 8 | minor) + 1; 0: not asked yet
  const bool cached = device >= 0 && device < 64;
  int packed = cached ? cache[device].load(std::memory_order_relaxed) : 0;
  if (packed == 0) {
    cuda_check(cudaDeviceGetAttribute(major, cudaDevAttrComputeCapabilityMajor, device),
               "cudaDeviceGetAttribute(ComputeCapabilityMajor)");
    cuda_check(cudaDeviceGetAttribute(minor, cudaDevAttrComputeCapabilityMinor, device),
               "cudaDeviceGetAttribute(ComputeCapabilityMinor)");
    packed = (*major << 8 | *minor) + 1;
    if (cached) cache[device].store(packed, std::memory_order_relaxed);
  }
  *major = (packed - 1) >> 8;
  *minor = (packed - 1) & 0xff;
}

// Whether a call runs on the Hopper kernels by `rule` (uses_sm90 or
// uses_sm90_bwd), on the current GPU, unless the environment says otherwise.
template <class Rule>
bool takes_sm90_path(Rule rule, const jfa_attention_shape& s, bool has_alibi, bool is_varlen) {
  if (is_varlen || !sm90_enabled_by_env()) return false;
  int major = 0, minor = 0;
  current_device_cc(&major, &minor);
  return rule(s, has_alibi, is_varlen, major, minor);
}

// The kernels' pieces meet in float4s: scratch of a smaller alignment is
// left unused (the call runs uncut).
void* usable_workspace(void* workspace) {
  return reinterpret_cast<uintptr_t>(workspace) % 16 == 0 ? workspace : nullptr;
}

// jfa_get_launch_counts': relaxed atomics, as launches run on any host thread.
std::atomic<uint64_t> g_fwd_cut{0}, g_bwd_cut{0}, g_uncut_for_scratch{0};

// Launches a Hopper kernel (run_fwd or run_bwd) and counts how its last round ran.
template <class Params>
void launch_sm90(Params& p, cudaError_t (*run)(const Params&, cudaStream_t), cudaStream_t stream,
                 const char* what, std::atomic<uint64_t>& cut) {
  jfa_sm90::LastRound round = jfa_sm90::LastRound::uncut;
  p.last_round = &round;
  cuda_check(run(p, stream), what);
  launch_check(what);
  if (round == jfa_sm90::LastRound::cut) cut.fetch_add(1, std::memory_order_relaxed);
  if (round == jfa_sm90::LastRound::uncut_for_scratch)
    g_uncut_for_scratch.fetch_add(1, std::memory_order_relaxed);
}

void sm90_fwd(const jfa_fwd_args& a, cudaStream_t stream) {
  jfa_sm90::FwdParams p{};
  static_cast<jfa_sm90::Shape&>(p) = sm90_shape(a.shape);
  p.q = a.q;
  p.k = a.k;
  p.v = a.v;
  p.out = a.out;
  p.lse = a.softmax_lse;
  p.workspace = usable_workspace(a.workspace);
  p.workspace_bytes = a.workspace_bytes;  // run_fwd ignores it without workspace
  launch_sm90(p, jfa_sm90::run_fwd, stream, "Hopper (sm_90a) attention forward", g_fwd_cut);
}

void mha_fwd(const jfa_fwd_args& a, cudaStream_t stream, const Varlen* varlen = nullptr) {
  check_shape(a.shape);
  require(a.q && a.k && a.v && a.out && a.softmax_lse, "null tensor pointer in forward arguments");
  if (varlen) check_varlen(*varlen);
  // The FlashAttention-2 kernels are required even where the Hopper forward
  // runs: the backward needs them, and which calls a build refuses should not
  // depend on the GPU.
  Kernels kernels = require_kernels(a.shape);
  if (takes_sm90_path(uses_sm90, a.shape, a.alibi_slopes != nullptr, varlen != nullptr)) {
    sm90_fwd(a, stream);
    return;
  }
  Flash_fwd_params p;
  fill_fwd(p, a.shape, a.q, a.k, a.v, a.out, a.softmax_lse, a.alibi_slopes,
           a.alibi_slopes_batch_stride);
  if (varlen) set_varlen(p, *varlen);
  kernels.fwd[p.is_causal ? 1 : 0](p, stream);
  launch_check("flash attention forward launch");
}

// The scratch sizes are jfa_bwd_workspace_elems', which cover both backwards.
void sm90_bwd(const jfa_bwd_args& a, cudaStream_t stream) {
  jfa_sm90::BwdParams p{};
  static_cast<jfa_sm90::Shape&>(p) = sm90_shape(a.shape);
  p.q = a.q;
  p.k = a.k;
  p.v = a.v;
  p.out = a.out;
  p.dout = a.dout;
  p.lse = a.softmax_lse;
  p.dq = a.dq;
  p.dk = a.dk;
  p.dv = a.dv;
  p.dq_accum = a.dq_accum;
  p.softmax_d = a.softmax_d;
  p.workspace = usable_workspace(a.workspace);
  p.workspace_bytes = a.workspace_bytes;  // run_bwd ignores it without workspace
  const jfa_sm90::BwdScratch need = jfa_sm90::bwd_scratch_elems(
      a.shape.batch, a.shape.num_heads, a.shape.seqlen_q, a.shape.head_dim);
  require(a.dq_accum_elems >= need.dq_accum, "dq_accum has " + std::to_string(a.dq_accum_elems) +
                                                 " float32 elements, needs " +
                                                 std::to_string(need.dq_accum));
  launch_sm90(p, jfa_sm90::run_bwd, stream, "Hopper (sm_90a) attention backward", g_bwd_cut);
}

void mha_bwd(const jfa_bwd_args& a, cudaStream_t stream, const Varlen* varlen = nullptr) {
  const jfa_attention_shape& s = a.shape;
  check_shape(s);
  require(a.q && a.k && a.v && a.out && a.softmax_lse && a.dout && a.dq && a.dk && a.dv &&
              a.dq_accum && a.softmax_d,
          "null tensor pointer in backward arguments");
  if (varlen) check_varlen(*varlen);
  Kernels kernels = require_kernels(s);
  if (takes_sm90_path(uses_sm90_bwd, s, a.alibi_slopes != nullptr, varlen != nullptr)) {
    sm90_bwd(a, stream);
    return;
  }
  Flash_bwd_params p;
  fill_fwd(p, s, a.q, a.k, a.v, a.out, a.softmax_lse, a.alibi_slopes, a.alibi_slopes_batch_stride);
  if (varlen) set_varlen(p, *varlen);
  const int64_t row = s.num_heads * s.head_dim;  // dout, dq, and the expanded dk, dv
  p.do_ptr = const_cast<void*>(a.dout);
  p.dq_ptr = a.dq;
  p.dk_ptr = a.dk;
  p.dv_ptr = a.dv;
  p.do_row_stride = p.dq_row_stride = p.dk_row_stride = p.dv_row_stride = row;
  p.do_head_stride = p.dq_head_stride = p.dk_head_stride = p.dv_head_stride = s.head_dim;
  p.do_batch_stride = p.dq_batch_stride = s.seqlen_q * row;
  p.dk_batch_stride = p.dv_batch_stride = s.seqlen_k * row;
  p.dq_accum_ptr = a.dq_accum;
  p.dsoftmax_sum = a.softmax_d;
  const int64_t split =
      varlen ? varlen_dq_accum_split_elems(s, varlen->total_q) : dq_accum_split_elems(s);
  if (s.deterministic) {
    // Every thread block along the keys accumulates into its own copy of dq,
    // which the kernels do not clear in this mode; a final kernel sums them in
    // order. The grid, hence the number of copies, follows the current
    // device's SM count: the workspace must have been sized for it.
    int device = 0;
    const int sms = current_device_sms(&device);
    const int64_t splits = deterministic_splits(s, sms);
    if (a.dq_accum_elems < splits * split) {
      throw Error(JFA_INVALID_ARGUMENT,
                  "deterministic backward: dq_accum has " + std::to_string(a.dq_accum_elems) +
                      " float32 elements, but CUDA device " + std::to_string(device) + " (" +
                      std::to_string(sms) + " SMs) needs " + std::to_string(splits) +
                      " splits of " + std::to_string(split) + " = " +
                      std::to_string(splits * split) +
                      " (size it with jfa_bwd_workspace_elems() for this GPU's jfa_num_sms())");
    }
    cuda_check(cudaMemsetAsync(a.dq_accum, 0, static_cast<size_t>(splits * split) * sizeof(float),
                               stream),
               "clearing dq_accum");
    p.deterministic = true;
    p.dq_accum_split_stride = split;
  } else {
    require(a.dq_accum_elems >= split, "dq_accum has " + std::to_string(a.dq_accum_elems) +
                                           " float32 elements, needs " + std::to_string(split));
    p.deterministic = false;
    p.dq_accum_split_stride = 0;
  }
  kernels.bwd[p.is_causal ? 1 : 0](p, stream);
  launch_check("flash attention backward launch");
}

// The split-KV kernels' tile sizes (flash_fwd_launch_template.h): 64 query
// rows, and a key block that shrinks as the head dim grows.
constexpr int64_t kSplitBlockM = 64;
int64_t splitkv_block_n(int64_t head_dim) {
  return head_dim <= 64 ? 256 : (head_dim <= 128 ? 128 : 64);
}

// FlashAttention-2's choice of splits: none when batch * heads * row blocks
// already fill the GPU (two thread blocks per SM); else the fewest splits
// whose wave efficiency is within 85% of the best, splits that give the same
// key blocks per split as one fewer being skipped.
int32_t splits_heuristic(const jfa_attention_shape& s, int num_sms) {
  const int64_t work = s.batch * s.num_heads * ((s.seqlen_q + kSplitBlockM - 1) / kSplitBlockM);
  const int64_t slots = 2 * static_cast<int64_t>(std::max(num_sms, 1));
  if (work >= 0.8 * slots) return 1;
  const int64_t block_n = splitkv_block_n(s.head_dim);
  const int64_t n_blocks = (s.seqlen_k + block_n - 1) / block_n;
  const int64_t most = std::min<int64_t>({128, slots, n_blocks});
  auto blocks_per_split = [&](int64_t n) { return (n_blocks + n - 1) / n; };
  auto eligible = [&](int64_t n) { return n == 1 || blocks_per_split(n) != blocks_per_split(n - 1); };
  auto efficiency = [&](int64_t n) {
    const double waves = static_cast<double>(work * n) / slots;
    return waves / std::ceil(waves);
  };
  double best = 0;
  for (int64_t n = 1; n <= most; ++n) {
    if (eligible(n)) best = std::max(best, efficiency(n));
  }
  for (int64_t n = 1; n <= most; ++n) {
    if (eligible(n) && efficiency(n) >= 0.85 * best) return static_cast<int32_t>(n);
  }
  return 1;
}

// The split kernels' float32 partial results: an lse and an output row per
// split, [splits, batch, heads, seqlen_q] and [..., round32/64(head_dim)].
int64_t kvcache_workspace(const jfa_attention_shape& s, int64_t splits) {
  if (splits <= 1) return 1;
  const int64_t rows = splits * s.batch * s.num_heads * s.seqlen_q;
  return rows + rows * round_up(s.head_dim, s.head_dim <= 128 ? 32 : 64);
}

void mha_kvcache_fwd(const jfa_kvcache_fwd_args& a, cudaStream_t stream) {
  const jfa_fwd_args& f = a.base;
  const jfa_attention_shape& s = f.shape;
  check_shape(s);
  require(f.q && f.k && f.v && f.out && f.softmax_lse && a.seqlens_k && a.workspace,
          "null tensor pointer in KV-cache arguments");
  require(a.num_splits >= 1 && a.num_splits <= 128,
          "num_splits must be in [1, 128], got " + std::to_string(a.num_splits));
  const int64_t needed = kvcache_workspace(s, a.num_splits);
  require(a.workspace_elems >= needed, "workspace has " + std::to_string(a.workspace_elems) +
                                           " float32 elements, " + std::to_string(a.num_splits) +
                                           " splits need " + std::to_string(needed));
  if (a.block_table) {
    require(a.page_block_size > 0 && a.page_block_size % 256 == 0,
            "page_block_size must be a positive multiple of 256, got " +
                std::to_string(a.page_block_size));
    require(a.max_blocks_per_seq > 0 && a.max_blocks_per_seq * a.page_block_size == s.seqlen_k,
            "a paged cache's seqlen_k must be max_blocks_per_seq * page_block_size");
  }
  const Kernels kernels = require_kernels(s, /*splitkv=*/true);
  Flash_fwd_params p;
  fill_fwd(p, s, f.q, f.k, f.v, f.out, f.softmax_lse, f.alibi_slopes, f.alibi_slopes_batch_stride);
  // seqlens_k holds lengths, not offsets: each entry starts at its own batch
  // stride (or pages) and uses its first seqlens_k[b] keys.
  p.cu_seqlens_k = const_cast<int*>(a.seqlens_k);
  p.is_seqlens_k_cumulative = false;
  if (a.block_table) {
    p.block_table = const_cast<int*>(a.block_table);
    p.block_table_batch_stride = a.max_blocks_per_seq;
    p.page_block_size = static_cast<int>(a.page_block_size);
    p.k_batch_stride = p.v_batch_stride = a.page_block_size * p.k_row_stride;  // one page
  } else {
    p.page_block_size = 1;
  }
  p.num_splits = a.num_splits;
  if (a.num_splits > 1) {
    const int64_t rows = a.num_splits * s.batch * s.num_heads * s.seqlen_q;
    p.softmax_lseaccum_ptr = a.workspace;
    p.oaccum_ptr = a.workspace + rows;
  }
  kernels.splitkv[p.is_causal ? 1 : 0](p, stream);
  launch_check("flash attention KV-cache forward launch");
}

// Runs `body`, turning any exception into a status and a message.
template <typename F>
int guarded(char* err, size_t err_len, F&& body) {
  jfa_status status = JFA_OK;
  std::string message;
  try {
    body();
  } catch (const Error& e) {
    status = e.status;
    message = e.what();
  } catch (const jfa::CudaError& e) {
    status = JFA_CUDA_ERROR;
    message = e.what();
  } catch (const std::exception& e) {
    status = JFA_INTERNAL;
    message = e.what();
  } catch (...) {
    status = JFA_INTERNAL;
    message = "unknown error";
  }
  if (status != JFA_OK && err != nullptr && err_len > 0) {
    std::snprintf(err, err_len, "%s", message.c_str());
  }
  return status;
}

// Scratch a dense call's Hopper kernel can use: 0 off that path, for an
// invalid shape, or in a build without the kernels (`bytes` is then null).
template <class Rule>
int64_t sm90_workspace_bytes(const jfa_attention_shape* shape, bool has_alibi, Rule rule,
                             int64_t (*bytes)(const jfa_sm90::Shape&)) {
  if (shape == nullptr || bytes == nullptr) return 0;
  int64_t n = 0;
  guarded(nullptr, 0, [&] {
    check_shape(*shape);
    if (takes_sm90_path(rule, *shape, has_alibi, /*is_varlen=*/false))
      n = bytes(sm90_shape(*shape));
  });
  return n;
}

}  // namespace

extern "C" {

void jfa_bwd_workspace_elems(const jfa_attention_shape* s, int num_sms, int64_t* dq_accum_elems,
                             int64_t* softmax_d_elems) {
  const int64_t splits = s->deterministic ? deterministic_splits(*s, num_sms) : 1;
  *dq_accum_elems = splits * dq_accum_split_elems(*s);
  *softmax_d_elems = s->batch * s->num_heads * round_up(s->seqlen_q, 128);
  // The Hopper backward's, whichever GPU runs it. It never takes
  // deterministic calls, whose dq_accum stays whole splits.
  const jfa_sm90::BwdScratch sm90 =
      jfa_sm90::bwd_scratch_elems(s->batch, s->num_heads, s->seqlen_q, s->head_dim);
  if (!s->deterministic) *dq_accum_elems = std::max(*dq_accum_elems, sm90.dq_accum);
  *softmax_d_elems = std::max(*softmax_d_elems, sm90.row_stats);
}

void jfa_varlen_bwd_workspace_elems(const jfa_attention_shape* s, int64_t total_q, int num_sms,
                                    int64_t* dq_accum_elems, int64_t* softmax_d_elems) {
  const int64_t splits = s->deterministic ? deterministic_splits(*s, num_sms) : 1;
  *dq_accum_elems = splits * varlen_dq_accum_split_elems(*s, total_q);
  *softmax_d_elems = s->num_heads * (total_q + 128 * s->batch);
}

int jfa_num_sms(int device, int* num_sms, char* err, size_t err_len) {
  return guarded(err, err_len, [&] {
    require(num_sms != nullptr, "num_sms must not be NULL");
    int count = 0;
    cuda_check(cudaGetDeviceCount(&count), "no usable CUDA GPU (cudaGetDeviceCount)");
    if (count <= 0) throw Error(JFA_CUDA_ERROR, "no CUDA GPU is visible");
    require(device >= -1 && device < count, "device must be -1 (all) or in [0, " +
                                                std::to_string(count) + "), got " +
                                                std::to_string(device));
    int most = 0;
    for (int d = device < 0 ? 0 : device; d < (device < 0 ? count : device + 1); ++d) {
      int sms = 0;
      cuda_check(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, d),
                 "cudaDeviceGetAttribute(MultiProcessorCount)");
      most = std::max(most, sms);
    }
    *num_sms = most;
  });
}

int jfa_check_shape(const jfa_attention_shape* shape, char* err, size_t err_len) {
  return guarded(err, err_len, [&] { check_shape(*shape); });
}

int jfa_mha_fwd(const jfa_fwd_args* args, void* stream, char* err, size_t err_len) {
  return guarded(err, err_len, [&] { mha_fwd(*args, as_stream(stream)); });
}

int jfa_mha_bwd(const jfa_bwd_args* args, void* stream, char* err, size_t err_len) {
  return guarded(err, err_len, [&] { mha_bwd(*args, as_stream(stream)); });
}

int jfa_mha_varlen_fwd(const jfa_varlen_fwd_args* args, void* stream, char* err,
                       size_t err_len) {
  return guarded(err, err_len, [&] {
    const Varlen varlen{args->cu_seqlens_q, args->cu_seqlens_k, args->total_q, args->total_k};
    mha_fwd(args->base, as_stream(stream), &varlen);
  });
}

int jfa_mha_varlen_bwd(const jfa_varlen_bwd_args* args, void* stream, char* err,
                       size_t err_len) {
  return guarded(err, err_len, [&] {
    const Varlen varlen{args->cu_seqlens_q, args->cu_seqlens_k, args->total_q, args->total_k};
    mha_bwd(args->base, as_stream(stream), &varlen);
  });
}

int32_t jfa_kvcache_num_splits(const jfa_attention_shape* shape, int num_splits, int num_sms) {
  if (num_splits > 0) return num_splits;
  return splits_heuristic(*shape, num_sms);
}

int64_t jfa_kvcache_workspace_elems(const jfa_attention_shape* shape, int num_splits) {
  return kvcache_workspace(*shape, num_splits);
}

int jfa_mha_kvcache_fwd(const jfa_kvcache_fwd_args* args, void* stream, char* err,
                        size_t err_len) {
  return guarded(err, err_len, [&] { mha_kvcache_fwd(*args, as_stream(stream)); });
}

int jfa_has_kvcache_kernel(jfa_dtype dtype, int64_t head_dim) {
  if (dtype != JFA_FLOAT16 && dtype != JFA_BFLOAT16) return 0;
  const Kernels k = lookup(dtype, head_dim);
  return k.splitkv[0] && k.splitkv[1];
}

int jfa_has_kernel(jfa_dtype dtype, int64_t head_dim) {
  if (dtype != JFA_FLOAT16 && dtype != JFA_BFLOAT16) return 0;
  const Kernels k = lookup(dtype, head_dim);
  return k.fwd[0] && k.fwd[1] && k.bwd[0] && k.bwd[1];
}

int jfa_has_sm90_kernel(jfa_dtype dtype, int64_t head_dim) {
  const jfa_attention_shape s = ordinary_call(dtype, head_dim);
  return jfa_fwd_uses_sm90(&s, 0, 0, 9, 0);
}

int jfa_has_sm90_bwd_kernel(jfa_dtype dtype, int64_t head_dim) {
  const jfa_attention_shape s = ordinary_call(dtype, head_dim);
  return jfa_bwd_uses_sm90(&s, 0, 0, 9, 0);
}

int jfa_fwd_uses_sm90(const jfa_attention_shape* shape, int has_alibi, int is_varlen,
                      int cc_major, int cc_minor) {
  if (shape == nullptr || guarded(nullptr, 0, [&] { check_shape(*shape); }) != JFA_OK) return 0;
  return uses_sm90(*shape, has_alibi != 0, is_varlen != 0, cc_major, cc_minor);
}

int64_t jfa_fwd_workspace_bytes(const jfa_attention_shape* shape, int has_alibi) {
  return sm90_workspace_bytes(shape, has_alibi != 0, uses_sm90, jfa_sm90::fwd_workspace_bytes);
}

int jfa_bwd_uses_sm90(const jfa_attention_shape* shape, int has_alibi, int is_varlen,
                      int cc_major, int cc_minor) {
  if (shape == nullptr || guarded(nullptr, 0, [&] { check_shape(*shape); }) != JFA_OK) return 0;
  return uses_sm90_bwd(*shape, has_alibi != 0, is_varlen != 0, cc_major, cc_minor);
}

int64_t jfa_bwd_workspace_bytes(const jfa_attention_shape* shape, int has_alibi) {
  return sm90_workspace_bytes(shape, has_alibi != 0, uses_sm90_bwd, jfa_sm90::bwd_workspace_bytes);
}

const char* jfa_build_config(void) {
  static const std::string config = [] {
    std::string kernels, sm90, sm90_bwd;
    for (jfa_dtype dtype : {JFA_FLOAT16, JFA_BFLOAT16}) {
      for (int d : {32, 64, 96, 128, 192, 256}) {
        const std::string name = dtype_name(dtype) + std::string("/") + std::to_string(d);
        if (jfa_has_kernel(dtype, d)) kernels += (kernels.empty() ? "" : " ") + name;
        if (jfa_has_sm90_kernel(dtype, d)) sm90 += (sm90.empty() ? "" : " ") + name;
        if (jfa_has_sm90_bwd_kernel(dtype, d)) sm90_bwd += (sm90_bwd.empty() ? "" : " ") + name;
      }
    }
    return "kernels: " + (kernels.empty() ? std::string("none") : kernels) +
           (sm90.empty() ? "" : "; sm90 forward: " + sm90) +
           (sm90_bwd.empty() ? "" : "; sm90 backward: " + sm90_bwd);
  }();
  return config.c_str();
}

void jfa_get_launch_counts(jfa_launch_counts* counts) {
  if (counts == nullptr) return;
  counts->fwd_cut = g_fwd_cut.load(std::memory_order_relaxed);
  counts->bwd_cut = g_bwd_cut.load(std::memory_order_relaxed);
  counts->uncut_for_scratch = g_uncut_for_scratch.load(std::memory_order_relaxed);
}

int jfa_abi_version(void) { return JFA_ABI_VERSION; }

}  // extern "C"
