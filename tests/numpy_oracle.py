"""Independent float64 numpy attention: the oracle the CPU tests hold the reference to."""

import numpy as np


def numpy_attention(q, k, v, scale, mask, softcap=0.0, slopes=None, bias=None):
    """(out, lse) in float64; mask [sq, sk]; slopes [b, h] times bias [sq, sk] added to the logits."""
    groups = q.shape[2] // k.shape[2]
    k, v = np.repeat(k, groups, axis=2), np.repeat(v, groups, axis=2)
    s = np.einsum("bqhd,bkhd->bhqk", q, k) * scale
    if softcap:
        s = softcap * np.tanh(s / softcap)
    if slopes is not None:
        s = s + slopes[:, :, None, None] * bias
    s = np.where(mask, s, -np.inf)
    m = np.max(s, axis=-1, keepdims=True)
    m = np.where(np.isfinite(m), m, 0)
    p = np.exp(s - m)
    l = p.sum(-1, keepdims=True)
    lse = np.where(l > 0, np.log(np.where(l > 0, l, 1)) + m, np.inf)[..., 0]
    p = np.where(l > 0, p / np.where(l > 0, l, 1), 0)
    return np.einsum("bhqk,bkhd->bqhd", p, v), lse


def numpy_mask(sq, sk, causal, left, right):
    """FlashAttention's mask: bottom-right aligned, windows >= seqlen_k unbounded."""
    i = np.arange(sq)[:, None] + sk - sq
    j = np.arange(sk)[None, :]
    if causal:
        right = 0
    left = -1 if left >= sk else left
    right = -1 if right >= sk else right
    mask = np.ones((sq, sk), bool)
    if left >= 0:
        mask &= j >= i - left
    if right >= 0:
        mask &= j <= i + right
    return mask, (left < 0 and right == 0)


def numpy_alibi_bias(sq, sk, causal_kernel):
    """alibi.h / mask.h: slope * j on the causal kernels, else -slope * |i + sk - sq - j|."""
    i = np.arange(sq)[:, None] + sk - sq
    j = np.arange(sk)[None, :]
    return np.broadcast_to(j, (sq, sk)).astype(np.float64) if causal_kernel else -np.abs(i - j).astype(np.float64)
