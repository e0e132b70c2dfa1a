"""One suite for both bindings: `--bindings cpp|rust|all` (default all).

Every test that takes the `flash` fixture runs once per selected binding,
with `flash` the imported package (jax_flash_attn or jflash_attn). With
`all`, a binding whose package is not importable is skipped with the reason;
a binding named explicitly must import.
"""

import importlib
import os

# 8 CPU devices for tests/test_sharding.py; must be set before JAX starts its backends (on_gpu() below).
if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()
# Under pytest-xdist several workers share one GPU; each would otherwise reserve 75% of its memory
# (on an H100 80GB the second worker's reservation failed: RESOURCE_EXHAUSTED at collection).
if "PYTEST_XDIST_WORKER" in os.environ:
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

import jax
import numpy as np
import pytest

PACKAGES = {"cpp": "jax_flash_attn", "rust": "jflash_attn"}


def pytest_addoption(parser):
    parser.addoption("--bindings", default="all", choices=["cpp", "rust", "all"],
                     help="which binding's package to test (default: all)")


def pytest_generate_tests(metafunc):
    if "flash" in metafunc.fixturenames:
        chosen = metafunc.config.getoption("bindings")
        names = list(PACKAGES) if chosen == "all" else [chosen]
        metafunc.parametrize("flash", names, indirect=True)


@pytest.fixture
def flash(request):
    try:
        return importlib.import_module(PACKAGES[request.param])
    except ImportError as e:
        if request.config.getoption("bindings") == "all":
            pytest.skip(f"{PACKAGES[request.param]} ({request.param} binding) is not importable: {e}")
        raise


def importable_extensions():
    """{package name: binding extension} of the bindings whose packages import here."""
    found = {}
    for package in PACKAGES.values():
        try:
            found[package] = importlib.import_module(package)._binding.extension
        except ImportError:
            pass
    return found


def on_gpu():
    return jax.default_backend() == "gpu"


requires_gpu = pytest.mark.skipif(
    not on_gpu(), reason=f"needs a CUDA GPU; jax.default_backend() is {jax.default_backend()!r}")


def pytest_configure(config):
    config.addinivalue_line("markers", "default_kernels: the test calls or lowers the bfloat16/128 "
                            "kernel that every build compiles by default")


@pytest.fixture(autouse=True)
def _default_kernels(request):
    """On a GPU, flash_mha refuses (even to lower) a kernel its build lacks: tests
    marked default_kernels skip for builds made without bfloat16/128."""
    if request.node.get_closest_marker("default_kernels") and "flash" in request.fixturenames and on_gpu():
        flash = request.getfixturevalue("flash")
        if not flash.has_kernel("bfloat16", 128):
            pytest.skip(f"this build has no bfloat16/128 kernel ({flash.build_config()})")


@pytest.fixture
def rng():
    """A fresh generator per test; its seed is in the failure message's locals."""
    seed = np.random.SeedSequence().entropy
    print(f"random seed: {seed}")
    return np.random.default_rng(seed)
