"""Repository rules that fetch pinned files from the Python package index.

`pypi_archive` downloads one sdist or wheel, named by package, exact file name
and sha256, from the index pip is configured with, and extracts it. Bazel's
repository cache is keyed by the sha256, so a second fetch costs nothing.
"""

def pypi_download(rctx, package, filename, sha256, output = "", strip_prefix = ""):
    """Downloads and extracts `filename` of `package` into the repository."""
    python = rctx.which("python3")
    if not python:
        fail("python3 (with pip) is needed on PATH to resolve %s" % filename)
    res = rctx.execute(
        [python, rctx.path(Label("//third_party:pypi_url.py")), package, filename],
        timeout = 180,
    )
    if res.return_code != 0:
        fail("cannot resolve %s on the package index: %s" % (filename, res.stderr))
    rctx.download_and_extract(
        url = res.stdout.strip(),
        sha256 = sha256,
        output = output,
        stripPrefix = strip_prefix,
        type = "zip" if filename.endswith(".whl") else "",
    )

def _pypi_archive_impl(rctx):
    pypi_download(rctx, rctx.attr.package, rctx.attr.filename, rctx.attr.sha256,
                  strip_prefix = rctx.attr.strip_prefix)
    rctx.symlink(rctx.attr.build_file, "BUILD.bazel")

pypi_archive = repository_rule(
    implementation = _pypi_archive_impl,
    attrs = {
        "package": attr.string(mandatory = True),
        "filename": attr.string(mandatory = True),
        "sha256": attr.string(mandatory = True),
        "strip_prefix": attr.string(),
        "build_file": attr.label(mandatory = True, allow_single_file = True),
    },
)
