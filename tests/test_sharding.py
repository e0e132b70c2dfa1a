"""flash_mha on sharded inputs, and ring attention, on 8 CPU devices.

JAX must start with XLA_FLAGS=--xla_force_host_platform_device_count=8
(tests/conftest.py sets it); with fewer CPU devices these tests skip.

On CPU flash_mha runs the pure-JAX reference, so what these tests check is
the partitioning around it, the same on every platform:
  * numerics of sharded against unsharded calls, forward and gradients;
  * that XLA asked our partitioning rule (`_sharding._partition`, watched by
    a spy) and what the rule answered, and that the compiled program has no
    collective for batch/head sharding (a collective-permute ring for ring
    attention);
  * the CUDA lowering: on a 1-device mesh, and inside shard_map (ring
    attention), the kernels' custom calls with per-device shapes. On a
    multi-device mesh the kernel call is hidden in a CustomSPMDPartitioning
    call until XLA partitions the program at compile time, which needs a GPU;
    there we lower, for CUDA, the per-device function the rule handed XLA
    during a CPU compile, at the per-device shapes XLA would give it;
  * jax.export of a shard_map of flash_mha (the export route for sharded
    programs: the partitioning callback itself cannot be serialized).
Not checked here: compiling or running the partitioned program on GPUs.
"""

import math
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P


def cpu_devices():
    try:
        return jax.devices("cpu")
    except RuntimeError:
        return []


pytestmark = [
    pytest.mark.skipif(
        len(cpu_devices()) < 8,
        reason=f"needs 8 CPU devices, have {len(cpu_devices())}: start JAX with "
               "XLA_FLAGS=--xla_force_host_platform_device_count=8 (tests/conftest.py)"),
    pytest.mark.default_kernels,
]

COLLECTIVES = r"all-gather|all-to-all|all-reduce|reduce-scatter|collective-permute"


def mesh_of(shape, names, axis_type=AxisType.Auto):
    devices = cpu_devices()[:math.prod(shape)]
    return jax.make_mesh(shape, names, axis_types=(axis_type,) * len(names), devices=devices)


def qkv(rng, batch=4, seqlen=64, heads=8, heads_k=8, head_dim=128, seqlen_k=None):
    def x(*shape):
        return jnp.asarray(rng.standard_normal(shape), jnp.bfloat16)
    seqlen_k = seqlen_k or seqlen
    return x(batch, seqlen, heads, head_dim), x(batch, seqlen_k, heads_k, head_dim), x(batch, seqlen_k, heads_k, head_dim)


def assert_close(actual, expected, rel=2e-2):
    actual, expected = (np.asarray(x, np.float32) for x in (actual, expected))
    assert actual.shape == expected.shape
    err, scale = np.abs(actual - expected).max(), np.abs(expected).max()
    assert err <= rel * max(scale, 1e-3), f"max error {err} for values up to {scale}"


def full_spec(spec, ndim=4):
    """P('x') -> P('x', None, None, None): specs as JAX reports them vary in length."""
    return P(*(tuple(spec) + (None,) * (ndim - len(spec))))


def collectives(compiled_text):
    return sorted(set(re.findall(COLLECTIVES, compiled_text)))


def value_and_vjp(fn):
    """(q, k, v, dout) -> (out, (dq, dk, dv)): no loss reduction, so no all-reduce of our own."""
    def run(q, k, v, dout):
        out, vjp = jax.vjp(fn, q, k, v)
        return out, vjp(dout)
    return run


@pytest.fixture
def partitions(flash, monkeypatch):
    """Records every call of the partitioning rule: its input and chosen shardings, its per-device function."""
    calls = []
    rule = flash._sharding._partition

    def spy(fn, mesh, arg_shapes, result_shape):
        answer = rule(fn, mesh, arg_shapes, result_shape)
        kind = "forward" if len(jax.tree.leaves(result_shape)) == 2 else "backward"  # (out, lse) or (dq, dk, dv)
        calls.append(dict(kind=kind, given=[a.sharding.spec for a in arg_shapes], chosen=[s.spec for s in answer[3]],
                          shapes=[a.shape for a in arg_shapes], fn=answer[1], arg_shardings=answer[3]))
        return answer

    monkeypatch.setattr(flash._sharding, "_partition", spy)
    return calls


