"""flash_mha: the FlashAttention kernels as a differentiable JAX function.

On CUDA the forward and backward passes are XLA FFI calls into the binding's
handlers; on every other platform the same function runs the pure-JAX
reference, so code written against flash_mha runs (slowly) on CPU too.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from . import _binding
from ._reference import attention_reference
from ._validation import check_options, check_qkv

FWD_TARGET = f"{_binding.TARGET_PREFIX}_fwd"
BWD_TARGET = f"{_binding.TARGET_PREFIX}_bwd"


def _register():
    for name, capsule in _binding.extension.registrations().items():
        jax.ffi.register_ffi_target(f"{_binding.TARGET_PREFIX}_{name}", capsule, platform="CUDA")


_register()


def flash_mha(q, k, v, softmax_scale=None, is_causal=False, window_size=(-1, -1), softcap=0.0):
    """Multi-head attention softmax(q k^T * scale) v with FlashAttention kernels.

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

    Returns [batch, seqlen_q, heads, head_dim] like q. Rows that see no key
    (possible with windows, or causal with seqlen_q > seqlen_k) are zero.
    """
    check_qkv(q, k, v)
    softmax_scale, is_causal, window_size, softcap = check_options(
        softmax_scale, is_causal, window_size, softcap)
    head_dim = q.shape[-1]
    if softmax_scale is None:
        softmax_scale = head_dim ** -0.5
    # The kernels take head dims in multiples of 8: zero columns change
    # neither q k^T nor the kept columns of the output.
    padded = -head_dim % 8
    if padded:
        pad = [(0, 0)] * 3 + [(0, padded)]
        q, k, v = (jnp.pad(x, pad) for x in (q, k, v))
    _check_kernel_available(q)
    out = _flash(q, k, v, softmax_scale, is_causal, window_size, softcap)
    return out[..., :head_dim] if padded else out


def _check_kernel_available(q):
    """Fails early, in Python, when we would run on a GPU this build has no kernel for."""
    if jax.default_backend() != "gpu":
        return
    dtype, head_dim = jnp.dtype(q.dtype).name, q.shape[-1]
    if not _binding.extension.has_kernel(dtype, head_dim):
        raise ValueError(
            f"flash_mha: this build of {_binding.PACKAGE} has no kernel for {dtype} with head_dim "
            f"{head_dim} ({_binding.extension.build_config()}); rebuild with the kernels you need "
            f"(see README: --//cpp:head_dims, --//cpp:dtypes)")


def _options(softmax_scale, is_causal, window_size, softcap):
    """The handlers' attributes, typed as they decode them."""
    return dict(softmax_scale=np.float32(softmax_scale), is_causal=bool(is_causal),
                window_left=np.int32(window_size[0]), window_right=np.int32(window_size[1]),
                softcap=np.float32(softcap))


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


def _kernel_fwd(q, k, v, options):
    batch, seqlen_q, heads, _ = q.shape
    out, lse = jax.ffi.ffi_call(
        FWD_TARGET,
        (jax.ShapeDtypeStruct(q.shape, q.dtype), jax.ShapeDtypeStruct((batch, heads, seqlen_q), jnp.float32)),
    )(q, k, v, **options)
    return out, lse


def _kernel_bwd(dout, q, k, v, out, lse, options):
    batch, seqlen_q, heads, head_dim = q.shape
    dq_accum, softmax_d = _binding.extension.bwd_workspace_elems(batch, seqlen_q, heads, head_dim)
    expanded = (batch, k.shape[1], heads, head_dim)
    dq, dk, dv, _, _ = jax.ffi.ffi_call(
        BWD_TARGET,
        (jax.ShapeDtypeStruct(q.shape, q.dtype), jax.ShapeDtypeStruct(expanded, q.dtype),
         jax.ShapeDtypeStruct(expanded, q.dtype), jax.ShapeDtypeStruct((dq_accum,), jnp.float32),
         jax.ShapeDtypeStruct((softmax_d,), jnp.float32)),
    )(dout, q, k, v, out, lse, **options)
    # The kernel writes dk, dv per query head; with GQA each key head's
    # gradient is the sum over its group of query heads.
    groups = heads // k.shape[2]
    if groups > 1:
        def reduce(x):
            return x.reshape(batch, k.shape[1], k.shape[2], groups, head_dim).astype(jnp.float32).sum(3)
        dk, dv = reduce(dk).astype(k.dtype), reduce(dv).astype(v.dtype)
    return dq, dk, dv


def _fwd_impl(q, k, v, softmax_scale, is_causal, window_size, softcap):
    options = _options(softmax_scale, is_causal, window_size, softcap)

    def reference(q, k, v):
        return attention_reference(q, k, v, softmax_scale, is_causal, window_size, softcap)

    fn = _fold_vmap(lambda q, k, v: jax.lax.platform_dependent(
        q, k, v, cuda=functools.partial(_kernel_fwd, options=options), default=reference))
    return fn(q, k, v)


def _bwd_impl(dout, q, k, v, out, lse, softmax_scale, is_causal, window_size, softcap):
    options = _options(softmax_scale, is_causal, window_size, softcap)

    def reference(dout, q, k, v, out, lse):
        _, vjp = jax.vjp(lambda q, k, v: attention_reference(
            q, k, v, softmax_scale, is_causal, window_size, softcap)[0], q, k, v)
        return vjp(dout)

    fn = _fold_vmap(lambda *args: jax.lax.platform_dependent(
        *args, cuda=functools.partial(_kernel_bwd, options=options), default=reference))
    return tuple(fn(dout, q, k, v, out, lse))


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4, 5, 6))
def _flash(q, k, v, softmax_scale, is_causal, window_size, softcap):
    return _fwd_impl(q, k, v, softmax_scale, is_causal, window_size, softcap)[0]


def _flash_fwd(q, k, v, softmax_scale, is_causal, window_size, softcap):
    out, lse = _fwd_impl(q, k, v, softmax_scale, is_causal, window_size, softcap)
    return out, (q, k, v, out, lse)


def _flash_bwd(softmax_scale, is_causal, window_size, softcap, residuals, dout):
    q, k, v, out, lse = residuals
    return _bwd_impl(dout, q, k, v, out, lse, softmax_scale, is_causal, window_size, softcap)


_flash.defvjp(_flash_fwd, _flash_bwd)
