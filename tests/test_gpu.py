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
HEAD_DIMS = [32, 64, 96, 128, 192, 256]
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
    slopes = jnp.zeros((1, 2), jnp.float32)
    call = jax.ffi.ffi_call(f"{flash._binding.TARGET_PREFIX}_fwd",
                            (jax.ShapeDtypeStruct(q.shape, q.dtype), jax.ShapeDtypeStruct((1, 2, 9), jnp.float32)))
    with pytest.raises(Exception, match=r"softmax_lse: expected shape \(1, 2, 8\), got \(1, 2, 9\)"):
        jax.block_until_ready(call(q, q, q, slopes, softmax_scale=np.float32(1), is_causal=False,
                                   window_left=np.int32(-1), window_right=np.int32(-1), softcap=np.float32(0),
                                   has_alibi=False))


# --- return_lse, ALiBi, deterministic backward, the jax.nn adapter -----------------

def assert_lse_close(name, got, ref, baseline):
    """As assert_close, for a log-sum-exp: +inf exactly where the reference has it (rows that see no key)."""
    assert got.shape == ref.shape and got.dtype == jnp.float32, name
    got, ref, baseline = (np.asarray(x, np.float32) for x in (got, ref, baseline))
    assert not np.isnan(got).any(), f"{name}: NaN (unwritten or poisoned elements)"
    empty = np.isinf(ref)
    np.testing.assert_array_equal(got[empty], ref[empty], err_msg=f"{name}: rows that see no key must be +inf")
    finite = ~empty
    if finite.any():
        assert_close(name, jnp.asarray(got[finite]), jnp.asarray(ref[finite]), jnp.asarray(baseline[finite]))


def check_features(flash, rng, shape, through=("out", "lse"), dtype=jnp.bfloat16, **options):
    """flash_mha(..., return_lse=True, **options) against the float32 reference: out, lse, and the
    gradients of a loss through `through` (out and/or lse, each with a random cotangent)."""
    need_kernel(flash, dtype, shape[-1])
    q, k, v = random_qkv(rng, dtype, *shape)
    batch, seqlen_q, heads = shape[0], shape[1], shape[3]
    dout = jnp.asarray(rng.standard_normal(q.shape, np.float32), dtype)
    dlse = jnp.asarray(rng.standard_normal((batch, heads, seqlen_q), np.float32))
    kernel_options = {key: x for key, x in options.items()}
    reference_options = {key: x for key, x in options.items() if key != "deterministic"}
    kernel = lambda q, k, v: flash.flash_mha(q, k, v, return_lse=True, **kernel_options)
    reference = lambda q, k, v: flash.attention_reference(q, k, v, **reference_options)
    plain = lambda q, k, v: flash.attention_reference(q, k, v, compute_dtype=dtype, **reference_options)
    f32 = [x.astype(jnp.float32) for x in (q, k, v)]

    poison_device_memory(4 * q.size * 4)
    out, lse = jax.jit(kernel)(q, k, v)
    ref_out, ref_lse = jax.jit(reference)(*f32)
    plain_out, plain_lse = jax.jit(plain)(q, k, v)
    assert out.shape == q.shape and out.dtype == q.dtype
    assert_close("out", out, ref_out, plain_out)
    assert_lse_close("lse", lse, ref_lse, plain_lse)
    if not through:
        return

    def loss(fn, dout):
        def run(q, k, v):
            out, lse = fn(q, k, v)
            total = 0.0
            if "out" in through:
                total += jnp.sum(out.astype(jnp.float32) * dout.astype(jnp.float32))
            if "lse" in through:
                total += jnp.sum(jnp.where(jnp.isfinite(lse), lse, 0.0) * dlse)
            return total
        return jax.jit(jax.grad(run, argnums=(0, 1, 2)))

    poison_device_memory(4 * (q.size + k.size + v.size) * 4)
    got = loss(kernel, dout)(q, k, v)
    want = loss(reference, dout)(*f32)
    base = loss(plain, dout)(q, k, v)
    for name, g, w, b, x in zip(("dq", "dk", "dv"), got, want, base, (q, k, v)):
        assert g.shape == x.shape and g.dtype == x.dtype, name
        assert_close(f"{name} (through {'+'.join(through)})", g, w, b)
    return got


@pytest.mark.parametrize("seqlens", [(128, 128), (113, 203), (203, 113)], ids=lambda s: f"sq{s[0]}-sk{s[1]}")
@pytest.mark.parametrize("is_causal", [False, True], ids=["full", "causal"])
def test_return_lse_matches_reference(flash, rng, seqlens, is_causal):
    """The kernel's lse (with +inf for the causal rows that see no key when seqlen_q > seqlen_k)."""
    check_features(flash, rng, (2, *seqlens, 4, 2, 128), through=(), is_causal=is_causal)


