"""Argument checks for flash_mha: bad input raises here, naming the argument."""

import math
import numbers
import types

import jax.numpy as jnp
import numpy as np

SUPPORTED_DTYPES = (jnp.dtype(jnp.float16), jnp.dtype(jnp.bfloat16))
MAX_HEAD_DIM = 256


def _dtype_names():
    return ", ".join(d.name for d in SUPPORTED_DTYPES)


def concrete(x):
    """x as a numpy array, or None when it is traced."""
    try:
        return np.asarray(x)
    except Exception:  # noqa: BLE001 - a tracer (TracerArrayConversionError and kin)
        return None


def check_qkv(q, k, v):
    """Checks shapes and dtypes of q, k, v ([batch, seq, heads, head_dim])."""
    for name, x in (("q", q), ("k", k), ("v", v)):
        if not hasattr(x, "shape") or not hasattr(x, "dtype"):
            raise TypeError(f"flash_mha: {name} must be an array, got {type(x).__name__}")
        if x.ndim != 4:
            raise ValueError(
                f"flash_mha: {name} must have rank 4 [batch, seq, heads, head_dim], got shape {tuple(x.shape)}")
        if jnp.dtype(x.dtype) not in SUPPORTED_DTYPES:
            raise TypeError(f"flash_mha: {name} has dtype {jnp.dtype(x.dtype).name}; supported: {_dtype_names()}")
    if not q.dtype == k.dtype == v.dtype:
        raise TypeError(
            f"flash_mha: q, k, v must share one dtype, got {jnp.dtype(q.dtype).name}, "
            f"{jnp.dtype(k.dtype).name}, {jnp.dtype(v.dtype).name}")
    if k.shape != v.shape:
        raise ValueError(f"flash_mha: k and v must have the same shape, got {tuple(k.shape)} and {tuple(v.shape)}")
    batch, seqlen_q, heads, head_dim = q.shape
    if k.shape[0] != batch:
        raise ValueError(f"flash_mha: k has batch {k.shape[0]} but q has batch {batch}")
    if k.shape[3] != head_dim:
        raise ValueError(f"flash_mha: k has head_dim {k.shape[3]} but q has head_dim {head_dim}")
    if not 0 < head_dim <= MAX_HEAD_DIM:
        raise ValueError(f"flash_mha: head_dim must be in [1, {MAX_HEAD_DIM}], got {head_dim}")
    if k.shape[2] == 0 or heads % k.shape[2] != 0:
        raise ValueError(
            f"flash_mha: the heads of q ({heads}) must be a multiple of the heads of k and v ({k.shape[2]})")
    for name, size in (("batch", batch), ("seqlen of q", seqlen_q), ("seqlen of k", k.shape[1]), ("heads", heads)):
        if size == 0:
            raise ValueError(f"flash_mha: {name} must be positive, got 0")


def check_options(softmax_scale, is_causal, window_size, softcap):
    """Checks the options and returns them normalized: (scale or None, bool, (int, int), float)."""
    if softmax_scale is not None:
        if isinstance(softmax_scale, bool) or not isinstance(softmax_scale, numbers.Real) \
                or not math.isfinite(softmax_scale):
            raise ValueError(f"flash_mha: softmax_scale must be None or a finite number, got {softmax_scale!r}")
        softmax_scale = float(softmax_scale)
    if not isinstance(is_causal, (bool, np.bool_)):
        raise TypeError(f"flash_mha: is_causal must be a bool, got {is_causal!r}")
    try:
        left, right = window_size
    except (TypeError, ValueError):
        raise ValueError(f"flash_mha: window_size must be a pair (left, right), got {window_size!r}") from None
    for side in (left, right):
        if isinstance(side, bool) or not isinstance(side, numbers.Integral) or side < -1 or side >= 2**31:
            raise ValueError(
                f"flash_mha: window_size entries must be -1 (unbounded) or integers in [0, 2**31), got {window_size!r}")
    if isinstance(softcap, bool) or not isinstance(softcap, numbers.Real) or not math.isfinite(softcap) \
            or softcap < 0:
        raise ValueError(f"flash_mha: softcap must be a finite number >= 0 (0 disables it), got {softcap!r}")
    return softmax_scale, bool(is_causal), (int(left), int(right)), float(softcap)


