"""Builds the Python packages on a GPU host that has nvcc and Python but no Bazel.

The lent H100 we test on has CUDA 13.0, Python 3.12, pybind11 and jaxlib, but
neither Bazel nor network, and a pybind11 extension must be compiled for the
Python that imports it: here, or on a CPU host under the same Python with jax
and jaxlib of the same version (FFI headers), pybind11, and --cuda at a CUDA
13.0 toolkit (the PyPI wheels' nvidia/cu13 will do). This script mirrors, for
such hosts only, what cpp/BUILD.bazel and third_party/cuda/defs.bzl do (keep
the nvcc flags in step): nvcc compiles the selected FlashAttention-2 kernels
from the flash-attn sdist, with sm_90 among --archs our Hopper kernels
(cpp/sm90/*.cu, for sm_90a only; --no-sm90 leaves it out, as
--//cpp:sm90_kernels=false), and the C ABI; g++ the pybind11 binding, and the
packages are assembled as python/package.bzl assembles them. A Rust extension
built elsewhere with Bazel (abi3) can be added with --rust-extension.

usage: gpu_build.py --sdist flash_attn-2.8.3.post2.tar.gz --out build/site
                    [--head-dims 64,128,256] [--dtypes fp16,bf16] [--archs sm_90] [--jobs 14] [--no-splitkv]
                    [--no-sm90] [--reuse]
"""

import argparse
import concurrent.futures
import glob
import os
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NVCC_FLAGS = ["-std=c++17", "-O3", "--use_fast_math", "--expt-relaxed-constexpr", "--expt-extended-lambda",
              "-Xcompiler=-fPIC", "-DNDEBUG", "-Xcompiler=-Wno-deprecated-declarations"]
# //cpp:torch_compat's define, seen by the targets that depend on it (not the Hopper kernels').
FA2_DEFINES = ["-DFLASHATTENTION_DISABLE_DROPOUT"]


