"""Padded rows as packed sequences: sequence lengths and segment ids.

Two front ends over flash_mha_varlen's kernels for data laid out padded,
[batch, seq, heads, head_dim]:

* dot_product_attention's `query_seq_lengths` / `key_value_seq_lengths`
  (jax.nn.dot_product_attention's semantics), through `lengths_attention`;
* `flash_mha_segments`: self-attention over packed rows in which each run of
  equal `segment_ids` is a sequence of its own (`segment_ids_from_lengths`
  turns jax.nn-style lengths into such ids).

Neither gathers tokens. The [batch, seq] rows are flattened as they lie into
the varlen layout ([batch * seq] tokens) and cu_seqlens mark the boundaries
inside each row; every row contributes a fixed number of sequences, so that
the offsets have a static shape:

  lengths   2 per row: sequence 2b is the row's first Lq_b queries with its
            first K_b keys (K_b = Lk_b, or min(Lk_b, Lq_b) when causal);
            sequence 2b + 1 is the rest of the row (the padding), computed
            and then zeroed, as jax.nn zeroes padded query rows.
  segments  max_segments per row: the row's runs in order, then empty
            sequences; a row with more runs than max_segments would merge
            its last runs, so its output is NaN instead.

The kernels take the same arguments as flash_mha_varlen's (max_seqlen_q and
max_seqlen_k are the row lengths); off CUDA the same semantics run as the
varlen reference applied row by row (batch * seq_q * seq_k, not
(batch * seq)**2, memory). Under vmap the mapped axis is folded into the
batch (one kernel call), as flash_mha does; unlike flash_mha these calls are
not partitioned over devices under jit (a batch-sharded input is gathered).
"""

import functools
import numbers
from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
from jax.custom_derivatives import SymbolicZero

from . import _varlen
from ._attention import _check_kernel_available, _fold_vmap, _Options, _plan_common
from ._validation import check_alibi_slopes, check_flag, check_options, check_qkv, concrete

# The kernels launch one grid row per sequence: CUDA's grid.y, at most 65535.
MAX_SEQUENCES = 65535


class _RowSpec(NamedTuple):
    """The static description of a padded-rows call (hashable: a nondiff argument of the custom VJP)."""
    layout: str                          # "lengths" or "segments"
    varlen: _varlen._VarlenOptions       # max_seqlen_q, max_seqlen_k: the rows' seq_q, seq_k
    per_row: int                         # sequences per row: 2 (lengths) or max_segments
    checked: bool = True                 # lengths: exactness known to hold (no lax.cond)
    has_q_lengths: bool = False          # lengths: for the jax.nn fallback
    has_kv_lengths: bool = False
    nn_scale: Optional[float] = None     # lengths: jax.nn's `scale` argument, as the caller gave it
    implementation: Optional[str] = None  # lengths: jax.nn's `implementation`, as the caller gave it


# --- Offsets -------------------------------------------------------------------


def _lengths_layout(lq, lk, seqlen_q, seqlen_k, is_causal, xp=jnp):
    """The lengths layout of rows with lq valid queries and lk valid keys (int [batch] each).

    Returns (cu_q, cu_k, ok, valid): the row-local offsets [batch, 3], whether
    the kernels compute exactly jax.nn's attention, and the [batch, seq_q]
    rows jax.nn does not zero. jax.nn's padding mask is `index < length`, so
    lengths are clipped to [0, seq]. A valid row (t < Lq) sees keys s < Lk,
    and with is_causal s <= t (top-left aligned). The kernels align a causal
    mask to each sequence's bottom-right corner: with K keys, query t of Lq
    sees s <= t + K - Lq, which is s <= t for K = Lq, and is then jax.nn's mask
    exactly when no key s >= Lk becomes visible, i.e. Lk >= Lq (K = min(Lk,
    Lq) = Lq; K = Lk < Lq would shift the diagonal). Where a valid row sees no
    key (Lk = 0 < Lq), jax.nn averages all seq_k values and the kernels give
    zero. Hence ok = all(Lk >= Lq) with is_causal, all(Lk > 0 or Lq = 0)
    without. xp: jnp, or np for concrete lengths.
    """
    lq = xp.clip(lq, 0, seqlen_q).astype(xp.int32)
    lk = xp.clip(lk, 0, seqlen_k).astype(xp.int32)
    kb = xp.minimum(lk, lq) if is_causal else lk
    zeros = xp.zeros_like(lq)
    cu_q = xp.stack([zeros, lq, zeros + seqlen_q], axis=1)
    cu_k = xp.stack([zeros, kb, zeros + seqlen_k], axis=1)
    ok = xp.all(lk >= lq) if is_causal else xp.all((lk > 0) | (lq == 0))
    valid = xp.arange(seqlen_q)[None, :] < lq[:, None]
    return cu_q, cu_k, ok, valid


