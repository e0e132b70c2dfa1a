"""return_lse, deterministic, ALiBi and the jax.nn / flax adapters, without a GPU.

On CPU flash_mha runs the pure-JAX reference, so these tests check
  * the reference's new semantics against independent float64 numpy
    (ALiBi as FlashAttention-2 applies it; the log-sum-exp, +inf for rows
    that see no key);
  * flash_mha's plumbing of the options: results, gradients through out and
    lse, vmap, argument checks;
  * the algebra by which the CUDA path differentiates the lse (a second
    backward kernel call), with a float32 stand-in for the backward kernel;
  * what the CUDA lowering hands XLA: the alibi_slopes operand, the has_alibi
    and deterministic attributes, the deterministic workspace, the calls;
  * the adapters' mapping onto flash_mha and their fallbacks.
tests/test_gpu.py runs the same features on the kernels.
"""

import functools
import importlib
import itertools
import math
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import PACKAGES, on_gpu
from numpy_oracle import numpy_alibi_bias, numpy_attention, numpy_mask

# Lowered and run with bfloat16/128, the kernel every build has by default.
pytestmark = pytest.mark.default_kernels

cpu_only = pytest.mark.skipif(on_gpu(), reason="checks the CPU fallback path")


CASES = [
    # sq, sk, heads, heads_k, causal, window, softcap
    (17, 17, 4, 4, False, (-1, -1), 0.0),
    (17, 17, 4, 4, True, (-1, -1), 0.0),
    (13, 29, 4, 2, True, (-1, -1), 0.0),   # causal, seqlen_q < seqlen_k
    (29, 13, 4, 1, True, (-1, -1), 0.0),   # causal, seqlen_q > seqlen_k: first rows see no key
    (33, 40, 2, 2, False, (4, 2), 0.0),    # local: ALiBi's -|distance| form
    (33, 40, 2, 2, False, (-1, 0), 0.0),   # the causal kernels, reached through the window
    (20, 20, 2, 2, True, (3, -1), 0.0),    # causal with a left window: local, -|distance|
    (16, 24, 2, 2, False, (-1, -1), 5.0),  # softcap, then ALiBi
]


def draw(rng, *shape, dtype=jnp.float32):
    return jnp.asarray(rng.standard_normal(shape), dtype)


def case_arrays(rng, case, batch=2, head_dim=16, dtype=jnp.float32):
    sq, sk, h, hk = case[:4]
    return draw(rng, batch, sq, h, head_dim, dtype=dtype), draw(rng, batch, sk, hk, head_dim, dtype=dtype), \
        draw(rng, batch, sk, hk, head_dim, dtype=dtype)


def slopes_for(heads, batch=None):
    """ALiBi's geometric slopes 2**(-8 i / heads); per batch row scaled differently when batch is given."""
    base = 2.0 ** (-8.0 * np.arange(1, heads + 1) / heads)
    if batch is None:
        return base.astype(np.float32)
    return (base[None] * (1 + np.arange(batch)[:, None])).astype(np.float32)


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("slope_shape", ["none", "heads", "batch-heads"])
def test_reference_matches_float64(flash, rng, case, slope_shape):
    sq, sk, h, hk, causal, window, softcap = case
    q, k, v = case_arrays(rng, case)
    slopes = {"none": None, "heads": slopes_for(h), "batch-heads": slopes_for(h, 2)}[slope_shape]
    mask, causal_kernel = numpy_mask(sq, sk, causal, *window)
    np_slopes = None if slopes is None else np.broadcast_to(slopes, (2, h)).astype(np.float64)
    want_out, want_lse = numpy_attention(*(np.asarray(x, np.float64) for x in (q, k, v)), 16 ** -0.5, mask,
                                         softcap, np_slopes, numpy_alibi_bias(sq, sk, causal_kernel))
    out, lse = flash.attention_reference(q, k, v, is_causal=causal, window_size=window, softcap=softcap,
                                         alibi_slopes=None if slopes is None else jnp.asarray(slopes))
    np.testing.assert_allclose(np.asarray(out), want_out, atol=2e-5, rtol=2e-5)
    assert lse.shape == (2, h, sq) and lse.dtype == jnp.float32
    assert np.array_equal(np.isinf(np.asarray(lse)), np.isinf(want_lse))
    assert np.all(np.asarray(lse)[np.isinf(want_lse)] == np.inf), "rows that see no key: +inf"
    finite = np.isfinite(want_lse)
    np.testing.assert_allclose(np.asarray(lse)[finite], want_lse[finite], atol=1e-4, rtol=1e-5)


