#!/bin/bash
# Call C (prepared, not run this session: no machine before the device time ran out): main's
# tables, one run of the tool per head dim, both bindings, cuDNN and FA3 beside, samples
# alternating. C++ = the package built off the device (every head dim, bf16); Rust = main's CI
# extension built with FlashAttention-2 at d 64, 128 and 256 too (`bazel build
# --//cpp:head_dims=64,128,256 --//cpp:splitkv=false //python:wheels`), which the front end
# needs beside the Hopper kernels. --gpu-clocks: each method's SM clock and power while sampling.
# Run again in the nineteenth session (its call 2, unchanged): logs in ../benchmarks-h100-2026-12-06-s19/call2-*.
L=$OUT/logs; mkdir -p $L
exec 3>&1 > $L/runC.log 2>&1
left() { t=$(($1 - SECONDS)); [ $t -gt 5 ] && echo $t || echo 1; }  # seconds to a mark of the call
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,power.limit --format=csv >&3
python3 -m pip install --no-index --no-deps .whl/flash_attn3_jax-*.whl > $L/pip.log 2>&1
S=$PWD/build/site; rm -rf $S; mkdir -p $S; tar xJf .carry/s15/cpp312-final3.tar.xz -C $S
cp python/frontend/*.py $S/jax_flash_attn/  # main's front end (the bench's --gpu-clocks)
mkdir -p $S/jflash_attn; cp python/frontend/*.py python/jflash_attn/_binding.py $S/jflash_attn/
xz -dc .carry/s16/rs-all.so.xz > $S/jflash_attn/_jflash_attn_rust.so
export PYTHONPATH=$S
M=jax_flash_attn-cpp,jflash_attn-rust,jax-nn-cudnn,fa3-jax
timeout $(left 260) python3 -m jax_flash_attn.bench --gpu-clocks --head-dim 128 --methods $M --json $L/d128-C.json --markdown $L/d128-C.md > $L/d128-C.log 2>&1
cat $L/d128-C.md >&3; tail -2 $L/d128-C.log >&3
timeout $(left 440) python3 -m jax_flash_attn.bench --gpu-clocks --head-dim 64 --methods $M --json $L/d64-C.json --markdown $L/d64-C.md > $L/d64-C.log 2>&1
timeout $(left 570) python3 -m jax_flash_attn.bench --gpu-clocks --head-dim 256 --methods ${M%,fa3-jax} --json $L/d256-C.json --markdown $L/d256-C.md > $L/d256-C.log 2>&1
cat $L/d64-C.md $L/d256-C.md >&3
cd $OUT && tar czf logsC.tgz logs
