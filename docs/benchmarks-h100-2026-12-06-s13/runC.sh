#!/bin/bash
# Call C: bwd_pdl (dq_convert_kernel launched as a programmatic dependent of the backward, waiting
# per (batch, head) on counters the backward's dQ warps raise, so that it runs on the SMs of the
# last round) against main: checks, memcheck, alternating timings.
L=$OUT/logs; mkdir -p $L
M=.carry/s13/bin/bwd_main; P=.carry/s13/bin/bwd_pdl; chmod +x $M $P
timeout 90 $P > $L/pdl-check.log 2>&1; echo "check rc $?"; grep -c PASS $L/pdl-check.log; grep -i -m3 "fail" $L/pdl-check.log
sed() { command sed "$@"; }
for r in $(seq 1 10); do if [ $((r % 2)) = 1 ]; then o="$P $M"; else o="$M $P"; fi
  for b in $o; do echo "$(basename $b) $(timeout 60 $b time 128 | grep bench | sed 's/.*: *\([0-9.]*\) ms, *\([0-9.]*\) TF.*/\1/' | tr '\n' ' ')"; done; done | tee $L/pdl-time128.log
for d in 64 256; do for r in 1 2 3 4; do if [ $((r % 2)) = 1 ]; then o="$P $M"; else o="$M $P"; fi
  for b in $o; do echo "d$d $(basename $b) $(timeout 60 $b time $d | grep bench | sed 's/.*: *\([0-9.]*\) ms, *\([0-9.]*\) TF.*/\1/' | tr '\n' ' ')"; done; done; done | tee $L/pdl-time-other.log
for r in 1 2; do for b in $P $M; do echo "== $r $(basename $b)"; timeout 90 $b bench 128 | grep causal; done; done | tee $L/pdl-causal.log
for f in "few 128 2 4096" "few 128 9 2048" "few 64 2 4096"; do for b in $P $M; do echo "== $f $(basename $b)"; timeout 60 $b $f | grep bench; done; done | tee $L/pdl-few.log
timeout 150 compute-sanitizer --tool memcheck $P only 128 > $L/pdl-memcheck.log 2>&1; echo "memcheck rc $?"; grep -E "SUMMARY" $L/pdl-memcheck.log | tail -2
