"""Writes a wheel from the arguments of rules_python's `py_wheel` rule.

rules_python's py_wheel rule hands its work to a `wheelmaker` tool that
Debian's copy of rules_python 0.22.1 does not ship (it has no //tools
package), so python/wheels.bzl points the rule at this one. It implements the
command line that rule passes (python/private/py_wheel.bzl):

    --name --version --python_tag --abi --platform --out --name_file
    --input_file_list (lines "path/in/wheel;path/on/disk")
    --strip_path_prefix (repeated) --metadata_file --description_file
    --extra_distinfo_file (repeated "name;path") --entry_points_file
    --stable_status_file --volatile_status_file (with --stamp)

The description file is a METADATA fragment (python/wheel_metadata.py writes
it): header lines, a blank line, then the long description. The archive is
reproducible: sorted entries, fixed timestamps and modes.
"""

import argparse
import base64
import hashlib
import io
import itertools
import os
import re
import zipfile

EPOCH = (1980, 1, 1, 0, 0, 0)


def escape(segment):
    """A wheel file name segment: runs of characters other than letters, digits and '.' become '_'."""
    return re.sub(r"[^\w.]+", "_", segment, flags=re.ASCII)


def stamped(value, status_files):
    """Replaces {KEY} with the value of KEY in Bazel's workspace status files."""
    for path in status_files:
        if path:
            with open(path) as f:
                for line in f:
                    key, _, val = line.rstrip("\n").partition(" ")
                    value = value.replace("{%s}" % key, val)
    return value


def record_line(path, data):
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{path},sha256={digest},{len(data)}"


def metadata(args, version):
    with open(args.metadata_file) as f:
        headers = [line for line in f.read().splitlines() if line]
    name_at = next(i for i, line in enumerate(headers) if line.startswith("Name: "))
    headers.insert(name_at + 1, f"Version: {version}")
    body = ""
    if args.description_file:
        with open(args.description_file) as f:
            fragment_headers, _, body = f.read().partition("\n\n")
        headers += [line for line in fragment_headers.splitlines() if line]
    return "\n".join(headers) + "\n\n" + body


def wheel_file(args):
    tags = itertools.product(args.python_tag.split("."), args.abi.split("."), args.platform.split("."))
    lines = ["Wheel-Version: 1.0", "Generator: jax-flash-attn python/wheelmaker.py",
             f"Root-Is-Purelib: {'true' if args.platform == 'any' else 'false'}"]
    lines += ["Tag: " + "-".join(tag) for tag in tags]
    return "\n".join(lines) + "\n"


def inputs(args):
    """(path in the wheel, path on disk) for each packaged file, prefixes stripped."""
    with open(args.input_file_list) as f:
        for line in f.read().splitlines():
            if not line:
                continue
            inside, disk = line.split(";", 1)
            for prefix in args.strip_path_prefix:
                if inside.startswith(prefix):
                    inside = inside[len(prefix):]
                    break
            yield inside, disk


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    for flag in ("name", "version", "python_tag", "abi", "platform", "out", "name_file",
                 "input_file_list", "metadata_file"):
        p.add_argument("--" + flag, required=True)
    for flag in ("description_file", "entry_points_file", "stable_status_file",
                 "volatile_status_file"):
        p.add_argument("--" + flag)
    p.add_argument("--strip_path_prefix", action="append", default=[])
    p.add_argument("--extra_distinfo_file", action="append", default=[])
    args = p.parse_args()

    version = stamped(args.version, [args.stable_status_file, args.volatile_status_file])
    distinfo = f"{escape(args.name)}-{escape(version)}.dist-info"
    files = {}  # path in the wheel -> (bytes, executable)
    for inside, disk in inputs(args):
        if inside in files:
            raise SystemExit(f"wheelmaker: {inside} is packaged twice")
        with open(disk, "rb") as f:
            files[inside] = (f.read(), os.access(disk, os.X_OK) and inside.endswith(".so"))
    for spec in args.extra_distinfo_file:
        name, disk = spec.split(";", 1)
        with open(disk, "rb") as f:
            files[f"{distinfo}/{name}"] = (f.read(), False)
    if args.entry_points_file:
        with open(args.entry_points_file, "rb") as f:
            files[f"{distinfo}/entry_points.txt"] = (f.read(), False)
    files[f"{distinfo}/METADATA"] = (metadata(args, version).encode(), False)
    files[f"{distinfo}/WHEEL"] = (wheel_file(args).encode(), False)

    # The package first, then .dist-info, RECORD last (as installers expect).
    order = sorted(files, key=lambda path: (path.startswith(distinfo), path))
    record = [record_line(path, files[path][0]) for path in order] + [f"{distinfo}/RECORD,,"]
    files[f"{distinfo}/RECORD"] = (("\n".join(record) + "\n").encode(), False)
    order.append(f"{distinfo}/RECORD")

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as whl:
        for path in order:
            data, executable = files[path]
            info = zipfile.ZipInfo(path, date_time=EPOCH)
            info.external_attr = (0o100755 if executable else 0o100644) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            whl.writestr(info, data)
    with open(args.out, "wb") as f:
        f.write(buf.getvalue())

    parts = [args.name, version, args.python_tag, args.abi, args.platform]
    with open(args.name_file, "w") as f:
        f.write("-".join(escape(part) for part in parts) + ".whl")


if __name__ == "__main__":
    main()
