#!/bin/bash
# Ninth session, call C: the cut backward as a kernel of its own (bwd_cut2): checks, memcheck;
# main's backward (bwd_head) against the uncut kernel, alternated; few-key-block calls cut and uncut.
L=$OUT/logs; mkdir -p $L
exec 3>&1 > $L/runC.log 2>&1
set -x
B=.carry/s9/bin; chmod +x $B/*
( time timeout 150 $B/bwd_cut2 ) > $L/check.log 2>&1
for r in 1 2 3; do for v in head cut2; do echo "== round $r $v"; $B/bwd_$v bench 128 | grep bench; done; done > $L/bench.log 2>&1
for r in 1 2; do for u in 1 0; do echo "== round $r JFA_UNCUT=$u"
  for hs in "128 2 4096" "128 4 2048" "128 1 8192" "128 9 2048" "64 2 4096" "256 1 4096"; do JFA_UNCUT=$u $B/bwd_cut2 few $hs | grep bench; done
done; done > $L/few.log 2>&1
timeout 200 compute-sanitizer --tool memcheck $B/bwd_cut2 only 128 > $L/memcheck.log 2>&1
cd $OUT && tar czf logs.tgz logs
{ tail -4 $L/check.log; grep -c PASS $L/check.log; grep -E "FAIL|changed" $L/check.log | head; grep -c "cut key" $L/check.log
  sed 's/bench bwd bf16 //' $L/bench.log; sed 's/bench bwd bf16 //' $L/few.log; tail -2 $L/memcheck.log; } >&3
