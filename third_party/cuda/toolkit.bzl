"""`cuda_toolkit`: the @cuda repository (nvcc, headers, static runtime).

Hermetic by default: NVIDIA's CUDA 13.0 wheels from the Python package index,
pinned by sha256, merged into one toolkit tree. With JFA_CUDA_PATH set (see
--config=local_cuda in .bazelrc) the repository links a local toolkit instead.
"""

load("//third_party:pypi_archive.bzl", "pypi_download")

_BUILD = """\
# CUDA toolkit: {origin}
package(default_visibility = ["//visibility:public"])

filegroup(name = "nvcc", srcs = ["bin/nvcc"])

# Everything an nvcc action reads.
filegroup(
    name = "compiler_files",
    srcs = glob(["bin/**", "nvvm/**", "include/**", "lib/**"], allow_empty = True),
)

cc_library(
    name = "cuda_headers",
    hdrs = glob(["include/**/*.h", "include/**/*.hpp"], allow_empty = True),
    includes = ["include"],
)

cc_library(
    name = "cudart_static",
    srcs = ["lib/libcudart_static.a"],
    linkopts = ["-ldl", "-lpthread", "-lrt"],
    deps = [":cuda_headers"],
)
"""

def _cuda_toolkit_impl(rctx):
    local = rctx.os.environ.get("JFA_CUDA_PATH", "")
    if local:
        root = rctx.path(local)
        if not root.get_child("bin").get_child("nvcc").exists:
            fail("JFA_CUDA_PATH=%s has no bin/nvcc" % local)
        for entry in root.readdir():
            rctx.symlink(entry, entry.basename)
        if not root.get_child("lib").exists:
            rctx.symlink(root.get_child("lib64"), "lib")
        origin = "local, " + local
    else:
        for package, (filename, sha256) in rctx.attr.wheels.items():
            pypi_download(rctx, package, filename, sha256, output = "wheels")
        for entry in rctx.path("wheels/nvidia/cu13").readdir():
            rctx.symlink(entry, entry.basename)
        rctx.execute(["chmod", "-R", "a+x", "wheels/nvidia/cu13/bin", "wheels/nvidia/cu13/nvvm/bin"])
        origin = "PyPI wheels " + ", ".join(sorted([f for f, _ in rctx.attr.wheels.values()]))
    rctx.file("BUILD.bazel", _BUILD.format(origin = origin))

cuda_toolkit = repository_rule(
    implementation = _cuda_toolkit_impl,
    attrs = {
        # package -> (file name, sha256)
        "wheels": attr.string_list_dict(mandatory = True),
    },
    environ = ["JFA_CUDA_PATH"],
)
