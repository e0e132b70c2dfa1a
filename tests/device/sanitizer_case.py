"""A small forward+backward workload for compute-sanitizer (memcheck, racecheck).

usage: compute-sanitizer --tool memcheck --kernel-name regex:flash python sanitizer_case.py PACKAGE
Odd sizes on purpose: partial tiles at every edge, GQA, causal and windowed.
"""

import sys

import jax
import jax.numpy as jnp
import numpy as np

flash = __import__(sys.argv[1])
rng = np.random.default_rng(0)
for (b, sq, sk, h, hk, d), options in [((2, 77, 133, 4, 2, 128), dict(is_causal=True)),
                                        ((1, 130, 65, 2, 1, 128), dict(window_size=(20, 3))),
                                        ((1, 1, 300, 2, 2, 72), {})]:
    q = jnp.asarray(rng.standard_normal((b, sq, h, d)), jnp.bfloat16)
    k, v = (jnp.asarray(rng.standard_normal((b, sk, hk, d)), jnp.bfloat16) for _ in range(2))
    out, pullback = jax.vjp(lambda q, k, v: flash.flash_mha(q, k, v, **options), q, k, v)
    jax.block_until_ready(pullback(jnp.ones_like(out)))
print("sanitizer case done")
