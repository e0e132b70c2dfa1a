"""Entry point of //tests:pytest_suite: pytest over this directory.

Extra arguments go to pytest, e.g. `bazel test //tests:all --test_arg=--bindings=cpp`.
"""

import os
import sys

import pytest

if __name__ == "__main__":
    here = os.path.dirname(os.path.abspath(__file__))
    sys.exit(pytest.main([here, "-p", "no:cacheprovider", "-ra", *sys.argv[1:]]))
