// What our sm_90a kernels share: PTX wrappers for shared-memory barriers,
// TMA and wgmma, wgmma descriptors for 128-byte-swizzled tiles, and the
// host-side tensor maps.
//
// Tiles are TMA boxes of 64 elements (128 bytes) by rows, with the 128-byte
// swizzle that wgmma's descriptors understand; a head dim of D is D / 64 such
// boxes side by side.
#pragma once

#include <cuda.h>  // CUtensorMap and its encoder's signature
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cute/arch/mma_sm90_gmma.hpp>
#include <cute/arch/mma_sm90_gmma_ext.hpp>  // N = 80

#include <atomic>
#include <cmath>
#include <cstdint>
#include <utility>

#include "flash_sm90.h"
#include "last_round.h"

namespace jfa_sm90 {
namespace {

constexpr int kBoxCols = 64;  // elements per 128-byte swizzled row
constexpr int kBoxRowBytes = 128;

namespace gmma = cute::SM90::GMMA;

// The shapes both directions' kernels cover; fwd_supported and bwd_supported
// stay two symbols because each lives in its own (weakly linked) object.
inline bool shape_covered(const Shape& s) {
  return (s.head_dim == 64 || s.head_dim == 128 || s.head_dim == 256) && s.softmax_scale > 0.f &&
         s.heads_k > 0 && s.heads % s.heads_k == 0;
}

// Causal or windowed: the calls whose key blocks are partly masked, which
// both directions give their own tiles.
inline bool has_mask(const Shape& s) { return s.window_left >= 0 || s.window_right >= 0; }

// ---------------------------------------------------------------------------
// PTX wrappers: shared-memory barriers, TMA, wgmma bookkeeping.

__device__ __forceinline__ uint32_t smem_addr(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

__device__ __forceinline__ void mbar_init(uint64_t* bar, int count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" ::"r"(smem_addr(bar)), "r"(count));
}

__device__ __forceinline__ void mbar_expect_tx(uint64_t* bar, uint32_t bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(smem_addr(bar)),
               "r"(bytes)
               : "memory");
}

__device__ __forceinline__ void mbar_arrive(uint64_t* bar) {
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];" ::"r"(smem_addr(bar)) : "memory");
}

__device__ __forceinline__ void mbar_wait(uint64_t* bar, uint32_t parity) {
  uint32_t done = 0;
  do {
    asm volatile(
        "{\n.reg .pred p;\n"
        "mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\n"
        "selp.u32 %0, 1, 0, p;\n}"
        : "=r"(done)
        : "r"(smem_addr(bar)), "r"(parity)
        : "memory");
  } while (!done);
}

// A 4-D box (d, head, row, batch) of a [batch, seq, heads, dim] tensor.
__device__ __forceinline__ void tma_load(void* dst, const CUtensorMap* map, uint64_t* bar, int d,
                                         int head, int row, int batch) {
  asm volatile(
      "cp.async.bulk.tensor.4d.shared::cluster.global.mbarrier::complete_tx::bytes"
      " [%0], [%1, {%2, %3, %4, %5}], [%6];" ::"r"(smem_addr(dst)),
      "l"(reinterpret_cast<uint64_t>(map)), "r"(d), "r"(head), "r"(row), "r"(batch),
      "r"(smem_addr(bar))
      : "memory");
}

// A box of make_stats_map's (rows from `row`, of one (batch, head) `bh`,
// statistic `which`), completing on bar as tma_load's.
__device__ __forceinline__ void tma_load_3d(void* dst, const CUtensorMap* map, uint64_t* bar, int row, int bh,
                                            int which) {
  asm volatile(
      "cp.async.bulk.tensor.3d.shared::cluster.global.mbarrier::complete_tx::bytes"
      " [%0], [%1, {%2, %3, %4}], [%5];" ::"r"(smem_addr(dst)),
      "l"(reinterpret_cast<uint64_t>(map)), "r"(row), "r"(bh), "r"(which), "r"(smem_addr(bar))
      : "memory");
}

// Programmatic dependent launch: the next kernel in the stream, if launched
// with programmatic serialization, may start once every CTA of this one has
// run allow_dependent_launch(); it must wait for this one's results itself.
__device__ __forceinline__ void allow_dependent_launch() {
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
}
// Waits until the previous kernel has completed and its writes are visible.
__device__ __forceinline__ void wait_previous_grid() { asm volatile("griddepcontrol.wait;" ::: "memory"); }

// Stores a box from shared memory into the tensor as tma_load's; one bulk
// group per bulk_commit(), its reads of shared memory awaited by bulk_wait_read().
__device__ __forceinline__ void tma_store(const CUtensorMap* map, const void* src, int d, int head,
                                          int row, int batch) {
  asm volatile(
      "cp.async.bulk.tensor.4d.global.shared::cta.bulk_group [%0, {%1, %2, %3, %4}], [%5];" ::"l"(
          reinterpret_cast<uint64_t>(map)),
      "r"(d), "r"(head), "r"(row), "r"(batch), "r"(smem_addr(src))
      : "memory");
}
__device__ __forceinline__ void bulk_commit() { asm volatile("cp.async.bulk.commit_group;" ::: "memory"); }
__device__ __forceinline__ void bulk_wait_read() {
  asm volatile("cp.async.bulk.wait_group.read 0;" ::: "memory");
}
// Waits until this thread's bulk groups have written global memory, and
// orders those writes before its later generic-proxy accesses.
__device__ __forceinline__ void bulk_wait_written() {
  asm volatile("cp.async.bulk.wait_group 0;\nfence.proxy.async.global;" ::: "memory");
}

// Four 8 x 8 matrices of 16-bit elements, each thread holding a row's pair
// of elements of each (the accumulators' layout); lane l gives the address
// of row l % 8 of matrix l / 8.
__device__ __forceinline__ void stmatrix_x4(void* row, uint32_t a, uint32_t b, uint32_t c, uint32_t d) {
  asm volatile("stmatrix.sync.aligned.m8n8.x4.shared.b16 [%0], {%1, %2, %3, %4};" ::"r"(smem_addr(row)),
               "r"(a), "r"(b), "r"(c), "r"(d)
               : "memory");
}

__device__ __forceinline__ void prefetch_map(const CUtensorMap* map) {
  asm volatile("prefetch.tensormap [%0];" ::"l"(reinterpret_cast<uint64_t>(map)) : "memory");
}

__device__ __forceinline__ void wgmma_fence() {
  asm volatile("wgmma.fence.sync.aligned;" ::: "memory");
}
__device__ __forceinline__ void wgmma_commit() {
  asm volatile("wgmma.commit_group.sync.aligned;" ::: "memory");
}
template <int N>
__device__ __forceinline__ void wgmma_wait() {
  asm volatile("wgmma.wait_group.sync.aligned %0;" ::"n"(N) : "memory");
}

// Named barrier `id` (0 is __syncthreads') over kThreads threads: wait for
// all of them, or count this warp in without waiting.
template <int kThreads>
__device__ __forceinline__ void named_bar_sync(int id) {
  asm volatile("bar.sync %0, %1;" ::"r"(id), "n"(kThreads) : "memory");
}
template <int kThreads>
__device__ __forceinline__ void named_bar_arrive(int id) {
  asm volatile("bar.arrive %0, %1;" ::"r"(id), "n"(kThreads) : "memory");
}

// Keeps the compiler from moving accesses of an accumulator across the
// asynchronous wgmma that owns it (it sees the asm as synchronous).
template <int N>
__device__ __forceinline__ void pin(float (&r)[N]) {
#pragma unroll
  for (int i = 0; i < N; ++i) asm volatile("" : "+f"(r[i])::"memory");
}
template <int N>
__device__ __forceinline__ void pin(uint32_t (&r)[N]) {
#pragma unroll
  for (int i = 0; i < N; ++i) asm volatile("" : "+r"(r[i])::"memory");
}

// The first 1024-byte boundary at or after p, a shared-memory pointer (the
// 128-byte swizzle repeats every 1024 bytes). Offsetting p itself, rather
// than rounding its integer value, keeps the compiler aware that the result
// is in shared memory: otherwise every access through it becomes a generic
// load or store (LD.E / ST.E instead of LDS / STS), which the backward's
// statistics, dS^T and dQ stores paid for in latency.
__device__ __forceinline__ unsigned char* align_1024(unsigned char* p) {
  return p + ((1024 - (smem_addr(p) & 1023)) & 1023);
}

// wgmma shared-memory descriptor for a swizzled tile (TMA's 128-byte swizzle
// unless told otherwise). Offsets are in bytes: lead is unused for K-major
// tiles (1 by convention), and for MN-major ones the distance between
// swizzle-wide columns (64 elements for 128 bytes, 16 for 32); stride is the
// distance between groups of 8 rows.
constexpr uint64_t kSwizzle128B = 1, kSwizzle32B = 3;
__device__ __forceinline__ uint64_t desc(const void* p, uint32_t lead, uint32_t stride,
                                         uint64_t swizzle = kSwizzle128B) {
  return static_cast<uint64_t>((smem_addr(p) >> 4) & 0x3FFF) |
         static_cast<uint64_t>((lead >> 4) & 0x3FFF) << 16 |
         static_cast<uint64_t>((stride >> 4) & 0x3FFF) << 32 | swizzle << 62;
}

// The descriptor of a tile `bytes` further on in shared memory. Building each
// wgmma's descriptor from a pointer costs a dozen instructions and a
// register-to-uniform move before every wgmma, which for the 64-wide products
// of the backward took longer than the tensor cores took to run them; from a
// base descriptor it is one add. (The address field cannot overflow: shared
// memory addresses stay below 2^18 bytes.)
__device__ __forceinline__ uint64_t desc_add(uint64_t d, uint32_t bytes) { return d + (bytes >> 4); }

// threadIdx.x / 128, broadcast from lane 0 so that the compiler knows it is
// the same across the warp: addresses derived from it (and the descriptors
// built from those) can then live in uniform registers, which wgmma reads.
__device__ __forceinline__ int warpgroup_index() {
  return __shfl_sync(0xffffffff, static_cast<int>(threadIdx.x / 128), 0);
}

// ---------------------------------------------------------------------------
// wgmma operations by element type, N and the operands' major modes (a row
// of CuTe's SM90 op table). RS (A from registers) exists only for K-major A.

template <bool kBf16, int N, gmma::Major kA, gmma::Major kB>
struct Gmma;

#define JFA_SM90_GMMA(N)                                                 \
  template <gmma::Major kA, gmma::Major kB>                              \
  struct Gmma<true, N, kA, kB> {                                         \
    using SS = gmma::MMA_64x##N##x16_F32BF16BF16_SS<kA, kB>;             \
    using RS = gmma::MMA_64x##N##x16_F32BF16BF16_RS<kA, kB>;             \
  };                                                                     \
  template <gmma::Major kA, gmma::Major kB>                              \
  struct Gmma<false, N, kA, kB> {                                        \
    using SS = gmma::MMA_64x##N##x16_F32F16F16_SS<kA, kB>;               \
    using RS = gmma::MMA_64x##N##x16_F32F16F16_RS<kA, kB>;               \
  };
JFA_SM90_GMMA(48)
JFA_SM90_GMMA(64)
JFA_SM90_GMMA(80)
JFA_SM90_GMMA(128)
JFA_SM90_GMMA(176)
JFA_SM90_GMMA(192)
JFA_SM90_GMMA(256)
#undef JFA_SM90_GMMA

constexpr gmma::Major kK = gmma::Major::K;
constexpr gmma::Major kMN = gmma::Major::MN;

template <class Op, size_t... I>
__device__ __forceinline__ void mma_ss(uint64_t a, uint64_t b, float* d, bool accumulate,
                                       std::index_sequence<I...>) {
  Op::fma(a, b, d[I]..., accumulate ? gmma::ScaleOut::One : gmma::ScaleOut::Zero);
}

template <class Op, size_t... I>
__device__ __forceinline__ void mma_rs(const uint32_t* a, uint64_t b, float* d,
                                       std::index_sequence<I...>) {
  Op::fma(a[0], a[1], a[2], a[3], b, d[I]..., gmma::ScaleOut::One);
}

// acc = A B^T over kSteps steps of 16 along K, both operands K-major tiles
// stored as 64-column boxes: step kk lies in box kk / 4, 32 bytes per step
// within it, and the boxes are a_box_bytes / b_box_bytes apart.
template <class Op, int kSteps, int N>
__device__ __forceinline__ void mma_ss_k_major(uint64_t a, int a_box_bytes, uint64_t b, int b_box_bytes,
                                               float (&acc)[N]) {
#pragma unroll
  for (int kk = 0; kk < kSteps; ++kk) {
    const int box = kk / 4, within = (kk % 4) * 32;
    mma_ss<Op>(desc_add(a, box * a_box_bytes + within), desc_add(b, box * b_box_bytes + within), acc, kk > 0,
               std::make_index_sequence<N>{});
  }
}

// acc += A B over kSteps steps of 16 along K: A from registers (4 per step,
// in the accumulator layout of a previous product), B an MN-major tile whose
// steps are 16 rows of 128 bytes apart.
template <class Op, int kSteps, int N>
__device__ __forceinline__ void mma_rs_mn_major(const uint32_t* a, uint64_t b, float (&acc)[N]) {
#pragma unroll
  for (int kk = 0; kk < kSteps; ++kk)
    mma_rs<Op>(&a[4 * kk], desc_add(b, kk * 16 * kBoxRowBytes), acc, std::make_index_sequence<N>{});
}

template <bool kBf16>
__device__ __forceinline__ uint32_t pack(float x, float y) {
  if constexpr (kBf16) {
    __nv_bfloat162 v = __floats2bfloat162_rn(x, y);
    return *reinterpret_cast<uint32_t*>(&v);
  } else {
    __half2 v = __floats2half2_rn(x, y);
    return *reinterpret_cast<uint32_t*>(&v);
  }
}

// A warpgroup's m64 x kCols accumulator tile (the wgmma layout: thread t of
// warp w holds rows 16 w + t / 4 and + 8, columns 2 (t % 4) + 8 j and + 1 as
// acc[4 j ..]) into 64-row boxes of 64 columns in the 128-byte swizzle, the
// layout of a TMA store: 16-bit values, rows r and r + 8 times scale[0] and
// scale[1]. By stmatrix: lane l addresses row l % 8 of matrix l / 8 (rows + 8
// for odd matrices, the next column group for the upper two).
template <bool kBf16, int kCols>
__device__ __forceinline__ void stage_swizzled_boxes(unsigned char* boxes, const float* acc, const float (&scale)[2],
                                                     int warp, int lane) {
  const int m = lane / 8, row = warp * 16 + lane % 8 + 8 * (m % 2);
#pragma unroll
  for (int j = 0; j < kCols / 8; j += 2) {
    const int g = j + m / 2;  // column group of 8
    stmatrix_x4(boxes + (g / 8) * 64 * kBoxRowBytes + row * kBoxRowBytes + (((g % 8) ^ (row % 8)) << 4),
                pack<kBf16>(acc[4 * j] * scale[0], acc[4 * j + 1] * scale[0]),
                pack<kBf16>(acc[4 * j + 2] * scale[1], acc[4 * j + 3] * scale[1]),
                pack<kBf16>(acc[4 * j + 4] * scale[0], acc[4 * j + 5] * scale[0]),
                pack<kBf16>(acc[4 * j + 6] * scale[1], acc[4 * j + 7] * scale[1]));
  }
}

// pack's inverse.
template <bool kBf16>
__device__ __forceinline__ float2 unpack(uint32_t x) {
  if constexpr (kBf16) return __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&x));
  else return __half22float2(*reinterpret_cast<const __half2*>(&x));
}

