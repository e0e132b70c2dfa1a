"""Batch and head partitioning of the attention calls under jit.

`local_per_shard(fn)` wraps one of the front end's per-call functions
(_attention._forward's `(q, k, v[, slopes]) -> (out, lse)` and
_attention._backward's `([dout,] q, k, v, out, lse[, dlse][, slopes]) ->
(dq, dk, dv)`, each then wrapped by _fold_vmap) in
`jax.experimental.custom_partitioning`. When jit partitions a program over
several devices, XLA's SPMD partitioner asks `_partition` how to split the
call: it keeps the batch and head sharding of the inputs, replicates the
sequence and head_dim dimensions (attention mixes every key of a sequence
into every query), and runs `fn` itself, the FFI call on CUDA, on each
device's local block. So inputs sharded over batch and/or heads need no
all-gather, forward or backward. Sharding over the sequence is gathered;
ring attention (`ring_flash_mha`) is the way to keep the sequence split.

The arrays are recognized by rank, so one rule serves the forward and the
backward:
  rank 4: [batch, seqlen, heads, head_dim]. The first rank-4 operand is
          q-like [batch, seqlen_q, heads, head_dim]; a rank-4 array with
          another (seqlen, heads) is k-like [batch, seqlen_k, heads_k, head_dim].
  rank 3: [batch, heads, seqlen_q] (the log-sum-exp).
  rank 2: [batch, heads] (per-head parameters).
With grouped-query attention (heads = groups * heads_k) the heads are split
only in whole key heads: the number of head shards must divide heads_k.

Outside a multi-device partitioned program (one device, eager, or fully
manual inside shard_map) custom_partitioning inlines `fn` unchanged.

Limits: the partitioning happens in XLA's compiler through a Python callback,
so jax.export cannot serialize a multi-device sharded flash_mha ("serialization
of host_callbacks is not yet implemented"); export a shard_map of flash_mha
instead, where the kernel call is inlined. Under vmap the mapped axis is folded
into the batch by a reshape, which keeps a batch sharding only if it is on the
mapped axis.
"""

import math

import jax
import numpy as np
from jax.experimental.custom_partitioning import custom_partitioning
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P


def local_per_shard(fn):
    """fn(*arrays) -> tuple of arrays, partitioned over batch and heads (see the module doc)."""
    wrapped = custom_partitioning(fn)
    # `_partition` is looked up at call time so that tests can watch it run.
    wrapped.def_partition(
        partition=lambda mesh, arg_shapes, result_shape: _partition(fn, mesh, arg_shapes, result_shape),
        infer_sharding_from_operands=lambda mesh, arg_shapes, result_shape: _infer(arg_shapes, result_shape),
        sharding_rule=_sharding_rule)
    return wrapped


def _layout(shapes):
    """(sq, heads, heads_k) and per-array roles 'q', 'k', 'lse', 'bh' for rank-4/3/2 shapes."""
    q_shape = next((s for s in shapes if len(s) == 4), None)
    if q_shape is None:
        raise ValueError(f"flash_mha partitioning: no [batch, seq, heads, head_dim] operand in {shapes}")
    _, sq, heads, _ = q_shape
    heads_k = heads
    roles = []
    for s in shapes:
        if len(s) == 4:
            if tuple(s[1:3]) == (sq, heads):
                roles.append("q")
            else:
                roles.append("k")
                heads_k = s[2]
        elif len(s) in (2, 3):
            roles.append({3: "lse", 2: "bh"}[len(s)])
        else:
            raise ValueError(f"flash_mha partitioning: unexpected operand shape {tuple(s)}")
    return sq, heads, heads_k, roles


def _sharding_rule(mesh, operand_types, result_types):
    """Shardy's view of the call, e.g. 'b sq hk d, b sk hk d, b sk hk d -> b sq hk d, b hk sq'."""
    del mesh
    operands = [tuple(t.shape) for t in operand_types]
    results = [tuple(t.shape) for t in result_types]
    _, heads, heads_k, roles = _layout(operands + results)
    # With grouped-query attention the query and key heads are separate
    # factors: a compound (hk g) lets Shardy give k a sub-axis of q's head axis,
    # which `_partition` could not read. `_partition` splits k's heads itself.
    q_heads = "h" if heads != heads_k else "hk"
    factors = {"q": f"b sq {q_heads} d", "k": "b sk hk d", "lse": f"b {q_heads} sq", "bh": f"b {q_heads}"}
    names = [factors[r] for r in roles]
    rule = ", ".join(names[:len(operands)]) + " -> " + ", ".join(names[len(operands):])
    # Shardy wants the rule's own factors, in the order they first appear.
    order = list(dict.fromkeys(rule.replace("(", " ").replace(")", " ").replace(",", " ").split()))
    return rule, dict(need_replication_factors=tuple(f for f in order if f in ("sq", "sk", "d")))


def _axes(entry):
    if entry is None:
        return ()
    return tuple(entry) if isinstance(entry, (tuple, list)) else (entry,)


def _kept_shardings(arg_shapes, result_shape):
    """The shardings the call runs under: q's batch and head axes, everything else replicated.

    Returns (mesh, arg shardings, result shardings), or None when the operands
    carry no mesh (GSPMD shardings without a named mesh).
    """
    results = jax.tree.leaves(result_shape)
    shapes = [a.shape for a in arg_shapes] + [r.shape for r in results]
    _, _, heads_k, roles = _layout(shapes)
    q = arg_shapes[roles.index("q")]
    if not isinstance(q.sharding, NamedSharding):
        return None
    mesh = q.sharding.mesh
    spec = tuple(q.sharding.spec) + (None,) * (4 - len(q.sharding.spec))

    def keep(axes, size):
        n = math.prod(mesh.shape[a] for a in axes)
        if not axes or size % n:
            return None
        return axes[0] if len(axes) == 1 else axes

    batch = keep(_axes(spec[0]), q.shape[0])
    heads = keep(_axes(spec[2]), heads_k)  # whole key heads per device
    specs = {"q": P(batch, None, heads, None), "k": P(batch, None, heads, None),
             "lse": P(batch, heads, None), "bh": P(batch, heads)}
    shardings = [NamedSharding(mesh, specs[r]) for r in roles]
    arg_shardings = tuple(shardings[:len(arg_shapes)])
    result_shardings = jax.tree.unflatten(jax.tree.structure(result_shape), shardings[len(arg_shapes):])
    return mesh, arg_shardings, result_shardings


def _replicated(shapes, arg_shapes):
    # A replicated sharding does not depend on the order of its devices.
    devices = np.array(sorted(arg_shapes[0].sharding.device_set, key=lambda d: d.id))
    replicated = NamedSharding(Mesh(devices, ("devices",)), P())
    return jax.tree.map(lambda _: replicated, shapes)


def _partition(fn, mesh, arg_shapes, result_shape):
    kept = _kept_shardings(arg_shapes, result_shape)
    if kept is None:  # no named mesh: run the whole call on every device
        return mesh, fn, _replicated(result_shape, arg_shapes), _replicated(tuple(arg_shapes), arg_shapes)
    mesh, arg_shardings, result_shardings = kept
    return mesh, fn, result_shardings, arg_shardings


def _infer(arg_shapes, result_shape):
    """The result shardings for the GSPMD partitioner (jax_use_shardy_partitioner=False)."""
    kept = _kept_shardings(arg_shapes, result_shape)
    if kept is None:
        return _replicated(result_shape, arg_shapes)
    return kept[2]
