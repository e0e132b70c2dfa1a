// Standalone check of our Hopper backward (cpp/sm90/flash_bwd_sm90.cu) without
// JAX: dq, dk, dv against a float32 GPU reference on small shapes (max error
// over max |reference|, see max_rel), then, with any argument, CUDA-event timing on
// the benchmark shapes ("bench 64": head dim 64, with 32 heads, "bench 256" with 8; "stress D":
// those five times over, for hangs;
// "ncu [SEQ]": one point,
// 4k by default, for a profiler; "only D": no timing, the cases of head dim D; "time D": the
// unmasked timings alone; "few D HEADS SEQ": one point, batch 1, three times; JFA_UNCUT=1 times
// without scratch, so the last round of key blocks runs uncut). Build as
// tests/device/sm90_fwd_check.cu says.
#include "../../cpp/sm90/flash_fwd_sm90.cu"
#include "../../cpp/sm90/flash_bwd_sm90.cu"
#include "sm90_check_common.cuh"

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

// Per (query row, head, batch): P and dS rows to global, and dQ.
template <typename T>
__global__ void ref_rows(const T* q, const T* k, const T* v, const T* dout, float* P, float* dS,
                         float* dq, int sq, int sk, int h, int hk, int d, float scale, int wl, int wr) {
  extern __shared__ float sc[];  // sk scores, then sk dP
  float* dp = sc + sk;
  const int i = blockIdx.x, head = blockIdx.y, b = blockIdx.z, hh = head / (h / hk);
  const T* qr = q + ((int64_t(b) * sq + i) * h + head) * d;
  const T* dor = dout + ((int64_t(b) * sq + i) * h + head) * d;
  for (int j = threadIdx.x; j < sk; j += blockDim.x) {
    const T* kr = k + ((int64_t(b) * sk + j) * hk + hh) * d;
    const T* vr = v + ((int64_t(b) * sk + j) * hk + hh) * d;
    float s = 0, t = 0;
    for (int c = 0; c < d; ++c) { s += to_f(qr[c]) * to_f(kr[c]); t += to_f(dor[c]) * to_f(vr[c]); }
    sc[j] = visible(i, j, sq, sk, wl, wr) ? s * scale : -INFINITY;
    dp[j] = t;
  }
  __syncthreads();
  __shared__ float red[2];
  if (threadIdx.x == 0) {
    float m, l;
    row_max_and_sum(sc, sk, &m, &l);
    float D = 0;
    for (int j = 0; j < sk; ++j) {
      float pj = l > 0 && sc[j] != -INFINITY ? expf(sc[j] - m) / l : 0.f;
      D += pj * dp[j];
    }
    red[0] = m;
    red[1] = l;
    sc[2 * sk] = D;  // the slot after the dP row
  }
  __syncthreads();
  const float m = red[0], l = red[1], D = sc[2 * sk];
  const int64_t base = ((int64_t(b) * h + head) * sq + i) * sk;
  for (int j = threadIdx.x; j < sk; j += blockDim.x) {
    float pj = l > 0 && sc[j] != -INFINITY ? expf(sc[j] - m) / l : 0.f;
    P[base + j] = pj;
    dS[base + j] = pj * (dp[j] - D);
  }
  __syncthreads();
  for (int c = threadIdx.x; c < d; c += blockDim.x) {
    float acc = 0;
    for (int j = 0; j < sk; ++j) acc += dS[base + j] * to_f(k[((int64_t(b) * sk + j) * hk + hh) * d + c]);
    dq[((int64_t(b) * sq + i) * h + head) * d + c] = acc * scale;
  }
}

