#!/usr/bin/env bash
# The GPU verification we run on a lent GPU host (CUDA 13, Python 3.12 with
# JAX's CUDA plugin, no Bazel, no network), one phase per call so that each
# stays within a call's time limit. Logs go to $OUT (default /tmp/gpu-check).
#
#   SDIST=flash_attn-2.8.3.post2.tar.gz RUST_WHEEL=jflash_attn-...whl \
#   tests/device/gpu_check.sh build suite   # ~7 min on 16 cores, then the suite (~5 min), both bindings
#   tests/device/gpu_check.sh sanitize      # memcheck, racecheck, error report
#   tests/device/gpu_check.sh sm90          # our Hopper kernels: their tests, FA2's kernels alone, sanitizers
#   [FA3_WHEEL=flash_attn3_jax-...whl] [BENCH_RUNS=3] [BENCH_ARGS="--methods ..."] \
#   tests/device/gpu_check.sh bench         # every method, side by side; with BENCH_RUNS > 1 the
#                                           # tables are per point the median of the runs (--merge)
#   tests/device/gpu_check.sh decode        # single-token decoding against a KV cache
#
# `build` compiles the C++ package for this host's Python (tests/device/gpu_build.py)
# and pip-installs the Bazel-built Rust wheel (abi3) into that Python's
# environment (on the lent host python3 is itself a venv holding JAX), as a
# user installs it: the suite then tests the C++ binding from build/site and
# the Rust binding from the installed wheel. HEAD_DIMS (default 64,128) picks
# the build's head dims; tests/test_sm90.py's head dim 256 cases need 256 in it.
#
# On an sm_90 GPU every dense call without ALiBi or softcap runs our Hopper
# kernels where the build has them (so `suite` tests them throughout);
# JAX_FLASH_ATTN_SM90=0 sends them to FlashAttention-2 (see `sm90`).
set -euo pipefail
cd "$(dirname "$0")/../.."
out=${OUT:-/tmp/gpu-check}
py=${PYTHON:-python3}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false PYTHONPATH=$PWD/build/site

[ $# -gt 0 ] || { sed -n '2,13p' "$0"; exit 2; }
for phase in "$@"; do
case "$phase" in
  build)
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$out/gpu.txt"
    python3 tests/device/gpu_build.py --sdist "$SDIST" --out build/site --head-dims "${HEAD_DIMS:-64,128}" \
      --dtypes fp16,bf16 --archs sm_90 --jobs "$(nproc)" 2>&1 | tee "$out/build.log"
    # --no-index: the wheel's requirements (jax, numpy) must be met by what is installed.
    "$py" -m pip install --no-index "$RUST_WHEEL" 2>&1 | tee "$out/wheel.log"
    (cd /tmp && "$py" -c 'import jflash_attn as m; print(m.__file__, m.__version__, m.build_config())') \
      | tee -a "$out/wheel.log"
    ;;
  suite)
    XLA_FLAGS=--xla_gpu_autotune_level=0 "$py" -m pytest tests -q -n 8 -p no:cacheprovider -rfE 2>&1 | tee "$out/tests.log"
    ;;
  sanitize)
    for tool in memcheck racecheck; do
      status=0
      timeout 240 compute-sanitizer --tool "$tool" --kernel-name kns=flash --error-exitcode 1 \
        "$py" tests/device/sanitizer_case.py jax_flash_attn >"$out/$tool.log" 2>&1 || status=$?
      echo "$tool exit status $status" | tee -a "$out/$tool.log"; tail -n 5 "$out/$tool.log"
    done
    "$py" tests/device/error_report.py jax_flash_attn 2>&1 | tee "$out/error_report.log"
    ;;
  sm90)
    "$py" -c 'import jax_flash_attn as m, jax; print(m.build_config(), jax.devices()[0].compute_capability)' \
      | tee "$out/sm90.log"
    # The Hopper kernels' own tests (skips say why: no sm_90 GPU, or the build lacks the case).
    XLA_FLAGS=--xla_gpu_autotune_level=0 "$py" -m pytest tests/test_sm90.py -q -n 8 -p no:cacheprovider -rfEs \
      2>&1 | tee -a "$out/sm90.log"
    # The kernel tests on FlashAttention-2's kernels alone, which `suite` no longer reaches on Hopper.
    JAX_FLASH_ATTN_SM90=0 XLA_FLAGS=--xla_gpu_autotune_level=0 "$py" -m pytest tests/test_gpu.py -q -n 8 \
      -p no:cacheprovider -rfE 2>&1 | tee "$out/sm90-off.log"
    # memcheck and racecheck on the Hopper kernels, picked by name
    # (SM90_KERNELS: a substring of their mangled names).
    for tool in memcheck racecheck; do
      status=0
      JAX_FLASH_ATTN_SM90=1 timeout 240 compute-sanitizer --tool "$tool" --kernel-name "kns=${SM90_KERNELS:-sm90}" \
        --error-exitcode 1 "$py" tests/device/sanitizer_case.py jax_flash_attn >"$out/sm90-$tool.log" 2>&1 || status=$?
      echo "$tool exit status $status" | tee -a "$out/sm90-$tool.log"; tail -n 5 "$out/sm90-$tool.log"
    done
    ;;
  bench)
    if [ -n "${FA3_WHEEL:-}" ]; then "$py" -m pip install -q --no-index --no-deps "$FA3_WHEEL"; fi
    runs=${BENCH_RUNS:-1}
    if [ "$runs" -le 1 ]; then
      # shellcheck disable=SC2086  # BENCH_ARGS is a list of arguments
      "$py" -m jax_flash_attn.bench ${BENCH_ARGS:-} --json "$out/benchmarks.json" --markdown "$out/benchmarks.md" \
        --plot "$out/benchmarks.png" 2>&1 | tee "$out/bench.log"
    else
      for run in $(seq "$runs"); do
        # shellcheck disable=SC2086
        "$py" -m jax_flash_attn.bench ${BENCH_ARGS:-} --json "$out/bench-run$run.json" 2>&1 | tee "$out/bench-run$run.log"
      done
      "$py" -m jax_flash_attn.bench --merge $(seq -f "$out/bench-run%g.json" "$runs") --json "$out/benchmarks.json" \
        --markdown "$out/benchmarks.md" --plot "$out/benchmarks.png" 2>&1 | tee "$out/bench.log"
    fi
    ;;
  decode)
    "$py" tests/device/decode_bench.py jax_flash_attn --markdown "$out/decode.md" 2>&1 | tee "$out/decode.log"
    ;;
  *)
    echo "unknown phase $phase"; exit 2 ;;
esac
done
