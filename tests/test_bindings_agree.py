"""The two bindings are interchangeable: same surface, same answers, same errors."""

import importlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import PACKAGES, requires_gpu


@pytest.fixture(scope="module")
def both():
    try:
        return [importlib.import_module(p) for p in PACKAGES.values()]
    except ImportError as e:
        pytest.skip(f"needs both bindings' packages: {e}")


def test_same_kernel_library(both):
    cpp, rust = (b._binding.extension for b in both)
    if cpp.build_config() != rust.build_config():
        pytest.skip(f"packages built from different kernel sets: {cpp.build_config()!r} vs "
                    f"{rust.build_config()!r} (tests/device/gpu_build.py builds only the C++ one)")
    for dtype in ("float16", "bfloat16"):
        for head_dim in (8, 32, 64, 100, 128, 200, 256):
            assert cpp.has_kernel(dtype, head_dim) == rust.has_kernel(dtype, head_dim)
            assert cpp.has_kvcache_kernel(dtype, head_dim) == rust.has_kvcache_kernel(dtype, head_dim)


def test_same_surface(both):
    cpp, rust = (b._binding.extension for b in both)
    assert cpp.abi_version() == rust.abi_version()
    public = lambda ext: {name for name in dir(ext) if not name.startswith("_")}
    assert public(cpp) == public(rust)
    assert set(cpp.launch_counts()) == set(rust.launch_counts())
    for shape in [(1, 1, 1, 8), (2, 100, 4, 72), (3, 1000, 16, 256)]:
        assert tuple(cpp.bwd_workspace_elems(*shape)) == tuple(rust.bwd_workspace_elems(*shape))
    for shape in [(1, 1, 4096, 16, 128, 0, 132), (7, 3, 1000, 2, 72, 0, 148), (2, 1, 512, 8, 256, 9, 132)]:
        assert tuple(cpp.kvcache_splits(*shape)) == tuple(rust.kvcache_splits(*shape))
    for bad in [lambda e: e.has_kernel("float32", 128), lambda e: e.has_kvcache_kernel("int8", 64),
                lambda e: e.kvcache_splits(1, 1, 64, 1, 64, -1, 132), lambda e: e.kvcache_splits(1, 1, 64, 1, 64, 0, 0),
                lambda e: e.has_sm90_kernel("float32", 128),
                lambda e: e.uses_sm90("int8", 1, 128, 128, 1, 1, 128, 9, 0)]:
        messages = []
        for ext in (cpp, rust):
            with pytest.raises(ValueError) as info:
                bad(ext)
            messages.append(str(info.value))
        assert messages[0] == messages[1]


def test_distinct_targets(both):
    prefixes = {b._binding.TARGET_PREFIX for b in both}
    assert len(prefixes) == 2
    q = jax.ShapeDtypeStruct((1, 16, 2, 128), jnp.bfloat16)
    for b in both:
        hlo = jax.jit(b.flash_mha).trace(q, q, q).lower(lowering_platforms=("cuda",)).as_text()
        assert f"@{b._binding.TARGET_PREFIX}_fwd(" in hlo


@requires_gpu
def test_bit_identical_outputs_and_gradients(both, rng):
    cpp, rust = both
    if not cpp.has_kernel("bfloat16", 128):
        pytest.skip("no bfloat16/128 kernel in this build")
    shape = (2, 333, 8, 128)
    q, k, v = (jnp.asarray(rng.standard_normal(shape, np.float32), jnp.bfloat16) for _ in range(3))
    k, v = k[:, :, :2], v[:, :, :2]  # GQA
    dout = jnp.asarray(rng.standard_normal(shape, np.float32), jnp.bfloat16)

    def run(package):
        fn = lambda q, k, v: package.flash_mha(q, k, v, is_causal=True)
        out, pullback = jax.vjp(fn, q, k, v)
        return [np.asarray(x, np.float32) for x in (out, *pullback(dout))]

    # The backward kernel accumulates dq with float atomics, whose order varies
    # from run to run even within one binding; out, dk and dv are written once.
    results = run(cpp), run(rust)
    for name, a, b in zip(("out", "dq", "dk", "dv"), *results):
        if name == "dq":
            np.testing.assert_allclose(a, b, rtol=2**-7, atol=1e-3, err_msg=name)
        else:
            np.testing.assert_array_equal(a, b, err_msg=name)