@pytest.mark.parametrize("through", [("out", "lse"), ("lse",)], ids=["out+lse", "lse-only"])
@pytest.mark.parametrize("options", [dict(is_causal=True), dict(window_size=(48, 16)), dict(softcap=5.0)],
                         ids=["causal", "window", "softcap"])
def test_gradients_through_lse(flash, rng, through, options):
    """An lse cotangent: the second backward kernel call (flash_mha's lse_cotangent_operands)."""
    check_features(flash, rng, (2, 200, 256, 4, 2, 128), through=through, **options)


def test_gradients_through_lse_with_rows_that_see_no_key(flash, rng):
    check_features(flash, rng, (1, 256, 96, 2, 2, 128), through=("out", "lse"), is_causal=True)


def alibi_slopes(heads, batch=None):
    """ALiBi's geometric slopes 2**(-8 i / heads); per batch row different when batch is given."""
    base = 2.0 ** (-8.0 * np.arange(1, heads + 1) / heads)
    if batch is not None:
        base = base[None] * (1 + np.arange(batch)[:, None]) / 2
    return jnp.asarray(base, jnp.float32)


ALIBI_CASES = [
    # (id, shape (batch, sq, sk, heads, heads_k, head_dim), options)
    ("full", (2, 257, 300, 4, 4, 128), dict()),
    ("causal", (2, 200, 333, 4, 2, 128), dict(is_causal=True)),            # slope * j, bottom-right
    ("causal-sq-gt-sk", (2, 300, 200, 4, 4, 128), dict(is_causal=True)),   # rows without keys
    ("window", (2, 257, 300, 4, 1, 128), dict(window_size=(32, 16))),      # -slope * |distance|
    ("softcap", (2, 128, 128, 4, 4, 128), dict(softcap=3.0, softmax_scale=0.3)),
    ("long", (1, 2048, 2048, 2, 2, 128), dict(is_causal=True)),
]


@pytest.mark.parametrize("per_batch", [False, True], ids=["heads", "batch-heads"])
@pytest.mark.parametrize("case", ALIBI_CASES, ids=[c[0] for c in ALIBI_CASES])
def test_alibi_matches_reference(flash, rng, case, per_batch):
    _, shape, options = case
    slopes = alibi_slopes(shape[3], shape[0] if per_batch else None)
    check_features(flash, rng, shape, alibi_slopes=slopes, **options)


def test_alibi_slopes_traced_under_jit(flash, rng):
    need_kernel(flash, jnp.bfloat16, 128)
    q, k, v = random_qkv(rng, jnp.bfloat16, 2, 128, 128, 4, 4, 128)
    fn = jax.jit(lambda q, k, v, s: flash.flash_mha(q, k, v, is_causal=True, alibi_slopes=s))
    a, b = fn(q, k, v, alibi_slopes(4)), fn(q, k, v, alibi_slopes(4) * 2)
    want = flash.attention_reference(*(x.astype(jnp.float32) for x in (q, k, v)), is_causal=True,
                                     alibi_slopes=alibi_slopes(4) * 2)[0]
    assert max_err(b, want) < 2e-2 and max_err(a, b) > 1e-2


DETERMINISTIC_CASES = [
    # (id, shape, options): batch * heads well below the SM count, so dq is split many ways
    ("causal", (1, 1024, 1024, 2, 1, 128), dict(is_causal=True)),
    ("alibi-window", (2, 777, 1024, 2, 2, 128), dict(window_size=(256, 64), alibi_slopes=alibi_slopes(2))),
    ("one-split", (8, 256, 256, 32, 8, 128), dict()),  # batch * heads >= SMs: one copy
]


@pytest.mark.parametrize("case", DETERMINISTIC_CASES, ids=[c[0] for c in DETERMINISTIC_CASES])
def test_deterministic_backward_is_bit_identical_and_correct(flash, rng, case):
    _, shape, options = case
    need_kernel(flash, jnp.bfloat16, 128)
    # Correct, forward and backward, through out and lse:
    check_features(flash, rng, shape, deterministic=True, **options)
    # and bit-identical from run to run, on freshly poisoned memory each time.
    q, k, v = random_qkv(rng, jnp.bfloat16, *shape)
    dout = jnp.asarray(rng.standard_normal(q.shape, np.float32), jnp.bfloat16)
    fn = jax.jit(lambda q, k, v, g: jax.vjp(
        lambda q, k, v: flash.flash_mha(q, k, v, deterministic=True, **options), q, k, v)[1](g))
    first = [np.asarray(x, np.float32) for x in fn(q, k, v, dout)]
    for _ in range(4):
        poison_device_memory(64 << 20)
        for name, a, b in zip(("dq", "dk", "dv"), first, fn(q, k, v, dout)):
            np.testing.assert_array_equal(a, np.asarray(b, np.float32), err_msg=name)


