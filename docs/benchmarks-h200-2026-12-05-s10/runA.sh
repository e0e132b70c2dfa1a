#!/bin/bash
# Tenth session, call A: main (0e026db) on the GPU: the standalone forward/backward checks
# (+ memcheck of the forward, whose masked kernels' SASS moved), the Rust suite, the C++ package
# built here (first GPU run of its scratch-alignment fix) and its suite, and its few-block step
# kernel by kernel under ncu (the cut backward kernel must show).
L=$OUT/logs; mkdir -p $L
exec 3>&1 > $L/runA.log 2>&1
set -x
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,power.limit --format=csv
python3 -m pip install --no-index --no-deps .whl/flash_attn3_jax-*.whl > $L/pip.log 2>&1
xz -dc .carry/s10/rs-head.so.xz > /tmp/_jflash_attn_rust.so
( time python3 tests/device/gpu_build.py --sdist .carry/s9/flash_attn-2.8.3.post2.tar.gz --out build/site \
  --head-dims 128 --dtypes bf16,fp16 --archs sm_90 --no-splitkv --jobs 12 --rust-extension /tmp/_jflash_attn_rust.so ) > $L/build.log 2>&1 &
BUILD=$!
B=.carry/s10/bin; chmod +x $B/*
( time timeout 60 $B/fwd_s10 ) > $L/fwd-check.log 2>&1
timeout 230 compute-sanitizer --tool memcheck $B/fwd_s10 > $L/fwd-memcheck.log 2>&1 &
MC=$!
( time timeout 150 $B/bwd_s10 ) > $L/bwd-check.log 2>&1
mkdir -p build/rs-head/jflash_attn; cp python/frontend/*.py python/jflash_attn/_binding.py build/rs-head/jflash_attn/
cp /tmp/_jflash_attn_rust.so build/rs-head/jflash_attn/
( time PYTHONPATH=$PWD/build/rs-head XLA_FLAGS=--xla_gpu_autotune_level=0 timeout 230 python3 -m pytest tests -q -n 6 -p no:cacheprovider -rfE --bindings rust ) > $L/suite-rust.log 2>&1
wait $BUILD $MC
export PYTHONPATH=$PWD/build/site
( time XLA_FLAGS=--xla_gpu_autotune_level=0 timeout 200 python3 -m pytest tests -q -n 8 -p no:cacheprovider -rfE --bindings cpp ) > $L/suite-cpp.log 2>&1
timeout 60 ncu --clock-control none --metrics gpu__time_duration.sum --csv \
  python3 tests/device/step_kernels.py jax_flash_attn-cpp 4096 --heads 2 --tokens 4096 > $L/step-cpp.csv 2> $L/step-cpp.err
python3 tests/device/step_kernels.py --summarize $L/step-cpp.csv > $L/step-cpp.txt 2>&1
tar czf $OUT/site.tgz build/site
cd $OUT && tar czf logs.tgz logs
{ tail -3 $L/build.log; tail -2 $L/fwd-check.log; grep -c PASS $L/fwd-check.log; grep FAIL $L/fwd-check.log | head -3
  tail -2 $L/fwd-memcheck.log; tail -3 $L/bwd-check.log; grep -c PASS $L/bwd-check.log; grep -E "FAIL|changed" $L/bwd-check.log | head -3
  for s in rust cpp; do echo "== suite $s"; grep -E "passed|failed" $L/suite-$s.log | tail -2; grep -E "^(FAILED|ERROR)" $L/suite-$s.log | head -5; done
  cut -c1-140 $L/step-cpp.txt; } >&3
