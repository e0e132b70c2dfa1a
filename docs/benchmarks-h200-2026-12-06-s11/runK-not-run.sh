#!/bin/bash
# Eleventh session, call 3: main at b1f996e (the D = 128 unmasked backward's statistics come with
# Q/dO by the producer's bulk copies) on the GPU, most needed first (the budget may end the call):
# its standalone check and bstt's (the same by a 3-D tensor map), main-before (bwd_s10end) and gate
# (b1f996e) alternated, the d 128 table (CI's Rust extension of b1f996e, cuDNN, FA3), racecheck of
# bstt (d 128 cases: does racecheck follow the mbarrier for tensor copies?), the Rust suite.
L=$OUT/logs; mkdir -p $L
exec 3>&1 > $L/runK.log 2>&1
set -x
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,power.limit --format=csv
python3 -m pip install --no-index --no-deps .whl/flash_attn3_jax-*.whl > /tmp/pip.log 2>&1
H=.carry/s10/bin/bwd_s10end; G=.carry/s11/bin/bwd_gate; T=.carry/s11/bin/bwd_bstt; chmod +x $H $G $T
timeout 60 $G > $L/gate-check.log 2>&1
timeout 60 $T > $L/bstt-check.log 2>&1
for r in 1 2; do
  if [ $r = 1 ]; then order="$H $G"; else order="$G $H"; fi
  for bin in $order; do echo "== round $r $(basename $bin)"; timeout 60 $bin bench 128 | grep -v PASS; done
done > $L/time.log 2>&1
mkdir -p build/rs-new/jflash_attn; cp python/frontend/*.py python/jflash_attn/_binding.py build/rs-new/jflash_attn/
xz -dc .carry/s11/rs-new.so.xz > build/rs-new/jflash_attn/_jflash_attn_rust.so
export PYTHONPATH=$PWD/build/rs-new
timeout 100 python3 -m jflash_attn.bench --head-dim 128 --methods jflash_attn-rust,jax-nn-cudnn,fa3-jax \
  --json $L/d128-K.json --markdown $L/d128-K.md > $L/d128-K.log 2>&1
timeout 40 compute-sanitizer --tool racecheck $T only 128 > $L/bstt-racecheck.log 2>&1
(cd $OUT && tar czf logsK1.tgz logs)
( time XLA_FLAGS=--xla_gpu_autotune_level=0 timeout 200 python3 -m pytest tests -q -n 8 -p no:cacheprovider -rfE --bindings rust ) > $L/suite-rust.log 2>&1
cd $OUT && tar czf logsK.tgz logs
{ grep -c PASS $L/gate-check.log $L/bstt-check.log; grep -h failures $L/gate-check.log $L/bstt-check.log; grep -v "^=\|^+" $L/time.log | head -0; cat $L/time.log | grep -E "==|bench"
  echo "== suite"; grep -E "passed|failed" $L/suite-rust.log | tail -2; grep -E "^(FAILED|ERROR)" $L/suite-rust.log | head -8
  cat $L/d128-K.md; tail -2 $L/d128-K.log
  for f in bstt-racecheck; do echo "== $f"; grep -E "SUMMARY|hazard" $L/$f.log | tail -3; done; } >&3
