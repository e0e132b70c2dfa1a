// Hopper-native attention backward (sm_90a), our own kernel.
//
// One CTA owns 128 keys of one (batch, head) and walks the query blocks (BM
// rows each: 80 without a mask, 64 with one) that can see them, accumulating
// dK and dV in registers and adding its share of dQ into a float32 buffer.
// (Head dim 256: 64 keys and 48-row blocks, see kSplitDims below.)
// Three warpgroups:
//   producer  (warps 0-3): one thread loads K and V once, then Q and dO
//             blocks into a ring of stages (TMA, mbarriers); warp 1 adds
//             the consumers' staged dQ tiles to the buffer (bulk reduce-add).
//   consumers (warps 4-11): two warpgroups, each owning 64 of the keys. Per
//             query block, with wgmma:
//               S^T = K Q^T and dP^T = V dO^T         (both from shared memory)
//               P^T = exp(scale S^T - lse), dS^T = P^T (dP^T - D)  (registers)
//               dV += P^T dO, dK += dS^T Q             (P^T, dS^T from registers)
//               dQ^T = K^T dS^T                        (dS^T through shared memory)
//             Working with transposes keeps P^T and dS^T in the accumulator
//             layout that wgmma's register operand takes, and lets BM be 80
//             (wgmma's M is 64). The two consumers exchange dS^T through
//             shared memory, so each computes dQ^T for half of the head dim
//             over all 128 keys, and stages it in shared memory for the
//             producer's dQ warp (at head dim 64: all dims over its own
//             64 keys instead). dK's product is issued after dQ^T's, so
//             that it runs while dQ^T is staged.
//             At head dim 256, dK and dV of 64 keys would take 256
//             accumulators per thread, more than a consumer has, so both
//             consumers take the same 64 keys and each accumulates dK and
//             dV for half of the head dim. Each computes S^T and dP^T over
//             all dims itself (twice the work of those two products, but no
//             exchange) and dQ^T for its own half of the dims.
// Small kernels around it compute D = rowsum(dO * O) (clearing the dQ buffer
// on the way) and convert dQ, the conversion on the SMs the backward's last
// round leaves idle (kConvertOverlaps). Unmasked calls cut the key blocks of
// a last, partial round into pieces of their query blocks, whose dK and dV
// meet in caller scratch (launch_bwd). At head dim 128, unmasked calls of
// 1024 queries or more run their whole key blocks persistently (kPersist).

#include "flash_sm90.h"

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdint>

#include "sm90_common.cuh"

