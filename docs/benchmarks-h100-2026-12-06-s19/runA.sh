#!/bin/bash
# Call A (nineteenth session; carry [".carry/s15", ".carry/s20", ".whl"]).
# 1. The backward without the S/dP turn (runA-variant.diff on main ddd324b, -DJFA_NO_TURN):
#    the seventeenth session's profile put 5.4% of the backward's stall samples at the turn,
#    and `bnt` was last timed on b15 (H200, bursts). b_tc: main's kernels from the same tree.
#    Check + full bench once each, then `time 128` alternated three rounds, bursts and
#    sustained (JFA_BENCH_MS=300).
# 2. tests/test_bench.py on the GPU with main's front end (GpuClocks now reads nvidia-smi's
#    timestamps), then the tool with --gpu-clocks at 512 and 16k: a reading for every method.
L=$OUT/logs; mkdir -p $L
exec 3>&1 > $L/runA.log 2>&1
nvidia-smi --query-gpu=name,clocks.max.sm,power.limit --format=csv,noheader >&3
bash tests/device/ab_standalone.sh $L b_tc .carry/s20/b_tc .carry/s20/b_nt >&3
python3 -m pip install --no-index --no-deps .whl/flash_attn3_jax-*.whl > $L/pip.log 2>&1
S=$PWD/build/site; rm -rf $S; mkdir -p $S; tar xJf .carry/s15/cpp312-final3.tar.xz -C $S
cp python/frontend/*.py $S/jax_flash_attn/; export PYTHONPATH=$S
for r in 1 2; do XLA_FLAGS=--xla_gpu_autotune_level=0 timeout 100 python3 -m pytest tests/test_bench.py -q -n 8 -p no:cacheprovider -rfE --bindings cpp > $L/test_bench-$r.log 2>&1; tail -2 $L/test_bench-$r.log >&3; done
timeout 120 python3 -m jax_flash_attn.bench --gpu-clocks --head-dim 128 --seqlens 512,16384 --mode fwd --no-causal --methods jax_flash_attn-cpp,jax-nn-xla,jax-nn-cudnn,fa3-jax --markdown $L/clocks.md > $L/clocks.log 2>&1
cat $L/clocks.md >&3
cd $OUT && tar czf logsA.tgz logs
