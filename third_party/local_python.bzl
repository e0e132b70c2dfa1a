"""`local_python`: the C headers of a CPython, for the pybind11 extension.

An extension module must be compiled against the Python that imports it, so
this follows the python3 on PATH rather than pinning one. To build the C++
wheel for another CPython, point JFA_PYTHON_INCLUDE at that Python's include
directory (the one holding Python.h and a complete pyconfig.h):

    bazel build //python:wheels --repo_env=JFA_PYTHON_INCLUDE=/path/to/include/python3.12

`@local_python//:defs.bzl` exports CPYTHON, the wheel tag of those headers
("cp312"), read from their patchlevel.h.
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

def _define(header, name):
    for line in header.splitlines():
        words = [w for w in line.replace("\t", " ").split(" ") if w]
        if len(words) >= 3 and words[0] == "#define" and words[1] == name:
            return words[2].strip('"')
    fail("patchlevel.h defines no " + name)

def _local_python_impl(rctx):
    include = rctx.os.environ.get("JFA_PYTHON_INCLUDE", "")
    if not include:
        python = rctx.which("python3")
        if not python:
            fail("python3 not found on PATH (or set JFA_PYTHON_INCLUDE)")
        res = rctx.execute([python, "-c", "import sysconfig; print(sysconfig.get_paths()['include'])"])
        if res.return_code != 0:
            fail(res.stderr)
        include = res.stdout.strip()
    header = rctx.read(include + "/patchlevel.h")
    major, minor = _define(header, "PY_MAJOR_VERSION"), _define(header, "PY_MINOR_VERSION")
    rctx.symlink(include, "include")
    rctx.file("BUILD.bazel", _BUILD.format(include = include, version = "Python " + _define(header, "PY_VERSION")))
    rctx.file("defs.bzl", 'CPYTHON = "cp%s%s"\n' % (major, minor))

local_python = repository_rule(
    implementation = _local_python_impl,
    environ = ["PATH", "JFA_PYTHON_INCLUDE"],
    local = True,
)
