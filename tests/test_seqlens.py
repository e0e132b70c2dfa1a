"""Sequence lengths and segment ids on flash_mha_varlen's kernels (python/frontend/_seqlens.py).

CPU (the kernels' pure-JAX stand-in, float32 arithmetic):
  * dot_product_attention with query_seq_lengths / key_value_seq_lengths
    against jax.nn.dot_product_attention (implementation="xla") in float32,
    forward and gradients, with random lengths including 0, seq and > seq;
    which branch of the lax.cond runs (kernels where they are exact, jax.nn
    elsewhere) against a brute-force comparison of the two masks; static
    decisions for concrete lengths; static fallbacks; vmap; the CUDA lowering;
  * flash_mha_segments against a dense float32 reference with a block-diagonal
    mask, forward, lse and gradients; rows over max_segments; argument checks;
    segment_ids_from_lengths against jax.nn.
GPU: the kernels against float32 references (tolerance rule of test_gpu.py).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import on_gpu, requires_gpu
from test_gpu import assert_close, need_kernel, poison_device_memory
from test_lowering import cuda_hlo, custom_calls

# Lowered and run with bfloat16/128, the kernel every build has by default.
pytestmark = pytest.mark.default_kernels

cpu_only = pytest.mark.skipif(on_gpu(), reason="checks the CPU path's semantics exactly")

NN = jax.nn.dot_product_attention  # the real one (tests may spy on jax.nn's)


def draw(rng, *shape, dtype=jnp.bfloat16):
    return jnp.asarray(rng.standard_normal(shape, np.float32), dtype)


def f32(x):
    return np.asarray(x, np.float32)


def nn_f32(q, k, v, **options):
    return NN(*(x.astype(jnp.float32) for x in (q, k, v)), implementation="xla", **options)


def assert_same_bf16(got, want):
    """The same float32 arithmetic, maybe in another order: equal up to a rounding of the result."""
    np.testing.assert_allclose(f32(got), f32(want), rtol=8e-3, atol=1e-6)


def assert_near_f32(got, want, name=""):
    """got (bfloat16, computed in float32 and rounded) against a float32 want."""
    scale = max(1.0, float(np.max(np.abs(want))))
    np.testing.assert_allclose(f32(got), f32(want), rtol=1e-2, atol=1e-2 * scale, err_msg=name)


# --- Sequence lengths: the exactness condition, brute force -------------------------------------


def masks_agree(lq, lk, sq, sk, causal):
    """Whether the kernels' mask for the lengths layout (sequence of the first Lq queries and
    K = min(Lk, Lq) if causal else Lk keys, bottom-right causal) equals jax.nn's for every
    valid query row, and every valid row sees a key (else jax.nn averages all values)."""
    lq, lk = min(max(lq, 0), sq), min(max(lk, 0), sk)  # jax.nn: index < length
    keys = min(lk, lq) if causal else lk
    s = np.arange(sk)
    for t in range(lq):
        nn = (s < lk) & ((s <= t) if causal else True)
        kernel = (s < keys) & ((s <= t + keys - lq) if causal else True)
        if not nn.any() or not np.array_equal(nn, kernel):
            return False
    return True


def draw_lengths(rng, sq, sk, causal, given, exact, batch):
    """(lq, lk) int32 [batch] (None where not given) for which the kernels are exact for every
    row (exact=True) or not for some row (False; None if no lengths make that so). Lengths
    include 0, seq and > seq (and negative ones, which jax.nn treats as 0)."""
    def pool(s):
        return [-1, 0, 1, int(rng.integers(0, s + 1)), int(rng.integers(0, s + 1)), s, s + 3]

    preferred = [0, sq, sq + 3] + [None] * batch
    lq, lk = [], []
    bad_row = int(rng.integers(batch)) if not exact else -1
    for b in range(batch):
        for attempt in range(400):
            q_len = sq if given == "kv" else \
                (preferred[b] if preferred[b] is not None and attempt < 100 else int(rng.choice(pool(sq))))
            k_len = sk if given == "q" else int(rng.choice(pool(sk)))
            if b == bad_row:
                if not masks_agree(q_len, k_len, sq, sk, causal):
                    break
            elif exact and masks_agree(q_len, k_len, sq, sk, causal) or not exact and b != bad_row:
                break
        else:
            if b == bad_row:
                return None
            raise AssertionError("no lengths found")
        lq.append(q_len)
        lk.append(k_len)
    lq, lk = np.int32(lq), np.int32(lk)
    return (None if given == "kv" else lq), (None if given == "q" else lk)


def test_masks_agree_is_the_documented_condition():
    """The brute force agrees with the condition the front end decides by (see _lengths_layout)."""
    for sq in range(1, 6):
        for sk in range(1, 6):
            for lq in range(-1, sq + 2):
                for lk in range(-1, sk + 2):
                    cq, ck = min(max(lq, 0), sq), min(max(lk, 0), sk)
                    assert masks_agree(lq, lk, sq, sk, True) == (ck >= cq), (sq, sk, lq, lk)
                    assert masks_agree(lq, lk, sq, sk, False) == (ck > 0 or cq == 0), (sq, sk, lq, lk)


class NNSpy:
    """Replaces jax.nn.dot_product_attention: counts the calls traced and the calls run
    (a jax.debug.callback, which runs only in the lax.cond branch taken)."""

    def __init__(self, monkeypatch):
        self.traced, self.ran = 0, 0
        monkeypatch.setattr(jax.nn, "dot_product_attention", self)

    def __call__(self, *args, **kwargs):
        self.traced += 1
        jax.debug.callback(self._ran)
        return NN(*args, **kwargs)

    def _ran(self):
        self.ran += 1

    def runs(self):
        jax.effects_barrier()
        return self.ran


# (id, (seq_q, seq_k, heads, heads_k), is_causal, which lengths are given, unbatched)
LENGTH_CASES = [
    ("self", (12, 12, 4, 4), False, "both", False),
    ("self-causal-gqa", (12, 12, 4, 2), True, "both", False),
    ("longer-k-mqa", (8, 13, 4, 1), False, "both", False),
    ("longer-k-causal", (8, 13, 2, 2), True, "both", False),
    ("longer-q-causal", (13, 8, 2, 2), True, "both", False),
    ("q-only-causal", (10, 14, 2, 2), True, "q", False),
    ("kv-only-gqa", (10, 14, 4, 2), False, "kv", False),
    ("kv-only-causal", (6, 14, 2, 2), True, "kv", False),
    ("unbatched-causal", (9, 9, 2, 2), True, "both", True),
]


@cpu_only
@pytest.mark.parametrize("case", LENGTH_CASES, ids=[c[0] for c in LENGTH_CASES])
def test_lengths_match_jax_nn(flash, rng, monkeypatch, case):
    """Traced lengths: forward and gradients equal jax.nn's, from the kernels' path exactly when
    the masks agree and from jax.nn's own (the lax.cond's other branch) otherwise."""
    _, (sq, sk, h, hk), causal, given, unbatched = case
    batch = 1 if unbatched else 4
    lead = () if unbatched else (batch,)
    q, k, v = draw(rng, *lead, sq, h, 16), draw(rng, *lead, sk, hk, 16), draw(rng, *lead, sk, hk, 16)
    proj = jnp.asarray(draw(rng, *q.shape), jnp.float32)  # bfloat16 values: an exact cotangent
    spy = NNSpy(monkeypatch)

    def loss(attention, q, k, v, lq, lk):
        out = attention(q, k, v, is_causal=causal, query_seq_lengths=lq, key_value_seq_lengths=lk)
        return jnp.sum(out.astype(jnp.float32) * proj), out

    ours = jax.jit(jax.value_and_grad(functools.partial(loss, flash.dot_product_attention), argnums=(0, 1, 2),
                                      has_aux=True))
    for exact in (True, False):
        lengths = draw_lengths(rng, sq, sk, causal, given, exact, batch)
        if lengths is None:  # e.g. only query lengths, causal, seq_k >= seq_q: always exact
            continue
        lq, lk = lengths
        runs = spy.runs()
        (_, out), grads = ours(q, k, v, lq, lk)
        assert spy.runs() - runs == (0 if exact else 2), (exact, lq, lk)  # jax.nn's forward and backward
        assert out.shape == q.shape and out.dtype == q.dtype
        if exact:
            want = jax.jit(jax.value_and_grad(functools.partial(loss, functools.partial(NN, implementation="xla")),
                                              argnums=(0, 1, 2), has_aux=True))(
                *(x.astype(jnp.float32) for x in (q, k, v)), lq, lk)
        else:  # jax.nn on the same bfloat16 inputs
            want = jax.jit(jax.value_and_grad(functools.partial(loss, NN), argnums=(0, 1, 2), has_aux=True))(
                q, k, v, lq, lk)
        (_, want_out), want_grads = want
        check = assert_near_f32 if exact else \
            (lambda g, w, name: np.testing.assert_allclose(f32(g), f32(w), rtol=1e-2, atol=1e-5, err_msg=name))
        check(out, want_out, f"out (exact={exact}, lq={lq}, lk={lk})")
        if lq is not None:  # jax.nn zeroes the padded query rows
            padded = np.arange(sq)[None, :] >= np.clip(lq, 0, sq)[:, None]
            assert not np.any(f32(out).reshape((batch, sq, -1))[padded])
        for name, g, w in zip(("dq", "dk", "dv"), grads, want_grads):
            assert g.shape == w.shape and g.dtype == jnp.bfloat16
            check(g, w, f"{name} (exact={exact}, lq={lq}, lk={lk})")
    assert spy.traced == 2  # jax.nn compiled once as the forward's and once as the backward's fallback


@cpu_only
def test_lengths_concrete_decide_statically(flash, rng, monkeypatch):
    """Concrete lengths (even inside jit): the kernels alone where exact, jax.nn alone elsewhere."""
    q = draw(rng, 2, 8, 2, 16)
    spy = NNSpy(monkeypatch)
    exact = dict(is_causal=True, query_seq_lengths=np.int32([3, 8]), key_value_seq_lengths=np.int32([5, 8]))
    inexact = dict(is_causal=True, query_seq_lengths=np.int32([3, 8]), key_value_seq_lengths=np.int32([2, 8]))
    got = jax.jit(lambda q: flash.dot_product_attention(q, q, q, **exact))(q)
    assert spy.traced == 0
    assert_near_f32(got, nn_f32(q, q, q, **exact))
    got = flash.dot_product_attention(q, q, q, **exact)  # eager
    assert spy.traced == 0
    assert_near_f32(got, nn_f32(q, q, q, **exact))
    got = jax.jit(lambda q: flash.dot_product_attention(q, q, q, **inexact))(q)
    assert spy.traced == 1 and spy.runs() == 1
    np.testing.assert_array_equal(f32(got), f32(jax.jit(lambda q: NN(q, q, q, **inexact))(q)))
    # The CUDA lowering: the kernels alone, jax.nn alone.
    monkeypatch.undo()  # (the spy's host callback does not lower for CUDA here)
    hlo = lambda **o: custom_calls(cuda_hlo(lambda q: flash.dot_product_attention(q, q, q, **o), q))
    assert [name for name, _ in hlo(**exact)] == [f"{flash._binding.TARGET_PREFIX}_varlen_fwd"]
    assert hlo(**inexact) == []


def test_lengths_lowering(flash):
    prefix = flash._binding.TARGET_PREFIX
    q = jax.ShapeDtypeStruct((3, 64, 4, 128), jnp.bfloat16)
    k = jax.ShapeDtypeStruct((3, 80, 2, 128), jnp.bfloat16)
    lengths = jax.ShapeDtypeStruct((3,), jnp.int32)
    fn = lambda q, k, lq, lk: flash.dot_product_attention(q, k, k, is_causal=True, query_seq_lengths=lq,
                                                          key_value_seq_lengths=lk)
    calls = custom_calls(cuda_hlo(fn, q, k, lengths, lengths))
    assert [name for name, _ in calls] == [f"{prefix}_varlen_fwd"]
    for expected in ("max_seqlen_q = 64 : i32", "max_seqlen_k = 80 : i32", "is_causal = true",
                     "tensor<192x4x128xbf16>", "tensor<240x2x128xbf16>", "tensor<7xi32>"):
        assert expected in calls[0][1], calls[0][1]
    loss = lambda q, k, lq, lk: fn(q, k, lq, lk).astype(jnp.float32).sum()
    calls = custom_calls(cuda_hlo(jax.grad(loss, argnums=(0, 1)), q, k, lengths, lengths))
    assert [name for name, _ in calls] == [f"{prefix}_varlen_fwd", f"{prefix}_varlen_bwd"]
    # vmap folds the mapped axis into the batch: one call over 2 * 3 rows.
    vq, vk, vl = (jax.ShapeDtypeStruct((2,) + x.shape, x.dtype) for x in (q, k, lengths))
    calls = custom_calls(cuda_hlo(jax.vmap(jax.grad(loss, argnums=(0, 1))), vq, vk, vl, vl))
    assert [name for name, _ in calls] == [f"{prefix}_varlen_fwd", f"{prefix}_varlen_bwd"]
    assert "tensor<384x4x128xbf16>" in calls[0][1] and "tensor<13xi32>" in calls[0][1]


@cpu_only
def test_lengths_under_vmap(flash, rng):
    """vmap folds the mapped axis into the batch; the exactness condition then covers every
    instance's rows (one inexact instance sends all to jax.nn, which is still jax.nn's result)."""
    q, k = draw(rng, 3, 2, 10, 2, 16), draw(rng, 3, 2, 12, 1, 16)
    lq = np.int32([[0, 10], [4, 11], [7, 3]])
    exact = np.int32([[0, 12], [9, 30], [12, 3]])
    inexact = np.int32([[0, 12], [9, 0], [30, 3]])  # instance 1 has a valid row that sees no key
    for causal in (False, True):
        fn = jax.jit(jax.vmap(lambda q, k, a, b: flash.dot_product_attention(
            q, k, k, is_causal=causal, query_seq_lengths=a, key_value_seq_lengths=b)))
        for lk in (exact, inexact):
            got = fn(q, k, lq, lk)
            for i in range(3):
                want = nn_f32(q[i], k[i], k[i], is_causal=causal, query_seq_lengths=lq[i],
                              key_value_seq_lengths=lk[i])
                np.testing.assert_allclose(f32(got[i]), f32(want), rtol=2e-2, atol=2e-2 * max(1, np.abs(want).max()))


FALLBACKS = [
    ("window", dict(local_window_size=(2, 1))),
    ("residual", dict(return_residual=True)),
    ("mask", dict(mask=np.tril(np.ones((8, 8), bool))[None, None])),
    ("bias", dict(bias=np.full((1, 2, 8, 8), 0.5, np.float32))),
    ("float32", dict(dtype=jnp.float32)),
]


@pytest.mark.parametrize("case", FALLBACKS, ids=[c[0] for c in FALLBACKS])
def test_lengths_fall_back_statically(flash, rng, case):
    """What the kernels cannot take goes to jax.nn unchanged (its errors included)."""
    _, options = case
    options = dict(options)
    q = draw(rng, 2, 8, 2, 128, dtype=options.pop("dtype", jnp.bfloat16))
    options.setdefault("query_seq_lengths", np.int32([3, 8]))
    options["key_value_seq_lengths"] = np.int32([5, 8])
    fn = lambda q: flash.dot_product_attention(q, q, q, is_causal=True, **options)
    assert custom_calls(cuda_hlo(fn, q)) == []
    got, want = fn(q), NN(q, q, q, is_causal=True, **options)
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        np.testing.assert_array_equal(f32(g), f32(w))


def test_lengths_bad_input_gets_jax_nns_error(flash):
    q = jnp.ones((2, 8, 2, 128), jnp.bfloat16)
    with pytest.raises(ValueError, match="query_seq_lengths shape should be"):
        flash.dot_product_attention(q, q, q, query_seq_lengths=np.int32([3, 4, 5]))
    with pytest.raises(ValueError, match="key_value_seq_lengths dtype should be int32"):
        flash.dot_product_attention(q, q, q, key_value_seq_lengths=np.float32([3, 4]))


@cpu_only
def test_packed_offsets_are_the_rows_sequences(flash, rng):
    """The CUDA path's packing: flash_mha_varlen over the flattened rows with packed_offsets
    equals the row-wise path (which the other tests check against jax.nn)."""
    seqlens = flash._seqlens
    b, sq, sk = 3, 7, 9
    q, k, v = draw(rng, b, sq, 2, 16), draw(rng, b, sk, 2, 16), draw(rng, b, sk, 2, 16)
    lq, lk = jnp.int32([0, 7, 4]), jnp.int32([3, 9, 6])
    cu_q, cu_k, ok, valid = seqlens._lengths_layout(lq, lk, sq, sk, True)
    assert bool(ok)
    np.testing.assert_array_equal(seqlens.packed_offsets(cu_q, sq), [0, 0, 7, 14, 14, 18, 21])
    np.testing.assert_array_equal(seqlens.packed_offsets(cu_k, sk), [0, 0, 9, 16, 18, 22, 27])
    flat = lambda x: x.reshape((-1,) + x.shape[2:])
    packed = jax.jit(lambda q, k, v: flash.flash_mha_varlen(
        flat(q), flat(k), flat(v), seqlens.packed_offsets(cu_q, sq), seqlens.packed_offsets(cu_k, sk), sq, sk,
        is_causal=True))(q, k, v)
    packed = jnp.where(valid[..., None, None], packed.reshape(q.shape), 0)
    got = jax.jit(lambda q, k, v: flash.dot_product_attention(q, k, v, is_causal=True, query_seq_lengths=lq,
                                                              key_value_seq_lengths=lk))(q, k, v)
    assert_same_bf16(got, packed)
    ids = jnp.int32([[5, 5, 1, 1, 1, 5, 2], [0] * 7, [1, 2, 3, 4, 5, 6, 7]])
    cu = seqlens._segment_layout(ids, 7)
    np.testing.assert_array_equal(cu[0], [0, 2, 5, 6, 7, 7, 7, 7])
    np.testing.assert_array_equal(cu[1], [0, 7, 7, 7, 7, 7, 7, 7])
    np.testing.assert_array_equal(cu[2], [0, 1, 2, 3, 4, 5, 6, 7])
    packed = jax.jit(lambda q: flash.flash_mha_varlen(flat(q), flat(q), flat(q), seqlens.packed_offsets(cu, sq),
                                                      seqlens.packed_offsets(cu, sq), sq, sq, is_causal=True))(q)
    got = jax.jit(lambda q: flash.flash_mha_segments(q, q, q, ids, 7, is_causal=True))(q)
    assert_same_bf16(got, packed.reshape(q.shape))


# --- Segment ids -------------------------------------------------------------------------------------


def run_index(ids):
    """numpy: the run (maximal stretch of equal consecutive ids) of each token, per row."""
    ids = np.asarray(ids)
    run = np.zeros(ids.shape, np.int64)
    for b in range(ids.shape[0]):
        for t in range(1, ids.shape[1]):
            run[b, t] = run[b, t - 1] + (ids[b, t] != ids[b, t - 1])
    return run


def segments_reference(q, k, v, ids, is_causal=False, window_size=(-1, -1), softcap=0.0, alibi_slopes=None,
                       compute_dtype=jnp.float32):
    """Dense attention with a block-diagonal mask (one block per run); (out, lse [b, h, s])."""
    run = run_index(ids)
    s = q.shape[1]
    i, j = np.arange(s)[:, None], np.arange(s)[None, :]
    mask = run[:, :, None] == run[:, None, :]
    if is_causal:
        mask &= j <= i
    left, right = window_size
    if left >= 0:
        mask &= j >= i - left
    if right >= 0:
        mask &= j <= i + right
    groups = q.shape[2] // k.shape[2]
    q, k, v = (x.astype(compute_dtype) for x in (q, k, v))
    k, v = jnp.repeat(k, groups, axis=2), jnp.repeat(v, groups, axis=2)
    scores = jnp.einsum("bqhd,bkhd->bhqk", q, k, precision=jax.lax.Precision.HIGHEST) * q.shape[-1] ** -0.5
    if softcap:
        scores = softcap * jnp.tanh(scores / softcap)
    if alibi_slopes is not None:
        slopes = jnp.broadcast_to(jnp.asarray(alibi_slopes, compute_dtype), (q.shape[0], q.shape[2]))
        scores = scores - slopes[:, :, None, None] * jnp.asarray(np.abs(i - j), compute_dtype)
    scores = jnp.where(jnp.asarray(mask)[:, None], scores, -jnp.inf)
    lse = jax.nn.logsumexp(scores.astype(jnp.float32), axis=-1)
    p = jax.nn.softmax(scores, axis=-1)
    out = jnp.einsum("bhqk,bkhd->bqhd", p, v, precision=jax.lax.Precision.HIGHEST)
    return out, lse


def random_segment_ids(rng, batch, seqlen):
    """Rows with random runs, one run, every token its own run, and a repeated id [..7, 7, 3, 7..]."""
    rows = []
    for b in range(batch):
        kind = b % 4
        if kind == 0:
            row = np.cumsum(rng.random(seqlen) < 0.3)
        elif kind == 1:
            row = np.full(seqlen, 4)
        elif kind == 2:
            row = np.arange(seqlen)
        else:
            row = np.where(np.arange(seqlen) % 5 < 2, 7, 3)
        rows.append(row)
    return np.asarray(rows, np.int32)


# (id, heads, heads_k, head_dim, options)
SEGMENT_CASES = [
    ("plain", 2, 2, 16, {}),
    ("causal-gqa", 4, 2, 16, dict(is_causal=True)),
    ("window-mqa", 4, 1, 16, dict(window_size=(2, 1))),
    ("causal-window-softcap", 2, 2, 16, dict(is_causal=True, window_size=(3, -1), softcap=2.0)),
    ("alibi-causal", 2, 2, 16, dict(is_causal=True, alibi_slopes=np.float32([0.5, 0.25]))),
    ("alibi-per-row", 2, 2, 16, dict(alibi_slopes=np.float32([[0.5, 0.1], [0.2, 0.3], [1, 0], [0.4, 0.4]]))),
    ("head-dim-12", 2, 2, 12, dict(is_causal=True)),
]


@cpu_only
@pytest.mark.parametrize("case", SEGMENT_CASES, ids=[c[0] for c in SEGMENT_CASES])
def test_segments_match_block_diagonal_reference(flash, rng, case):
    _, h, hk, d, options = case
    b, s = 4, 11
    q, k, v = draw(rng, b, s, h, d), draw(rng, b, s, hk, d), draw(rng, b, s, hk, d)
    ids = random_segment_ids(rng, b, s)
    proj = jnp.asarray(draw(rng, *q.shape), jnp.float32)
    proj_lse = jnp.asarray(draw(rng, b, h, s), jnp.float32)
    with_lse = "alibi_slopes" not in options  # (with ALiBi the kernels' lse has another constant per row)

    def loss(fn, q, k, v):
        out, lse = fn(q, k, v)
        total = jnp.sum(out.astype(jnp.float32) * proj)
        return (total + jnp.sum(lse * proj_lse) if with_lse else total), (out, lse)

    max_segments = int(run_index(ids).max()) + 1 + int(rng.integers(3))  # a bound, not the count
    ours = jax.jit(lambda q, k, v, ids: jax.value_and_grad(
        lambda q, k, v: loss(lambda *a: flash.flash_mha_segments(*a, ids, max_segments, return_lse=True, **options),
                             q, k, v), argnums=(0, 1, 2), has_aux=True)(q, k, v))
    (_, (out, lse)), grads = ours(q, k, v, ids)
    (_, (want_out, want_lse)), want_grads = jax.jit(jax.value_and_grad(
        lambda q, k, v: loss(lambda *a: segments_reference(*a, ids, **options), q, k, v),
        argnums=(0, 1, 2), has_aux=True))(*(x.astype(jnp.float32) for x in (q, k, v)))
    assert out.shape == q.shape and out.dtype == q.dtype and lse.shape == (b, h, s)
    assert_near_f32(out, want_out, "out")
    if with_lse:
        np.testing.assert_allclose(f32(lse), f32(want_lse), rtol=1e-5, atol=1e-5)
    for name, g, w in zip(("dq", "dk", "dv"), grads, want_grads):
        assert g.dtype == jnp.bfloat16
        assert_near_f32(g, w, name)
    # Eager, with max_segments counted from the concrete ids: the same.
    assert_same_bf16(flash.flash_mha_segments(q, k, v, ids, **options), out)


@cpu_only
def test_segments_rows_over_max_segments_are_nan(flash, rng):
    q = draw(rng, 3, 8, 2, 16)
    ids = np.int32([[1, 1, 2, 2, 2, 2, 3, 3], [1, 2, 3, 4, 5, 6, 7, 8], [0] * 8])
    fn = jax.jit(lambda q, ids: flash.flash_mha_segments(q, q, q, ids, 3, is_causal=True, return_lse=True))
    out, lse = fn(q, ids)
    assert np.isnan(f32(out[1])).all() and np.isnan(f32(lse[1])).all()
    want, want_lse = segments_reference(q, q, q, ids, is_causal=True)
    for row in (0, 2):
        assert_near_f32(out[row], want[row])
        np.testing.assert_allclose(f32(lse[row]), f32(want_lse[row]), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="row 1 has 8 runs of equal ids, more than max_segments 3"):
        flash.flash_mha_segments(q, q, q, ids, 3)


@cpu_only
def test_segments_under_vmap(flash, rng):
    q = draw(rng, 2, 3, 9, 2, 16)
    ids = np.stack([random_segment_ids(rng, 3, 9), random_segment_ids(rng, 3, 9)[::-1]])
    got = jax.vmap(lambda q, i: flash.flash_mha_segments(q, q, q, i, 9, is_causal=True))(q, ids)
    for n in range(2):
        assert_same_bf16(got[n], flash.flash_mha_segments(q[n], q[n], q[n], ids[n], 9, is_causal=True))


def test_segments_lowering(flash):
    prefix = flash._binding.TARGET_PREFIX
    q = jax.ShapeDtypeStruct((2, 64, 4, 128), jnp.bfloat16)
    k = jax.ShapeDtypeStruct((2, 64, 2, 128), jnp.bfloat16)
    ids = jax.ShapeDtypeStruct((2, 64), jnp.int32)
    fn = lambda q, k, ids: flash.flash_mha_segments(q, k, k, ids, 5, is_causal=True, window_size=(8, 0))
    calls = custom_calls(cuda_hlo(fn, q, k, ids))
    assert [name for name, _ in calls] == [f"{prefix}_varlen_fwd"]
    for expected in ("max_seqlen_q = 64 : i32", "max_seqlen_k = 64 : i32", "window_left = 8 : i32",
                     "tensor<128x4x128xbf16>", "tensor<11xi32>"):
        assert expected in calls[0][1], calls[0][1]
    loss = lambda q, k, ids: flash.flash_mha_segments(q, k, k, ids, 5, return_lse=True)[1].sum()
    calls = custom_calls(cuda_hlo(jax.grad(loss, argnums=(0, 1)), q, k, ids))
    assert [name for name, _ in calls] == [f"{prefix}_varlen_fwd", f"{prefix}_varlen_bwd"]


BAD_SEGMENTS = [
    # (id, change to the good arguments, exception, message fragment)
    ("q rank 3", lambda a: a.update(q=a["q"][0]), ValueError, "flash_mha_segments: q must have rank 4"),
    ("float32", lambda a: a.update(q=a["q"].astype(jnp.float32)), TypeError, "flash_mha_segments: q has dtype"),
    ("k seq", lambda a: a.update(k=a["k"][:, :5], v=a["v"][:, :5]), ValueError, "must have q's seq"),
    ("heads", lambda a: a.update(k=a["k"][:, :, :3], v=a["v"][:, :, :3]), ValueError,
     "flash_mha_segments: the heads of q"),
    ("ids list", lambda a: a.update(segment_ids=[[0] * 8] * 2), TypeError, "segment_ids must be an integer array"),
    ("ids float", lambda a: a.update(segment_ids=np.zeros((2, 8), np.float32)), TypeError,
     "segment_ids must have an integer dtype"),
    ("ids shape", lambda a: a.update(segment_ids=np.zeros((2, 7), np.int32)), ValueError,
     r"segment_ids must have shape \[batch, seq\] = \(2, 8\)"),
    ("max zero", lambda a: a.update(max_segments=0), ValueError, "max_segments must be None or an int >= 1"),
    ("max float", lambda a: a.update(max_segments=2.0), ValueError, "max_segments must be None or an int"),
    ("max bool", lambda a: a.update(max_segments=True), ValueError, "max_segments must be None or an int"),
    ("too few", lambda a: a.update(max_segments=2), ValueError, "row 0 has 3 runs"),
    ("too many sequences", lambda a: a.update(q=jnp.ones((9000, 8, 4, 16), jnp.bfloat16),
                                              k=jnp.ones((9000, 8, 4, 16), jnp.bfloat16),
                                              v=jnp.ones((9000, 8, 4, 16), jnp.bfloat16),
                                              segment_ids=np.zeros((9000, 8), np.int32), max_segments=8),
     ValueError, r"batch \* max_segments = 9000 \* 8 sequences exceed the kernels' 65535"),
    ("window", lambda a: a.update(window_size=(1, 2, 3)), ValueError, "flash_mha_segments: window_size"),
    ("causal", lambda a: a.update(is_causal=1), TypeError, "flash_mha_segments: is_causal must be a bool"),
    ("slopes", lambda a: a.update(alibi_slopes=np.float32([1, 2, 3])), ValueError,
     "flash_mha_segments: alibi_slopes must have shape"),
]


@pytest.mark.parametrize("case", BAD_SEGMENTS, ids=[c[0] for c in BAD_SEGMENTS])
def test_segments_bad_input_raises(flash, case):
    _, change, exception, fragment = case
    x = jnp.ones((2, 8, 4, 16), jnp.bfloat16)
    args = dict(q=x, k=x, v=x, segment_ids=np.int32([[0, 0, 1, 1, 2, 2, 2, 2], [3] * 8]), max_segments=None)
    change(args)
    with pytest.raises(exception, match=fragment):
        flash.flash_mha_segments(**args)


def test_segments_traced_ids_need_max_segments(flash):
    x = jnp.ones((2, 8, 4, 128), jnp.bfloat16)  # the default build's kernel, for GPU hosts
    with pytest.raises(ValueError, match="flash_mha_segments: max_segments must be given .* when segment_ids "
                                         "is traced"):
        jax.jit(lambda ids: flash.flash_mha_segments(x, x, x, ids))(np.zeros((2, 8), np.int32))
    # numpy ids closed over by jit are concrete: counted.
    assert jax.jit(lambda x: flash.flash_mha_segments(x, x, x, np.zeros((2, 8), np.int32)))(x).shape == x.shape


@cpu_only
def test_segment_ids_from_lengths_match_jax_nn(flash, rng):
    s = 9
    lengths = np.int32([0, 4, s, s + 5, -2])
    ids = flash.segment_ids_from_lengths(lengths, s)
    assert ids.dtype == jnp.int32 and ids.shape == (5, s)
    np.testing.assert_array_equal(np.asarray(ids).sum(1), [0, 4, s, s, 0])
    q, k, v = draw(rng, 5, s, 4, 16), draw(rng, 5, s, 2, 16), draw(rng, 5, s, 2, 16)
    proj = jnp.asarray(draw(rng, *q.shape), jnp.float32)
    for causal in (False, True):
        def ours(q, k, v):
            out = flash.flash_mha_segments(q, k, v, ids, 2, is_causal=causal)
            return jnp.where(ids[..., None, None] == 1, out, 0)

        def theirs(q, k, v):
            return NN(q, k, v, is_causal=causal, query_seq_lengths=lengths, key_value_seq_lengths=lengths,
                      implementation="xla")

        both = lambda fn: jax.jit(jax.value_and_grad(lambda *a: (jnp.sum(fn(*a).astype(jnp.float32) * proj), fn(*a)),
                                                     argnums=(0, 1, 2), has_aux=True))
        (_, out), grads = both(ours)(q, k, v)
        (_, want_out), want_grads = both(theirs)(*(x.astype(jnp.float32) for x in (q, k, v)))
        assert_near_f32(out, want_out)
        for g, w in zip(grads, want_grads):
            assert_near_f32(g, w)
    with pytest.raises(ValueError, match="segment_ids_from_lengths: seqlen must be an int >= 1"):
        flash.segment_ids_from_lengths(lengths, 0)
    with pytest.raises(ValueError, match="segment_ids_from_lengths: lengths must be integers of shape"):
        flash.segment_ids_from_lengths(np.float32([1, 2]), 4)


# --- GPU ------------------------------------------------------------------------------------------------


@requires_gpu
@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16], ids=["bfloat16", "float16"])
@pytest.mark.parametrize("case", [(256, 256, 4, 4, True), (200, 333, 4, 2, True), (300, 130, 4, 1, False)],
                         ids=["self-causal", "longer-k-causal-gqa", "longer-q-mqa"])
def test_gpu_lengths_kernels_match_jax_nn(flash, rng, case, dtype):
    sq, sk, h, hk, causal = case
    need_kernel(flash, dtype, 128)
    batch = 4
    q, k, v = draw(rng, batch, sq, h, 128, dtype=dtype), draw(rng, batch, sk, hk, 128, dtype=dtype), \
        draw(rng, batch, sk, hk, 128, dtype=dtype)
    lq, lk = draw_lengths(rng, sq, sk, causal, "both", True, batch)
    dout = draw(rng, *q.shape, dtype=dtype)
    options = dict(is_causal=causal, query_seq_lengths=lq, key_value_seq_lengths=lk)
    # Traced lengths: the kernels' branch of the lax.cond (the masks agree for these lengths).
    kernel = lambda q, k, v, a, b: flash.dot_product_attention(q, k, v, is_causal=causal, query_seq_lengths=a,
                                                               key_value_seq_lengths=b)
    reference = lambda q, k, v: NN(q, k, v, implementation="xla", **options)
    vjp = lambda fn: jax.jit(lambda q, k, v, g, *a: jax.vjp(lambda q, k, v: fn(q, k, v, *a), q, k, v)[1](g))
    poison_device_memory(4 * q.size * 4)
    got = jax.jit(kernel)(q, k, v, lq, lk)
    assert_close("out", got, jax.jit(reference)(*(x.astype(jnp.float32) for x in (q, k, v))),
                 jax.jit(reference)(q, k, v))
    assert not np.any(f32(got)[np.arange(sq)[None, :] >= np.clip(lq, 0, sq)[:, None]])
    poison_device_memory(4 * (q.size + k.size + v.size) * 4)
    grads = vjp(kernel)(q, k, v, dout, lq, lk)
    want = vjp(lambda q, k, v: reference(q, k, v))(*(x.astype(jnp.float32) for x in (q, k, v)),
                                                    dout.astype(jnp.float32))
    base = vjp(lambda q, k, v: reference(q, k, v))(q, k, v, dout)
    for name, g, w, b in zip(("dq", "dk", "dv"), grads, want, base):
        assert_close(name, g, w, b)
    # Inexact lengths: jax.nn's branch, jax.nn's result. (The lengths are arguments: a jitted
    # closure over them would be traced once and cached with the first ones.)
    lq, lk = draw_lengths(rng, sq, sk, causal, "both", False, batch)
    nn = jax.jit(lambda q, k, v, a, b: NN(q, k, v, implementation="xla", is_causal=causal, query_seq_lengths=a,
                                          key_value_seq_lengths=b))
    np.testing.assert_allclose(f32(jax.jit(kernel)(q, k, v, lq, lk)), f32(nn(q, k, v, lq, lk)),
                               rtol=1e-2, atol=1e-2)


@requires_gpu
@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16], ids=["bfloat16", "float16"])
@pytest.mark.parametrize("options", [dict(is_causal=True), dict(window_size=(32, 8), softcap=5.0)],
                         ids=["causal", "window-softcap"])
def test_gpu_segments_kernels_match_reference(flash, rng, options, dtype):
    need_kernel(flash, dtype, 128)
    b, s = 4, 300
    q, k, v = draw(rng, b, s, 4, 128, dtype=dtype), draw(rng, b, s, 2, 128, dtype=dtype), \
        draw(rng, b, s, 2, 128, dtype=dtype)
    ids = np.stack([np.cumsum(rng.random(s) < p) for p in (0.01, 0.05, 0.0, 0.2)]).astype(np.int32)
    dout = draw(rng, *q.shape, dtype=dtype)
    m = int(run_index(ids).max()) + 1
    kernel = jax.jit(lambda q, k, v, i: flash.flash_mha_segments(q, k, v, i, m, **options))
    reference = lambda q, k, v: segments_reference(q, k, v, ids, **options)[0]
    plain = lambda q, k, v: segments_reference(q, k, v, ids, compute_dtype=dtype, **options)[0]
    f32s = [x.astype(jnp.float32) for x in (q, k, v)]
    poison_device_memory(4 * q.size * 4)
    assert_close("out", kernel(q, k, v, ids), jax.jit(reference)(*f32s), jax.jit(plain)(q, k, v))
    vjp = lambda fn: jax.jit(lambda q, k, v, g: jax.vjp(fn, q, k, v)[1](g))
    poison_device_memory(4 * (q.size + k.size + v.size) * 4)
    got = vjp(lambda q, k, v: kernel(q, k, v, ids))(q, k, v, dout)
    want, base = vjp(reference)(*f32s, dout.astype(jnp.float32)), vjp(plain)(q, k, v, dout)
    for name, g, w, bb in zip(("dq", "dk", "dv"), got, want, base):
        assert_close(name, g, w, bb)
