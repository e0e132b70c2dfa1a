// Standalone check of our Hopper forward (cpp/sm90/flash_fwd_sm90.cu) without
// JAX: out and lse against a float32 GPU reference on small shapes (both dtypes,
// head dims 64/128/256, causal, windows, GQA, rows that see no key), then, with
// any argument, CUDA-event timing on the benchmark shapes ("bench 64": every
// length at head dim 64; "ncu": only the 16k point, for a profiler; "only D": no
// timing, the cases of head dim D, for compute-sanitizer). On a GPU host:
//
//   nvcc -std=c++17 -O3 --use_fast_math --expt-relaxed-constexpr \
//     -gencode=arch=compute_90a,code=sm_90a -I<cutlass>/include \
//     tests/device/sm90_fwd_check.cu -o sm90_fwd_check && ./sm90_fwd_check bench
//
// (<cutlass>: the flash-attn sdist's csrc/cutlass.) docs/hopper-notes.md
// records what it measured.

#include "../../cpp/sm90/flash_fwd_sm90.cu"
#include "sm90_check_common.cuh"

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>



// One block per (row, head, batch); scores in shared memory.
template <typename T>
__global__ void reference(const T* q, const T* k, const T* v, float* out, float* lse, int sq,
                          int sk, int h, int hk, int d, float scale, int wl, int wr) {
  extern __shared__ float sc[];
  const int row = blockIdx.x, head = blockIdx.y, b = blockIdx.z, hkk = head / (h / hk);
  const T* qr = q + ((int64_t(b) * sq + row) * h + head) * d;
  for (int j = threadIdx.x; j < sk; j += blockDim.x) {
    float s = -INFINITY;
    if (visible(row, j, sq, sk, wl, wr)) {
      const T* kr = k + ((int64_t(b) * sk + j) * hk + hkk) * d;
      s = 0;
      for (int c = 0; c < d; ++c) s += to_f(qr[c]) * to_f(kr[c]);
      s *= scale;
    }
    sc[j] = s;
  }
  __syncthreads();
  __shared__ float red[2];
  if (threadIdx.x == 0) row_max_and_sum(sc, sk, &red[0], &red[1]);
  __syncthreads();
  const float m = red[0], l = red[1];
  for (int c = threadIdx.x; c < d; c += blockDim.x) {
    float acc = 0;
    if (l > 0)
      for (int j = 0; j < sk; ++j)
        if (sc[j] != -INFINITY) acc += expf(sc[j] - m) * to_f(v[((int64_t(b) * sk + j) * hk + hkk) * d + c]);
    out[((int64_t(b) * sq + row) * h + head) * d + c] = l > 0 ? acc / l : 0.f;
  }
  if (threadIdx.x == 0) lse[(int64_t(b) * h + head) * sq + row] = l > 0 ? m + logf(l) : INFINITY;
}