// ---------------------------------------------------------------------------
// Host side.

// A call's sizes and options as both kernels take them (their argument
// structs name these fields alike).
template <class KernelArgs>
void set_problem(KernelArgs& a, const Shape& s) {
  a.seqlen_q = s.seqlen_q;
  a.seqlen_k = s.seqlen_k;
  a.heads = s.heads;
  a.group = s.heads / s.heads_k;
  a.scale = s.softmax_scale;
  a.scale_log2 = s.softmax_scale * static_cast<float>(M_LOG2E);
  a.window_left = s.window_left;
  a.window_right = s.window_right;
}

using EncodeTiled = CUresult (*)(CUtensorMap*, CUtensorMapDataType, cuuint32_t, void*,
                                 const cuuint64_t*, const cuuint64_t*, const cuuint32_t*,
                                 const cuuint32_t*, CUtensorMapInterleave, CUtensorMapSwizzle,
                                 CUtensorMapL2promotion, CUtensorMapFloatOOBfill);

// The driver's encoder, found through the runtime so that we need not link
// libcuda ourselves.
cudaError_t encoder(EncodeTiled* fn) {
  static EncodeTiled cached = nullptr;
  static cudaError_t status = [] {
    void* p = nullptr;
    cudaDriverEntryPointQueryResult found;
    cudaError_t e = cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &p, 12000,
                                                     cudaEnableDefault, &found);
    if (e == cudaSuccess && found != cudaDriverEntryPointSuccess) e = cudaErrorSymbolNotFound;
    cached = reinterpret_cast<EncodeTiled>(p);
    return e;
  }();
  *fn = cached;
  return status;
}