def forward_and_backward(partitions):
    """The rule's first forward and first backward call (a compile asks once per call site;
    another compile of the same program may ask again)."""
    assert {c["kind"] for c in partitions} == {"forward", "backward"}
    return tuple(next(c for c in partitions if c["kind"] == kind) for kind in ("forward", "backward"))


def run_sharded(flash, mesh, spec, q, k, v, dout, k_spec=None, **options):
    """Runs forward+vjp sharded and unsharded; returns (sharded results, unsharded results, compiled text)."""
    fn = jax.jit(value_and_vjp(lambda q, k, v: flash.flash_mha(q, k, v, **options)))
    put = lambda x, s: jax.device_put(x, NamedSharding(mesh, s))
    args = (put(q, spec), put(k, k_spec or spec), put(v, k_spec or spec), put(dout, spec))
    sharded = fn(*args)
    unsharded = jax.jit(value_and_vjp(lambda q, k, v: flash.flash_mha(q, k, v, **options)))(q, k, v, dout)
    return sharded, unsharded, fn.lower(*args).compile().as_text()


# --- Batch and head sharding: custom_partitioning ---------------------------

@pytest.mark.parametrize("spec", [P("x"), P(None, None, "x"), P("y", None, "x"), P(("y", "x"))],
                         ids=["batch", "heads", "batch+heads", "batch-over-both-axes"])
@pytest.mark.parametrize("heads_k", [8, 4], ids=["mha", "gqa"])
def test_batch_and_head_sharding_runs_locally(flash, partitions, rng, spec, heads_k):
    mesh = mesh_of((4, 2), ("x", "y"))
    q, k, v = qkv(rng, batch=8, heads_k=heads_k)
    dout = jnp.asarray(rng.standard_normal(q.shape), jnp.bfloat16)
    (out, grads), (ref, ref_grads), compiled = run_sharded(
        flash, mesh, spec, q, k, v, dout, is_causal=True, softcap=20.0)

    assert_close(out, ref)
    for g, r in zip(grads, ref_grads):
        assert_close(g, r)
    # The rule ran for the forward and the backward call and kept the sharding.
    expected = full_spec(spec)
    forward_and_backward(partitions)
    for call in partitions:
        assert call["given"][0] == expected
        assert all(s == expected for s in call["chosen"] if len(s) == 4), call["chosen"]
    assert all(full_spec(x.sharding.spec) == expected for x in (out, *grads))
    assert collectives(compiled) == []


def test_alibi_and_lse_sharded(flash, partitions, rng):
    """The rule's other operands: [batch, heads] ALiBi slopes, and the lse and its cotangent."""
    mesh = mesh_of((2, 4), ("x", "y"))
    spec = P("x", None, "y")
    q, k, v = qkv(rng, heads_k=4)
    slopes = jnp.asarray(rng.uniform(0.01, 0.5, (q.shape[0], q.shape[2])), jnp.float32)
    dout = jnp.asarray(rng.standard_normal(q.shape), jnp.bfloat16)
    dlse = jnp.asarray(rng.standard_normal((q.shape[0], q.shape[2], q.shape[1])), jnp.float32)

    def run(q, k, v, slopes, dout, dlse):
        attention = lambda q, k, v: flash.flash_mha(q, k, v, alibi_slopes=slopes, return_lse=True)
        (out, lse), vjp = jax.vjp(attention, q, k, v)
        return out, lse, vjp((dout, dlse))

    put = lambda x, s: jax.device_put(x, NamedSharding(mesh, s))
    args = (put(q, spec), put(k, spec), put(v, spec), put(slopes, P("x", "y")), put(dout, spec),
            put(dlse, P("x", "y")))
    fn = jax.jit(run)
    out, lse, grads = fn(*args)
    ref, ref_lse, ref_grads = jax.jit(run)(q, k, v, slopes, dout, dlse)
    assert_close(out, ref)
    assert_close(lse, ref_lse, rel=1e-5)
    for g, r in zip(grads, ref_grads):
        assert_close(g, r)
    forward, backward = forward_and_backward(partitions)
    assert forward["chosen"] == [P("x", None, "y", None)] * 3 + [P("x", "y")]
    # dout, q, k, v, out, lse, dlse, slopes
    assert backward["chosen"] == [P("x", None, "y", None)] * 5 + [P("x", "y", None)] * 2 + [P("x", "y")]
    assert collectives(fn.lower(*args).compile().as_text()) == []