def test_causal_alibi_forms_differ_by_a_constant_per_row(flash, rng):
    """slope * j (causal kernels) and -slope * |i + sk - sq - j| give the same output, lse shifted by slope * (i + sk - sq)."""
    q, k, v = case_arrays(rng, (12, 20, 2, 2))
    slopes = jnp.asarray(slopes_for(2))
    out, lse = flash.attention_reference(q, k, v, is_causal=True, alibi_slopes=slopes)
    # The same mask through the local kernels: a left window as long as the keys are.
    out_local, lse_local = flash.attention_reference(q, k, v, window_size=(19, 0), alibi_slopes=slopes)
    np.testing.assert_allclose(np.asarray(out), np.asarray(out_local), atol=1e-5)
    shift = np.asarray(slopes)[:, None] * (np.arange(12) + 20 - 12)[None, :]
    np.testing.assert_allclose(np.asarray(lse - lse_local), np.broadcast_to(shift, lse.shape), rtol=1e-5, atol=1e-5)


# --- flash_mha with the new options on the CPU fallback ----------------------

def loss_of(dout, dlse):
    """A loss whose gradients are the vjp of (out, lse) with cotangents (dout, dlse)."""
    def loss(out, lse):
        total = jnp.sum(out.astype(jnp.float32) * dout)
        if dlse is not None:
            total += jnp.sum(jnp.where(jnp.isfinite(lse), lse, 0.0) * dlse)
        return total
    return loss


@cpu_only
@pytest.mark.parametrize("case", CASES)
def test_return_lse_and_gradients_through_it(flash, rng, case):
    sq, sk, h, hk, causal, window, softcap = case
    q, k, v = case_arrays(rng, case, dtype=jnp.bfloat16)
    slopes = jnp.asarray(slopes_for(h))
    options = dict(is_causal=causal, window_size=window, softcap=softcap, alibi_slopes=slopes)
    out, lse = jax.jit(lambda q, k, v: flash.flash_mha(q, k, v, return_lse=True, **options))(q, k, v)
    # Both sides jitted: op by op, the reference's gradients took 10-15 s per case on a 2-core
    # CI machine. jit may still fuse the two differently: a few float32 ulps.
    want_out, want_lse = jax.jit(lambda q, k, v: flash.attention_reference(q, k, v, **options))(q, k, v)
    np.testing.assert_allclose(np.asarray(out, np.float32), np.asarray(want_out, np.float32), rtol=1e-2, atol=1e-2)
    np.testing.assert_allclose(np.asarray(lse), np.asarray(want_lse), rtol=1e-6, atol=1e-6)

    dout, dlse = draw(rng, *q.shape), draw(rng, 2, h, sq)
    for cotangents in [(dout, dlse), (dout, None), (jnp.zeros_like(dout), dlse)]:
        loss = loss_of(*cotangents)
        got = jax.jit(jax.grad(lambda q, k, v: loss(*flash.flash_mha(q, k, v, return_lse=True, **options)),
                               argnums=(0, 1, 2)))(q, k, v)
        want = jax.jit(jax.grad(lambda q, k, v: loss(*flash.attention_reference(q, k, v, **options)),
                                argnums=(0, 1, 2)))(q, k, v)
        for name, g, w in zip("qkv", got, want):
            assert g.dtype == w.dtype == jnp.bfloat16, name
            np.testing.assert_allclose(np.asarray(g, np.float32), np.asarray(w, np.float32), atol=2e-2, rtol=2e-2,
                                       err_msg=f"d{name}")


@cpu_only
def test_lse_of_rows_without_keys_is_inf_and_their_gradient_zero(flash, rng):
    q, k, v = case_arrays(rng, (24, 8, 2, 2), dtype=jnp.float16)
    out, lse = flash.flash_mha(q, k, v, is_causal=True, return_lse=True)
    assert bool(jnp.all(jnp.isinf(lse[:, :, :16]))) and bool(jnp.all(lse[:, :, :16] > 0))
    assert bool(jnp.all(jnp.isfinite(lse[:, :, 16:])))
    assert bool(jnp.all(out[:, :16] == 0))
    dq = jax.grad(lambda q: jnp.sum(jnp.where(jnp.isfinite(l := flash.flash_mha(q, k, v, is_causal=True,
                                                                                 return_lse=True)[1]), l, 0)))(q)
    assert bool(jnp.all(dq[:, :16] == 0)) and bool(jnp.all(jnp.isfinite(dq)))