template <typename T>
bool check(bool bf16, int b, int sq, int sk, int h, int hk, int d, int wl, int wr, uint32_t seed) {
  int64_t nq = int64_t(b) * sq * h * d, nk = int64_t(b) * sk * hk * d;
  T *q, *k, *v, *o;
  float *lse, *ro, *rl, *of;
  CK(cudaMalloc(&q, nq * 2)); CK(cudaMalloc(&k, nk * 2)); CK(cudaMalloc(&v, nk * 2));
  CK(cudaMalloc(&o, nq * 2)); CK(cudaMalloc(&of, nq * 4)); CK(cudaMalloc(&ro, nq * 4));
  CK(cudaMalloc(&lse, int64_t(b) * h * sq * 4)); CK(cudaMalloc(&rl, int64_t(b) * h * sq * 4));
  fill_random<<<(nq + 255) / 256, 256>>>(q, nq, seed);
  fill_random<<<(nk + 255) / 256, 256>>>(k, nk, seed + 1);
  fill_random<<<(nk + 255) / 256, 256>>>(v, nk, seed + 2);
  CK(cudaMemset(o, 0xFF, nq * 2));  // poison: NaN
  CK(cudaMemset(lse, 0xFF, int64_t(b) * h * sq * 4));
  float scale = 1.f / sqrtf(float(d));
  jfa_sm90::FwdParams p{{b, sq, sk, h, hk, d, bf16, scale, wl, wr}, q, k, v, o, lse};
  // Scratch poisoned too: a cut tile's pieces must read only what others wrote.
  p.workspace_bytes = jfa_sm90::fwd_workspace_bytes(p);
  if (p.workspace_bytes) {
    CK(cudaMalloc(&p.workspace, p.workspace_bytes));
    CK(cudaMemset(p.workspace, 0xFF, p.workspace_bytes));
  }
  CK(jfa_sm90::run_fwd(p, 0));
  CK(cudaDeviceSynchronize());
  reference<T><<<dim3(sq, h, b), 128, sk * 4>>>(q, k, v, ro, rl, sq, sk, h, hk, d, scale, wl, wr);
  to_float<T><<<(nq + 255) / 256, 256>>>(o, of, nq);
  CK(cudaDeviceSynchronize());
  std::vector<float> a(nq), r(nq), la(int64_t(b) * h * sq), lr(la.size());
  CK(cudaMemcpy(a.data(), of, nq * 4, cudaMemcpyDeviceToHost));
  CK(cudaMemcpy(r.data(), ro, nq * 4, cudaMemcpyDeviceToHost));
  CK(cudaMemcpy(la.data(), lse, la.size() * 4, cudaMemcpyDeviceToHost));
  CK(cudaMemcpy(lr.data(), rl, lr.size() * 4, cudaMemcpyDeviceToHost));
  double eo = 0, el = 0;
  bool nan = false;
  for (int64_t i = 0; i < nq; ++i) {
    if (!std::isfinite(a[i])) nan = true;
    eo = std::max(eo, double(fabsf(a[i] - r[i])));
  }
  for (size_t i = 0; i < la.size(); ++i) {
    if (std::isinf(lr[i]) || std::isinf(la[i])) {
      if (la[i] != lr[i]) el = 1e9;
    } else el = std::max(el, double(fabsf(la[i] - lr[i])));
  }
  const double tol = bf16 ? 2e-2 : 4e-3;
  bool ok = !nan && eo < tol && el < 1e-2;
  if (p.workspace_bytes) {  // cut tiles fold their pieces in a fixed order: the same bits again
    std::vector<T> first(nq), again(nq);
    CK(cudaMemcpy(first.data(), o, nq * 2, cudaMemcpyDeviceToHost));
    for (int rep = 0; rep < 3 && ok; ++rep) {
      CK(jfa_sm90::run_fwd(p, 0));
      CK(cudaMemcpy(again.data(), o, nq * 2, cudaMemcpyDeviceToHost));
      if (memcmp(first.data(), again.data(), nq * 2) != 0) {
        printf("cut tiles: a repeated call changed the output\n");
        ok = false;
      }
    }
  }
  printf("%s %s b=%d sq=%d sk=%d h=%d hk=%d d=%d win=(%d,%d): out err %.2e lse err %.2e%s%s\n",
         ok ? "PASS" : "FAIL", bf16 ? "bf16" : "fp16", b, sq, sk, h, hk, d, wl, wr, eo, el,
         nan ? " (non-finite output)" : "", p.workspace_bytes ? " (cut tiles)" : "");
  cudaFree(p.workspace);
  cudaFree(q); cudaFree(k); cudaFree(v); cudaFree(o); cudaFree(of); cudaFree(ro); cudaFree(lse); cudaFree(rl);
  return ok;
}

void bench(int seq, int d, bool causal, int h = 16, int tokens = 16384) {
  const int b = tokens / seq;
  int64_t n = int64_t(b) * seq * h * d;
  __nv_bfloat16 *q, *k, *v, *o;
  float* lse;
  CK(cudaMalloc(&q, n * 2)); CK(cudaMalloc(&k, n * 2)); CK(cudaMalloc(&v, n * 2)); CK(cudaMalloc(&o, n * 2));
  CK(cudaMalloc(&lse, int64_t(b) * h * seq * 4));
  fill_random<<<(n + 255) / 256, 256>>>(q, n, 1);
  fill_random<<<(n + 255) / 256, 256>>>(k, n, 2);
  fill_random<<<(n + 255) / 256, 256>>>(v, n, 3);
  jfa_sm90::FwdParams p{{b, seq, seq, h, h, d, true, 1.f / sqrtf(float(d)), -1, causal ? 0 : -1}, q, k, v, o, lse};
  // JFA_UNCUT=1: no scratch, so the last round of tiles runs uncut (A/B).
  const char* uncut = getenv("JFA_UNCUT");
  if (!(uncut && *uncut == '1') && (p.workspace_bytes = jfa_sm90::fwd_workspace_bytes(p)))
    CK(cudaMalloc(&p.workspace, p.workspace_bytes));
  double host_us = 0;
  const float ms = time_calls([&] { return jfa_sm90::run_fwd(p, 0); }, 20, &host_us);
  double flops = 4.0 * b * h * double(seq) * seq * d * (causal ? 0.5 : 1.0);
  printf("bench bf16 d=%d seq=%5d batch=%2d heads=%2d %s: %.4f ms, %.1f TFLOPS, host %.1f us/launch\n", d, seq,
         b, h, causal ? "causal" : "full  ", ms, flops / ms / 1e9, host_us);
  cudaFree(q); cudaFree(k); cudaFree(v); cudaFree(o); cudaFree(lse); cudaFree(p.workspace);
}