template <typename T>
__global__ void ref_cols(const T* q, const T* dout, const float* P, const float* dS, float* dk,
                         float* dv, int sq, int sk, int h, int d, float scale) {
  const int j = blockIdx.x, head = blockIdx.y, b = blockIdx.z;
  for (int c = threadIdx.x; c < d; c += blockDim.x) {
    float a = 0, g = 0;
    for (int i = 0; i < sq; ++i) {
      const int64_t pi = ((int64_t(b) * h + head) * sq + i) * sk + j;
      a += dS[pi] * to_f(q[((int64_t(b) * sq + i) * h + head) * d + c]);
      g += P[pi] * to_f(dout[((int64_t(b) * sq + i) * h + head) * d + c]);
    }
    dk[((int64_t(b) * sk + j) * h + head) * d + c] = a * scale;
    dv[((int64_t(b) * sk + j) * h + head) * d + c] = g;
  }
}



double max_abs(const std::vector<float>& r) {
  double m = 0;
  for (float x : r) m = std::max(m, double(fabsf(x)));
  return m;
}

// Max error over max(max |reference|, floor): dq and dk take dv's scale as
// their floor, since a (0, 0) window makes them vanish in exact arithmetic
// while the kernel's rounding noise stays on the scale of the gradients.
double max_rel(const std::vector<float>& a, const std::vector<float>& r, double floor, bool* bad) {
  double e = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    if (!std::isfinite(a[i])) *bad = true;
    e = std::max(e, double(fabsf(a[i] - r[i])));
  }
  return e / std::max({max_abs(r), floor, 1e-6});
}

template <typename T>
std::vector<float> to_host(const T* x, int64_t n) {
  float* f; CK(cudaMalloc(&f, n * 4));
  to_float<T><<<(n + 255) / 256, 256>>>(x, f, n);
  std::vector<float> h(n); CK(cudaMemcpy(h.data(), f, n * 4, cudaMemcpyDeviceToHost)); cudaFree(f);
  return h;
}
std::vector<float> to_host_f(const float* x, int64_t n) {
  std::vector<float> h(n); CK(cudaMemcpy(h.data(), x, n * 4, cudaMemcpyDeviceToHost)); return h;
}

