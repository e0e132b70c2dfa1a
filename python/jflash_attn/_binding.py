"""jflash_attn's binding: the Rust (PyO3) extension."""

from . import _jflash_attn_rust as extension

NAME = "rust"
PACKAGE = "jflash_attn"
TARGET_PREFIX = "jflash_attn_rust"
