"""FlashAttention kernels for JAX.

    from jax_flash_attn import flash_mha   # or: from jflash_attn import flash_mha
    out = flash_mha(q, k, v, is_causal=True)   # [batch, seq, heads, head_dim]

Both packages share this front end and differ only in the binding that hands
the kernels to XLA (C++/pybind11 in jax_flash_attn, Rust/PyO3 in jflash_attn).
"""

from . import _binding
from ._attention import flash_mha
from ._reference import attention_reference

__version__ = "0.1.0"
BINDING = _binding.NAME


def build_config():
    """Which kernels this build compiled, e.g. 'kernels: bfloat16/128'."""
    return _binding.extension.build_config()


def has_kernel(dtype, head_dim):
    """Whether this build has a kernel for the dtype name and head dim."""
    return _binding.extension.has_kernel(str(dtype), int(head_dim))


__all__ = ["flash_mha", "attention_reference", "build_config", "has_kernel", "BINDING"]
