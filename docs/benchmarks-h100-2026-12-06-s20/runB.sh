#!/bin/bash
# Call B (prepared in the twentieth session, not run; carry [".carry/s21", ".whl"]): the forward's CTA pairs with plain
# remote arrivals as they would land on main (pairs-main.diff). C++ = the package of call A (built by
# tests/device/gpu_build.py from main + runA-pairs.diff), Rust = the CI extension of the same
# source with pairs-main.diff applied (`bazel build --//cpp:head_dims=64,128,256 --//cpp:splitkv=false //python:wheels`).
# Main's tables (one run of the tool per head dim, both bindings, cuDNN and FA3 beside, clock
# readings), then the whole GPU suite with each binding.
L=$OUT/logs; mkdir -p $L
exec 3>&1 > $L/runB.log 2>&1
left() { t=$(($1 - SECONDS)); [ $t -gt 5 ] && echo $t || echo 1; }  # seconds to a mark of the call
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,power.limit --format=csv >&3
python3 -m pip install --no-index --no-deps .whl/flash_attn3_jax-*.whl > $L/pip.log 2>&1
S=$PWD/build/site; bash tests/device/site_setup.sh $S .carry/s21/cpp312-clr.tar.xz .carry/s21/rs-pairs.so.xz
export PYTHONPATH=$S
M=jax_flash_attn-cpp,jflash_attn-rust,jax-nn-cudnn,fa3-jax
timeout $(left 150) python3 -m jax_flash_attn.bench --gpu-clocks --head-dim 128 --methods $M --json $L/d128-B.json --markdown $L/d128-B.md > $L/d128-B.log 2>&1
cat $L/d128-B.md >&3; tail -2 $L/d128-B.log >&3
timeout $(left 215) python3 -m jax_flash_attn.bench --gpu-clocks --head-dim 256 --methods ${M%,fa3-jax} --json $L/d256-B.json --markdown $L/d256-B.md > $L/d256-B.log 2>&1
cat $L/d256-B.md >&3
for b in rust cpp; do
  [ $b = rust ] && end=400 || end=585
  ( time XLA_FLAGS=--xla_gpu_autotune_level=0 timeout $(left $end) python3 -m pytest tests -q -n 8 -p no:cacheprovider -rfE --bindings $b ) > $L/suite-$b.log 2>&1
  { echo "== suite $b"; grep -E "passed|failed" $L/suite-$b.log | tail -1; grep -E "^(FAILED|ERROR)" $L/suite-$b.log | head -8; } >&3
done
