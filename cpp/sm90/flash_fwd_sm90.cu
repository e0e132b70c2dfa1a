// Hopper-native attention forward (sm_90a), our own kernel.
//
// A CTA computes tiles of 128 query rows (192 in most d 64 calls) of
// one (batch, head) against every key block they can see; one CTA per SM
// walks the tiles (by a fixed stride, or for masked calls, whose tiles differ
// in work, from a queue). Unmasked calls cut the tiles of a last, partial
// round into pieces of their keys, whose partial results meet in caller
// scratch (plan_tiles). Warpgroups:
//   producer  (warps 0-3): one thread issues TMA loads of Q per tile and of K/V
//             blocks into a ring of shared-memory stages, completion counted
//             by transaction bytes on mbarriers; the warpgroup gives up most
//             of its registers (setmaxnreg) to the consumers.
//   consumers (warps 4-11, or 4-15): two or three warpgroups, each owning 64
//             query rows, run S = Q K^T with wgmma from shared memory, the
//             online softmax in registers, and O += P V with P from registers
//             (wgmma's register A operand has the accumulator's layout, so P
//             never touches shared memory), then send O out through shared
//             memory by TMA stores (d 256, and unmasked calls over 4k keys,
//             store it from registers; see launch()).
// As FlashAttention-3 describes, a consumer issues block i's S product
// together with block i-1's P V and runs block i's softmax while the latter
// is in flight, and the consumers take turns on the tensor cores, so that
// the others' softmaxes overlap one's products.

#include "flash_sm90.h"

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdint>

#include "sm90_common.cuh"

