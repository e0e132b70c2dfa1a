#!/bin/bash
# Thirteenth session, call A: bwd_stg (unmasked whole key blocks start their query-block walk
# spread over the blocks: n_block * n_iter / n_blocks) against main (5a55b5e): checks, timings
# alternated (order reversed each round), racecheck.
L=$OUT/logs; mkdir -p $L
exec 3>&1 > $L/runA.log 2>&1
set -x
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,power.limit --format=csv
M=.carry/s13/bin/bwd_main; S=.carry/s13/bin/bwd_stg; chmod +x $M $S
timeout 90 $S > $L/stg-check.log 2>&1
for r in 1 2 3; do
  if [ $((r % 2)) = 1 ]; then order="$M $S"; else order="$S $M"; fi
  for bin in $order; do echo "== round $r $(basename $bin)"; timeout 60 $bin bench 128 | grep -v PASS; done
done > $L/time128.log 2>&1
for d in 64 256; do for bin in $M $S; do echo "== d$d $(basename $bin)"; timeout 60 $bin time $d | grep -v PASS; done; done > $L/time-other.log 2>&1
timeout 60 compute-sanitizer --tool racecheck $S only 128 > $L/stg-racecheck.log 2>&1
cd $OUT && tar czf logsA.tgz logs
{ grep -c PASS $L/stg-check.log; grep -h -i "fail" $L/stg-check.log | head -3
  grep -E "==|bench" $L/time128.log $L/time-other.log | sed 's/.*logs.//'
  echo "== racecheck"; grep -E "SUMMARY|hazard" $L/stg-racecheck.log | tail -3; } >&3
