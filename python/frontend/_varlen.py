"""flash_mha_varlen: attention over packed variable-length sequences.

FlashAttention's varlen layout: a batch's sequences concatenated along the
token axis, without padding, located by cumulative offsets. The kernels are
flash_mha's; only the addressing differs (cpp/include/jax_flash_attn/flash_attn.h).

The FFI contract, which both bindings decode alike:

  <prefix>_varlen_fwd  args  q, k, v, cu_seqlens_q, cu_seqlens_k, alibi_slopes
                       rets  out, softmax_lse [heads, total_q]
  <prefix>_varlen_bwd  args  dout, q, k, v, out, softmax_lse, cu_seqlens_q,
                             cu_seqlens_k, alibi_slopes
                       rets  dq, dk, dv (heads of q), dq_accum, softmax_d
  attributes           flash_mha's, plus max_seqlen_q i32, max_seqlen_k i32

The kernels trust cu_seqlens on the GPU, so the front end makes whatever it is
given safe to address (nondecreasing, within [0, total]); concrete values are
checked up front, traced ones cannot be: a sequence longer than its
max_seqlen turns the whole output NaN, and rows of no sequence are zero.
"""

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.custom_derivatives import SymbolicZero

from . import _binding
from ._attention import _check_kernel_available, _Options, _workspace_num_sms, combine_backward_calls, \
    sum_head_groups
from ._reference import sequence_positions, varlen_attention_reference
from ._validation import check_alibi_slopes, check_cu_seqlens, check_flag, check_options, check_packed_qkv, \
    check_max_seqlen

VARLEN_FWD_TARGET = f"{_binding.TARGET_PREFIX}_varlen_fwd"
VARLEN_BWD_TARGET = f"{_binding.TARGET_PREFIX}_varlen_bwd"


def flash_mha_varlen(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, softmax_scale=None,
                     is_causal=False, window_size=(-1, -1), softcap=0.0, alibi_slopes=None, deterministic=False,
                     return_lse=False):
    """flash_mha over packed sequences of different lengths.

    Args:
      q: [total_q, heads, head_dim], float16 or bfloat16: every sequence's
        queries, one after another.
      k, v: [total_k, heads_k, head_dim], same dtype; heads_k divides heads.
      cu_seqlens_q, cu_seqlens_k: int32 [batch + 1], the offsets of the
        sequences: sequence b is q[cu_seqlens_q[b]:cu_seqlens_q[b + 1]]
        attending to k[cu_seqlens_k[b]:cu_seqlens_k[b + 1]]. Start at 0,
        nondecreasing, end at total_q (total_k). May be traced.
      max_seqlen_q, max_seqlen_k: Python ints bounding every sequence's
        length (they size the kernels' grid): a longer sequence is an error
        (concrete offsets) or a NaN output (traced ones).
      softmax_scale, is_causal, window_size, softcap, alibi_slopes
        ([heads] or [batch, heads]), deterministic, return_lse: as in
        flash_mha, applied per sequence (causal masks and windows aligned to
        each sequence's bottom-right corner).

    Returns out like q, or with return_lse (out, lse), lse [heads, total_q]
    float32. Differentiable in q, k, v (through out and lse); the offsets and
    slopes get no gradient. Not supported under vmap.
    """
    check_packed_qkv(q, k, v)
    softmax_scale, is_causal, window_size, softcap = check_options(softmax_scale, is_causal, window_size, softcap)
    deterministic = check_flag("deterministic", deterministic)
    return_lse = check_flag("return_lse", return_lse)
    max_seqlen_q = check_max_seqlen("max_seqlen_q", max_seqlen_q)
    max_seqlen_k = check_max_seqlen("max_seqlen_k", max_seqlen_k)
    cu_q = check_cu_seqlens("cu_seqlens_q", cu_seqlens_q, q.shape[0], max_seqlen_q)
    cu_k = check_cu_seqlens("cu_seqlens_k", cu_seqlens_k, k.shape[0], max_seqlen_k, batch=cu_q.shape[0] - 1)
    batch = cu_q.shape[0] - 1
    total_q, heads, head_dim = q.shape
    slopes = check_alibi_slopes(alibi_slopes, batch, heads)
    if softmax_scale is None:
        softmax_scale = head_dim ** -0.5
    has_alibi = slopes is not None
    slopes = jnp.zeros((batch, heads), jnp.float32) if slopes is None else \
        jax.lax.stop_gradient(jnp.broadcast_to(jnp.asarray(slopes, jnp.float32), (batch, heads)))
    padded = -head_dim % 8  # as in flash_mha: zero columns change nothing
    if padded:
        q, k, v = (jnp.pad(x, [(0, 0), (0, 0), (0, padded)]) for x in (q, k, v))
    _check_kernel_available(q)
    # Whatever the offsets, the kernels stay within the buffers.
    cu_q, cu_k = (jnp.clip(jax.lax.cummax(c), 0, n) for c, n in ((cu_q, total_q), (cu_k, k.shape[0])))
    options = _VarlenOptions(_Options(float(softmax_scale), is_causal, window_size, softcap, has_alibi,
                                      deterministic), max_seqlen_q, max_seqlen_k)
    out, lse = _flash_varlen(q, k, v, cu_q, cu_k, slopes, options)
    if padded:
        out = out[..., :head_dim]
    too_long = (jnp.max(jnp.diff(cu_q)) > max_seqlen_q) | (jnp.max(jnp.diff(cu_k)) > max_seqlen_k)
    out = jnp.where(too_long, jnp.nan, out)
    return (out, lse) if return_lse else out