def segment_runs(segment_ids, xp=jnp):
    """For segment ids [batch, seq]: (run index of each token [batch, seq], runs per row [batch]),
    int32; a run is a maximal stretch of equal consecutive ids."""
    ids = segment_ids
    boundary = xp.concatenate([xp.ones((ids.shape[0], 1), bool), ids[:, 1:] != ids[:, :-1]], axis=1)
    run = xp.cumsum(boundary, axis=1).astype(xp.int32) - 1
    return run, run[:, -1] + 1


def _segment_layout(segment_ids, max_segments):
    """Row-local offsets [batch, max_segments + 1]: run r of row b starts at cu[b, r]; unused
    slots are empty sequences at the row's end. A row with more runs than max_segments has its
    runs max_segments - 1 onward merged into its last slot (flash_mha_segments turns it NaN)."""
    run, _ = segment_runs(segment_ids)
    seqlen = segment_ids.shape[1]
    slots = jnp.arange(max_segments, dtype=jnp.int32)
    starts = jax.vmap(lambda r: jnp.searchsorted(r, slots, side="left"))(run).astype(jnp.int32)
    return jnp.concatenate([starts, jnp.full((run.shape[0], 1), seqlen, jnp.int32)], axis=1)


def packed_offsets(cu_rows, seqlen):
    """Row-local offsets [batch, n + 1] (0 .. seqlen) -> flash_mha_varlen's cu_seqlens
    [batch * n + 1] for the rows flattened to [batch * seqlen] tokens."""
    batch, n = cu_rows.shape[0], cu_rows.shape[1] - 1
    starts = cu_rows[:, :n] + (jnp.arange(batch, dtype=jnp.int32) * seqlen)[:, None]
    return jnp.concatenate([starts.reshape(-1), jnp.full((1,), batch * seqlen, jnp.int32)])


# --- The attention over rows: kernels on CUDA, the row-wise reference elsewhere -----------------


def _pad_head_dim(*xs):
    """The kernels take head dims in multiples of 8: zero columns change nothing."""
    padded = -xs[0].shape[-1] % 8
    if not padded:
        return xs
    return tuple(jnp.pad(x, [(0, 0)] * (x.ndim - 1) + [(0, padded)]) for x in xs)


def _kernel_forward(spec, q, k, v, slopes, cu_q, cu_k):
    batch, seqlen_q, heads, head_dim = q.shape
    q, k, v = _pad_head_dim(q, k, v)
    flat = lambda x: x.reshape((-1,) + x.shape[2:])
    out, lse = _varlen._kernel_fwd(flat(q), flat(k), flat(v), packed_offsets(cu_q, seqlen_q),
                                   packed_offsets(cu_k, k.shape[1]), jnp.repeat(slopes, spec.per_row, axis=0),
                                   spec.varlen)
    out = out.reshape(q.shape)[..., :head_dim]
    return out, jnp.swapaxes(lse.reshape(heads, batch, seqlen_q), 0, 1)


def _reference_forward(spec, q, k, v, slopes, cu_q, cu_k):
    per_row = jnp.broadcast_to(slopes[:, None, :], (slopes.shape[0], spec.per_row, slopes.shape[1]))
    return jax.vmap(spec.varlen.reference)(q, k, v, cu_q, cu_k, per_row)


def _attend(spec, q, k, v, slopes, cu_q, cu_k):
    """(out, lse [batch, heads, seq_q]) of the rows' sequences."""
    return tuple(jax.lax.platform_dependent(q, k, v, slopes, cu_q, cu_k,
                                            cuda=functools.partial(_kernel_forward, spec),
                                            default=functools.partial(_reference_forward, spec)))