namespace jfa_sm90 {
namespace {

// Keys per CTA: 128, but 64 at head dim 256 (the consumers split the dims).
template <int D>
constexpr int kBwdBlockN = D == 256 ? 64 : 128;
constexpr int kBwdThreads = 384;
// Query rows per step: 80 for calls without a mask, 64 for masked ones, whose
// diagonal blocks would waste more of an 80-row step (docs/hopper-notes.md, b10).
// At head dim 256, 48 for both: two stages of 64-row Q and dO blocks (128 KB)
// with K and V (64 KB) and the dS^T and dQ stages exceed shared memory.
constexpr int kBwdBlockMFull = 80;
constexpr int kBwdBlockMMasked = 64;
constexpr int kBwdBlockM256 = 48;
// dS^T is stored in columns of 16 queries: the CTA's key rows, 32 bytes each.
template <int D>
constexpr int kDsAtomBytes = kBwdBlockN<D> * 32;
// dQ^T tiles of 64 head dims a consumer computes per query block.
template <int D>
constexpr int kDqTiles = D == 256 ? 2 : 1;
// Where a query block's row statistics come from. At D = 128 without a mask
// the producer copies them into the block's stage with its Q (lse) and dO (D)
// (H200: +1-3% at 512-16k, and fewer spills); elsewhere the consumers load
// them from L2 two blocks ahead, which the masked kernel measured 1.5-3%
// faster at 2k-8k (docs/hopper-notes.md, eleventh session). The copies go
// through a tensor map: racecheck follows a tensor copy's mbarrier but not a
// flat bulk copy's, which it reported against the consumers' reads (twelfth
// session; the two time alike).
template <int D, int BM>
constexpr bool kStatsInStage = D == 128 && BM == kBwdBlockMFull;

// dq_convert_kernel is launched as a programmatic dependent of the backward
// and converts each (batch, head) once its key blocks have counted their dQ
// in (BwdArgs::dq_done). H100, standalone, D = 128: 0.7-3% faster at 512-4k
// tokens unmasked, 1-5% causal, within the spread from 8k (D = 256 alike).
// At D = 64 it measured 1-2% slower at 512-1k and 1% faster at 2k-8k, so
// there the conversion still follows the backward (docs/hopper-notes.md,
// thirteenth session).
constexpr bool convert_overlaps(int head_dim) { return head_dim != 64; }
template <int D>
constexpr bool kConvertOverlaps = convert_overlaps(D);

struct BwdArgs {
  // Per (batch, head), stats_rows rows each: lse * log2(e) (+inf past
  // seqlen_q, so that P = 0 there), then D = rowsum(dO * O) (0 past seqlen_q).
  const float* row_stats;
  float* dq_accum;  // dQ^T in query blocks, see dq_convert_kernel
  void* dk;
  void* dv;
  int64_t stats_stride;  // floats from the lse block to the D block
  int stats_rows;
  int seqlen_q, seqlen_k, heads, group;
  float scale, scale_log2;
  int window_left, window_right;
  // CTAs [0, whole) take a key block of one (batch, head) each, n_blocks per
  // pair; the key blocks after them (fewer than the SMs) are cut into `split`
  // pieces of their query blocks, CTAs whole + split * (block - whole) +
  // piece. A piece leaves its float32 dK and dV in `partial`; the last of a
  // block's pieces to finish (counted in `arrivals`) adds them up and writes
  // the block's dK and dV. A call of more whole rounds than kMaxWholeRoundsCut
  // runs them in the uncut kernel, whose CTAs from `whole` on return at once,
  // and its pieces in a second launch of the cut kernel, numbered from
  // cta_base = whole (else 0).
  int n_blocks, whole, split, cta_base;
  float4* partial;
  unsigned* arrivals;
  // Per (batch, head): the shares of its key blocks whose dQ is complete in
  // dq_accum (a whole block adds split, a piece 1), for dq_convert_kernel.
  unsigned* dq_done;
};

template <int D, int kStages, int BM>
struct BwdSmem {
  static constexpr int kKVBytes = kBwdBlockN<D> * D * 2;
  static constexpr int kQBytes = BM * D * 2;
  // Two dS^T buffers: alternate blocks' at D = 64 and 128, each consumer's own at 256.
  static constexpr int kDsBytes = kBwdBlockN<D> * BM * 2;
  static constexpr int kDqStageBytes = kDqTiles<D> * BM * 64 * 4;  // a warpgroup's float32 dQ^T tiles
  static constexpr int kK = 0;
  static constexpr int kV = kK + kKVBytes;
  static constexpr int kQ = kV + kKVBytes;
  static constexpr int kDO = kQ + kStages * kQBytes;
  static constexpr int kDs = kDO + kStages * kQBytes;
  static constexpr int kDq = kDs + 2 * kDsBytes;
  // Query blocks' statistics (BM lse, then BM D, kStatRow floats apart): one
  // set per stage where they come with Q and dO (each row 128-byte aligned for
  // its tensor copy), else three buffers, and except at D = 128 one set per
  // consumer (see flash_bwd_kernel).
  static constexpr int kStatRow = kStatsInStage<D, BM> ? (BM + 31) / 32 * 32 : BM;
  static constexpr int kStatBytes = 2 * kStatRow * 4;
  static constexpr int kStats = kDq + 2 * kDqStageBytes;
  static_assert(kStats % 128 == 0, "tensor copies' alignment");
  static constexpr int kBars = kStats + (kStatsInStage<D, BM> ? kStages : (D == 128 ? 1 : 2) * 3) * kStatBytes;
  // kv_full, then q_full, do_full, q_empty per stage, then kv_empty.
  static constexpr int kBytes = kBars + 8 * (2 + 3 * kStages) + 1024;  // + alignment slack
  static_assert(kBytes <= 227 * 1024, "shared memory");
  // One CTA per SM, which the last round's cut counts on (cut_last_round).
  static_assert(2 * kBytes > 228 * 1024, "one CTA per SM");
};

// Where query block m's dQ^T tile of head dims [64 half, 64 half + 64)
// starts in BwdArgs::dq_accum.
template <int D, int BM>
__device__ __forceinline__ int64_t dq_tile_offset(int64_t bh, int m_blocks, int m, int half) {
  return ((bh * m_blocks + m) * (D / 64) + half) * (BM * 64);
}

// Named barriers of both consumers (256 threads): 3 for the dS exchange, 6
// for the S/dP turn (D = 128 only).
__device__ __forceinline__ void consumers_sync() { named_bar_sync<256>(3); }
__device__ __forceinline__ void s_dp_turn_wait() { named_bar_sync<256>(6); }
__device__ __forceinline__ void s_dp_turn_pass() { named_bar_arrive<256>(6); }
// One consumer's own (128 threads; at D = 64 and 256, where they exchange nothing): 11 + wg.
__device__ __forceinline__ void consumer_sync(int wg) { named_bar_sync<128>(11 + wg); }

// A consumer's dQ stage is handed to the producer's dQ warp and back through
// named barriers of 160 threads (the warpgroup and that warp): "full" 7 + wg,
// "empty" 9 + wg.
constexpr int kDqHandoffThreads = 128 + 32;
__device__ __forceinline__ void dq_stage_wait_empty(int wg) { named_bar_sync<kDqHandoffThreads>(9 + wg); }
__device__ __forceinline__ void dq_stage_mark_full(int wg) { named_bar_arrive<kDqHandoffThreads>(7 + wg); }
__device__ __forceinline__ void dq_stage_wait_full(int wg) { named_bar_sync<kDqHandoffThreads>(7 + wg); }
__device__ __forceinline__ void dq_stage_mark_empty(int wg) { named_bar_arrive<kDqHandoffThreads>(9 + wg); }

// dst[0 .. bytes) += src[0 .. bytes) as float32, asynchronously.
__device__ __forceinline__ void bulk_reduce_add(float* dst, const float* src, int bytes) {
  asm volatile("cp.reduce.async.bulk.global.shared::cta.bulk_group.add.f32 [%0], [%1], %2;" ::"l"(dst),
               "r"(smem_addr(src)), "r"(bytes)
               : "memory");
  bulk_commit();
}
// The key block a CTA works on, and for a piece of a cut one, which piece
// (else -1) and the cut block's index among them. The uncut kernel's grid is
// (key block, head, batch); the cut one's is 1-D, and its %ctaid.x is read by
// volatile asm so that each call decodes it afresh: kept in registers from
// the start to the end, the decoded values spilled inside the loop.
struct BlockPos {
  int n_block, head, batch, piece, cut;
};
template <bool kCut>
__device__ __forceinline__ BlockPos block_pos(const BwdArgs& a) {
  BlockPos p;
  if constexpr (!kCut) {
    p.n_block = blockIdx.x, p.head = blockIdx.y, p.batch = blockIdx.z, p.piece = -1, p.cut = 0;
    return p;
  }
  int cta;
  asm volatile("mov.u32 %0, %%ctaid.x;" : "=r"(cta));
  cta += a.cta_base;
  p.cut = (cta - a.whole) / a.split;
  p.piece = cta < a.whole ? -1 : cta - a.whole - p.cut * a.split;
  const int block = cta < a.whole ? cta : a.whole + p.cut;
  const int bh = block / a.n_blocks;
  p.n_block = block - bh * a.n_blocks;
  p.head = bh % a.heads;
  p.batch = bh / a.heads;
  return p;
}

// kPersist: the uncut 80-row kernel in a 1-D grid of at most one CTA per SM,
// CTA c taking key blocks c, c + gridDim.x, ... below BwdArgs::whole, so that
// one block's dK/dV epilogue overlaps the next one's K/V load, and no CTA is
// launched and set up per block. Its blocks are unmasked, so every walk has
// the same length, which the dQ warp's handoff counts on. Used at D = 128 for
// walks of kPersistMinQueries or more: H100, through JAX, fwd+bwd +1.0-1.5%
// from 1k to 16k, but 1.2-1.3% slower at 512, and 1-2% slower at every
// length at D = 64 (docs/hopper-notes.md, twenty-second session). With dK/dV
// by TMA stores since, it is level at 512 and still 1-4% slower at D = 64
// (standalone; twenty-fourth session), so the rule stays.
template <int D, int BM>
constexpr bool kPersistentBwd = D == 128 && BM == kBwdBlockMFull;
constexpr int kPersistMinQueries = 1024;
// Every persistent walk then has queries, which the epilogue's wait for the
// dQ warp's last handback relies on.
static_assert(kPersistMinQueries > 0, "persistent walks need queries");
__device__ __forceinline__ BlockPos persistent_pos(const BwdArgs& a, int block) {
  const int bh = block / a.n_blocks;
  return BlockPos{block - bh * a.n_blocks, bh % a.heads, bh / a.heads, -1, 0};
}

// kCut: the launch cuts its last round's key blocks into pieces (see
// BwdArgs). A kernel of its own: one kernel with the cut's code ran uncut
// calls 1.2-1.6% slower at 512-2k (H100, docs/hopper-notes.md, ninth session).
template <bool kBf16, int D, int kStages, int BM, bool kCut, bool kPersist = false>
__global__ void __launch_bounds__(kBwdThreads, 1)
    flash_bwd_kernel(const __grid_constant__ CUtensorMap q_map, const __grid_constant__ CUtensorMap k_map,
               const __grid_constant__ CUtensorMap v_map, const __grid_constant__ CUtensorMap do_map,
               const __grid_constant__ CUtensorMap stats_map, const __grid_constant__ CUtensorMap dk_map,
               const __grid_constant__ CUtensorMap dv_map, const BwdArgs a) {
  using L = BwdSmem<D, kStages, BM>;
  constexpr int kBlockN = kBwdBlockN<D>;
  constexpr int kBoxes = D / kBoxCols;
  // At D = 256 both consumers own the same 64 keys, each dK and dV for half
  // of the dims; otherwise each owns 64 keys and all dims.
  static_assert(D == 64 || D == 128 || D == 256, "head dims");
  constexpr bool kSplitDims = D == 256;
  constexpr int kAccDims = kSplitDims ? D / 2 : D;
  constexpr int kAcc = kAccDims / 2;  // dK, dV floats per thread (m64 x kAccDims)
  constexpr int kRowAcc = BM / 2;     // S^T, dP^T, a dQ^T tile: floats per thread (m64 x BM)
  // dQ^T's product has M = 64 head dims. At D = 128 each consumer takes half
  // of the dims over all 128 keys (the dS^T exchange); at D = 64 each takes
  // all dims over its own 64 keys, and both tiles are added to the same place
  // in dq_accum; at D = 256 each takes its half of the dims (two tiles) over
  // the 64 keys, from its own dS^T.
  constexpr bool kDqSplitsKeys = D == 64;
  constexpr bool kExchangeDs = D == 128;
  constexpr int kDqKeys = kDqSplitsKeys ? 64 : kBlockN;
  constexpr int kTiles = kDqTiles<D>;
  constexpr bool kStageStats = kStatsInStage<D, BM>;
  constexpr int kStageStatBytes = kStageStats ? BM * 4 : 0;  // with each Q and each dO

  extern __shared__ __align__(1024) unsigned char smem_raw[];
  unsigned char* smem = align_1024(smem_raw);
  unsigned char* sK = smem + L::kK;
  unsigned char* sV = smem + L::kV;
  unsigned char* sQ = smem + L::kQ;
  unsigned char* sdO = smem + L::kDO;
  unsigned char* sdS = smem + L::kDs;
  unsigned char* sdQ = smem + L::kDq;
  float* stats_smem = reinterpret_cast<float*>(smem + L::kStats);
  // Set s of a query block's statistics: BM lse, then BM D from L::kStatRow.
  // Where they come with Q and dO (kStageStats), set s is stage s's.
  auto stats_set = [&](int s) { return stats_smem + s * 2 * L::kStatRow; };
  uint64_t* bars = reinterpret_cast<uint64_t*>(smem + L::kBars);
  uint64_t* kv_full = bars;
  uint64_t* q_full = bars + 1;
  uint64_t* do_full = bars + 1 + kStages;
  uint64_t* q_empty = bars + 1 + 2 * kStages;

  static_assert(!kPersist || (!kCut && kPersistentBwd<D, BM>), "the persistent kernel's walks");
  uint64_t* kv_empty = bars + 1 + 3 * kStages;

  // The key blocks a tail launch of the cut kernel takes (BwdArgs::cta_base).
  if constexpr (!kCut && !kPersist && BM != kBwdBlockMMasked)
    if (blockIdx.x + a.n_blocks * (blockIdx.y + a.heads * blockIdx.z) >= a.whole) return;
  if constexpr (kConvertOverlaps<D>) allow_dependent_launch();
  const int warpgroup = warpgroup_index();

  if (threadIdx.x == 0) {
    mbar_init(kv_full, 1);
    mbar_init(kv_empty, 8);  // one arrival per consumer warp
    for (int s = 0; s < kStages; ++s) {
      mbar_init(&q_full[s], 1);
      mbar_init(&do_full[s], 1);
      mbar_init(&q_empty[s], 8);
    }
    asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
  }
  __syncthreads();

  // The key blocks this CTA takes: blockIdx.x + k gridDim.x for k below
  // block_count (one, unless kPersist; then below a.whole).
  const int block_count = kPersist ? (a.whole - int(blockIdx.x) + int(gridDim.x) - 1) / int(gridDim.x) : 1;
  auto block_of = [&](int k) { return int(blockIdx.x) + k * int(gridDim.x); };
  const int offset = a.seqlen_k - a.seqlen_q;
  const int m_blocks = (a.seqlen_q + BM - 1) / BM;
  // A key block's walk: the query blocks m_lo .. m_lo + n_iter - 1 that see
  // any of its keys [n0, n_last] (a piece's share of them).
  struct Walk {
    BlockPos pos;
    int n0, m_lo, n_iter;
    int64_t bh;
  };
  auto walk_of = [&](int block) {
    Walk w;
    w.pos = kPersist ? persistent_pos(a, block) : block_pos<kCut>(a);
    w.bh = static_cast<int64_t>(w.pos.batch) * a.heads + w.pos.head;
    w.n0 = w.pos.n_block * kBlockN;
    const int n_last = min(w.n0 + kBlockN, a.seqlen_k) - 1;
    const int q_first = a.window_right < 0 ? 0 : max(0, w.n0 - offset - a.window_right);
    const int q_last =
        a.window_left < 0 ? a.seqlen_q - 1 : min(a.seqlen_q - 1, n_last - offset + a.window_left);
    const int all_iter = q_last < q_first ? 0 : q_last / BM - q_first / BM + 1;
    const int piece = w.pos.piece;
    const int piece_lo = piece < 0 ? 0 : all_iter * piece / a.split;
    w.m_lo = q_first / BM + piece_lo;
    w.n_iter = piece < 0 ? all_iter : all_iter * (piece + 1) / a.split - piece_lo;
    return w;
  };
  // The CTA's first block, walked once here: where it is the only one, the
  // query loops then compile as they did before kPersist (taken inside the
  // block loop, the masked kernel's position lost its uniform registers).
  const Walk first = walk_of(block_of(0));
  auto walk_at = [&](int k) { return kPersist && k > 0 ? walk_of(block_of(k)) : first; };

  if (warpgroup == 0) {
    asm volatile("setmaxnreg.dec.sync.aligned.u32 24;");
    if (threadIdx.x == 0) {
      prefetch_map(&q_map);
      prefetch_map(&do_map);
      int g = 0, t = 0;  // the CTA's query blocks and key blocks loaded so far
      for (; t < block_count; ++t) {
        const Walk w = walk_at(t);
        const int head = w.pos.head, batch = w.pos.batch;
        if (t > 0) mbar_wait(kv_empty, (t - 1) & 1);  // the consumers' last products of the block before
        mbar_expect_tx(kv_full, 2 * L::kKVBytes);
        for (int c = 0; c < kBoxes; ++c) {
          tma_load(sK + c * kBlockN * kBoxRowBytes, &k_map, kv_full, c * kBoxCols, head / a.group, w.n0, batch);
          tma_load(sV + c * kBlockN * kBoxRowBytes, &v_map, kv_full, c * kBoxCols, head / a.group, w.n0, batch);
        }
        for (int i = 0; i < w.n_iter; ++i, ++g) {
          const int s = g % kStages, use = g / kStages;
          const int q0 = (w.m_lo + i) * BM;
          if (use > 0) mbar_wait(&q_empty[s], (use - 1) & 1);
          mbar_expect_tx(&q_full[s], L::kQBytes + kStageStatBytes);
          for (int c = 0; c < kBoxes; ++c)
            tma_load(sQ + s * L::kQBytes + c * BM * kBoxRowBytes, &q_map, &q_full[s], c * kBoxCols, head, q0,
                     batch);
          if constexpr (kStageStats) tma_load_3d(stats_set(s), &stats_map, &q_full[s], q0, int(w.bh), 0);
          mbar_expect_tx(&do_full[s], L::kQBytes + kStageStatBytes);
          for (int c = 0; c < kBoxes; ++c)
            tma_load(sdO + s * L::kQBytes + c * BM * kBoxRowBytes, &do_map, &do_full[s], c * kBoxCols, head, q0,
                     batch);
          if constexpr (kStageStats)
            tma_load_3d(stats_set(s) + L::kStatRow, &stats_map, &do_full[s], q0, int(w.bh), 1);
        }
      }
    } else if (threadIdx.x / 32 == 1) {
      // The dQ warp adds each consumer's staged dQ^T tile to dq_accum, so
      // that the consumers never wait for the reduce-add to read their stage.
      // It hands each stage back after its read but the CTA's last; the
      // persistent kernel's epilogue takes that one too (dV's rows).
      if (first.n_iter > 0)
        for (int wg = 0; wg < 2; ++wg) dq_stage_mark_empty(wg);
      for (int k = 0; k < block_count; ++k) {
        const Walk w = walk_at(k);
        const bool last_block = k + 1 == block_count;
        for (int i = 0; i < w.n_iter; ++i)
          for (int wg = 0; wg < 2; ++wg) {
            dq_stage_wait_full(wg);
            if (threadIdx.x == 32) {
              bulk_reduce_add(
                  a.dq_accum + dq_tile_offset<D, BM>(w.bh, m_blocks, w.m_lo + i, kDqSplitsKeys ? 0 : wg * kTiles),
                  reinterpret_cast<const float*>(sdQ + wg * L::kDqStageBytes), L::kDqStageBytes);
              bulk_wait_read();
            }
            __syncwarp();
            if (kPersist || !last_block || i + 1 < w.n_iter) dq_stage_mark_empty(wg);
          }
        if (kConvertOverlaps<D> && threadIdx.x == 32) {
          // This block's reduce-adds written (not only read) and visible before it counts.
          bulk_wait_written();
          __threadfence();
          atomicAdd(&a.dq_done[w.bh], w.pos.piece < 0 ? unsigned(a.split) : 1u);
        }
      }
    }
    // A tail launch completes only after the uncut one (one thread waits), so
    // that what waits for it sees that one's dK and dV too.
    if (kCut && a.cta_base > 0 && blockIdx.x == 0 && threadIdx.x == 0) wait_previous_grid();
    return;
  }

  asm volatile("setmaxnreg.inc.sync.aligned.u32 240;");
  const int wg = warpgroup - 1;  // keys n0 + 64 wg .. n0 + 64 wg + 63 (at D = 256: n0 .. n0 + 63)
  const int lane = threadIdx.x % 32;
  const int warp = (threadIdx.x / 32) % 4;
  const int wg_key_local = kSplitDims ? 0 : wg * 64;
  const int key_local = wg_key_local + warp * 16 + lane / 4;  // and + 8
  const int col = 2 * (lane % 4);  // within each 8-column group, + {0, 1}
  const int wg_thread = threadIdx.x % 128;
  // dK and dV of head dims [dim0, dim0 + kAccDims): the first of them is in box dim0 / 64.
  const int dim0 = kSplitDims ? wg * kAccDims : 0;

  float dv[kAcc], dk[kAcc];
  float s_acc[kRowAcc], dp_acc[kRowAcc], dq_acc[kTiles][kRowAcc];
  uint32_t p[BM / 4], ds[BM / 4];

  const unsigned char* k_rows = sK + wg_key_local * kBoxRowBytes;
  const unsigned char* v_rows = sV + wg_key_local * kBoxRowBytes;

  // acc = rows tile^T: this warpgroup's 64 keys of K (or V) against the BM
  // rows of Q (or dO), both K-major over the head dim, as one commit group.
  auto transposed_product = [&](const unsigned char* rows, const unsigned char* tile,
                                float(&acc)[kRowAcc]) {
    const uint64_t da = desc(rows, 16, 1024), db = desc(tile, 16, 1024);
    pin(acc);
    wgmma_fence();
    mma_ss_k_major<typename Gmma<kBf16, BM, kK, kK>::SS, D / 16>(da, kBlockN * kBoxRowBytes, db,
                                                                BM * kBoxRowBytes, acc);
    wgmma_commit();
  };

  // The CTA's query block `ring` (counted over its key blocks) is in stage ring % kStages.
  auto issue_s_dp = [&](int ring) {
    const int s = ring % kStages, parity = (ring / kStages) & 1;
    const unsigned char* q_tile = sQ + s * L::kQBytes;
    const unsigned char* do_tile = sdO + s * L::kQBytes;
    if constexpr (!kStageStats) mbar_wait(&q_full[s], parity);  // else waited for the statistics
    transposed_product(k_rows, q_tile, s_acc);
    mbar_wait(&do_full[s], parity);
    transposed_product(v_rows, do_tile, dp_acc);
  };

  // This warpgroup's dQ^T tiles go to shared memory in accumulator order
  // (float4 v of thread t at 128 v + t, so that a warp's stores are
  // contiguous and free of bank conflicts), one after the other as in
  // dq_accum, and from there to dq_accum with one bulk reduce-add by the dQ
  // warp; dq_convert_kernel undoes the order.
  float* dq_stage = reinterpret_cast<float*>(sdQ + wg * L::kDqStageBytes);
  auto stage_dq = [&](bool wait_empty) {
    if (wait_empty) dq_stage_wait_empty(wg);
#pragma unroll
    for (int t = 0; t < kTiles; ++t)
#pragma unroll
      for (int v4 = 0; v4 < kRowAcc / 4; ++v4)
        reinterpret_cast<float4*>(dq_stage + t * BM * 64)[v4 * 128 + wg_thread] = make_float4(
            dq_acc[t][4 * v4], dq_acc[t][4 * v4 + 1], dq_acc[t][4 * v4 + 2], dq_acc[t][4 * v4 + 3]);
    asm volatile("fence.proxy.async.shared::cta;" ::: "memory");
    dq_stage_mark_full(wg);
  };

  // Unless they come with Q and dO (kStageStats), the row statistics of query
  // blocks i, i + 1 (being read) and i + 2 (being written) in shared memory:
  // consumer thread t loads block i + 2's lse (entry t < BM) or D of row
  // t % BM (t < 2 BM) from L2 when block i starts and stores it after block
  // i's dS exchange (block_sync), which all reads of block i - 1 are before
  // and all reads of block i + 2 after (the exchange of block i + 1). Held in
  // registers instead they cost 2-4% (docs/hopper-notes.md, b5-b10). At D = 64
  // and 256 the consumers share no dS^T: each keeps its own copy of the
  // statistics and syncs only its own threads (+3-6% at D = 64, b17).
  constexpr int kStatThreads = kExchangeDs ? 256 : 128;
  constexpr int kStatsPerThread = (2 * BM + kStatThreads - 1) / kStatThreads;
  struct Stats { float x[kStatsPerThread]; };
  const int stats_thread = kExchangeDs ? threadIdx.x - 128 : wg_thread;
  float* my_stats = stats_set(kExchangeDs ? 0 : wg * 3);  // the first of this consumer's three sets
  auto block_sync = [&]() {
    if constexpr (kExchangeDs)
      consumers_sync();
    else
      consumer_sync(wg);
  };
  Walk w = first;  // the key block being walked
  auto stat_load = [&](int i) {
    if constexpr (kStageStats) {
      return Stats{};
    } else {
      Stats r;
#pragma unroll
      for (int e = 0; e < kStatsPerThread; ++e) {
        const int t = stats_thread + e * kStatThreads;
        r.x[e] = t >= 2 * BM || i >= w.n_iter ? 0.f
                                              : __ldg(a.row_stats + (t < BM ? 0 : a.stats_stride) +
                                                      w.bh * a.stats_rows + (w.m_lo + i) * BM + t % BM);
      }
      return r;
    }
  };
  auto stat_store = [&](int i, const Stats& r) {
    if constexpr (!kStageStats) {
      static_assert(L::kStatRow == BM, "lse and D adjacent");
#pragma unroll
      for (int e = 0; e < kStatsPerThread; ++e) {
        const int t = stats_thread + e * kStatThreads;
        if (t < 2 * BM) my_stats[(i % 3) * 2 * BM + t] = r.x[e];
      }
    }
  };

  // A piece of a cut key block: its dK and dV go to its slot in a.partial,
  // each thread's accumulators as they are (so that the same thread of
  // another CTA reads them back); the last piece to arrive adds all the slots
  // in piece order, so the sums do not depend on which piece was last.
  // Returns whether this CTA was it.
  auto fold_pieces = [&]() {
    const int tid = threadIdx.x - 128;       // of both consumers
    constexpr int kSlot = kAcc / 2 * 256;    // float4s per piece: dK, then dV
    const BlockPos end = block_pos<kCut>(a);
    auto slot = [&](int j) { return a.partial + (int64_t(end.cut) * a.split + j) * kSlot; };
    float4* mine = slot(end.piece);
#pragma unroll
    for (int i = 0; i < kAcc / 4; ++i) {
      __stcg(&mine[i * 256 + tid], make_float4(dk[4 * i], dk[4 * i + 1], dk[4 * i + 2], dk[4 * i + 3]));
      __stcg(&mine[(kAcc / 4 + i) * 256 + tid], make_float4(dv[4 * i], dv[4 * i + 1], dv[4 * i + 2], dv[4 * i + 3]));
    }
    __threadfence();
    consumers_sync();  // after every read of the statistics, whose first word now holds the verdict
    int* last_piece = reinterpret_cast<int*>(stats_smem);
    if (tid == 0) {
      unsigned* count = &a.arrivals[end.cut];
      const bool last = atomicAdd(count, 1u) == unsigned(a.split - 1);
      if (last) *count = 0;  // for the next call that takes these counters
      *last_piece = last;
    }
    consumers_sync();
    if (!*last_piece) return false;
    __threadfence();
#pragma unroll
    for (int i = 0; i < kAcc; ++i) dv[i] = dk[i] = 0.f;
    for (int j = 0; j < a.split; ++j) {
      const float4* other = slot(j);
#pragma unroll
      for (int i = 0; i < kAcc / 4; ++i) {
        const float4 k4 = __ldcg(&other[i * 256 + tid]), v4 = __ldcg(&other[(kAcc / 4 + i) * 256 + tid]);
        dk[4 * i] += k4.x, dk[4 * i + 1] += k4.y, dk[4 * i + 2] += k4.z, dk[4 * i + 3] += k4.w;
        dv[4 * i] += v4.x, dv[4 * i + 1] += v4.y, dv[4 * i + 2] += v4.z, dv[4 * i + 3] += v4.w;
      }
    }
    return true;
  };
  // The CTA's key blocks (one, unless kPersist), and its query blocks walked so far.
  int g = 0, t_block = 0;
  for (; t_block < block_count; ++t_block) {
    w = walk_at(t_block);
    const int key0 = w.n0 + key_local;
    const int wg_key_lo = w.n0 + wg_key_local, wg_key_hi = wg_key_lo + 63;
#pragma unroll
    for (int i = 0; i < kAcc; ++i) dv[i] = dk[i] = 0.f;
    if (kPersist || w.n_iter > 0) {
      const Stats stat0 = stat_load(0), stat1 = stat_load(1);
      stat_store(0, stat0);
      stat_store(1, stat1);
      mbar_wait(kv_full, t_block & 1);
      if (kPersist && w.n_iter == 0 && lane == 0) mbar_arrive(kv_empty);  // no queries (seqlen_q 0)
      if constexpr (!kStageStats) block_sync();
    }
    for (int i = 0; i < w.n_iter; ++i) {
      const int ring = g + i, s = ring % kStages;
      const Stats next_stat = stat_load(i + 2);
      // Columns are queries q0 + 8 j + col + e: lse * log2(e) at st[8 j + col + e], D kStatRow further.
      const float* st = kStageStats ? stats_set(s) : my_stats + (i % 3) * 2 * BM;
      if constexpr (kStageStats) mbar_wait(&q_full[s], (ring / kStages) & 1);
      // This block's lse, read before the products are issued. Read after S,
      // the ten loads had one register between them (at 240 per thread) and ran
      // one after another behind the other consumer's operand reads: the
      // exponentials took 1470 cycles of a 6500-cycle step (docs/hopper-notes.md, b15).
      float2 lse[BM / 8];
#pragma unroll
      for (int j = 0; j < BM / 8; ++j) lse[j] = *reinterpret_cast<const float2*>(st + 8 * j + col);
      // Warpgroup 1 issues its S and dP products after warpgroup 0's, so that
      // the first one's softmax overlaps the second one's products. Only where
      // the dS exchange keeps the two in step (D = 128): the turn is one-way, so
      // a warpgroup 0 a block ahead would arrive twice and complete the barrier
      // without warpgroup 1, which then waits forever (it hung at D = 64 in the
      // benchmark tool; docs/hopper-notes.md, b19).
      if constexpr (kExchangeDs) {
        if (wg == 1) s_dp_turn_wait();
      }
      issue_s_dp(ring);
      if constexpr (kExchangeDs) {
        if (wg == 0) s_dp_turn_pass();
      }
      const int q0 = (w.m_lo + i) * BM;
      const unsigned char* q_tile = sQ + s * L::kQBytes;
      const unsigned char* do_tile = sdO + s * L::kQBytes;

      wgmma_wait<1>();
      pin(s_acc);
      const bool full = wg_key_hi < a.seqlen_k && q0 + BM <= a.seqlen_q &&
                        (a.window_left < 0 || wg_key_lo >= q0 + BM - 1 + offset - a.window_left) &&
                        (a.window_right < 0 || wg_key_hi <= q0 + offset + a.window_right);
      // P^T at element e of column group j, before any mask.
      auto exp_of = [&](int j, int e) {
        return exp2f(fmaf(s_acc[4 * j + e], a.scale_log2, -(e % 2 ? lse[j].y : lse[j].x)));
      };
      if (full) {
#pragma unroll
        for (int j = 0; j < BM / 8; ++j)
#pragma unroll
          for (int e = 0; e < 4; ++e) s_acc[4 * j + e] = exp_of(j, e);
      } else {
        // Key row r (key0 + 8 r) sees queries [q_min[r], q_max[r]]; columns are
        // queries q0 + col + 8 j + e % 2. (A visibility test per element inside
        // one loop for both cases cost the masked kernel 4-11%, b15.)
        int q_min[2], q_max[2];
#pragma unroll
        for (int r = 0; r < 2; ++r) {
          const int key = key0 + 8 * r;
          q_min[r] = a.window_right < 0 ? INT_MIN : key - offset - a.window_right - q0 - col;
          q_max[r] = key >= a.seqlen_k      ? INT_MIN
                     : a.window_left < 0 ? INT_MAX
                                         : key - offset + a.window_left - q0 - col;
        }
#pragma unroll
        for (int j = 0; j < BM / 8; ++j)
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            const int q = 8 * j + e % 2, r = e / 2;
            const float x = exp_of(j, e);
            s_acc[4 * j + e] = q >= q_min[r] && q <= q_max[r] ? x : 0.f;
          }
      }
      wgmma_wait<0>();
      pin(dp_acc);
#pragma unroll
      for (int i2 = 0; i2 < BM / 4; ++i2) {
        const int j = i2 / 2;  // pairs (4j, 4j+1) are row key0, (4j+2, 4j+3) row key0 + 8
        const int e = (i2 % 2) * 2;
        const float2 dd = *reinterpret_cast<const float2*>(st + L::kStatRow + 8 * j + col);
        p[i2] = pack<kBf16>(s_acc[4 * j + e], s_acc[4 * j + e + 1]);
        ds[i2] = pack<kBf16>(s_acc[4 * j + e] * (dp_acc[4 * j + e] - dd.x),
                             s_acc[4 * j + e + 1] * (dp_acc[4 * j + e + 1] - dd.y));
      }

      // dV += P^T dO now; dK += dS^T Q after dQ, so that it runs while dQ is
      // staged. dO and Q are MN-major B operands, of which this warpgroup's
      // dims start at box dim0 / 64.
      const int dim_box_bytes = dim0 / kBoxCols * BM * kBoxRowBytes;
      const uint64_t d_do = desc(do_tile + dim_box_bytes, BM * kBoxRowBytes, 1024);
      const uint64_t d_q = desc(q_tile + dim_box_bytes, BM * kBoxRowBytes, 1024);
      using RsMma = typename Gmma<kBf16, kAccDims, kK, kMN>::RS;
      pin(dv);
      pin(p);
      wgmma_fence();
      mma_rs_mn_major<RsMma, BM / 16>(p, d_do, dv);
      wgmma_commit();

      // dS^T into shared memory as the MN-major B operand of dQ^T's product:
      // columns of 16 queries (32-byte rows of the CTA's keys, 32-byte swizzle:
      // the two 16-byte halves of a row swap when bit 2 of the row is set), in
      // one of two buffers (the other may still be read by the other
      // consumer's dQ^T product of the previous step; at D = 256 each
      // consumer writes its own copy, read by no one else).
      unsigned char* ds_tile = sdS + (kSplitDims ? wg : i % 2) * L::kDsBytes;
#pragma unroll
      for (int j = 0; j < BM / 8; ++j)
#pragma unroll
        for (int r = 0; r < 2; ++r) {
          const int row = key_local + 8 * r;
          const int half = (j % 2) ^ ((row / 4) % 2);
          *reinterpret_cast<uint32_t*>(ds_tile + (j / 2) * kDsAtomBytes<D> + row * 32 + half * 16 + col * 2) =
              ds[2 * j + r];
        }
      asm volatile("fence.proxy.async.shared::cta;" ::: "memory");
      block_sync();
      stat_store(i + 2, next_stat);

      // dQ^T = K^T dS^T: at D = 128 head dims [64 wg, 64 wg + 64) over all
      // 128 keys, at D = 64 all dims over this warpgroup's keys, at D = 256
      // dims [128 wg, 128 wg + 128) as two tiles. K^T (head dim contiguous)
      // and dS^T (queries contiguous) are both MN-major; the dims of tile t
      // are K's box wg * kTiles + t.
      const uint64_t d_kt = kDqSplitsKeys ? desc(k_rows, kBlockN * kBoxRowBytes, 1024)
                                          : desc(sK + wg * kTiles * kBlockN * kBoxRowBytes, kBlockN * kBoxRowBytes,
                                                 1024);
      const uint64_t d_ds = desc(ds_tile + (kDqSplitsKeys ? wg * 64 * 32 : 0), kDsAtomBytes<D>, 8 * 32, kSwizzle32B);
      // dV first: that frees P^T's registers for dQ^T's accumulators (at 80
      // rows, ptxas otherwise serialises every wgmma for want of registers).
      wgmma_wait<0>();
      pin(dv);
      pin(p);
#pragma unroll
      for (int t = 0; t < kTiles; ++t) pin(dq_acc[t]);
      pin(dk);
      pin(ds);
      wgmma_fence();
#pragma unroll
      for (int t = 0; t < kTiles; ++t)
#pragma unroll
        for (int kk = 0; kk < kDqKeys / 16; ++kk)
          mma_ss<typename Gmma<kBf16, BM, kMN, kMN>::SS>(desc_add(d_kt, (t * kBlockN + kk * 16) * kBoxRowBytes),
                                                         desc_add(d_ds, kk * 16 * 32), dq_acc[t], kk > 0,
                                                         std::make_index_sequence<kRowAcc>{});
      wgmma_commit();
      mma_rs_mn_major<RsMma, BM / 16>(ds, d_q, dk);
      wgmma_commit();

      wgmma_wait<1>();
#pragma unroll
      for (int t = 0; t < kTiles; ++t) pin(dq_acc[t]);
      // K and V are read for the last time by this block's dQ^T and dP^T products.
      if (kPersist && i + 1 == w.n_iter && lane == 0) mbar_arrive(kv_empty);
      // (kPersist: for a block's first stage, the epilogue before has waited;
      // it staged dV there.)
      stage_dq(!kPersist || i > 0 || t_block == 0);
      wgmma_wait<0>();
      pin(dk);
      pin(ds);
      if (lane == 0) mbar_arrive(&q_empty[s]);
    }
    g += w.n_iter;
    if constexpr (kCut)
      if (block_pos<kCut>(a).piece >= 0 && !fold_pieces()) return;

    // dK (scaled) and dV for this head's keys, [batch, seqlen_k, heads, D], go
    // through shared memory. Unmasked calls (the 80-row kernels): a warpgroup's
    // 64 keys by TMA stores of 64-dim boxes in the 128-byte swizzle (as the
    // forward's O), which stmatrix writes: dK's in the Q buffers, or where the
    // producer may be loading the next block's Q and dO (kPersist) in the dS^T
    // buffers, and dV's beside them, or (kPersist) in the consumer's dQ stage
    // once the dQ warp has read the block's last dQ^T tile from it. Masked calls
    // and D = 256: each key's row in 16-byte stores (straight from the
    // accumulators they would be 4-byte pieces of 8 rows per warp store); a
    // warp holds whole rows (16 keys; at D = 256 their half from dim0), so it
    // stages and stores them alone, in the Q and dO buffers.
    consumers_sync();
    // The cut kernel reads its position again (see block_pos); the uncut one keeps it.
    const BlockPos end = kCut ? block_pos<kCut>(a) : w.pos;
    if constexpr (BM == kBwdBlockMFull) {
      constexpr int kBoxBytes = 64 * kBoxRowBytes;
      constexpr int kTensorBytes = kAccDims / kBoxCols * kBoxBytes;  // a warpgroup's dK or dV
      static_assert(kPersist ? 2 * kTensorBytes <= 2 * L::kDsBytes && kTensorBytes <= L::kDqStageBytes
                             : 4 * kTensorBytes <= L::kDq - L::kQ,
                    "dK/dV boxes");
      unsigned char* dk_boxes = (kPersist ? sdS : sQ) + wg * kTensorBytes;
      unsigned char* dv_boxes = kPersist ? reinterpret_cast<unsigned char*>(dq_stage) : sQ + (2 + wg) * kTensorBytes;
      stage_swizzled_boxes<kBf16, kAccDims>(dk_boxes, dk, {a.scale, a.scale}, warp, lane);
      if constexpr (kPersist) dq_stage_wait_empty(wg);  // every walk has queries (kPersistMinQueries)
      stage_swizzled_boxes<kBf16, kAccDims>(dv_boxes, dv, {1.f, 1.f}, warp, lane);
      asm volatile("fence.proxy.async.shared::cta;" ::: "memory");
      // Both consumers, though each sends its own boxes: with this warpgroup's
      // barrier ptxas allocated the one-block kernels' query loops anew (a
      // spilled load more per step at d 128, and 7 in the cut kernel's).
      consumers_sync();
      if (wg_thread == 0) {
        // Keys past seqlen_k are left out by the tensor maps' bounds.
        const int box_key0 = end.n_block * kBlockN + wg_key_local;
#pragma unroll
        for (int c = 0; c < kAccDims / kBoxCols; ++c) {
          tma_store(&dk_map, dk_boxes + c * kBoxBytes, dim0 + c * kBoxCols, end.head, box_key0, end.batch);
          tma_store(&dv_map, dv_boxes + c * kBoxBytes, dim0 + c * kBoxCols, end.head, box_key0, end.batch);
        }
        bulk_commit();
        bulk_wait_read();  // before the boxes are written again, or the CTA's shared memory goes
      }
      // kPersist: the boxes read before the next block's dS^T and dQ^T overwrite them.
      if constexpr (kPersist) consumers_sync();
    } else {
      const int end_key0 = kCut ? end.n_block * kBlockN + key_local : key0;
      constexpr int kOutPitch = kAccDims / 2 + 4;  // words; the padding keeps the 8 rows of a store on distinct banks
      constexpr int kWarpRows = 16, kChunks = kAccDims * 2 / 16;  // 16-byte pieces per row
      uint32_t* stage = reinterpret_cast<uint32_t*>(sQ) + (wg * 4 + warp) * 2 * kWarpRows * kOutPitch;
      static_assert(8 * 2 * kWarpRows * kOutPitch * 4 <= L::kDq - L::kQ, "dK/dV stage");
      // acc's 16 rows of the warp, times scale, at rows [0, 16) of dst.
      auto stage_rows = [&](const float(&acc)[kAcc], float scale, uint32_t* dst) {
#pragma unroll
        for (int r = 0; r < 2; ++r)
#pragma unroll
          for (int j = 0; j < kAccDims / 8; ++j)
            dst[(lane / 4 + 8 * r) * kOutPitch + (8 * j + col) / 2] =
                pack<kBf16>(acc[4 * j + 2 * r] * scale, acc[4 * j + 2 * r + 1] * scale);
      };
      stage_rows(dk, a.scale, stage);
      stage_rows(dv, 1.f, stage + kWarpRows * kOutPitch);
      __syncwarp();
#pragma unroll
      for (int c = lane; c < 2 * kWarpRows * kChunks; c += 32) {
        const int t = c / (kWarpRows * kChunks), r = c / kChunks % kWarpRows, chunk = c % kChunks;
        const int key = end_key0 - lane / 4 + r;  // the warp's first key + r
        if (key >= a.seqlen_k) continue;
        const uint4 x = *reinterpret_cast<const uint4*>(stage + (t * kWarpRows + r) * kOutPitch + 4 * chunk);
        reinterpret_cast<uint4*>(static_cast<uint16_t*>(t ? a.dv : a.dk) +
                                 ((static_cast<int64_t>(end.batch) * a.seqlen_k + key) * a.heads + end.head) * D +
                                 dim0)[chunk] = x;
      }
    }
  }
}

// Before the main kernel: BwdArgs::row_stats (`rows` lse * log2(e), padded to
// padded_q rows per (batch, head), then as many D = rowsum(dO * O)) and zeros
// in dq_accum, where each row clears D floats of its (batch, head)'s m_rows,
// and in the `pairs` dq_done counters.
// One warp per row, each lane D / 32 elements of it.
template <bool kBf16, int D>
__global__ void bwd_prep_kernel(const void* out, const void* dout, const float* lse, float* stats,
                                float* dq_accum, int64_t rows, int heads, int seqlen_q, int padded_q,
                                int m_rows, unsigned* dq_done, int64_t pairs) {
  static_assert(D % 64 == 0, "a lane reads whole 8-byte pieces");
  const int64_t row = blockIdx.x * int64_t(blockDim.x / 32) + threadIdx.x / 32;  // [batch, heads, padded_q]
  if (row >= rows) return;
  const int i = row % padded_q, lane = threadIdx.x % 32;
  const int64_t bh = row / padded_q;
  float sum = 0.f;
  if (i < seqlen_q) {
    const int64_t base = ((bh / heads * seqlen_q + i) * heads + bh % heads) * D;
#pragma unroll
    for (int c = 4 * lane; c < D; c += 128) {
      const uint2 o = *reinterpret_cast<const uint2*>(static_cast<const uint16_t*>(out) + base + c);
      const uint2 g = *reinterpret_cast<const uint2*>(static_cast<const uint16_t*>(dout) + base + c);
      const float2 o0 = unpack<kBf16>(o.x), o1 = unpack<kBf16>(o.y);
      const float2 g0 = unpack<kBf16>(g.x), g1 = unpack<kBf16>(g.y);
      sum += o0.x * g0.x + o0.y * g0.y + o1.x * g1.x + o1.y * g1.y;
    }
  }
  if (i < m_rows) {
    float4* acc = reinterpret_cast<float4*>(dq_accum + (bh * m_rows + i) * D);
#pragma unroll
    for (int c = lane; c < D / 4; c += 32) acc[c] = make_float4(0.f, 0.f, 0.f, 0.f);
  }
#pragma unroll
  for (int o = 16; o > 0; o /= 2) sum += __shfl_xor_sync(0xffffffff, sum, o);
  if (lane == 0) {
    if (row < pairs) dq_done[row] = 0;
    stats[row] = i < seqlen_q ? lse[bh * seqlen_q + i] * 1.44269504f : INFINITY;
    stats[row + rows] = sum;
  }
}

// dq[b, q0 .. q0 + BM, h, 64 half ..] = scale * one dQ^T tile of 64 head dims
// in dq_accum, which holds a warpgroup's accumulators in thread order (float4
// v of thread t at 128 v + t). One CTA of 128 threads per tile: coalesced
// loads into shared memory as [query][dim], then rows of 64 dims out. Where
// it runs beside the backward (kConvertOverlaps), a tile waits until its
// (batch, head)'s dq_done reaches `expected`.
template <bool kBf16, int D, int BM>
__global__ void dq_convert_kernel(const float* acc, void* dq, int heads, int seqlen_q, float scale,
                                  const unsigned* dq_done, unsigned expected) {
  constexpr int kPitch = 65;
  __shared__ float tile[BM * kPitch];
  const int m = blockIdx.x / (D / 64), half = blockIdx.x % (D / 64), h = blockIdx.y, b = blockIdx.z;
  const int m_blocks = (seqlen_q + BM - 1) / BM;
  const int64_t bh = int64_t(b) * heads + h;
  const float* src = acc + dq_tile_offset<D, BM>(bh, m_blocks, m, half);
  const int t = threadIdx.x, w = t / 32, l = t % 32;
  if (kConvertOverlaps<D> && t == 0) {
    for (;;) {
      unsigned done;
      asm volatile("ld.acquire.gpu.global.u32 %0, [%1];" : "=r"(done) : "l"(dq_done + bh) : "memory");
      if (done >= expected) break;
      __nanosleep(500);
    }
  }
  __syncthreads();
#pragma unroll
  for (int v = 0; v < BM / 8; ++v) {
    // From L2: the backward wrote it while this kernel ran.
    const float4 x = __ldcg(reinterpret_cast<const float4*>(src) + 128 * v + t);
    const float e[4] = {x.x, x.y, x.z, x.w};
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      // Accumulator element 4 v + k: dim 16 w + l / 4 (+ 8 for k >= 2), query 8 v + 2 (l % 4) + k % 2.
      const int dim = 16 * w + l / 4 + 8 * (k / 2), query = 8 * v + 2 * (l % 4) + k % 2;
      tile[query * kPitch + dim] = e[k];
    }
  }
  __syncthreads();
  for (int r = w; r < BM; r += 4) {
    const int q = m * BM + r;
    if (q >= seqlen_q) break;
    uint32_t* row = reinterpret_cast<uint32_t*>(static_cast<uint16_t*>(dq) +
                                                ((int64_t(b) * seqlen_q + q) * heads + h) * D + half * 64);
    row[l] = pack<kBf16>(tile[r * kPitch + 2 * l] * scale, tile[r * kPitch + 2 * l + 1] * scale);
  }
  // This launch completes only after the backward has (one CTA waits for it),
  // so what follows in the stream sees dK and dV too.
  if (kConvertOverlaps<D> && blockIdx.x == gridDim.x - 1 && blockIdx.y == gridDim.y - 1 &&
      blockIdx.z == gridDim.z - 1)
    wait_previous_grid();
}