class _VarlenOptions(NamedTuple):
    base: _Options
    max_seqlen_q: int
    max_seqlen_k: int

    def attributes(self, backward):
        attrs = self.base.attributes(backward)
        attrs["max_seqlen_q"] = np.int32(self.max_seqlen_q)
        attrs["max_seqlen_k"] = np.int32(self.max_seqlen_k)
        return attrs

    def reference(self, q, k, v, cu_q, cu_k, slopes):
        b = self.base
        return varlen_attention_reference(q, k, v, cu_q, cu_k, self.max_seqlen_k, b.softmax_scale, b.is_causal,
                                          b.window_size, b.softcap, alibi_slopes=slopes if b.has_alibi else None)


def _covered(cu_seqlens, total):
    """[total] bool: does the token belong to a sequence? The kernels write
    nothing for the others."""
    return sequence_positions(cu_seqlens, total)[0] >= 0


def _kernel_fwd(q, k, v, cu_q, cu_k, slopes, options):
    total_q, heads, _ = q.shape
    out, lse = jax.ffi.ffi_call(
        VARLEN_FWD_TARGET,
        (jax.ShapeDtypeStruct(q.shape, q.dtype), jax.ShapeDtypeStruct((heads, total_q), jnp.float32)),
    )(q, k, v, cu_q, cu_k, slopes, **options.attributes(backward=False))
    rows = _covered(cu_q, total_q)
    return jnp.where(rows[:, None, None], out, 0), jnp.where(rows[None, :], lse, jnp.inf)


def _kernel_bwd_call(dout, q, k, v, out, lse, cu_q, cu_k, slopes, options):
    total_q, heads, head_dim = q.shape
    deterministic = options.base.deterministic
    dq_accum, softmax_d = _binding.extension.varlen_bwd_workspace_elems(
        slopes.shape[0], total_q, heads, head_dim, deterministic, _workspace_num_sms() if deterministic else 0)
    expanded = jax.ShapeDtypeStruct((k.shape[0], heads, head_dim), q.dtype)
    dq, dk, dv, _, _ = jax.ffi.ffi_call(
        VARLEN_BWD_TARGET,
        (jax.ShapeDtypeStruct(q.shape, q.dtype), expanded, expanded,
         jax.ShapeDtypeStruct((dq_accum,), jnp.float32), jax.ShapeDtypeStruct((softmax_d,), jnp.float32)),
    )(dout, q, k, v, out, lse, cu_q, cu_k, slopes, **options.attributes(backward=True))
    rows_q, rows_k = _covered(cu_q, total_q)[:, None, None], _covered(cu_k, k.shape[0])[:, None, None]
    return jnp.where(rows_q, dq, 0), jnp.where(rows_k, dk, 0), jnp.where(rows_k, dv, 0)


