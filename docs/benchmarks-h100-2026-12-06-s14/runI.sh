#!/bin/bash
# Call I: fwd_ahead (d 64: block i + 1's S issued before block i's softmax, two S buffers,
# 128-key blocks at every length) against main (128-key blocks below 4096 keys, 192 from there):
# the forward check, memcheck on it, 8 alternating rounds of time 64, two rounds of causal.
L=$OUT/logs; mkdir -p $L
B=.carry/s14/bin; chmod +x $B/*
timeout 100 $B/fwd_ahead > $L/ahead-check.log 2>&1; echo "check rc $?"; grep -c PASS $L/ahead-check.log; grep -m5 FAIL $L/ahead-check.log; tail -1 $L/ahead-check.log
ext() { grep bench | command sed 's/.*: *\([0-9.]*\) ms, *\([0-9.]*\) TF.*/\1/' | tr '\n' ' '; }
for r in 1 2 3 4 5 6 7 8; do if [ $((r % 2)) = 1 ]; then o="fwd_main14 fwd_ahead"; else o="fwd_ahead fwd_main14"; fi
  for b in $o; do echo "$b $(timeout 60 $B/$b time 64 | ext)"; done; done | tee $L/ahead-time64.log
for r in 1 2; do for b in fwd_ahead fwd_main14; do echo "$b causal $(timeout 100 $B/$b bench 64 | grep causal | ext)"; done; done | tee $L/ahead-causal.log
timeout 150 compute-sanitizer --tool memcheck --kernel-name kns=flash_fwd_kernel $B/fwd_ahead > $L/ahead-memcheck.log 2>&1; echo "memcheck rc $?"; grep -E "SUMMARY" $L/ahead-memcheck.log | tail -1
timeout 150 compute-sanitizer --tool racecheck --kernel-name kns=flash_fwd_kernel $B/fwd_ahead > $L/ahead-racecheck.log 2>&1; echo "racecheck rc $?"; grep -E "SUMMARY" $L/ahead-racecheck.log | tail -1
cd $OUT && tar czf logsI.tgz logs
