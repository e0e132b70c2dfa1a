#!/bin/bash
# Call B: bwd_tail2 (the tail launch only for pieces of 2048+ queries, not at d 64) against main.
L=$OUT/logs; mkdir -p $L
M=.carry/s14/bin/bwd_head; P=.carry/s14/bin/bwd_tail2; chmod +x $M $P
nvidia-smi --query-gpu=name,clocks.max.sm,power.limit --format=csv > $L/gpu.txt
timeout 150 $P > $L/tail-check.log 2>&1; echo "check rc $?"; grep -c PASS $L/tail-check.log; grep -i -m5 "fail" $L/tail-check.log; grep "sq=4096 sk=[15]" $L/tail-check.log
ext() { grep bench | command sed 's/.*: *\([0-9.]*\) ms, *\([0-9.]*\) TF.*/\1/' | tr '\n' ' '; }
for r in $(seq 1 10); do if [ $((r % 2)) = 1 ]; then o="$P $M"; else o="$M $P"; fi
  for b in $o; do echo "$(basename $b) $(timeout 60 $b time 128 | ext)"; done; done | tee $L/tail-time128.log
for d in 256 64; do for r in 1 2 3 4 5 6; do if [ $((r % 2)) = 1 ]; then o="$P $M"; else o="$M $P"; fi
  for b in $o; do echo "d$d $(basename $b) $(timeout 60 $b time $d | ext)"; done; done; done | tee $L/tail-time-other.log
timeout 200 compute-sanitizer --tool memcheck $P only 128 > $L/tail-memcheck.log 2>&1; echo "memcheck rc $?"; grep -E "SUMMARY|FAIL|failures" $L/tail-memcheck.log | tail -3
cd $OUT && tar czf logs.tgz logs && rm -rf logs
