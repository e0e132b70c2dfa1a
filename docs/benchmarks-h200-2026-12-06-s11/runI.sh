#!/bin/bash
# Eleventh session, call 1: main (7848a0e) on the GPU and the `bst` experiment in one call.
# - standalone: main's forward/backward checks (bin from 251febf), run_fwd's host time per
#   launch, bst's checks + racecheck/memcheck (d 128), (timed in call 2);
# - the Rust suite on CI's extension of main (rs-end.so.xz, 251febf; the kernels are main's);
# - the C++ package built here from main + bst.patch, and its suite (bst through JAX).
L=$OUT/logs; mkdir -p $L
exec 3>&1 > $L/runI.log 2>&1
set -x
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,power.limit --format=csv
python3 -m pip install --no-index --no-deps .whl/flash_attn3_jax-*.whl > $L/pip.log 2>&1
xz -dc .carry/s10/rs-end.so.xz > /tmp/_jflash_attn_rust.so
mkdir -p build/rs-end/jflash_attn; cp python/frontend/*.py python/jflash_attn/_binding.py build/rs-end/jflash_attn/
cp /tmp/_jflash_attn_rust.so build/rs-end/jflash_attn/
{ patch -p1 < .carry/s11/bst.patch || git apply .carry/s11/bst.patch; } > $L/patch.log 2>&1
( time python3 tests/device/gpu_build.py --sdist .carry/s9/flash_attn-2.8.3.post2.tar.gz --out build/site \
  --head-dims 128 --dtypes bf16,fp16 --archs sm_90 --no-splitkv --jobs 12 --rust-extension /tmp/_jflash_attn_rust.so ) > $L/build.log 2>&1 &
BUILD=$!
( time PYTHONPATH=$PWD/build/rs-end XLA_FLAGS=--xla_gpu_autotune_level=0 timeout 200 python3 -m pytest tests -q -n 5 -p no:cacheprovider -rfE --bindings rust ) > $L/suite-rust.log 2>&1 &
RUST=$!
B=.carry/s10/bin; X=.carry/s11/bin/bwd_bst; chmod +x $B/* $X
( time timeout 60 $B/fwd_s10end ) > $L/fwd-check.log 2>&1
( time timeout 60 $B/bwd_s10end ) > $L/bwd-check.log 2>&1
{ $B/fwd_s10end few 128 2 4096; JFA_UNCUT=1 $B/fwd_s10end few 128 2 4096; } > $L/fwd-host.log 2>&1
timeout 60 $X > $L/bst-check.log 2>&1
timeout 90 compute-sanitizer --tool racecheck $X only 128 > $L/bst-racecheck.log 2>&1
timeout 60 compute-sanitizer --tool memcheck $X only 128 > $L/bst-memcheck.log 2>&1
wait $BUILD $RUST
export PYTHONPATH=$PWD/build/site
( time XLA_FLAGS=--xla_gpu_autotune_level=0 timeout 200 python3 -m pytest tests -q -n 8 -p no:cacheprovider -rfE --bindings cpp ) > $L/suite-cpp.log 2>&1
cd $OUT && tar czf logsI.tgz logs
{ tail -3 $L/build.log; cat $L/patch.log; tail -1 $L/fwd-check.log; grep -c PASS $L/fwd-check.log $L/bwd-check.log $L/bst-check.log
  grep -E "FAIL|failures" $L/fwd-check.log $L/bwd-check.log $L/bst-check.log | head -6; cat $L/fwd-host.log
  tail -2 $L/bst-racecheck.log $L/bst-memcheck.log; 
  for s in rust cpp; do echo "== suite $s"; grep -E "passed|failed" $L/suite-$s.log | tail -2; grep -E "^(FAILED|ERROR)" $L/suite-$s.log | head -8; done; } >&3
