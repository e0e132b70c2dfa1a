#!/bin/bash
# Call E: main 503da3f on the H100: the Rust suite on CI's extension, and the d 128 table twice
# (both bindings: C++ built off-device for cp312, Rust = CI's extension; cuDNN, FA3), merged.
L=$OUT/logs; mkdir -p $L
exec 3>&1 > $L/runE.log 2>&1
set -x
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,power.limit --format=csv
python3 -m pip install --no-index --no-deps .whl/flash_attn3_jax-*.whl > $L/pip.log 2>&1
S=$PWD/build/site; rm -rf $S; mkdir -p $S; tar xJf .carry/s13/cpp312-new.tar.xz -C $S
mkdir -p $S/jflash_attn; cp python/frontend/*.py python/jflash_attn/_binding.py $S/jflash_attn/
xz -dc .carry/s13/rs-new.so.xz > $S/jflash_attn/_jflash_attn_rust.so
export PYTHONPATH=$S
( time XLA_FLAGS=--xla_gpu_autotune_level=0 timeout 280 python3 -m pytest tests -q -n 8 -p no:cacheprovider -rfE --bindings rust ) > $L/suite-rust.log 2>&1
M=jax_flash_attn-cpp,jflash_attn-rust,jax-nn-cudnn,fa3-jax
for r in 1 2; do
  timeout 150 python3 -m jax_flash_attn.bench --head-dim 128 --methods $M --json $L/d128-E$r.json --markdown $L/d128-E$r.md > $L/d128-E$r.log 2>&1
done
python3 -m jax_flash_attn.bench --merge $L/d128-E1.json $L/d128-E2.json --json $L/d128-E.json --markdown $L/d128-E.md > $L/merge.log 2>&1
cd $OUT && tar czf logsE.tgz logs
{ echo "== suite rust"; grep -E "passed|failed" $L/suite-rust.log | tail -1; grep -E "^(FAILED|ERROR)" $L/suite-rust.log | head -8
  cat $L/d128-E.md; tail -2 $L/merge.log $L/d128-E1.log $L/d128-E2.log; } >&3
