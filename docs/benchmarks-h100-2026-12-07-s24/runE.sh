#!/bin/bash
# Call E (twenty-fourth session; carry [".carry/s24", ".whl"]): the Rust binding at every head
# dim. rust_so_all is the extension of `bazel build //python:jflash_attn_wheel
# --//cpp:head_dims=64,128,256 --//cpp:dtypes=fp16,bf16 --//cpp:splitkv=false` at main (CI's own
# has FlashAttention-2 at bf16/128 only, so the front end refused d 64 and d 256 calls to it and
# call B's Rust columns there were skipped). The whole suite with it, then d 64 and d 256 tables,
# both bindings and cuDNN (the best peer there; FA3 has no d 256 backward and trails at d 64).
# Marks as run: cut to the session's last 166 s of device time (150 / 290 / 400 for a full call).
L=$OUT/logs; mkdir -p $L; C=.carry/s24
exec 3>&1 > $L/runE.log 2>&1
left() { t=$(($1 - SECONDS)); [ $t -gt 5 ] && echo $t || echo 1; }  # seconds to a mark of the call
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,power.limit --format=csv >&3
S=$PWD/build/site; bash tests/device/site_setup.sh $S $C/cpp312-fin.tar.xz $C/rust_so_all.xz; export PYTHONPATH=$S
( time XLA_FLAGS=--xla_gpu_autotune_level=0 timeout $(left 135) \
  python3 -m pytest tests -q -n 8 -p no:cacheprovider -rfE --bindings rust ) > $L/suite-rust.log 2>&1
{ echo "== whole suite, rust (every head dim)"; grep -E "passed|failed" $L/suite-rust.log | tail -1
  grep -E "^(FAILED|ERROR)" $L/suite-rust.log | head -8; } >&3
M=jax_flash_attn-cpp,jflash_attn-rust,jax-nn-cudnn
for d in 64 256; do
  timeout $(left $([ $d = 64 ] && echo 198 || echo 199)) python3 -m jax_flash_attn.bench --gpu-clocks --head-dim $d \
    --methods $M --json $L/d$d-E.json --markdown $L/d$d-E.md > $L/bench-d$d.log 2>&1; echo "d$d rc $?" >&3
  grep -A9 "^### " $L/d$d-E.md | grep -v "clock\|MHz" | grep "^###\|x [0-9]" >&3
done
tar czf $OUT/logs.tgz -C $OUT logs