@pytest.mark.parametrize("axis_type", [AxisType.Auto, AxisType.Explicit], ids=["auto", "explicit"])
def test_mesh_axis_types(flash, partitions, rng, axis_type):
    mesh = mesh_of((8,), ("x",), axis_type)
    q, k, v = qkv(rng, batch=8)
    dout = jnp.asarray(rng.standard_normal(q.shape), jnp.bfloat16)
    (out, grads), (ref, ref_grads), compiled = run_sharded(flash, mesh, P("x"), q, k, v, dout)
    assert_close(out, ref)
    for g, r in zip(grads, ref_grads):
        assert_close(g, r)
    forward_and_backward(partitions)
    assert collectives(compiled) == []


def test_gspmd_partitioner(flash, partitions, rng):
    """The same rule serves the older GSPMD propagation (infer_sharding_from_operands)."""
    previous = jax.config.jax_use_shardy_partitioner
    jax.config.update("jax_use_shardy_partitioner", False)
    try:
        mesh = mesh_of((2, 4), ("x", "y"))
        q, k, v = qkv(rng, heads_k=4)
        dout = jnp.asarray(rng.standard_normal(q.shape), jnp.bfloat16)
        (out, grads), (ref, ref_grads), compiled = run_sharded(flash, mesh, P("x", None, "y"), q, k, v, dout)
    finally:
        jax.config.update("jax_use_shardy_partitioner", previous)
    assert_close(out, ref)
    for g, r in zip(grads, ref_grads):
        assert_close(g, r)
    forward_and_backward(partitions)
    assert collectives(compiled) == []


def test_sequence_sharding_is_gathered(flash, partitions, rng):
    """The rule replicates the sequence (use ring attention to keep it split): correct, with an all-gather."""
    mesh = mesh_of((2, 4), ("x", "y"))
    q, k, v = qkv(rng)
    dout = jnp.asarray(rng.standard_normal(q.shape), jnp.bfloat16)
    (out, grads), (ref, ref_grads), compiled = run_sharded(
        flash, mesh, P("x", "y"), q, k, v, dout, is_causal=True)
    assert_close(out, ref)
    for g, r in zip(grads, ref_grads):
        assert_close(g, r)
    forward, _ = forward_and_backward(partitions)
    assert forward["given"][0] == P("x", "y", None, None)
    assert forward["chosen"][0] == P("x", None, None, None)
    assert "all-gather" in collectives(compiled)


def test_heads_split_in_whole_key_heads_only(flash, partitions, rng):
    """8 query heads over 4 devices, but only 2 key heads: the rule keeps the heads whole."""
    mesh = mesh_of((2, 4), ("x", "y"))
    q, k, v = qkv(rng, heads_k=2)
    dout = jnp.asarray(rng.standard_normal(q.shape), jnp.bfloat16)
    (out, grads), (ref, ref_grads), _ = run_sharded(
        flash, mesh, P("x", None, "y"), q, k, v, dout, k_spec=P("x"))
    assert_close(out, ref)
    for g, r in zip(grads, ref_grads):
        assert_close(g, r)
    forward, _ = forward_and_backward(partitions)
    assert forward["chosen"] == [P("x", None, None, None)] * 3


