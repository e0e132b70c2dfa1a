"""Bad input raises a clear Python exception naming the argument (CPU)."""

import jax.numpy as jnp
import numpy as np
import pytest


def qkv(batch=2, seqlen_q=8, seqlen_k=8, heads=4, heads_k=4, head_dim=32, dtype=jnp.bfloat16):
    q = jnp.ones((batch, seqlen_q, heads, head_dim), dtype)
    k = jnp.ones((batch, seqlen_k, heads_k, head_dim), dtype)
    return q, k, k


BAD_INPUTS = [
    # (description, q, k, v, options, exception, message fragment)
    ("rank 3 q", lambda: (jnp.ones((8, 4, 32), jnp.bfloat16),) + qkv()[1:], {}, ValueError, "q must have rank 4"),
    ("rank 5 k", lambda: (qkv()[0], jnp.ones((1, 2, 8, 4, 32), jnp.bfloat16), qkv()[2]), {}, ValueError, "k must have rank 4"),
    ("float32", lambda: qkv(dtype=jnp.float32), {}, TypeError, "q has dtype float32"),
    ("int8 v", lambda: qkv()[:2] + (jnp.ones((2, 8, 4, 32), jnp.int8),), {}, TypeError, "v has dtype int8"),
    ("mixed dtypes", lambda: (qkv()[0].astype(jnp.float16),) + qkv()[1:], {}, TypeError, "share one dtype"),
    ("k/v shape mismatch", lambda: qkv()[:2] + (jnp.ones((2, 9, 4, 32), jnp.bfloat16),), {}, ValueError, "k and v must have the same shape"),
    ("batch mismatch", lambda: (jnp.ones((3, 8, 4, 32), jnp.bfloat16),) + qkv()[1:], {}, ValueError, "batch"),
    ("head_dim mismatch", lambda: (jnp.ones((2, 8, 4, 64), jnp.bfloat16),) + qkv()[1:], {}, ValueError, "head_dim"),
    ("head_dim > 256", lambda: qkv(head_dim=264), {}, ValueError, "head_dim must be in [1, 256]"),
    ("heads not divisible", lambda: qkv(heads=6, heads_k=4), {}, ValueError, "multiple of the heads of k"),
    ("zero-length seq", lambda: qkv(seqlen_q=0), {}, ValueError, "seqlen of q must be positive"),
    ("zero batch", lambda: qkv(batch=0), {}, ValueError, "batch must be positive"),
    ("window not a pair", lambda: qkv(), {"window_size": 4}, ValueError, "window_size must be a pair"),
    ("window < -1", lambda: qkv(), {"window_size": (-2, 0)}, ValueError, "window_size entries"),
    ("window float", lambda: qkv(), {"window_size": (1.5, 0)}, ValueError, "window_size entries"),
    ("nan scale", lambda: qkv(), {"softmax_scale": float("nan")}, ValueError, "softmax_scale"),
    ("string scale", lambda: qkv(), {"softmax_scale": "0.1"}, ValueError, "softmax_scale"),
    ("causal not bool", lambda: qkv(), {"is_causal": 1}, TypeError, "is_causal must be a bool"),
    ("negative softcap", lambda: qkv(), {"softcap": -1.0}, ValueError, "softcap"),
    ("not an array", lambda: ([[1.0]],) + qkv()[1:], {}, TypeError, "q must be an array"),
]


@pytest.mark.parametrize("case", BAD_INPUTS, ids=[c[0] for c in BAD_INPUTS])
def test_bad_input_raises(flash, case):
    _, make, options, exception, fragment = case
    with pytest.raises(exception, match=fragment.replace("[", r"\[").replace("]", r"\]")):
        flash.flash_mha(*make(), **options)


def test_bad_input_raises_under_jit(flash):
    import jax
    with pytest.raises(TypeError, match="q has dtype float32"):
        jax.jit(flash.flash_mha)(*qkv(dtype=jnp.float32))


def test_numpy_bool_causal_accepted(flash):
    q, k, v = qkv(head_dim=128)  # bfloat16/128: compiled into every build
    out = flash.flash_mha(q, k, v, is_causal=np.bool_(True))
    assert out.shape == q.shape


class _OldGpu:
    """A stand-in for a Turing GPU as jax.devices() describes one."""
    compute_capability = "7.5"
    device_kind = "Tesla T4"

    def __str__(self):
        return "cuda:0"


def test_gpu_older_than_ampere_is_refused(flash, monkeypatch):
    import jax
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    monkeypatch.setattr(jax, "devices", lambda *args: [_OldGpu()])
    with pytest.raises(ValueError, match=r"compute capability 8.0 or newer .* cuda:0 \(Tesla T4\) has compute "
                                         r"capability 7.5; use jax.nn.dot_product_attention"):
        flash.flash_mha(*qkv(head_dim=128))
    # The jax.nn-compatible adapter hands such calls to jax.nn instead.
    calls = []
    monkeypatch.setattr(jax.nn, "dot_product_attention", lambda *args, **kwargs: calls.append(kwargs) or args[0])
    q = qkv(head_dim=128)[0]
    flash.dot_product_attention(q, q, q, implementation="xla")
    assert calls and calls[0]["implementation"] == "xla"
