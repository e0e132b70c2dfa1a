"""Which FlashAttention-2 kernels a build compiles.

--//cpp:head_dims and --//cpp:dtypes pick kernel files from the flash-attn
sdist: a forward and a backward file, causal and not, per head dim and dtype,
and with --//cpp:splitkv (the default) the split-KV forward files that
flash_mha_with_kvcache runs.
The dispatcher in flash_api.cu refers to every kernel weakly and asks at run
time which ones were linked, so a request for a kernel this build did not
compile is a clear error rather than a link failure.
"""

load("@bazel_skylib//rules:common_settings.bzl", "BuildSettingInfo")

HEAD_DIMS = ["32", "64", "96", "128", "192", "256"]
DTYPES = ["fp16", "bf16"]

def _selection(ctx):
    head_dims = ctx.attr._head_dims[BuildSettingInfo].value
    dtypes = ctx.attr._dtypes[BuildSettingInfo].value
    for d in head_dims:
        if d not in HEAD_DIMS:
            fail("--//cpp:head_dims: %r is not one of %s" % (d, ", ".join(HEAD_DIMS)))
    for t in dtypes:
        if t not in DTYPES:
            fail("--//cpp:dtypes: %r is not one of %s" % (t, ", ".join(DTYPES)))
    return head_dims, dtypes

def _kernel_sources_impl(ctx):
    head_dims, dtypes = _selection(ctx)
    passes = ["fwd", "bwd"]
    if ctx.attr._splitkv[BuildSettingInfo].value:
        passes.append("fwd_split")
    wanted = {}
    for d in head_dims:
        for t in dtypes:
            for p in passes:
                for c in ["", "_causal"]:
                    wanted["flash_%s_hdim%s_%s%s_sm80.cu" % (p, d, t, c)] = True
    files = [f for f in ctx.files.srcs if f.basename in wanted]
    if len(files) != len(wanted):
        fail("kernel files missing from %s" % ctx.attr.srcs)
    return [DefaultInfo(files = depset(files))]

_FLAGS = {
    "_head_dims": attr.label(default = "//cpp:head_dims"),
    "_dtypes": attr.label(default = "//cpp:dtypes"),
    "_splitkv": attr.label(default = "//cpp:splitkv"),
}

flash_kernel_sources = rule(
    implementation = _kernel_sources_impl,
    attrs = dict(_FLAGS, srcs = attr.label_list(allow_files = [".cu"])),
)
