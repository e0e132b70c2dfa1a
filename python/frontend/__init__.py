"""FlashAttention kernels for JAX.

    from jax_flash_attn import flash_mha   # or: from jflash_attn import flash_mha
    out = flash_mha(q, k, v, is_causal=True)   # [batch, seq, heads, head_dim]
    out, lse = flash_mha(q, k, v, alibi_slopes=slopes, deterministic=True, return_lse=True)

dot_product_attention (jax.nn.dot_product_attention's signature) and
flax_attention_fn (an attention_fn for flax's MultiHeadDotProductAttention)
run the kernels where they compute the same attention and fall back to JAX's
and flax's own implementations elsewhere; dot_product_attention's sequence
lengths run on flash_mha_varlen's kernels, as does flash_mha_segments
(self-attention over packed rows whose runs of equal segment ids are separate
sequences).

Both packages share this front end and differ only in the binding that hands
the kernels to XLA (C++/pybind11 in jax_flash_attn, Rust/PyO3 in jflash_attn).
"""

from . import _binding
from ._attention import dot_product_attention, flash_mha, flax_attention_fn
from ._kvcache import flash_mha_with_kvcache
from ._reference import attention_reference, kvcache_attention_reference, varlen_attention_reference
from ._ring import ring_flash_mha, ring_flash_mha_sharded
from ._seqlens import flash_mha_segments, segment_ids_from_lengths
from ._varlen import flash_mha_varlen

__version__ = "0.1.0"
BINDING = _binding.NAME


def build_config():
    """Which kernels this build compiled, e.g. 'kernels: bfloat16/128'."""
    return _binding.extension.build_config()


def has_kernel(dtype, head_dim):
    """Whether this build has a kernel for the dtype name and head dim."""
    return _binding.extension.has_kernel(str(dtype), int(head_dim))


def num_sms(device=-1):
    """The SM count of CUDA device `device` (-1: the largest over the visible GPUs),
    which sizes the deterministic backward's workspace; RuntimeError without a GPU."""
    return _binding.extension.num_sms(int(device))


def launch_counts():
    """This process's Hopper kernel launches so far, as a dict: 'fwd_cut' and 'bwd_cut', those
    whose last round ran cut into pieces so that no SM idles through it, and
    'uncut_for_scratch', those that would have but XLA gave too little scratch (they ran
    correct, only slower). A diagnostic: the last should stay 0."""
    return _binding.extension.launch_counts()


__all__ = ["flash_mha", "flash_mha_varlen", "flash_mha_segments", "segment_ids_from_lengths", "flash_mha_with_kvcache", "ring_flash_mha", "ring_flash_mha_sharded",
           "attention_reference", "varlen_attention_reference", "kvcache_attention_reference",
           "dot_product_attention", "flax_attention_fn", "build_config", "has_kernel", "num_sms", "launch_counts", "BINDING"]