// Key blocks of a call: batch * heads * blocks of kBwdBlockN keys.
int64_t key_block_count(const Shape& s) {
  const int block_n = s.head_dim == 256 ? kBwdBlockN<256> : kBwdBlockN<128>;
  return (int64_t(s.seqlen_k) + block_n - 1) / block_n * s.heads * s.batch;
}

// Unmasked calls cut their last round's key blocks into pieces of their
// query blocks (cut_last_round), pieces of at least 1024 queries, as the
// forward's pieces keep 1024 keys. The cut kernel spills more than the uncut
// one (its decoded block index; as the only kernel it cost uncut calls
// 1.2-1.6% at 512-2k, H100, docs/hopper-notes.md, ninth session), so it runs
// whole blocks only in calls of at most kMaxWholeRoundsCut rounds, where the
// last round weighs most (64 key blocks in halves: 1.5x). Longer calls run
// their whole rounds in the uncut kernel and the pieces in a tail launch,
// pieces of at least 2048 queries at D = 128: each piece's prologue and
// partial dK/dV (128 KB out, and the last one's 2-3x that in) cost about as
// much as the cut saved with 1365-query thirds at 4k (16 heads: 0.4-1.1%
// slower; 8k and 16k 1-2% faster). At D = 256, whose pieces do twice the
// products per query, 1024 queries: the 4k thirds gained 2.4-3.1% there
// (H100, docs/hopper-notes.md, fourteenth session). Not where the conversion
// does not overlap (D = 64): there the backward starts no dependent early,
// and the tail measured 0.3-1.6% slower at every length.
constexpr int kMaxWholeRoundsCut = 2;
constexpr int tail_piece_queries(int head_dim) { return head_dim == 256 ? 1024 : 2048; }
bool cut_in_tail(const Cut& c, int sms) { return c.split > 1 && c.whole > kMaxWholeRoundsCut * sms; }
Cut plan_bwd(int blocks, int sms, const Shape& s) {
  if (has_mask(s)) return uncut(blocks);
  const Cut c = cut_last_round(blocks, sms, std::clamp(s.seqlen_q / 1024, 1, kMaxSplit));
  if (!cut_in_tail(c, sms)) return c;
  if (!convert_overlaps(s.head_dim)) return uncut(blocks);
  return cut_last_round(blocks, sms, std::clamp(s.seqlen_q / tail_piece_queries(s.head_dim), 1, kMaxSplit));
}