namespace jfa_sm90 {
namespace {

// A tile is 64 query rows per consumer warpgroup: two (128 rows), or three
// in most d 64 calls (consumers()), so that two softmaxes run while one
// warpgroup's products occupy the tensor cores (at d 64 the softmax takes
// longer than the products).
constexpr int block_m(int consumers) { return 64 * consumers; }
constexpr int threads(int consumers) { return 128 * (consumers + 1); }

constexpr int kMaxCtas = 256;  // of a masked call: one per SM

// Masked calls' tiles are unequal work, so CTAs claim them as they free up:
// `next` counts the claims after every CTA's first tile, `done` the CTAs
// that found none left, and the last of those resets both for the next
// call. ids: each CTA's producer hands its consumers tile ids in two slots,
// in global memory, which racecheck leaves alone: it reports a handoff
// through shared memory under mbarriers and under named barriers alike.
struct TileQueue {
  unsigned next, done;
  int ids[kMaxCtas][2];
};

// ---------------------------------------------------------------------------

struct Args {
  void* out;
  float* lse;
  int seqlen_q, seqlen_k, heads, group;  // group: query heads per key head
  float scale_log2;                      // softmax_scale * log2(e)
  float scale;
  int window_left, window_right;
  int m_blocks;  // query blocks per (batch, head)
  int batch_heads, group_bh;  // tiles run longest first within groups of group_bh (batch, head)
  TileQueue* queue;           // kQueue kernels (masked calls)
  // Unmasked calls: work items [0, whole) are tiles; the tiles after them
  // (fewer than the CTAs) are cut into `split` pieces of their key blocks,
  // items whole + split * (tile - whole) + piece, up to `items`. A piece's
  // consumer warpgroup leaves m, l and unnormalised O in `partial`; the last
  // of a tile's pieces to finish (counted in `arrivals`) folds in the others
  // and writes the tile.
  int whole, split, items;
  float4* partial;
  unsigned* arrivals;
};

template <int D, int kBlockN, int kStages, bool kWantStoreO, int kConsumers = 2>
struct Smem {
  static constexpr int kQBytes = block_m(kConsumers) * D * 2;
  static constexpr int kKVBytes = kBlockN * D * 2;
  static constexpr int kOOffset = kQBytes + 2 * kStages * kKVBytes;
  // O's stage (a tile, as Q's), if wanted and where it fits in the 227 KB
  // (with the barriers and the slack).
  static constexpr bool kStoreO = kWantStoreO && kOOffset + kQBytes <= 220 * 1024;
  static constexpr int kBarOffset = kOOffset + (kStoreO ? kQBytes : 0);
  // q_full, q_empty, then k_full, v_full, k_empty, v_empty per stage, then
  // tile_full and tile_empty per slot of the tile ids; then a flag per
  // consumer warpgroup (a piece's last arrival).
  static constexpr int kBytes = kBarOffset + 8 * (2 + 4 * kStages + 4) + 4 * kConsumers + 1024;  // + alignment slack
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

// Named barrier 1 + wg: consumer warpgroup wg's turn on the tensor cores,
// passed to it by the previous one (its 128 threads and the passer's).
__device__ __forceinline__ void turn_wait(int wg) { named_bar_sync<256>(1 + wg); }
// (For two, 2 - wg is the same barrier; the general form reschedules the
// two-consumer kernels' SASS, which was measured with this one.)
template <int kConsumers>
__device__ __forceinline__ void turn_pass(int wg) {
  named_bar_arrive<256>(kConsumers == 2 ? 2 - wg : wg == kConsumers - 1 ? 1 : wg + 2);
}

// Named barrier kConsumers + 1 + wg: consumer warpgroup wg's 128 threads
// around its O stage.
template <int kConsumers>
__device__ __forceinline__ void o_stage_sync(int wg) { named_bar_sync<128>(kConsumers + 1 + wg); }

// kQueue: CTAs claim tiles from a.queue, longest first in groups of
// a.group_bh (batch, head) pairs (masked calls); else CTA c takes tiles c,
// c + gridDim.x, ... (unmasked calls, whose tiles are equal work). Two
// kernels rather than one with a runtime switch: without the queue's code the
// unmasked one runs 2-6% faster (H200, docs/hopper-notes.md, v8).
// kStoreO: O leaves through shared memory, where its stage fits.
template <bool kBf16, int D, int kBlockN, int kStages, bool kQueue, bool kStoreO, int kConsumers>
__global__ void __launch_bounds__(threads(kConsumers), 1)
    flash_fwd_kernel(const __grid_constant__ CUtensorMap q_map, const __grid_constant__ CUtensorMap k_map,
               const __grid_constant__ CUtensorMap v_map, const __grid_constant__ CUtensorMap o_map,
               const Args a) {
  using L = Smem<D, kBlockN, kStages, kStoreO, kConsumers>;
  static_assert(kConsumers * kMaxCutTiles <= sizeof(Arrivals) / sizeof(unsigned),
                "a cut tile counts arrivals per consumer warpgroup");
  constexpr int kBlockM = block_m(kConsumers);
  constexpr int kConsumerWarps = 4 * kConsumers;
  constexpr int kBoxes = D / kBoxCols;
  constexpr int kSAcc = kBlockN / 2;  // S accumulator floats per thread (m64 x kBlockN)
  constexpr int kOAcc = D / 2;        // O accumulator floats per thread

  extern __shared__ __align__(1024) unsigned char smem_raw[];
  // Integer rounding, unlike the backward's align_1024(): this kernel makes
  // only TMA and wgmma addresses from the base, so no access turns generic,
  // and align_1024() measured no better here (docs/hopper-notes.md, b11).
  unsigned char* smem = reinterpret_cast<unsigned char*>(
      (reinterpret_cast<uintptr_t>(smem_raw) + 1023) & ~uintptr_t{1023});
  unsigned char* sQ = smem;
  unsigned char* sK = smem + L::kQBytes;
  unsigned char* sV = sK + kStages * L::kKVBytes;
  unsigned char* sO = smem + L::kOOffset;
  uint64_t* bars = reinterpret_cast<uint64_t*>(smem + L::kBarOffset);
  uint64_t* q_full = bars;
  uint64_t* q_empty = bars + 1;  // Q is free once every consumer's last S product is done
  uint64_t* k_full = bars + 2;
  uint64_t* v_full = bars + 2 + kStages;
  // K and V are released separately: a stage's K is free once every
  // consumer's S product is done, a block earlier than its V.
  uint64_t* k_empty = bars + 2 + 2 * kStages;
  uint64_t* v_empty = bars + 2 + 3 * kStages;
  // Masked calls: tile ids pass from the producer to the consumers through
  // two slots in global memory, as full and empty pairs of these.
  uint64_t* tile_full = bars + 2 + 4 * kStages;
  uint64_t* tile_empty = tile_full + 2;
  int* last_piece = reinterpret_cast<int*>(tile_empty + 2);
  const int warpgroup = warpgroup_index();

  // Tiles run in groups of group_bh (batch, head) pairs (whose keys fit in
  // L2); within a group, the query blocks that see most keys (the last, with
  // causal masks) come first, over all its pairs.
  struct Tile {
    int m0, head, batch, n_lo, n_blocks;
    int piece;  // of a cut tile (its key blocks' share), else -1
    int slot;   // of a cut tile: its first piece's item - whole
  };
  auto tile = [&](int t) {
    Tile x;
    x.piece = -1;
    if (!kQueue && t >= a.whole) {
      const int cut = (t - a.whole) / a.split;
      x.piece = t - a.whole - cut * a.split;
      x.slot = cut * a.split;
      t = a.whole + cut;
    }
    int bh, m;  // m: query blocks from the last
    if constexpr (kQueue) {
      const int per_group = a.group_bh * a.m_blocks;
      const int g = t / per_group, r = t - g * per_group;
      const int g_size = min(a.group_bh, a.batch_heads - g * a.group_bh);
      bh = g * a.group_bh + r % g_size;
      m = r / g_size;
    } else {
      bh = t / a.m_blocks;
      m = t - bh * a.m_blocks;
    }
    x.m0 = (a.m_blocks - 1 - m) * kBlockM;
    x.head = bh % a.heads;
    x.batch = bh / a.heads;
    int n_hi;
    key_range(a, x.m0, min(x.m0 + kBlockM, a.seqlen_q) - 1, kBlockN, &x.n_lo, &n_hi);
    x.n_blocks = max(0, n_hi - x.n_lo);
    if (x.piece >= 0) {
      const int lo = x.n_blocks * x.piece / a.split, hi = x.n_blocks * (x.piece + 1) / a.split;
      x.n_lo += lo;
      x.n_blocks = hi - lo;
    }
    return x;
  };

  if (threadIdx.x == 0) {
    mbar_init(q_full, 1);
    mbar_init(q_empty, kConsumerWarps);  // one arrival per consumer warp
    for (int s = 0; s < kStages; ++s) {
      mbar_init(&k_full[s], 1);
      mbar_init(&v_full[s], 1);
      mbar_init(&k_empty[s], kConsumerWarps);
      mbar_init(&v_empty[s], kConsumerWarps);
    }
    for (int s = 0; kQueue && s < 2; ++s) {
      mbar_init(&tile_full[s], 1);
      mbar_init(&tile_empty[s], kConsumerWarps);
    }
    asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
  }
  __syncthreads();

  if (warpgroup == 0) {
    // Producer. Stages and Q continue from tile to tile: block `it` (counted
    // over the CTA's tiles) uses stage it % kStages for the (it / kStages)-th time.
    asm volatile("setmaxnreg.dec.sync.aligned.u32 24;");
    if (threadIdx.x == 0) {
      prefetch_map(&q_map);
      prefetch_map(&k_map);
      prefetch_map(&v_map);
      int it = 0, q_uses = 0;
      auto load_block = [&](const Tile& x, int i) {
        const int s = it % kStages, use = it / kStages;
        const int n0 = (x.n_lo + x.n_blocks - 1 - i) * kBlockN;
        const int head_k = x.head / a.group;
        unsigned char* k_dst = sK + s * L::kKVBytes;
        unsigned char* v_dst = sV + s * L::kKVBytes;
        if (use > 0) mbar_wait(&k_empty[s], (use - 1) & 1);
        mbar_expect_tx(&k_full[s], L::kKVBytes);
        for (int c = 0; c < kBoxes; ++c)
          tma_load(k_dst + c * kBlockN * kBoxRowBytes, &k_map, &k_full[s], c * kBoxCols, head_k, n0, x.batch);
        if (use > 0) mbar_wait(&v_empty[s], (use - 1) & 1);
        mbar_expect_tx(&v_full[s], L::kKVBytes);
        for (int c = 0; c < kBoxes; ++c)
          tma_load(v_dst + c * kBlockN * kBoxRowBytes, &v_map, &v_full[s], c * kBoxCols, head_k, n0, x.batch);
        ++it;
      };
      // The consumers' k-th tile id, through global memory (the mbarrier's
      // release orders the store before the arrival).
      auto publish = [&](int k, int t) {
        if (k >= 2) mbar_wait(&tile_empty[k & 1], ((k >> 1) - 1) & 1);
        a.queue->ids[blockIdx.x][k & 1] = t;
        mbar_arrive(&tile_full[k & 1]);
      };
      if (kQueue) publish(0, blockIdx.x);
      for (int t = blockIdx.x, k = 0; t < a.items; ++k) {
        const Tile x = tile(t);
        if (x.n_blocks > 0) {
          if (q_uses > 0) mbar_wait(q_empty, (q_uses - 1) & 1);
          ++q_uses;
          mbar_expect_tx(q_full, L::kQBytes);
          for (int c = 0; c < kBoxes; ++c)
            tma_load(sQ + c * kBlockM * kBoxRowBytes, &q_map, q_full, c * kBoxCols, x.head, x.m0, x.batch);
        }
        // Claimed now and published after the first block's loads, which
        // hide the atomic's latency; an id past the end stops the consumers.
        // A tile may have no key block: the consumers write its rows alone.
        const int next = kQueue ? gridDim.x + atomicAdd(&a.queue->next, 1u) : t + gridDim.x;
        if (x.n_blocks > 0) load_block(x, 0);
        if (kQueue) publish(k + 1, next);
        for (int i = 1; i < x.n_blocks; ++i) load_block(x, i);
        t = next;
      }
      if (kQueue) {
        // Every CTA has made its last claim before it counts itself done.
        __threadfence();
        if (atomicAdd(&a.queue->done, 1u) == gridDim.x - 1) {
          a.queue->next = 0;
          a.queue->done = 0;
        }
      }
    }
    return;
  }

  // Consumers: 240 registers each where two, 160 where three (of 64K, with
  // the producer's 24).
  if constexpr (kConsumers == 2)
    asm volatile("setmaxnreg.inc.sync.aligned.u32 240;");
  else
    asm volatile("setmaxnreg.inc.sync.aligned.u32 160;");
  const int wg = warpgroup - 1;                 // rows 64 wg .. 64 wg + 63 of the tile
  const int lane = threadIdx.x % 32;
  const int warp = (threadIdx.x / 32) % 4;      // warp within the warpgroup
  const int col_in_block = 2 * (lane % 4);      // + 8 j, + {0, 1}
  const int offset = a.seqlen_k - a.seqlen_q;
  // Per tile: rows row0 and row0 + 8 of this thread, wg_row_lo .. wg_row_hi of the warpgroup.
  int row0 = 0, wg_row_lo = 0, wg_row_hi = 0;

  float o[kOAcc];
  float s_acc[kSAcc];
  uint32_t p[kSAcc / 2];
  float row_max[2], row_sum[2];

  const unsigned char* q_tile = sQ + wg * 64 * kBoxRowBytes;

  auto issue_s = [&](int stage) {
    const uint64_t da = desc(q_tile, 16, 1024), db = desc(sK + stage * L::kKVBytes, 16, 1024);
    pin(s_acc);
    wgmma_fence();
    mma_ss_k_major<typename Gmma<kBf16, kBlockN, kK, kK>::SS, D / 16>(da, kBlockM * kBoxRowBytes, db,
                                                                     kBlockN * kBoxRowBytes, s_acc);
    wgmma_commit();
  };

  auto issue_pv = [&](int stage) {
    const uint64_t db = desc(sV + stage * L::kKVBytes, kBlockN * kBoxRowBytes, 1024);
    pin(o);
    pin(p);
    wgmma_fence();
    mma_rs_mn_major<typename Gmma<kBf16, D, kK, kMN>::RS, kBlockN / 16>(p, db, o);
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

  // O's rows leave through shared memory: stmatrix writes 16-byte pieces of
  // rows into the 128-byte swizzle of 64-row boxes, and one thread per
  // warpgroup sends the boxes by TMA (H200, d 128: +13% at seqlen 512, +6%
  // at 1k, against 16-byte stores from registers; docs/hopper-notes.md,
  // fost). It waits for the last tile's boxes to be read before the writes.
  auto store_o_smem = [&](const Tile& x, const float (&inv)[2]) {
    unsigned char* o_tile = sO + wg * 64 * D * 2;
    const bool leader = warp == 0 && lane == 0;
    if (leader) bulk_wait_read();
    o_stage_sync<kConsumers>(wg);
    stage_swizzled_boxes<kBf16, D>(o_tile, o, inv, warp, lane);
    asm volatile("fence.proxy.async.shared::cta;" ::: "memory");
    o_stage_sync<kConsumers>(wg);
    if (leader) {
#pragma unroll
      for (int c = 0; c < D / kBoxCols; ++c)
        tma_store(&o_map, o_tile + c * 64 * kBoxRowBytes, c * kBoxCols, x.head, x.m0 + wg * 64, x.batch);
      bulk_commit();
    }
  };

  // Without O's stage (d 256, and long unmasked calls): a quad (lanes
  // 4q .. 4q + 3) holds a row's 8-column groups as one word each; swapping
  // words across the quad gives lane c groups 4t + c whole, for 16-byte
  // stores (every lane takes part in the shuffles, valid row or not).
  auto store_o_direct = [&](const Tile& x, const float (&inv)[2]) {
    const int c = lane % 4;
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const int row = row0 + 8 * r;
      uint4* out_row = reinterpret_cast<uint4*>(
          static_cast<unsigned char*>(a.out) +
          ((static_cast<int64_t>(x.batch) * a.seqlen_q + row) * a.heads + x.head) * D * 2);
#pragma unroll
      for (int t = 0; t < D / 32; ++t) {
        uint32_t w[4], mine[4];
#pragma unroll
        for (int k = 0; k < 4; ++k)
          w[k] = pack<kBf16>(o[4 * (4 * t + k) + 2 * r] * inv[r], o[4 * (4 * t + k) + 2 * r + 1] * inv[r]);
#pragma unroll
        for (int swap = 0; swap < 4; ++swap) {
          // To lane c ^ swap its group's word; from it, word c ^ swap of group 4t + c.
          const int k = c ^ swap;
          const uint32_t send = k == 0 ? w[0] : k == 1 ? w[1] : k == 2 ? w[2] : w[3];
          const uint32_t got = swap == 0 ? send : __shfl_xor_sync(0xffffffff, send, swap);
#pragma unroll
          for (int m = 0; m < 4; ++m)
            if (m == k) mine[m] = got;
        }
        if (row < a.seqlen_q) out_row[4 * t + c] = make_uint4(mine[0], mine[1], mine[2], mine[3]);
      }
    }
  };

  // Normalise, write O and the log-sum-exp of the tile's rows.
  auto epilogue = [&](const Tile& x) {
    float inv[2];
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      float sum = row_sum[r];
      sum += __shfl_xor_sync(0xffffffff, sum, 1);
      sum += __shfl_xor_sync(0xffffffff, sum, 2);
      const bool empty_row = sum == 0.f || row_max[r] == -INFINITY;
      inv[r] = empty_row ? 0.f : 1.f / sum;
      const int row = row0 + 8 * r;
      if (row < a.seqlen_q && lane % 4 == 0)
        a.lse[static_cast<int64_t>(x.batch * a.heads + x.head) * a.seqlen_q + row] =
            empty_row ? INFINITY : row_max[r] * a.scale + logf(sum);
    }
    if constexpr (L::kStoreO)
      store_o_smem(x, inv);
    else
      store_o_direct(x, inv);
  };

