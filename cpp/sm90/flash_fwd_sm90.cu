// Hopper-native attention forward (sm_90a), our own kernel.
//
// One CTA computes 128 query rows of one (batch, head) against every key
// block it can see. Three warpgroups:
//   producer  (warps 0-3): one thread issues TMA loads of Q once and of K/V
//             blocks into a ring of shared-memory stages, completion counted
//             by transaction bytes on mbarriers; the warpgroup gives up most
//             of its registers (setmaxnreg) to the consumers.
//   consumers (warps 4-11): two warpgroups, each owning 64 query rows, run
//             S = Q K^T with wgmma from shared memory, the online softmax in
//             registers, and O += P V with P from registers (wgmma's register
//             A operand has the accumulator's layout, so P never touches
//             shared memory).
// As FlashAttention-3 describes, a consumer issues block i's S product
// together with block i-1's P V and runs block i's softmax while the latter
// is in flight, and the two consumers take turns on the tensor cores, so that
// one's softmax overlaps the other's products.

#include "flash_sm90.h"

#include <cmath>
#include <cstdint>

#include "sm90_common.cuh"

namespace jfa_sm90 {
namespace {

constexpr int kBlockM = 128;  // query rows per CTA
constexpr int kThreads = 384;  // three warpgroups

// ---------------------------------------------------------------------------

struct Args {
  void* out;
  float* lse;
  int seqlen_q, seqlen_k, heads, group;  // group: query heads per key head
  float scale_log2;                      // softmax_scale * log2(e)
  float scale;
  int window_left, window_right;
};

template <int D, int kBlockN, int kStages>
struct Smem {
  static constexpr int kQBytes = kBlockM * D * 2;
  static constexpr int kKVBytes = kBlockN * D * 2;
  static constexpr int kBarOffset = kQBytes + 2 * kStages * kKVBytes;
  // q_full, then k_full, v_full, k_empty, v_empty per stage.
  static constexpr int kBytes = kBarOffset + 8 * (1 + 4 * kStages) + 1024;  // + alignment slack
};

// Key blocks [lo, hi) that rows [row_lo, row_hi] of a query block can see.
__device__ __forceinline__ void key_range(const Args& a, int row_lo, int row_hi, int block_n,
                                          int* lo, int* hi) {
  const int offset = a.seqlen_k - a.seqlen_q;
  int first = 0, last = a.seqlen_k;  // columns [first, last)
  if (a.window_left >= 0) first = max(0, row_lo + offset - a.window_left);
  if (a.window_right >= 0) last = min(last, row_hi + offset + a.window_right + 1);
  *lo = first / block_n;
  *hi = last <= 0 ? 0 : (last + block_n - 1) / block_n;
}

template <bool kBf16, int D, int kBlockN, int kStages>
__global__ void __launch_bounds__(kThreads, 1)
    flash_fwd_kernel(const __grid_constant__ CUtensorMap q_map, const __grid_constant__ CUtensorMap k_map,
               const __grid_constant__ CUtensorMap v_map, const Args a) {
  using L = Smem<D, kBlockN, kStages>;
  constexpr int kBoxes = D / kBoxCols;
  constexpr int kSAcc = kBlockN / 2;  // S accumulator floats per thread (m64 x kBlockN)
  constexpr int kOAcc = D / 2;        // O accumulator floats per thread

  extern __shared__ __align__(1024) unsigned char smem_raw[];
  unsigned char* smem = reinterpret_cast<unsigned char*>(
      (reinterpret_cast<uintptr_t>(smem_raw) + 1023) & ~uintptr_t{1023});
  unsigned char* sQ = smem;
  unsigned char* sK = smem + L::kQBytes;
  unsigned char* sV = sK + kStages * L::kKVBytes;
  uint64_t* bars = reinterpret_cast<uint64_t*>(smem + L::kBarOffset);
  uint64_t* q_full = bars;
  uint64_t* k_full = bars + 1;
  uint64_t* v_full = bars + 1 + kStages;
  // K and V are released separately: a stage's K is free once both
  // consumers' S products are done, a block earlier than its V.
  uint64_t* k_empty = bars + 1 + 2 * kStages;
  uint64_t* v_empty = bars + 1 + 3 * kStages;

  // Longest blocks first: with causal masks, late query blocks see most keys.
  const int m_block = gridDim.x - 1 - blockIdx.x;
  const int head = blockIdx.y, batch = blockIdx.z;
  const int head_k = head / a.group;
  const int m0 = m_block * kBlockM;
  const int warpgroup = threadIdx.x / 128;

  if (threadIdx.x == 0) {
    mbar_init(q_full, 1);
    for (int s = 0; s < kStages; ++s) {
      mbar_init(&k_full[s], 1);
      mbar_init(&v_full[s], 1);
      mbar_init(&k_empty[s], 8);  // one arrival per consumer warp
      mbar_init(&v_empty[s], 8);
    }
    asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
  }
  __syncthreads();

  int n_lo, n_hi;
  key_range(a, m0, min(m0 + kBlockM, a.seqlen_q) - 1, kBlockN, &n_lo, &n_hi);
  const int n_blocks = max(0, n_hi - n_lo);

  if (warpgroup == 0) {
    // Producer.
    asm volatile("setmaxnreg.dec.sync.aligned.u32 24;");
    if (threadIdx.x == 0) {
      prefetch_map(&q_map);
      prefetch_map(&k_map);
      prefetch_map(&v_map);
      mbar_expect_tx(q_full, L::kQBytes);
      for (int c = 0; c < kBoxes; ++c)
        tma_load(sQ + c * kBlockM * kBoxRowBytes, &q_map, q_full, c * kBoxCols, head, m0, batch);
      for (int i = 0; i < n_blocks; ++i) {
        const int s = i % kStages, use = i / kStages;
        const int n0 = (n_hi - 1 - i) * kBlockN;
        unsigned char* k_dst = sK + s * L::kKVBytes;
        unsigned char* v_dst = sV + s * L::kKVBytes;
        if (use > 0) mbar_wait(&k_empty[s], (use - 1) & 1);
        mbar_expect_tx(&k_full[s], L::kKVBytes);
        for (int c = 0; c < kBoxes; ++c)
          tma_load(k_dst + c * kBlockN * kBoxRowBytes, &k_map, &k_full[s], c * kBoxCols, head_k,
                   n0, batch);
        if (use > 0) mbar_wait(&v_empty[s], (use - 1) & 1);
        mbar_expect_tx(&v_full[s], L::kKVBytes);
        for (int c = 0; c < kBoxes; ++c)
          tma_load(v_dst + c * kBlockN * kBoxRowBytes, &v_map, &v_full[s], c * kBoxCols, head_k,
                   n0, batch);
      }
    }
    return;
  }

  // Consumers.
  asm volatile("setmaxnreg.inc.sync.aligned.u32 240;");
  const int wg = warpgroup - 1;                 // 0 or 1: rows 64 wg .. 64 wg + 63
  const int lane = threadIdx.x % 32;
  const int warp = (threadIdx.x / 32) % 4;      // warp within the warpgroup
  const int row0 = m0 + wg * 64 + warp * 16 + lane / 4;  // and row0 + 8
  const int col_in_block = 2 * (lane % 4);      // + 8 j, + {0, 1}
  const int wg_row_lo = m0 + wg * 64, wg_row_hi = wg_row_lo + 63;
  const int offset = a.seqlen_k - a.seqlen_q;

  float o[kOAcc];
  float s_acc[kSAcc];
  uint32_t p[kSAcc / 2];
#pragma unroll
  for (int i = 0; i < kOAcc; ++i) o[i] = 0.f;
  float row_max[2] = {-INFINITY, -INFINITY};
  float row_sum[2] = {0.f, 0.f};

  const unsigned char* q_tile = sQ + wg * 64 * kBoxRowBytes;

  auto issue_s = [&](int stage) {
    const unsigned char* k_tile = sK + stage * L::kKVBytes;
    pin(s_acc);
    wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk) {
      const int box = kk / 4, within = (kk % 4) * 32;
      const uint64_t da = desc(q_tile + box * kBlockM * kBoxRowBytes + within, 16, 1024);
      const uint64_t db = desc(k_tile + box * kBlockN * kBoxRowBytes + within, 16, 1024);
      mma_ss<typename Gmma<kBf16, kBlockN, kK, kK>::SS>(da, db, s_acc, kk > 0,
                                               std::make_index_sequence<kSAcc>{});
    }
    wgmma_commit();
  };

