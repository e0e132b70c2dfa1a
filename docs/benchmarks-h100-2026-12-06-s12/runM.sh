#!/bin/bash
# Twelfth session, call 5: main cd4b066 (the statistics through a tensor map) on the H100: its
# standalone check, racecheck (beside the Rust suite), the d 128 table twice (both bindings:
# C++ built off-device for cp312, Rust = CI's extension of cd4b066; cuDNN, FA3), both suites.
L=$OUT/logs; mkdir -p $L
exec 3>&1 > $L/runM.log 2>&1
set -x
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,power.limit --format=csv
python3 -m pip install --no-index --no-deps .whl/flash_attn3_jax-*.whl > $L/pip.log 2>&1
T=.carry/s12/bin/bwd_s12tt; chmod +x $T
timeout 60 $T > $L/check.log 2>&1
S=$PWD/build/site; rm -rf $S; mkdir -p $S; tar xJf .carry/s12/cpp312-tt.tar.xz -C $S
mkdir -p $S/jflash_attn; cp python/frontend/*.py python/jflash_attn/_binding.py $S/jflash_attn/
xz -dc .carry/s12/rs-tt.so.xz > $S/jflash_attn/_jflash_attn_rust.so
export PYTHONPATH=$S
M=jax_flash_attn-cpp,jflash_attn-rust,jax-nn-cudnn,fa3-jax
timeout 150 python3 -m jax_flash_attn.bench --head-dim 128 --methods $M --json $L/d128-M1.json --markdown $L/d128-M1.md > $L/d128-M1.log 2>&1
(timeout 250 compute-sanitizer --tool racecheck $T only 128 > $L/racecheck.log 2>&1 &)
for b in rust cpp; do
  ( time XLA_FLAGS=--xla_gpu_autotune_level=0 timeout 240 python3 -m pytest tests -q -n 8 -p no:cacheprovider -rfE --bindings $b ) > $L/suite-$b.log 2>&1
done
timeout 150 python3 -m jax_flash_attn.bench --head-dim 128 --methods $M --json $L/d128-M2.json --markdown $L/d128-M2.md > $L/d128-M2.log 2>&1
python3 -m jax_flash_attn.bench --merge $L/d128-M1.json $L/d128-M2.json --json $L/d128-M.json --markdown $L/d128-M.md > $L/merge.log 2>&1
cd $OUT && tar czf logsM.tgz logs
{ grep -c PASS $L/check.log; grep -h -i "fail" $L/check.log | head -3
  for b in rust cpp; do echo "== suite $b"; grep -E "passed|failed" $L/suite-$b.log | tail -1; grep -E "^(FAILED|ERROR)" $L/suite-$b.log | head -8; done
  echo "== racecheck"; grep -c PASS $L/racecheck.log; grep -E "SUMMARY" $L/racecheck.log
  cat $L/d128-M.md; tail -2 $L/merge.log; } >&3