  // A piece of a cut tile: this warpgroup's m, l and unnormalised O go to
  // its slot (each thread's registers as they are, so a slot is read back by
  // the same thread of another CTA); the last piece to arrive folds all the
  // slots in piece order, so the result does not depend on which was last.
  // Returns whether this was it.
  auto fold_pieces = [&](const Tile& x) {
    const int tid = threadIdx.x % 128;
    constexpr int kSlot = (kOAcc / 4 + 1) * 128;  // float4s per warpgroup and piece
    auto slot = [&](int piece) { return a.partial + (int64_t(x.slot + piece) * kConsumers + wg) * kSlot; };
    float4* mine = slot(x.piece);
#pragma unroll
    for (int i = 0; i < kOAcc / 4; ++i)
      __stcg(&mine[i * 128 + tid], make_float4(o[4 * i], o[4 * i + 1], o[4 * i + 2], o[4 * i + 3]));
    __stcg(&mine[kOAcc / 4 * 128 + tid], make_float4(row_max[0], row_max[1], row_sum[0], row_sum[1]));
    __threadfence();
    o_stage_sync<kConsumers>(wg);
    unsigned* count = &a.arrivals[(x.slot / a.split) * kConsumers + wg];
    if (tid == 0) {
      const bool last = atomicAdd(count, 1u) == unsigned(a.split - 1);
      if (last) *count = 0;  // for the next call that takes these counters
      last_piece[wg] = last;
    }
    o_stage_sync<kConsumers>(wg);
    if (!last_piece[wg]) return false;
    __threadfence();
    for (int j = 0; j < a.split; ++j) {
      const float4* piece = slot(j);
      const float4 ml = __ldcg(&piece[kOAcc / 4 * 128 + tid]);
      const float m_j[2] = {ml.x, ml.y}, l_j[2] = {ml.z, ml.w};
      float f_acc[2] = {0.f, 0.f}, f_j[2] = {1.f, 1.f};
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        const float m = j == 0 ? m_j[r] : fmaxf(row_max[r], m_j[r]);
        const float m_scaled = m == -INFINITY ? 0.f : m * a.scale_log2;
        if (j > 0) {
          f_acc[r] = exp2f(row_max[r] * a.scale_log2 - m_scaled);
          f_j[r] = exp2f(m_j[r] * a.scale_log2 - m_scaled);
        }
        row_max[r] = m;
        row_sum[r] = row_sum[r] * f_acc[r] + l_j[r] * f_j[r];
      }
#pragma unroll
      for (int i = 0; i < kOAcc / 4; ++i) {
        const float4 v = __ldcg(&piece[i * 128 + tid]);
        o[4 * i + 0] = o[4 * i + 0] * f_acc[0] + v.x * f_j[0];
        o[4 * i + 1] = o[4 * i + 1] * f_acc[0] + v.y * f_j[0];
        o[4 * i + 2] = o[4 * i + 2] * f_acc[1] + v.z * f_j[1];
        o[4 * i + 3] = o[4 * i + 3] * f_acc[1] + v.w * f_j[1];
      }
    }
    return true;
  };

