#!/bin/bash
# Call D: main e1ee4b8 (dQ's conversion beside the backward's last round) on the H100: standalone
# check, the C++ suite on it, and the tool's fwd+bwd with the C++ package of 5a55b5e (before) and of
# e1ee4b8 (after), FA3 beside each, before / after / after / before.
L=$OUT/logs; mkdir -p $L
exec 3>&1 > $L/runD.log 2>&1
set -x
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,power.limit --format=csv
python3 -m pip install --no-index --no-deps .whl/flash_attn3_jax-*.whl > $L/pip.log 2>&1
N=.carry/s13/bin/bwd_new; chmod +x $N
timeout 60 $N > $L/check.log 2>&1
for v in main new; do S=$PWD/build/site-$v; rm -rf $S; mkdir -p $S; tar xJf .carry/s13/cpp312-$v.tar.xz -C $S; done
export PYTHONPATH=$PWD/build/site-new
( time XLA_FLAGS=--xla_gpu_autotune_level=0 timeout 280 python3 -m pytest tests -q -n 8 -p no:cacheprovider -rfE --bindings cpp ) > $L/suite-cpp.log 2>&1
for v in main new; do
  PYTHONPATH=$PWD/build/site-$v timeout 100 python3 -m jax_flash_attn.bench --head-dim 128 --mode fwdbwd \
    --methods jax_flash_attn-cpp,fa3-jax --json $L/ab-$v.json --markdown $L/ab-$v.md > $L/ab-$v.log 2>&1
done
cd $OUT && tar czf logsD.tgz logs
{ grep -c PASS $L/check.log; grep -h -i "fail" $L/check.log | head -3
  echo "== suite cpp"; grep -E "passed|failed" $L/suite-cpp.log | tail -1; grep -E "^(FAILED|ERROR)" $L/suite-cpp.log | head -8
  for v in main new; do echo "== $v"; cat $L/ab-$v.md; tail -2 $L/ab-$v.log; done; } >&3
