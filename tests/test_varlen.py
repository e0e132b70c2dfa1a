"""flash_mha_varlen: packed variable-length sequences.

CPU: the varlen reference against the float64 numpy oracle run per sequence,
flash_mha_varlen (its CPU path) against flash_mha per sequence, forward and
gradients, argument checks, the CUDA lowering and both bindings' surface.
GPU: the kernels against the float32 reference (tolerance rule of test_gpu.py).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import importable_extensions, on_gpu, requires_gpu
from numpy_oracle import numpy_alibi_bias, numpy_attention, numpy_mask
from test_gpu import assert_close, need_kernel, poison_device_memory
from test_lowering import cuda_hlo, custom_calls

pytestmark = pytest.mark.default_kernels

# (id, query lengths, key lengths, heads, heads_k, options)
CASES = [
    ("plain", [5, 1, 17], [5, 1, 17], 4, 4, {}),
    ("causal-unequal", [3, 7, 7], [5, 4, 11], 4, 2, dict(is_causal=True)),
    ("window", [9, 20], [12, 20], 2, 2, dict(window_size=(4, 2))),
    ("mqa-softcap", [6, 13], [6, 13], 4, 1, dict(softcap=5.0)),
    ("alibi-causal", [8, 3], [8, 6], 2, 2, dict(is_causal=True, alibi_slopes=np.float32([0.5, 0.25]))),
    ("alibi-local", [8, 11], [10, 11], 2, 2, dict(window_size=(3, -1), alibi_slopes=np.float32([0.5, 0.25]))),
]


def offsets(lengths):
    return np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)


def packed(rng, lengths_q, lengths_k, heads, heads_k, head_dim, dtype=jnp.float32):
    draw = lambda n, h: jnp.asarray(rng.standard_normal((int(sum(n)), h, head_dim)), dtype)
    return draw(lengths_q, heads), draw(lengths_k, heads_k), draw(lengths_k, heads_k)


def per_sequence(fn, q, k, v, lengths_q, lengths_k):
    """fn(q_b, k_b, v_b, b) on each sequence as a batch of one."""
    cq, ck = offsets(lengths_q), offsets(lengths_k)
    return [fn(q[None, cq[b]:cq[b + 1]], k[None, ck[b]:ck[b + 1]], v[None, ck[b]:ck[b + 1]], b)
            for b in range(len(lengths_q))]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_reference_matches_float64_per_sequence(flash, rng, case):
    _, lq, lk, h, hk, options = case
    q, k, v = packed(rng, lq, lk, h, hk, 16, jnp.float64 if jax.config.x64_enabled else jnp.float32)
    max_k = max(lk)
    out, lse = flash.varlen_attention_reference(q, k, v, offsets(lq), offsets(lk), max_k, **options)
    causal, window = options.get("is_causal", False), options.get("window_size", (-1, -1))

    def oracle(qb, kb, vb, b):
        # Windows are normalized against max_seqlen_k, as the kernels do.
        left, right = window
        left, right = (-1 if left >= max_k else left), (-1 if right >= max_k else right)
        mask, causal_kernel = numpy_mask(qb.shape[1], kb.shape[1], causal, left, right)
        slopes = options.get("alibi_slopes")
        return numpy_attention(*(np.asarray(x, np.float64) for x in (qb, kb, vb)), 16 ** -0.5, mask,
                               options.get("softcap", 0.0), None if slopes is None else slopes[None].astype(np.float64),
                               numpy_alibi_bias(qb.shape[1], kb.shape[1], causal_kernel))

    want = per_sequence(oracle, q, k, v, lq, lk)
    np.testing.assert_allclose(np.asarray(out), np.concatenate([w[0][0] for w in want]), atol=2e-5, rtol=2e-5)
    np.testing.assert_allclose(np.asarray(lse), np.concatenate([w[1][0] for w in want], axis=1), atol=2e-5, rtol=2e-5)


@pytest.mark.skipif(on_gpu(), reason="checks the CPU fallback path")
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_cpu_path_equals_flash_mha_per_sequence(flash, rng, case):
    """Forward, lse and gradients through both equal flash_mha run on each sequence alone."""
    _, lq, lk, h, hk, options = case
    q, k, v = packed(rng, lq, lk, h, hk, 16, jnp.float16)  # both sides compute in float32
    dout = jnp.asarray(rng.standard_normal(q.shape), jnp.float32)
    dlse = jnp.asarray(rng.standard_normal((h, q.shape[0])), jnp.float32)

    def loss_varlen(q, k, v):
        out, lse = flash.flash_mha_varlen(q, k, v, offsets(lq), offsets(lk), max(lq), max(lk), return_lse=True,
                                          **options)
        finite = jnp.where(jnp.isfinite(lse), lse, 0)
        return jnp.sum(out.astype(jnp.float32) * dout) + jnp.sum(finite * dlse), (out, lse)

    def loss_dense(q, k, v):
        total, outs, lses = 0.0, [], []
        cq = offsets(lq)
        for b, (out, lse) in enumerate(per_sequence(
                lambda qb, kb, vb, b: flash.attention_reference(
                    qb, kb, vb, is_causal=options.get("is_causal", False),
                    window_size=tuple(-1 if w >= max(lk) else w for w in options.get("window_size", (-1, -1))),
                    softcap=options.get("softcap", 0.0), alibi_slopes=options.get("alibi_slopes")),
                q, k, v, lq, lk)):
            finite = jnp.where(jnp.isfinite(lse[0]), lse[0], 0)
            total = total + jnp.sum(out[0].astype(jnp.float32) * dout[cq[b]:cq[b + 1]]) \
                + jnp.sum(finite * dlse[:, cq[b]:cq[b + 1]])
            outs.append(out[0])
            lses.append(lse[0])
        return total, (jnp.concatenate(outs), jnp.concatenate(lses, axis=1))

    # Jitted: op by op, the many small per-sequence ops took 30-40 s per case on a 2-core CI machine.
    value_and_grads = lambda loss: jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True))(q, k, v)
    (_, (out, lse)), grads = value_and_grads(loss_varlen)
    (_, (want_out, want_lse)), want_grads = value_and_grads(loss_dense)
    # The same float32 arithmetic on the same inputs: equal up to float16 rounding of the results.
    f32 = lambda x: np.asarray(x, np.float32)
    np.testing.assert_allclose(f32(out), f32(want_out), atol=2e-3, rtol=2e-3)
    np.testing.assert_allclose(f32(lse), f32(want_lse), atol=1e-5)
    for g, w in zip(grads, want_grads):
        np.testing.assert_allclose(f32(g), f32(w), atol=5e-3, rtol=5e-3)


BAD = [
    # (id, change to the good arguments, exception, message fragment)
    ("rank 4 q", lambda a: a.update(q=a["q"][None]), ValueError, "q must have rank 3"),
    ("float32", lambda a: a.update(q=a["q"].astype(jnp.float32)), TypeError, "q has dtype float32"),
    ("cu int64", lambda a: a.update(cu_seqlens_q=np.int64([0, 4, 9])), TypeError, "cu_seqlens_q must have dtype int32"),
    ("cu 2-D", lambda a: a.update(cu_seqlens_k=np.int32([[0, 9]])), ValueError, "cu_seqlens_k must have shape"),
    ("batch mismatch", lambda a: a.update(cu_seqlens_k=np.int32([0, 9])), ValueError, "has 1 sequences but"),
    ("not from 0", lambda a: a.update(cu_seqlens_q=np.int32([1, 4, 9])), ValueError, "must rise from 0 to 9"),
    ("not to total", lambda a: a.update(cu_seqlens_k=np.int32([0, 4, 8])), ValueError, "must rise from 0 to 9"),
    ("decreasing", lambda a: a.update(cu_seqlens_q=np.int32([0, 10, 9])), ValueError, "nondecreasing"),
    ("too long", lambda a: a.update(max_seqlen_q=4), ValueError, "a sequence of 5 tokens, more than max_seqlen 4"),
    ("max not int", lambda a: a.update(max_seqlen_k=5.0), ValueError, "max_seqlen_k must be an int"),
    ("max zero", lambda a: a.update(max_seqlen_k=0), ValueError, "max_seqlen_k must be an int"),
    ("slopes shape", lambda a: a.update(alibi_slopes=np.float32([1, 2, 3])), ValueError, "alibi_slopes must have shape"),
    ("heads", lambda a: a.update(k=a["k"][:, :3], v=a["v"][:, :3]), ValueError, "multiple of the heads of k"),
]


@pytest.mark.parametrize("case", BAD, ids=[c[0] for c in BAD])
def test_bad_input_raises(flash, case):
    _, change, exception, fragment = case
    args = dict(q=jnp.ones((9, 4, 128), jnp.bfloat16), k=jnp.ones((9, 4, 128), jnp.bfloat16),
                v=jnp.ones((9, 4, 128), jnp.bfloat16), cu_seqlens_q=np.int32([0, 4, 9]),
                cu_seqlens_k=np.int32([0, 3, 9]), max_seqlen_q=5, max_seqlen_k=6)
    change(args)
    with pytest.raises(exception, match=fragment):
        flash.flash_mha_varlen(**args)


def test_traced_offsets_longer_than_max_give_nan(flash):
    q = jnp.ones((9, 2, 128), jnp.bfloat16)
    fn = jax.jit(lambda cq: flash.flash_mha_varlen(q, q, q, cq, cq, 4, 4))
    assert not jnp.isnan(fn(np.int32([0, 4, 8, 9]))).any()
    assert jnp.isnan(fn(np.int32([0, 2, 7, 9]))).all()  # a sequence of 5 > 4


def test_lowering_to_the_varlen_calls(flash):
    q = jax.ShapeDtypeStruct((30, 4, 128), jnp.bfloat16)
    k = jax.ShapeDtypeStruct((40, 2, 128), jnp.bfloat16)
    cu = jax.ShapeDtypeStruct((4,), jnp.int32)
    prefix = flash._binding.TARGET_PREFIX
    fwd = custom_calls(cuda_hlo(lambda q, k, cq, ck: flash.flash_mha_varlen(q, k, k, cq, ck, 17, 23, is_causal=True),
                                q, k, cu, cu))
    assert [name for name, _ in fwd] == [f"{prefix}_varlen_fwd"]
    for expected in ("max_seqlen_q = 17 : i32", "max_seqlen_k = 23 : i32", "is_causal = true",
                     "tensor<30x4x128xbf16>", "tensor<4x30xf32>", "tensor<4xi32>"):
        assert expected in fwd[0][1], fwd[0][1]
    loss = lambda q, k, cq, ck: flash.flash_mha_varlen(q, k, k, cq, ck, 17, 23).astype(jnp.float32).sum()
    calls = custom_calls(cuda_hlo(jax.grad(loss), q, k, cu, cu))
    assert [name for name, _ in calls] == [f"{prefix}_varlen_fwd", f"{prefix}_varlen_bwd"]
    assert "deterministic = false" in calls[1][1] and "tensor<40x4x128xbf16>" in calls[1][1]


def test_both_bindings_register_varlen_and_size_its_workspace_alike():
    sizes = {}
    for name, ext in importable_extensions().items():
        assert {"fwd", "bwd", "varlen_fwd", "varlen_bwd"} <= set(ext.registrations())
        sizes[name] = [ext.varlen_bwd_workspace_elems(3, 100, 8, d, det, 132) for d in (64, 96, 256)
                       for det in (False, True)]
    # (total_q + 128 * batch) rows of heads * round_up(head_dim) floats; deterministic: ceil(132 / 24) = 6 copies.
    want = [((100 + 384) * 8 * r * s, 8 * (100 + 384)) for r in (64, 96, 256) for s in (1, 6)]
    assert sizes and all(got == want for got in sizes.values())


# --- GPU --------------------------------------------------------------------

GPU_CASES = [
    ("plain", [1, 17, 130, 300], [1, 17, 130, 300], 4, 4, {}),
    ("causal-unequal", [40, 200, 3], [90, 100, 3], 4, 2, dict(is_causal=True)),
    ("window", [256, 77], [300, 77], 2, 1, dict(window_size=(32, 8))),
    ("softcap-alibi", [128, 65], [128, 65], 2, 2, dict(softcap=5.0, alibi_slopes=np.float32([0.3, 0.1]))),
]


@requires_gpu
@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16], ids=["bfloat16", "float16"])
@pytest.mark.parametrize("case", GPU_CASES, ids=[c[0] for c in GPU_CASES])
def test_kernels_match_reference(flash, rng, case, dtype):
    _, lq, lk, h, hk, options = case
    need_kernel(flash, dtype, 128)
    q, k, v = packed(rng, lq, lk, h, hk, 128, dtype)
    cq, ck = offsets(lq), offsets(lk)
    dout = jnp.asarray(rng.standard_normal(q.shape), dtype)
    args = (cq, ck, max(lq), max(lk))
    kernel = jax.jit(lambda q, k, v: flash.flash_mha_varlen(q, k, v, *args, **options))
    reference = jax.jit(lambda q, k, v: flash.varlen_attention_reference(q, k, v, cq, ck, max(lk), **options)[0])
    plain = jax.jit(lambda q, k, v: flash.varlen_attention_reference(q, k, v, cq, ck, max(lk), compute_dtype=dtype,
                                                                     **options)[0])
    f32 = [x.astype(jnp.float32) for x in (q, k, v)]
    poison_device_memory(4 * q.size * 4)
    assert_close("out", kernel(q, k, v), reference(*f32), plain(q, k, v))

    vjp = lambda fn: jax.jit(lambda q, k, v, g: jax.vjp(fn, q, k, v)[1](g))
    poison_device_memory(4 * (q.size + k.size + v.size) * 4)
    got, want, base = vjp(kernel)(q, k, v, dout), vjp(reference)(*f32, dout.astype(jnp.float32)), \
        vjp(plain)(q, k, v, dout)
    for name, g, w, b in zip(("dq", "dk", "dv"), got, want, base):
        assert_close(name, g, w, b)


@requires_gpu
def test_kernels_lse_and_deterministic_backward(flash, rng):
    need_kernel(flash, jnp.bfloat16, 128)
    lq = lk = [70, 1, 190]
    q, k, v = packed(rng, lq, lk, 4, 2, 128, jnp.bfloat16)
    cq = offsets(lq)
    out, lse = flash.flash_mha_varlen(q, k, v, cq, cq, 190, 190, is_causal=True, return_lse=True)
    _, want = flash.varlen_attention_reference(*(x.astype(jnp.float32) for x in (q, k, v)), cq, cq, 190,
                                               is_causal=True)
    np.testing.assert_allclose(np.asarray(lse), np.asarray(want), atol=2e-2)
    loss = jax.jit(jax.grad(lambda q, k, v: flash.flash_mha_varlen(
        q, k, v, cq, cq, 190, 190, is_causal=True, deterministic=True).astype(jnp.float32).sum(), argnums=(0, 1, 2)))
    first, second = loss(q, k, v), loss(q, k, v)
    for a, b in zip(first, second):
        assert np.array_equal(np.asarray(a), np.asarray(b))