@cpu_only
def test_alibi_slopes_heads_and_batch_heads_agree_and_get_no_gradient(flash, rng):
    q, k, v = case_arrays(rng, (10, 14, 4, 2), dtype=jnp.bfloat16)
    slopes = slopes_for(4)
    a = flash.flash_mha(q, k, v, alibi_slopes=jnp.asarray(slopes))
    b = flash.flash_mha(q, k, v, alibi_slopes=jnp.asarray(np.stack([slopes, slopes])))
    c = flash.flash_mha(q, k, v, alibi_slopes=np.asarray(slopes, np.float64))  # converted to float32
    np.testing.assert_array_equal(np.asarray(a, np.float32), np.asarray(b, np.float32))
    np.testing.assert_array_equal(np.asarray(a, np.float32), np.asarray(c, np.float32))
    assert not np.array_equal(np.asarray(a, np.float32), np.asarray(flash.flash_mha(q, k, v), np.float32))
    g = jax.grad(lambda s: flash.flash_mha(q, k, v, alibi_slopes=s).astype(jnp.float32).sum())(jnp.asarray(slopes))
    assert g.shape == (4,) and not np.any(np.asarray(g))


@cpu_only
def test_deterministic_is_accepted_and_changes_nothing_on_cpu(flash, rng):
    q, k, v = case_arrays(rng, (16, 16, 2, 2), dtype=jnp.bfloat16)
    grad = lambda det: jax.grad(lambda q, k, v: flash.flash_mha(q, k, v, is_causal=True, deterministic=det)
                                .astype(jnp.float32).sum(), argnums=(0, 1, 2))(q, k, v)
    for a, b in zip(grad(True), grad(False)):
        np.testing.assert_array_equal(np.asarray(a, np.float32), np.asarray(b, np.float32))


@cpu_only
def test_vmap_with_lse_and_alibi(flash, rng):
    q = draw(rng, 3, 2, 9, 2, 16, dtype=jnp.bfloat16)
    slopes = jnp.asarray(slopes_for(2))
    fn = lambda x: flash.flash_mha(x, x, x, is_causal=True, alibi_slopes=slopes, return_lse=True)
    out, lse = jax.vmap(fn)(q)
    for i in range(3):
        o, l = fn(q[i])
        np.testing.assert_array_equal(np.asarray(out[i], np.float32), np.asarray(o, np.float32))
        np.testing.assert_array_equal(np.asarray(lse[i]), np.asarray(l))


BAD = [
    ("alibi list", dict(alibi_slopes=[0.5] * 4), TypeError, "alibi_slopes must be None or a float32 array"),
    ("alibi int", dict(alibi_slopes=np.ones(4, np.int32)), TypeError, "alibi_slopes has dtype int32"),
    ("alibi shape", dict(alibi_slopes=np.ones(3, np.float32)), ValueError,
     r"alibi_slopes must have shape \[heads\] = \(4,\) or \[batch, heads\] = \(2, 4\), got \(3,\)"),
    ("alibi rank 3", dict(alibi_slopes=np.ones((1, 2, 4), np.float32)), ValueError, "alibi_slopes must have shape"),
    ("deterministic int", dict(deterministic=1), TypeError, "deterministic must be a bool"),
    ("return_lse str", dict(return_lse="yes"), TypeError, "return_lse must be a bool"),
]


@pytest.mark.parametrize("case", BAD, ids=[c[0] for c in BAD])
def test_bad_options_raise_naming_the_argument(flash, case):
    _, options, exception, fragment = case
    q = jnp.ones((2, 8, 4, 128), jnp.bfloat16)
    with pytest.raises(exception, match=fragment):
        flash.flash_mha(q, q, q, **options)


# --- The CUDA path's lse gradient, with a stand-in for the backward kernel ---

