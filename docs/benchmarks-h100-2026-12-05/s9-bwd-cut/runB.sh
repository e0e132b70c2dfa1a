#!/bin/bash
# Ninth session, call B: the backward's cut last round (bwd_cut, the working tree) against main's
# backward (bwd_head), standalone: checks, memcheck, timings alternated.
L=$OUT/logs; mkdir -p $L
exec 3>&1 > $L/runB.log 2>&1
set -x
B=.carry/s9/bin; chmod +x $B/*
nvidia-smi --query-gpu=name,clocks.max.sm,power.limit --format=csv
( time timeout 150 $B/bwd_cut ) > $L/bwd_check.log 2>&1
( time timeout 100 $B/fwd_cut ) > $L/fwd_check.log 2>&1
for r in 1 2 3; do
  for v in head cut uncut; do
    echo "== round $r $v"
    case $v in head) $B/bwd_head time 128;; cut) $B/bwd_cut time 128;; uncut) JFA_UNCUT=1 $B/bwd_cut time 128;; esac
  done
done > $L/time128.log 2>&1
for v in head cut head cut; do echo "== $v"; $B/bwd_$v few 128 2 4096; $B/bwd_$v few 128 4 2048; $B/bwd_$v few 128 2 8192; done > $L/few.log 2>&1
for v in head cut; do echo "== $v"; $B/bwd_$v time 64; $B/bwd_$v time 256; done > $L/time64-256.log 2>&1
for v in head cut; do echo "== $v"; $B/bwd_$v bench 128 | grep causal; done > $L/causal.log 2>&1
timeout 200 compute-sanitizer --tool memcheck $B/bwd_cut only 128 > $L/memcheck.log 2>&1
cd $OUT && tar czf logs.tgz logs
{ tail -3 $L/bwd_check.log; grep -c PASS $L/bwd_check.log; grep -E "FAIL|cut key|changed" $L/bwd_check.log | head -12
  tail -3 $L/fwd_check.log
  grep -E "==|bench" $L/time128.log | sed 's/bench bwd bf16 //'; grep -E "==|bench" $L/few.log | sed 's/bench bwd bf16 //'
  cat $L/time64-256.log $L/causal.log | sed 's/bench bwd bf16 //'; tail -3 $L/memcheck.log; } >&3
