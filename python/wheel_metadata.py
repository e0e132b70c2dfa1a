"""Checks a wheel's extension and version, then writes its METADATA fragment.

Run by python/wheels.bzl before each wheel is built, so that a wheel whose
tags or version would be wrong is not built:

- the package's `__version__` (python/frontend/__init__.py) is the wheel's version;
- with --python_header, the Python the C++ extension was compiled against
  (its patchlevel.h) is the one the wheel's python tag names (cp311: 3.11);
- the extension's shared-library needs (`readelf -d`) are all on the
  manylinux allow-list (so no libcudart: the CUDA runtime is linked
  statically) and its symbol versions (`readelf -V`) are within the
  manylinux_2_X tag's: GLIBC_2.X, and the GLIBCXX/CXXABI/GCC versions of
  the GCC that the manylinux_2_X reference distribution ships (the limits of
  auditwheel's policy for that tag).

The fragment is METADATA header lines (Summary, Description-Content-Type), a
blank line, then the long description (the README), for python/wheelmaker.py.
"""

import argparse
import re
import subprocess

# libraries a manylinux wheel may need from the system (PEP 600's allow-list)
ALLOWED_LIBS = {
    "libc.so.6", "libm.so.6", "libmvec.so.1", "libdl.so.2", "librt.so.1", "libpthread.so.0",
    "libanl.so.1", "libnsl.so.1", "libutil.so.1", "libresolv.so.2", "libgcc_s.so.1",
    "libstdc++.so.6", "libatomic.so.1", "ld-linux-x86-64.so.2", "libz.so.1", "libexpat.so.1",
    "libGL.so.1", "libX11.so.6", "libXext.so.6", "libXrender.so.1", "libICE.so.6", "libSM.so.6",
    "libglib-2.0.so.0", "libgobject-2.0.so.0", "libgthread-2.0.so.0",
}
# manylinux_2_X -> newest GLIBCXX, CXXABI and GCC (libgcc_s) symbol versions allowed
GCC_LIMITS = {
    28: {"GLIBCXX": "3.4.24", "CXXABI": "1.3.11", "GCC": "7.0.0"},
    31: {"GLIBCXX": "3.4.28", "CXXABI": "1.3.12", "GCC": "7.0.0"},
    34: {"GLIBCXX": "3.4.29", "CXXABI": "1.3.13", "GCC": "7.0.0"},
    35: {"GLIBCXX": "3.4.30", "CXXABI": "1.3.13", "GCC": "12.0.0"},
}


def numbers(version):
    return tuple(int(part) for part in version.split("."))


def readelf(flag, path):
    return subprocess.run(["readelf", flag, "-W", path], check=True, capture_output=True,
                          text=True).stdout


def check_extension(path, platform):
    needed = set(re.findall(r"\(NEEDED\)\s+Shared library: \[(.*?)\]", readelf("-d", path)))
    if any(lib.startswith("libcudart") for lib in needed):
        raise SystemExit(f"{path} needs the shared CUDA runtime ({sorted(needed)}); "
                         "the wheels expect it linked statically (-lcudart_static)")
    match = re.fullmatch(r"manylinux_(\d+)_(\d+)_x86_64", platform)
    if not match:
        return  # linux_x86_64 and the like promise nothing
    glibc_minor = int(match.group(2))
    if not needed <= ALLOWED_LIBS:
        raise SystemExit(f"{path} needs {sorted(needed - ALLOWED_LIBS)}, not on the manylinux "
                         f"allow-list: {platform} would not be honest")
    limits = dict(GCC_LIMITS[glibc_minor], GLIBC=f"2.{glibc_minor}")
    needs = re.findall(r"Name: ([A-Z]+)_([0-9.]+)", readelf("-V", path).split(".gnu.version_r")[-1])
    too_new = sorted({f"{kind}_{v}" for kind, v in needs
                      if kind in limits and numbers(v) > numbers(limits[kind])})
    if too_new:
        raise SystemExit(f"{path} needs {too_new}, newer than {platform} allows ({limits}): "
                         "pick a newer manylinux tag in python/BUILD.bazel")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--version", required=True)
    p.add_argument("--init", required=True, help="the package's __init__.py")
    p.add_argument("--extension", required=True)
    p.add_argument("--python_tag", required=True)
    p.add_argument("--platform", required=True)
    p.add_argument("--python_header", help="patchlevel.h the extension was compiled against")
    p.add_argument("--summary", required=True)
    p.add_argument("--readme", required=True)
    p.add_argument("--out", required=True)
    args = p.parse_args()

    with open(args.init) as f:
        found = re.search(r'^__version__ = "(.*)"$', f.read(), re.M)
    if not found or found.group(1) != args.version:
        raise SystemExit(f"wheel version {args.version} (VERSION in python/BUILD.bazel) != "
                         f"__version__ {found and found.group(1)!r} in python/frontend/__init__.py")
    if args.python_header:
        with open(args.python_header) as f:
            header = f.read()
        major, minor = (re.search(rf"#define PY_{part}_VERSION\s+(\d+)", header).group(1)
                        for part in ("MAJOR", "MINOR"))
        if args.python_tag != f"cp{major}{minor}":
            raise SystemExit(f"the C++ extension is compiled against Python {major}.{minor} "
                             f"but the wheel's tag is {args.python_tag}: see CPYTHON in python/BUILD.bazel")
    check_extension(args.extension, args.platform)

    with open(args.readme) as f:
        readme = f.read()
    with open(args.out, "w") as f:
        f.write(f"Summary: {args.summary}\nDescription-Content-Type: text/markdown\n\n{readme}")


if __name__ == "__main__":
    main()