def fa2_backward_standin(dout, q, k, v, out, lse, scale, causal, window, softcap, slopes):
    """What FlashAttention-2's backward kernel computes, in float32: P = exp(logits - lse),
    D = rowsum(dout * out), dS = P * (dout v^T - D) (times softcap's dtanh); dk, dv per query head."""
    f32 = lambda x: x.astype(jnp.float32)
    groups = q.shape[2] // k.shape[2]
    ke, ve = jnp.repeat(f32(k), groups, axis=2), jnp.repeat(f32(v), groups, axis=2)
    hi = jax.lax.Precision.HIGHEST
    s = jnp.einsum("bqhd,bkhd->bhqk", f32(q), ke, precision=hi) * scale
    dtanh = 1.0
    if softcap:
        t = jnp.tanh(s / softcap)
        s, dtanh = softcap * t, 1 - t * t
    sq, sk = q.shape[1], k.shape[1]
    mask, causal_kernel = numpy_mask(sq, sk, causal, *window)
    if slopes is not None:
        s = s + slopes[:, :, None, None] * jnp.asarray(numpy_alibi_bias(sq, sk, causal_kernel), jnp.float32)
    p = jnp.where(mask, jnp.exp(s - lse[..., None]), 0.0)
    dp = jnp.einsum("bqhd,bkhd->bhqk", f32(dout), ve, precision=hi)
    d = jnp.einsum("bqhd,bqhd->bhq", f32(dout), f32(out), precision=hi)
    ds = p * (dp - d[..., None]) * dtanh
    dq = jnp.einsum("bhqk,bkhd->bqhd", ds, ke, precision=hi) * scale
    dk = jnp.einsum("bhqk,bqhd->bkhd", ds, f32(q), precision=hi) * scale
    dv = jnp.einsum("bhqk,bqhd->bkhd", p, f32(dout), precision=hi)
    return dq.astype(q.dtype), dk.astype(q.dtype), dv.astype(q.dtype)


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16], ids=["bfloat16", "float16"])
@pytest.mark.parametrize("case", [CASES[1], CASES[3], CASES[4], CASES[7]], ids=["causal", "no-key-rows", "local", "softcap"])
@pytest.mark.parametrize("which", ["both", "lse-only"])
def test_lse_gradient_by_a_second_backward_call(flash, rng, dtype, case, which):
    """combine_backward_calls, fed the kernel's formula, gives the exact gradient of (out, lse)."""
    sq, sk, h, hk, causal, window, softcap = case
    q, k, v = case_arrays(rng, case, dtype=dtype)
    slopes = jnp.asarray(slopes_for(h, 2))
    scale = 16 ** -0.5
    out, lse = flash.attention_reference(q, k, v, scale, causal, window, softcap, alibi_slopes=slopes)
    dout = draw(rng, *q.shape, dtype=dtype) if which == "both" else None
    dlse = draw(rng, 2, h, sq) * 3

    def call(d_o, o, v_):
        return fa2_backward_standin(d_o, q, k, v_, o, lse, scale, causal, window, softcap, slopes)

    dq, dk, dv = flash._attention.combine_backward_calls(call, dout, dlse, q, k, v, out, lse)
    f32 = [x.astype(jnp.float32) for x in (q, k, v)]
    (o32, l32), vjp = jax.vjp(lambda q, k, v: flash.attention_reference(q, k, v, scale, causal, window, softcap,
                                                                         alibi_slopes=slopes), *f32)
    want = vjp((jnp.zeros_like(o32) if dout is None else dout.astype(jnp.float32), dlse))
    groups = h // hk
    for name, g, w in zip(("dq", "dk", "dv"), (dq, dk, dv), want):
        if name != "dq" and groups > 1:  # the kernel's per-query-head dk, dv, summed per key head
            g = g.astype(jnp.float32).reshape(g.shape[:2] + (hk, groups, g.shape[3])).sum(3)
        g = np.asarray(g, np.float32)
        w = np.asarray(w)
        assert np.isfinite(g).all(), name
        # The only error beyond float32 is the rounding of the results to `dtype`.
        tol = 2 * float(jnp.finfo(dtype).eps) * max(1.0, float(np.abs(w).max()))
        np.testing.assert_allclose(g, w, atol=tol, rtol=0, err_msg=name)


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16], ids=["bfloat16", "float16"])
def test_lse_cotangent_operands_carry_dlse_to_float32_precision(flash, dtype):
    dlse = jnp.asarray([[[1.0, -3.14159, 1e-6, 7e4, -1e9, 0.0, 2.0 ** -20, 123.456]]], jnp.float32)
    dout, out = flash._attention.lse_cotangent_operands(dlse, dtype, 8)
    assert dout.shape == out.shape == (1, 8, 1, 8) and dout.dtype == out.dtype == dtype
    d = np.einsum("bqhd,bqhd->bhq", np.asarray(dout, np.float64), np.asarray(out, np.float64))
    np.testing.assert_allclose(d, -np.asarray(dlse, np.float64), rtol=2 ** -15, atol=0)


