#!/bin/bash
# ab_standalone.sh LOGS BASE BIN... (on the device, from the repository root): A/B of standalone
# check builds, all of sm90_fwd_check.cu or all of sm90_bwd_check.cu (both take `bench` and
# `time D` and print the same bench lines), xz-compressed in the carried folder of each BIN path.
# Each build runs its check cases and full bench once (bench-NAME.log; its causal lines, one run,
# go to causal.log), then `time D` (D = $HEAD_DIM, default 128) alternates over the builds for
# three rounds, in 20-call bursts (time.log) and sustained (JFA_BENCH_MS=300, sustained.log: the
# power-limited state the benchmark tool's samples measure; docs/hopper-notes.md, seventeenth
# session). Prints each build's check result and the medians against BASE.
L=$1; base=$2; shift 2; mkdir -p $L
for b in "$@"; do unxz -k -f $b.xz && chmod +x $b; done
ext() { grep bench | sed 's/.*: *\([0-9.]*\) ms, *\([0-9.]*\) TF.*/\1/' | tr '\n' ' '; }
for b in "$@"; do
  n=$(basename $b)
  timeout 100 $b bench > $L/bench-$n.log 2>&1
  echo "$n rc $? $(grep -c PASS $L/bench-$n.log) PASS $(grep -c FAIL $L/bench-$n.log) FAIL, $(grep failures $L/bench-$n.log)"
  echo "$n $(grep causal $L/bench-$n.log | ext)" >> $L/causal.log
done
for r in 1 2 3; do for b in "$@"; do
  echo "$(basename $b) $(timeout 30 $b time ${HEAD_DIM:-128} | ext)" >> $L/time.log
  echo "$(basename $b) $(JFA_BENCH_MS=300 timeout 60 $b time ${HEAD_DIM:-128} | ext)" >> $L/sustained.log
done; done
MED=tests/device/median_times.py
echo "== causal (one run, ms at 512-16k)"; python3 $MED $L/causal.log $base
echo "== unmasked, bursts"; python3 $MED $L/time.log $base
echo "== unmasked, sustained"; python3 $MED $L/sustained.log $base