def test_rule_without_named_mesh_replicates(flash):
    """Shardings that name no mesh (no mesh context): the rule runs the whole call on every device."""
    device = cpu_devices()[0]
    single = jax.sharding.SingleDeviceSharding(device)
    args = [jax.ShapeDtypeStruct((2, 16, 4, 128), jnp.bfloat16, sharding=single)] * 3
    results = (jax.ShapeDtypeStruct((2, 16, 4, 128), jnp.bfloat16), jax.ShapeDtypeStruct((2, 4, 16), jnp.float32))
    fn = object()
    _, lower_fn, result_shardings, arg_shardings = flash._sharding._partition(fn, None, args, results)
    assert lower_fn is fn
    assert all(s.is_fully_replicated for s in (*result_shardings, *arg_shardings))


# --- The kernel path's lowering ----------------------------------------------

def cuda_text(fn, *args):
    return jax.jit(fn).trace(*args).lower(lowering_platforms=("cuda",)).as_text()


def kernel_calls(text, flash):
    return re.findall(rf"custom_call @({flash._binding.TARGET_PREFIX}_\w+)\((.*)", text)


def test_cuda_lowering_one_device_mesh(flash):
    mesh = mesh_of((1,), ("x",))
    q = jax.ShapeDtypeStruct((2, 64, 4, 128), jnp.bfloat16, sharding=NamedSharding(mesh, P("x")))
    calls = kernel_calls(cuda_text(flash.flash_mha, q, q, q), flash)
    assert [name for name, _ in calls] == [f"{flash._binding.TARGET_PREFIX}_fwd"]
    assert "tensor<2x64x4x128xbf16>" in calls[0][1]
    loss = lambda q, k, v: flash.flash_mha(q, k, v).astype(jnp.float32).sum()
    names = [name for name, _ in kernel_calls(cuda_text(jax.grad(loss, argnums=(0, 1, 2)), q, q, q), flash)]
    assert names == [f"{flash._binding.TARGET_PREFIX}_{n}" for n in ("fwd", "bwd")]


def test_export_sharded_through_shard_map(flash):
    """jax.export cannot serialize the partitioning callback; a shard_map of flash_mha exports,
    with the kernel called on the per-device block."""
    mesh = mesh_of((8,), ("x",))
    q = jax.ShapeDtypeStruct((8, 64, 4, 128), jnp.bfloat16, sharding=NamedSharding(mesh, P("x")))
    fn = jax.shard_map(flash.flash_mha, mesh=mesh, in_specs=(P("x"),) * 3, out_specs=P("x"), check_vma=False)
    target = f"{flash._binding.TARGET_PREFIX}_fwd"
    exported = jax.export.export(jax.jit(fn), platforms=["cuda"],
                                 disabled_checks=[jax.export.DisabledSafetyCheck.custom_call(target)])(q, q, q)
    calls = kernel_calls(exported.mlir_module(), flash)
    assert [name for name, _ in calls] == [target] and "tensor<1x64x4x128xbf16>" in calls[0][1]
    assert exported.nr_devices == 8