# --- What the CUDA lowering hands XLA -------------------------------------------

def cuda_hlo(fn, *args):
    return jax.jit(fn).trace(*args).lower(lowering_platforms=("cuda",)).as_text()


def custom_calls(hlo):
    return re.findall(r"stablehlo\.custom_call @(\w+)\((.*)", hlo)


def sds(*shape, dtype=jnp.bfloat16):
    return jax.ShapeDtypeStruct(shape, dtype)


def test_forward_lowering_carries_alibi_operand_and_attribute(flash):
    q = sds(2, 64, 4, 128)
    (name, attrs), = custom_calls(cuda_hlo(lambda q: flash.flash_mha(q, q, q), q))
    assert name == f"{flash._binding.TARGET_PREFIX}_fwd"
    assert "has_alibi = false" in attrs and "deterministic" not in attrs
    assert "tensor<0xf32>" in attrs  # the empty placeholder slopes: operands never change
    slopes = sds(4, dtype=jnp.float32)
    (_, attrs), = custom_calls(cuda_hlo(lambda q, s: flash.flash_mha(q, q, q, alibi_slopes=s), q, slopes))
    assert "has_alibi = true" in attrs and "tensor<2x4xf32>" in attrs


@pytest.mark.parametrize("deterministic", [False, True])
def test_backward_lowering_carries_deterministic_and_its_workspace(flash, deterministic):
    batch, seqlen, heads, head_dim = 2, 64, 4, 128
    q = sds(batch, seqlen, heads, head_dim)
    loss = lambda q: flash.flash_mha(q, q, q, deterministic=deterministic).astype(jnp.float32).sum()
    calls = custom_calls(cuda_hlo(jax.grad(loss), q))
    prefix = flash._binding.TARGET_PREFIX
    assert [n for n, _ in calls] == [f"{prefix}_fwd", f"{prefix}_bwd"]
    bwd = calls[1][1]
    assert f"deterministic = {str(deterministic).lower()}" in bwd and "has_alibi = false" in bwd
    split = batch * 128 * heads * head_dim
    # Without a GPU the deterministic workspace is sized for FALLBACK_NUM_SMS SMs.
    num_sms = flash._attention._workspace_num_sms()
    if not on_gpu():
        assert num_sms == flash._attention.FALLBACK_NUM_SMS
    splits = math.ceil(num_sms / (batch * heads)) if deterministic else 1
    assert f"tensor<{splits * split}xf32>" in bwd


def test_lowering_needs_no_gpu_query_for_the_deterministic_workspace(flash, monkeypatch):
    if on_gpu():
        pytest.skip("checks lowering where JAX sees no GPU")

    def no_query(*args):
        raise AssertionError("num_sms() asked while lowering on a machine without a GPU")

    monkeypatch.setattr(flash._binding.extension, "num_sms", no_query, raising=False)
    flash._attention._workspace_num_sms.cache_clear()
    try:
        loss = lambda q: flash.flash_mha(q, q, q, deterministic=True).astype(jnp.float32).sum()
        assert "deterministic = true" in cuda_hlo(jax.grad(loss), sds(1, 32, 2, 64))
    finally:
        flash._attention._workspace_num_sms.cache_clear()


@pytest.mark.parametrize("through", ["out", "lse", "both"])
def test_lse_gradient_lowers_to_a_second_backward_call(flash, through):
    def loss(q):
        out, lse = flash.flash_mha(q, q, q, is_causal=True, return_lse=True)
        terms = {"out": out.astype(jnp.float32).sum(), "lse": lse.sum()}
        return sum(terms[t] for t in (["out", "lse"] if through == "both" else [through]))

    names = [n.rsplit("_", 1)[1] for n, _ in custom_calls(cuda_hlo(jax.grad(loss), sds(1, 64, 2, 128)))]
    assert names == {"out": ["fwd", "bwd"], "lse": ["fwd", "bwd"], "both": ["fwd", "bwd", "bwd"]}[through]


def test_export_with_alibi_and_deterministic(flash):
    prefix = flash._binding.TARGET_PREFIX
    loss = lambda q, s: flash.flash_mha(q, q, q, alibi_slopes=s, deterministic=True).astype(jnp.float32).sum()
    exported = jax.export.export(
        jax.jit(jax.grad(loss)), platforms=["cuda"],
        disabled_checks=[jax.export.DisabledSafetyCheck.custom_call(f"{prefix}_{n}") for n in ("fwd", "bwd")],
    )(sds(2, 32, 4, 128), sds(2, 4, dtype=jnp.float32))
    text = exported.mlir_module()
    assert f"{prefix}_fwd" in text and f"{prefix}_bwd" in text and "has_alibi = true" in text


