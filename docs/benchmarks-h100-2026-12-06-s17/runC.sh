#!/bin/bash
# Call C: main's d 128 table three times on one machine (both bindings, cuDNN, FA3, samples
# alternating, --gpu-clocks), merged by medians: the one-run table of call A (`runC.sh` of the
# sixteenth session) had the 16k forward at 660.7 and fwd+bwd at 624.3 against 665 and 625.
# Packages as in runC.sh: C++ = .carry/s15/cpp312-final3.tar.xz with main's front end, Rust =
# .carry/s16/rs-all.so.xz (main's CI extension with FlashAttention-2 at d 64/128/256).
L=$OUT/logs; mkdir -p $L
exec 3>&1 > $L/runC.log 2>&1
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,power.limit --format=csv >&3
python3 -m pip install --no-index --no-deps .whl/flash_attn3_jax-*.whl > $L/pip.log 2>&1
S=$PWD/build/site; rm -rf $S; mkdir -p $S; tar xJf .carry/s15/cpp312-final3.tar.xz -C $S
cp python/frontend/*.py $S/jax_flash_attn/
mkdir -p $S/jflash_attn; cp python/frontend/*.py python/jflash_attn/_binding.py $S/jflash_attn/
xz -dc .carry/s16/rs-all.so.xz > $S/jflash_attn/_jflash_attn_rust.so
export PYTHONPATH=$S
M=jax_flash_attn-cpp,jflash_attn-rust,jax-nn-cudnn,fa3-jax
for r in 1 2 3; do
  timeout 170 python3 -m jax_flash_attn.bench --gpu-clocks --head-dim 128 --methods $M --json $L/d128-C$r.json --markdown $L/d128-C$r.md > $L/d128-C$r.log 2>&1
  echo "run $r rc $? at ${SECONDS}s" >&3
done
python3 -m jax_flash_attn.bench --merge $L/d128-C?.json --json $L/d128-C.json --markdown $L/d128-C.md > $L/merge.log 2>&1
head -45 $L/d128-C.md >&3
cd $OUT && tar czf logsC.tgz logs
