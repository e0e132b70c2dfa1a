#!/bin/bash
# Call E (prepared in the seventeenth session, run in the eighteenth with the timeout raised from 200 to 280 s): the whole GPU
# suite on main (839cb4c: the front end with the bench's --gpu-clocks), both bindings. C++ = the package of the sixteenth session's calls (every head dim, bf16) with
# main's front end copied in; Rust = main's CI extension built with FlashAttention-2 at d 64 /
# 128 / 256 (.carry/s16/rs-all.so.xz), so that its d 64 / 256 cases run instead of skipping.
L=$OUT/logs; mkdir -p $L; S=$PWD/build/site; rm -rf $S; mkdir -p $S
tar xJf .carry/s15/cpp312-final3.tar.xz -C $S; cp python/frontend/*.py $S/jax_flash_attn/
mkdir -p $S/jflash_attn; cp python/frontend/*.py python/jflash_attn/_binding.py $S/jflash_attn/
xz -dc .carry/s16/rs-all.so.xz > $S/jflash_attn/_jflash_attn_rust.so
export PYTHONPATH=$S
for b in rust cpp; do
  ( time XLA_FLAGS=--xla_gpu_autotune_level=0 timeout 280 python3 -m pytest tests -q -n 8 -p no:cacheprovider -rfE --bindings $b ) > $L/suite-$b.log 2>&1
  echo "== suite $b"; grep -E "passed|failed" $L/suite-$b.log | tail -1; grep -E "^(FAILED|ERROR)" $L/suite-$b.log | head -8
done
cd $OUT && tar czf logsE.tgz logs
