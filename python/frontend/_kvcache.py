"""flash_mha_with_kvcache: decoding against a KV cache, contiguous or paged.

FlashAttention-2's split-KV kernels: each batch entry attends to the first
cache_seqlens[b] keys of its cache, with the keys split into chunks processed
in parallel when batch * heads alone would leave the GPU idle (decoding one
token at a time). New keys are appended by XLA scatters before the kernel
runs, which update the caches in place when they are donated.

The FFI contract, which both bindings decode alike:

  <prefix>_kvcache_fwd  args  q, k_cache, v_cache, seqlens_k, block_table, alibi_slopes
                        rets  out, softmax_lse, workspace (float32 split partials)
  attributes            flash_mha's forward ones, plus has_block_table bool,
                        num_splits i32

block_table is int32 [batch, max_blocks] always (a [batch, 1] placeholder for
a contiguous cache, never read); the kernels trust seqlens_k and block_table,
so the front end clips both into range.
"""

import jax
import jax.numpy as jnp
import numpy as np

from . import _binding
from ._attention import _check_kernel_available, _Options, _workspace_num_sms
from ._reference import kvcache_attention_reference
from ._validation import check_alibi_slopes, check_flag, check_kvcache_args, check_options

KVCACHE_FWD_TARGET = f"{_binding.TARGET_PREFIX}_kvcache_fwd"


