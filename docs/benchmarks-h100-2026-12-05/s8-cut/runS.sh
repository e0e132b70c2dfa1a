#!/bin/bash
# Eighth session, call S: the forward's cut last round (fwd-split), standalone check.
L=$OUT/logs; mkdir -p $L
B=.carry/s8/split
( time $B ) > $L/check.log 2>&1
for r in 1 2 3; do
  for v in cut uncut; do
    [ $r = 2 ] && v=$([ $v = cut ] && echo uncut || echo cut)
    echo "== round $r $v"
    if [ $v = uncut ]; then JFA_UNCUT=1 $B time 128; else $B time 128; fi
  done
done > $L/time128.log 2>&1
for v in cut uncut; do echo "== $v"; if [ $v = uncut ]; then JFA_UNCUT=1 $B time 64; JFA_UNCUT=1 $B time 256; else $B time 64; $B time 256; fi; done > $L/time64-256.log 2>&1
timeout 240 compute-sanitizer --tool memcheck $B > $L/memcheck.log 2>&1 &
wait
cd $OUT && tar czf logs.tgz logs
tail -2 $L/check.log; grep -c PASS $L/check.log; grep FAIL $L/check.log | head; grep "cut tiles" $L/check.log | head -4
cat $L/time128.log $L/time64-256.log; tail -3 $L/memcheck.log