// [batch, seq, heads, head_dim] as a 4-D tensor map with boxes of 64 columns
// by `rows` rows of one head.
cudaError_t make_map(CUtensorMap* map, const void* base, bool bf16, int batch, int seq, int heads,
                     int head_dim, int rows) {
  EncodeTiled encode;
  if (cudaError_t e = encoder(&encode); e != cudaSuccess) return e;
  const cuuint64_t dims[4] = {static_cast<cuuint64_t>(head_dim), static_cast<cuuint64_t>(heads),
                              static_cast<cuuint64_t>(seq), static_cast<cuuint64_t>(batch)};
  const cuuint64_t row_bytes = static_cast<cuuint64_t>(heads) * head_dim * 2;
  const cuuint64_t strides[3] = {static_cast<cuuint64_t>(head_dim) * 2, row_bytes,
                                 row_bytes * static_cast<cuuint64_t>(seq)};
  const cuuint32_t box[4] = {kBoxCols, 1, static_cast<cuuint32_t>(rows), 1};
  const cuuint32_t element_strides[4] = {1, 1, 1, 1};
  const CUresult r = encode(map, bf16 ? CU_TENSOR_MAP_DATA_TYPE_BFLOAT16 : CU_TENSOR_MAP_DATA_TYPE_FLOAT16,
                            4, const_cast<void*>(base), dims, strides, box, element_strides,
                            CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B,
                            CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  return r == CUDA_SUCCESS ? cudaSuccess : cudaErrorInvalidValue;
}

// The backward's float32 row statistics, [2][bh][rows] (lse, then D), as a
// 3-D tensor map with boxes of `box` rows. A tensor map needs a 16-byte
// aligned base (rows * 4 bytes, the stride, is a multiple of 16 already).
cudaError_t make_stats_map(CUtensorMap* map, const float* base, int64_t bh, int rows, int box) {
  if (reinterpret_cast<uintptr_t>(base) % 16 != 0) return cudaErrorMisalignedAddress;
  EncodeTiled encode;
  if (cudaError_t e = encoder(&encode); e != cudaSuccess) return e;
  const cuuint64_t dims[3] = {static_cast<cuuint64_t>(rows), static_cast<cuuint64_t>(bh), 2};
  const cuuint64_t row_bytes = static_cast<cuuint64_t>(rows) * 4;
  const cuuint64_t strides[2] = {row_bytes, row_bytes * static_cast<cuuint64_t>(bh)};
  const cuuint32_t box_dims[3] = {static_cast<cuuint32_t>(box), 1, 1};
  const cuuint32_t element_strides[3] = {1, 1, 1};
  const CUresult r = encode(map, CU_TENSOR_MAP_DATA_TYPE_FLOAT32, 3, const_cast<float*>(base), dims, strides,
                            box_dims, element_strides, CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_NONE,
                            CU_TENSOR_MAP_L2_PROMOTION_NONE, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  return r == CUDA_SUCCESS ? cudaSuccess : cudaErrorInvalidValue;
}

cudaError_t sm_count(int* sms) {
  int device = 0;
  cudaError_t e = cudaGetDevice(&device);
  if (e != cudaSuccess) return e;
  return cudaDeviceGetAttribute(sms, cudaDevAttrMultiProcessorCount, device);
}

// Counters of the cut tiles' arrivals (up to three per tile: the forward
// counts per consumer warpgroup), reset by each tile's last arrival. Calls take the
// entries of such pools in turn, so that calls running at once on different
// streams use different ones (up to kQueues in flight).
constexpr int kQueues = 64;
using Arrivals = unsigned[3 * kMaxCutTiles];
__device__ Arrivals g_arrivals[kQueues];

template <class Entry>
cudaError_t next_entry(Entry (&pool)[kQueues], Entry** entry) {
  static std::atomic<unsigned> next{0};  // one per pool
  Entry* base = nullptr;
  const cudaError_t e = cudaGetSymbolAddress(reinterpret_cast<void**>(&base), pool);
  if (e != cudaSuccess) return e;
  *entry = base + next.fetch_add(1, std::memory_order_relaxed) % kQueues;
  return cudaSuccess;
}

// A launch's cut in its kernel's arguments (both kernels name these fields
// alike): undone where the caller's scratch (p.workspace) is smaller than the
// `needed` bytes, else with arrival counters from the pool; the outcome goes
// to p.last_round.
template <class KernelArgs, class Params>
cudaError_t set_cut(KernelArgs& a, Cut& c, int64_t needed, const Params& p) {
  const LastRound round = fit_to_scratch(c, needed, p.workspace ? p.workspace_bytes : 0);
  if (p.last_round) *p.last_round = round;
  a.whole = c.whole;
  a.split = c.split;
  a.partial = static_cast<float4*>(p.workspace);
  a.arrivals = nullptr;
  if (c.split == 1) return cudaSuccess;
  Arrivals* arrivals = nullptr;
  const cudaError_t e = next_entry(g_arrivals, &arrivals);
  if (e == cudaSuccess) a.arrivals = *arrivals;
  return e;
}

}  // namespace
}  // namespace jfa_sm90
