// Stand-in for PyTorch's <ATen/cuda/CUDAGeneratorImpl.h>. FlashAttention-2's
// params struct holds an at::PhiloxCudaState for dropout; we never enable
// dropout, so only a plain seed/offset pair is needed to make it compile.
#pragma once

#include <cstdint>

namespace at {

struct PhiloxCudaState {
  uint64_t seed = 0;
  uint64_t offset = 0;
};

}  // namespace at