// Per piece: each consumer thread's float32 dK and dV (256 threads).
int64_t bwd_cut_bytes(const Cut& c, int head_dim) {
  if (c.split == 1) return 0;
  const int acc_dims = head_dim == 256 ? 128 : head_dim;  // dK and dV dims a consumer holds
  return int64_t(c.items - c.whole) * 256 * 2 * acc_dims / 2 * 4;
}

template <bool kBf16, int D, int kStages, int BM>
cudaError_t launch_bwd(const BwdParams& p, cudaStream_t stream) {
  CUtensorMap q_map, k_map, v_map, do_map, stats_map{};
  cudaError_t e;
  if ((e = make_map(&q_map, p.q, kBf16, p.batch, p.seqlen_q, p.heads, D, BM)) != cudaSuccess ||
      (e = make_map(&do_map, p.dout, kBf16, p.batch, p.seqlen_q, p.heads, D, BM)) != cudaSuccess ||
      (e = make_map(&k_map, p.k, kBf16, p.batch, p.seqlen_k, p.heads_k, D, kBwdBlockN<D>)) != cudaSuccess ||
      (e = make_map(&v_map, p.v, kBf16, p.batch, p.seqlen_k, p.heads_k, D, kBwdBlockN<D>)) != cudaSuccess)
    return e;
  const BwdScratch scratch = bwd_scratch_elems(p.batch, p.heads, p.seqlen_q, D);
  const int64_t stat_rows = scratch.rows;  // [batch, heads, padded_q]
  const int64_t pairs = int64_t(p.batch) * p.heads;
  unsigned* dq_done = reinterpret_cast<unsigned*>(p.softmax_d + 2 * stat_rows);
  const int padded_q = static_cast<int>(stat_rows / pairs);
  const int m_blocks = (p.seqlen_q + BM - 1) / BM;  // dq_accum holds m_blocks * BM rows per (batch, head)
  if (kStatsInStage<D, BM> &&
      (e = make_stats_map(&stats_map, p.softmax_d, pairs, padded_q, BM)) != cudaSuccess)
    return e;
  // The 80-row kernels' dK and dV leave by TMA stores of 64-key boxes.
  CUtensorMap dk_map{}, dv_map{};
  if (BM == kBwdBlockMFull &&
      ((e = make_map(&dk_map, p.dk, kBf16, p.batch, p.seqlen_k, p.heads, D, 64)) != cudaSuccess ||
       (e = make_map(&dv_map, p.dv, kBf16, p.batch, p.seqlen_k, p.heads, D, 64)) != cudaSuccess))
    return e;
  bwd_prep_kernel<kBf16, D><<<(stat_rows + 7) / 8, 256, 0, stream>>>(
      p.out, p.dout, p.lse, p.softmax_d, p.dq_accum, stat_rows, p.heads, p.seqlen_q, padded_q, m_blocks * BM,
      dq_done, pairs);

  BwdArgs a;
  set_problem(a, p);
  a.row_stats = p.softmax_d;
  a.stats_stride = stat_rows;
  a.stats_rows = padded_q;
  a.dq_accum = p.dq_accum;
  a.dq_done = dq_done;
  a.dk = p.dk;
  a.dv = p.dv;
  const int64_t blocks = key_block_count(p);
  if (blocks > INT32_MAX) return cudaErrorInvalidValue;
  int sms = 0;
  if ((e = sm_count(&sms)) != cudaSuccess) return e;
  Cut cut = plan_bwd(static_cast<int>(blocks), sms, p);
  a.n_blocks = (p.seqlen_k + kBwdBlockN<D> - 1) / kBwdBlockN<D>;
  if ((e = set_cut(a, cut, bwd_cut_bytes(cut, D), p)) != cudaSuccess) return e;
  a.cta_base = 0;
  // Masked calls are never cut (their key blocks differ in work), so the
  // 64-row kernel has no cut variant.
  const bool persist = kPersistentBwd<D, BM> && p.seqlen_q >= kPersistMinQueries;
  const auto uncut_kernel = persist ? flash_bwd_kernel<kBf16, D, kStages, BM, false, kPersistentBwd<D, BM>>
                                    : flash_bwd_kernel<kBf16, D, kStages, BM, false>;
  const auto cut_kernel = flash_bwd_kernel<kBf16, D, kStages, BM, BM != kBwdBlockMMasked>;
  constexpr int smem = BwdSmem<D, kStages, BM>::kBytes;
  for (auto kernel : {uncut_kernel, cut_kernel})
    if ((e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem)) != cudaSuccess)
      return e;
  // Launched as programmatic dependents, the pieces of a tail launch and the
  // conversion take the SMs that the launch before them frees.
  cudaLaunchAttribute dependent;
  dependent.id = cudaLaunchAttributeProgrammaticStreamSerialization;
  dependent.val.programmaticStreamSerializationAllowed = 1;
  if (blocks > 0) {
    if (cut.split > 1 && !cut_in_tail(cut, sms)) {
      cut_kernel<<<cut.items, kBwdThreads, smem, stream>>>(q_map, k_map, v_map, do_map, stats_map, dk_map,
                                                            dv_map, a);
    } else {
      const dim3 grid = persist ? dim3(std::min(cut.whole, sms)) : dim3(a.n_blocks, p.heads, p.batch);
      uncut_kernel<<<grid, kBwdThreads, smem, stream>>>(q_map, k_map, v_map, do_map, stats_map, dk_map, dv_map,
                                                         a);
      if (cut.split > 1 && (e = cudaPeekAtLastError()) == cudaSuccess) {
        a.cta_base = cut.whole;
        cudaLaunchConfig_t tail = {};
        tail.gridDim = dim3(cut.items - cut.whole);
        tail.blockDim = dim3(kBwdThreads);
        tail.dynamicSmemBytes = smem;
        tail.stream = stream;
        tail.attrs = &dependent;
        tail.numAttrs = 1;
        e = cudaLaunchKernelEx(&tail, cut_kernel, q_map, k_map, v_map, do_map, stats_map, dk_map, dv_map, a);
      }
    }
  }
  // A conversion launched after a failed launch would wait for its counters forever.
  if (e != cudaSuccess || (e = cudaPeekAtLastError()) != cudaSuccess) return e;

  // Each (batch, head) counts n_blocks * split shares (none without a launch).
  const unsigned expected = blocks > 0 ? unsigned(a.n_blocks) * unsigned(a.split) : 0u;
  cudaLaunchConfig_t config = {};
  config.gridDim = dim3(D / 64 * m_blocks, p.heads, p.batch);
  config.blockDim = dim3(128);
  config.stream = stream;
  config.attrs = &dependent;
  config.numAttrs = kConvertOverlaps<D> ? 1 : 0;
  // Earlier launches' errors were taken above; this one reports its own.
  return cudaLaunchKernelEx(&config, dq_convert_kernel<kBf16, D, BM>, static_cast<const float*>(p.dq_accum), p.dq,
                            int(p.heads), int(p.seqlen_q), float(p.softmax_scale),
                            static_cast<const unsigned*>(dq_done), expected);
}