def _attend_backward(spec, dout, dlse, q, k, v, slopes, out, lse, cu_q, cu_k):
    """dq, dk, dv of _attend for cotangents dout and dlse (None: zero; not both)."""
    args, unpack = _varlen.cotangent_operands(dout, dlse, q, k, v, slopes, out, lse, cu_q, cu_k)

    def kernel(*args):
        dout, dlse, q, k, v, slopes, out, lse, cu_q, cu_k = unpack(args)
        batch, seqlen_q, heads, head_dim = q.shape
        seqlen_k = k.shape[1]
        if dout is not None:
            q, k, v, out, dout = _pad_head_dim(q, k, v, out, dout)
        else:
            q, k, v, out = _pad_head_dim(q, k, v, out)
        flat = lambda x: None if x is None else x.reshape((-1,) + x.shape[2:])
        q, k, v, out, dout = (flat(x) for x in (q, k, v, out, dout))
        to_heads = lambda x: None if x is None else jnp.swapaxes(x, 0, 1).reshape(heads, -1)  # [heads, total_q]
        lse, dlse = to_heads(lse), to_heads(dlse)
        cq, ck = packed_offsets(cu_q, seqlen_q), packed_offsets(cu_k, seqlen_k)
        dq, dk, dv = _varlen.kernel_backward(dout, dlse, q, k, v, out, lse, cq, ck,
                                             jnp.repeat(slopes, spec.per_row, axis=0), spec.varlen)
        unflat = lambda x, s: x.reshape((batch, s) + x.shape[1:])[..., :head_dim]
        return unflat(dq, seqlen_q), unflat(dk, seqlen_k), unflat(dv, seqlen_k)

    def reference(*args):
        dout, dlse, q, k, v, slopes, out, lse, cu_q, cu_k = unpack(args)
        (o, l), vjp = jax.vjp(lambda q, k, v: _reference_forward(spec, q, k, v, slopes, cu_q, cu_k), q, k, v)
        return vjp((jnp.zeros_like(o) if dout is None else dout, jnp.zeros_like(l) if dlse is None else dlse))

    return tuple(jax.lax.platform_dependent(*args, cuda=kernel, default=reference))


def _nn_attention(spec, q, k, v, lq, lk):
    """jax.nn.dot_product_attention as the caller asked for it (the lengths path's fallback)."""
    return jax.nn.dot_product_attention(
        q, k, v, scale=spec.nn_scale, is_causal=spec.varlen.base.is_causal,
        query_seq_lengths=lq if spec.has_q_lengths else None,
        key_value_seq_lengths=lk if spec.has_kv_lengths else None, implementation=spec.implementation)


def _rows_forward(spec, q, k, v, slopes, *ints):
    """(out, lse) for one call; every operand has the batch as its leading axis (for _fold_vmap)."""
    if spec.layout == "segments":
        (ids,) = ints
        cu = _segment_layout(ids, spec.per_row)
        return _attend(spec, q, k, v, slopes, cu, cu)
    lq, lk = ints
    cu_q, cu_k, ok, valid = _lengths_layout(lq, lk, q.shape[1], k.shape[1], spec.varlen.base.is_causal)

    def kernel(q, k, v):
        out, lse = _attend(spec, q, k, v, slopes, cu_q, cu_k)
        return jnp.where(valid[:, :, None, None], out, jnp.zeros((), out.dtype)), lse

    if spec.checked:
        return kernel(q, k, v)

    def fallback(q, k, v):
        return _nn_attention(spec, q, k, v, lq, lk), jnp.zeros((q.shape[0], q.shape[2], q.shape[1]), jnp.float32)

    return tuple(jax.lax.cond(ok, kernel, fallback, q, k, v))


def _rows_backward(spec, dout, dlse, q, k, v, slopes, out, lse, *ints):
    """dq, dk, dv for _rows_forward (dout, dlse: None for zero, not both)."""
    if spec.layout == "segments":
        (ids,) = ints
        cu = _segment_layout(ids, spec.per_row)
        return _attend_backward(spec, dout, dlse, q, k, v, slopes, out, lse, cu, cu)
    lq, lk = ints
    cu_q, cu_k, ok, valid = _lengths_layout(lq, lk, q.shape[1], k.shape[1], spec.varlen.base.is_causal)
    if dout is None:  # only the lse's cotangent, which no caller sees on this path
        dout = jnp.zeros_like(out)

    def kernel(dout, q, k, v):
        # The forward zeroed the rows after Lq: their cotangent does not reach the kernels' output.
        dout = jnp.where(valid[:, :, None, None], dout, jnp.zeros((), dout.dtype))
        return _attend_backward(spec, dout, dlse, q, k, v, slopes, out, lse, cu_q, cu_k)

    if spec.checked:
        return kernel(dout, q, k, v)

    def fallback(dout, q, k, v):
        _, vjp = jax.vjp(lambda q, k, v: _nn_attention(spec, q, k, v, lq, lk), q, k, v)
        return vjp(dout)

    return tuple(jax.lax.cond(ok, kernel, fallback, dout, q, k, v))


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _rows(spec, q, k, v, slopes, ints):
    return _fold_vmap(functools.partial(_rows_forward, spec))(q, k, v, slopes, *ints)


