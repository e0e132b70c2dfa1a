"""Host cost of one jitted flash_mha forward, against its time on the GPU, for
telling a host-bound call from a GPU-bound one (docs/hopper-notes.md, tenth
session): N calls are enqueued back to back, then waited for.

  python host_cost.py jflash_attn [--heads 2 --seqlen 4096 --calls 2000]

enqueue: host time per call until the last one is enqueued; total: until the
last one finished. enqueue close to total: host-bound.
"""

import argparse
import importlib
import time


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("package", help="jax_flash_attn or jflash_attn")
    ap.add_argument("--heads", type=int, default=2)
    ap.add_argument("--seqlen", type=int, default=4096)
    ap.add_argument("--calls", type=int, default=2000)
    args = ap.parse_args()
    import jax
    import jax.numpy as jnp
    flash = importlib.import_module(args.package)
    keys = jax.random.split(jax.random.key(0), 3)
    q, k, v = (jax.random.normal(key, (1, args.seqlen, args.heads, 128), jnp.bfloat16) for key in keys)
    step = jax.jit(lambda q, k, v: flash.flash_mha(q, k, v))
    for _ in range(3):
        out = step(q, k, v)
        for _ in range(200):
            out = step(q, k, v)
        jax.block_until_ready(out)
        start = time.perf_counter()
        for _ in range(args.calls):
            out = step(q, k, v)
        enqueued = time.perf_counter()
        jax.block_until_ready(out)
        done = time.perf_counter()
        print(f"{args.package} ({flash.BINDING}) {args.heads} x {args.seqlen}: enqueue "
              f"{(enqueued - start) / args.calls * 1e6:.1f} us/call, total {(done - start) / args.calls * 1e6:.1f} us/call")


if __name__ == "__main__":
    main()
