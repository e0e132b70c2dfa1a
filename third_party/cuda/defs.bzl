"""A small `cuda_library`, standing in for rules_cuda's.

rules_cuda cannot be fetched on our build machines, so this file provides the
one rule we need with the same name and the attributes we use (srcs, hdrs,
deps, copts, defines, includes). Switching to rules_cuda means changing the
load() line in cpp/BUILD.bazel to "@rules_cuda//cuda:defs.bzl" and dropping
this file, and pinning the Hopper kernels to sm_90a another way: `archs`
below is ours.

Each .cu file is compiled by nvcc from @cuda in its own action (so Bazel runs
them in parallel and caches each), for every architecture named by
--//cpp:cuda_archs, with the include paths and defines of `deps`. The objects
become an ordinary cc_library linked with the static CUDA runtime.

`archs` (ours) overrides --//cpp:cuda_archs for one target: code that uses an
architecture-specific feature set, such as Hopper's wgmma and setmaxnreg,
which exist only for sm_90a (not for plain sm_90, nor any later GPU), is
compiled for that one architecture whatever the build's list says.
"""

load("@bazel_skylib//rules:common_settings.bzl", "BuildSettingInfo")
load("@bazel_tools//tools/cpp:toolchain_utils.bzl", "find_cpp_toolchain", "use_cpp_toolchain")
load("@rules_cc//cc:defs.bzl", "cc_library")

_NVCC_FLAGS = [
    "-std=c++17",
    "-O3",
    "--use_fast_math",
    "--expt-relaxed-constexpr",
    "--expt-extended-lambda",
    "-Xcompiler=-fPIC",
    "-DNDEBUG",
    # CUTLASS 3.x still names CUDA 13's deprecated vector types.
    "-Xcompiler=-Wno-deprecated-declarations",
]

def _gencode_flags(archs):
    # SASS for each architecture, no PTX: "sm_90a" gives
    # -gencode=arch=compute_90a,code=sm_90a (the "a" must be on both sides).
    flags = []
    for arch in archs:
        number = arch[3:-1] if arch.endswith("a") else arch[3:]
        if not arch.startswith("sm_") or not number.isdigit():
            fail("CUDA architecture %r is not of the form sm_90 or sm_90a" % arch)
        flags.append("-gencode=arch=compute_{0},code=sm_{0}".format(arch[3:]))
    return flags

def _host_compiler(cc_toolchain):
    # nvcc wants a C++ driver; the toolchain names the C one.
    path = cc_toolchain.compiler_executable
    if path.endswith("/gcc"):
        path = path[:-len("gcc")] + "g++"
    return path

def _cuda_objects_impl(ctx):
    cc_toolchain = find_cpp_toolchain(ctx)
    archs = ctx.attr.archs or ctx.attr._archs[BuildSettingInfo].value
    compilation_contexts = [d[CcInfo].compilation_context for d in ctx.attr.deps if CcInfo in d]
    include_flags, defines, headers = [], [], []
    for cc in compilation_contexts:
        for path in cc.includes.to_list() + cc.quote_includes.to_list() + cc.system_includes.to_list():
            include_flags.append("-I" + path)
        defines += ["-D" + d for d in cc.defines.to_list()]
        headers.append(cc.headers)
    flags = _NVCC_FLAGS + _gencode_flags(archs) + ["-ccbin=" + _host_compiler(cc_toolchain)] + \
            include_flags + defines + ["-D" + d for d in ctx.attr.defines] + ctx.attr.copts
    inputs = depset(ctx.files._toolkit, transitive = headers + [cc_toolchain.all_files])
    objects = []
    for src in ctx.files.srcs:
        obj = ctx.actions.declare_file("_objs/%s/%s.o" % (ctx.label.name, src.basename))
        ctx.actions.run(
            executable = ctx.executable._nvcc,
            arguments = flags + ["-c", src.path, "-o", obj.path],
            inputs = depset([src], transitive = [inputs]),
            outputs = [obj],
            mnemonic = "NvccCompile",
            progress_message = "nvcc %s for %s" % (src.short_path, ",".join(archs)),
            # nvcc runs the host compiler, which runs the assembler from PATH.
            use_default_shell_env = True,
            # FlashAttention kernel files take several GB each to compile.
            resource_set = _nvcc_resources,
        )
        objects.append(obj)
    return [DefaultInfo(files = depset(objects))]

def _nvcc_resources(_os, _inputs):
    return {"cpu": 1, "memory": 5000}

_cuda_objects = rule(
    implementation = _cuda_objects_impl,
    attrs = {
        "srcs": attr.label_list(allow_files = [".cu"]),
        "deps": attr.label_list(providers = [CcInfo]),
        "copts": attr.string_list(),
        "defines": attr.string_list(),
        "archs": attr.string_list(),
        "_archs": attr.label(default = "//cpp:cuda_archs"),
        "_nvcc": attr.label(default = "@cuda//:nvcc", executable = True, cfg = "exec", allow_single_file = True),
        "_toolkit": attr.label(default = "@cuda//:compiler_files", cfg = "exec"),
        "_cc_toolchain": attr.label(default = "@bazel_tools//tools/cpp:current_cc_toolchain"),
    },
    toolchains = use_cpp_toolchain(),
    fragments = ["cpp"],
)

def cuda_library(name, srcs, hdrs = [], deps = [], copts = [], defines = [], includes = [], archs = [], **kwargs):
    """A cc_library whose .cu sources are compiled by nvcc (see the file docstring).

    archs: e.g. ["sm_90a"]; empty: --//cpp:cuda_archs.
    """
    _cuda_objects(
        name = name + "_cuda_objects",
        srcs = srcs,
        deps = deps + ["@cuda//:cuda_headers"],
        copts = copts,
        defines = defines,
        archs = archs,
        tags = kwargs.get("tags", []),
    )
    cc_library(
        name = name,
        srcs = [":%s_cuda_objects" % name],
        hdrs = hdrs,
        includes = includes,
        deps = deps + ["@cuda//:cudart_static"],
        linkstatic = True,
        **kwargs
    )
