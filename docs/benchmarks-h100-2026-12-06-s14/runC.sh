#!/bin/bash
# Call C: fd2544a (the backward's tail launch) through JAX. First an A/B in one process:
# C++ = fd2544a's package (built off-device for cp312), Rust = 82c399c's CI extension, FA3
# beside them, fwd+bwd unmasked at 4k-16k, samples alternating, three runs. Then both suites on
# fd2544a (Rust: its CI extension).
L=$OUT/logs; mkdir -p $L
exec 3>&1 > $L/runC.log 2>&1
set -x
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,power.limit --format=csv
python3 -m pip install --no-index --no-deps .whl/flash_attn3_jax-*.whl > $L/pip.log 2>&1
S=$PWD/build/site; rm -rf $S; mkdir -p $S; tar xJf .carry/s14/cpp312-new.tar.xz -C $S
mkdir -p $S/jflash_attn; cp python/frontend/*.py python/jflash_attn/_binding.py $S/jflash_attn/
xz -dc .carry/s14/rs-old.so.xz > $S/jflash_attn/_jflash_attn_rust.so
export PYTHONPATH=$S
M=jax_flash_attn-cpp,jflash_attn-rust,fa3-jax
for r in 1 2 3; do
  timeout 100 python3 -m jax_flash_attn.bench --head-dim 128 --mode fwdbwd --no-causal --seqlens 4096,8192,16384 --methods $M --json $L/ab$r.json --markdown $L/ab$r.md > $L/ab$r.log 2>&1
done
python3 -m jax_flash_attn.bench --merge $L/ab1.json $L/ab2.json $L/ab3.json --json $L/ab.json --markdown $L/ab.md > $L/merge-ab.log 2>&1
xz -dc .carry/s14/rs-new.so.xz > $S/jflash_attn/_jflash_attn_rust.so
for b in rust cpp; do
  ( time XLA_FLAGS=--xla_gpu_autotune_level=0 timeout 250 python3 -m pytest tests -q -n 8 -p no:cacheprovider -rfE --bindings $b ) > $L/suite-$b.log 2>&1
done
cd $OUT && tar czf logsC.tgz logs
{ cat $L/ab.md; for b in rust cpp; do echo "== suite $b"; grep -E "passed|failed" $L/suite-$b.log | tail -1; grep -E "^(FAILED|ERROR)" $L/suite-$b.log | head -8; done; } >&3
