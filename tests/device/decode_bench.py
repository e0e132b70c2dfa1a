"""Times single-token decoding against a KV cache: flash_mha_with_kvcache (split-KV
kernels, contiguous and paged caches) against flash_mha (no splits) and
jax.nn.dot_product_attention (xla, cudnn).

    python tests/device/decode_bench.py jax_flash_attn [--markdown PATH]

Each step is one query token per sequence attending to a full cache of
`length` keys (bf16, 32 query heads, 8 key/value heads, head dim 128). Steps
run 50 at a time inside one jitted loop, each feeding its output back as the
next query, so the time is the GPU's and not Python's dispatch. Decoding is
bound by reading the cache: GB/s counts the K and V bytes read per step.
"""

import argparse
import importlib
import time

import jax
import jax.numpy as jnp
import numpy as np

HEADS, HEADS_K, HEAD_DIM, STEPS, REPEATS = 32, 8, 128, 50, 5


def methods(flash, length, batch):
    lengths = jnp.full((batch,), length, jnp.int32)
    pages = length // 256
    table = jnp.arange(batch * pages, dtype=jnp.int32).reshape(batch, pages)
    paged = lambda c: c.reshape((batch * pages, 256) + c.shape[2:])
    return {
        "ours kvcache": lambda q, k, v: flash.flash_mha_with_kvcache(q, k, v, cache_seqlens=lengths),
        "ours kvcache paged": lambda q, k, v: flash.flash_mha_with_kvcache(
            q, paged(k), paged(v), cache_seqlens=lengths, block_table=table),
        "ours flash_mha": lambda q, k, v: flash.flash_mha(q, k, v),
        "jax-nn-xla": lambda q, k, v: jax.nn.dot_product_attention(q, k, v, implementation="xla"),
        "jax-nn-cudnn": lambda q, k, v: jax.nn.dot_product_attention(q, k, v, implementation="cudnn"),
    }


def time_steps(attention, q, k, v):
    loop = jax.jit(lambda q, k, v: jax.lax.fori_loop(0, STEPS, lambda _, q: attention(q, k, v), q))
    jax.block_until_ready(loop(q, k, v))  # compiles
    best = float("inf")
    for _ in range(REPEATS):
        start = time.perf_counter()
        jax.block_until_ready(loop(q, k, v))
        best = min(best, (time.perf_counter() - start) / STEPS)
    return best * 1e3


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("package", nargs="?", default="jax_flash_attn")
    ap.add_argument("--markdown")
    args = ap.parse_args()
    flash = importlib.import_module(args.package)
    print(f"{args.package} ({flash.build_config()}) on {jax.devices()[0].device_kind}")
    rows = ["| batch | cache length | method | ms / step | GB/s |", "|---|---|---|---|---|"]
    for batch in (1, 8):
        for length in (4096, 16384, 65536):
            keys = jax.random.split(jax.random.key(length + batch), 3)
            q = jax.random.normal(keys[0], (batch, 1, HEADS, HEAD_DIM), jnp.bfloat16)
            k, v = (jax.random.normal(key, (batch, length, HEADS_K, HEAD_DIM), jnp.bfloat16) for key in keys[1:])
            want = np.asarray(flash.attention_reference(q, k, v)[0], np.float32)
            cache_bytes = 2 * k.size * k.dtype.itemsize
            for label, attention in methods(flash, length, batch).items():
                try:
                    err = float(np.max(np.abs(np.asarray(jax.jit(attention)(q, k, v), np.float32) - want)))
                    ms = time_steps(attention, q, k, v)
                    cell = f"{ms:.4f} | {cache_bytes / ms / 1e6:.0f}"
                    line = f"{ms:8.4f} ms {cache_bytes / ms / 1e6:7.0f} GB/s  max err {err:.2e}"
                except Exception as e:  # e.g. cudnn refusing the shape
                    cell = line = f"skipped: {type(e).__name__}: {str(e).splitlines()[0][:120]}"
                print(f"batch {batch} length {length:6} {label:20} {line}", flush=True)
                rows.append(f"| {batch} | {length} | {label} | {cell} |")
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write("\n".join(rows) + "\n")


if __name__ == "__main__":
    main()
