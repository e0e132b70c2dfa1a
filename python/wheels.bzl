"""`flash_wheel`: one binary wheel per package (python/BUILD.bazel).

The wheel is built by rules_python's `py_wheel` rule (its implementation and
attributes, from python/private/py_wheel.bzl; `@rules_python//python:packaging.bzl`
wraps the same rule) with one change: its `_wheelmaker` tool is ours,
//python:wheelmaker, because Debian's copy of rules_python 0.22.1, which this
build uses offline, leaves out the //tools package where rules_python keeps it.
"""

load("@rules_python//python:packaging.bzl", "py_package")
load("@rules_python//python/private:py_wheel.bzl", "py_wheel_lib")  # buildifier: disable=bzl-visibility

py_wheel = rule(
    implementation = py_wheel_lib.implementation,
    doc = "rules_python's py_wheel rule, run with //python:wheelmaker.",
    attrs = dict(
        py_wheel_lib.attrs,
        _wheelmaker = attr.label(
            default = Label("//python:wheelmaker"),
            executable = True,
            cfg = "exec",
        ),
    ),
)

def _cc_header_impl(ctx):
    found = [
        f
        for f in ctx.attr.library[CcInfo].compilation_context.headers.to_list()
        if f.path.endswith("/" + ctx.attr.header)
    ]
    if len(found) != 1:
        fail("%s: %d headers named %s" % (ctx.attr.library.label, len(found), ctx.attr.header))
    return [DefaultInfo(files = depset(found))]

cc_header = rule(
    implementation = _cc_header_impl,
    doc = "One header of a cc_library, e.g. the Python headers' patchlevel.h.",
    attrs = {
        "header": attr.string(mandatory = True, doc = "its path's end, e.g. 'include/patchlevel.h'"),
        "library": attr.label(mandatory = True, providers = [CcInfo]),
    },
)

def flash_wheel(
        name,
        package,
        extension,
        version,
        python_tag,
        abi,
        platform,
        summary,
        python_header = None,
        **kwargs):
    """A wheel of the package `python/<package>/` (flash_package in package.bzl).

    Its root holds `<package>/` (the front end, `_binding.py`, the extension);
    its .dist-info the LICENSE and METADATA with `summary` and the README.
    Before the wheel is built, //python:wheel_metadata checks that `version`
    is the package's `__version__`, that `python_tag` is the Python of
    `python_header` (if given), and that the extension's library needs and
    symbol versions fit `platform`.

    Args:
      name: the py_wheel target.
      package: the py_library target and Python package, e.g. "jax_flash_attn".
      extension: the extension module's file name in the package.
      version: the distribution version.
      python_tag: e.g. "cp311".
      abi: e.g. "cp311" or "abi3".
      platform: e.g. "manylinux_2_34_x86_64".
      summary: the METADATA Summary.
      python_header: the patchlevel.h the extension was compiled against.
      **kwargs: further py_wheel attributes (requires, visibility, ...).
    """
    py_package(
        name = name + "_files",
        packages = ["python." + package],
        deps = [":" + package],
    )

    init = ":%s/__init__.py" % package
    extension = ":%s/%s" % (package, extension)
    srcs = [init, extension, "//:README.md"] + ([python_header] if python_header else [])
    native.genrule(
        name = name + "_metadata",
        srcs = srcs,
        outs = [name + "_metadata.txt"],
        cmd = " ".join([
            "$(execpath //python:wheel_metadata)",
            "--version=" + version,
            "--init=$(execpath %s)" % init,
            "--extension=$(execpath %s)" % extension,
            "--python_tag=" + python_tag,
            "--platform=" + platform,
            "--summary='%s'" % summary,
            "--readme=$(execpath //:README.md)",
            "--out=$@",
        ] + (["--python_header=$(execpath %s)" % python_header] if python_header else [])),
        tools = ["//python:wheel_metadata"],
    )

    py_wheel(
        name = name,
        distribution = package,
        version = version,
        python_tag = python_tag,
        abi = abi,
        platform = platform,
        deps = [":" + name + "_files"],
        strip_path_prefixes = ["python/"],
        description_file = ":" + name + "_metadata",
        extra_distinfo_files = {"//:LICENSE": "LICENSE"},
        license = "BSD-3-Clause",
        python_requires = ">=3.11",
        classifiers = [
            "Development Status :: 3 - Alpha",
            "Environment :: GPU :: NVIDIA CUDA",
            "License :: OSI Approved :: BSD License",
            "Operating System :: POSIX :: Linux",
            "Programming Language :: Python :: 3",
        ],
        **kwargs
    )