  // The consumers take turns issuing their products (slot t of warpgroup 0,
  // then slot t of warpgroup 1, ..., then slot t + 1 of warpgroup 0), so that
  // the others' softmaxes run while one's products occupy the tensor cores.
  // A tile of n blocks has n + 1 slots: slot 0 is block 0's S; slot i is
  // block i's S with block i - 1's P V; slot n is the last P V. The turns run
  // on across the CTA's tiles, so that no consumer can pass twice before the
  // next has waited; warpgroup 0 takes the last one's last pass after the
  // last tile.
  bool first_slot = true;  // of the CTA
  auto begin_turn = [&] {
    if (!(wg == 0 && first_slot)) turn_wait(wg);
    first_slot = false;
  };
  auto end_turn = [&] { turn_pass<kConsumers>(wg); };
  // Stage of block `it` counted over the CTA's tiles, as the producer counts.
  auto stage = [](int it) { return it % kStages; };
  auto phase = [](int it) { return (it / kStages) & 1; };

  // With a queue, tile k's id comes from the producer; the loop reads tile
  // k + 1's during tile k, before the epilogue, whose stores hide the read.
  // Broadcast from lane 0, so that the compiler knows that the warp agrees on
  // it (else it reconverges around every wgmma: -8%).
  auto fetch = [&](int k) {
    mbar_wait(&tile_full[k & 1], (k >> 1) & 1);
    return *static_cast<volatile int*>(&a.queue->ids[blockIdx.x][k & 1]);
  };
  int t = blockIdx.x;
  if (kQueue) {
    t = __shfl_sync(0xffffffffu, fetch(0), 0);
    release(&tile_empty[0]);
  }
  int it = 0, q_uses = 0;
  for (int k = 0; t < a.items; ++k) {
    const Tile x = tile(t);
    row0 = x.m0 + wg * 64 + warp * 16 + lane / 4;
    wg_row_lo = x.m0 + wg * 64;
    wg_row_hi = wg_row_lo + 63;
#pragma unroll
    for (int i = 0; i < kOAcc; ++i) o[i] = 0.f;
    row_max[0] = row_max[1] = -INFINITY;
    row_sum[0] = row_sum[1] = 0.f;

    const int n = x.n_blocks;
    if (n > 0) {
      const int n_top = x.n_lo + n - 1;  // blocks run from the last key block down
      mbar_wait(q_full, q_uses & 1);
      ++q_uses;
      mbar_wait(&k_full[stage(it)], phase(it));
      begin_turn();
      issue_s(stage(it));
      end_turn();
      wgmma_wait<0>();
      pin(s_acc);
      release(&k_empty[stage(it)]);
      if (n == 1) release(q_empty);
      float factor[2];
      softmax(n_top, factor);
      to_p();
      for (int i = 1; i < n; ++i) {
        const int s = stage(it + i), prev = stage(it + i - 1);
        mbar_wait(&k_full[s], phase(it + i));
        mbar_wait(&v_full[prev], phase(it + i - 1));
        begin_turn();
        issue_s(s);
        issue_pv(prev);
        end_turn();
        wgmma_wait<1>();  // S of block i is done; P V of block i - 1 may still run
        pin(s_acc);
        release(&k_empty[s]);
        if (i == n - 1) release(q_empty);
        softmax(n_top - i, factor);
        wgmma_wait<0>();
        pin(o);
        pin(p);  // keeps P's registers allocated until its product has read them
        release(&v_empty[prev]);
        rescale_o(factor);
        to_p();
      }
      const int last = stage(it + n - 1);
      mbar_wait(&v_full[last], phase(it + n - 1));
      begin_turn();
      issue_pv(last);
      end_turn();
      wgmma_wait<0>();
      pin(o);
      pin(p);
      release(&v_empty[last]);
      it += n;
    }
    const int next = kQueue ? fetch(k + 1) : t + gridDim.x;
    if (x.piece < 0 || fold_pieces(x)) epilogue(x);
    if (kQueue) release(&tile_empty[(k + 1) & 1]);
    t = __shfl_sync(0xffffffffu, next, 0);
  }
  if (wg == 0 && !first_slot) turn_wait(0);
  // O's last boxes must be read before the CTA's shared memory goes.
  if (L::kStoreO && warp == 0 && lane == 0) bulk_wait_read();
}

// The masked calls' tile queues, taken in turn as the arrival counters are.
__device__ TileQueue g_tile_queues[kQueues];

// Query tiles of a call: batch * heads * query blocks.
int64_t tile_count(const Shape& s, int block_m) {
  return (int64_t(s.seqlen_q) + block_m - 1) / block_m * s.heads * s.batch;
}

// How an unmasked call's tiles go to `sms` persistent CTAs: the last round's
// tiles cut into pieces of their key blocks (cut_last_round), pieces of at
// least 1024 keys: shorter ones lost time (H100, d 128, 16 heads: 2k keys in
// thirds -1%, 4k +0.7%, 16k +1.4%; 64 tiles of 4096 keys in halves 1.49x;
// docs/hopper-notes.md, eighth session).
Cut plan_tiles(int tiles, int sms, const Shape& s) {
  if (has_mask(s)) return uncut(tiles);
  return cut_last_round(tiles, sms, std::clamp(s.seqlen_k / 1024, 1, kMaxSplit));
}

int64_t fwd_cut_bytes(const Cut& c, int head_dim, int consumers) {
  if (c.split == 1) return 0;
  // Per piece and consumer warpgroup: each thread's O accumulators and its
  // rows' m and l, as float4s.
  return int64_t(c.items - c.whole) * consumers * (head_dim / 8 + 1) * 128 * 16;
}

// Consumer warpgroups of the kernel dispatch_dim picks for a call: three for
// d 64 calls of 512 queries or more, 2048 if masked (H100, against two:
// unmasked 5-8% faster at 512-1k, 12-17% from 2k; causal 6-8% slower at
// 512-1k, 6-11% faster from 2k; docs/hopper-notes.md, fifteenth session).
// Shorter calls would waste more of the 192-row tiles.
int consumers(const Shape& s) {
  return s.head_dim == 64 && s.seqlen_q >= (has_mask(s) ? 2048 : 512) ? 3 : 2;
}

// kMaskable = false leaves out the masked kernel for tiles that dispatch_dim
// only picks for unmasked calls (one kernel less to compile and ship).
template <bool kBf16, int D, int kBlockN, int kStages, bool kMaskable = true, int kConsumers = 2>
cudaError_t launch(const FwdParams& p, cudaStream_t stream) {
  constexpr int kBlockM = block_m(kConsumers);
  if (!kMaskable && has_mask(p)) return cudaErrorNotSupported;
  CUtensorMap q_map, k_map, v_map;
  CUtensorMap o_map{};  // read only by kernels that stage O
  cudaError_t e;
  if ((e = make_map(&q_map, p.q, kBf16, p.batch, p.seqlen_q, p.heads, D, kBlockM)) != cudaSuccess ||
      (e = make_map(&k_map, p.k, kBf16, p.batch, p.seqlen_k, p.heads_k, D, kBlockN)) != cudaSuccess ||
      (e = make_map(&v_map, p.v, kBf16, p.batch, p.seqlen_k, p.heads_k, D, kBlockN)) != cudaSuccess)
    return e;
  Args a;
  set_problem(a, p);
  a.out = p.out;
  a.lse = p.lse;

  a.m_blocks = (p.seqlen_q + kBlockM - 1) / kBlockM;
  const int64_t tiles = tile_count(p, kBlockM);
  if (tiles > INT32_MAX) return cudaErrorInvalidValue;
  // One CTA per SM walks the tiles, loading a tile's Q and first key blocks
  // while the last one finishes (H200, d 128, unmasked: +11% at seqlen 512,
  // +5% at 1k). Unmasked tiles are equal work and go round by a fixed
  // stride. Masked ones take longest first from a queue, in groups of heads
  // whose K and V fit in 32 MB of L2 (H200, causal, against one CTA per
  // tile: +18% at 512, +16% at 1k, +8% at 4k, -3% at 16k).
  a.batch_heads = p.batch * p.heads;
  a.group_bh = 1;
  a.queue = nullptr;
  int sms = 0;
  if ((e = sm_count(&sms)) != cudaSuccess) return e;
  Cut cut = plan_tiles(static_cast<int>(tiles), sms, p);
  if ((e = set_cut(a, cut, fwd_cut_bytes(cut, D, kConsumers), p)) != cudaSuccess) return e;
  a.items = cut.items;
  int grid = std::min(cut.items, sms);
  if (grid == 0) return cudaSuccess;
  const bool masked = has_mask(p);
  if (masked) {
    const int64_t kv_bytes = int64_t(p.seqlen_k) * D * 2 * 2 / a.group;  // a query head's share
    a.group_bh = static_cast<int>(std::clamp<int64_t>((int64_t{32} << 20) / std::max<int64_t>(kv_bytes, 1), 1,
                                                      a.batch_heads));
    grid = std::min(grid, kMaxCtas);
    if ((e = next_entry(g_tile_queues, &a.queue)) != cudaSuccess) return e;
  }
  // O through shared memory, except for unmasked calls over more than 4k
  // keys: from 8k up the same kernel with 16-byte stores from registers ran
  // 1-6% faster (H200, interleaved; masked calls and shorter ones gain up to
  // 15% from the stage; docs/hopper-notes.md, v10).
  using Staged = Smem<D, kBlockN, kStages, true, kConsumers>;
  using Direct = Smem<D, kBlockN, kStages, false, kConsumers>;
  constexpr bool kStage = Staged::kStoreO;
  const bool stage_o = kStage && (masked || p.seqlen_k <= 4096);
  if (stage_o && (e = make_map(&o_map, p.out, kBf16, p.batch, p.seqlen_q, p.heads, D, 64)) != cudaSuccess)
    return e;
  auto kernel = stage_o ? flash_fwd_kernel<kBf16, D, kBlockN, kStages, false, kStage, kConsumers>
                        : flash_fwd_kernel<kBf16, D, kBlockN, kStages, false, false, kConsumers>;
  if constexpr (kMaskable)
    if (masked) kernel = flash_fwd_kernel<kBf16, D, kBlockN, kStages, true, kStage, kConsumers>;
  const int smem = stage_o ? Staged::kBytes : Direct::kBytes;
  if ((e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem)) !=
      cudaSuccess)
    return e;
  kernel<<<grid, threads(kConsumers), smem, stream>>>(q_map, k_map, v_map, o_map, a);
  return cudaPeekAtLastError();
}

