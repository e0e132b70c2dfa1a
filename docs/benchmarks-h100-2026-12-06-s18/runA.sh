#!/bin/bash
# Call A (eighteenth session; carry [".carry/s19"]): the backward's key blocks walk their query
# blocks from staggered starts (runA-variants.diff on main dd29108, -DJFA_STAGGER=G: key block n
# starts at step (n % G) * n_iter / G and wraps), so that the CTAs of a head running together
# reduce-add their dQ tiles into G different places instead of one; and L2 cache hints
# (the same diff, -DJFA_HINTS=1: Q, dO and their statistics loaded and dQ reduce-added with an
# evict_last policy, as FA3 does; =2: also K and V with evict_first). b_tc: main's kernels.
# Check + full bench (unmasked and causal) once each, then `time 128` alternated three rounds,
# default bursts and sustained (JFA_BENCH_MS=300, the power-limited state of the tool's samples).
L=$OUT/logs; mkdir -p $L; MED=tests/device/median_times.py
exec 3>&1 > $L/runA.log 2>&1
nvidia-smi --query-gpu=name,clocks.max.sm,power.limit --format=csv,noheader >&3
B=.carry/s19; for f in $B/b_*.xz; do unxz -k -f $f; done; chmod +x $B/b_*
BINS="b_tc b_st4 b_st16 b_st128 b_hq b_hall"
for b in $BINS; do
  timeout 100 $B/$b bench > $L/bench-$b.log 2>&1
  echo "$b rc $? $(grep -c FAIL $L/bench-$b.log) FAIL, $(grep failures $L/bench-$b.log)" >&3
done
ext() { grep bench | command sed 's/.*: *\([0-9.]*\) ms, *\([0-9.]*\) TF.*/\1/' | tr '\n' ' '; }
for b in $BINS; do echo "$b $(grep causal $L/bench-$b.log | ext)" >> $L/causal.log; done
for r in 1 2 3; do for b in $BINS; do
  echo "$b $(timeout 30 $B/$b time 128 | ext)" >> $L/time128.log
  echo "$b $(JFA_BENCH_MS=300 timeout 60 $B/$b time 128 | ext)" >> $L/sustained128.log
done; done
echo "== causal (one run, ms at 512-16k)" >&3; python3 $MED $L/causal.log b_tc >&3
echo "== unmasked, bursts" >&3; python3 $MED $L/time128.log b_tc >&3
echo "== unmasked, sustained" >&3; python3 $MED $L/sustained128.log b_tc >&3
cd $OUT && tar czf logsA.tgz logs
