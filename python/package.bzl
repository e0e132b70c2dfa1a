"""`flash_package`: one Python package = the shared front end + one binding.

The front end (python/frontend/*.py) is written once; each package gets its
own copy of it, its `_binding.py` naming the extension module, and the
extension itself, so the two packages install side by side.
"""

load("@bazel_skylib//rules:copy_file.bzl", "copy_file")
load("@rules_python//python:defs.bzl", "py_library")

def flash_package(name, extension, visibility = None):
    """Declares py_library `name` with the package directory python/<name>/."""
    srcs = []
    for src in native.glob(["frontend/*.py"]):
        out = "%s/%s" % (name, src.split("/")[-1])
        copy_file(name = "_%s_%s" % (name, src.split("/")[-1]), src = src, out = out)
        srcs.append(out)
    ext_name = Label(extension).name
    copy_file(name = "_%s_extension" % name, src = extension, out = "%s/%s" % (name, ext_name))
    py_library(
        name = name,
        srcs = srcs + ["%s/_binding.py" % name],
        data = ["%s/%s" % (name, ext_name)],
        imports = ["."],
        visibility = visibility,
    )
