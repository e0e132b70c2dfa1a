#!/bin/bash
# Call D: main fd2544a on the H100: the d 128 table three times (both bindings: C++ built
# off-device for cp312, Rust = CI's extension; cuDNN, FA3), merged.
L=$OUT/logs; mkdir -p $L
exec 3>&1 > $L/runD.log 2>&1
set -x
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,power.limit --format=csv
python3 -m pip install --no-index --no-deps .whl/flash_attn3_jax-*.whl > $L/pip.log 2>&1
S=$PWD/build/site; rm -rf $S; mkdir -p $S; tar xJf .carry/s14/cpp312-new.tar.xz -C $S
mkdir -p $S/jflash_attn; cp python/frontend/*.py python/jflash_attn/_binding.py $S/jflash_attn/
xz -dc .carry/s14/rs-new.so.xz > $S/jflash_attn/_jflash_attn_rust.so
export PYTHONPATH=$S
M=jax_flash_attn-cpp,jflash_attn-rust,jax-nn-cudnn,fa3-jax
for r in 1 2 3; do
  timeout 150 python3 -m jax_flash_attn.bench --head-dim 128 --methods $M --json $L/d128-D$r.json --markdown $L/d128-D$r.md > $L/d128-D$r.log 2>&1
done
python3 -m jax_flash_attn.bench --merge $L/d128-D1.json $L/d128-D2.json $L/d128-D3.json --json $L/d128-D.json --markdown $L/d128-D.md > $L/merge.log 2>&1
cd $OUT && tar czf logsD.tgz logs && rm -rf logs
{ cat $L/../logs/d128-D.md 2>/dev/null; tar xzf $OUT/logsD.tgz -O logs/d128-D.md; } >&3
