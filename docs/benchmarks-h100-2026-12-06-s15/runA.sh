#!/bin/bash
# Call A: the d 64 forward with three consumer warpgroups (192-row tiles) for unmasked calls, at every
# length (JFA_WG3_FROM=0): f_w3n128 (128-key blocks, 4 stages, turns), f_w3nt (the same without
# turns), f_w3n96 (96-key blocks, 5 stages), f_w3n112 (112, 5 stages); each binary's check cases,
# then `time 64` alternating with main (f_main), medians per point. Then through JAX, one process:
# C++ = this branch's package (f_w3n128's kernel from 2048 queries; the d 256 backward tail of
# 1024-query pieces), Rust = main 991603a's CI extension, cuDNN beside: d 64 forward unmasked,
# and d 256 fwd+bwd unmasked at 2k-8k, one run each; then tests/test_sm90.py on the C++ package.
L=$OUT/logs; mkdir -p $L; D=docs/benchmarks-h100-2026-12-06-s15
exec 3>&1 > $L/runA.log 2>&1
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,power.limit --format=csv >&3
B=.carry/s15; for f in $B/f_*.xz; do unxz -k -f $f; done; chmod +x $B/f_*
V="f_w3n128 f_w3nt f_w3n96 f_w3n112"
for b in $V; do (timeout 240 $B/$b > $L/check-$b.log 2>&1; echo "$b check rc $? $(tail -1 $L/check-$b.log)" >&3) & done; wait
ext() { grep bench | command sed 's/.*: *\([0-9.]*\) ms, *\([0-9.]*\) TF.*/\1/' | tr '\n' ' '; }
all="f_main $V"
for r in 1 2 3 4 5 6; do
  o=$(echo $all | tr ' ' '\n' | awk -v r=$r '{a[NR]=$0} END {for (i=0;i<NR;i++) print a[(i+r)%NR+1]}')
  for b in $o; do echo "$b $(timeout 60 $B/$b time 64 | ext)"; done
done > $L/time64.log
python3 tests/device/median_times.py $L/time64.log f_main >&3
grep -h "FAIL\|mismatch" $L/check-*.log | head -20 >&3
S=$PWD/build/site; rm -rf $S; mkdir -p $S; tar xJf $B/cpp312-w3.tar.xz -C $S
mkdir -p $S/jflash_attn; cp python/frontend/*.py python/jflash_attn/_binding.py $S/jflash_attn/
xz -dc $B/rs-main.so.xz > $S/jflash_attn/_jflash_attn_rust.so
export PYTHONPATH=$S
M=jax_flash_attn-cpp,jflash_attn-rust,jax-nn-cudnn
timeout 100 python3 -m jax_flash_attn.bench --head-dim 64 --mode fwd --no-causal --methods $M --json $L/d64f.json --markdown $L/d64f.md > $L/d64f.log 2>&1
timeout 100 python3 -m jax_flash_attn.bench --head-dim 256 --mode fwdbwd --no-causal --seqlens 2048,4096,8192 --methods $M --json $L/d256b.json --markdown $L/d256b.md > $L/d256b.log 2>&1
cat $L/d64f.md $L/d256b.md >&3; tail -2 $L/d64f.log $L/d256b.log >&3
( time XLA_FLAGS=--xla_gpu_autotune_level=0 timeout 200 python3 -m pytest tests/test_sm90.py -q -n 8 -p no:cacheprovider -rfE --bindings cpp ) > $L/suite-sm90-cpp.log 2>&1
grep -E "passed|failed" $L/suite-sm90-cpp.log | tail -1 >&3; grep -E "^(FAILED|ERROR)" $L/suite-sm90-cpp.log | head -8 >&3
cd $OUT && tar czf logsA.tgz logs
