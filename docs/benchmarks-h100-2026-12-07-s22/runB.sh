#!/bin/bash
# Call B (twenty-second session; carry [".carry/s23"]): test_sm90.py on the persistent backward's
# C++ package (cpp312-pers), then racecheck on its backward check (d 128 cases).
L=$OUT/logs; mkdir -p $L; C=.carry/s23
exec 3>&1 > $L/runB.log 2>&1
left() { t=$(($1 - SECONDS)); [ $t -gt 5 ] && echo $t || echo 1; }  # seconds to a mark of the call
S=$PWD/build/site; bash tests/device/site_setup.sh $S $C/cpp312-pers.tar.xz; export PYTHONPATH=$S
( time XLA_FLAGS=--xla_gpu_autotune_level=0 timeout $(left 400) python3 -m pytest tests/test_sm90.py -q -n 8 \
  -p no:cacheprovider -rfE --bindings cpp ) > $L/suite-cpp.log 2>&1
{ echo "== test_sm90 cpp (persistent)"; grep -E "passed|failed" $L/suite-cpp.log | tail -1
  grep -E "^(FAILED|ERROR)" $L/suite-cpp.log | head -8; } >&3
unxz -k -f $C/b_pers.xz && chmod +x $C/b_pers
timeout $(left 580) compute-sanitizer --tool racecheck --kernel-name kns=flash_bwd_kernel $C/b_pers only 128 \
  > $L/racecheck128.log 2>&1
echo "racecheck 128 rc $? $(grep -E 'SUMMARY|hazard' $L/racecheck128.log | tail -2)" >&3
tar czf $OUT/logs.tgz -C $OUT logs
