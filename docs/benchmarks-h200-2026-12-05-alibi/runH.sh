#!/bin/bash
# H100, seventh session, call H: the empty ALiBi placeholder (float32 [0] instead of [batch, heads]
# zeros, which XLA computed with a kernel of its own in every call). Rust binding built by Bazel
# with the change: the dense GPU tests, then the forward at 512-2k, HEAD and the change alternated.
L=$OUT/logs; mkdir -p $L
exec 3>&1 > $L/runH.log 2>&1
set -x
python3 -m pip install --no-index --no-deps .whl/flash_attn3_jax-*.whl > $L/pip.log 2>&1
mkdir -p build/rs-head/jflash_attn build/rs-new/jflash_attn
cp .carry/frontend-head/*.py build/rs-head/jflash_attn/
cp python/frontend/*.py python/jflash_attn/_binding.py build/rs-new/jflash_attn/
xz -dc .carry/rs-head.so.xz > build/rs-head/jflash_attn/_jflash_attn_rust.so
xz -dc .carry/rs-new.so.xz > build/rs-new/jflash_attn/_jflash_attn_rust.so
( time PYTHONPATH=$PWD/build/rs-new XLA_FLAGS=--xla_gpu_autotune_level=0 timeout 150 python3 -m pytest \
  tests/test_gpu.py tests/test_sm90.py tests/test_features.py -q -n 8 -p no:cacheprovider -rfE --bindings rust ) > $L/tests.log 2>&1
for v in head new new head; do
  PYTHONPATH=$PWD/build/rs-$v python3 -m jflash_attn.bench --mode fwd --seqlens 512,1024,2048 \
    --methods jflash_attn-rust,fa3-jax --json $L/fwd-$v-$SECONDS.json --markdown $L/fwd-$v-$SECONDS.md > /dev/null 2>&1
done
cd $OUT && tar czf logs.tgz logs
{ tail -3 $L/tests.log; for f in $L/fwd-*.md; do echo "== $f"; grep -E "^\| [0-9]" $f; done; } >&3
