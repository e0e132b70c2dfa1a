#!/bin/bash
# Call B: the branch's final code (a1d9909: the d 64 forward with three consumer warpgroups from
# 512 queries; 09adb8e: the d 256 backward tail of 1024-query pieces). Its standalone forward
# check (f_final), racecheck and memcheck of the forward kernels on the d 64 cases (`only 64`);
# tests/test_sm90.py on the C++ package (every head dim, bf16; the whole suite did not fit the
# session's device time); the d 64 table (C++, cuDNN and FA3
# beside, one run); `time 64` and `time 64 causal` of f_final and f_c3 (three consumer
# warpgroups for masked d 64 calls too, from 512 queries) against main. The Rust binding's CI
# extension has no FlashAttention-2 kernel at d 64, which the front end requires beside the
# Hopper one, so it sits this call out.
L=$OUT/logs; mkdir -p $L; D=docs/benchmarks-h100-2026-12-06-s15
exec 3>&1 > $L/runB.log 2>&1
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,power.limit --format=csv >&3
B=.carry/s15; for f in $B/f_*.xz; do unxz -k -f $f; done; chmod +x $B/f_*
( timeout 200 $B/f_final > $L/check-final.log 2>&1; echo "check rc $? $(tail -1 $L/check-final.log)" >&3
  timeout 100 $B/f_c3 > $L/check-c3.log 2>&1; echo "check c3 rc $? $(tail -1 $L/check-c3.log)" >&3 ) &
python3 -m pip install --no-index --no-deps .whl/flash_attn3_jax-*.whl > $L/pip.log 2>&1
S=$PWD/build/site; rm -rf $S; mkdir -p $S; tar xJf $B/cpp312-final.tar.xz -C $S
export PYTHONPATH=$S
( time XLA_FLAGS=--xla_gpu_autotune_level=0 timeout 120 python3 -m pytest tests/test_sm90.py -q -n 8 -p no:cacheprovider -rfE --bindings cpp ) > $L/suite-cpp.log 2>&1
{ echo "== test_sm90 cpp"; grep -E "passed|failed" $L/suite-cpp.log | tail -1; grep -E "^(FAILED|ERROR)" $L/suite-cpp.log | head -8; } >&3
wait
ext() { grep bench | command sed 's/.*: *\([0-9.]*\) ms, *\([0-9.]*\) TF.*/\1/' | tr '\n' ' '; }
for r in 1 2 3; do for b in f_main f_final f_c3; do
  echo "$b $(timeout 30 $B/$b time 64 | ext)" >> $L/time64.log
  echo "$b $(timeout 30 $B/$b time 64 causal | ext)" >> $L/time64c.log
done; done
python3 tests/device/median_times.py $L/time64.log f_main >&3; python3 tests/device/median_times.py $L/time64c.log f_main >&3
left() { t=$(($1 - SECONDS)); [ $t -gt 5 ] && echo $t || echo 1; }  # seconds to a mark of the call
timeout $(left 330) python3 -m jax_flash_attn.bench --head-dim 64 --methods jax_flash_attn-cpp,jax-nn-cudnn,fa3-jax --json $L/d64-B.json --markdown $L/d64-B.md > $L/d64-B.log 2>&1
cat $L/d64-B.md >&3
timeout $(left 375) compute-sanitizer --tool racecheck --kernel-name kns=flash_fwd_kernel $B/f_final only 64 > $L/racecheck64.log 2>&1; echo "racecheck rc $? $(grep SUMMARY $L/racecheck64.log)" >&3
timeout $(left 395) compute-sanitizer --tool memcheck --kernel-name kns=flash_fwd_kernel $B/f_final only 64 > $L/memcheck64.log 2>&1; echo "memcheck rc $? $(grep SUMMARY $L/memcheck64.log)" >&3
cd $OUT && tar czf logsB.tgz logs
