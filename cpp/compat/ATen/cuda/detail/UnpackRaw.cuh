// Stand-in for PyTorch's <ATen/cuda/detail/UnpackRaw.cuh>: the forward kernel
// unpacks the dropout seed and offset from at::PhiloxCudaState with it.
#pragma once

#include <ATen/cuda/CUDAGeneratorImpl.h>

#include <tuple>

namespace at {
namespace cuda {
namespace philox {

__host__ __device__ __forceinline__ std::tuple<uint64_t, uint64_t> unpack(
    const at::PhiloxCudaState& state) {
  return std::make_tuple(state.seed, state.offset);
}

}  // namespace philox
}  // namespace cuda
}  // namespace at