template <typename T>
bool check(bool bf16, int b, int sq, int sk, int h, int hk, int d, int wl, int wr, uint32_t seed) {
  const int64_t nq = int64_t(b) * sq * h * d, nk = int64_t(b) * sk * hk * d, nkh = int64_t(b) * sk * h * d;
  T *q, *k, *v, *o, *dout, *dq, *dk, *dv;
  float *lse, *acc, *sd, *P, *dS, *rq, *rk, *rv;
  CK(cudaMalloc(&q, nq * 2)); CK(cudaMalloc(&k, nk * 2)); CK(cudaMalloc(&v, nk * 2));
  CK(cudaMalloc(&o, nq * 2)); CK(cudaMalloc(&dout, nq * 2)); CK(cudaMalloc(&dq, nq * 2));
  CK(cudaMalloc(&dk, nkh * 2)); CK(cudaMalloc(&dv, nkh * 2));
  const jfa_sm90::BwdScratch scratch = jfa_sm90::bwd_scratch_elems(b, h, sq, d);
  CK(cudaMalloc(&lse, int64_t(b) * h * sq * 4)); CK(cudaMalloc(&acc, scratch.dq_accum * 4)); CK(cudaMalloc(&sd, scratch.row_stats * 4));
  CK(cudaMalloc(&P, int64_t(b) * h * sq * sk * 4)); CK(cudaMalloc(&dS, int64_t(b) * h * sq * sk * 4));
  CK(cudaMalloc(&rq, nq * 4)); CK(cudaMalloc(&rk, nkh * 4)); CK(cudaMalloc(&rv, nkh * 4));
  fill_random<<<(nq + 255) / 256, 256>>>(q, nq, seed);
  fill_random<<<(nk + 255) / 256, 256>>>(k, nk, seed + 1);
  fill_random<<<(nk + 255) / 256, 256>>>(v, nk, seed + 2);
  fill_random<<<(nq + 255) / 256, 256>>>(dout, nq, seed + 3);
  CK(cudaMemset(dq, 0xFF, nq * 2)); CK(cudaMemset(dk, 0xFF, nkh * 2)); CK(cudaMemset(dv, 0xFF, nkh * 2));
  CK(cudaMemset(acc, 0xFF, scratch.dq_accum * 4));
  const float scale = 1.f / sqrtf(float(d));
  const jfa_sm90::Shape shape{b, sq, sk, h, hk, d, bf16, scale, wl, wr};
  jfa_sm90::FwdParams fp{shape, q, k, v, o, lse};
  CK(jfa_sm90::run_fwd(fp, 0));
  jfa_sm90::BwdParams bp{shape, q, k, v, o, dout, lse, dq, dk, dv, acc, sd};
  // Scratch poisoned too: a cut key block's pieces must read only what others wrote.
  bp.workspace_bytes = jfa_sm90::bwd_workspace_bytes(shape);
  if (bp.workspace_bytes) {
    CK(cudaMalloc(&bp.workspace, bp.workspace_bytes));
    CK(cudaMemset(bp.workspace, 0xFF, bp.workspace_bytes));
  }
  CK(jfa_sm90::run_bwd(bp, 0));
  CK(cudaDeviceSynchronize());
  ref_rows<T><<<dim3(sq, h, b), 128, (2 * sk + 1) * 4>>>(q, k, v, dout, P, dS, rq, sq, sk, h, hk, d, scale, wl, wr);
  CK(cudaDeviceSynchronize());
  // The reference's dK and dV are per query head; k and v index through the group.
  ref_cols<T><<<dim3(sk, h, b), 128>>>(q, dout, P, dS, rk, rv, sq, sk, h, d, scale);
  CK(cudaDeviceSynchronize());
  bool bad = false;
  const std::vector<float> ref_dv = to_host_f(rv, nkh);
  const double dv_scale = max_abs(ref_dv);
  double eq = max_rel(to_host(dq, nq), to_host_f(rq, nq), dv_scale, &bad);
  double ek = max_rel(to_host(dk, nkh), to_host_f(rk, nkh), dv_scale, &bad);
  double ev = max_rel(to_host(dv, nkh), ref_dv, 0, &bad);
  const double tol = bf16 ? 3e-2 : 6e-3;
  bool ok = !bad && eq < tol && ek < tol && ev < tol;
  if (bp.workspace_bytes) {  // cut key blocks add their pieces in a fixed order: dK and dV the same bits again
    std::vector<uint16_t> first(2 * nkh), again(2 * nkh);
    CK(cudaMemcpy(first.data(), dk, nkh * 2, cudaMemcpyDeviceToHost));
    CK(cudaMemcpy(first.data() + nkh, dv, nkh * 2, cudaMemcpyDeviceToHost));
    for (int rep = 0; rep < 3 && ok; ++rep) {
      CK(jfa_sm90::run_bwd(bp, 0));
      CK(cudaMemcpy(again.data(), dk, nkh * 2, cudaMemcpyDeviceToHost));
      CK(cudaMemcpy(again.data() + nkh, dv, nkh * 2, cudaMemcpyDeviceToHost));
      if (memcmp(first.data(), again.data(), 4 * nkh) != 0) {
        printf("cut key blocks: a repeated call changed dK or dV\n");
        ok = false;
      }
    }
  }
  printf("%s %s b=%d sq=%d sk=%d h=%d hk=%d d=%d win=(%d,%d): dq %.2e dk %.2e dv %.2e (max err / max |ref|)%s%s\n",
         ok ? "PASS" : "FAIL", bf16 ? "bf16" : "fp16", b, sq, sk, h, hk, d, wl, wr, eq, ek, ev, bad ? " non-finite" : "",
         bp.workspace_bytes ? " (cut key blocks)" : "");
  cudaFree(bp.workspace);
  for (void* x : {(void*)q, (void*)k, (void*)v, (void*)o, (void*)dout, (void*)dq, (void*)dk, (void*)dv, (void*)lse, (void*)acc,
                  (void*)sd, (void*)P, (void*)dS, (void*)rq, (void*)rk, (void*)rv}) cudaFree(x);
  return ok;
}

