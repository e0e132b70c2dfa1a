"""The `deps` module extension: every external source and toolchain we build with.

Versions and sha256 sums are pinned here and nowhere else.
"""

load("//third_party:pypi_archive.bzl", "pypi_archive")
load("//third_party/cuda:toolkit.bzl", "cuda_toolkit")
load("//third_party:local_python.bzl", "local_python")

FLASH_ATTN_VERSION = "2.8.3.post2"

def _deps_impl(module_ctx):
    # FlashAttention-2 kernel sources (csrc/flash_attn/src) and the CUTLASS
    # headers they are written against (csrc/cutlass/include), from the sdist.
    pypi_archive(
        name = "flash_attn_src",
        package = "flash-attn",
        filename = "flash_attn-%s.tar.gz" % FLASH_ATTN_VERSION,
        sha256 = "d0f9f0b08a986cdeadbffcf5ec8b3a8f514366c68ad1853d3ab061bc83cc340b",
        strip_prefix = "flash_attn-%s" % FLASH_ATTN_VERSION,
        build_file = "//third_party:flash_attn.BUILD",
    )

    # XLA's FFI headers as jaxlib ships them (jax.ffi.include_dir()).
    pypi_archive(
        name = "xla_ffi_headers",
        package = "jaxlib",
        filename = "jaxlib-0.10.2-cp311-cp311-manylinux_2_27_x86_64.whl",
        sha256 = "1faca3c5d4662cb4a6130a68105d68bb520764817e165d6eebfd6786c0d1f30f",
        build_file = "//third_party:xla_ffi_headers.BUILD",
    )

    pypi_archive(
        name = "pybind11",
        package = "pybind11",
        filename = "pybind11-3.0.1-py3-none-any.whl",
        sha256 = "aa8f0aa6e0a94d3b64adfc38f560f33f15e589be2175e103c0a33c6bce55ee89",
        build_file = "//third_party:pybind11.BUILD",
    )

    # CUDA 13.0 from NVIDIA's wheels (hermetic), or a local toolkit when
    # JFA_CUDA_PATH is set (--config=local_cuda).
    cuda_toolkit(
        name = "cuda",
        wheels = {
            "nvidia-cuda-nvcc": ["nvidia_cuda_nvcc-13.0.88-py3-none-manylinux2014_x86_64.manylinux_2_17_x86_64.whl", "56fe502eb77625a12f25172caa3cdddb4e4c8ba2c8c17dba44b164761b380f03"],
            "nvidia-cuda-runtime": ["nvidia_cuda_runtime-13.0.88-py3-none-manylinux2014_x86_64.manylinux_2_17_x86_64.whl", "422a38f7c739ecbdd3a4b6ec7ed0a1d74db43d8e9bc26685f3d845638922b178"],
            "nvidia-cuda-cccl": ["nvidia_cuda_cccl-13.0.85-py3-none-manylinux2014_x86_64.manylinux_2_17_x86_64.whl", "e0da7ad981f3a8aff08241b5bfc1af868742a63e2762f53a5171c492ef242649"],
            "nvidia-cuda-crt": ["nvidia_cuda_crt-13.0.88-py3-none-manylinux2014_x86_64.manylinux_2_17_x86_64.whl", "2c8043c7c9e02492716426e9919fc78d2c5b3b2a7a768a88e952676b08aa55a4"],
            "nvidia-nvvm": ["nvidia_nvvm-13.0.88-py3-none-manylinux2010_x86_64.manylinux_2_12_x86_64.whl", "c5f41ffeb6466944a026dfa5317d7d85355c119bbec279205d22f1869d1054e0"],
        },
    )

    # Headers of the Python that runs the tests (python3 on PATH).
    local_python(name = "local_python")

deps = module_extension(implementation = _deps_impl)