# --- The extension surface (both bindings) -----------------------------------

def test_num_sms_and_workspace_surface(flash):
    ext = flash._binding.extension
    if on_gpu():
        assert ext.num_sms() > 0 and flash.num_sms(0) > 0
        assert ext.bwd_workspace_elems(1, 128, 1, 128, True)[0] == ext.num_sms() * 128 * 128
    else:
        with pytest.raises(RuntimeError, match="CUDA"):
            flash.num_sms()
        with pytest.raises(RuntimeError, match="CUDA"):
            ext.bwd_workspace_elems(1, 128, 1, 128, True)  # num_sms 0: asks the GPU
    with pytest.raises(ValueError, match="num_sms must be 0"):
        ext.bwd_workspace_elems(1, 128, 1, 128, True, -1)
    with pytest.raises(ValueError, match="device must be -1"):
        ext.num_sms(-2)
    with pytest.raises(TypeError):
        ext.bwd_workspace_elems(1, 128, 1, 128, 1, 132)  # deterministic must be a bool


def test_bindings_agree_on_the_new_surface():
    try:
        exts = [importlib.import_module(p)._binding.extension for p in PACKAGES.values()]
    except ImportError as e:
        pytest.skip(f"needs both bindings' packages: {e}")
    for args in [(2, 100, 4, 72, True, 132), (1, 1, 1, 8, True, 1), (3, 1000, 16, 256, True, 148),
                 (2, 100, 4, 72, False, 7)]:
        assert tuple(exts[0].bwd_workspace_elems(*args)) == tuple(exts[1].bwd_workspace_elems(*args))

    def outcome(fn):
        try:
            return fn()
        except Exception as e:  # noqa: BLE001 - the comparison is the point
            return type(e).__name__, str(e)

    for call in [lambda e: e.num_sms(), lambda e: e.num_sms(-2),
                 lambda e: e.bwd_workspace_elems(1, 1, 1, 8, True, -5)]:
        assert outcome(lambda: call(exts[0])) == outcome(lambda: call(exts[1]))


# --- The jax.nn adapter --------------------------------------------------------

def top_left_mask(sq, sk, causal, window):
    """jax.nn.dot_product_attention's mask (query t, key s), and which rows see no key."""
    t, s = np.arange(sq)[:, None], np.arange(sk)[None, :]
    mask = np.ones((sq, sk), bool)
    if causal:
        mask &= s <= t
    if window is not None:
        mask &= (t <= s + window[0]) & (t >= s - window[1])
    return mask


WINDOWS = [None, (0, 0), (1, 0), (0, 2), (2, 1), (3, 3), (7, 0), (0, 7)]


def test_top_left_to_flash_window_is_exact_and_complete(flash):
    """A mapped case has flash_mha's mask equal to jax.nn's, with no row that sees no key; an
    unmapped one has such a row, or no flash window gives its mask; self-attention always maps."""
    to_flash = flash._attention.top_left_to_flash_window
    mapped = 0
    for sq, sk, causal, window in itertools.product(range(1, 8), range(1, 8), [False, True], WINDOWS):
        flash_window = to_flash(sq, sk, causal, window)
        want = top_left_mask(sq, sk, causal, window)
        if flash_window is None:
            expressible = any(np.array_equal(numpy_mask(sq, sk, False, left, right)[0], want)
                              for left in range(-1, sk + 1) for right in range(-1, sk + 1))
            assert not expressible or not want.any(axis=1).all(), (sq, sk, causal, window)
            continue
        mapped += 1
        got, _ = numpy_mask(sq, sk, False, *flash_window)
        assert np.array_equal(got, want), (sq, sk, causal, window, flash_window)
        assert want.any(axis=1).all(), "mapped, yet a row sees no key"
    assert mapped > 300
    for n, causal, window in itertools.product(range(1, 8), [False, True], WINDOWS):
        assert to_flash(n, n, causal, window) is not None, (n, causal, window)


def test_top_left_to_flash_window_refuses_what_it_cannot_express(flash):
    to_flash = flash._attention.top_left_to_flash_window
    assert to_flash(4, 8, True, None) is None      # top-left causal, seqlen_q < seqlen_k
    assert to_flash(8, 4, True, None) is None      # would need window_right 4 >= seqlen_k
    assert to_flash(6, 4, True, None) == (-1, 2)
    assert to_flash(8, 2, False, (1, 1)) is None   # rows 4.. see no key (jax.nn averages them)
    assert to_flash(5, 5, True, None) == (-1, 0)
    assert to_flash(5, 5, False, (2, 1)) == (2, 1)


