"""Attention in plain JAX: the CPU fallback of flash_mha and the tests' oracle.

It has the kernels' exact semantics (bottom-right-aligned causal masks and
windows, softcap, GQA, ALiBi, zeros for rows that see no key and +inf for
their log-sum-exp) and computes in float32, or float64 when the inputs are
float64.
"""

import jax
import jax.numpy as jnp


def normalize_window(window_size, is_causal, seqlen_k):
    """The (left, right) window the kernels apply; -1 means unbounded."""
    left, right = window_size
    if is_causal:
        right = 0
    if left >= seqlen_k:
        left = -1
    if right >= seqlen_k:
        right = -1
    return left, right


def attention_mask(seqlen_q, seqlen_k, is_causal=False, window_size=(-1, -1)):
    """[seqlen_q, seqlen_k] bool: may query i attend to key j?"""
    left, right = normalize_window(window_size, is_causal, seqlen_k)
    i = jnp.arange(seqlen_q)[:, None] + (seqlen_k - seqlen_q)  # the query's diagonal
    j = jnp.arange(seqlen_k)[None, :]
    mask = jnp.ones((seqlen_q, seqlen_k), bool)
    if left >= 0:
        mask &= j >= i - left
    if right >= 0:
        mask &= j <= i + right
    return mask


def alibi_distance(seqlen_q, seqlen_k, is_causal=False, window_size=(-1, -1)):
    """[seqlen_q, seqlen_k] float32: what FlashAttention-2 multiplies each ALiBi slope by.

    With the causal mask (the window (-1, 0) after normalization) the kernels
    add slope * j, the key's position; otherwise -slope * |i + seqlen_k -
    seqlen_q - j|, the distance to the bottom-right-aligned diagonal (alibi.h,
    mask.h). The two agree up to a constant per row, so the attention output
    is the same, but the log-sum-exp differs by that constant.
    """
    left, right = normalize_window(window_size, is_causal, seqlen_k)
    j = jnp.arange(seqlen_k, dtype=jnp.float32)[None, :]
    if left < 0 and right == 0:
        return jnp.broadcast_to(j, (seqlen_q, seqlen_k))
    i = jnp.arange(seqlen_q, dtype=jnp.float32)[:, None] + (seqlen_k - seqlen_q)
    return -jnp.abs(i - j)


def attention_reference(q, k, v, softmax_scale=None, is_causal=False, window_size=(-1, -1),
                        softcap=0.0, compute_dtype=None, alibi_slopes=None):
    """Returns (out, lse): out like q, lse [batch, heads, seqlen_q] float32 (+inf where no key).

    compute_dtype overrides the arithmetic's precision: the tests pass the
    inputs' own dtype to measure what plain low-precision JAX gets wrong.
    alibi_slopes ([heads] or [batch, heads]) adds slope * alibi_distance() to
    the scores after softmax_scale and softcap, as the kernels do.

    Differentiable in q, k, v, through out and lse alike (d lse_i / d s_ij =
    p_ij); the slopes get a gradient too, which flash_mha does not compute.
    """
    bias = None
    if alibi_slopes is not None:
        slopes = jnp.broadcast_to(jnp.asarray(alibi_slopes, jnp.float32), (q.shape[0], q.shape[2]))
        distance = alibi_distance(q.shape[1], k.shape[1], is_causal, window_size)
        bias = slopes[:, :, None, None], distance
    mask = attention_mask(q.shape[1], k.shape[1], is_causal, window_size)
    return _attend(q, k, v, softmax_scale, softcap, mask, bias, compute_dtype)


def _attend(q, k, v, softmax_scale, softcap, mask, bias, compute_dtype):
    """The softmax attention both references share. q [batch, seqlen_q, heads,
    head_dim], k, v [batch, seqlen_k, heads_k, head_dim]; mask broadcasts to
    [batch, heads, seqlen_q, seqlen_k]; bias None or (slopes, distance) whose
    product broadcasts likewise. Returns (out, lse [batch, heads, seqlen_q])."""
    out_dtype = q.dtype
    compute = compute_dtype or (jnp.float64 if q.dtype == jnp.float64 else jnp.float32)
    q, k, v = (x.astype(compute) for x in (q, k, v))
    if softmax_scale is None:
        softmax_scale = q.shape[-1] ** -0.5
    groups = q.shape[2] // k.shape[2]
    k = jnp.repeat(k, groups, axis=2)
    v = jnp.repeat(v, groups, axis=2)
    scores = jnp.einsum("bqhd,bkhd->bhqk", q, k, precision=jax.lax.Precision.HIGHEST)
    scores = scores * softmax_scale
    if softcap > 0:
        scores = softcap * jnp.tanh(scores / softcap)
    if bias is not None:
        slopes, distance = bias
        scores = scores + slopes.astype(compute) * distance.astype(compute)
    scores = jnp.where(mask, scores, -jnp.inf)
    row_max = jnp.max(scores, axis=-1, keepdims=True)
    row_max = jax.lax.stop_gradient(jnp.where(jnp.isfinite(row_max), row_max, 0.0))
    p = jnp.exp(scores - row_max)
    row_sum = jnp.sum(p, axis=-1, keepdims=True)
    seen = row_sum > 0
    p = p / jnp.where(seen, row_sum, 1.0)
    out = jnp.einsum("bhqk,bkhd->bqhd", p, v, precision=jax.lax.Precision.HIGHEST)
    lse = jnp.where(seen, jnp.log(jnp.where(seen, row_sum, 1.0)) + row_max, jnp.inf)[..., 0]
    return out.astype(out_dtype), lse.astype(jnp.float32)