int main(int argc, char** argv) {
  if (argc > 1 && std::string(argv[1]) == "ncu") { bench(16384, 128, false); return 0; }
  if (argc > 4 && std::string(argv[1]) == "few") {  // "few 128 HEADS SEQLEN": one point, batch 1
    for (int r = 0; r < 3; ++r) bench(atoi(argv[4]), atoi(argv[2]), false, atoi(argv[3]), atoi(argv[4]));
    return 0;
  }
  if (argc > 2 && std::string(argv[1]) == "time") {  // "time 128 [causal]": the timings alone
    const bool causal = argc > 3 && std::string(argv[3]) == "causal";
    for (int seq : {512, 1024, 2048, 4096, 8192, 16384}) bench(seq, atoi(argv[2]), causal);
    return 0;
  }
  int fails = 0, seed = 1234;
  struct Case { int b, sq, sk, h, hk, d, wl, wr; };
  std::vector<Case> cases = {
      {1, 128, 128, 1, 1, 128, -1, -1}, {2, 300, 300, 4, 2, 128, -1, -1},
      {1, 1000, 1000, 2, 2, 128, -1, 0}, {1, 77, 500, 2, 1, 128, -1, 0},
      {1, 500, 77, 2, 1, 128, -1, 0},  {2, 1024, 1024, 2, 2, 128, 100, 50},
      {1, 1, 300, 2, 2, 128, -1, -1},  {1, 513, 700, 3, 1, 128, 0, 0},
      {1, 256, 256, 2, 2, 64, -1, -1}, {1, 333, 1000, 2, 2, 64, -1, 0},
      {1, 256, 256, 2, 2, 256, -1, -1}, {1, 333, 1000, 2, 1, 256, -1, 0},
      {1, 200, 40, 2, 2, 128, 10, 0},
      // More tiles than SMs: the persistent launch gives each CTA several.
      {4, 1000, 1000, 16, 4, 128, -1, -1}, {2, 1024, 1024, 16, 16, 64, -1, -1},
      {2, 700, 900, 16, 8, 256, -1, -1},
      // Over 4k keys: unmasked O stored from registers; at d 64, 192-key blocks;
      // at d 128, unmasked calls take 176-key blocks (4500 and 4200 keys: a
      // partial last block); at d 256, causal calls take 80-key blocks
      // (unmasked ones at any length).
      {1, 300, 4500, 2, 1, 128, -1, -1}, {2, 1000, 4200, 16, 4, 128, -1, -1},
      {1, 200, 5000, 2, 2, 64, -1, -1}, {1, 700, 4500, 2, 1, 64, -1, 0},
      {1, 4200, 4200, 2, 2, 64, 300, 0}, {1, 700, 4500, 2, 1, 256, -1, 0},
      {1, 4200, 4200, 2, 2, 256, 300, 0},
      // Unmasked with SMs idle in the last round: its tiles cut into pieces
      // of their keys (on 132 SMs: 4, 2 with a whole round before, 4 at d 64,
      // 4 at d 256, a partial last key block).
      {1, 500, 3000, 8, 2, 128, -1, -1}, {1, 1216, 1216, 16, 4, 128, -1, -1},
      {1, 300, 4500, 16, 4, 64, -1, -1}, {1, 256, 2200, 4, 4, 256, -1, -1},
      {2, 100, 2100, 4, 1, 128, -1, -1},
      // d 64, unmasked, 512 queries or more: three consumer warpgroups (192-row tiles; a
      // partial last tile); over 4k keys O from registers, and more tiles than SMs, then cut.
      // (Masked from 2048 queries: 4200 x 4200 above and 2048 x 2048 below, from a queue.)
      {1, 2100, 2100, 4, 2, 64, -1, -1}, {1, 2100, 4500, 16, 4, 64, -1, -1},
      // Masked, more tiles than SMs: CTAs claim tiles from a queue.
      {4, 1000, 1000, 16, 4, 128, -1, 0}, {2, 2048, 2048, 16, 16, 64, 256, 0},
      {8, 600, 100, 16, 16, 128, -1, 0},  {3, 900, 1200, 12, 4, 256, 300, 10},
  };
  // "only D": the cases of head dim D alone (for compute-sanitizer).
  const int only = argc > 2 && std::string(argv[1]) == "only" ? atoi(argv[2]) : 0;
  // Twice: the second round's masked calls reuse queues (64 of them) that
  // earlier calls reset.
  for (int round = 0; round < 2; ++round) {
    for (const Case& c : cases) {
      if (only && c.d != only) continue;
      fails += !check<__nv_bfloat16>(true, c.b, c.sq, c.sk, c.h, c.hk, c.d, c.wl, c.wr, seed++);
      fails += !check<__half>(false, c.b, c.sq, c.sk, c.h, c.hk, c.d, c.wl, c.wr, seed++);
    }
  }
  printf("%d failures\n", fails);
  if (argc > 1 && !only) {
    const int d = argc > 2 ? atoi(argv[2]) : 128;  // "bench 64": every length at head dim 64
    for (int seq : {512, 1024, 2048, 4096, 8192, 16384}) bench(seq, d, false);
    for (int seq : {512, 1024, 2048, 4096, 8192, 16384}) bench(seq, d, true);
    if (argc == 2)
      for (int seq : {1024, 16384}) { bench(seq, 64, false); bench(seq, 256, false); }
  }
  return fails != 0;
}
