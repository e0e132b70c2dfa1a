"""Prints the kernels' error against a float32 reference, next to plain JAX's own
low-precision error, for forward and each gradient (GPU).

usage: python error_report.py PACKAGE [--seqlen 4096] [--batch 2] [--heads 16] [--head-dim 128]
"""

import argparse
import functools
import importlib

import jax
import jax.numpy as jnp
import numpy as np


def errors(x, ref):
    x, ref = np.asarray(x, np.float64), np.asarray(ref, np.float64)
    return np.max(np.abs(x - ref)) / np.max(np.abs(ref)), np.linalg.norm(x - ref) / np.linalg.norm(ref)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("package")
    ap.add_argument("--seqlen", type=int, default=4096)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--heads", type=int, default=16)
    ap.add_argument("--head-dim", type=int, default=128)
    args = ap.parse_args()
    flash = importlib.import_module(args.package)
    rng = np.random.default_rng()
    shape = (args.batch, args.seqlen, args.heads, args.head_dim)
    print(f"{args.package} ({flash.BINDING}), {flash.build_config()}; shape {shape}")
    print(f"{'dtype':9} {'causal':6} {'tensor':6} {'kernel max-rel':>15} {'kernel l2-rel':>14} "
          f"{'plain-JAX max-rel':>18} {'plain-JAX l2-rel':>17}")
    for dtype in (jnp.bfloat16, jnp.float16):
        if not flash.has_kernel(jnp.dtype(dtype).name, args.head_dim):
            continue
        for causal in (False, True):
            q, k, v, dout = (jnp.asarray(rng.standard_normal(shape, np.float32), dtype) for _ in range(4))

            def grads(fn, *xs):
                out, pullback = jax.vjp(fn, *xs)
                return (out, *pullback(dout.astype(out.dtype)))

            kernel = jax.jit(functools.partial(grads, functools.partial(flash.flash_mha, is_causal=causal)))
            ref = jax.jit(functools.partial(grads, lambda *a: flash.attention_reference(*a, is_causal=causal)[0]))
            plain = jax.jit(functools.partial(grads, lambda *a: flash.attention_reference(
                *a, is_causal=causal, compute_dtype=dtype)[0]))
            got, want, base = kernel(q, k, v), ref(*(x.astype(jnp.float32) for x in (q, k, v))), plain(q, k, v)
            for name, g, w, b in zip(("out", "dq", "dk", "dv"), got, want, base):
                print(f"{jnp.dtype(dtype).name:9} {str(causal):6} {name:6} " + "{:15.2e} {:14.2e} ".format(*errors(g, w))
                      + "{:18.2e} {:17.2e}".format(*errors(b, w)))


if __name__ == "__main__":
    main()
