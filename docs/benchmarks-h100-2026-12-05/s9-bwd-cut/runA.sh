#!/bin/bash
# Ninth session, call A: the C++ binding built on the device (FA2 d 128 fp16/bf16 and every Hopper
# kernel) to run its scratch allocation path (ffi::ScratchAllocator) on a GPU; the GPU suite on
# it; then the d 128 table at main (c5e69f9) with both bindings beside cuDNN and FA3.
L=$OUT/logs; mkdir -p $L
exec 3>&1 > $L/runA.log 2>&1
set -x
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,power.limit --format=csv
python3 -m pip install --no-index --no-deps .whl/flash_attn3_jax-*.whl > $L/pip.log 2>&1
xz -dc .carry/s9/rs-main.so.xz > /tmp/_jflash_attn_rust.so
( time python3 tests/device/gpu_build.py --sdist .carry/s9/flash_attn-2.8.3.post2.tar.gz --out build/site \
  --head-dims 128 --dtypes bf16,fp16 --archs sm_90 --no-splitkv --jobs 16 --rust-extension /tmp/_jflash_attn_rust.so ) > $L/build.log 2>&1
tail -4 $L/build.log
export PYTHONPATH=$PWD/build/site
python3 -c "import jax_flash_attn, jflash_attn; print(jax_flash_attn.build_config(), jflash_attn.build_config())"
( time XLA_FLAGS=--xla_gpu_autotune_level=0 timeout 200 python3 -m pytest tests -q -n 8 -p no:cacheprovider -rfE --bindings cpp ) > $L/suite-cpp.log 2>&1
timeout 170 python3 -m jax_flash_attn.bench --head-dim 128 --methods jax_flash_attn-cpp,jflash_attn-rust,jax-nn-cudnn,fa3-jax \
  --json $L/d128-A.json --markdown $L/d128-A.md > $L/d128-A.log 2>&1
cd $OUT && tar czf logs.tgz logs
{ tail -3 $L/build.log; grep -E "passed|failed|error" $L/suite-cpp.log | tail -5; tail -3 $L/suite-cpp.log; cat $L/d128-A.md; tail -3 $L/d128-A.log; } >&3
