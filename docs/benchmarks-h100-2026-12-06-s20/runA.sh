#!/bin/bash
# Call A (twentieth session; carry [".carry/s16", ".carry/s21", ".whl"]): the forward's CTA pairs
# again, with plain remote arrivals. f_cl (the sixteenth session's runB-cluster.diff) releases a
# K or V stage in the other CTA by mbarrier.arrive.release.cluster, before which ptxas puts
# MEMBAR.ALL.CTA and MEMBAR.ALL.GPU (cuobjdump): two GPU-scope fences per key block on every
# consumer warp's path. f_clr is the same source with a plain remote arrive (release at CTA
# scope, JFA_REMOTE_REL=0 in runA-pairs.diff); its SASS has no fence there. f_main: main's
# forward (the sixteenth session's build of dc95df5; the forward is unchanged since).
# Ran twice as `SHORT=1 RUNS=1 bash runA.sh` (the device time left allowed no more): callA1-*, callA2-*.
L=$OUT/logs; mkdir -p $L; MED=tests/device/median_times.py
exec 3>&1 > $L/runA.log 2>&1
left() { t=$(($1 - SECONDS)); [ $t -gt 5 ] && echo $t || echo 1; }  # seconds to a mark of the call
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,power.limit --format=csv >&3
B=.carry/s16; C=.carry/s21; builds="$B/f_main $C/f_clr"  # (f_cl, as timed in the sixteenth session: +19-64%)
for b in $builds; do unxz -k -f $b.xz && chmod +x $b; done
timeout 100 $C/f_clr > $L/check-clr.log 2>&1
echo "check clr rc $? $(head -1 $L/check-clr.log) $(grep -c FAIL $L/check-clr.log) FAIL, $(tail -1 $L/check-clr.log)" >&3
ext() { grep bench | sed 's/.*: *\([0-9.]*\) ms, *\([0-9.]*\) TF.*/\1/' | tr '\n' ' '; }
for r in 1 2 3; do for b in $builds; do for d in ${DIMS:-128}; do
  echo "$(basename $b) $(timeout 30 $b time $d | ext)" >> $L/time$d.log
  echo "$(basename $b) $(JFA_BENCH_MS=300 timeout 60 $b time $d | ext)" >> $L/sustained$d.log
done; done; done
for d in ${DIMS:-128}; do
  echo "== d $d, bursts" >&3; python3 $MED $L/time$d.log f_main >&3
  echo "== d $d, sustained" >&3; python3 $MED $L/sustained$d.log f_main >&3
done
python3 -m pip install --no-index --no-deps .whl/flash_attn3_jax-*.whl > $L/pip.log 2>&1
S=$PWD/build/site; bash tests/device/site_setup.sh $S $C/cpp312-clr.tar.xz $B/rs-main.so.xz; export PYTHONPATH=$S
# Through JAX: the pairs (C++ package) against main (Rust CI extension), FA3 beside, forward only.
for r in $(seq ${RUNS:-2}); do
  timeout $(left 250) python3 -m jax_flash_attn.bench --gpu-clocks --head-dim 128 --mode fwd --no-causal \
    --methods jax_flash_attn-cpp,jflash_attn-rust,fa3-jax --json $L/ab$r.json --markdown $L/ab$r.md > $L/ab$r.log 2>&1
done
python3 -m jax_flash_attn.bench --merge $L/ab[0-9].json --json $L/ab.json --markdown $L/ab.md > $L/merge-ab.log 2>&1
cat $L/ab.md >&3
[ -n "$SHORT" ] && exit 0  # SHORT=1: the timings alone
( time XLA_FLAGS=--xla_gpu_autotune_level=0 timeout $(left 370) python3 -m pytest tests/test_sm90.py -q -n 8 -p no:cacheprovider -rfE --bindings cpp ) > $L/suite-cpp.log 2>&1
{ echo "== test_sm90 cpp"; grep -E "passed|failed" $L/suite-cpp.log | tail -1; grep -E "^(FAILED|ERROR)" $L/suite-cpp.log | head -8; } >&3
timeout $(left 420) compute-sanitizer --tool racecheck --kernel-name kns=flash_fwd_kernel $C/f_clr only 128 > $L/racecheck128.log 2>&1; echo "racecheck rc $? $(grep SUMMARY $L/racecheck128.log)" >&3
timeout $(left 460) compute-sanitizer --tool memcheck --kernel-name kns=flash_fwd_kernel $C/f_clr only 128 > $L/memcheck128.log 2>&1; echo "memcheck rc $? $(grep SUMMARY $L/memcheck128.log)" >&3