  auto issue_pv = [&](int stage) {
    const unsigned char* v_tile = sV + stage * L::kKVBytes;
    pin(o);
    pin(p);
    wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < kBlockN / 16; ++kk) {
      const uint64_t db = desc(v_tile + kk * 16 * kBoxRowBytes, kBlockN * kBoxRowBytes, 1024);
      mma_rs<typename Gmma<kBf16, D, kK, kMN>::RS>(&p[4 * kk], db, o, std::make_index_sequence<kOAcc>{});
    }
    wgmma_commit();
  };

  // Masks s_acc for key block n and turns it into exp(S - running max) in
  // place, updating the running max and sum; `factor` gets each row's O
  // rescale. P is packed separately (to_p), because the registers of the
  // previous P stay wgmma operands until its P V product completes.
  auto softmax = [&](int n, float (&factor)[2]) {
    const int n0 = n * kBlockN;
    const bool full = n0 + kBlockN <= a.seqlen_k &&
                      (a.window_left < 0 || n0 >= wg_row_hi + offset - a.window_left) &&
                      (a.window_right < 0 || n0 + kBlockN - 1 <= wg_row_lo + offset + a.window_right);
    if (!full) {
#pragma unroll
      for (int j = 0; j < kBlockN / 8; ++j) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int row = row0 + (e / 2) * 8;
          const int col = n0 + 8 * j + col_in_block + (e % 2);
          const bool visible = col < a.seqlen_k &&
                               (a.window_left < 0 || col >= row + offset - a.window_left) &&
                               (a.window_right < 0 || col <= row + offset + a.window_right);
          if (!visible) s_acc[4 * j + e] = -INFINITY;
        }
      }
    }
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      float m = row_max[r];
#pragma unroll
      for (int j = 0; j < kBlockN / 8; ++j)
        m = fmaxf(m, fmaxf(s_acc[4 * j + 2 * r], s_acc[4 * j + 2 * r + 1]));
      m = fmaxf(m, __shfl_xor_sync(0xffffffff, m, 1));
      m = fmaxf(m, __shfl_xor_sync(0xffffffff, m, 2));
      // A row that has seen no key yet keeps max -inf; offsetting by 0 then
      // leaves its probabilities at exp2(-inf) = 0.
      const float m_scaled = m == -INFINITY ? 0.f : m * a.scale_log2;
      factor[r] = exp2f(row_max[r] * a.scale_log2 - m_scaled);
      row_max[r] = m;
      float sum = 0.f;
