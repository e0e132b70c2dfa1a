#!/bin/bash
# Call A (twenty-first session; carry [".carry/s16", ".carry/s22", ".whl"]): the backward's CTA
# pairs (Q and dO multicast to two adjacent key blocks), with plain remote arrivals. The
# thirteenth session's `mcq` was 15% slower at every length; it released the other CTA's Q/dO
# stage by mbarrier.arrive.release.cluster, the arrival before which ptxas puts MEMBAR.ALL.GPU
# (twentieth session). b_mc and the C++ package cpp312-mc (runA-pairs.diff on main, the change
# as it would land) arrive as CUTLASS does; the SASS has no fence there. b_main: main's backward
# check, the same nvcc. Then the C++ suite of test_sm90.py on the pairs, and memcheck.
L=$OUT/logs; mkdir -p $L; C=.carry/s22
exec 3>&1 > $L/runA.log 2>&1
left() { t=$(($1 - SECONDS)); [ $t -gt 5 ] && echo $t || echo 1; }  # seconds to a mark of the call
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,power.limit --format=csv >&3
bash tests/device/ab_standalone.sh $L/ab b_main $C/b_main $C/b_mc >&3
# That the pairs ran: the launch's cluster size, as ncu reports it.
timeout 60 ncu -k regex:flash_bwd_kernel -c 2 --section LaunchStats $C/b_mc time 128 > $L/ncu-launch.log 2>&1
grep -i -E "cluster|Grid Size" $L/ncu-launch.log | head -6 >&3
python3 -m pip install --no-index --no-deps .whl/flash_attn3_jax-*.whl > $L/pip.log 2>&1
S=$PWD/build/site; bash tests/device/site_setup.sh $S $C/cpp312-mc.tar.xz .carry/s16/rs-main.so.xz; export PYTHONPATH=$S
# Through JAX: the pairs (C++ package) against main (Rust CI extension), FA3 beside, fwd+bwd.
for r in $(seq ${RUNS:-2}); do
  timeout $(left 330) python3 -m jax_flash_attn.bench --gpu-clocks --head-dim 128 --mode fwdbwd --no-causal \
    --methods jax_flash_attn-cpp,jflash_attn-rust,fa3-jax --json $L/ab$r.json --markdown $L/ab$r.md > $L/ab$r.log 2>&1
done
python3 -m jax_flash_attn.bench --merge $L/ab[0-9].json --json $L/ab.json --markdown $L/ab.md > $L/merge-ab.log 2>&1
cat $L/ab.md >&3
nvidia-smi -q -d PERFORMANCE,CLOCK,POWER > $L/smi-q.log 2>&1
[ -n "$SHORT" ] && exit 0  # SHORT=1: the timings alone
( time XLA_FLAGS=--xla_gpu_autotune_level=0 timeout $(left 520) python3 -m pytest tests/test_sm90.py -q -n 8 -p no:cacheprovider -rfE --bindings cpp ) > $L/suite-cpp.log 2>&1
{ echo "== test_sm90 cpp"; grep -E "passed|failed" $L/suite-cpp.log | tail -1; grep -E "^(FAILED|ERROR)" $L/suite-cpp.log | head -8; } >&3
timeout $(left 580) compute-sanitizer --tool memcheck --kernel-name kns=flash_bwd_kernel $C/b_mc only 128 > $L/memcheck128.log 2>&1; echo "memcheck rc $? $(grep SUMMARY $L/memcheck128.log)" >&3
