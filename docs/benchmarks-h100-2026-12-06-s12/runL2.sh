#!/bin/bash
# Twelfth session, call 2 (the machine of call 1): the GPU suite on both bindings (main a1a7a40).
L=$OUT/logs; mkdir -p $L
exec 3>&1 > $L/runL2.log 2>&1
set -x
export PYTHONPATH=$PWD/build/site
ls $PYTHONPATH/jax_flash_attn $PYTHONPATH/jflash_attn || exit 3
for b in rust cpp; do
  ( time XLA_FLAGS=--xla_gpu_autotune_level=0 timeout 280 python3 -m pytest tests -q -n 8 -p no:cacheprovider -rfE --bindings $b ) > $L/suite-$b.log 2>&1
done
cd $OUT && tar czf logsL2.tgz logs
{ for b in rust cpp; do echo "== suite $b"; grep -E "passed|failed" $L/suite-$b.log | tail -1; grep real $L/suite-$b.log
  grep -E "^(FAILED|ERROR)" $L/suite-$b.log | head -8; done; } >&3
