#!/bin/bash
# Call F (twenty-third session; carry [".carry/s24f"]): `btma`, the 80-row backward kernels' dK and
# dV leaving by TMA stores of 64-key boxes (stmatrix into the 128-byte swizzle, one thread per
# warpgroup issuing 4 stores) instead of one bulk copy per row (32 per warp), on top of call C's
# dV-in-the-dQ-stage epilogue (runF-variant.diff against main). Call E's profile at 512 put 14.2%
# (persistent) and 7.6% (one block per CTA) of the backward's stall samples on the per-row copies'
# issue loop. Checks and the standalone A/B against main (bwd_fin), sanitizers on the d 128
# cases, then tests/test_sm90.py on the variant's C++ package.
L=$OUT/logs; mkdir -p $L; C=.carry/s24f
exec 3>&1 > $L/runF.log 2>&1
left() { t=$(($1 - SECONDS)); [ $t -gt 5 ] && echo $t || echo 1; }  # seconds to a mark of the call
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,power.limit --format=csv >&3
timeout $(left 190) bash tests/device/ab_standalone.sh $L/ab bwd_fin $C/bwd_fin $C/bwd_tma >&3
for tool in memcheck racecheck; do
  timeout $(left $([ $tool = memcheck ] && echo 240 || echo 290)) compute-sanitizer --tool $tool \
    --kernel-name kns=flash_bwd_kernel $C/bwd_tma only 128 > $L/$tool-128.log 2>&1
  echo "$tool 128 rc $? $(grep -E 'SUMMARY|hazard' $L/$tool-128.log | tail -2)" >&3
done
S=$PWD/build/site; bash tests/device/site_setup.sh $S $C/cpp312-tma.tar.xz; export PYTHONPATH=$S
( time XLA_FLAGS=--xla_gpu_autotune_level=0 timeout $(left 455) python3 -m pytest tests/test_sm90.py -q -n 8 \
  -p no:cacheprovider -rfE --bindings cpp ) > $L/suite-cpp.log 2>&1
{ echo "== test_sm90 cpp (btma)"; grep -E "passed|failed" $L/suite-cpp.log | tail -1
  grep -E "^(FAILED|ERROR)" $L/suite-cpp.log | head -8; } >&3
tar czf $OUT/logs.tgz -C $OUT logs