template <bool kBf16, int D>
cudaError_t launch_bwd_for_mask(const BwdParams& p, cudaStream_t stream) {
  // At D = 64 more Q/dO stages fit, and the 64-row kernel needs a third: its
  // dK/dV stage (72 KB) is larger than the Q, dO and dS^T buffers are with
  // two (64 KB; the epilogue's static_assert). A fourth gains 3-6% causal
  // from 2k, unmasked within 1% (bnt4); it hung only with the one-way S/dP
  // turn (b64k4s), which b19 removed at D = 64.
  constexpr int kStages = D == 64 ? 4 : 2;
  if constexpr (D == 256) {
    return launch_bwd<kBf16, D, kStages, kBwdBlockM256>(p, stream);
  } else {
    const bool masked = has_mask(p);
    return masked ? launch_bwd<kBf16, D, kStages, kBwdBlockMMasked>(p, stream)
                  : launch_bwd<kBf16, D, kStages, kBwdBlockMFull>(p, stream);
  }
}

template <bool kBf16>
cudaError_t launch_bwd_for_head_dim(const BwdParams& p, cudaStream_t stream) {
  switch (p.head_dim) {
    case 64: return launch_bwd_for_mask<kBf16, 64>(p, stream);
    case 128: return launch_bwd_for_mask<kBf16, 128>(p, stream);
    case 256: return launch_bwd_for_mask<kBf16, 256>(p, stream);
  }
  return cudaErrorNotSupported;
}

}  // namespace

bool bwd_supported(const Shape& s) { return shape_covered(s); }

int64_t bwd_workspace_bytes(const Shape& s) {
  int sms = 0;
  if (!bwd_supported(s) || sm_count(&sms) != cudaSuccess) return 0;
  const int64_t blocks = key_block_count(s);
  if (blocks > INT32_MAX) return 0;
  return bwd_cut_bytes(plan_bwd(static_cast<int>(blocks), sms, s), s.head_dim);
}

cudaError_t run_bwd(const BwdParams& p, cudaStream_t stream) {
  if (!bwd_supported(p)) return cudaErrorNotSupported;
  return p.bf16 ? launch_bwd_for_head_dim<true>(p, stream) : launch_bwd_for_head_dim<false>(p, stream);
}

}  // namespace jfa_sm90
