#!/bin/bash
# Call F: the d 64 forward, 3% behind cuDNN at 2k-16k in runE. n192s4 (four stages of 192-key
# blocks from 4096 keys, against three) against main, alternating; then ncu of main's d 64 and
# d 128 forward kernels at 16k (pipes, warp states), for where d 64 spends its time.
L=$OUT/logs; mkdir -p $L
B=.carry/s14/bin; chmod +x $B/*
ext() { grep bench | command sed 's/.*: *\([0-9.]*\) ms, *\([0-9.]*\) TF.*/\1/' | tr '\n' ' '; }
for r in 1 2 3 4 5 6 7 8; do if [ $((r % 2)) = 1 ]; then o="fwd_main14 fwd_n192s4"; else o="fwd_n192s4 fwd_main14"; fi
  for b in $o; do echo "$b $(timeout 60 $B/$b time 64 | ext)"; done; done | tee $L/f64-time.log
S="--section SpeedOfLight --section ComputeWorkloadAnalysis --section WarpStateStats --section InstructionStats"
timeout 120 ncu --clock-control none $S -k regex:flash_fwd_kernel --launch-skip 3 --launch-count 1 $B/fwd_main14 few 64 16 16384 > $L/ncu-f64.txt 2>&1; echo "ncu64 rc $?"
timeout 120 ncu --clock-control none $S -k regex:flash_fwd_kernel --launch-skip 3 --launch-count 1 $B/fwd_main14 ncu > $L/ncu-f128.txt 2>&1; echo "ncu128 rc $?"
grep -E "Duration|SM Frequency|Compute \(SM\) Throughput|Executed Ipc A|Issue Slots Busy|Stall|Warp Cycles Per Issued" $L/ncu-f64.txt | head -30
cd $OUT && tar czf logsF.tgz logs
