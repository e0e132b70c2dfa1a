#!/bin/bash
# Eighth session, call T: the cut last round (branch fwd-split) through JAX.
# The Bazel-built Rust extension of the branch (abi3: runs on the host's 3.12); main's for A/B.
L=$OUT/logs; mkdir -p $L
exec 3>&1 > $L/runT.log 2>&1
set -x
python3 -m pip install --no-index --no-deps .whl/flash_attn3_jax-*.whl > $L/pip.log 2>&1
for d in rs-new/jflash_attn rs-main/jflash_attn; do mkdir -p build/$d; cp python/frontend/*.py build/$d/; done
cp python/jflash_attn/_binding.py build/rs-new/jflash_attn/
cp python/jflash_attn/_binding.py build/rs-main/jflash_attn/
xz -dc .carry/s8/rs-new.so.xz > build/rs-new/jflash_attn/_jflash_attn_rust.so
xz -dc .carry/rs-new.so.xz > build/rs-main/jflash_attn/_jflash_attn_rust.so
.carry/s8/split > $L/check.log 2>&1
( time PYTHONPATH=$PWD/build/rs-new timeout 300 python3 -m pytest tests -q -n 8 -p no:cacheprovider -rfE --bindings rust ) > $L/suite.log 2>&1
for v in main new new main; do
  PYTHONPATH=$PWD/build/rs-$v python3 -m jflash_attn.bench --mode fwd --no-causal --methods jflash_attn-rust \
    --json $L/fwd-$v-$SECONDS.json --markdown $L/fwd-$v-$SECONDS.md > /dev/null 2>&1
done
cd $OUT && tar czf logs.tgz logs
{ tail -3 $L/check.log; grep -c "cut tiles" $L/check.log; tail -4 $L/suite.log; for f in $L/fwd-*.md; do echo "== $f"; grep -E "^\| [0-9]" $f; done; } >&3
