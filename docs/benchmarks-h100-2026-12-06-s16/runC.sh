#!/bin/bash
# Call C: main dc95df5's d 128 table, one run of the tool: C++ package (built off the device,
# every head dim, bf16) and the Rust CI extension, cuDNN and FA3 beside, samples alternating.
L=$OUT/logs; mkdir -p $L
exec 3>&1 > $L/runC.log 2>&1
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,power.limit --format=csv >&3
python3 -m pip install --no-index --no-deps .whl/flash_attn3_jax-*.whl > $L/pip.log 2>&1
S=$PWD/build/site; rm -rf $S; mkdir -p $S; tar xJf .carry/s15/cpp312-final3.tar.xz -C $S
mkdir -p $S/jflash_attn; cp python/frontend/*.py python/jflash_attn/_binding.py $S/jflash_attn/
xz -dc .carry/s16/rs-main.so.xz > $S/jflash_attn/_jflash_attn_rust.so
export PYTHONPATH=$S
M=jax_flash_attn-cpp,jflash_attn-rust,jax-nn-cudnn,fa3-jax
timeout 260 python3 -m jax_flash_attn.bench --head-dim 128 --methods $M --json $L/d128-C.json --markdown $L/d128-C.md > $L/d128-C.log 2>&1
cat $L/d128-C.md >&3; tail -3 $L/d128-C.log >&3