def run(cmd):
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}\n{result.stdout}\n{result.stderr}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sdist", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--work", default="/tmp/jfa-build")
    ap.add_argument("--head-dims", default="128")
    ap.add_argument("--dtypes", default="bf16")
    ap.add_argument("--archs", default="sm_90")
    ap.add_argument("--jobs", type=int, default=os.cpu_count())
    ap.add_argument("--no-splitkv", dest="splitkv", action="store_false",
                    help="leave out the split-KV kernels (flash_mha_with_kvcache), as --//cpp:splitkv=false")
    ap.add_argument("--no-sm90", dest="sm90", action="store_false",
                    help="leave out our Hopper kernels (cpp/sm90), as --//cpp:sm90_kernels=false")
    ap.add_argument("--cuda", default=os.environ.get("CUDA_HOME", "/usr/local/cuda"))
    ap.add_argument("--rust-extension", help="a _jflash_attn_rust.so built by Bazel")
    ap.add_argument("--reuse", action="store_true",
                    help="keep an object in --work that is newer than its source and every header in cpp/ "
                         "(a variant of one kernel file then builds in minutes on a warm machine); flags "
                         "and --archs are not compared, so rerun with the build's own arguments")
    args = ap.parse_args()

    os.makedirs(args.work, exist_ok=True)
    with tarfile.open(args.sdist) as tar:
        tar.extractall(args.work, filter="data")
    src = os.path.join(args.work, os.path.basename(args.sdist)[: -len(".tar.gz")], "csrc")
    archs = args.archs.split(",")
    # flash_api.cu refers to the Hopper kernels through cpp/sm90's interface header.
    includes = [f"-I{ROOT}/cpp/include", f"-I{ROOT}/cpp/compat", f"-I{ROOT}/cpp/sm90", f"-I{src}/flash_attn/src",
                f"-I{src}/cutlass/include", f"-I{args.cuda}/include"]
    # The Hopper kernels': their header, cute/ and cutlass/, cuda.h (CUtensorMap).
    sm90_includes = [f"-I{ROOT}/cpp/sm90", f"-I{src}/cutlass/include", f"-I{args.cuda}/include"]
    gencode = [f"-gencode=arch=compute_{a[3:]},code=sm_{a[3:]}" for a in archs]
    # wgmma and setmaxnreg exist only in sm_90a code: the Hopper kernels are built for
    # that alone, and only where the build is for sm_90 (as cpp/BUILD.bazel's select).
    sm90 = args.sm90 and bool({"sm_90", "sm_90a"} & set(archs))
    nvcc = os.path.join(args.cuda, "bin", "nvcc")

    # The longest files first (on the H200 host's 16 cores: split-KV about 6 min,
    # backward 3.5, forward 2), so that the pool stays busy to the end.
    passes = ("fwd_split", "bwd", "fwd") if args.splitkv else ("bwd", "fwd")
    # (path, flags): the Hopper kernels first, being long files.
    sources = [(path, [*NVCC_FLAGS, "-gencode=arch=compute_90a,code=sm_90a", *sm90_includes])
               for path in sorted(glob.glob(os.path.join(ROOT, "cpp", "sm90", "*.cu")))] if sm90 else []
    fa2_flags = [*NVCC_FLAGS, *FA2_DEFINES, *gencode, *includes]
    sources += [(f"{src}/flash_attn/src/flash_{p}_hdim{d}_{t}{c}_sm80.cu", fa2_flags)
                for p in passes for d in args.head_dims.split(",")
                for t in args.dtypes.split(",") for c in ("", "_causal")]
    sources.append((os.path.join(ROOT, "cpp", "flash_api.cu"), fa2_flags))

    headers = [p for p in glob.glob(os.path.join(ROOT, "cpp", "**", "*"), recursive=True) if p.endswith((".h", ".cuh"))]
    newest_header = max(map(os.path.getmtime, headers), default=0)

    def compile_cu(source):
        path, flags = source
        obj = os.path.join(args.work, os.path.basename(path) + ".o")
        if args.reuse and os.path.exists(obj) and os.path.getmtime(obj) > max(os.path.getmtime(path), newest_header):
            return obj
        start = time.time()
        run([nvcc, *flags, "-c", path, "-o", obj])
        print(f"  {time.time() - start:6.1f}s {os.path.basename(path)}", flush=True)
        return obj

    start = time.time()
    print(f"nvcc: {len(sources)} files on {args.jobs} jobs for {args.archs}"
          f"{' (Hopper kernels: sm_90a)' if sm90 else ''}", flush=True)
    with concurrent.futures.ThreadPoolExecutor(args.jobs) as pool:
        objects = list(pool.map(compile_cu, sources))
    buffers = os.path.join(args.work, "ffi_buffers.o")
    run(["g++", "-std=c++17", "-O2", "-fPIC", f"-I{ROOT}/cpp/include", "-c",
         os.path.join(ROOT, "cpp", "ffi_buffers.cc"), "-o", buffers])
    print(f"kernels compiled in {time.time() - start:.0f}s", flush=True)

    import jax
    import pybind11
    # A toolkit's lib64; the PyPI CUDA wheels (nvidia/cu13) have lib instead.
    cuda_lib = os.path.join(args.cuda, "lib64" if os.path.isdir(os.path.join(args.cuda, "lib64")) else "lib")
    site = os.path.abspath(args.out)
    package = os.path.join(site, "jax_flash_attn")
    assemble(package, os.path.join(ROOT, "python", "jax_flash_attn", "_binding.py"))
    run(["g++", "-std=c++17", "-O2", "-fPIC", "-shared", "-fvisibility=hidden",
         f"-I{ROOT}/cpp/include", f"-I{pybind11.get_include()}", f"-I{sysconfig.get_paths()['include']}",
         f"-I{jax.ffi.include_dir()}", f"-I{args.cuda}/include",
         os.path.join(ROOT, "cpp", "jax_flash_attn_cpp.cc"),
         "-Wl,--whole-archive", *objects, buffers, "-Wl,--no-whole-archive",
         f"-L{cuda_lib}", "-lcudart_static", "-ldl", "-lpthread", "-lrt", "-Wl,--exclude-libs,ALL",
         "-o", os.path.join(package, "_jax_flash_attn_cpp.so")])
    if args.rust_extension:
        rust = os.path.join(site, "jflash_attn")
        assemble(rust, os.path.join(ROOT, "python", "jflash_attn", "_binding.py"))
        shutil.copy(args.rust_extension, os.path.join(rust, "_jflash_attn_rust.so"))
    print(f"built {site} in {time.time() - start:.0f}s", flush=True)


def assemble(package, binding):
    os.makedirs(package, exist_ok=True)
    frontend = os.path.join(ROOT, "python", "frontend")
    for name in os.listdir(frontend):
        if name.endswith(".py"):
            shutil.copy(os.path.join(frontend, name), package)
    shutil.copy(binding, package)


if __name__ == "__main__":
    sys.exit(main())