def _rows_fwd(spec, q, k, v, slopes, ints):
    # symbolic_zeros: the arguments come as CustomVJPPrimal.
    q, k, v, slopes = (x.value for x in (q, k, v, slopes))
    ints = tuple(x.value for x in ints)
    out, lse = _fold_vmap(functools.partial(_rows_forward, spec))(q, k, v, slopes, *ints)
    return (out, lse), (q, k, v, slopes, ints, out, lse)


def _rows_bwd(spec, residuals, cotangents):
    q, k, v, slopes, ints, out, lse = residuals
    dout, dlse = (None if isinstance(c, SymbolicZero) else c for c in cotangents)
    if dout is None and dlse is None:
        return jnp.zeros_like(q), jnp.zeros_like(k), jnp.zeros_like(v), None, None
    args, unpack = _varlen.cotangent_operands(dout, dlse, q, k, v, slopes, out, lse, *ints)
    dq, dk, dv = _fold_vmap(lambda *args: _rows_backward(spec, *unpack(args)))(*args)
    return dq, dk, dv, None, None  # slopes (constants, as in flash_mha) and the integer operands


_rows.defvjp(_rows_fwd, _rows_bwd, symbolic_zeros=True)


# --- jax.nn.dot_product_attention's sequence lengths ---------------------------------------------


def lengths_attention(query, key, value, scale, is_causal, query_seq_lengths, key_value_seq_lengths,
                      implementation):
    """dot_product_attention with sequence lengths (no bias, mask, window or residual) on the
    kernels, or None when they cannot compute it (the caller falls back to jax.nn).

    Exactness (see _lengths_layout): causal needs Lk_b >= Lq_b for every row
    (clipped lengths), non-causal Lk_b > 0 wherever Lq_b > 0. Concrete lengths
    decide it here; traced ones through lax.cond, whose other branch is
    jax.nn.dot_product_attention itself, so the result is always jax.nn's.
    """
    plan = _plan_common(query, key, value, None, None, scale, is_causal)
    if plan is None:
        return None
    q, k, v, softmax_scale = plan
    batch, seqlen_q, heads, head_dim = q.shape
    seqlen_k = k.shape[1]
    if 2 * batch > MAX_SEQUENCES:
        return None
    lengths, known = [], []
    for given, full in ((query_seq_lengths, seqlen_q), (key_value_seq_lengths, seqlen_k)):
        if given is None:
            lengths.append(jnp.full((batch,), full, jnp.int32))
            known.append(np.full((batch,), full, np.int32))
            continue
        # Concrete values are read from what the caller gave: under jit, even jnp.asarray of a
        # numpy array is traced.
        known.append(concrete(given))
        given = jnp.asarray(given)  # as jax.nn does, which checks the rest (we leave errors to it)
        if given.shape != (batch,) or given.dtype != jnp.int32:
            return None
        lengths.append(given)
    lq, lk = lengths
    checked = all(c is not None for c in known)
    if checked and not _lengths_layout(*known, seqlen_q, seqlen_k, bool(is_causal), xp=np)[2]:
        return None
    if softmax_scale is None:
        softmax_scale = head_dim ** -0.5
    options = _Options(float(softmax_scale), bool(is_causal), (-1, -1), 0.0, False, False)
    spec = _RowSpec("lengths", _varlen._VarlenOptions(options, seqlen_q, seqlen_k), 2, checked=checked,
                    has_q_lengths=query_seq_lengths is not None,
                    has_kv_lengths=key_value_seq_lengths is not None,
                    nn_scale=scale, implementation=implementation)
    slopes = jnp.zeros((batch, heads), jnp.float32)
    out, _ = _rows(spec, q, k, v, slopes, (lq, lk))
    return out.reshape(query.shape)