#pragma unroll
      for (int j = 0; j < kBlockN / 8; ++j) {
        const float x = exp2f(fmaf(s_acc[4 * j + 2 * r], a.scale_log2, -m_scaled));
        const float y = exp2f(fmaf(s_acc[4 * j + 2 * r + 1], a.scale_log2, -m_scaled));
        s_acc[4 * j + 2 * r] = x;
        s_acc[4 * j + 2 * r + 1] = y;
        sum += x + y;
      }
      row_sum[r] = row_sum[r] * factor[r] + sum;
    }
  };

  auto to_p = [&] {
#pragma unroll
    for (int i = 0; i < kSAcc / 2; ++i) p[i] = pack<kBf16>(s_acc[2 * i], s_acc[2 * i + 1]);
  };

  auto rescale_o = [&](const float (&factor)[2]) {
#pragma unroll
    for (int j = 0; j < D / 8; ++j) {
      o[4 * j + 0] *= factor[0];
      o[4 * j + 1] *= factor[0];
      o[4 * j + 2] *= factor[1];
      o[4 * j + 3] *= factor[1];
    }
  };

  auto release = [&](uint64_t* bar) {
    __syncwarp();
    if (lane == 0) mbar_arrive(bar);
  };

  // The two consumers take turns issuing their products (slot t of
  // warpgroup 0, then slot t of warpgroup 1, then slot t + 1 of warpgroup
  // 0, ...), so that one's softmax runs while the other's products occupy the
  // tensor cores. Slot 0 is block 0's S; slot i is block i's S with block
  // i - 1's P V; the last slot is the last P V.
  auto begin_turn = [&](int slot) {
    if (!(wg == 0 && slot == 0)) turn_wait(wg);
  };
  auto end_turn = [&](int slot) {
    if (!(wg == 1 && slot == n_blocks)) turn_pass(wg);
  };

  if (n_blocks > 0) {
    mbar_wait(q_full, 0);
    // Block i uses stage i % kStages, for the (i / kStages)-th time.
    mbar_wait(&k_full[0], 0);
    begin_turn(0);
    issue_s(0);
    end_turn(0);
    wgmma_wait<0>();
    pin(s_acc);
    release(&k_empty[0]);
    float factor[2];
    softmax(n_hi - 1, factor);
    to_p();
    for (int i = 1; i < n_blocks; ++i) {
      const int s = i % kStages, prev = (i - 1) % kStages;
      mbar_wait(&k_full[s], (i / kStages) & 1);
      mbar_wait(&v_full[prev], ((i - 1) / kStages) & 1);
      begin_turn(i);
      issue_s(s);
      issue_pv(prev);
      end_turn(i);
      wgmma_wait<1>();  // S of block i is done; P V of block i - 1 may still run
      pin(s_acc);
      release(&k_empty[s]);
      softmax(n_hi - 1 - i, factor);
      wgmma_wait<0>();
      pin(o);
      pin(p);  // keeps P's registers allocated until its product has read them
      release(&v_empty[prev]);
      rescale_o(factor);
      to_p();
    }
    const int last = (n_blocks - 1) % kStages;
    mbar_wait(&v_full[last], ((n_blocks - 1) / kStages) & 1);
    begin_turn(n_blocks);
    issue_pv(last);
    end_turn(n_blocks);
    wgmma_wait<0>();
    pin(o);
    pin(p);
    release(&v_empty[last]);
  }

  // Epilogue: normalise, write O and the log-sum-exp.
  const int batch_heads = batch * a.heads + head;
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    float sum = row_sum[r];
    sum += __shfl_xor_sync(0xffffffff, sum, 1);
    sum += __shfl_xor_sync(0xffffffff, sum, 2);
    const bool empty_row = sum == 0.f || row_max[r] == -INFINITY;
    const float inv = empty_row ? 0.f : 1.f / sum;
    const int row = row0 + 8 * r;
    if (row < a.seqlen_q) {
      uint32_t* out_row = reinterpret_cast<uint32_t*>(
          static_cast<unsigned char*>(a.out) +
          ((static_cast<int64_t>(batch) * a.seqlen_q + row) * a.heads + head) * D * 2);
#pragma unroll
      for (int j = 0; j < D / 8; ++j)
        out_row[(8 * j + col_in_block) / 2] =
            pack<kBf16>(o[4 * j + 2 * r] * inv, o[4 * j + 2 * r + 1] * inv);
      if (lane % 4 == 0) {
        a.lse[static_cast<int64_t>(batch_heads) * a.seqlen_q + row] =
            empty_row ? INFINITY : row_max[r] * a.scale + logf(sum);
      }
    }
  }
}

