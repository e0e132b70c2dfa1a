"""What flash_mha hands XLA on CUDA, checked on any machine, and the extension's surface."""

import re

import jax
import jax.numpy as jnp
import pytest

# Lowered and run with bfloat16/128, the kernel every build has by default.
pytestmark = pytest.mark.default_kernels


def qkv(batch=2, seqlen=64, heads=4, heads_k=4, head_dim=128, dtype=jnp.bfloat16):
    q = jax.ShapeDtypeStruct((batch, seqlen, heads, head_dim), dtype)
    k = jax.ShapeDtypeStruct((batch, seqlen, heads_k, head_dim), dtype)
    return q, k, k


def cuda_hlo(fn, *args):
    return jax.jit(fn).trace(*args).lower(lowering_platforms=("cuda",)).as_text()


def custom_calls(hlo):
    return re.findall(r"stablehlo\.custom_call @(\w+)\((.*)", hlo)


def test_forward_lowers_to_one_custom_call(flash):
    fn = lambda q, k, v: flash.flash_mha(q, k, v, softmax_scale=0.5, is_causal=True, window_size=(7, -1))
    calls = custom_calls(cuda_hlo(fn, *qkv()))
    prefix = flash._binding.TARGET_PREFIX
    assert [name for name, _ in calls] == [f"{prefix}_fwd"]
    attrs = calls[0][1]
    for expected in ("is_causal = true", "softmax_scale = 5.000000e-01 : f32", "window_left = 7 : i32",
                     "window_right = -1 : i32", "softcap = 0.000000e+00 : f32"):
        assert expected in attrs, attrs
    assert "tensor<2x64x4x128xbf16>" in attrs and "tensor<2x4x64xf32>" in attrs


def test_gradient_lowers_to_forward_and_backward(flash):
    loss = lambda q, k, v: flash.flash_mha(q, k, v).astype(jnp.float32).sum()
    names = [name for name, _ in custom_calls(cuda_hlo(jax.grad(loss, argnums=(0, 1, 2)), *qkv(heads_k=2)))]
    prefix = flash._binding.TARGET_PREFIX
    assert names == [f"{prefix}_fwd", f"{prefix}_bwd"]


def test_vmap_folds_into_one_call(flash):
    q = jax.ShapeDtypeStruct((3, 2, 64, 4, 128), jnp.bfloat16)
    hlo = cuda_hlo(jax.vmap(flash.flash_mha), q, q, q)
    calls = custom_calls(hlo)
    assert len(calls) == 1 and "tensor<6x64x4x128xbf16>" in calls[0][1]


def test_export_for_cuda(flash):
    target = f"{flash._binding.TARGET_PREFIX}_fwd"
    exported = jax.export.export(
        jax.jit(flash.flash_mha), platforms=["cuda"],
        disabled_checks=[jax.export.DisabledSafetyCheck.custom_call(target)])(*qkv())
    assert exported.platforms == ("cuda",)
    assert target in exported.mlir_module()


def test_cpu_lowering_has_no_custom_call(flash):
    hlo = jax.jit(flash.flash_mha).trace(*qkv()).lower(lowering_platforms=("cpu",)).as_text()
    assert "custom_call" not in hlo


def test_extension_surface(flash):
    ext = flash._binding.extension
    targets = ext.registrations()
    assert set(targets) == {"fwd", "bwd", "varlen_fwd", "varlen_bwd", "kvcache_fwd"}
    assert all(type(c).__name__ == "PyCapsule" for c in targets.values())
    assert ext.abi_version() == 8
    counts = flash.launch_counts()
    assert set(counts) == {"fwd_cut", "bwd_cut", "uncut_for_scratch"}
    assert all(type(n) is int and n >= 0 for n in counts.values()), counts
    assert flash.build_config().startswith("kernels: ")
    # The default build (and CI) compiles bfloat16 with head_dim 128.
    assert flash.has_kernel("bfloat16", 128)
    assert flash.has_kernel("bfloat16", 120) == flash.has_kernel("bfloat16", 128)  # same bucket
    with pytest.raises(ValueError, match="dtype must be 'float16' or 'bfloat16'"):
        flash.has_kernel("float32", 128)
    # FlashAttention-2's dq_accum is [batch, round128(seqlen_q), heads, round32(head_dim)] and
    # its softmax_d [batch, heads, round128(seqlen_q)]; the Hopper backward's are
    # [batch, heads, padded, head_dim] and two [batch, heads, padded] with a counter per
    # (batch, head), padded the largest of round48, round64 and round80 of seqlen_q (here 160).
    # Each is the larger of the two.
    softmax_d = 2 * 4 * (2 * 160 + 1)
    assert tuple(ext.bwd_workspace_elems(2, 100, 4, 72)) == (2 * 128 * 4 * 96, softmax_d)
    assert tuple(ext.bwd_workspace_elems(2, 100, 4, 128)) == (2 * 4 * 160 * 128, softmax_d)
    assert tuple(ext.bwd_workspace_elems(2, 100, 4, 72, False, 132)) == (2 * 128 * 4 * 96, softmax_d)
    # Deterministic (FlashAttention-2's backward only): ceil(num_sms / (batch * heads)) copies
    # of its dq_accum, at least one.
    assert tuple(ext.bwd_workspace_elems(2, 100, 4, 72, True, 132)) == (17 * 2 * 128 * 4 * 96, softmax_d)
    assert tuple(ext.bwd_workspace_elems(2, 100, 4, 128, True, 4)) == (2 * 128 * 4 * 128, softmax_d)
