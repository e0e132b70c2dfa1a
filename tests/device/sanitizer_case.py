"""A small forward+backward workload for compute-sanitizer (memcheck, racecheck).

usage: compute-sanitizer --tool memcheck --kernel-name kns=flash python sanitizer_case.py PACKAGE
Odd sizes on purpose: partial tiles at every edge, GQA, causal and windowed, and
ALiBi with the deterministic backward and an lse gradient, more query tiles than an
H100 has SMs, unmasked and causal (the Hopper forward then walks several per CTA, by a
fixed stride or from its tile queue), at d 64 over 4096 keys (192-key blocks), at d 128 over 4096
keys (176-key blocks, unmasked), at d 256 with 80-key blocks (unmasked, and causal over 4096
keys); then split-KV decoding against contiguous and paged caches, with appends and several
splits. A case the wheel was built without (a head dim, the split-KV kernels) is skipped, with a
line saying so. The d 128 unmasked backward copies its row statistics by tensor map, not by a flat
bulk copy, whose mbarrier racecheck does not follow (`kStatsInStage` in cpp/sm90/flash_bwd_sm90.cu).
"""

import sys

import jax
import jax.numpy as jnp
import numpy as np

flash = __import__(sys.argv[1])
rng = np.random.default_rng(0)
for (b, sq, sk, h, hk, d), options in [((2, 77, 133, 4, 2, 128), dict(is_causal=True)),
                                        ((1, 130, 65, 2, 1, 128), dict(window_size=(20, 3))),
                                        ((1, 1, 300, 2, 2, 100), {}),
                                        ((2, 77, 133, 4, 2, 64), dict(is_causal=True)),
                                        ((1, 300, 200, 2, 1, 64), {}),
                                        ((1, 130, 4100, 2, 2, 64), {}),  # from 4096 keys: 192-key blocks
                                        ((1, 150, 4200, 2, 1, 64), dict(is_causal=True)),
                                        ((2, 77, 133, 4, 2, 256), dict(is_causal=True)),
                                        ((1, 300, 200, 2, 1, 256), {}),  # unmasked: 80-key blocks
                                        ((1, 150, 4200, 2, 1, 256), dict(is_causal=True)),  # causal from 4096 keys: 80
                                        ((1, 130, 4200, 2, 1, 128), {}),  # over 4096 keys: 176-key blocks
                                        ((1, 600, 600, 32, 8, 128), {}),
                                        ((1, 600, 600, 32, 8, 128), dict(is_causal=True)),
                                        ((2, 99, 99, 4, 4, 128), dict(alibi_slopes=np.float32([.5, .25, .125, .0625]),
                                                                      deterministic=True, return_lse=True))]:
    q = jnp.asarray(rng.standard_normal((b, sq, h, d)), jnp.bfloat16)
    k, v = (jnp.asarray(rng.standard_normal((b, sk, hk, d)), jnp.bfloat16) for _ in range(2))
    try:
        out, pullback = jax.vjp(lambda q, k, v: flash.flash_mha(q, k, v, **options), q, k, v)
    except ValueError as e:  # a wheel built with fewer head dims; anything else propagates
        if "has no kernel" not in str(e):
            raise
        print(f"skipped head_dim {d}: {e}")
        continue
    # With return_lse, out is (out, lse): its cotangent makes the second backward call run too.
    jax.block_until_ready(pullback(jax.tree.map(jnp.ones_like, out)))
split_kv = flash._binding.extension.has_kvcache_kernel("bfloat16", 128)
if not split_kv:
    print(f"skipped split-KV decoding: no split-KV kernel for bfloat16/128 ({flash.build_config()})")
for paged, splits in ((False, 3), (True, 0)) if split_kv else ():
    q = jnp.asarray(rng.standard_normal((3, 2, 8, 128)), jnp.bfloat16)
    cache = jnp.asarray(rng.standard_normal((6 if paged else 3, 512, 2, 128)), jnp.bfloat16)
    new = jnp.asarray(rng.standard_normal((3, 2, 2, 128)), jnp.bfloat16)
    table = jnp.int32([[5, 0], [2, 4], [1, 3]]) if paged else None
    jax.block_until_ready(flash.flash_mha_with_kvcache(q, cache, cache, new, new, cache_seqlens=np.int32([0, 255, 510]),
                                                       block_table=table, is_causal=True, num_splits=splits))
print("sanitizer case done")
