#!/bin/bash
# Call C (twenty-third session; carry [".carry/s24"]): the persistent backward's epilogue with dV's
# rows in the consumer's dQ stage (bwd_var: one staging round per block instead of two) against
# main (bwd_fin): both checks and the standalone A/B (tests/device/ab_standalone.sh, time 128,
# three alternated rounds), then memcheck and racecheck on bwd_var's d 128 cases.
L=$OUT/logs; mkdir -p $L; C=.carry/s24
exec 3>&1 > $L/runC.log 2>&1
left() { t=$(($1 - SECONDS)); [ $t -gt 5 ] && echo $t || echo 1; }  # seconds to a mark of the call
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,power.limit --format=csv >&3
timeout $(left 200) bash tests/device/ab_standalone.sh $L/ab bwd_fin $C/bwd_fin $C/bwd_var >&3
for tool in memcheck racecheck; do
  timeout $(left $([ $tool = memcheck ] && echo 250 || echo 330)) compute-sanitizer --tool $tool \
    --kernel-name kns=flash_bwd_kernel $C/bwd_var only 128 > $L/$tool-128.log 2>&1
  echo "$tool 128 rc $? $(grep -E 'SUMMARY|hazard' $L/$tool-128.log | tail -2)" >&3
done
tar czf $OUT/logs.tgz -C $OUT logs
