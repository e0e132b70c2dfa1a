"""Prints the download URL of one file of a package on pip's configured index.

Used by pypi_archive.bzl at fetch time. The index is whatever pip would use
(PIP_INDEX_URL, pip.conf, or pip's default), so no host name lives in this
repository; integrity comes from the sha256 pinned in the BUILD files, not
from the index.

usage: pypi_url.py PACKAGE FILENAME
"""

import json
import os
import subprocess
import sys
import urllib.request


def index_url():
    url = os.environ.get("PIP_INDEX_URL")
    if not url:
        out = subprocess.run(
            [sys.executable, "-m", "pip", "config", "get", "global.index-url"],
            capture_output=True, text=True, check=False)
        url = out.stdout.strip() if out.returncode == 0 else ""
    if not url:
        from pip._internal.models.index import PyPI  # pip's own default index
        url = PyPI.simple_url
    return url.rstrip("/")


def main(package, filename):
    request = urllib.request.Request(
        f"{index_url()}/{package}/",
        headers={"Accept": "application/vnd.pypi.simple.v1+json"})
    with urllib.request.urlopen(request, timeout=120) as response:
        files = json.load(response)["files"]
    for f in files:
        if f["filename"] == filename:
            print(f["url"])
            return 0
    print(f"{filename} is not on the index's page for {package}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
