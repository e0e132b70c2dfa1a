#!/bin/bash
# Call A: the fifteenth session's runC, widened. Main dc95df5's kernels (three consumer
# warpgroups at d 64 from 512 queries, 2048 if masked): the standalone forward check (f_final3),
# racecheck and memcheck of the forward kernels on the d 64 cases (the masked three-consumer queue
# kernel among them), tests/test_sm90.py on the C++ package (every head dim, bf16), and the d 64
# causal forward in the tool (one run).
L=$OUT/logs; mkdir -p $L
exec 3>&1 > $L/runA.log 2>&1
left() { t=$(($1 - SECONDS)); [ $t -gt 5 ] && echo $t || echo 1; }  # seconds to a mark of the call
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,power.limit --format=csv >&3
B=.carry/s15; unxz -k -f $B/f_final3.xz; chmod +x $B/f_final3
( timeout 120 $B/f_final3 > $L/check-final3.log 2>&1; echo "check rc $? $(tail -1 $L/check-final3.log)" >&3 ) &
python3 -m pip install --no-index --no-deps .whl/flash_attn3_jax-*.whl > $L/pip.log 2>&1
S=$PWD/build/site; rm -rf $S; mkdir -p $S; tar xJf $B/cpp312-final3.tar.xz -C $S
export PYTHONPATH=$S
( time XLA_FLAGS=--xla_gpu_autotune_level=0 timeout 150 python3 -m pytest tests/test_sm90.py -q -n 8 -p no:cacheprovider -rfE --bindings cpp ) > $L/suite-cpp.log 2>&1
{ echo "== test_sm90 cpp"; grep -E "passed|failed" $L/suite-cpp.log | tail -1; grep -E "^(FAILED|ERROR)" $L/suite-cpp.log | head -8; } >&3
wait
timeout $(left 260) python3 -m jax_flash_attn.bench --head-dim 64 --mode fwd --causal --methods jax_flash_attn-cpp,jax-nn-cudnn,fa3-jax --json $L/d64c-A.json --markdown $L/d64c-A.md > $L/d64c-A.log 2>&1
cat $L/d64c-A.md >&3
timeout $(left 400) compute-sanitizer --tool racecheck --kernel-name kns=flash_fwd_kernel $B/f_final3 only 64 > $L/racecheck64.log 2>&1; echo "racecheck rc $? $(grep SUMMARY $L/racecheck64.log)" >&3
timeout $(left 470) compute-sanitizer --tool memcheck --kernel-name kns=flash_fwd_kernel $B/f_final3 only 64 > $L/memcheck64.log 2>&1; echo "memcheck rc $? $(grep SUMMARY $L/memcheck64.log)" >&3
cd $OUT && tar czf logsA.tgz logs