void bench(int seq, bool causal, int d = 128, int h = 0, int tokens = 16384) {
  if (h == 0) h = 16 * 128 / d;  // the same FLOPs at every head dim
  const int b = tokens / seq;
  const int64_t n = int64_t(b) * seq * h * d;
  __nv_bfloat16 *q, *k, *v, *o, *dout, *dq, *dk, *dv;
  float *lse, *acc, *sd;
  for (auto pp : {&q, &k, &v, &o, &dout, &dq, &dk, &dv}) CK(cudaMalloc(pp, n * 2));
  const jfa_sm90::BwdScratch scratch = jfa_sm90::bwd_scratch_elems(b, h, seq, d);
  CK(cudaMalloc(&lse, int64_t(b) * h * seq * 4)); CK(cudaMalloc(&sd, scratch.row_stats * 4)); CK(cudaMalloc(&acc, scratch.dq_accum * 4));
  fill_random<<<(n + 255) / 256, 256>>>(q, n, 1);
  fill_random<<<(n + 255) / 256, 256>>>(k, n, 2);
  fill_random<<<(n + 255) / 256, 256>>>(v, n, 3);
  fill_random<<<(n + 255) / 256, 256>>>(dout, n, 4);
  const float scale = 1.f / sqrtf(float(d));
  const int wr = causal ? 0 : -1;
  const jfa_sm90::Shape shape{b, seq, seq, h, h, d, true, scale, -1, wr};
  jfa_sm90::FwdParams fp{shape, q, k, v, o, lse};
  CK(jfa_sm90::run_fwd(fp, 0));
  jfa_sm90::BwdParams bp{shape, q, k, v, o, dout, lse, dq, dk, dv, acc, sd};
  const char* uncut = getenv("JFA_UNCUT");
  if (!(uncut && *uncut == '1') && (bp.workspace_bytes = jfa_sm90::bwd_workspace_bytes(shape)))
    CK(cudaMalloc(&bp.workspace, bp.workspace_bytes));
  const float ms = time_calls([&] { return jfa_sm90::run_bwd(bp, 0); }, 10);
  double flops = 2.5 * 4.0 * b * h * double(seq) * seq * d * (causal ? 0.5 : 1.0);
  printf("bench bwd bf16 d=%d seq=%5d batch=%2d heads=%2d %s: %.4f ms, %.1f TFLOPS%s\n", d, seq, b, h,
         causal ? "causal" : "full  ", ms, flops / ms / 1e9, bp.workspace_bytes ? " (cut)" : "");
  for (void* x : {bp.workspace, (void*)q, (void*)k, (void*)v, (void*)o, (void*)dout, (void*)dq, (void*)dk, (void*)dv, (void*)lse, (void*)acc, (void*)sd}) cudaFree(x);
}

