// Stand-in for PyTorch's <c10/cuda/CUDAException.h>, which the FlashAttention-2
// launch templates include for their error-checking macros. We have no
// PyTorch: a failed CUDA call throws jfa::CudaError, and the C ABI in
// cpp/flash_api.cc turns it into an error string for the caller.
#pragma once

#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

namespace jfa {

class CudaError : public std::runtime_error {
 public:
  CudaError(cudaError_t status, const char* file, int line)
      : std::runtime_error(std::string("CUDA error: ") + cudaGetErrorString(status) + " at " +
                           file + ":" + std::to_string(line)) {}
};

}  // namespace jfa

#define C10_CUDA_CHECK(EXPR)                                             \
  do {                                                                   \
    const cudaError_t jfa_status_ = (EXPR);                              \
    if (jfa_status_ != cudaSuccess) {                                    \
      throw ::jfa::CudaError(jfa_status_, __FILE__, __LINE__);           \
    }                                                                    \
  } while (0)

// Peek, not get: a launch error is sticky for this launch only, and the
// caller's stream may hold unrelated errors we must not swallow.
#define C10_CUDA_KERNEL_LAUNCH_CHECK() C10_CUDA_CHECK(cudaPeekAtLastError())
