#!/bin/bash
# Call C: the final rule (three consumer warpgroups at d 64 from 512 queries, 2048 if masked):
# its standalone forward check (f_final3), tests/test_sm90.py on its C++ package (two new wide
# cases: causal 2048 and 2100 queries), and the d 64 causal forward in the tool (one run).
L=$OUT/logs; mkdir -p $L
exec 3>&1 > $L/runC.log 2>&1
B=.carry/s15; unxz -k -f $B/f_final3.xz; chmod +x $B/f_final3
( timeout 100 $B/f_final3 > $L/check-final3.log 2>&1; echo "check rc $? $(tail -1 $L/check-final3.log)" >&3 ) &
python3 -m pip install --no-index --no-deps .whl/flash_attn3_jax-*.whl > $L/pip.log 2>&1
S=$PWD/build/site; rm -rf $S; mkdir -p $S; tar xJf $B/cpp312-final3.tar.xz -C $S
export PYTHONPATH=$S
( time XLA_FLAGS=--xla_gpu_autotune_level=0 timeout 110 python3 -m pytest tests/test_sm90.py -q -n 8 -p no:cacheprovider -rfE --bindings cpp ) > $L/suite-cpp.log 2>&1
{ echo "== test_sm90 cpp"; grep -E "passed|failed" $L/suite-cpp.log | tail -1; grep -E "^(FAILED|ERROR)" $L/suite-cpp.log | head -8; } >&3
wait
timeout 60 python3 -m jax_flash_attn.bench --head-dim 64 --mode fwd --causal --methods jax_flash_attn-cpp,jax-nn-cudnn,fa3-jax --json $L/d64c-C.json --markdown $L/d64c-C.md > $L/d64c-C.log 2>&1
cat $L/d64c-C.md >&3