template <bool kBf16, int D, int kBlockN, int kStages>
cudaError_t launch(const FwdParams& p, cudaStream_t stream) {
  CUtensorMap q_map, k_map, v_map;
  cudaError_t e;
  if ((e = make_map(&q_map, p.q, kBf16, p.batch, p.seqlen_q, p.heads, D, kBlockM)) != cudaSuccess ||
      (e = make_map(&k_map, p.k, kBf16, p.batch, p.seqlen_k, p.heads_k, D, kBlockN)) != cudaSuccess ||
      (e = make_map(&v_map, p.v, kBf16, p.batch, p.seqlen_k, p.heads_k, D, kBlockN)) != cudaSuccess)
    return e;
  Args a;
  set_problem(a, p);
  a.out = p.out;
  a.lse = p.lse;

  auto kernel = flash_fwd_kernel<kBf16, D, kBlockN, kStages>;
  constexpr int smem = Smem<D, kBlockN, kStages>::kBytes;
  if ((e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem)) !=
      cudaSuccess)
    return e;
  const dim3 grid((p.seqlen_q + kBlockM - 1) / kBlockM, p.heads, p.batch);
  kernel<<<grid, kThreads, smem, stream>>>(q_map, k_map, v_map, a);
  return cudaPeekAtLastError();
}

template <bool kBf16>
cudaError_t dispatch_dim(const FwdParams& p, cudaStream_t stream) {
  switch (p.head_dim) {
    // Stages: as many as fit in 227 KB. Measured on an H200 (docs/hopper-notes.md).
    case 64: return launch<kBf16, 64, 128, 4>(p, stream);
    case 128: return launch<kBf16, 128, 128, 3>(p, stream);
    case 256: return launch<kBf16, 256, 64, 2>(p, stream);
  }
  return cudaErrorNotSupported;
}

}  // namespace

bool fwd_supported(const Shape& s) {
  return (s.head_dim == 64 || s.head_dim == 128 || s.head_dim == 256) && s.softmax_scale > 0.f &&
         s.heads_k > 0 && s.heads % s.heads_k == 0;
}

cudaError_t run_fwd(const FwdParams& p, cudaStream_t stream) {
  if (!fwd_supported(p)) return cudaErrorNotSupported;
  return p.bf16 ? dispatch_dim<true>(p, stream) : dispatch_dim<false>(p, stream);
}

}  // namespace jfa_sm90