def _within_window(mask, j, diagonal, left, right):
    """mask, restricted to keys j in [diagonal - left, diagonal + right] around each
    query's diagonal (a side of -1 is unbounded; sides normalized as the kernels do)."""
    if left >= 0:
        mask &= j >= diagonal - left
    if right >= 0:
        mask &= j <= diagonal + right
    return mask


def _kernel_alibi_distance(j, diagonal, left, right):
    """alibi_distance with per-query diagonals: the key position j under the causal
    mask (window (-1, 0)), else -|diagonal - j|; float32."""
    if left < 0 and right == 0:
        return j.astype(jnp.float32)
    return -jnp.abs(diagonal - j).astype(jnp.float32)


def sequence_positions(cu_seqlens, total):
    """For packed tokens 0..total-1: (sequence index, position in it, that
    sequence's length), int32 [total] each; tokens outside [cu_seqlens[0],
    cu_seqlens[-1]) get sequence -1."""
    cu_seqlens = jnp.asarray(cu_seqlens, jnp.int32)
    batch = cu_seqlens.shape[0] - 1
    token = jnp.arange(total, dtype=jnp.int32)
    seq = jnp.searchsorted(cu_seqlens, token, side="right").astype(jnp.int32) - 1
    inside = (seq >= 0) & (seq < batch)
    seq = jnp.where(inside, seq, -1)
    safe = jnp.clip(seq, 0, batch - 1)
    return seq, token - cu_seqlens[safe], cu_seqlens[safe + 1] - cu_seqlens[safe]


def varlen_attention_reference(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_k, softmax_scale=None,
                               is_causal=False, window_size=(-1, -1), softcap=0.0, compute_dtype=None,
                               alibi_slopes=None):
    """attention_reference over packed sequences (flash_mha_varlen's semantics).

    q [total_q, heads, head_dim], k, v [total_k, heads_k, head_dim]; sequence b
    is q[cu_seqlens_q[b]:cu_seqlens_q[b + 1]] attending to
    k[cu_seqlens_k[b]:cu_seqlens_k[b + 1]], with the causal mask, window and
    ALiBi aligned per sequence; window sides >= max_seqlen_k are unbounded (as
    the kernels normalize them). alibi_slopes: [heads] or [batch, heads].
    Returns (out like q, lse [heads, total_q]); rows of no sequence are zero.
    """
    seq_q, pos_q, len_q = sequence_positions(cu_seqlens_q, q.shape[0])
    seq_k, pos_k, _ = sequence_positions(cu_seqlens_k, k.shape[0])
    cu_k = jnp.asarray(cu_seqlens_k, jnp.int32)
    safe = jnp.clip(seq_q, 0, cu_k.shape[0] - 2)
    len_k = cu_k[safe + 1] - cu_k[safe]  # the keys of each query's sequence
    diagonal = (pos_q + len_k - len_q)[:, None]  # bottom-right aligned per sequence
    j = pos_k[None, :]
    left, right = normalize_window(window_size, is_causal, max_seqlen_k)
    mask = _within_window((seq_q[:, None] == seq_k[None, :]) & (seq_q[:, None] >= 0), j, diagonal, left, right)
    bias = None
    if alibi_slopes is not None:
        batch, heads = cu_k.shape[0] - 1, q.shape[1]
        slopes = jnp.broadcast_to(jnp.asarray(alibi_slopes, jnp.float32), (batch, heads))[safe]  # [total_q, heads]
        distance = _kernel_alibi_distance(j, diagonal, left, right)
        bias = jnp.swapaxes(slopes, 0, 1)[None, :, :, None], distance[None, None]
    out, lse = _attend(q[None], k[None], v[None], softmax_scale, softcap, mask, bias, compute_dtype)
    return out[0], lse[0]


def kvcache_attention_reference(q, k_cache, v_cache, seqlens_k, block_table=None, softmax_scale=None,
                                is_causal=False, window_size=(-1, -1), softcap=0.0, compute_dtype=None,
                                alibi_slopes=None):
    """attention_reference against a KV cache (flash_mha_with_kvcache's semantics).

    q [batch, seqlen_q, heads, head_dim]; k_cache, v_cache [batch, capacity,
    heads_k, head_dim], or with block_table (int32 [batch, max_blocks]) pages
    [num_blocks, page_size, heads_k, head_dim] of which entry b's key t is in
    page block_table[b, t // page_size]. Entry b attends to its first
    seqlens_k[b] keys, with the causal mask, window and ALiBi aligned to that
    length; window sides >= capacity are unbounded. Returns (out, lse [batch,
    heads, seqlen_q]).
    """
    if block_table is not None:
        pages = lambda cache: cache[block_table].reshape((q.shape[0], -1) + cache.shape[2:])
        k_cache, v_cache = pages(k_cache), pages(v_cache)
    seqlen_q, capacity = q.shape[1], k_cache.shape[1]
    lengths = jnp.broadcast_to(jnp.asarray(seqlens_k, jnp.int32), (q.shape[0],))[:, None, None]
    diagonal = jnp.arange(seqlen_q)[None, :, None] + lengths - seqlen_q  # [batch, seqlen_q, 1]
    j = jnp.arange(capacity)[None, None, :]
    left, right = normalize_window(window_size, is_causal, capacity)
    mask = _within_window(j < lengths, j, diagonal, left, right)
    bias = None
    if alibi_slopes is not None:
        slopes = jnp.broadcast_to(jnp.asarray(alibi_slopes, jnp.float32), (q.shape[0], q.shape[2]))
        distance = jnp.broadcast_to(_kernel_alibi_distance(j, diagonal, left, right),
                                    (q.shape[0], seqlen_q, capacity))
        bias = slopes[:, :, None, None], distance[:, None]
    return _attend(q, k_cache, v_cache, softmax_scale, softcap, mask[:, None], bias, compute_dtype)