def flash_mha_with_kvcache(q, k_cache, v_cache, k=None, v=None, cache_seqlens=None, block_table=None,
                           softmax_scale=None, is_causal=False, window_size=(-1, -1), softcap=0.0,
                           alibi_slopes=None, num_splits=0, return_lse=False):
    """Attention of new queries to a KV cache, optionally appending new keys first.

    Args:
      q: [batch, seqlen_q, heads, head_dim], float16 or bfloat16 (seqlen_q is
        1 when decoding a token, more for chunked prefill or speculation).
      k_cache, v_cache: the cache, q's dtype. Contiguous: [batch, capacity,
        heads_k, head_dim]. Paged (with block_table): [num_blocks, page_size,
        heads_k, head_dim], page_size a multiple of 256.
      k, v: None, or new keys and values [batch, new, heads_k, head_dim],
        written at positions cache_seqlens[b] .. cache_seqlens[b] + new - 1
        of entry b before attending (then needs cache_seqlens).
      cache_seqlens: keys already in each entry's cache: an int or int32
        [batch]; None means the whole capacity. Entry b attends to its first
        cache_seqlens[b] (+ new) keys.
      block_table: None, or int32 [batch, max_blocks]: entry b's key t lives in
        page block_table[b, t // page_size] at row t % page_size; the capacity
        is max_blocks * page_size.
      softmax_scale, is_causal, window_size, softcap, alibi_slopes: as in
        flash_mha, the causal mask and window aligned to each entry's length
        (query i of seqlen_q sees keys j <= i + length - seqlen_q).
      num_splits: how many chunks to split the keys into (1..128); 0 picks
        FlashAttention-2's choice for the GPU.
      return_lse: also return the log-sum-exp, [batch, heads, seqlen_q] float32.

    Returns out (like q), or (out, lse) with return_lse; with k and v, the
    updated caches follow: (out, k_cache, v_cache) or (out, lse, k_cache,
    v_cache). Jit with the caches donated to update them in place.

    Concrete cache_seqlens and block_table are checked; traced ones cannot be:
    an entry whose keys would not fit the cache (or a negative length) gets a
    NaN output, and page indices are clipped into range. Not differentiable
    (raises under jax.grad) and without a vmap rule.
    """
    capacity, page_size = check_kvcache_args(q, k_cache, v_cache, k, v, cache_seqlens, block_table, num_splits)
    softmax_scale, is_causal, window_size, softcap = check_options(softmax_scale, is_causal, window_size, softcap)
    return_lse = check_flag("return_lse", return_lse)
    batch, seqlen_q, heads, head_dim = q.shape
    slopes = check_alibi_slopes(alibi_slopes, batch, heads)
    q, k_cache, v_cache, k, v = (None if x is None else _no_grad(x) for x in (q, k_cache, v_cache, k, v))
    if softmax_scale is None:
        softmax_scale = head_dim ** -0.5
    paged = block_table is not None
    if paged:
        block_table = jnp.clip(block_table, 0, k_cache.shape[0] - 1)
    lengths = jnp.full((batch,), capacity, jnp.int32) if cache_seqlens is None else \
        jnp.broadcast_to(jnp.asarray(cache_seqlens, jnp.int32), (batch,))
    broken = lengths < 0
    if k is not None:
        k_cache, v_cache = (_append(c, new, lengths, block_table) for c, new in ((k_cache, k), (v_cache, v)))
        lengths = lengths + k.shape[1]
    broken |= lengths > capacity
    lengths = jnp.clip(lengths, 0, capacity)
    options = _Options(float(softmax_scale), is_causal, window_size, softcap, slopes is not None, False)
    slopes = jnp.zeros((batch, heads), jnp.float32) if slopes is None else \
        jnp.broadcast_to(jnp.asarray(slopes, jnp.float32), (batch, heads))
    table = block_table if paged else jnp.zeros((batch, 1), jnp.int32)

    _check_kernel_available(q, "flash_mha_with_kvcache", kvcache=True)

    # Decoding one token with GQA: the query heads that share a key head become
    # rows of one query against it, so each cache tile is read once per key
    # head rather than once per query head (FlashAttention-2 does the same).
    # Only where rows and heads are interchangeable: no per-head ALiBi, and no
    # mask that differs between the rows (a single query sees every key up to
    # its length whatever the causal mask and right window; a left window
    # would cut keys by row).
    groups = heads // k_cache.shape[2]
    left = window_size[0]
    fold = seqlen_q == 1 and groups > 1 and not options.has_alibi and (left < 0 or left >= capacity)
    kernel_options = options._replace(is_causal=False, window_size=(-1, -1)) if fold else options

    def kernel(q, k_cache, v_cache, lengths, table, slopes):
        padded = -head_dim % 8  # as in flash_mha: zero columns change nothing
        if padded:
            q, k_cache, v_cache = (jnp.pad(x, [(0, 0)] * 3 + [(0, padded)]) for x in (q, k_cache, v_cache))
        if fold:  # [batch, 1, heads_k * groups, d] -> [batch, groups, heads_k, d]
            q = jnp.swapaxes(q.reshape(batch, k_cache.shape[2], groups, q.shape[-1]), 1, 2)
        rows, row_heads = q.shape[1], q.shape[2]
        splits, workspace = _binding.extension.kvcache_splits(batch, rows, capacity, row_heads, q.shape[-1],
                                                              num_splits, _workspace_num_sms())
        out, lse, _ = jax.ffi.ffi_call(
            KVCACHE_FWD_TARGET,
            (jax.ShapeDtypeStruct(q.shape, q.dtype), jax.ShapeDtypeStruct((batch, row_heads, rows), jnp.float32),
             jax.ShapeDtypeStruct((workspace,), jnp.float32)),
        )(q, k_cache, v_cache, lengths, table, slopes[:, :row_heads], **kernel_options.attributes(backward=False),
          has_block_table=paged, num_splits=np.int32(splits))
        if fold:  # back to [batch, 1, heads, d] and [batch, heads, 1]
            out = jnp.swapaxes(out, 1, 2).reshape(batch, 1, heads, out.shape[-1])
            lse = lse.reshape(batch, heads, 1)
        return out[..., :head_dim], lse

    def reference(q, k_cache, v_cache, lengths, table, slopes):
        return kvcache_attention_reference(
            q, k_cache, v_cache, lengths, table if paged else None, options.softmax_scale, options.is_causal,
            options.window_size, options.softcap, alibi_slopes=slopes if options.has_alibi else None)

    out, lse = jax.lax.platform_dependent(q, k_cache, v_cache, lengths, table, slopes,
                                          cuda=kernel, default=reference)
    out = jnp.where(broken[:, None, None, None], jnp.nan, out)
    result = (out, lse) if return_lse else (out,)
    if k is not None:
        result += (k_cache, v_cache)
    return result[0] if len(result) == 1 else result


def _append(cache, new, lengths, block_table):
    """The cache with `new` [batch, n, heads_k, head_dim] written at each
    entry's positions lengths[b] ..; positions outside the cache are dropped."""
    batch, n = new.shape[:2]
    position = lengths[:, None] + jnp.arange(n, dtype=jnp.int32)[None, :]  # [batch, n]
    if block_table is None:
        entry = jnp.broadcast_to(jnp.arange(batch, dtype=jnp.int32)[:, None], (batch, n))
        return cache.at[entry, position].set(new, mode="drop")
    page_size = cache.shape[1]
    slot = position // page_size
    inside = (position >= 0) & (slot < block_table.shape[1])
    page = jnp.take_along_axis(block_table, jnp.clip(slot, 0, block_table.shape[1] - 1), axis=1)
    page = jnp.where(inside, page, cache.shape[0])  # out of range: dropped
    return cache.at[page, position % page_size].set(new, mode="drop")


@jax.custom_jvp
def _no_grad(x):
    return x


@_no_grad.defjvp
def _no_grad_jvp(primals, tangents):
    raise TypeError("flash_mha_with_kvcache is not differentiable (it runs the forward-only decoding "
                    "kernels); differentiate flash_mha instead")
