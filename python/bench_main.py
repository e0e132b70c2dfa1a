"""Entry point of `bazel run //python:bench -- [ARGS]`: python -m jax_flash_attn.bench.

bench.main() returns the records it timed; the exit status is 0 unless it
raises (argparse exits by itself for --help and bad arguments).
"""

from jax_flash_attn import bench

if __name__ == "__main__":
    bench.main()
