#!/bin/bash
# Call B (eighteenth session; carry [".carry/s15", ".carry/s16"]): tests/test_bench.py on the GPU
# with both bindings after a958541 (the --gpu-clocks test that failed once in call E, C++ run),
# then main's d 128 16k points (one run of the tool, both bindings, cuDNN and FA3, --gpu-clocks;
# the session's device time left no room for the whole table).
# Packages as in the seventeenth session's runE.sh. As run, its carry lacked ".whl", so FA3's
# wheel was missing and the bench ran without FA3 (runC.sh, prepared, adds it).
L=$OUT/logs; mkdir -p $L
exec 3>&1 > $L/runB.log 2>&1
left() { t=$(($1 - SECONDS)); [ $t -gt 5 ] && echo $t || echo 1; }  # seconds to a mark of the call
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,power.limit --format=csv >&3
python3 -m pip install --no-index --no-deps .whl/flash_attn3_jax-*.whl > $L/pip.log 2>&1
S=$PWD/build/site; rm -rf $S; mkdir -p $S; tar xJf .carry/s15/cpp312-final3.tar.xz -C $S
cp python/frontend/*.py $S/jax_flash_attn/
mkdir -p $S/jflash_attn; cp python/frontend/*.py python/jflash_attn/_binding.py $S/jflash_attn/
xz -dc .carry/s16/rs-all.so.xz > $S/jflash_attn/_jflash_attn_rust.so
export PYTHONPATH=$S
for r in 1; do for b in cpp rust; do
  XLA_FLAGS=--xla_gpu_autotune_level=0 timeout 100 python3 -m pytest tests/test_bench.py -q -n 8 -p no:cacheprovider -rfE --bindings $b > $L/test_bench-$b-$r.log 2>&1
  echo "== test_bench $b, round $r: $(grep -E 'passed|failed' $L/test_bench-$b-$r.log | tail -1)" >&3
done; done
M=jax_flash_attn-cpp,jflash_attn-rust,jax-nn-cudnn,fa3-jax
timeout $(left 280) python3 -m jax_flash_attn.bench --gpu-clocks --head-dim 128 --seqlens 16384 --methods $M --json $L/d128-B.json --markdown $L/d128-B.md > $L/d128-B.log 2>&1
cat $L/d128-B.md >&3; tail -2 $L/d128-B.log >&3
cd $OUT && tar czf logsB.tgz logs
