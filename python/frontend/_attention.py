"""flash_mha: the FlashAttention kernels as a differentiable JAX function.

On CUDA the forward and backward passes are XLA FFI calls into the binding's
handlers; on every other platform the same function runs the pure-JAX
reference, so code written against flash_mha runs (slowly) on CPU too.

The FFI contract, which both bindings decode alike:

  <prefix>_fwd  args  q, k, v, alibi_slopes
                rets  out, softmax_lse
  <prefix>_bwd  args  dout, q, k, v, out, softmax_lse, alibi_slopes
                rets  dq, dk, dv (heads of q), dq_accum, softmax_d (scratch)
  attributes    softmax_scale f32, is_causal bool, window_left i32,
                window_right i32, softcap f32, has_alibi bool;
                the backward's also deterministic bool

alibi_slopes is always a float32 operand, so that the operand lists never
change: [batch, heads] with ALiBi, and the empty [0] without it (has_alibi
says which; the bindings also take [batch, heads] zeros there, which the
KV-cache and varlen paths still pass).

Also here: drop-in adapters for jax.nn.dot_product_attention and for flax's
MultiHeadDotProductAttention(attention_fn=...).
"""

import functools
import inspect
import numbers
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.custom_derivatives import SymbolicZero

from . import _binding, _sharding
from ._reference import attention_mask, attention_reference
from ._validation import SUPPORTED_DTYPES, MAX_HEAD_DIM, check_alibi_slopes, check_flag, \
    check_options, check_qkv

FWD_TARGET = f"{_binding.TARGET_PREFIX}_fwd"
BWD_TARGET = f"{_binding.TARGET_PREFIX}_bwd"

# The deterministic backward's dq workspace has ceil(num_sms / (batch * heads))
# float32 copies of dq, num_sms being the SM count of the GPU it runs on (the
# kernel sizes its grid by it). When the trace happens where JAX sees no CUDA
# GPU (lowering for CUDA on a CPU host, exporting), the workspace is sized for
# this many SMs, more than any current NVIDIA GPU has (H100/H200: 132, B200:
# 148, RTX PRO 6000: 188); a GPU with more is refused at run time with a clear
# error rather than overrunning the buffer.
FALLBACK_NUM_SMS = 192


def _register():
    for name, capsule in _binding.extension.registrations().items():
        jax.ffi.register_ffi_target(f"{_binding.TARGET_PREFIX}_{name}", capsule, platform="CUDA")


_register()


