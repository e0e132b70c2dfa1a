#!/bin/bash
# Call E: main 5a0a30d on the H100: racecheck of the backward kernels on the d 128 check cases
# (the tail launch among them), and the head dim 64 and 256 tables (C++ package with every head
# dim, bf16; cuDNN and FA3 beside it; FA3 has no d 256). Then a diagnostic: main against
# ovl64 (the conversion's overlap at d 64 too) and nowait (the same, the dQ warp counting
# without waiting for its reduce-adds to land: unsafe, for timing only), time 64 and time 128.
L=$OUT/logs; mkdir -p $L
exec 3>&1 > $L/runE.log 2>&1
set -x
F=.carry/s14/bin/bwd_final14; chmod +x $F
compute-sanitizer --help | grep -i -A3 "kernel-name" | head -8
timeout 240 compute-sanitizer --tool racecheck --kernel-name kns=flash_bwd_kernel $F only 128 > $L/racecheck.log 2>&1; echo "racecheck rc $?"
python3 -m pip install --no-index --no-deps .whl/flash_attn3_jax-*.whl > $L/pip.log 2>&1
S=$PWD/build/site; rm -rf $S; mkdir -p $S; tar xJf .carry/s14/cpp312-all.tar.xz -C $S
export PYTHONPATH=$S
timeout 150 python3 -m jax_flash_attn.bench --head-dim 64 --methods jax_flash_attn-cpp,jax-nn-cudnn,fa3-jax --json $L/d64-E.json --markdown $L/d64-E.md > $L/d64-E.log 2>&1
timeout 200 python3 -m jax_flash_attn.bench --head-dim 256 --methods jax_flash_attn-cpp,jax-nn-cudnn,fa3-jax --json $L/d256-E.json --markdown $L/d256-E.md > $L/d256-E.log 2>&1
ext() { grep bench | command sed 's/.*: *\([0-9.]*\) ms, *\([0-9.]*\) TF.*/\1/' | tr '\n' ' '; }
B=.carry/s14/bin; chmod +x $B/*
for d in 64 128; do for r in 1 2 3 4; do if [ $((r % 2)) = 1 ]; then o="bwd_final14 bwd_ovl64 bwd_nowait"; else o="bwd_nowait bwd_ovl64 bwd_final14"; fi
  for b in $o; do echo "d$d $b $(timeout 60 $B/$b time $d | ext)"; done; done; done > $L/diag-time.log
cd $OUT && tar czf logsE.tgz logs
{ grep -c PASS $L/racecheck.log; grep -E "SUMMARY|hazard|failures|rror" $L/racecheck.log | tail -4
  cat $L/d64-E.md $L/d256-E.md $L/diag-time.log; tail -2 $L/d64-E.log $L/d256-E.log; } >&3
