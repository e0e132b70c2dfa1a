// Our Hopper-native (sm_90a) attention kernels, forward and backward: TMA
// loads, wgmma, and warp-specialised producer/consumer warpgroups.
// flash_api.cu dispatches to them on compute capability 9.0 for the cases they
// cover and to FlashAttention-2 otherwise.
//
// Every function is declared weak: a build without the sm_90a objects links,
// and then their addresses are null.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace jfa_sm90 {

// A call's sizes and options; its tensors are dense [batch, seq, heads,
// head_dim], as in the C ABI.
struct Shape {
  int batch;
  int seqlen_q;
  int seqlen_k;
  int heads;
  int heads_k;  // divides heads
  int head_dim;
  bool bf16;  // else float16
  float softmax_scale;
  // Query i sees key j when
  //   i + seqlen_k - seqlen_q - window_left <= j <= i + seqlen_k - seqlen_q + window_right,
  // a negative bound being unbounded. Causal is (-1, 0).
  int window_left;
  int window_right;
};

// How a launch ran the last round of its tiles (forward) or key blocks
// (backward): whole as planned, cut into pieces, or whole because the caller's
// scratch was smaller than the cut needs.
enum class LastRound { uncut, cut, uncut_for_scratch };

struct FwdParams : Shape {
  const void* q;
  const void* k;
  const void* v;
  void* out;
  float* lse;  // [batch, heads, seqlen_q]; +inf where a row sees no key
  // Scratch of fwd_workspace_bytes(...) bytes, uninitialised; without it
  // (null, or fewer bytes), a call's last round of tiles runs uncut.
  void* workspace;
  int64_t workspace_bytes;
  LastRound* last_round;  // when not null, where run_fwd says how that round ran
};

// Whether this build has a forward kernel for the shape's dtype and head dim.
// It does not look at the GPU.
__attribute__((weak)) bool fwd_supported(const Shape& s);

// Scratch the forward can use on the current device: some SMs would idle
// through the last round of tiles, which it then cuts into pieces whose
// partial results meet there.
__attribute__((weak)) int64_t fwd_workspace_bytes(const Shape& s);

// Launches the forward on `stream`; the GPU must be sm_90.
__attribute__((weak)) cudaError_t run_fwd(const FwdParams& p, cudaStream_t stream);

struct BwdParams : Shape {
  const void* q;
  const void* k;
  const void* v;
  const void* out;
  const void* dout;
  const float* lse;  // the forward's
  void* dq;
  void* dk;  // [batch, seqlen_k, heads, head_dim]: per query head; GQA callers sum groups
  void* dv;
  float* dq_accum;   // scratch: bwd_scratch_elems(...).dq_accum floats
  float* softmax_d;  // scratch: bwd_scratch_elems(...).row_stats floats
  // Scratch of bwd_workspace_bytes(...) bytes, uninitialised; without it
  // (null, or fewer bytes), a call's last round of key blocks runs uncut.
  void* workspace;
  int64_t workspace_bytes;
  LastRound* last_round;  // as FwdParams'
};

// Whether this build has a backward kernel for the shape's dtype and head dim.
__attribute__((weak)) bool bwd_supported(const Shape& s);

// Float32 scratch the backward needs: dq_accum holds dQ in blocks of 48, 64
// or 80 query rows, softmax_d the log-sum-exp and rowsum(dO * O) of every
// padded row (`rows` of each), then a counter per (batch, head).
struct BwdScratch {
  int64_t dq_accum;
  int64_t row_stats;
  int64_t rows;
};
inline BwdScratch bwd_scratch_elems(int64_t batch, int64_t heads, int64_t seqlen_q,
                                    int64_t head_dim) {
  const int64_t blocks[] = {48, 64, 80};
  int64_t padded = 0;
  for (const int64_t block : blocks) {
    const int64_t p = (seqlen_q + block - 1) / block * block;
    padded = p > padded ? p : padded;
  }
  const int64_t rows = batch * heads * padded;
  return {rows * head_dim, 2 * rows + batch * heads, rows};
}

// Scratch the backward can use on the current device, as fwd_workspace_bytes:
// it cuts the last round's key blocks into pieces of their query blocks.
__attribute__((weak)) int64_t bwd_workspace_bytes(const Shape& s);

// Launches the backward on `stream` (dq_accum need not be zeroed); the GPU must be sm_90.
__attribute__((weak)) cudaError_t run_bwd(const BwdParams& p, cudaStream_t stream);

}  // namespace jfa_sm90