def _forward(q, k, v, cu_q, cu_k, slopes, options):
    return jax.lax.platform_dependent(
        q, k, v, cu_q, cu_k, slopes,
        cuda=functools.partial(_kernel_fwd, options=options), default=options.reference)


def kernel_backward(dout, dlse, q, k, v, out, lse, cu_q, cu_k, slopes, options):
    """dq, dk, dv from the varlen backward kernel calls (one per cotangent), dk and dv
    summed over GQA groups; lse [heads, total_q]."""
    call = lambda dout, out, v: _kernel_bwd_call(dout, q, k, v, out, lse, cu_q, cu_k, slopes, options)
    dq, dk, dv = combine_backward_calls(call, dout, dlse, q, k, v, out, lse, lse_to_rows=jnp.transpose)
    return dq, sum_head_groups(dk, k), sum_head_groups(dv, v)


def cotangent_operands(dout, dlse, *operands):
    """(args, unpack): the operands led by dout and dlse where they are not None (the
    calls that take them, platform_dependent and vmap, take arrays only), and
    unpack(args) -> (dout or None, dlse or None, *operands)."""
    has_dout, has_dlse = dout is not None, dlse is not None

    def unpack(args):
        args = list(args)
        return (args.pop(0) if has_dout else None, args.pop(0) if has_dlse else None, *args)

    return ((dout,) if has_dout else ()) + ((dlse,) if has_dlse else ()) + operands, unpack


def _backward(dout, dlse, q, k, v, out, lse, cu_q, cu_k, slopes, options):
    """dq, dk, dv for cotangents dout of out and dlse of lse (None: zero; not both)."""
    args, unpack = cotangent_operands(dout, dlse, q, k, v, out, lse, cu_q, cu_k, slopes)

    def kernel(*args):
        return kernel_backward(*unpack(args), options)

    def reference(*args):
        dout, dlse, q, k, v, out, lse, cu_q, cu_k, slopes = unpack(args)
        (o, l), vjp = jax.vjp(lambda q, k, v: options.reference(q, k, v, cu_q, cu_k, slopes), q, k, v)
        return vjp((jnp.zeros_like(o) if dout is None else dout, jnp.zeros_like(l) if dlse is None else dlse))

    return tuple(jax.lax.platform_dependent(*args, cuda=kernel, default=reference))


@functools.partial(jax.custom_vjp, nondiff_argnums=(6,))
def _flash_varlen(q, k, v, cu_q, cu_k, slopes, options):
    return _forward(q, k, v, cu_q, cu_k, slopes, options)


def _flash_varlen_fwd(q, k, v, cu_q, cu_k, slopes, options):
    q, k, v, cu_q, cu_k, slopes = (x.value for x in (q, k, v, cu_q, cu_k, slopes))
    out, lse = _forward(q, k, v, cu_q, cu_k, slopes, options)
    return (out, lse), (q, k, v, cu_q, cu_k, slopes, out, lse)


def _flash_varlen_bwd(options, residuals, cotangents):
    q, k, v, cu_q, cu_k, slopes, out, lse = residuals
    dout, dlse = (None if isinstance(c, SymbolicZero) else c for c in cotangents)
    if dout is None and dlse is None:
        grads = (jnp.zeros_like(q), jnp.zeros_like(k), jnp.zeros_like(v))
    else:
        grads = _backward(dout, dlse, q, k, v, out, lse, cu_q, cu_k, slopes, options)
    return (*grads, None, None, None)  # offsets and slopes: no gradient


_flash_varlen.defvjp(_flash_varlen_fwd, _flash_varlen_bwd, symbolic_zeros=True)
