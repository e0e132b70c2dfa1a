#!/bin/bash
# Call F (prepared, not run this session; carry [".carry/s17"]): CTA pairs again, with a deeper
# ring (runF-cluster3.diff on main 50b4813: the pairs of runB-cluster.diff, and every unmasked
# d 128 call on 128-key blocks with three K/V stages, O stored from registers, where the third
# stage fits). f_cl3: pairs + three stages; f_m3: three stages alone (JFA_CLUSTER=0), the
# control; f_tc: main's kernels. Check of f_cl3, `time 128` alternated (default timing), then
# main with JFA_BENCH_MS=300 against its default, to calibrate the standalone bench against the
# tool's sustained samples; and the d 64 three-consumer kernel with O's stage at every length.
L=$OUT/logs; mkdir -p $L; MED=tests/device/median_times.py
exec 3>&1 > $L/runF.log 2>&1
B=.carry/s17; for f in $B/f_*.xz; do unxz -k -f $f; done; chmod +x $B/f_*
timeout 100 $B/f_cl3 > $L/check-cl3.log 2>&1; echo "check cl3 rc $? $(head -1 $L/check-cl3.log) $(grep -c FAIL $L/check-cl3.log) FAIL, $(tail -1 $L/check-cl3.log)" >&3
ext() { grep bench | command sed 's/.*: *\([0-9.]*\) ms, *\([0-9.]*\) TF.*/\1/' | tr '\n' ' '; }
for r in 1 2 3; do for b in f_tc f_m3 f_cl3; do
  echo "$b $(timeout 30 $B/$b time 128 | ext)" >> $L/time128.log
done; done
python3 $MED $L/time128.log f_tc >&3
for r in 1 2; do
  echo "burst $(timeout 30 $B/f_tc time 128 | ext)" >> $L/sustained.log
  echo "sustained $(JFA_BENCH_MS=300 timeout 60 $B/f_tc time 128 | ext)" >> $L/sustained.log
done
python3 $MED $L/sustained.log burst >&3
# f_3so (runF-3wg-ostage.diff): the d 64 three-consumer kernel stages O in shared memory at every
# length (no spills) instead of storing it from registers (68 bytes of spills) over 4k keys.
timeout 60 $B/f_3so only 64 > $L/check-3so.log 2>&1; echo "check 3so (d 64) rc $? $(tail -1 $L/check-3so.log)" >&3
for r in 1 2 3; do for b in f_tc f_3so; do
  echo "$b $(timeout 30 $B/$b time 64 | ext)" >> $L/time64.log
done; done
python3 $MED $L/time64.log f_tc >&3
cd $OUT && tar czf logsF.tgz logs
