#!/bin/bash
# Ninth session, call D1: the C++ binding at the backward cut's commit, built on the device (FA2
# d 128 fp16/bf16 and every Hopper kernel), then the Hopper and GPU tests on it.
L=$OUT/logs; mkdir -p $L
exec 3>&1 > $L/runD1.log 2>&1
set -x
git log --oneline -1
( time timeout 380 python3 tests/device/gpu_build.py --sdist .carry/s9/flash_attn-2.8.3.post2.tar.gz --out build/site \
  --head-dims 128 --dtypes bf16,fp16 --archs sm_90 --no-splitkv --jobs 16 ) > $L/build.log 2>&1
tail -4 $L/build.log
export PYTHONPATH=$PWD/build/site
python3 -c "import jax_flash_attn as m; print(m.build_config(), m.abi_version() if hasattr(m, 'abi_version') else '')"
left=$((585 - SECONDS))
( time XLA_FLAGS=--xla_gpu_autotune_level=0 timeout $left python3 -m pytest tests/test_sm90.py tests/test_gpu.py -q -n 8 -p no:cacheprovider -rfE --bindings cpp ) > $L/suite-cpp.log 2>&1
cd $OUT && tar czf logs.tgz logs
{ tail -3 $L/build.log; grep -E "passed|failed|error" $L/suite-cpp.log | tail -5; grep -E "cut" $L/suite-cpp.log | head -5; } >&3
