#!/bin/bash
# Call B: bwd_mcq (d 128 unmasked uncut: clusters of two key blocks, Q and dO halves multicast)
# against main: clusters query, checks, racecheck, 12 alternating `time 128` samples.
L=$OUT/logs; mkdir -p $L
M=.carry/s13/bin/bwd_main; C=.carry/s13/bin/bwd_mcq; chmod +x $M $C
timeout 20 $C clusters 2>&1 | tee $L/clusters.log
timeout 90 $C > $L/mcq-check.log 2>&1; echo "check rc $?"; grep -c PASS $L/mcq-check.log; grep -i -m3 "fail" $L/mcq-check.log
for r in $(seq 1 12); do if [ $((r % 2)) = 1 ]; then o="$C $M"; else o="$M $C"; fi
  for b in $o; do echo "$(basename $b) $(timeout 60 $b time 128 | grep bench | sed 's/.*: *\([0-9.]*\) ms, *\([0-9.]*\) TF.*/\2/' | tr '\n' ' ')"; done; done | tee $L/mcq-time.log
timeout 120 compute-sanitizer --tool racecheck $C only 128 > $L/mcq-racecheck.log 2>&1; echo "racecheck rc $?"; grep -E "SUMMARY|hazard" $L/mcq-racecheck.log | tail -3
timeout 120 compute-sanitizer --tool memcheck $C only 128 > $L/mcq-memcheck.log 2>&1; echo "memcheck rc $?"; grep -E "SUMMARY|ERROR" $L/mcq-memcheck.log | tail -3
