#!/bin/bash
# Ninth session, call E: one fwd+bwd step of the tool with 2 heads x 4096 tokens (64 key blocks),
# kernel by kernel under ncu: main's Rust extension and the new one (the backward's cut), FA3.
L=$OUT/logs; mkdir -p $L
exec 3>&1 > $L/runE.log 2>&1
set -x
python3 -m pip install --no-index --no-deps .whl/flash_attn3_jax-*.whl > $L/pip.log 2>&1
for d in new main; do mkdir -p build/rs-$d/jflash_attn; cp python/frontend/*.py python/jflash_attn/_binding.py build/rs-$d/jflash_attn/
  xz -dc .carry/s9/rs-$d.so.xz > build/rs-$d/jflash_attn/_jflash_attn_rust.so; done
for v in main new; do for hs in "2 4096" "1 8192"; do set -- $hs
  PYTHONPATH=$PWD/build/rs-$v timeout 100 ncu --clock-control none --metrics gpu__time_duration.sum --csv \
    python3 tests/device/step_kernels.py jflash_attn-rust $2 --heads $1 --tokens $2 > $L/step-$v-h$1.csv 2> $L/step-$v-h$1.err
  python3 tests/device/step_kernels.py --summarize $L/step-$v-h$1.csv > $L/step-$v-h$1.txt 2>&1
done; done
PYTHONPATH=$PWD/build/rs-new timeout 100 ncu --clock-control none --metrics gpu__time_duration.sum --csv \
  python3 tests/device/step_kernels.py fa3-jax 4096 --heads 2 --tokens 4096 > $L/step-fa3-h2.csv 2> $L/step-fa3-h2.err
python3 tests/device/step_kernels.py --summarize $L/step-fa3-h2.csv > $L/step-fa3-h2.txt 2>&1
cd $OUT && tar czf logs.tgz logs
{ for f in $L/step-*.txt; do echo "== $(basename $f)"; cut -c1-150 $f; done; } >&3
