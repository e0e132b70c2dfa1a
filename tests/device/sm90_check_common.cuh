// What tests/device/sm90_fwd_check.cu and sm90_bwd_check.cu share: error
// checks, element conversions and seeded normal random inputs on the GPU.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <type_traits>

#define CK(x)                                                                       \
  do {                                                                              \
    cudaError_t e_ = (x);                                                           \
    if (e_ != cudaSuccess) {                                                        \
      printf("CUDA error %s at %s:%d\n", cudaGetErrorString(e_), __FILE__, __LINE__); \
      exit(1);                                                                      \
    }                                                                               \
  } while (0)

template <typename T>
__device__ float to_f(T x);
template <>
__device__ float to_f(__nv_bfloat16 x) { return __bfloat162float(x); }
template <>
__device__ float to_f(__half x) { return __half2float(x); }

template <typename T>
__global__ void to_float(const T* x, float* y, int64_t n) {
  int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (i < n) y[i] = to_f(x[i]);
}

template <typename T>
__global__ void fill_random(T* x, int64_t n, uint32_t seed) {
  int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (i < n) {
    uint32_t s = uint32_t(i) * 2654435761u ^ seed;
    s ^= s >> 13; s *= 0x5bd1e995; s ^= s >> 15;
    float u = (s & 0xFFFFFF) / float(1 << 24);
    s = s * 1664525u + 1013904223u;
    float w = (s & 0xFFFFFF) / float(1 << 24);
    float g = sqrtf(-2.f * logf(u + 1e-7f)) * cosf(6.2831853f * w);
    if constexpr (std::is_same_v<T, __nv_bfloat16>) x[i] = __float2bfloat16(g);
    else x[i] = __float2half(g);
  }
}

// Whether query i sees key j (window bounds relative to the bottom-right
// diagonal, negative: unbounded), as the kernels define it.
__device__ inline bool visible(int i, int j, int sq, int sk, int wl, int wr) {
  const int off = sk - sq;
  return (wl < 0 || j >= i + off - wl) && (wr < 0 || j <= i + off + wr);
}

// The max and the sum of exp(x - max) of a row of scaled scores (-inf where
// masked; a row that sees no key has max -inf and sum 0).
__device__ inline void row_max_and_sum(const float* scores, int n, float* max, float* sum) {
  float m = -INFINITY, l = 0.f;
  for (int j = 0; j < n; ++j) m = fmaxf(m, scores[j]);
  for (int j = 0; j < n; ++j) l += m == -INFINITY ? 0.f : expf(scores[j] - m);
  *max = m;
  *sum = l;
}

// Milliseconds per call of `launch` (which enqueues one call on stream 0),
// timed by events over calls back to back, and the host's microseconds per
// call in *host_us. By default `iters` calls after three. JFA_BENCH_MS=N
// first runs calls for N ms and then times as many as fill N ms, closer to
// the benchmark tool's long samples: at d 128 the forward's 20-call default
// timed 512-4k about 10% faster than the tool did (H100, sixteenth session),
// and JFA_BENCH_MS=300 read +10 / +13 / +15 / +11 / +7 / +1% time at 512-16k
// against it (seventeenth session): a short burst likely runs at a higher
// clock than the card holds under sustained load at its power limit.
template <class Launch>
float time_calls(Launch launch, int iters, double* host_us = nullptr) {
  for (int i = 0; i < 3; ++i) CK(launch());
  cudaEvent_t e0, e1;
  CK(cudaEventCreate(&e0));
  CK(cudaEventCreate(&e1));
  auto timed = [&](int n) {
    CK(cudaEventRecord(e0));
    const auto host0 = std::chrono::steady_clock::now();
    for (int i = 0; i < n; ++i) launch();
    const double host = std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - host0).count();
    CK(cudaEventRecord(e1));
    CK(cudaEventSynchronize(e1));
    float ms = 0.f;
    CK(cudaEventElapsedTime(&ms, e0, e1));
    if (host_us) *host_us = host / n;
    return ms / n;
  };
  const char* env = getenv("JFA_BENCH_MS");
  const double span = env ? atof(env) : 0.0;
  float ms = timed(iters);
  if (span > 0) {
    const int n = static_cast<int>(span / ms) + 1;
    timed(n);  // the warm-up
    ms = timed(n);
  }
  CK(cudaEventDestroy(e0));
  CK(cudaEventDestroy(e1));
  return ms;
}
