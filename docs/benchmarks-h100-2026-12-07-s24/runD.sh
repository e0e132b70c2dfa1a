#!/bin/bash
# Call D (twenty-fourth session; carry [".carry/s24"]): the sanitizers on main's kernels that
# call B's (the d 128 backward cases) left out: the d 64 backward cases (btma changed those
# kernels too) and the forward's d 128 cases, memcheck and racecheck each.
L=$OUT/logs; mkdir -p $L; C=.carry/s24
exec 3>&1 > $L/runD.log 2>&1
left() { t=$(($1 - SECONDS)); [ $t -gt 5 ] && echo $t || echo 1; }  # seconds to a mark of the call
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,power.limit --format=csv >&3
for b in bwd_fin fwd_fin; do unxz -k -f $C/$b.xz && chmod +x $C/$b; done
mark=60
for run in "bwd_fin 64 flash_bwd_kernel" "fwd_fin 128 flash_fwd_kernel"; do
  set -- $run
  for tool in memcheck racecheck; do
    mark=$((mark + 110))
    timeout $(left $mark) compute-sanitizer --tool $tool --kernel-name kns=$3 $C/$1 only $2 > $L/$tool-$1-$2.log 2>&1
    echo "$tool $1 $2 rc $? $(grep -E 'SUMMARY|hazard' $L/$tool-$1-$2.log | tail -2) ($SECONDS s)" >&3
  done
done
tar czf $OUT/logs.tgz -C $OUT logs
