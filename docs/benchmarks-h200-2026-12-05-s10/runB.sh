#!/bin/bash
# Tenth session, call B (right after A, on the warm machine with A's build/site): the few-block
# fwd+bwd step through the tool, before the scratch fix (c5e69f9's Rust extension) and at main,
# alternated, FA3 and cuDNN once; then the full d 128 table, both bindings at main, cuDNN, FA3.
L=$OUT/logs; mkdir -p $L
exec 3>&1 > $L/runB.log 2>&1
set -x
python3 -m pip install --no-index --no-deps .whl/flash_attn3_jax-*.whl > $L/pip.log 2>&1
[ -d build/site ] || { mkdir -p build && tar xzf .carry/s10/site.tgz; }
for d in head main; do mkdir -p build/rs-$d/jflash_attn; cp python/frontend/*.py python/jflash_attn/_binding.py build/rs-$d/jflash_attn/
  xz -dc .carry/s10/rs-$d.so.xz > build/rs-$d/jflash_attn/_jflash_attn_rust.so; done
for v in main head main head peers; do
  m=jflash_attn-rust; d=$v; [ $v = peers ] && m=fa3-jax,jax-nn-cudnn && d=head
  PYTHONPATH=$PWD/build/rs-$d timeout 45 python3 -m jflash_attn.bench --mode both --no-causal --head-dim 128 \
    --methods $m --heads 2 --total-tokens 4096 --seqlens 4096 --json $L/few-$v-$SECONDS.json > /dev/null 2>&1
done
PYTHONPATH=$PWD/build/site timeout 45 python3 -m jax_flash_attn.bench --mode both --no-causal --head-dim 128 \
  --methods jax_flash_attn-cpp --heads 2 --total-tokens 4096 --seqlens 4096 --json $L/few-cpp-$SECONDS.json > /dev/null 2>&1
PYTHONPATH=$PWD/build/site timeout 200 python3 -m jax_flash_attn.bench --head-dim 128 --methods jax_flash_attn-cpp,jflash_attn-rust,jax-nn-cudnn,fa3-jax \
  --json $L/d128-B.json --markdown $L/d128-B.md > $L/d128-B.log 2>&1
cd $OUT && tar czf logs.tgz logs
python3 - >&3 <<'PY'
import glob, json
for f in sorted(glob.glob("logs/few-*.json"), key=lambda f: int(f.split("-")[-1][:-5])):
    for r in json.load(open(f)):
        print(f.split("/")[-1], r["method"], "fwdbwd" if r["bwd"] else "fwd", round(r["ms"], 4), round(r["tflops"], 1))
PY
{ cat $L/d128-B.md; tail -3 $L/d128-B.log; } >&3