def check_flag(name, value):
    """A bool option (numpy bools too), returned as a Python bool."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"flash_mha: {name} must be a bool, got {value!r}")
    return bool(value)


def check_alibi_slopes(alibi_slopes, batch, heads):
    """None, or the slopes as an array of shape [heads] or [batch, heads] of a float dtype."""
    if alibi_slopes is None:
        return None
    if not hasattr(alibi_slopes, "shape") or not hasattr(alibi_slopes, "dtype"):
        raise TypeError(
            f"flash_mha: alibi_slopes must be None or a float32 array of shape [heads] or "
            f"[batch, heads], got {type(alibi_slopes).__name__}")
    dtype = jnp.dtype(alibi_slopes.dtype)
    if not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(f"flash_mha: alibi_slopes has dtype {dtype.name}; it must be float32 "
                        f"(other float dtypes are converted to it)")
    shape = tuple(alibi_slopes.shape)
    if shape not in ((heads,), (batch, heads)):
        raise ValueError(
            f"flash_mha: alibi_slopes must have shape [heads] = ({heads},) or [batch, heads] = "
            f"({batch}, {heads}), got {shape}")
    return alibi_slopes


def check_packed_qkv(q, k, v):
    """Checks shapes and dtypes of packed q, k, v ([tokens, heads, head_dim]) for flash_mha_varlen."""
    for name, x in (("q", q), ("k", k), ("v", v)):
        if not hasattr(x, "shape") or not hasattr(x, "dtype"):
            raise TypeError(f"flash_mha_varlen: {name} must be an array, got {type(x).__name__}")
        if x.ndim != 3:
            raise ValueError(f"flash_mha_varlen: {name} must have rank 3 [total_tokens, heads, head_dim], "
                             f"got shape {tuple(x.shape)}")
    # The rest as for flash_mha, on a batch of one.
    try:
        check_qkv(q[None], k[None], v[None])
    except (TypeError, ValueError) as e:
        raise type(e)(str(e).replace("flash_mha:", "flash_mha_varlen:").replace("seqlen of", "tokens of")) from None


def check_max_seqlen(name, value):
    """A positive Python int below 2**31 (it sizes the kernels' grid)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral) or not 0 < value < 2**31:
        raise ValueError(f"flash_mha_varlen: {name} must be an int in [1, 2**31) (a static bound on the "
                         f"sequence lengths), got {value!r}")
    return int(value)


def check_cu_seqlens(name, cu_seqlens, total, max_seqlen, batch=None):
    """int32 [batch + 1] offsets; concrete ones must go from 0 to `total`, nondecreasing, with no
    sequence longer than max_seqlen. Returns them as an int32 array."""
    if not hasattr(cu_seqlens, "shape") or not hasattr(cu_seqlens, "dtype"):
        raise TypeError(f"flash_mha_varlen: {name} must be an int32 array of shape [batch + 1], "
                        f"got {type(cu_seqlens).__name__}")
    if jnp.dtype(cu_seqlens.dtype) != jnp.dtype(jnp.int32):
        raise TypeError(f"flash_mha_varlen: {name} must have dtype int32, got {jnp.dtype(cu_seqlens.dtype).name}")
    if cu_seqlens.ndim != 1 or cu_seqlens.shape[0] < 2:
        raise ValueError(f"flash_mha_varlen: {name} must have shape [batch + 1] with batch >= 1, "
                         f"got {tuple(cu_seqlens.shape)}")
    if batch is not None and cu_seqlens.shape[0] != batch + 1:
        raise ValueError(f"flash_mha_varlen: {name} has {cu_seqlens.shape[0] - 1} sequences but cu_seqlens_q "
                         f"has {batch}")
    values = concrete(cu_seqlens)
    if values is None:  # traced: checked on the device instead (see flash_mha_varlen)
        return jnp.asarray(cu_seqlens)
    lengths = np.diff(values)
    if values[0] != 0 or values[-1] != total or (lengths < 0).any():
        raise ValueError(f"flash_mha_varlen: {name} must rise from 0 to {total} (the packed tokens), "
                         f"nondecreasing, got {values.tolist()}")
    if lengths.max() > max_seqlen:
        raise ValueError(f"flash_mha_varlen: {name} has a sequence of {lengths.max()} tokens, more than "
                         f"max_seqlen {max_seqlen}")
    return jnp.asarray(cu_seqlens)


def check_kvcache_args(q, k_cache, v_cache, k, v, cache_seqlens, block_table, num_splits):
    """Checks flash_mha_with_kvcache's arrays; returns (capacity, page_size or None)."""
    name = "flash_mha_with_kvcache"
    for arg, x in (("q", q), ("k_cache", k_cache), ("v_cache", v_cache)):
        if not hasattr(x, "shape") or not hasattr(x, "dtype"):
            raise TypeError(f"{name}: {arg} must be an array, got {type(x).__name__}")
        if x.ndim != 4:
            raise ValueError(f"{name}: {arg} must have rank 4, got shape {tuple(x.shape)}")
    if k_cache.shape != v_cache.shape:
        raise ValueError(f"{name}: k_cache and v_cache must have the same shape, got "
                         f"{tuple(k_cache.shape)} and {tuple(v_cache.shape)}")
    batch = q.shape[0]
    page_size = None
    if block_table is not None:
        if not hasattr(block_table, "dtype") or jnp.dtype(block_table.dtype) != jnp.dtype(jnp.int32) \
                or block_table.ndim != 2 or block_table.shape[0] != batch or block_table.shape[1] == 0:
            raise ValueError(f"{name}: block_table must be an int32 array [batch, max_blocks_per_seq] = "
                             f"[{batch}, >= 1], got {getattr(block_table, 'dtype', type(block_table).__name__)} "
                             f"{tuple(getattr(block_table, 'shape', ()))}")
        page_size = k_cache.shape[1]
        if page_size % 256:
            raise ValueError(f"{name}: a paged cache's page size (k_cache.shape[1]) must be a multiple of 256 "
                             f"(the kernels' key tiles must not straddle pages), got {page_size}")
        _check_concrete_range(name, "block_table", block_table, 0, k_cache.shape[0] - 1, "page indices")
        capacity = block_table.shape[1] * page_size
        cache_as_batch = (batch,) + k_cache.shape[1:]  # check the rest as for a contiguous cache
    else:
        capacity = k_cache.shape[1]
        cache_as_batch = k_cache.shape
    try:
        shaped = lambda x: types.SimpleNamespace(shape=cache_as_batch, dtype=x.dtype, ndim=4)
        check_qkv(q, shaped(k_cache), shaped(v_cache))
    except (TypeError, ValueError) as e:
        raise type(e)(str(e).replace("flash_mha:", f"{name}:").replace(" k ", " k_cache ")
                      .replace("seqlen of k", "cache capacity")) from None
    if (k is None) != (v is None):
        raise ValueError(f"{name}: k and v (the new keys and values) must be given together")
    if k is not None:
        if cache_seqlens is None:
            raise ValueError(f"{name}: appending k and v needs cache_seqlens (where to write them)")
        for arg, x in (("k", k), ("v", v)):
            expected = (batch, None) + tuple(k_cache.shape[2:])
            if not hasattr(x, "shape") or x.ndim != 4 or x.shape[0] != batch or x.shape[2:] != k_cache.shape[2:] \
                    or x.shape[1] == 0 or jnp.dtype(x.dtype) != jnp.dtype(q.dtype):
                raise ValueError(f"{name}: {arg} must be a {jnp.dtype(q.dtype).name} array "
                                 f"[batch, new tokens, heads_k, head_dim] = {expected}, got "
                                 f"{getattr(x, 'dtype', type(x).__name__)} {tuple(getattr(x, 'shape', ()))}")
        if k.shape != v.shape:
            raise ValueError(f"{name}: k and v must have the same shape, got {tuple(k.shape)} and {tuple(v.shape)}")
    if cache_seqlens is not None and not isinstance(cache_seqlens, numbers.Integral):
        if not hasattr(cache_seqlens, "dtype") or jnp.dtype(cache_seqlens.dtype) != jnp.dtype(jnp.int32) \
                or tuple(cache_seqlens.shape) not in ((), (batch,)):
            raise ValueError(f"{name}: cache_seqlens must be an int or an int32 array [batch] = [{batch}], got "
                             f"{getattr(cache_seqlens, 'dtype', type(cache_seqlens).__name__)} "
                             f"{tuple(getattr(cache_seqlens, 'shape', ()))}")
    if cache_seqlens is not None:
        new = 0 if k is None else k.shape[1]
        _check_concrete_range(name, "cache_seqlens", cache_seqlens, 0, capacity - new,
                              f"lengths (the cache holds {capacity} keys" + (f", {new} are appended)" if new else ")"))
    if isinstance(num_splits, bool) or not isinstance(num_splits, numbers.Integral) or not 0 <= num_splits <= 128:
        raise ValueError(f"{name}: num_splits must be an int in [0, 128] (0: chosen for the GPU), got {num_splits!r}")
    return capacity, page_size


def _check_concrete_range(name, arg, x, lo, hi, what):
    """Concrete values must lie in [lo, hi]; traced ones are made safe by the caller."""
    values = concrete(x)
    if values is not None and values.size and (values.min() < lo or values.max() > hi):
        raise ValueError(f"{name}: {arg} must hold {what} in [{lo}, {hi}], got {values.tolist()}")
