#!/bin/bash
# Call A: bwd_tail (calls of more than two whole rounds: the rounds in the uncut kernel, the last
# round's key blocks cut into pieces by a second, programmatically dependent launch of the cut
# kernel) against main (bwd_head): checks, alternating timings, memcheck.
L=$OUT/logs; mkdir -p $L
M=.carry/s14/bin/bwd_head; P=.carry/s14/bin/bwd_tail; chmod +x $M $P
nvidia-smi --query-gpu=name,clocks.max.sm,power.limit --format=csv > $L/gpu.txt
timeout 150 $P > $L/tail-check.log 2>&1; echo "check rc $?"; grep -c PASS $L/tail-check.log; grep -i -m5 "fail" $L/tail-check.log; grep "2048 sk=2048" $L/tail-check.log
ext() { grep bench | command sed 's/.*: *\([0-9.]*\) ms, *\([0-9.]*\) TF.*/\1/' | tr '\n' ' '; }
for r in $(seq 1 10); do if [ $((r % 2)) = 1 ]; then o="$P $M"; else o="$M $P"; fi
  for b in $o; do echo "$(basename $b) $(timeout 60 $b time 128 | ext)"; done; done | tee $L/tail-time128.log
for d in 64 256; do for r in 1 2 3 4; do if [ $((r % 2)) = 1 ]; then o="$P $M"; else o="$M $P"; fi
  for b in $o; do echo "d$d $(basename $b) $(timeout 60 $b time $d | ext)"; done; done; done | tee $L/tail-time-other.log
timeout 200 compute-sanitizer --tool memcheck $P only 128 > $L/tail-memcheck.log 2>&1; echo "memcheck rc $?"; grep -E "SUMMARY|FAIL|failures" $L/tail-memcheck.log | tail -3
cd $OUT && tar czf logs.tgz logs && rm -rf logs