def flash_mha(q, k, v, softmax_scale=None, is_causal=False, window_size=(-1, -1), softcap=0.0,
              alibi_slopes=None, deterministic=False, return_lse=False):
    """Multi-head attention softmax(q k^T * scale + bias) v with FlashAttention kernels.

    Args:
      q: [batch, seqlen_q, heads, head_dim], float16 or bfloat16.
      k, v: [batch, seqlen_k, heads_k, head_dim], same dtype; heads_k divides
        heads (grouped-query / multi-query attention when smaller).
      softmax_scale: defaults to head_dim ** -0.5.
      is_causal: mask keys after the query's position. With seqlen_q !=
        seqlen_k the mask is aligned to the bottom-right corner, as
        FlashAttention defines it: query i sees keys j <= i + seqlen_k - seqlen_q.
      window_size: (left, right) sliding window around that same diagonal;
        -1 leaves a side unbounded.
      softcap: if > 0, scores become softcap * tanh(scores / softcap).
      alibi_slopes: None, or float32 slopes of shape [heads] or [batch, heads]
        (other float dtypes are converted). As FlashAttention-2 applies ALiBi,
        the score of query i and key j gains -slope * |i + seqlen_k - seqlen_q - j|,
        or slope * j with the causal mask (the same softmax, a different
        log-sum-exp), after softmax_scale and softcap. The slopes get no
        gradient: they are treated as constants (stop_gradient).
      deterministic: run the backward pass in FlashAttention-2's deterministic
        mode: dq accumulated in separate float32 copies summed in a fixed
        order, so that repeated runs give bit-identical gradients. It needs
        ceil(num_sms / (batch * heads)) times the dq workspace. The forward pass
        is deterministic either way.
      return_lse: also return the log-sum-exp of each query row's scores.

    Returns [batch, seqlen_q, heads, head_dim] like q, or with return_lse the
    pair (out, lse), lse [batch, heads, seqlen_q] float32 (natural log). Rows
    that see no key (possible with windows, or causal with seqlen_q >
    seqlen_k) are zero, and their lse is +inf, as the kernels write it.
    Gradients flow through out and lse alike (an lse cotangent adds
    dlse_i * p_ij to the score gradients; on CUDA it costs a second backward
    kernel call, made only when the lse is differentiated).
    """
    check_qkv(q, k, v)
    softmax_scale, is_causal, window_size, softcap = check_options(
        softmax_scale, is_causal, window_size, softcap)
    deterministic = check_flag("deterministic", deterministic)
    return_lse = check_flag("return_lse", return_lse)
    batch, _, heads, head_dim = q.shape
    slopes = check_alibi_slopes(alibi_slopes, batch, heads)
    if softmax_scale is None:
        softmax_scale = head_dim ** -0.5
    if slopes is None:
        slopes = jnp.zeros((batch, heads), jnp.float32)
    else:
        slopes = jax.lax.stop_gradient(jnp.broadcast_to(jnp.asarray(slopes, jnp.float32), (batch, heads)))
    # The kernels take head dims in multiples of 8: zero columns change
    # neither q k^T nor the kept columns of the output.
    padded = -head_dim % 8
    if padded:
        pad = [(0, 0)] * 3 + [(0, padded)]
        q, k, v = (jnp.pad(x, pad) for x in (q, k, v))
    _check_kernel_available(q)
    options = _Options(float(softmax_scale), is_causal, window_size, softcap, alibi_slopes is not None,
                       deterministic)
    out, lse = _flash(q, k, v, slopes, options)
    if padded:
        out = out[..., :head_dim]
    return (out, lse) if return_lse else out


# FlashAttention-2's kernels use Ampere's instructions (cp.async, bf16 mma).
MIN_COMPUTE_CAPABILITY = (8, 0)


def _old_gpu():
    """The first visible GPU older than MIN_COMPUTE_CAPABILITY, described, or None."""
    for device in jax.devices():
        capability = getattr(device, "compute_capability", None)
        if capability and tuple(int(x) for x in str(capability).split(".")[:2]) < MIN_COMPUTE_CAPABILITY:
            return f"{device} ({getattr(device, 'device_kind', 'GPU')}) has compute capability {capability}"
    return None


def _kernel_missing(q, kvcache=False):
    """Why the kernels (with kvcache, the split-KV ones) cannot run q on this GPU,
    or None (also None off GPU)."""
    if jax.default_backend() != "gpu":
        return None
    old = _old_gpu()
    if old:
        return f"the kernels need an NVIDIA GPU of compute capability 8.0 or newer (Ampere or later); {old}"
    dtype, head_dim = jnp.dtype(q.dtype).name, q.shape[-1]
    ext = _binding.extension
    if (ext.has_kvcache_kernel if kvcache else ext.has_kernel)(dtype, head_dim):
        return None
    return (f"this build of {_binding.PACKAGE} has no {'split-KV ' if kvcache else ''}kernel for {dtype} with "
            f"head_dim {head_dim} ({ext.build_config()})")


def _check_kernel_available(q, name="flash_mha", kvcache=False):
    """Fails early, in Python, when we would run on a GPU this build has no kernel for."""
    missing = _kernel_missing(q, kvcache)
    if missing and _old_gpu():
        raise ValueError(f"{name}: {missing}; use jax.nn.dot_product_attention there")
    if missing:
        flags = "--//cpp:head_dims, --//cpp:dtypes" + (", --//cpp:splitkv" if kvcache else "")
        raise ValueError(f"{name}: {missing}; rebuild with the kernels you need (see README: {flags})")


