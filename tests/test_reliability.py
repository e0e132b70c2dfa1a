"""Extreme shapes and non-finite inputs on the GPU (skipped without one).

Large cases are checked on sampled query rows against the float32 reference,
since the full reference would not fit in memory.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import requires_gpu

pytestmark = requires_gpu


def need_bf16_128(flash):
    if not flash.has_kernel("bfloat16", 128):
        pytest.skip(f"no bfloat16/128 kernel ({flash.build_config()})")


def draw(rng, shape, dtype=jnp.bfloat16):
    return jnp.asarray(rng.standard_normal(shape, np.float32), dtype)


def check_rows(flash, q, k, v, out, rows, heads, is_causal):
    """out[:, rows, heads] against the reference computed for just those query rows."""
    sq, sk = q.shape[1], k.shape[1]
    for row in rows:
        for head in heads:
            # A one-row query at the same diagonal offset: pad k/v alignment by
            # slicing keys so that bottom-right alignment gives the same mask.
            visible = row + sk - sq + 1 if is_causal else sk
            qi = q[:, row:row + 1, head:head + 1].astype(jnp.float32)
            kh = k[:, :visible, head // (q.shape[2] // k.shape[2])][:, :, None].astype(jnp.float32)
            vh = v[:, :visible, head // (q.shape[2] // k.shape[2])][:, :, None].astype(jnp.float32)
            want = flash.attention_reference(qi, kh, vh)[0]
            got = out[:, row:row + 1, head:head + 1].astype(jnp.float32)
            err = float(jnp.max(jnp.abs(got - want)))
            assert err < 2e-2, f"row {row} head {head}: max error {err}"


def test_more_than_2_pow_31_elements(flash, rng):
    need_bf16_128(flash)
    shape = (1, 139_264, 128, 128)  # 2.28e9 elements per tensor, past int32 indexing
    assert np.prod(shape) > 2**31
    q = draw(rng, shape)
    out = jax.jit(lambda q: flash.flash_mha(q, q, q, is_causal=True))(q)
    check_rows(flash, q, q, q, out, rows=[0, 70_000, shape[1] - 1], heads=[0, 127], is_causal=True)


def test_long_sequence_batch_one(flash, rng):
    need_bf16_128(flash)
    q, k, v = (draw(rng, (1, 131_072, 2, 128)) for _ in range(3))
    out, pullback = jax.vjp(lambda q, k, v: flash.flash_mha(q, k, v, is_causal=True), q, k, v)
    check_rows(flash, q, k, v, out, rows=[5, 131_071], heads=[0, 1], is_causal=True)
    grads = pullback(draw(rng, q.shape))
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in grads)


def test_single_head_single_token(flash, rng):
    need_bf16_128(flash)
    q, k, v = (draw(rng, (3, 1, 1, 128)) for _ in range(3))
    out = flash.flash_mha(q, k, v)
    np.testing.assert_allclose(np.asarray(out, np.float32), np.asarray(v, np.float32), rtol=1e-2)


def test_nan_in_a_query_row_stays_in_that_row(flash, rng):
    need_bf16_128(flash)
    q, k, v = (draw(rng, (1, 256, 2, 128)) for _ in range(3))
    q = q.at[0, 17, 0, 3].set(jnp.nan)
    out = np.asarray(flash.flash_mha(q, k, v), np.float32)
    assert np.isnan(out[0, 17, 0]).all()
    mask = np.ones(out.shape[:3], bool)
    mask[0, 17, 0] = False
    assert np.isfinite(out[mask]).all()


def test_nan_in_a_key_reaches_only_rows_that_see_it(flash, rng):
    need_bf16_128(flash)
    q, k, v = (draw(rng, (1, 256, 2, 128)) for _ in range(3))
    k = k.at[0, 100, 1, 0].set(jnp.nan)
    out = np.asarray(flash.flash_mha(q, k, v, is_causal=True), np.float32)
    assert np.isfinite(out[0, :100]).all(), "rows before the NaN key cannot see it"
    assert np.isfinite(out[0, :, 0]).all(), "head 0 never sees the NaN"
    assert not np.isfinite(out[0, 100:, 1]).any(), "rows that see a NaN key are NaN, not garbage"


@pytest.mark.parametrize("attrs", [
    dict(softmax_scale=np.float32(1), is_causal=False, window_left=np.int64(-1), window_right=np.int32(-1),
         softcap=np.float32(0), has_alibi=False),                   # window_left of the wrong type
    dict(softmax_scale=np.float32(1), is_causal=False, window_right=np.int32(-1), softcap=np.float32(0),
         has_alibi=False),
    dict(softmax_scale=np.float32(1), is_causal=False, window_left=np.int32(-7), window_right=np.int32(-1),
         softcap=np.float32(0), has_alibi=False),                   # out of range
], ids=["wrong-type", "missing", "out-of-range"])
def test_handler_rejects_malformed_attributes(flash, attrs):
    """Malformed attributes through jax.ffi.ffi_call: an XLA error, then business as usual."""
    need_bf16_128(flash)
    q = jnp.zeros((1, 8, 2, 128), jnp.bfloat16)
    call = jax.ffi.ffi_call(f"{flash._binding.TARGET_PREFIX}_fwd",
                            (jax.ShapeDtypeStruct(q.shape, q.dtype), jax.ShapeDtypeStruct((1, 2, 8), jnp.float32)))
    # The wording of decoding errors is XLA's (C++) or ours (Rust); the range
    # check is the shared C ABI's.
    with pytest.raises(Exception, match="window" if attrs.get("window_left") == -7 else None):
        jax.block_until_ready(call(q, q, q, jnp.zeros((1, 2), jnp.float32), **attrs))
    assert bool(jnp.all(jnp.isfinite(flash.flash_mha(q, q, q))))
