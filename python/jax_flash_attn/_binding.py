"""jax_flash_attn's binding: the C++ (pybind11) extension."""

from . import _jax_flash_attn_cpp as extension

NAME = "cpp"
PACKAGE = "jax_flash_attn"
TARGET_PREFIX = "jax_flash_attn_cpp"