class _Options(NamedTuple):
    """flash_mha's static options (hashable: a nondiff argument of the custom VJP)."""
    softmax_scale: float
    is_causal: bool
    window_size: tuple
    softcap: float
    has_alibi: bool
    deterministic: bool

    def attributes(self, backward):
        """The handlers' attributes, typed as they decode them."""
        attrs = dict(softmax_scale=np.float32(self.softmax_scale), is_causal=bool(self.is_causal),
                     window_left=np.int32(self.window_size[0]), window_right=np.int32(self.window_size[1]),
                     softcap=np.float32(self.softcap), has_alibi=bool(self.has_alibi))
        if backward:
            attrs["deterministic"] = bool(self.deterministic)
        return attrs

    def reference(self, q, k, v, slopes):
        return attention_reference(q, k, v, self.softmax_scale, self.is_causal, self.window_size,
                                   self.softcap, alibi_slopes=slopes if self.has_alibi else None)


def _fold_vmap(fn):
    """Under vmap, folds the mapped axis into the batch axis: one kernel call."""
    fn = jax.custom_batching.custom_vmap(fn)

    @fn.def_vmap
    def rule(axis_size, in_batched, *args):
        args = [a if b else jnp.broadcast_to(a, (axis_size,) + a.shape) for a, b in zip(args, in_batched)]
        outs = fn(*[a.reshape((axis_size * a.shape[1],) + a.shape[2:]) for a in args])
        outs = tuple(o.reshape((axis_size, o.shape[0] // axis_size) + o.shape[1:]) for o in outs)
        return outs, (True,) * len(outs)

    return fn


@functools.lru_cache(maxsize=None)
def _workspace_num_sms():
    """The SM count to size the deterministic backward's workspace for (see FALLBACK_NUM_SMS)."""
    try:
        has_cuda = bool(jax.devices("cuda"))
    except RuntimeError:  # no CUDA backend in this process
        has_cuda = False
    if not has_cuda:
        return FALLBACK_NUM_SMS
    return int(_binding.extension.num_sms())  # the largest over the visible GPUs


def _kernel_fwd(q, k, v, slopes, options):
    batch, seqlen_q, heads, _ = q.shape
    out, lse = jax.ffi.ffi_call(
        FWD_TARGET,
        (jax.ShapeDtypeStruct(q.shape, q.dtype), jax.ShapeDtypeStruct((batch, heads, seqlen_q), jnp.float32)),
    )(q, k, v, slopes, **options.attributes(backward=False))
    return out, lse


def _kernel_bwd_call(dout, q, k, v, out, lse, slopes, options):
    """One backward kernel call: dq, and dk, dv with the heads of q (not yet summed for GQA)."""
    batch, seqlen_q, heads, head_dim = q.shape
    num_sms = _workspace_num_sms() if options.deterministic else 0
    dq_accum, softmax_d = _binding.extension.bwd_workspace_elems(
        batch, seqlen_q, heads, head_dim, options.deterministic, num_sms)
    expanded = (batch, k.shape[1], heads, head_dim)
    dq, dk, dv, _, _ = jax.ffi.ffi_call(
        BWD_TARGET,
        (jax.ShapeDtypeStruct(q.shape, q.dtype), jax.ShapeDtypeStruct(expanded, q.dtype),
         jax.ShapeDtypeStruct(expanded, q.dtype), jax.ShapeDtypeStruct((dq_accum,), jnp.float32),
         jax.ShapeDtypeStruct((softmax_d,), jnp.float32)),
    )(dout, q, k, v, out, lse, slopes, **options.attributes(backward=True))
    return dq, dk, dv


def _dense_lse_rows(lse):
    """[batch, heads, seqlen_q] -> [batch, seqlen_q, heads]: the lse in q's row layout."""
    return jnp.swapaxes(lse, 1, 2)


def lse_cotangent_operands(dlse, dtype, head_dim, lse_to_rows=_dense_lse_rows):
    """(dout', out') that make the backward kernel compute an lse cotangent's gradient.

    The FlashAttention-2 backward forms dS = P * (dP - D) (times softcap's
    dtanh) with dP = dO V^T and D = rowsum(dO * O), and O enters only through
    D. With V = 0, dP vanishes, and with rowsum(dout' * out') = -dlse the
    kernel's dS is P * dlse: exactly the lse cotangent's score gradient
    (d lse_i / d s_ij = p_ij), from which it forms dq and dk as usual. Each
    row carries -dlse as a power of two 2**e in out' (columns 0 and 1) times
    a two-term split hi + lo of the mantissa in dout', so that D is -dlse to
    about 16 (bfloat16) or 22 (float16) bits, beyond the precision of the
    kernel's dS, which it rounds to the input dtype; the power of two keeps
    float16's range (|dlse| up to 2**31, below 2**-28 flushed).

    dlse: [batch, heads, seqlen_q]; returns two [batch, seqlen_q, heads, head_dim]
    arrays of `dtype` (with lse_to_rows, another lse layout and q's layout).
    """
    x = -lse_to_rows(dlse.astype(jnp.float32))  # [..., heads], rows as in q
    _, exponent = jnp.frexp(x)
    exponent = jnp.clip(exponent, -14, 15)
    scale = jnp.ldexp(jnp.ones_like(x), exponent)
    mantissa = x / scale
    hi = mantissa.astype(dtype)
    lo = (mantissa - hi.astype(jnp.float32)).astype(dtype)
    zeros = jnp.zeros(x.shape + (head_dim - 2,), dtype)
    dout = jnp.concatenate([hi[..., None], lo[..., None], zeros], axis=-1)
    out = jnp.concatenate([scale.astype(dtype)[..., None]] * 2 + [zeros], axis=-1)
    return dout, out


def combine_backward_calls(call, dout, dlse, q, k, v, out, lse, lse_to_rows=_dense_lse_rows):
    """dq, dk, dv from backward kernel calls `call(dout, out, v) -> (dq, dk, dv)`:
    one for the output's cotangent dout, one for the lse cotangent dlse (either
    may be None, not both), summed in float32. dk and dv keep q's heads."""
    parts = []
    if dout is not None:
        parts.append(call(dout, out, v))
    if dlse is not None:
        d_o, o = lse_cotangent_operands(dlse, q.dtype, q.shape[-1], lse_to_rows)
        dq, dk, _ = call(d_o, o, jnp.zeros_like(v))
        parts.append((dq, dk, None))
    if len(parts) == 1 and parts[0][2] is not None:
        return parts[0]

    def total(grads, like):
        grads = [g.astype(jnp.float32) for g in grads if g is not None]
        return functools.reduce(jnp.add, grads).astype(like.dtype) if grads else None

    dq = total([p[0] for p in parts], q)
    dk = total([p[1] for p in parts], q)
    dv = total([p[2] for p in parts], q)
    if dv is None:
        dv = jnp.zeros(dk.shape, q.dtype)
    return dq, dk, dv


def sum_head_groups(grad, like):
    """The kernels write dk, dv per query head ([..., heads, head_dim]); with
    GQA each key head's gradient is the sum over its group of query heads."""
    heads_k, head_dim = like.shape[-2:]
    groups = grad.shape[-2] // heads_k
    if groups == 1:
        return grad
    grouped = grad.reshape(grad.shape[:-2] + (heads_k, groups, head_dim)).astype(jnp.float32)
    return grouped.sum(-2).astype(like.dtype)


def _no_slopes():
    """The alibi_slopes operand of a call without ALiBi: empty, never read
    (has_alibi false). Zeros of the full [batch, heads] would be an XLA kernel
    of their own in every call (docs/hopper-notes.md, seventh session)."""
    return jnp.zeros((0,), jnp.float32)


def _forward(q, k, v, slopes, options):
    """(out, lse): the per-call function (kernel on CUDA, reference elsewhere),
    partitioned over batch and heads under jit (_sharding) and with a vmapped
    axis folded into the batch. Its operands are q, k, v and, with ALiBi only,
    the [batch, heads] slopes."""
    def kernel(q, k, v, slopes=None):
        if slopes is None:
            slopes = _no_slopes()
        return _kernel_fwd(q, k, v, slopes, options)

    def reference(q, k, v, slopes=None):
        return options.reference(q, k, v, slopes)

    args = (q, k, v) + ((slopes,) if options.has_alibi else ())
    fn = _fold_vmap(_sharding.local_per_shard(
        lambda *args: jax.lax.platform_dependent(*args, cuda=kernel, default=reference)))
    return tuple(fn(*args))


def _backward(dout, dlse, q, k, v, out, lse, slopes, options):
    """dq, dk, dv for cotangents dout of out and dlse of lse (None: zero; not both).

    The per-call function's operands: dout (if any), q, k, v, out, lse, dlse
    (if any), slopes (with ALiBi only); partitioned and vmapped as _forward's.
    """
    has_dout, has_dlse = dout is not None, dlse is not None

    def unpack(args):
        args = list(args)
        dout = args.pop(0) if has_dout else None
        q, k, v, out, lse = args[:5]
        dlse = args[5] if has_dlse else None
        slopes = args[-1] if options.has_alibi else None
        return dout, dlse, q, k, v, out, lse, slopes

    def kernel(*args):
        dout, dlse, q, k, v, out, lse, slopes = unpack(args)
        if slopes is None:
            slopes = _no_slopes()
        call = lambda dout, out, v: _kernel_bwd_call(dout, q, k, v, out, lse, slopes, options)
        dq, dk, dv = combine_backward_calls(call, dout, dlse, q, k, v, out, lse)
        return dq, sum_head_groups(dk, k), sum_head_groups(dv, v)

    def reference(*args):
        dout, dlse, q, k, v, out, lse, slopes = unpack(args)
        (o, l), vjp = jax.vjp(lambda q, k, v: options.reference(q, k, v, slopes), q, k, v)
        return vjp((jnp.zeros_like(o) if dout is None else dout, jnp.zeros_like(l) if dlse is None else dlse))

    args = ((dout,) if has_dout else ()) + (q, k, v, out, lse) + ((dlse,) if has_dlse else ()) \
        + ((slopes,) if options.has_alibi else ())
    fn = _fold_vmap(_sharding.local_per_shard(
        lambda *args: jax.lax.platform_dependent(*args, cuda=kernel, default=reference)))
    return tuple(fn(*args))


def _fwd_impl(q, k, v, softmax_scale, is_causal, window_size, softcap, alibi_slopes=None):
    """(out, lse) of the kernels' forward (no custom VJP); for _ring.py.
    q, k, v as the kernels take them (head_dim a multiple of 8); alibi_slopes
    None or float32 [batch, heads]."""
    options = _Options(float(softmax_scale), bool(is_causal), tuple(window_size), float(softcap),
                       alibi_slopes is not None, False)
    return _forward(q, k, v, alibi_slopes, options)


def _bwd_impl(dout, q, k, v, out, lse, softmax_scale, is_causal, window_size, softcap, alibi_slopes=None,
              deterministic=False, dlse=None):
    """(dq, dk, dv) of the kernels' backward for the cotangent dout of out (and
    dlse of lse, if given); for _ring.py. Arguments as _fwd_impl's."""
    options = _Options(float(softmax_scale), bool(is_causal), tuple(window_size), float(softcap),
                       alibi_slopes is not None, bool(deterministic))
    return _backward(dout, dlse, q, k, v, out, lse, alibi_slopes, options)


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def _flash(q, k, v, slopes, options):
    return _forward(q, k, v, slopes, options)


def _flash_fwd(q, k, v, slopes, options):
    # symbolic_zeros: the differentiable arguments come as CustomVJPPrimal.
    q, k, v, slopes = (x.value for x in (q, k, v, slopes))
    out, lse = _forward(q, k, v, slopes, options)
    return (out, lse), (q, k, v, slopes, out, lse)


def _flash_bwd(options, residuals, cotangents):
    q, k, v, slopes, out, lse = residuals
    dout, dlse = (None if isinstance(c, SymbolicZero) else c for c in cotangents)
    if dout is None and dlse is None:
        grads = (jnp.zeros_like(q), jnp.zeros_like(k), jnp.zeros_like(v))
    else:
        grads = _backward(dout, dlse, q, k, v, out, lse, slopes, options)
    return (*grads, None)  # ALiBi slopes: no gradient (documented)


_flash.defvjp(_flash_fwd, _flash_bwd, symbolic_zeros=True)


# --- Drop-in adapters -------------------------------------------------------


def _is_int(x):
    return isinstance(x, numbers.Integral) and not isinstance(x, bool)


def top_left_to_flash_window(seqlen_q, seqlen_k, is_causal, local_window_size):
    """The flash_mha window_size equal to jax.nn's top-left-aligned mask, or None.

    jax.nn.dot_product_attention lets query t see key s when s <= t (is_causal)
    and t - left <= s <= t + right (local_window_size); flash_mha aligns its
    diagonal to the bottom-right corner (offset seqlen_k - seqlen_q), treats
    window sizes >= seqlen_k as unbounded, and zeroes rows that see no key
    where jax.nn spreads them evenly over all keys. None when the mask cannot
    be expressed exactly that way.
    """
    lo = hi = None  # bounds on s - t; None: unbounded
    if local_window_size is not None:
        lo, hi = local_window_size
    if is_causal:
        hi = 0 if hi is None else min(hi, 0)
    if lo is not None and lo >= seqlen_q - 1:  # reaches key 0 from every query
        lo = None
    if hi is not None and hi >= seqlen_k - 1:  # reaches the last key from every query
        hi = None
    offset = seqlen_k - seqlen_q
    left = -1 if lo is None else lo + offset
    right = -1 if hi is None else hi - offset
    if lo is not None and left < 0:  # also: some rows would see no key
        return None
    if hi is not None and not 0 <= right < seqlen_k:
        return None
    return left, right


def _plan_common(query, key, value, bias, mask, scale, is_causal):
    """(q, k, v, scale or None) in flash_mha's 4-D layout when the kernels can take a
    jax.nn.dot_product_attention call's arrays and options (masks aside), else None."""
    if bias is not None or mask is not None:
        return None
    arrays = (query, key, value)
    if not all(hasattr(x, "shape") and hasattr(x, "dtype") for x in arrays):
        return None
    if len({x.ndim for x in arrays}) != 1 or query.ndim not in (3, 4):
        return None
    if not jnp.dtype(query.dtype) == jnp.dtype(key.dtype) == jnp.dtype(value.dtype) \
            or jnp.dtype(query.dtype) not in SUPPORTED_DTYPES:
        return None
    q, k, v = (x if x.ndim == 4 else x[None] for x in arrays)
    batch, seqlen_q, heads, head_dim = q.shape
    if k.shape != v.shape or k.shape[0] != batch or k.shape[3] != head_dim or not 0 < head_dim <= MAX_HEAD_DIM \
            or k.shape[2] == 0 or heads % k.shape[2] or 0 in q.shape + k.shape:
        return None
    if scale is not None and (isinstance(scale, bool) or not isinstance(scale, (numbers.Real, np.floating))
                              or not np.isfinite(scale)):
        return None  # e.g. a traced scale
    if not isinstance(is_causal, (bool, np.bool_)):
        return None
    if _kernel_missing(q) is not None:  # (kernels come in head-dim buckets)
        return None
    return q, k, v, None if scale is None else float(scale)


def _plan_dot_product_attention(query, key, value, bias, mask, scale, is_causal, query_seq_lengths,
                                key_value_seq_lengths, local_window_size):
    """flash_mha's arguments for a jax.nn.dot_product_attention call without sequence
    lengths, or None (sequence lengths: see _seqlens.lengths_attention)."""
    if query_seq_lengths is not None or key_value_seq_lengths is not None:
        return None
    plan = _plan_common(query, key, value, bias, mask, scale, is_causal)
    if plan is None:
        return None
    q, k, v, scale = plan
    if local_window_size is not None:
        if _is_int(local_window_size):
            local_window_size = (local_window_size, local_window_size)
        if not (isinstance(local_window_size, (tuple, list)) and len(local_window_size) == 2
                and all(_is_int(w) and w >= 0 for w in local_window_size)):
            return None
    window = top_left_to_flash_window(q.shape[1], k.shape[1], bool(is_causal), local_window_size)
    if window is None:
        return None
    return q, k, v, scale, window


def dot_product_attention(query, key, value, bias=None, mask=None, *, scale=None, is_causal=False,
                          query_seq_lengths=None, key_value_seq_lengths=None, local_window_size=None,
                          implementation=None, return_residual=False):
    """jax.nn.dot_product_attention with the FlashAttention kernels where they apply.

    The signature and semantics are jax.nn.dot_product_attention's (JAX 0.10):
    [batch, seq, heads, head_dim] (or unbatched [seq, heads, head_dim]) inputs,
    grouped-query attention, `scale`, a top-left-aligned causal mask,
    `local_window_size`, `query_seq_lengths` / `key_value_seq_lengths`, the
    residual (log-sum-exp, [batch, seq_q, heads] in the inputs' dtype, no
    gradient) with `return_residual`.

    The kernels run where they compute exactly the same attention, for
    float16 or bfloat16 inputs with head_dim <= 256 and no `bias` or `mask`:

    * Without sequence lengths, flash_mha, when the causal mask / local
      window is one that flash_mha's bottom-right-aligned window_size
      expresses with every query row seeing at least one key (always when
      seqlen_q == seqlen_k; see top_left_to_flash_window).
    * With sequence lengths (int32 [batch]; clipped to [0, seq], as jax.nn's
      mask `index < length` treats them), flash_mha_varlen over the padded
      rows as they lie, two sequences per row: the first Lq_b queries with
      the first Lk_b keys (min(Lk_b, Lq_b) when causal), and the padding
      after them, whose rows are zeroed as jax.nn zeroes them. This is exact
      when no valid query row is left without a key (jax.nn averages all
      values there, the kernels give zero) and, with is_causal, when the
      kernels' per-sequence bottom-right causal mask is jax.nn's top-left
      one: with is_causal Lk_b >= Lq_b in every row, without it Lk_b > 0
      wherever Lq_b > 0. Concrete lengths are checked in Python; traced ones
      by jax.lax.cond, whose other branch is jax.nn.dot_product_attention
      (both are compiled; the result is always jax.nn's). Not with
      `local_window_size` or `return_residual` (jax.nn then).

    Every other call goes to jax.nn.dot_product_attention unchanged, with
    `implementation`, which is used only there (and in that lax.cond branch).
    """
    if query_seq_lengths is not None or key_value_seq_lengths is not None:
        out = None
        if bias is None and mask is None and local_window_size is None and not return_residual:
            from ._seqlens import lengths_attention  # (it imports this module)

            out = lengths_attention(query, key, value, scale, is_causal, query_seq_lengths,
                                    key_value_seq_lengths, implementation)
        if out is not None:
            return out
    plan = _plan_dot_product_attention(query, key, value, bias, mask, scale, is_causal, query_seq_lengths,
                                       key_value_seq_lengths, local_window_size)
    if plan is None:
        return jax.nn.dot_product_attention(
            query, key, value, bias, mask, scale=scale, is_causal=is_causal,
            query_seq_lengths=query_seq_lengths, key_value_seq_lengths=key_value_seq_lengths,
            local_window_size=local_window_size, implementation=implementation,
            return_residual=return_residual)
    q, k, v, softmax_scale, window = plan
    out, lse = flash_mha(q, k, v, softmax_scale=softmax_scale, window_size=window, return_lse=True)
    out = out.reshape(query.shape)
    if not return_residual:
        return out
    residual = jax.lax.stop_gradient(jnp.swapaxes(lse, 1, 2)).astype(key.dtype)
    return out, residual.reshape(query.shape[:-1])


def flax_attention_fn(query, key, value, bias=None, mask=None, broadcast_dropout=True, dropout_rng=None,
                      dropout_rate=0.0, deterministic=False, dtype=None, precision=None, module=None,
                      force_fp32_for_softmax=False, qk_attn_weights_einsum=None,
                      attn_weights_value_einsum=None, *, is_causal=False, window_size=(-1, -1), softcap=0.0):
    """An `attention_fn` for flax.linen.MultiHeadDotProductAttention.

        nn.MultiHeadDotProductAttention(num_heads=8, dtype=jnp.bfloat16,
                                        attention_fn=flax_attention_fn)
        functools.partial(flax_attention_fn, is_causal=True)   # causal self-attention

    The signature is flax.linen.dot_product_attention's ([batch..., seq, heads,
    head_dim] inputs, promoted to `dtype` when given). Runs flash_mha when no
    bias, mask, active dropout (rate > 0 and not deterministic), weight
    sowing (module) or custom einsum is asked for, the (promoted) dtype is
    float16 or bfloat16, and k and v have one shape with head_dim <= 256;
    `precision` and `force_fp32_for_softmax` are then moot (the kernels
    accumulate in float32). The keyword-only is_causal, window_size and
    softcap are flash_mha's (bottom-right aligned: for self-attention the
    usual causal mask); a causal mask passed as `mask` instead falls back.
    Every other call goes to flax.linen.dot_product_attention (flax must be
    installed then), with is_causal/window_size added to its mask (where a
    row sees no key flax averages all values, flash_mha gives zero), and
    softcap refused (ValueError).
    """
    args = dict(bias=bias, mask=mask, broadcast_dropout=broadcast_dropout, dropout_rng=dropout_rng,
                dropout_rate=dropout_rate, deterministic=deterministic, dtype=dtype, precision=precision,
                module=module, force_fp32_for_softmax=force_fp32_for_softmax,
                qk_attn_weights_einsum=qk_attn_weights_einsum,
                attn_weights_value_einsum=attn_weights_value_einsum)
    arrays = (query, key, value)
    dropout = dropout_rate > 0 and not deterministic
    mappable = (bias is None and mask is None and not dropout and module is None
                and qk_attn_weights_einsum is None and attn_weights_value_einsum is None
                and all(hasattr(x, "shape") and hasattr(x, "dtype") for x in arrays)
                and query.ndim >= 3 and query.ndim == key.ndim == value.ndim
                and query.shape[:-3] == key.shape[:-3] and key.shape == value.shape)
    if mappable:
        compute = jnp.dtype(dtype) if dtype is not None else jnp.result_type(*arrays)
        mappable = compute in SUPPORTED_DTYPES and 0 < query.shape[-1] <= MAX_HEAD_DIM
    if mappable:
        q, k, v = (jnp.asarray(x, compute).reshape((-1,) + x.shape[-3:]) for x in arrays)
        mappable = _kernel_missing(q) is None
    if not mappable:
        if softcap:
            raise ValueError("flax_attention_fn: softcap applies only where the FlashAttention kernels "
                             "run (no bias, mask, dropout, weight sowing; float16/bfloat16), and this "
                             "call falls back to flax's attention")
        if is_causal or tuple(window_size) != (-1, -1):
            # The same (bottom-right-aligned) mask, for flax to apply.
            window = attention_mask(query.shape[-3], key.shape[-3], bool(is_causal), tuple(window_size))
            args["mask"] = window if mask is None else jnp.logical_and(mask, window)
        import flax.linen  # the caller is flax

        accepted = inspect.signature(flax.linen.dot_product_attention).parameters
        return flax.linen.dot_product_attention(
            query, key, value, **{name: x for name, x in args.items() if name in accepted})
    out = flash_mha(q, k, v, is_causal=is_causal, window_size=window_size, softcap=softcap)
    return out.reshape(query.shape[:-1] + (out.shape[-1],))
