#!/bin/bash
# Call D (twenty-second session; carry [".carry/s23", ".whl"]): the change as it lands (cpp312-fin,
# b_pers2: the persistent backward at d 128 from 1024 queries only; d 64 and shorter walks run
# main's kernel). Its backward check (60 checks), test_sm90.py on its C++ package, and the A/B
# through JAX against main at d 128 (tests/device/tool_ab.sh: cpp = main, rust = this), all
# within 240 s (little device time left; the A/B one run).
L=$OUT/logs; mkdir -p $L; C=.carry/s23
exec 3>&1 > $L/runD.log 2>&1
left() { t=$(($1 - SECONDS)); [ $t -gt 5 ] && echo $t || echo 1; }  # seconds to a mark of the call
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,power.limit --format=csv >&3
unxz -k -f $C/b_pers2.xz && chmod +x $C/b_pers2
timeout 60 $C/b_pers2 > $L/check.log 2>&1; echo "check rc $? $(grep -c PASS $L/check.log) PASS $(grep -c FAIL $L/check.log) FAIL" >&3
S=$PWD/build/site; bash tests/device/site_setup.sh $S $C/cpp312-fin.tar.xz
( export PYTHONPATH=$S; time XLA_FLAGS=--xla_gpu_autotune_level=0 timeout $(left 190) python3 -m pytest tests/test_sm90.py \
  -q -n 8 -p no:cacheprovider -rfE --bindings cpp ) > $L/suite-cpp.log 2>&1
{ echo "== test_sm90 cpp (as it lands)"; grep -E "passed|failed" $L/suite-cpp.log | tail -1
  grep -E "^(FAILED|ERROR)" $L/suite-cpp.log | head -8; } >&3
export FA3_WHEEL=$(ls .whl/flash_attn3_jax-*.whl)
M="--mode fwdbwd --no-causal --methods jax_flash_attn-cpp,jflash_attn-rust,fa3-jax"
echo "== through JAX, d 128 (cpp: main, rust: as it lands)" >&3
RUNS=1 timeout $(left 235) bash tests/device/tool_ab.sh $L/ab128 $C/cpp312-main.tar.xz $C/cpp312-fin.tar.xz --head-dim 128 $M >&3
tar czf $OUT/logs.tgz -C $OUT logs
