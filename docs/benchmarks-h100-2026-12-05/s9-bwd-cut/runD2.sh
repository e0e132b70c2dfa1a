#!/bin/bash
# Ninth session, call D2: the GPU suite on the backward cut's Rust extension (CI's Bazel build,
# abi3), then few-key-block fwd+bwd steps through JAX: main's extension and the new one alternated,
# FA3 and cuDNN beside them.
L=$OUT/logs; mkdir -p $L
exec 3>&1 > $L/runD2.log 2>&1
set -x
python3 -m pip install --no-index --no-deps .whl/flash_attn3_jax-*.whl > $L/pip.log 2>&1
for d in new main; do mkdir -p build/rs-$d/jflash_attn; cp python/frontend/*.py python/jflash_attn/_binding.py build/rs-$d/jflash_attn/
  xz -dc .carry/s9/rs-$d.so.xz > build/rs-$d/jflash_attn/_jflash_attn_rust.so; done
( time PYTHONPATH=$PWD/build/rs-new XLA_FLAGS=--xla_gpu_autotune_level=0 timeout 330 python3 -m pytest tests -q -n 8 -p no:cacheprovider -rfE --bindings rust ) > $L/suite-rust.log 2>&1
for v in main new main new; do
  for hs in "2 4096" "1 8192" "4 2048"; do set -- $hs
    PYTHONPATH=$PWD/build/rs-$v timeout 60 python3 -m jflash_attn.bench --mode fwdbwd --no-causal --head-dim 128 \
      --methods jflash_attn-rust,fa3-jax,jax-nn-cudnn --heads $1 --total-tokens $2 --seqlens $2 --json $L/few-$v-h$1-$SECONDS.json > /dev/null 2>&1
  done
done
cd $OUT && tar czf logs.tgz logs
{ grep -E "passed|failed" $L/suite-rust.log | tail -3; grep -E "FAILED|ERROR" $L/suite-rust.log | head; python3 - <<'PY'
import glob, json
for f in sorted(glob.glob("logs/few-*.json")):
    for r in json.load(open(f)):
        print(f.split("/")[-1], r.get("method"), r["heads"], r["seqlen"], round(r["ms"], 4), round(r["tflops"], 1))
PY
} >&3