template <bool kBf16>
cudaError_t dispatch_dim(const FwdParams& p, cudaStream_t stream) {
  switch (p.head_dim) {
    // Tiles and stages measured on an H200 (docs/hopper-notes.md). At d 128 a
    // third stage fits but gains nothing unmasked and costs masked calls 2-5%
    // (f2st). At d 64, 192-key blocks (f64n192) gain 2-3% unmasked and 3-8%
    // causal from 4k keys up but lose 8-15% at 512-1k. At d 256, 80-key
    // blocks (f256n80) gain 6-15% unmasked from 1k (even at 512) and 3-5%
    // causal from 4k keys, but lose 2-18% causal below (their masked kernel
    // spills 60 bytes). At d 128, 176-key blocks (f128mix, no O stage: it no
    // longer fits) gain 2-3% unmasked over 4k keys and lose below. Most d 64
    // calls take three consumer warpgroups (consumers()) with 128-key
    // blocks (H100: 112 and 96 keys ran 1-10% and 5-16% slower; without the
    // turns, 3-9%).
    case 64:
      if (consumers(p) == 3) return launch<kBf16, 64, 128, 4, true, 3>(p, stream);
      return p.seqlen_k >= 4096 ? launch<kBf16, 64, 192, 3>(p, stream)
                                : launch<kBf16, 64, 128, 4>(p, stream);
    case 128:
      return !has_mask(p) && p.seqlen_k > 4096 ? launch<kBf16, 128, 176, 2, false>(p, stream)
                                               : launch<kBf16, 128, 128, 2>(p, stream);
    case 256: {
      // Masked calls keep 64-key blocks unless their rows see many keys: no
      // left bound (causal) and 4096 keys or more.
      const bool masked = has_mask(p);
      const bool many_keys = p.window_left < 0 && p.seqlen_k >= 4096;
      return masked && !many_keys ? launch<kBf16, 256, 64, 2>(p, stream)
                                  : launch<kBf16, 256, 80, 2>(p, stream);
    }
  }
  return cudaErrorNotSupported;
}

}  // namespace

bool fwd_supported(const Shape& s) { return shape_covered(s); }

int64_t fwd_workspace_bytes(const Shape& s) {
  int sms = 0;
  if (!fwd_supported(s) || sm_count(&sms) != cudaSuccess) return 0;
  const int n = consumers(s);
  const int64_t tiles = tile_count(s, block_m(n));
  if (tiles > INT32_MAX) return 0;
  return fwd_cut_bytes(plan_tiles(static_cast<int>(tiles), sms, s), s.head_dim, n);
}

cudaError_t run_fwd(const FwdParams& p, cudaStream_t stream) {
  if (!fwd_supported(p)) return cudaErrorNotSupported;
  return p.bf16 ? dispatch_dim<true>(p, stream) : dispatch_dim<false>(p, stream);
}

}  // namespace jfa_sm90
