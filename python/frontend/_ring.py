"""Ring attention: flash_mha over a sequence split across devices.

Each device keeps its block of queries and passes its key/value block round a
ring of devices (`jax.lax.ppermute`), one step per device. Every step runs the
attention kernel on (local queries, visiting keys) and merges the result into
a running output with the blocks' log-sum-exps, so the full [seq, seq] score
matrix never exists and no device ever holds more than two key/value blocks.

Backward (a custom_vjp, not autodiff through the loop: the kernels have no
derivative with respect to their log-sum-exp output) goes round the ring once
more. With the global output and the global log-sum-exp, the backward kernel
of one block yields exactly that block's share of dq, dk, dv (softmax
probabilities exp(s - lse) and rowsum(dout * out) are then the global ones).
dq accumulates locally; dk, dv accumulate in float32 while travelling with
their key/value block and go home after the last step.
"""

import functools

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec as P

from . import _attention
from ._reference import attention_mask
from ._validation import check_flag, check_options, check_qkv


def ring_flash_mha(q, k, v, axis_name, softmax_scale=None, is_causal=False, softcap=0.0,
                   deterministic=False):
    """flash_mha over a sequence split along mesh axis `axis_name`; call inside shard_map.

    Args:
      q: this device's block of queries [batch, seqlen_q / n, heads, head_dim],
        where n is the size of `axis_name` and device i (jax.lax.axis_index)
        holds the i-th block of the sequence.
      k, v: this device's key/value blocks [batch, seqlen_k / n, heads_k, head_dim].
      axis_name: the mesh axis (or tuple of axes) the sequence is split over.
      softmax_scale, is_causal, softcap, deterministic: as in flash_mha.
        Causal attention needs seqlen_q == seqlen_k; key blocks after the
        query block are skipped, the diagonal block is causal, earlier blocks
        are full.

    Sliding windows, ALiBi and return_lse are not supported. Returns this
    device's output block, like q: flash_mha of the whole sequence, split.
    """
    check_qkv(q, k, v)
    softmax_scale, is_causal, _, softcap = check_options(softmax_scale, is_causal, (-1, -1), softcap)
    deterministic = check_flag("deterministic", deterministic)
    if is_causal and q.shape[1] != k.shape[1]:
        raise ValueError(
            f"ring_flash_mha: causal ring attention needs equal query and key blocks, got seqlen "
            f"{q.shape[1]} for q and {k.shape[1]} for k")
    head_dim = q.shape[-1]
    if softmax_scale is None:
        softmax_scale = head_dim ** -0.5
    padded = -head_dim % 8  # as in flash_mha: the kernels take multiples of 8
    if padded:
        pad = [(0, 0)] * 3 + [(0, padded)]
        q, k, v = (jnp.pad(x, pad) for x in (q, k, v))
    _attention._check_kernel_available(q)
    out = _ring(q, k, v, axis_name, softmax_scale, is_causal, softcap, deterministic)
    return out[..., :head_dim] if padded else out


def ring_flash_mha_sharded(q, k, v, mesh, seq_axis, *, batch_axis=None, head_axis=None, **options):
    """ring_flash_mha on global arrays: shard_map over `mesh`, the sequence split along `seq_axis`.

    q, k, v are [batch, seqlen, heads, head_dim] as for flash_mha; batch_axis
    and head_axis optionally split the batch and the heads too (heads_k must
    be divisible by the head axis size). `options` are ring_flash_mha's.
    Returns the output sharded as P(batch_axis, seq_axis, head_axis, None).
    """
    spec = P(batch_axis, seq_axis, head_axis, None)
    fn = jax.shard_map(functools.partial(ring_flash_mha, axis_name=seq_axis, **options),
                       mesh=mesh, in_specs=(spec, spec, spec), out_specs=spec, check_vma=False)
    # Inputs laid out otherwise are resharded (under jit: a sharding constraint).
    return fn(*(jax.device_put(x, NamedSharding(mesh, spec)) for x in (q, k, v)))


def _ring_geometry(axis_name):
    n = jax.lax.axis_size(axis_name)
    return n, jax.lax.axis_index(axis_name), [(i, (i + 1) % n) for i in range(n)]


def _seen(step, me):
    """Whether the key block that reaches this device at `step` (block me - step) is in its past."""
    return step <= me


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4, 5, 6, 7))
def _ring(q, k, v, axis_name, softmax_scale, is_causal, softcap, deterministic):
    del deterministic  # the backward's
    return _ring_forward(q, k, v, axis_name, softmax_scale, is_causal, softcap)[0]


def _ring_forward(q, k, v, axis_name, softmax_scale, is_causal, softcap):
    """(out, lse) of q against every key block of the ring."""
    n, me, perm = _ring_geometry(axis_name)

    def block(k, v, causal):
        return _attention._fwd_impl(q, k, v, softmax_scale=softmax_scale, is_causal=causal,
                                    window_size=(-1, -1), softcap=softcap)

    def step(s, k, v, acc, lse):
        if is_causal:
            out_b, lse_b = jax.lax.cond(
                _seen(s, me), lambda: block(k, v, False),
                lambda: (jnp.zeros_like(q), jnp.full_like(lse, -jnp.inf)))
        else:
            out_b, lse_b = block(k, v, False)
        # Merge two softmax-normalized partial results by their log-sum-exps.
        # `lse` is finite here: every query sees its own block's keys.
        new = jnp.logaddexp(lse, lse_b)
        weight = lambda x: jnp.exp(x - new).transpose(0, 2, 1)[..., None]  # [b, h, s] -> [b, s, h, 1]
        return acc * weight(lse) + out_b.astype(jnp.float32) * weight(lse_b), new

    # Step 0: the device's own block, the diagonal of a causal mask.
    out, lse = block(k, v, is_causal)
    acc = out.astype(jnp.float32)
    if n > 1:
        def body(s, carry):
            k, v, acc, lse = carry
            k_next, v_next = jax.lax.ppermute((k, v), axis_name, perm)  # overlaps with this step
            acc, lse = step(s, k, v, acc, lse)
            return k_next, v_next, acc, lse

        k, v = jax.lax.ppermute((k, v), axis_name, perm)
        k, v, acc, lse = jax.lax.fori_loop(1, n - 1, body, (k, v, acc, lse))
        acc, lse = step(n - 1, k, v, acc, lse)
    return acc.astype(q.dtype), lse


