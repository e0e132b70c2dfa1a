#!/bin/bash
# Twelfth session, call 1: main (a1a7a40) on the H100: standalone checks (main's backward = bwd_gate,
# bstt = the same copies by a 3-D tensor map), main-before (bwd_s10end) / main / bstt alternated,
# the d 128 table with both bindings (C++ built off-device for cp312, Rust = CI's extension of
# a1a7a40), cuDNN, FA3; racecheck of bstt.
L=$OUT/logs; mkdir -p $L
exec 3>&1 > $L/runL1.log 2>&1
set -x
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,power.limit --format=csv
python3 -m pip install --no-index --no-deps .whl/flash_attn3_jax-*.whl > $L/pip.log 2>&1
H=.carry/s10/bin/bwd_s10end; G=.carry/s11/bin/bwd_gate; T=.carry/s11/bin/bwd_bstt; chmod +x $H $G $T
timeout 60 $G > $L/gate-check.log 2>&1
timeout 60 $T > $L/bstt-check.log 2>&1
for r in 1 2; do
  if [ $r = 1 ]; then order="$H $G $T"; else order="$T $G $H"; fi
  for bin in $order; do echo "== round $r $(basename $bin)"; timeout 60 $bin bench 128 | grep -v PASS; done
done > $L/time.log 2>&1
S=$PWD/build/site; mkdir -p $S; tar xJf .carry/s12/cpp312.tar.xz -C $S
mkdir -p $S/jflash_attn; cp python/frontend/*.py python/jflash_attn/_binding.py $S/jflash_attn/
xz -dc .carry/s12/rs-main.so.xz > $S/jflash_attn/_jflash_attn_rust.so
export PYTHONPATH=$S
timeout 260 python3 -m jax_flash_attn.bench --head-dim 128 --methods jax_flash_attn-cpp,jflash_attn-rust,jax-nn-cudnn,fa3-jax \
  --json $L/d128-L.json --markdown $L/d128-L.md > $L/d128-L.log 2>&1
timeout 40 compute-sanitizer --tool racecheck $T only 128 > $L/bstt-racecheck.log 2>&1
cd $OUT && tar czf logsL1.tgz logs
{ grep -c PASS $L/gate-check.log $L/bstt-check.log; grep -h -i "fail" $L/gate-check.log $L/bstt-check.log | head -3
  grep -E "==|bench" $L/time.log; cat $L/d128-L.md; tail -3 $L/d128-L.log
  echo "== racecheck"; grep -E "SUMMARY|hazard" $L/bstt-racecheck.log | tail -3; } >&3
