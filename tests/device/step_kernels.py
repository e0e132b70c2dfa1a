"""Kernel times of one benchmark step (jax_flash_attn.bench.build_step), for
comparing ours with a peer kernel by kernel (docs/hopper-notes.md, b12).

  ncu --clock-control none --metrics gpu__time_duration.sum --csv \\
      python step_kernels.py jax_flash_attn-cpp 512 [--causal] [--fwd] [--heads 16 --tokens 16384] > ours.csv
  python step_kernels.py --summarize ours.csv

The first form runs the step three times (the first compiles); the second
prints the kernels of the last of those runs and their sum in microseconds.
Labels are the benchmark's (--methods), e.g. fa3-jax or jax-nn-cudnn.
"""

import argparse
import csv

STEPS = 3


def run(label, seqlen, causal, bwd, heads=16, tokens=16384):
    import jax
    import jax.numpy as jnp
    try:
        from jax_flash_attn import bench
    except ImportError:  # a host with the Rust binding's package alone
        from jflash_attn import bench
    methods, missing = bench.discover_methods()
    if label not in methods:
        raise SystemExit(f"{label}: {missing.get(label, 'unknown label')}")
    step = bench.build_step(methods[label], causal, bwd)
    inputs, ct = bench.draw_inputs(jax.random.key(0), (tokens // seqlen, seqlen, heads, 128), jnp.bfloat16, 1)
    for _ in range(STEPS):
        jax.block_until_ready(step(*inputs[0], ct))


def summarize(path):
    with open(path) as f:
        rows = list(csv.reader(line for line in f if line.startswith('"')))
    head, rows = rows[0], rows[1:]
    name, value, unit = (head.index(k) for k in ("Kernel Name", "Metric Value", "Metric Unit"))
    to_us = {"ns": 1e-3, "us": 1.0, "usecond": 1.0, "ms": 1e3, "msecond": 1e3, "nsecond": 1e-3}
    times = [(r[name], float(r[value].replace(",", "")) * to_us[r[unit]]) for r in rows]
    per_step = _step_length([kernel for kernel, _ in times])
    last = times[-per_step:]
    for kernel, us in last:
        print(f"{us:10.1f}  {kernel[:110]}")
    print(f"{sum(us for _, us in last):10.1f}  total, {per_step} kernels")


def _step_length(names):
    """How many kernels a step launches: the shortest period that the last two runs
    repeat (the first run also launches the input generation's kernels)."""
    for period in range(1, len(names) // 2 + 1):
        if names[-period:] == names[-2 * period:-period]:
            return period
    return len(names)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("label", nargs="?")
    p.add_argument("seqlen", nargs="?", type=int)
    p.add_argument("--causal", action="store_true")
    p.add_argument("--fwd", action="store_true", help="the forward step alone")
    p.add_argument("--heads", type=int, default=16)
    p.add_argument("--tokens", type=int, default=16384, help="batch * seqlen")
    p.add_argument("--summarize", metavar="CSV")
    args = p.parse_args()
    if args.summarize:
        summarize(args.summarize)
    else:
        run(args.label, args.seqlen, args.causal, not args.fwd, args.heads, args.tokens)


if __name__ == "__main__":
    main()
