#!/bin/bash
# Eleventh session, call 2 (the machine of call 1): main's backward and bst alternated,
# standalone, then the d 128 table: C++ = main + bst, Rust = main (7848a0e's kernels), cuDNN, FA3.
L=$OUT/logs; mkdir -p $L
exec 3>&1 > $L/runJ.log 2>&1
set -x
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,power.limit --format=csv
ls build/site build/rs-end || exit 3
python3 -m pip install --no-index --no-deps .whl/flash_attn3_jax-*.whl > $L/pip.log 2>&1
B=.carry/s10/bin/bwd_s10end; X=.carry/s11/bin/bwd_bst; chmod +x $B $X
for r in 1 2; do
  if [ $r = 1 ]; then order="$B $X"; else order="$X $B"; fi
  for bin in $order; do echo "== round $r $(basename $bin)"; timeout 60 $bin bench 128 | grep -v PASS; done
done > $L/bst-time.log 2>&1
export PYTHONPATH=$PWD/build/site
timeout 200 python3 -m jax_flash_attn.bench --head-dim 128 --methods jax_flash_attn-cpp,jflash_attn-rust,jax-nn-cudnn,fa3-jax \
  --json $L/d128-J.json --markdown $L/d128-J.md > $L/d128-J.log 2>&1
cd $OUT && tar czf logsJ.tgz logs
{ cat $L/bst-time.log; cat $L/d128-J.md; tail -2 $L/d128-J.log; } >&3