def test_cuda_lowering_sharded_over_batch_and_heads(flash, partitions):
    mesh = mesh_of((2, 4), ("x", "y"))
    sharding = NamedSharding(mesh, P("x", None, "y"))
    q = jax.ShapeDtypeStruct((4, 64, 8, 128), jnp.bfloat16, sharding=sharding)
    k = jax.ShapeDtypeStruct((4, 64, 4, 128), jnp.bfloat16, sharding=sharding)
    fn = lambda q, k, v: flash.flash_mha(q, k, v, is_causal=True)

    # Before XLA partitions the program, the kernel is inside the custom partitioning call, whose
    # Shardy rule keeps batch and heads and replicates the sequence and head_dim.
    text = cuda_text(fn, q, k, k)
    assert kernel_calls(text, flash) == []
    (rule,) = re.findall(r"custom_call @CustomSPMDPartitioning.*sdy.sharding_rule = (#sdy.op_sharding_rule<.*?custom>)", text)
    assert "([i, j, k, l], [i, m, n, l], [i, m, n, l])->([i, j, k, l], [i, k, j])" in rule
    assert "need_replication={j, l, m}" in rule

    # What the partitioner gets from the rule at compile time (a CPU compile here) is a per-device
    # function; lowered for CUDA at the per-device shapes it is one kernel call on the local block.
    loss = lambda q, k, v: fn(q, k, v).astype(jnp.float32).sum()
    jax.jit(jax.grad(loss, argnums=(0, 1, 2))).lower(
        *(jax.device_put(jnp.zeros(x.shape, x.dtype), x.sharding) for x in (q, k, k))).compile()
    forward, backward = forward_and_backward(partitions)
    for call, kernel, local_result in ((forward, "fwd", "tensor<2x64x2x128xbf16>"),
                                       (backward, "bwd", "tensor<2x64x1x128xbf16>")):
        local = [jax.ShapeDtypeStruct(s.shard_shape(shape), jnp.float32 if len(shape) == 3 else jnp.bfloat16)
                 for s, shape in zip(call["arg_shardings"], call["shapes"])]
        calls = kernel_calls(cuda_text(call["fn"], *local), flash)
        assert [name for name, _ in calls] == [f"{flash._binding.TARGET_PREFIX}_{kernel}"]
        assert "tensor<2x64x2x128xbf16>" in calls[0][1] and local_result in calls[0][1]
        assert "is_causal = true" in calls[0][1]


# --- Ring attention over the sequence -----------------------------------------

def ring_and_reference(flash, mesh, q, k, v, dout, **options):
    ring = lambda q, k, v: flash.ring_flash_mha_sharded(q, k, v, mesh, "s", **options)
    whole = lambda q, k, v: flash.flash_mha(q, k, v, **options)
    fn = jax.jit(value_and_vjp(ring))
    return fn(q, k, v, dout), jax.jit(value_and_vjp(whole))(q, k, v, dout), fn.lower(q, k, v, dout).compile().as_text()


@pytest.mark.parametrize("ways", [2, 4, 8])
@pytest.mark.parametrize("is_causal", [False, True], ids=["full", "causal"])
def test_ring_attention_matches_whole_sequence(flash, rng, ways, is_causal):
    mesh = mesh_of((ways,), ("s",))
    q, k, v = qkv(rng, batch=2, seqlen=64, heads=4, heads_k=2)
    dout = jnp.asarray(rng.standard_normal(q.shape), jnp.bfloat16)
    (out, grads), (ref, ref_grads), compiled = ring_and_reference(flash, mesh, q, k, v, dout, is_causal=is_causal)
    assert_close(out, ref)
    for g, r in zip(grads, ref_grads):
        assert_close(g, r)
    assert full_spec(out.sharding.spec) == P(None, "s", None, None)
    assert collectives(compiled) == ["collective-permute"]


@pytest.mark.parametrize("is_causal", [False, True], ids=["full", "causal"])
def test_ring_attention_with_batch_axis_and_options(flash, rng, is_causal):
    """Sequence over 4 devices, batch over 2; softcap, a head_dim the kernels pad, and for
    the non-causal case more keys than queries."""
    mesh = mesh_of((2, 4), ("b", "s"))
    q, k, v = qkv(rng, batch=2, seqlen=32, heads=4, heads_k=4, head_dim=124,
                  seqlen_k=32 if is_causal else 64)
    dout = jnp.asarray(rng.standard_normal(q.shape), jnp.bfloat16)
    options = dict(is_causal=is_causal, softcap=5.0, softmax_scale=0.2)
    ring = lambda q, k, v: flash.ring_flash_mha_sharded(q, k, v, mesh, "s", batch_axis="b", **options)
    out, grads = jax.jit(value_and_vjp(ring))(q, k, v, dout)
    ref, ref_grads = jax.jit(value_and_vjp(lambda q, k, v: flash.flash_mha(q, k, v, **options)))(q, k, v, dout)
    assert_close(out, ref)
    for g, r in zip(grads, ref_grads):
        assert_close(g, r)
    assert full_spec(out.sharding.spec) == P("b", "s", None, None)


