#!/bin/bash
# Tenth session, call C: main with launch counts (C ABI 8): the C++ package built here and the
# Rust extension from CI's Bazel build; both GPU suites (test_sm90 now asserts that no Hopper
# launch goes without its scratch and that a 2 x 4096 fwd+bwd runs cut in both directions).
L=$OUT/logs; mkdir -p $L
exec 3>&1 > $L/runC.log 2>&1
set -x
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,power.limit --format=csv
python3 -m pip install --no-index --no-deps .whl/flash_attn3_jax-*.whl > $L/pip.log 2>&1
xz -dc .carry/s10/rs-cnt.so.xz > /tmp/_jflash_attn_rust.so
( time python3 tests/device/gpu_build.py --sdist .carry/s9/flash_attn-2.8.3.post2.tar.gz --out build/site \
  --head-dims 128 --dtypes bf16,fp16 --archs sm_90 --no-splitkv --jobs 13 --rust-extension /tmp/_jflash_attn_rust.so ) > $L/build.log 2>&1 &
BUILD=$!
mkdir -p build/rs-cnt/jflash_attn; cp python/frontend/*.py python/jflash_attn/_binding.py build/rs-cnt/jflash_attn/
cp /tmp/_jflash_attn_rust.so build/rs-cnt/jflash_attn/
( time PYTHONPATH=$PWD/build/rs-cnt XLA_FLAGS=--xla_gpu_autotune_level=0 timeout 240 python3 -m pytest tests -q -n 5 -p no:cacheprovider -rfE --bindings rust ) > $L/suite-rust.log 2>&1
wait $BUILD
export PYTHONPATH=$PWD/build/site
( time XLA_FLAGS=--xla_gpu_autotune_level=0 timeout 220 python3 -m pytest tests -q -n 8 -p no:cacheprovider -rfE --bindings cpp ) > $L/suite-cpp.log 2>&1
python3 -m pytest tests/test_sm90.py -q -p no:cacheprovider -k "cut_last_rounds" -rA --bindings cpp > $L/cut-test.log 2>&1
cd $OUT && tar czf logs.tgz logs
{ tail -3 $L/build.log
  for s in rust cpp; do echo "== suite $s"; grep -E "passed|failed" $L/suite-$s.log | tail -2; grep -E "^(FAILED|ERROR)" $L/suite-$s.log | head -8; done
  grep -E "PASS|SKIP|FAIL|passed|skipped" $L/cut-test.log | tail -4; } >&3