def test_deterministic_workspace_sized_for_this_gpu(flash):
    ext = flash._binding.extension
    sms = flash.num_sms()
    assert sms > 0 and flash._attention._workspace_num_sms() == sms
    split, _ = ext.bwd_workspace_elems(1, 128, 2, 128, True, 1)  # one SM: one split
    assert ext.bwd_workspace_elems(1, 128, 2, 128, True)[0] == -(-sms // 2) * split


def test_deterministic_workspace_too_small_is_an_xla_error(flash):
    """The C ABI checks dq_accum against this GPU's SM count before launching."""
    need_kernel(flash, jnp.bfloat16, 128)
    if flash.num_sms() < 2:
        pytest.skip("a one-SM GPU needs one split")
    q = jnp.zeros((1, 128, 1, 128), jnp.bfloat16)
    lse = jnp.zeros((1, 1, 128), jnp.float32)
    split, softmax_d = flash._binding.extension.bwd_workspace_elems(1, 128, 1, 128, True, 1)  # one split
    call = jax.ffi.ffi_call(
        f"{flash._binding.TARGET_PREFIX}_bwd",
        (jax.ShapeDtypeStruct(q.shape, q.dtype),) * 3
        + (jax.ShapeDtypeStruct((split,), jnp.float32), jax.ShapeDtypeStruct((softmax_d,), jnp.float32)))
    with pytest.raises(Exception, match="deterministic backward: dq_accum has"):
        jax.block_until_ready(call(q, q, q, q, q, lse, jnp.zeros((1, 1), jnp.float32), softmax_scale=np.float32(1),
                                   is_causal=False, window_left=np.int32(-1), window_right=np.int32(-1),
                                   softcap=np.float32(0), has_alibi=False, deterministic=True))
    assert bool(jnp.all(jnp.isfinite(flash.flash_mha(q, q, q))))


ADAPTER_GPU_CASES = [
    # (id, (batch, sq, sk, heads, heads_k), jax.nn options): all map onto flash_mha
    ("full", (2, 256, 256, 8, 8), dict()),
    ("causal-gqa", (2, 333, 333, 8, 2), dict(is_causal=True)),
    ("causal-longer-q", (2, 300, 200, 4, 4), dict(is_causal=True)),
    ("window", (2, 300, 300, 4, 4), dict(local_window_size=(64, 16))),
    ("window-causal-int", (1, 512, 512, 4, 1), dict(local_window_size=100, is_causal=True)),
    ("scale-residual", (2, 128, 128, 4, 4), dict(scale=0.2, return_residual=True)),
]


@pytest.mark.parametrize("case", ADAPTER_GPU_CASES, ids=[c[0] for c in ADAPTER_GPU_CASES])
def test_dot_product_attention_adapter_matches_jax_nn(flash, rng, case):
    """The adapter runs the kernel and agrees with jax.nn.dot_product_attention(implementation="xla")
    as closely as that does with itself in float32 (the tolerance rule above), forward and gradients."""
    _, (batch, sq, sk, heads, heads_k), options = case
    need_kernel(flash, jnp.bfloat16, 128)
    q, k, v = random_qkv(rng, jnp.bfloat16, batch, sq, sk, heads, heads_k, 128)
    adapter = jax.jit(lambda q, k, v: flash.dot_product_attention(q, k, v, **options))
    xla = jax.jit(lambda q, k, v: jax.nn.dot_product_attention(q, k, v, implementation="xla", **options))
    assert f"{flash._binding.TARGET_PREFIX}_fwd" in adapter.lower(q, k, v).as_text(), "the adapter fell back"
    f32 = [x.astype(jnp.float32) for x in (q, k, v)]
    with jax.default_matmul_precision("highest"):
        want = xla(*f32)
    got, base = adapter(q, k, v), xla(q, k, v)
    as_tuple = lambda x: x if isinstance(x, tuple) else (x,)
    for name, g, w, b in zip(("out", "residual"), as_tuple(got), as_tuple(want), as_tuple(base)):
        assert g.shape == b.shape and g.dtype == b.dtype, name
        assert_close(name, g, w, b)

    dout = jnp.asarray(rng.standard_normal(q.shape, np.float32), jnp.bfloat16)

    def vjp(fn):
        first = lambda q, k, v: as_tuple(fn(q, k, v))[0]
        return jax.jit(lambda q, k, v, g: jax.vjp(first, q, k, v)[1](g))

    got = vjp(adapter)(q, k, v, dout)
    with jax.default_matmul_precision("highest"):
        want = vjp(xla)(*f32, dout.astype(jnp.float32))
    base = vjp(xla)(q, k, v, dout)
    for name, g, w, b in zip(("dq", "dk", "dv"), got, want, base):
        assert g.shape == b.shape and g.dtype == b.dtype, name
        assert_close(name, g, w, b)