def nn_attention(q, k, v, **options):
    return jax.nn.dot_product_attention(q, k, v, implementation="xla", **options)


ADAPTER_CASES = [
    # (name, shapes (sq, sk, heads, heads_k), options, maps onto flash_mha)
    ("full", (32, 32, 4, 4), {}, True),
    ("causal", (32, 32, 4, 2), dict(is_causal=True), True),
    ("causal-longer-q", (40, 24, 4, 4), dict(is_causal=True), True),
    ("window", (40, 32, 4, 4), dict(local_window_size=(10, 3)), True),
    ("window-shorter-q", (32, 48, 4, 4), dict(local_window_size=(5, 3)), False),
    ("window-int-causal", (32, 32, 4, 1), dict(local_window_size=4, is_causal=True), True),
    ("scale", (16, 16, 2, 2), dict(scale=0.3), True),
    ("residual", (32, 32, 4, 4), dict(is_causal=True, return_residual=True), True),
    ("causal-shorter-q", (24, 40, 4, 4), dict(is_causal=True), False),
    ("bias", (16, 16, 2, 2), dict(bias=np.full((1, 2, 16, 16), 0.5, np.float32)), False),
    ("mask", (16, 16, 2, 2), dict(mask=np.tril(np.ones((16, 16), bool))[None, None]), False),
    ("seq-lengths", (16, 16, 2, 2), dict(key_value_seq_lengths=np.array([9, 16], np.int32)), True),
]


@pytest.mark.parametrize("case", ADAPTER_CASES, ids=[c[0] for c in ADAPTER_CASES])
def test_dot_product_attention_adapter(flash, rng, case):
    _, (sq, sk, h, hk), options, maps = case
    # bfloat16 with head_dim 128: compiled into every build, so that on a GPU too the mapped
    # cases run the kernel.
    q = draw(rng, 2, sq, h, 128, dtype=jnp.bfloat16)
    k, v = (draw(rng, 2, sk, hk, 128, dtype=jnp.bfloat16) for _ in range(2))
    got = jax.jit(lambda q, k, v: flash.dot_product_attention(q, k, v, **options))(q, k, v)
    want = nn_attention(*(x.astype(jnp.float32) for x in (q, k, v)), **options)
    got, want = (x if isinstance(x, tuple) else (x,) for x in (got, want))
    assert [g.shape for g in got] == [w.shape for w in want]
    assert [g.dtype for g in got] == [jnp.bfloat16] * len(got)
    for g, w in zip(got, want):
        np.testing.assert_allclose(np.asarray(g, np.float32), np.asarray(w, np.float32), atol=3e-2, rtol=3e-2)
    calls = custom_calls(cuda_hlo(lambda q, k, v: flash.dot_product_attention(q, k, v, **options), q, k, v))
    assert bool(calls) == maps, calls


def test_dot_product_attention_unbatched_and_gradients(flash, rng):
    q, k, v = (draw(rng, 24, 2, 128, dtype=jnp.bfloat16) for _ in range(3))  # [seq, heads, head_dim]
    fn = lambda q, k, v: flash.dot_product_attention(q, k, v, is_causal=True)
    assert custom_calls(cuda_hlo(fn, q, k, v))
    got = jax.grad(lambda q, k, v: fn(q, k, v).astype(jnp.float32).sum(), argnums=(0, 1, 2))(q, k, v)
    want = jax.grad(lambda q, k, v: nn_attention(q, k, v, is_causal=True).astype(jnp.float32).sum(),
                    argnums=(0, 1, 2))(*(x.astype(jnp.float32) for x in (q, k, v)))
    assert fn(q, k, v).shape == q.shape
    for g, w in zip(got, want):
        assert g.shape == w.shape and g.dtype == jnp.bfloat16
        np.testing.assert_allclose(np.asarray(g, np.float32), np.asarray(w), atol=3e-2, rtol=3e-2)


