#!/bin/bash
# Call D (given inline to the device tool): the whole GPU suite on main dc95df5, both bindings:
# C++ = the package of runA (every head dim, bf16), Rust = main's CI extension (bazel build
# //python:wheels; FlashAttention-2 at d 128 only, Hopper kernels at d 64 / 128 / 256).
L=$OUT/logs; mkdir -p $L; S=$PWD/build/site; rm -rf $S; mkdir -p $S
tar xJf .carry/s15/cpp312-final3.tar.xz -C $S
mkdir -p $S/jflash_attn; cp python/frontend/*.py python/jflash_attn/_binding.py $S/jflash_attn/
xz -dc .carry/s16/rs-main.so.xz > $S/jflash_attn/_jflash_attn_rust.so
export PYTHONPATH=$S
for b in rust cpp; do
  ( time XLA_FLAGS=--xla_gpu_autotune_level=0 timeout 270 python3 -m pytest tests -q -n 8 -p no:cacheprovider -rfE --bindings $b ) > $L/suite-$b.log 2>&1
  echo "== suite $b"; grep -E "passed|failed" $L/suite-$b.log | tail -1; grep -E "^(FAILED|ERROR)" $L/suite-$b.log | head -8
done
cd $OUT && tar czf logsS.tgz logs
