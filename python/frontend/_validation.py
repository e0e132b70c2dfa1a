"""Argument checks for flash_mha: bad input raises here, naming the argument."""

import math
import numbers

import jax.numpy as jnp
import numpy as np

SUPPORTED_DTYPES = (jnp.dtype(jnp.float16), jnp.dtype(jnp.bfloat16))
MAX_HEAD_DIM = 256


def _dtype_names():
    return ", ".join(d.name for d in SUPPORTED_DTYPES)


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
    try:
        values = np.asarray(cu_seqlens)
    except Exception:  # traced: checked on the device instead (see flash_mha_varlen)
        return jnp.asarray(cu_seqlens)
    lengths = np.diff(values)
    if values[0] != 0 or values[-1] != total or (lengths < 0).any():
        raise ValueError(f"flash_mha_varlen: {name} must rise from 0 to {total} (the packed tokens), "
                         f"nondecreasing, got {values.tolist()}")
    if lengths.max() > max_seqlen:
        raise ValueError(f"flash_mha_varlen: {name} has a sequence of {lengths.max()} tokens, more than "
                         f"max_seqlen {max_seqlen}")
    return jnp.asarray(cu_seqlens)