# --- Segment ids -----------------------------------------------------------------------------------


def _renamed(fn, *args):
    """A _validation check with flash_mha_segments' name in its messages."""
    try:
        return fn(*args)
    except (TypeError, ValueError) as e:
        raise type(e)(str(e).replace("flash_mha:", "flash_mha_segments:")) from None


def _check_segment_ids(segment_ids, batch, seqlen):
    if not hasattr(segment_ids, "shape") or not hasattr(segment_ids, "dtype"):
        raise TypeError(f"flash_mha_segments: segment_ids must be an integer array of shape [batch, seq], "
                        f"got {type(segment_ids).__name__}")
    dtype = jnp.dtype(segment_ids.dtype)
    if not (jnp.issubdtype(dtype, jnp.integer) or dtype == jnp.dtype(bool)):
        raise TypeError(f"flash_mha_segments: segment_ids must have an integer dtype (int32), got {dtype.name}")
    if tuple(segment_ids.shape) != (batch, seqlen):
        raise ValueError(f"flash_mha_segments: segment_ids must have shape [batch, seq] = ({batch}, {seqlen}) "
                         f"like q's first two axes, got {tuple(segment_ids.shape)}")


def _check_max_segments(max_segments, segment_ids, batch, seqlen):
    """Checks segment_ids and returns max_segments as an int in [1, seqlen]: as given, or
    counted from concrete segment_ids (the caller's object: under jit, even jnp.asarray of a
    numpy array is traced)."""
    _check_segment_ids(segment_ids, batch, seqlen)
    ids = concrete(segment_ids)
    runs = None if ids is None else segment_runs(ids, xp=np)[1]
    if max_segments is None:
        if runs is None:
            raise ValueError("flash_mha_segments: max_segments must be given (a Python int bounding the runs "
                             "of equal segment ids in each row) when segment_ids is traced")
        max_segments = int(runs.max())
    elif isinstance(max_segments, (bool, np.bool_)) or not isinstance(max_segments, numbers.Integral) \
            or not 0 < max_segments < 2**31:
        raise ValueError(f"flash_mha_segments: max_segments must be None or an int >= 1 (a static bound on the "
                         f"runs per row), got {max_segments!r}")
    elif runs is not None and runs.max() > max_segments:
        row = int(np.argmax(runs))
        raise ValueError(f"flash_mha_segments: segment_ids row {row} has {int(runs[row])} runs of equal ids, "
                         f"more than max_segments {max_segments}")
    max_segments = min(int(max_segments), seqlen)  # a row has at most seqlen runs
    if batch * max_segments > MAX_SEQUENCES:
        raise ValueError(f"flash_mha_segments: batch * max_segments = {batch} * {max_segments} sequences exceed "
                         f"the kernels' {MAX_SEQUENCES}; lower max_segments or split the batch")
    return max_segments