int main(int argc, char** argv) {
  setvbuf(stdout, nullptr, _IOLBF, 0);  // a run killed by a timeout keeps every line it printed
  if (argc > 1 && std::string(argv[1]) == "ncu") { bench(argc > 2 ? atoi(argv[2]) : 4096, false); return 0; }
  if (argc > 4 && std::string(argv[1]) == "few") {
    for (int r = 0; r < 3; ++r) bench(atoi(argv[4]), false, atoi(argv[2]), atoi(argv[3]), atoi(argv[4]));
    return 0;
  }
  if (argc > 2 && std::string(argv[1]) == "time") {
    for (int seq : {512, 1024, 2048, 4096, 8192, 16384}) bench(seq, false, atoi(argv[2]));
    return 0;
  }
  int fails = 0, seed = 99;
  struct Case { int b, sq, sk, h, hk, d, wl, wr; };
  std::vector<Case> cases = {
      {1, 128, 128, 1, 1, 128, -1, -1}, {2, 300, 300, 4, 2, 128, -1, -1},
      {1, 1000, 1000, 2, 2, 128, -1, 0}, {1, 77, 500, 2, 1, 128, -1, 0},
      {1, 500, 77, 2, 1, 128, -1, 0},  {2, 1024, 1024, 2, 2, 128, 100, 50},
      {1, 1, 300, 2, 2, 128, -1, -1},  {1, 513, 700, 3, 1, 128, 0, 0},
      {1, 200, 40, 2, 2, 128, 10, 0},
      {1, 128, 128, 1, 1, 64, -1, -1},  {2, 300, 1000, 4, 2, 64, -1, -1},
      {1, 1000, 1000, 2, 2, 64, -1, 0}, {1, 500, 77, 2, 1, 64, -1, 0},
      {2, 1024, 1024, 2, 2, 64, 100, 50}, {1, 513, 700, 3, 1, 64, 0, 0},
      {1, 128, 128, 1, 1, 256, -1, -1}, {2, 300, 1000, 4, 2, 256, -1, -1},
      {1, 1000, 1000, 2, 2, 256, -1, 0}, {1, 77, 500, 2, 1, 256, -1, 0},
      {1, 500, 77, 2, 1, 256, -1, 0},  {2, 1024, 1024, 2, 2, 256, 100, 50},
      {1, 513, 700, 3, 1, 256, 0, 0},  {1, 200, 40, 2, 2, 256, 10, 0},
      // Unmasked with SMs idle in the last round: its key blocks cut into
      // pieces of their query blocks (on 132 SMs: halves; halves after a
      // whole round, with GQA; quarters at d 64 with partial last blocks;
      // halves at d 256).
      {1, 4096, 4096, 2, 2, 128, -1, -1}, {1, 3000, 1100, 16, 4, 128, -1, -1},
      {1, 4100, 700, 4, 2, 64, -1, -1},   {1, 2100, 500, 4, 1, 256, -1, -1},
      // Three whole rounds, then 20 key blocks in halves (d 128; quarters at
      // d 256): the rounds in the uncut kernel, the pieces in a tail launch
      // of the cut one.
      {1, 4096, 1024, 52, 4, 128, -1, -1}, {1, 4096, 512, 52, 4, 256, -1, -1},
      // Uncut and unmasked over several rounds, d 128 from 1024 queries: the
      // persistent kernel's CTAs walk 9 or 10 key blocks (GQA, partial last
      // key and query blocks).
      {2, 1100, 2000, 40, 8, 128, -1, -1},
  };
  // "only D": the cases of head dim D alone (for compute-sanitizer).
  const int only = argc > 2 && std::string(argv[1]) == "only" ? atoi(argv[2]) : 0;
  for (const Case& c : cases) {
    if (only && c.d != only) continue;
    fails += !check<__nv_bfloat16>(true, c.b, c.sq, c.sk, c.h, c.hk, c.d, c.wl, c.wr, seed++);
    fails += !check<__half>(false, c.b, c.sq, c.sk, c.h, c.hk, c.d, c.wl, c.wr, seed++);
  }
  printf("%d failures\n", fails);
  if (argc > 1 && !only) {
    const int d = argc > 2 ? atoi(argv[2]) : 128;  // "bench 64": head dim 64
    // "stress D": the timing shapes five times over. A consumer running ahead of the other
    // (b19's hang) needs long calls, which the check cases are too short for; run it under
    // `timeout`.
    const int rounds = std::string(argv[1]) == "stress" ? 5 : 1;
    for (int round = 0; round < rounds; ++round) {
      for (int seq : {512, 1024, 2048, 4096, 8192, 16384}) bench(seq, false, d);
      for (int seq : {512, 1024, 2048, 4096, 8192, 16384}) bench(seq, true, d);
    }
  }
  return fails != 0;
}
