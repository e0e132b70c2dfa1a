#!/bin/bash
# Call C (prepared in the eighteenth session, not run: its device time ran out; carry
# [".carry/s15", ".whl"]): call B's 16k points again with FA3
# beside (call B did not carry its wheel, so it ran without it); C++ binding, cuDNN, FA3.
# Run in the nineteenth session, which first added the nvidia-smi timestamp line: the format
# of `--query-gpu=timestamp` beside the host clock, for stamping the bench's clock readings.
# Its logs: ../benchmarks-h100-2026-12-06-s19/call1-*.
L=$OUT/logs; mkdir -p $L
exec 3>&1 > $L/runC.log 2>&1
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,power.limit --format=csv >&3
date +%s.%N > $L/smi-timestamp.log; date '+%Y/%m/%d %H:%M:%S.%N %Z' >> $L/smi-timestamp.log
timeout 1 nvidia-smi --query-gpu=timestamp,clocks.sm,power.draw --format=csv,noheader,nounits --id=0 -lms 100 >> $L/smi-timestamp.log 2>&1
date +%s.%N >> $L/smi-timestamp.log; cat $L/smi-timestamp.log >&3
python3 -m pip install --no-index --no-deps .whl/flash_attn3_jax-*.whl > $L/pip.log 2>&1
S=$PWD/build/site; rm -rf $S; mkdir -p $S; tar xJf .carry/s15/cpp312-final3.tar.xz -C $S
cp python/frontend/*.py $S/jax_flash_attn/
export PYTHONPATH=$S
timeout 75 python3 -m jax_flash_attn.bench --gpu-clocks --head-dim 128 --seqlens 16384 --methods jax_flash_attn-cpp,jax-nn-cudnn,fa3-jax --json $L/d128-C.json --markdown $L/d128-C.md > $L/d128-C.log 2>&1
cat $L/d128-C.md >&3; head -1 $L/d128-C.log >&3
cd $OUT && tar czf logsC.tgz logs