def test_dot_product_attention_falls_back_with_implementation(flash, rng, monkeypatch):
    seen = []
    real = jax.nn.dot_product_attention

    def spy(*args, **kwargs):
        seen.append(kwargs)
        return real(*args, **{**kwargs, "implementation": "xla"})

    monkeypatch.setattr(jax.nn, "dot_product_attention", spy)
    q = draw(rng, 1, 8, 2, 32)  # float32: no kernel
    flash.dot_product_attention(q, q, q, is_causal=True, implementation="cudnn")
    assert seen and seen[-1]["implementation"] == "cudnn" and seen[-1]["is_causal"] is True
    seen.clear()
    # bf16 with head_dim 128: the kernel set every build has (CI's and the device's).
    q = draw(rng, 1, 8, 2, 128, dtype=jnp.bfloat16)
    flash.dot_product_attention(q, q, q, implementation="cudnn")
    assert not seen, "a mapped call does not consult jax.nn"


# --- The flax attention_fn -------------------------------------------------------

def test_flax_attention_fn_without_flax(flash, rng):
    """The mapped path needs no flax: arbitrary batch dims, dtype promotion, causal option."""
    q = draw(rng, 2, 3, 16, 2, 128, dtype=jnp.bfloat16)  # [batch..., seq, heads, head_dim]
    out = flash.flax_attention_fn(q, q, q, is_causal=True)
    flat = q.reshape(6, 16, 2, 128)
    want = flash.attention_reference(flat, flat, flat, is_causal=True)[0].reshape(q.shape)
    # Both are bf16 roundings of nearly equal float32 values, so they may differ by one
    # unit in the last place: 2^-7 relative, 0.016 at |x| = 2 (failed once at atol 1e-2 alone).
    np.testing.assert_allclose(np.asarray(out, np.float32), np.asarray(want, np.float32), atol=1e-2, rtol=2 ** -7)
    out = flash.flax_attention_fn(q.astype(jnp.float32), q, q, dtype=jnp.bfloat16)
    assert out.dtype == jnp.bfloat16
    assert custom_calls(cuda_hlo(lambda q: flash.flax_attention_fn(q, q, q, dtype=jnp.bfloat16),
                                 q.astype(jnp.float32)))


def test_flax_multi_head_attention(flash, rng):
    nn = pytest.importorskip("flax.linen", reason="flax is not installed")
    x = draw(rng, 2, 24, 512)  # 4 heads of 128
    for options in [dict(), dict(dropout_rate=0.1, deterministic=True)]:
        ours = nn.MultiHeadDotProductAttention(num_heads=4, dtype=jnp.bfloat16, attention_fn=flash.flax_attention_fn,
                                               **options)
        theirs = nn.MultiHeadDotProductAttention(num_heads=4, dtype=jnp.bfloat16, **options)
        params = theirs.init(jax.random.key(0), x)
        got = jax.jit(lambda p, x: ours.apply(p, x))(params, x)
        want = theirs.apply(params, x)
        np.testing.assert_allclose(np.asarray(got, np.float32), np.asarray(want, np.float32), atol=3e-2, rtol=3e-2)
        assert custom_calls(cuda_hlo(lambda x: ours.apply(params, x), x))
    # A causal mask given as `mask` falls back to flax; is_causal=True maps. Both agree.
    causal_mask = nn.make_causal_mask(jnp.ones((2, 24)))
    ours = nn.MultiHeadDotProductAttention(num_heads=4, dtype=jnp.bfloat16, attention_fn=flash.flax_attention_fn)
    causal = nn.MultiHeadDotProductAttention(
        num_heads=4, dtype=jnp.bfloat16,
        attention_fn=functools.partial(flash.flax_attention_fn, is_causal=True))
    params = ours.init(jax.random.key(1), x)
    fallback = ours.apply(params, x, mask=causal_mask)
    mapped = causal.apply(params, x)
    np.testing.assert_allclose(np.asarray(mapped, np.float32), np.asarray(fallback, np.float32), atol=3e-2, rtol=3e-2)
    assert not custom_calls(cuda_hlo(lambda x: ours.apply(params, x, mask=causal_mask), x))
    # Dropout in training: flax's own attention, with the causal mask added to it. (flax passes
    # an attention_fn only the keyword arguments its signature names: use functools.partial.)
    drop = nn.MultiHeadDotProductAttention(
        num_heads=4, dtype=jnp.bfloat16, dropout_rate=0.5,
        attention_fn=functools.partial(flash.flax_attention_fn, is_causal=True))
    out = drop.apply(params, x, deterministic=False, rngs={"dropout": jax.random.key(2)})
    assert out.shape == x.shape and not np.allclose(np.asarray(out, np.float32), np.asarray(mapped, np.float32))
