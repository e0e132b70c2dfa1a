#!/bin/bash
# Call A (twenty-third session; carry [".carry/s24", ".whl"]): main as landed (2b97ca8: the
# persistent backward at d 128 from 1024 queries), never run on a GPU before. Its kernel checks
# (fwd_fin, bwd_fin: tests/device/sm90_{fwd,bwd}_check.cu at HEAD), the whole GPU suite with each
# binding (C++: cpp312-fin from tests/device/gpu_build.py, d 64/128/256 fp16/bf16; Rust: CI's
# Bazel extension, abi3), then one run of the tool at d 128 with cuDNN and FA3 beside.
L=$OUT/logs; mkdir -p $L; C=.carry/s24
exec 3>&1 > $L/runA.log 2>&1
left() { t=$(($1 - SECONDS)); [ $t -gt 5 ] && echo $t || echo 1; }  # seconds to a mark of the call
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,power.limit --format=csv >&3
for b in fwd_fin bwd_fin; do
  unxz -k -f $C/$b.xz && chmod +x $C/$b
  timeout 45 $C/$b > $L/check-$b.log 2>&1
  echo "$b rc $? $(grep -c PASS $L/check-$b.log) PASS $(grep -c FAIL $L/check-$b.log) FAIL" >&3
done
S=$PWD/build/site; bash tests/device/site_setup.sh $S $C/cpp312-fin.tar.xz $C/rust_so.xz; export PYTHONPATH=$S
python3 -m pip install --no-index --no-deps .whl/flash_attn3_jax-*.whl > $L/pip.log 2>&1
for b in cpp rust; do
  ( time XLA_FLAGS=--xla_gpu_autotune_level=0 timeout $(left $([ $b = cpp ] && echo 260 || echo 430)) \
    python3 -m pytest tests -q -n 8 -p no:cacheprovider -rfE --bindings $b ) > $L/suite-$b.log 2>&1
  { echo "== whole suite, $b"; grep -E "passed|failed" $L/suite-$b.log | tail -1
    grep -E "^(FAILED|ERROR)" $L/suite-$b.log | head -8; } >&3
done
timeout $(left 575) python3 -m jax_flash_attn.bench --gpu-clocks --head-dim 128 \
  --methods jax_flash_attn-cpp,jflash_attn-rust,jax-nn-cudnn,fa3-jax --json $L/d128-A.json --markdown $L/d128-A.md > $L/bench.log 2>&1
echo "bench rc $?" >&3; grep -A9 "^### " $L/d128-A.md | grep -v clock >&3
tar czf $OUT/logs.tgz -C $OUT logs
