"""`local_python`: the C headers of the python3 on PATH, for the pybind11 extension.

An extension module must be compiled against the Python that imports it, so
this follows the interpreter that runs the tests rather than pinning one.
"""

_BUILD = """\
# {version} at {include}
cc_library(
    name = "python_headers",
    hdrs = glob(["include/**/*.h"]),
    includes = ["include"],
    visibility = ["//visibility:public"],
)
"""

def _local_python_impl(rctx):
    python = rctx.which("python3")
    if not python:
        fail("python3 not found on PATH")
    res = rctx.execute([python, "-c", "import sys, sysconfig; print(sysconfig.get_paths()['include']); print(sys.version.split()[0])"])
    if res.return_code != 0:
        fail(res.stderr)
    include, version = res.stdout.strip().split("\n")
    rctx.symlink(include, "include")
    rctx.file("BUILD.bazel", _BUILD.format(include = include, version = "Python " + version))

local_python = repository_rule(
    implementation = _local_python_impl,
    environ = ["PATH"],
    local = True,
)
