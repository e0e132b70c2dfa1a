"""The kernels on a CUDA GPU against a float32 reference (skipped without a GPU).

Tolerance rule: the kernel's max error against the float32 reference may be
at most ERR_RATIO times the error of plain JAX computing the same attention
in the inputs' own precision, plus an absolute floor scaled to the values.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import requires_gpu

pytestmark = requires_gpu

ERR_RATIO = 3.0
ABS_FLOOR = 2e-3

DTYPES = [jnp.bfloat16, jnp.float16]
HEAD_DIMS = [64, 128, 256]
SEQLENS = [(1, 1), (17, 17), (113, 203), (203, 113), (1000, 1000)]


def need_kernel(flash, dtype, head_dim):
    if not flash.has_kernel(jnp.dtype(dtype).name, head_dim):
        pytest.skip(f"not compiled into this build ({flash.build_config()})")


def poison_device_memory(nbytes):
    """Fill then free a block of device memory with NaN, so that an output
    buffer XLA hands the kernel next is likely to start as NaN: any element
    the kernel fails to write shows up."""
    jnp.full((nbytes // 4 + 1,), jnp.nan, jnp.float32).block_until_ready()


def random_qkv(rng, dtype, batch, seqlen_q, seqlen_k, heads, heads_k, head_dim):
    def draw(shape):
        return jnp.asarray(rng.standard_normal(shape, np.float32), dtype)
    return (draw((batch, seqlen_q, heads, head_dim)), draw((batch, seqlen_k, heads_k, head_dim)),
            draw((batch, seqlen_k, heads_k, head_dim)))


def max_err(x, ref):
    return float(jnp.max(jnp.abs(x.astype(jnp.float32) - ref.astype(jnp.float32))))


def assert_close(name, got, ref, baseline):
    """got: kernel result; ref: float32 reference; baseline: plain JAX in low precision."""
    assert not jnp.any(jnp.isnan(got)), f"{name}: NaN in output (unwritten or poisoned elements)"
    err, base = max_err(got, ref), max_err(baseline, ref)
    scale = max(1.0, float(jnp.max(jnp.abs(ref))))
    bound = ERR_RATIO * base + ABS_FLOOR * scale
    assert err <= bound, f"{name}: max error {err:.3g} > bound {bound:.3g} (plain JAX error {base:.3g})"


def check_against_reference(flash, rng, dtype, shape, grads=True, **options):
    q, k, v = random_qkv(rng, dtype, *shape)
    dout = jnp.asarray(rng.standard_normal(q.shape, np.float32), dtype)
    # Each function is jitted whole: op-by-op dispatch would compile every op
    # of the references separately for every new shape.
    kernel = jax.jit(functools.partial(flash.flash_mha, **options))
    reference = jax.jit(lambda *a: flash.attention_reference(*a, **options)[0])
    plain = jax.jit(lambda *a: flash.attention_reference(*a, compute_dtype=dtype, **options)[0])
    f32 = [x.astype(jnp.float32) for x in (q, k, v)]

    poison_device_memory(4 * q.size * 4)
    out = kernel(q, k, v)
    assert out.shape == q.shape and out.dtype == q.dtype
    assert_close("out", out, reference(*f32), plain(q, k, v))
    if not grads:
        return

    def vjp(fn):
        return jax.jit(lambda q, k, v, g: jax.vjp(fn, q, k, v)[1](g))

    poison_device_memory(4 * (q.size + k.size + v.size) * 4)
    got = vjp(kernel)(q, k, v, dout)
    want = vjp(reference)(*f32, dout.astype(jnp.float32))
    base = vjp(plain)(q, k, v, dout)
    for name, g, w, b, x in zip(("dq", "dk", "dv"), got, want, base, (q, k, v)):
        assert g.shape == x.shape and g.dtype == x.dtype, name
        assert_close(name, g, w, b)


@pytest.mark.parametrize("seqlens", SEQLENS, ids=lambda s: f"sq{s[0]}-sk{s[1]}")
@pytest.mark.parametrize("is_causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("head_dim", HEAD_DIMS)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: jnp.dtype(d).name)
def test_matches_reference(flash, rng, dtype, head_dim, is_causal, seqlens):
    need_kernel(flash, dtype, head_dim)
    check_against_reference(flash, rng, dtype, (2, *seqlens, 4, 4, head_dim), is_causal=is_causal)


@pytest.mark.parametrize("is_causal", [False, True], ids=["full", "causal"])
def test_long_sequence(flash, rng, is_causal):
    need_kernel(flash, jnp.bfloat16, 128)
    check_against_reference(flash, rng, jnp.bfloat16, (1, 4096, 4096, 4, 4, 128), is_causal=is_causal)


@pytest.mark.parametrize("heads_k", [1, 2], ids=["mqa", "gqa"])
def test_grouped_query_attention(flash, rng, heads_k):
    need_kernel(flash, jnp.bfloat16, 128)
    check_against_reference(flash, rng, jnp.bfloat16, (2, 300, 300, 8, heads_k, 128), is_causal=True)


@pytest.mark.parametrize("window", [(32, 16), (64, 0), (0, 0), (-1, 8), (100, -1)])
def test_sliding_window(flash, rng, window):
    need_kernel(flash, jnp.bfloat16, 128)
    check_against_reference(flash, rng, jnp.bfloat16, (2, 257, 300, 4, 4, 128), window_size=window)


def test_softcap_and_scale(flash, rng):
    need_kernel(flash, jnp.bfloat16, 128)
    check_against_reference(flash, rng, jnp.bfloat16, (2, 128, 128, 4, 4, 128), softcap=3.0, softmax_scale=0.3)


def test_head_dim_not_multiple_of_8(flash, rng):
    need_kernel(flash, jnp.bfloat16, 100)
    check_against_reference(flash, rng, jnp.bfloat16, (2, 96, 96, 4, 4, 100), is_causal=True)


def test_causal_rows_that_see_no_key_are_zero(flash, rng):
    need_kernel(flash, jnp.bfloat16, 128)
    q, k, v = random_qkv(rng, jnp.bfloat16, 1, 64, 16, 2, 2, 128)
    out = flash.flash_mha(q, k, v, is_causal=True)
    assert jnp.all(out[:, :48] == 0) and jnp.all(jnp.isfinite(out))
    grads = jax.grad(lambda q, k, v: flash.flash_mha(q, k, v, is_causal=True).astype(jnp.float32).sum(),
                     argnums=(0, 1, 2))(q, k, v)
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in grads)


def test_vmap_matches_loop(flash, rng):
    need_kernel(flash, jnp.bfloat16, 128)
    q = jnp.asarray(rng.standard_normal((3, 2, 128, 4, 128), np.float32), jnp.bfloat16)
    fn = functools.partial(flash.flash_mha, is_causal=True)
    np.testing.assert_array_equal(np.asarray(jax.vmap(fn)(q, q, q), np.float32),
                                  np.asarray(jnp.stack([fn(x, x, x) for x in q]), np.float32))


def test_forward_is_deterministic(flash, rng):
    need_kernel(flash, jnp.bfloat16, 128)
    q, k, v = random_qkv(rng, jnp.bfloat16, 2, 512, 512, 4, 4, 128)
    fn = jax.jit(flash.flash_mha)
    first = np.asarray(fn(q, k, v), np.float32)
    for _ in range(3):
        np.testing.assert_array_equal(np.asarray(fn(q, k, v), np.float32), first)


def test_missing_kernel_is_a_python_error(flash):
    for dtype in ("float16", "bfloat16"):
        for head_dim in (32, 64, 96, 128, 192, 256):
            if not flash.has_kernel(dtype, head_dim):
                q = jnp.zeros((1, 8, 1, head_dim), dtype)
                with pytest.raises(ValueError, match="has no kernel for"):
                    flash.flash_mha(q, q, q)
                return
    pytest.skip("every kernel is compiled into this build")


def test_handler_rejects_malformed_call(flash):
    """A direct FFI call with inconsistent buffers gets an XLA error, not a crash."""
    q = jnp.zeros((1, 8, 2, 128), jnp.bfloat16)
    call = jax.ffi.ffi_call(f"{flash._binding.TARGET_PREFIX}_fwd",
                            (jax.ShapeDtypeStruct(q.shape, q.dtype), jax.ShapeDtypeStruct((1, 2, 9), jnp.float32)))
    with pytest.raises(Exception, match=r"softmax_lse: expected shape \(1, 2, 8\), got \(1, 2, 9\)"):
        jax.block_until_ready(call(q, q, q, softmax_scale=np.float32(1), is_causal=False,
                                   window_left=np.int32(-1), window_right=np.int32(-1), softcap=np.float32(0)))
