#!/bin/bash
# Call B: the branch's final code (a1d9909: the d 64 forward with three consumer warpgroups from
# 512 queries; 09adb8e: the d 256 backward tail of 1024-query pieces). Its standalone forward
# check (f_final), racecheck and memcheck of the forward kernels on the d 64 cases (`only 64`);
# the C++ package's whole suite (every head dim, bf16); the d 64 table (C++, cuDNN and FA3
# beside, two runs merged). The Rust binding's CI extension has no FlashAttention-2 kernel at d 64,
# which the front end requires beside the Hopper one, so it sits this call out.
L=$OUT/logs; mkdir -p $L; D=docs/benchmarks-h100-2026-12-06-s15
exec 3>&1 > $L/runB.log 2>&1
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,power.limit --format=csv >&3
B=.carry/s15; for f in $B/f_*.xz; do unxz -k -f $f; done; chmod +x $B/f_*
( timeout 200 $B/f_final > $L/check-final.log 2>&1; echo "check rc $? $(tail -1 $L/check-final.log)" >&3
  timeout 200 compute-sanitizer --tool racecheck --kernel-name kns=flash_fwd_kernel $B/f_final only 64 > $L/racecheck64.log 2>&1; echo "racecheck rc $? $(grep SUMMARY $L/racecheck64.log)" >&3
  timeout 150 compute-sanitizer --tool memcheck --kernel-name kns=flash_fwd_kernel $B/f_final only 64 > $L/memcheck64.log 2>&1; echo "memcheck rc $? $(grep SUMMARY $L/memcheck64.log)" >&3 ) &
python3 -m pip install --no-index --no-deps .whl/flash_attn3_jax-*.whl > $L/pip.log 2>&1
S=$PWD/build/site; rm -rf $S; mkdir -p $S; tar xJf $B/cpp312-final.tar.xz -C $S
export PYTHONPATH=$S
( time XLA_FLAGS=--xla_gpu_autotune_level=0 timeout 290 python3 -m pytest tests -q -n 8 -p no:cacheprovider -rfE --bindings cpp ) > $L/suite-cpp.log 2>&1
{ echo "== suite cpp"; grep -E "passed|failed" $L/suite-cpp.log | tail -1; grep -E "^(FAILED|ERROR)" $L/suite-cpp.log | head -8; } >&3
wait
for r in 1 2; do
  [ $r = 2 ] && [ $SECONDS -gt 420 ] && break  # the call's limit
  timeout 130 python3 -m jax_flash_attn.bench --head-dim 64 --methods jax_flash_attn-cpp,jax-nn-cudnn,fa3-jax --json $L/d64-B$r.json --markdown $L/d64-B$r.md > $L/d64-B$r.log 2>&1
done
python3 -m jax_flash_attn.bench --merge $L/d64-B?.json --json $L/d64-B.json --markdown $L/d64-B.md > $L/merge.log 2>&1
cat $L/d64-B.md >&3
cd $OUT && tar czf logsB.tgz logs