def flash_mha_segments(q, k, v, segment_ids, max_segments=None, softmax_scale=None, is_causal=False,
                       window_size=(-1, -1), softcap=0.0, alibi_slopes=None, deterministic=False,
                       return_lse=False):
    """Self-attention over packed rows: each run of equal segment ids is a sequence of its own.

    A token attends only to the tokens of its run (a maximal stretch of equal
    consecutive ids in its row), with the causal mask, window and ALiBi of
    flash_mha applied within the run (runs are square, so bottom-right and
    top-left alignment agree). Runs are told apart by position, not by value:
    ids [7, 7, 3, 3, 7] are three sequences. Padding is no exception: a run of
    padding ids attends within itself, and its rows are whatever that gives;
    mask them yourself (e.g. jnp.where(ids[..., None, None] != 0, out, 0)).

    It runs flash_mha_varlen's kernels over the [batch * seq] tokens as they
    lie, with cu_seqlens at the runs' starts (no gather or scatter of tokens).

    Args:
      q: [batch, seq, heads, head_dim], float16 or bfloat16.
      k, v: [batch, seq, heads_k, head_dim] (the same seq), same dtype; heads_k
        divides heads.
      segment_ids: integer [batch, seq] (e.g. int32); may be traced.
      max_segments: a Python int bounding the runs in each row (it sizes the
        offsets: batch * max_segments sequences, at most 65535). None counts
        them when segment_ids is concrete; a ValueError when it is traced.
        Concrete ids with more runs in a row are a ValueError; with traced ids
        such a row's output (and lse) is NaN, and the other rows are exact.
      softmax_scale, is_causal, window_size, softcap, alibi_slopes ([heads] or
        [batch, heads]: per row), deterministic, return_lse: as in flash_mha,
        applied per run.

    Returns out like q, or with return_lse (out, lse), lse [batch, heads, seq]
    float32 (with ALiBi and is_causal, the kernels' slope * key position
    within the run). Differentiable in q, k, v (through out and lse);
    segment_ids and slopes get no gradient. vmap folds the mapped axis into
    the batch.
    """
    for name, x in (("q", q), ("k", k), ("v", v)):
        if hasattr(x, "ndim") and x.ndim != 4:
            raise ValueError(f"flash_mha_segments: {name} must have rank 4 [batch, seq, heads, head_dim], "
                             f"got shape {tuple(x.shape)}")
    _renamed(check_qkv, q, k, v)
    batch, seqlen, heads, head_dim = q.shape
    if k.shape[1] != seqlen:
        raise ValueError(f"flash_mha_segments: is self-attention over packed rows: k and v must have q's seq "
                         f"({seqlen}), got {k.shape[1]}")
    softmax_scale, is_causal, window_size, softcap = _renamed(check_options, softmax_scale, is_causal, window_size,
                                                              softcap)
    deterministic = _renamed(check_flag, "deterministic", deterministic)
    return_lse = _renamed(check_flag, "return_lse", return_lse)
    max_segments = _check_max_segments(max_segments, segment_ids, batch, seqlen)
    ids = jnp.asarray(segment_ids)
    slopes = _renamed(check_alibi_slopes, alibi_slopes, batch, heads)
    if softmax_scale is None:
        softmax_scale = head_dim ** -0.5
    has_alibi = slopes is not None
    slopes = jnp.zeros((batch, heads), jnp.float32) if slopes is None else \
        jax.lax.stop_gradient(jnp.broadcast_to(jnp.asarray(slopes, jnp.float32), (batch, heads)))
    _check_kernel_available(jax.ShapeDtypeStruct((batch, seqlen, heads, head_dim + -head_dim % 8), q.dtype))
    options = _Options(float(softmax_scale), is_causal, window_size, softcap, has_alibi, deterministic)
    spec = _RowSpec("segments", _varlen._VarlenOptions(options, seqlen, seqlen), max_segments)
    out, lse = _rows(spec, q, k, v, slopes, (ids,))
    too_many = segment_runs(ids)[1] > max_segments
    out = jnp.where(too_many[:, None, None, None], jnp.array(jnp.nan, out.dtype), out)
    if not return_lse:
        return out
    return out, jnp.where(too_many[:, None, None], jnp.nan, lse)


def segment_ids_from_lengths(lengths, seqlen):
    """jax.nn-style sequence lengths [batch] -> segment ids int32 [batch, seqlen]: 1 where
    t < lengths[b] (jax.nn's padding mask: lengths <= 0 mark no token, >= seqlen all),
    0 after. Each row has at most 2 runs (max_segments=2).

    flash_mha_segments(q, k, v, ids, 2, is_causal=c), with the padding rows
    zeroed (jnp.where(ids[..., None, None] == 1, out, 0)), is
    jax.nn.dot_product_attention(q, k, v, is_causal=c, query_seq_lengths=lengths,
    key_value_seq_lengths=lengths) for self-attention.
    """
    if isinstance(seqlen, (bool, np.bool_)) or not isinstance(seqlen, numbers.Integral) or seqlen < 1:
        raise ValueError(f"segment_ids_from_lengths: seqlen must be an int >= 1, got {seqlen!r}")
    if not hasattr(lengths, "shape") or not hasattr(lengths, "dtype"):
        lengths = np.asarray(lengths)
    if not jnp.issubdtype(jnp.dtype(lengths.dtype), jnp.integer) or lengths.ndim != 1:
        raise ValueError(f"segment_ids_from_lengths: lengths must be integers of shape [batch], got "
                         f"{jnp.dtype(lengths.dtype).name} {tuple(lengths.shape)}")
    return (jnp.arange(seqlen, dtype=jnp.int32)[None, :] < jnp.asarray(lengths)[:, None]).astype(jnp.int32)
