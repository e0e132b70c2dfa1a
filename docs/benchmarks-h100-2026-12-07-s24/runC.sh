#!/bin/bash
# Call C (twenty-fourth session; carry [".carry/s24", ".carry/s24c"]): `pall`, the persistent
# backward at every length and at d 64 too (runC-variant.diff: kPersistentBwd for D 64 and 128,
# kPersistMinQueries 1), now that dK/dV leave by TMA stores (btma). The twenty-second session
# measured persistence losing at 512 and at d 64 with the per-row copies; call E of the
# twenty-third put that loss in the copies' issue loop. Checks and the standalone A/B against main
# (bwd_fin) at d 128 (only 512 differs) and d 64 (every length), sanitizers on the d 64 cases.
L=$OUT/logs; mkdir -p $L; C=.carry/s24
exec 3>&1 > $L/runC.log 2>&1
left() { t=$(($1 - SECONDS)); [ $t -gt 5 ] && echo $t || echo 1; }  # seconds to a mark of the call
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,power.limit --format=csv >&3
timeout $(left 170) bash tests/device/ab_standalone.sh $L/ab128 bwd_fin $C/bwd_fin .carry/s24c/bwd_pall >&3
ext() { grep bench | sed 's/.*: *\([0-9.]*\) ms, *\([0-9.]*\) TF.*/\1/' | tr '\n' ' '; }
for r in 1 2 3; do for b in $C/bwd_fin .carry/s24c/bwd_pall; do
  echo "$(basename $b) $(timeout 15 $b time 64 | ext)" >> $L/time64.log
  echo "$(basename $b) $(JFA_BENCH_MS=300 timeout 25 $b time 64 | ext)" >> $L/sustained64.log
done; done
{ echo "== d64 bursts"; python3 tests/device/median_times.py $L/time64.log bwd_fin
  echo "== d64 sustained"; python3 tests/device/median_times.py $L/sustained64.log bwd_fin; } >&3
for tool in memcheck racecheck; do
  timeout $(left $([ $tool = memcheck ] && echo 330 || echo 410)) compute-sanitizer --tool $tool \
    --kernel-name kns=flash_bwd_kernel .carry/s24c/bwd_pall only 64 > $L/$tool-64.log 2>&1
  echo "$tool 64 rc $? $(grep -E 'SUMMARY|hazard' $L/$tool-64.log | tail -2)" >&3
done
tar czf $OUT/logs.tgz -C $OUT logs
