"""The pure-JAX reference and the CPU fallback of flash_mha (no GPU needed)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import on_gpu
from numpy_oracle import numpy_attention, numpy_mask


CASES = [
    # sq, sk, heads, heads_k, causal, window, softcap
    (17, 17, 4, 4, False, (-1, -1), 0.0),
    (17, 17, 4, 4, True, (-1, -1), 0.0),
    (13, 29, 4, 2, True, (-1, -1), 0.0),   # causal, seqlen_q < seqlen_k: bottom-right aligned
    (29, 13, 4, 1, True, (-1, -1), 0.0),   # causal, seqlen_q > seqlen_k: first rows see nothing
    (33, 33, 2, 2, False, (4, 2), 0.0),
    (33, 40, 2, 2, False, (3, -1), 0.0),
    (16, 16, 2, 2, False, (-1, -1), 5.0),
]


@pytest.mark.parametrize("case", CASES)
def test_reference_matches_float64(flash, rng, case):
    sq, sk, h, hk, causal, window, softcap = case
    b, d = 2, 16
    q = rng.standard_normal((b, sq, h, d))
    k = rng.standard_normal((b, sk, hk, d))
    v = rng.standard_normal((b, sk, hk, d))
    want, _ = numpy_attention(q, k, v, d ** -0.5, numpy_mask(sq, sk, causal, *window)[0], softcap)
    got, lse = flash.attention_reference(*(jnp.asarray(x, jnp.float32) for x in (q, k, v)),
                                         is_causal=causal, window_size=window, softcap=softcap)
    np.testing.assert_allclose(np.asarray(got), want, atol=2e-5, rtol=2e-5)
    assert lse.shape == (b, h, sq)


@pytest.mark.skipif(on_gpu(), reason="checks the CPU fallback path")
@pytest.mark.parametrize("case", CASES[:4])
def test_cpu_fallback_forward_and_gradients(flash, rng, case):
    sq, sk, h, hk, causal, window, softcap = case
    shapes = [(2, sq, h, 16), (2, sk, hk, 16), (2, sk, hk, 16)]
    q, k, v = (jnp.asarray(rng.standard_normal(s), jnp.float16) for s in shapes)
    dout = jnp.asarray(rng.standard_normal(shapes[0]), jnp.float32)

    def loss(fn):
        return lambda q, k, v: jnp.sum(fn(q, k, v).astype(jnp.float32) * dout)

    flash_fn = lambda q, k, v: flash.flash_mha(q, k, v, is_causal=causal, window_size=window)
    ref_fn = lambda q, k, v: flash.attention_reference(q, k, v, is_causal=causal, window_size=window)[0]
    np.testing.assert_array_equal(np.asarray(jax.jit(flash_fn)(q, k, v)), np.asarray(ref_fn(q, k, v)))
    got = jax.jit(jax.grad(loss(flash_fn), argnums=(0, 1, 2)))(q, k, v)
    want = jax.grad(loss(ref_fn), argnums=(0, 1, 2))(q, k, v)
    for g, w in zip(got, want):
        assert g.shape == w.shape and g.dtype == w.dtype
        np.testing.assert_allclose(np.asarray(g, np.float32), np.asarray(w, np.float32), atol=2e-3, rtol=2e-3)


@pytest.mark.skipif(on_gpu(), reason="checks the CPU fallback path")
def test_cpu_fallback_vmap_and_odd_head_dim(flash, rng):
    q = jnp.asarray(rng.standard_normal((3, 2, 9, 2, 20)), jnp.bfloat16)  # head_dim 20: padded to 24
    out = jax.vmap(lambda x: flash.flash_mha(x, x, x, is_causal=True))(q)
    want = jnp.stack([flash.attention_reference(x, x, x, is_causal=True)[0] for x in q])
    assert out.shape == q.shape
    np.testing.assert_allclose(np.asarray(out, np.float32), np.asarray(want, np.float32), atol=1e-2)