def test_ring_attention_inside_shard_map(flash, rng):
    """ring_flash_mha in one's own shard_map, with the sequence over one axis and heads over another."""
    mesh = mesh_of((4, 2), ("s", "h"))
    spec = P(None, "s", "h")
    ring = jax.shard_map(lambda q, k, v: flash.ring_flash_mha(q, k, v, "s", is_causal=True),
                         mesh=mesh, in_specs=(spec,) * 3, out_specs=spec, check_vma=False)
    q, k, v = qkv(rng, batch=2, seqlen=64, heads=4, heads_k=2)
    dout = jnp.asarray(rng.standard_normal(q.shape), jnp.bfloat16)
    put = lambda x: jax.device_put(x, NamedSharding(mesh, spec))
    out, grads = jax.jit(value_and_vjp(ring))(*map(put, (q, k, v, dout)))
    ref, ref_grads = jax.jit(value_and_vjp(lambda q, k, v: flash.flash_mha(q, k, v, is_causal=True)))(q, k, v, dout)
    assert_close(out, ref)
    for g, r in zip(grads, ref_grads):
        assert_close(g, r)


def test_ring_attention_cuda_lowering(flash):
    """Inside shard_map the kernels are called directly, on per-device blocks: the diagonal block
    causal, the others full, the key/value blocks passed on with collective_permute."""
    mesh = mesh_of((2, 4), ("b", "s"))
    sharding = NamedSharding(mesh, P("b", "s"))
    q = jax.ShapeDtypeStruct((4, 256, 8, 128), jnp.bfloat16, sharding=sharding)
    k = jax.ShapeDtypeStruct((4, 256, 2, 128), jnp.bfloat16, sharding=sharding)
    ring = lambda q, k, v: flash.ring_flash_mha_sharded(q, k, v, mesh, "s", batch_axis="b", is_causal=True,
                                                        deterministic=True)
    prefix = flash._binding.TARGET_PREFIX

    text = cuda_text(ring, q, k, k)
    calls = kernel_calls(text, flash)
    assert {name for name, _ in calls} == {f"{prefix}_fwd"}
    assert all("tensor<2x64x8x128xbf16>" in attrs and "tensor<2x64x2x128xbf16>" in attrs for _, attrs in calls)
    assert {"is_causal = true" in attrs for _, attrs in calls} == {True, False}
    assert "collective_permute" in text and "all_gather" not in text

    loss = lambda q, k, v: ring(q, k, v).astype(jnp.float32).sum()
    calls = kernel_calls(cuda_text(jax.grad(loss, argnums=(0, 1, 2)), q, k, k), flash)
    assert {name for name, _ in calls} == {f"{prefix}_fwd", f"{prefix}_bwd"}
    backward = [attrs for name, attrs in calls if name == f"{prefix}_bwd"]
    assert {"is_causal = true" in attrs for attrs in backward} == {True, False}
    assert all("deterministic = true" in attrs for attrs in backward)


def test_ring_attention_checks(flash, rng):
    mesh = mesh_of((2,), ("s",))
    q, k, v = qkv(rng, batch=2, seqlen=32, heads=4, heads_k=4, seqlen_k=64)
    with pytest.raises(ValueError, match="causal ring attention needs equal query and key blocks"):
        flash.ring_flash_mha_sharded(q, k, v, mesh, "s", is_causal=True)
    with pytest.raises(TypeError, match="is_causal must be a bool"):
        flash.ring_flash_mha_sharded(q, k, v, mesh, "s", is_causal=1)