def _ring_fwd(q, k, v, axis_name, softmax_scale, is_causal, softcap, deterministic):
    del deterministic
    out, lse = _ring_forward(q, k, v, axis_name, softmax_scale, is_causal, softcap)
    return out, (q, k, v, out, lse)


def _ring_bwd(axis_name, softmax_scale, is_causal, softcap, deterministic, residuals, dout):
    q, k, v, out, lse = residuals
    n, me, perm = _ring_geometry(axis_name)
    f32 = lambda xs: tuple(x.astype(jnp.float32) for x in xs)

    def block(k, v, causal):
        return f32(_block_bwd(dout, q, k, v, out, lse, softmax_scale, causal, softcap, deterministic))

    def step(s, k, v):
        if is_causal:
            return jax.lax.cond(_seen(s, me), lambda: block(k, v, False),
                                lambda: f32((jnp.zeros_like(q), jnp.zeros_like(k), jnp.zeros_like(v))))
        return block(k, v, False)

    dq, dk, dv = block(k, v, is_causal)
    if n > 1:
        def one(s, k, v, dq, dk, dv):
            dq_b, dk_b, dv_b = step(s, k, v)
            # dk, dv of the block this device now holds, from the devices it visited before.
            dk, dv = jax.lax.ppermute((dk, dv), axis_name, perm)
            return dq + dq_b, dk + dk_b, dv + dv_b

        def body(s, carry):
            k, v, dq, dk, dv = carry
            k_next, v_next = jax.lax.ppermute((k, v), axis_name, perm)
            return (k_next, v_next) + one(s, k, v, dq, dk, dv)

        k, v = jax.lax.ppermute((k, v), axis_name, perm)
        k, v, dq, dk, dv = jax.lax.fori_loop(1, n - 1, body, (k, v, dq, dk, dv))
        dq, dk, dv = one(n - 1, k, v, dq, dk, dv)
        # This device holds block me + 1 now; send it home.
        dk, dv = jax.lax.ppermute((dk, dv), axis_name, perm)
    return dq.astype(q.dtype), dk.astype(k.dtype), dv.astype(v.dtype)


_ring.defvjp(_ring_fwd, _ring_bwd)


def _block_bwd(dout, q, k, v, out, lse, softmax_scale, is_causal, softcap, deterministic):
    """One key block's share of (dq, dk, dv), given the output and lse over all blocks.

    On CUDA this is the backward kernel (it reads `out` and `lse`). The
    default branch computes the same thing in plain JAX: flash_mha's own
    reference backward recomputes the softmax of its one block, which would
    normalize over that block only.
    """
    def kernel(dout, q, k, v, out, lse):
        return _attention._bwd_impl(dout, q, k, v, out, lse, softmax_scale=softmax_scale,
                                    is_causal=is_causal, window_size=(-1, -1), softcap=softcap,
                                    deterministic=deterministic)

    def reference(dout, q, k, v, out, lse):
        return _reference_block_bwd(dout, q, k, v, out, lse, softmax_scale, is_causal, softcap)

    return tuple(jax.lax.platform_dependent(dout, q, k, v, out, lse, cuda=kernel, default=reference))


def _reference_block_bwd(dout, q, k, v, out, lse, softmax_scale, is_causal, softcap):
    """FlashAttention's backward for one block in float32: p = exp(s - lse), ds = p * (dp - rowsum(dout * out))."""
    dtypes = q.dtype, k.dtype, v.dtype
    dout, q, k, v, out = (x.astype(jnp.float32) for x in (dout, q, k, v, out))
    batch, seqlen_k, heads_k, head_dim = k.shape
    groups = q.shape[2] // heads_k
    hi = jax.lax.Precision.HIGHEST

    def scores(q, k):
        s = jnp.einsum("bqhd,bkhd->bhqk", q, jnp.repeat(k, groups, axis=2), precision=hi) * softmax_scale
        return softcap * jnp.tanh(s / softcap) if softcap > 0 else s

    s, scores_vjp = jax.vjp(scores, q, k)
    mask = attention_mask(q.shape[1], seqlen_k, is_causal)
    p = jnp.where(mask, jnp.exp(s - lse[..., None]), 0.0)  # lse is +inf for rows without keys: p = 0
    dv = jnp.einsum("bhqk,bqhd->bkhd", p, dout, precision=hi)
    dv = dv.reshape(batch, seqlen_k, heads_k, groups, head_dim).sum(3)
    dp = jnp.einsum("bqhd,bkhd->bhqk", dout, jnp.repeat(v, groups, axis=2), precision=hi)
    delta = jnp.einsum("bqhd,bqhd->bhq", dout, out, precision=hi)[..., None]
    dq, dk = scores_vjp(p * (dp - delta))
    return tuple(x.astype(dt) for x, dt in zip((dq, dk, dv), dtypes))
