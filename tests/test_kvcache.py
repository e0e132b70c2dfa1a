"""flash_mha_with_kvcache: decoding against contiguous and paged KV caches.

CPU: the KV-cache reference against the dense reference run per batch entry
on that entry's keys, the CPU path's appends and paging, argument checks, the
NaN guard for traced lengths, the CUDA lowering and both bindings' surface.
GPU: the split-KV kernels against the float32 reference (test_gpu.py's
tolerance rule), with the outputs poisoned first.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import importable_extensions, on_gpu, requires_gpu
from test_gpu import assert_close, poison_device_memory
from test_lowering import cuda_hlo, custom_calls

pytestmark = pytest.mark.default_kernels

PAGE = 256


def draw(rng, shape, dtype=jnp.float32):
    return jnp.asarray(rng.standard_normal(shape, np.float32), dtype)


def skip_without_split_kv(flash, dtype="bfloat16"):
    """On a GPU, flash_mha_with_kvcache refuses (even to lower) a call its build
    has no split-KV kernel for (--//cpp:splitkv=false)."""
    if on_gpu() and not (flash.has_kernel(dtype, 128) and flash._binding.extension.has_kvcache_kernel(dtype, 128)):
        pytest.skip(f"no split-KV kernel for {dtype}/128 in this build ({flash.build_config()})")


def paged_copy(rng, caches, num_blocks):
    """Contiguous caches [batch, capacity, ...] laid out in the same shuffled
    pages: ([pages [num_blocks, PAGE, ...] per cache], block_table int32
    [batch, capacity // PAGE]). Unused pages hold noise."""
    batch, capacity = caches[0].shape[:2]
    table = rng.permutation(num_blocks)[:batch * capacity // PAGE].reshape(batch, -1).astype(np.int32)
    pages = [draw(rng, (num_blocks, PAGE) + c.shape[2:], c.dtype).at[table.reshape(-1)].set(
        c.reshape((-1, PAGE) + c.shape[2:])) for c in caches]
    return pages, jnp.asarray(table)


def per_entry_reference(flash, q, k_cache, v_cache, lengths, **options):
    """The dense reference on each entry's first lengths[b] keys (a batch of one each)."""
    outs, lses = [], []
    for b, n in enumerate(np.asarray(lengths)):
        slopes = options.get("alibi_slopes")
        opts = dict(options, alibi_slopes=None if slopes is None else slopes[b:b + 1] if slopes.ndim == 2 else slopes)
        if n == 0:  # no key: zeros and +inf, as the kernels write them
            outs.append(jnp.zeros_like(q[b:b + 1], jnp.float32))
            lses.append(jnp.full((1, q.shape[2], q.shape[1]), jnp.inf))
            continue
        out, lse = flash.attention_reference(q[b:b + 1], k_cache[b:b + 1, :n], v_cache[b:b + 1, :n], **opts)
        outs.append(out.astype(jnp.float32))
        lses.append(lse)
    return jnp.concatenate(outs), jnp.concatenate(lses)


# (id, batch, seqlen_q, heads, heads_k, lengths, options); windows stay below
# every length so that normalizing them against the capacity or the entry's
# length agrees.
CASES = [
    ("decode", 3, 1, 4, 4, [5, 300, 512], {}),
    ("gqa-causal", 2, 3, 4, 2, [7, 260], dict(is_causal=True)),
    ("mqa-window", 2, 2, 4, 1, [40, 511], dict(window_size=(6, 0))),
    ("softcap-alibi", 2, 4, 2, 2, [9, 100], dict(softcap=4.0, is_causal=True,
                                                   alibi_slopes=np.float32([[0.5, 0.25], [0.1, 0.3]]))),
    ("empty-entry", 2, 1, 2, 2, [0, 33], {}),
    ("alibi-rows", 2, 3, 2, 2, [20, 400], dict(alibi_slopes=np.float32([0.5, 0.25]))),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_reference_equals_dense_per_entry(flash, rng, case):
    _, batch, sq, h, hk, lengths, options = case
    q, k_cache, v_cache = draw(rng, (batch, sq, h, 16)), draw(rng, (batch, 512, hk, 16)), \
        draw(rng, (batch, 512, hk, 16))
    lengths = np.int32(lengths)
    out, lse = flash.kvcache_attention_reference(q, k_cache, v_cache, lengths, **options)
    want_out, want_lse = per_entry_reference(flash, q, k_cache, v_cache, lengths, **options)
    np.testing.assert_allclose(np.asarray(out), np.asarray(want_out), atol=2e-5, rtol=2e-5)
    np.testing.assert_allclose(np.asarray(lse), np.asarray(want_lse), atol=2e-5, rtol=2e-5)


@pytest.mark.skipif(on_gpu(), reason="checks the CPU fallback path")
@pytest.mark.parametrize("paged", [False, True], ids=["contiguous", "paged"])
def test_cpu_path_appends_then_attends(flash, rng, paged):
    batch, capacity, hk, d = 3, 2 * PAGE, 2, 16
    q = draw(rng, (batch, 2, 4, d), jnp.float16)
    k_cache, v_cache = draw(rng, (batch, capacity, hk, d), jnp.float16), draw(rng, (batch, capacity, hk, d), jnp.float16)
    k_new, v_new = draw(rng, (batch, 2, hk, d), jnp.float16), draw(rng, (batch, 2, hk, d), jnp.float16)
    seqlens = np.int32([0, 255, 510])  # the second entry's new keys straddle a page boundary
    want_k, want_v = k_cache, v_cache
    for b, n in enumerate(seqlens):
        want_k, want_v = want_k.at[b, n:n + 2].set(k_new[b]), want_v.at[b, n:n + 2].set(v_new[b])
    want_out, want_lse = per_entry_reference(flash, q, want_k, want_v, seqlens + 2, is_causal=True)
    table = None
    if paged:
        (k_cache, v_cache), table = paged_copy(rng, [k_cache, v_cache], 8)
    out, lse, new_k, new_v = jax.jit(lambda *a: flash.flash_mha_with_kvcache(
        *a[:3], k=a[3], v=a[4], cache_seqlens=a[5], block_table=table, is_causal=True,
        return_lse=True))(q, k_cache, v_cache, k_new, v_new, seqlens)
    np.testing.assert_allclose(np.asarray(out, np.float32), np.asarray(want_out), atol=2e-3, rtol=2e-3)
    np.testing.assert_allclose(np.asarray(lse), np.asarray(want_lse), atol=1e-4, rtol=1e-4)
    if paged:
        new_k, new_v = (c[table].reshape(batch, capacity, hk, d) for c in (new_k, new_v))
    np.testing.assert_array_equal(np.asarray(new_k, np.float32), np.asarray(want_k, np.float32))
    np.testing.assert_array_equal(np.asarray(new_v, np.float32), np.asarray(want_v, np.float32))


BAD = [
    # (id, change to the good arguments, exception, message fragment)
    ("rank 3 q", lambda a: a.update(q=a["q"][0]), ValueError, "q must have rank 4"),
    ("float32", lambda a: a.update(q=a["q"].astype(jnp.float32)), TypeError, "q has dtype float32"),
    ("cache shapes", lambda a: a.update(v_cache=a["v_cache"][:, :8]), ValueError, "k_cache and v_cache must have"),
    ("cache batch", lambda a: a.update(k_cache=a["k_cache"][:1], v_cache=a["v_cache"][:1]), ValueError,
     "k_cache has batch 1"),
    ("heads", lambda a: a.update(q=a["q"][:, :, :3]), ValueError, "multiple of the heads"),
    ("k without v", lambda a: a.update(k=a["q"][:, :, :2]), ValueError, "must be given together"),
    ("k without lengths", lambda a: a.update(k=a["q"][:, :, :2], v=a["q"][:, :, :2], cache_seqlens=None),
     ValueError, "needs cache_seqlens"),
    ("k heads", lambda a: a.update(k=a["q"], v=a["q"]), ValueError, "k must be a bfloat16 array"),
    ("lengths int64", lambda a: a.update(cache_seqlens=np.int64([1, 2])), ValueError, "cache_seqlens must be an int"),
    ("lengths over", lambda a: a.update(cache_seqlens=np.int32([1, 300])), ValueError, r"in \[0, 256\]"),
    ("append over", lambda a: a.update(k=a["q"][:, :, :2], v=a["q"][:, :, :2], cache_seqlens=np.int32([256, 0])),
     ValueError, r"in \[0, 255\]"),
    ("negative", lambda a: a.update(cache_seqlens=-1), ValueError, "cache_seqlens must hold"),
    ("table dtype", lambda a: a.update(block_table=np.int64([[0], [1]])), ValueError, "block_table must be an int32"),
    ("table range", lambda a: a.update(block_table=np.int32([[0], [2]])), ValueError, r"page indices in \[0, 1\]"),
    ("page size", lambda a: a.update(k_cache=a["k_cache"][:, :128], v_cache=a["v_cache"][:, :128],
                                     block_table=np.int32([[0], [1]])), ValueError, "multiple of 256"),
    ("splits", lambda a: a.update(num_splits=129), ValueError, "num_splits must be an int in"),
    ("window", lambda a: a.update(window_size=(-2, 0)), ValueError, "window_size entries"),
]


@pytest.mark.parametrize("case", BAD, ids=[c[0] for c in BAD])
def test_bad_input_raises(flash, case):
    _, change, exception, fragment = case
    args = dict(q=jnp.ones((2, 1, 4, 128), jnp.bfloat16), k_cache=jnp.ones((2, 256, 2, 128), jnp.bfloat16),
                v_cache=jnp.ones((2, 256, 2, 128), jnp.bfloat16), cache_seqlens=np.int32([3, 9]))
    change(args)
    with pytest.raises(exception, match=fragment):
        flash.flash_mha_with_kvcache(**args)


def test_traced_lengths_that_do_not_fit_give_nan(flash):
    skip_without_split_kv(flash)
    q = jnp.ones((3, 1, 2, 128), jnp.bfloat16)
    cache = jnp.ones((3, 256, 2, 128), jnp.bfloat16)
    new = jnp.ones((3, 2, 2, 128), jnp.bfloat16)
    fn = jax.jit(lambda n: flash.flash_mha_with_kvcache(q, cache, cache, new, new, cache_seqlens=n)[0])
    out = fn(np.int32([0, 254, 255]))  # the last entry's second new key falls outside
    assert not jnp.isnan(out[:2]).any() and jnp.isnan(out[2]).all()
    assert jnp.isnan(fn(np.int32([-1, 0, 0]))[0]).all()


def test_not_differentiable(flash):
    q = jnp.ones((1, 1, 2, 128), jnp.bfloat16)
    cache = jnp.ones((1, 256, 2, 128), jnp.bfloat16)
    with pytest.raises(TypeError, match="flash_mha_with_kvcache is not differentiable"):
        jax.grad(lambda q: flash.flash_mha_with_kvcache(q, cache, cache, cache_seqlens=5).astype(jnp.float32).sum())(q)


@pytest.mark.parametrize("paged", [False, True], ids=["contiguous", "paged"])
def test_lowering_to_the_kvcache_call(flash, paged):
    skip_without_split_kv(flash)
    q = jax.ShapeDtypeStruct((2, 1, 8, 128), jnp.bfloat16)
    cache = jax.ShapeDtypeStruct((6 if paged else 2, 512, 2, 128), jnp.bfloat16)
    new = jax.ShapeDtypeStruct((2, 1, 2, 128), jnp.bfloat16)
    lengths = jax.ShapeDtypeStruct((2,), jnp.int32)
    table = jax.ShapeDtypeStruct((2, 3), jnp.int32)
    fn = lambda q, c, n, lengths, table: flash.flash_mha_with_kvcache(
        q, c, c, n, n, cache_seqlens=lengths, block_table=table if paged else None, is_causal=True, num_splits=4)
    calls = custom_calls(cuda_hlo(fn, q, cache, new, lengths, table))
    assert [name for name, _ in calls] == [f"{flash._binding.TARGET_PREFIX}_kvcache_fwd"]
    # One query, 8 heads on 2 key heads: the kernel sees 4 rows of 2 heads
    # (the causal mask is moot for a single query). 4 splits of 2 * 2 * 4 rows:
    # an lse and 128 output floats each.
    for expected in (f"has_block_table = {str(paged).lower()}", "num_splits = 4 : i32", "is_causal = false",
                     "tensor<2x4x2x128xbf16>", "tensor<2x2x4xf32>", f"tensor<{64 + 64 * 128}xf32>",
                     "tensor<2x3xi32>" if paged else "tensor<2x1xi32>"):
        assert expected in calls[0][1], calls[0][1]
    # Per-head ALiBi slopes keep the heads as they are.
    slopes = np.float32([0.1] * 8)
    alibi = lambda q, c, n, lengths, table: flash.flash_mha_with_kvcache(
        q, c, c, n, n, cache_seqlens=lengths, block_table=table if paged else None, is_causal=True,
        alibi_slopes=slopes)
    calls = custom_calls(cuda_hlo(alibi, q, cache, new, lengths, table))
    assert "tensor<2x1x8x128xbf16>" in calls[0][1] and "is_causal = true" in calls[0][1], calls[0][1]


def test_both_bindings_register_kvcache_and_choose_splits_alike():
    got = {}
    for name, ext in importable_extensions().items():
        assert "kvcache_fwd" in ext.registrations()
        assert isinstance(ext.has_kvcache_kernel("bfloat16", 128), bool)
        got[name] = [ext.kvcache_splits(1, 1, 4096, 16, 128, 0, 132),  # decode: split to fill 132 SMs
                     ext.kvcache_splits(64, 1, 4096, 16, 128, 0, 132),  # batch * heads fill them already
                     ext.kvcache_splits(2, 3, 1000, 4, 96, 5, 132)]  # asked for 5
        for bad in ((1, 1, 64, 1, 64, 129, 132), (1, 1, 64, 1, 64, 0, 0)):
            with pytest.raises(ValueError, match="num_splits must be|num_sms must be"):
                ext.kvcache_splits(*bad)
    # FlashAttention-2's heuristic: 16 rows on 264 slots (2 per SM), 32 key
    # blocks of 128: 16 splits (efficiency 0.97) is the first within 85% of the
    # best that changes the blocks per split.
    want = [(16, 16 * 16 + 16 * 16 * 128), (1, 1), (5, 5 * 2 * 4 * 3 * (1 + 96))]
    assert got and all(g == want for g in got.values()), got


# --- GPU --------------------------------------------------------------------

GPU_CASES = [
    # (id, batch, seqlen_q, heads, heads_k, cache lengths, new tokens, options)
    ("decode", 4, 1, 16, 16, [1, 700, 1024, 333], 0, {}),
    ("decode-gqa-append", 3, 1, 16, 2, [0, 511, 1000], 1, dict(is_causal=True)),
    ("chunk-causal-append", 2, 5, 8, 8, [17, 900], 5, dict(is_causal=True)),
    ("window-softcap", 2, 3, 4, 1, [300, 1019], 2, dict(window_size=(64, 0), softcap=8.0)),
    ("alibi", 2, 2, 4, 4, [129, 640], 0, dict(alibi_slopes=np.float32([0.3, 0.1, 0.05, 0.02]))),
    ("decode-gqa-softcap", 2, 1, 8, 2, [77, 1024], 0, dict(softcap=6.0, window_size=(-1, 5))),
    ("decode-gqa-left-window", 2, 1, 8, 2, [300, 999], 0, dict(window_size=(100, 0))),
    ("empty-entry", 2, 1, 4, 4, [0, 40], 0, {}),
]


@requires_gpu
@pytest.mark.parametrize("splits", [0, 1, 3], ids=["auto-splits", "one-split", "three-splits"])
@pytest.mark.parametrize("paged", [False, True], ids=["contiguous", "paged"])
@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16], ids=["bfloat16", "float16"])
@pytest.mark.parametrize("case", GPU_CASES, ids=[c[0] for c in GPU_CASES])
def test_kernels_match_reference(flash, rng, case, dtype, paged, splits):
    _, batch, sq, h, hk, lengths, new, options = case
    skip_without_split_kv(flash, jnp.dtype(dtype).name)
    capacity = 1024 + (PAGE if new else 0)
    q = draw(rng, (batch, sq, h, 128), dtype)
    k_cache, v_cache = draw(rng, (batch, capacity, hk, 128), dtype), draw(rng, (batch, capacity, hk, 128), dtype)
    k_new = v_new = None
    lengths = np.int32(lengths)
    total = lengths + new
    want_k, want_v = k_cache, v_cache
    if new:
        k_new, v_new = draw(rng, (batch, new, hk, 128), dtype), draw(rng, (batch, new, hk, 128), dtype)
        for b, n in enumerate(lengths):
            want_k, want_v = want_k.at[b, n:n + new].set(k_new[b]), want_v.at[b, n:n + new].set(v_new[b])
    table = None
    if paged:
        (k_cache, v_cache), table = paged_copy(rng, [k_cache, v_cache], batch * capacity // PAGE + 3)
    f32 = lambda x: x.astype(jnp.float32)
    reference = jax.jit(lambda q, k, v: flash.kvcache_attention_reference(q, k, v, total, **options))
    plain = jax.jit(lambda q, k, v: flash.kvcache_attention_reference(q, k, v, total, compute_dtype=dtype,
                                                                      **options)[0])
    kernel = jax.jit(lambda *a: flash.flash_mha_with_kvcache(
        *a, cache_seqlens=lengths, block_table=table, num_splits=splits, return_lse=True, **options))
    poison_device_memory(4 * q.size * 4 * max(splits, 1) + (1 << 20))
    result = kernel(q, k_cache, v_cache, k_new, v_new)
    want_out, want_lse = reference(f32(q), f32(want_k), f32(want_v))
    assert_close("out", result[0], want_out, plain(q, want_k, want_v))
    np.testing.assert_allclose(np.asarray(result[1]), np.asarray(want_lse), atol=2e-2, rtol=1e-3)
    if new:
        got_k, got_v = result[2:]
        if paged:
            got_k, got_v = (c[table].reshape(batch, capacity, hk, 128) for c in (got_k, got_v))
        assert np.array_equal(np.asarray(f32(got_k)), np.asarray(f32(want_k)))
        assert np.array_equal(np.asarray(f32(got_v)), np.asarray(f32(want_v)))


@requires_gpu
def test_donated_cache_is_updated_in_place(flash, rng):
    skip_without_split_kv(flash)
    q = draw(rng, (2, 1, 8, 128), jnp.bfloat16)
    cache = draw(rng, (2, 512, 8, 128), jnp.bfloat16)
    new = draw(rng, (2, 1, 8, 128), jnp.bfloat16)
    step = jax.jit(lambda q, kc, vc, k, v, n: flash.flash_mha_with_kvcache(q, kc, vc, k, v, cache_seqlens=n),
                   donate_argnums=(1, 2))
    k_cache, v_cache = cache + 0, cache + 0
    pointer = k_cache.unsafe_buffer_pointer()
    _, k_cache, v_cache = step(q, k_cache, v_cache, new, new, np.int32([4, 9]))
    assert k_cache.unsafe_buffer_pointer() == pointer  # no copy of the cache
    assert np.array_equal(np.asarray(k_cache[0, 4], np.float32), np.asarray(new[0, 0], np.float32))
