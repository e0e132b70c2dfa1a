#!/bin/bash
# Eighth session, call U: the GPU suite on the branch's Rust extension (XLA's
# autotuning off, as in earlier suite runs), then main against the branch on
# calls with few tiles (64: half the SMs idle uncut).
L=$OUT/logs; mkdir -p $L
exec 3>&1 > $L/runU.log 2>&1
set -x
for d in rs-new/jflash_attn rs-main/jflash_attn; do mkdir -p build/$d; cp python/frontend/*.py python/jflash_attn/_binding.py build/$d/; done
xz -dc .carry/s8/rs-new.so.xz > build/rs-new/jflash_attn/_jflash_attn_rust.so
xz -dc .carry/rs-new.so.xz > build/rs-main/jflash_attn/_jflash_attn_rust.so
( time PYTHONPATH=$PWD/build/rs-new XLA_FLAGS=--xla_gpu_autotune_level=0 timeout 400 python3 -m pytest tests -q -n 8 -p no:cacheprovider -rfE --bindings rust -o faulthandler_timeout=240 --durations=15 ) > $L/suite.log 2>&1
for v in main new new main; do
  for hs in "4 2048 2048" "2 4096 4096" "8 4096 4096"; do set -- $hs
    PYTHONPATH=$PWD/build/rs-$v python3 -m jflash_attn.bench --mode both --no-causal --methods jflash_attn-rust \
      --heads $1 --total-tokens $2 --seqlens $3 --json $L/few-$v-h$1-$SECONDS.json > /dev/null 2>&1
  done
done
cd $OUT && tar czf logs.tgz logs
{ grep -E "passed|failed|Timeout" $L/suite.log | tail -3; python3 - <<'PY'
import glob, json
for f in sorted(glob.glob("logs/few-*.json")):
    for r in json.load(open(f)):
        print(f.split("/")[-1], r["heads"], r["seqlen"], r["batch"], "fwdbwd" if r["bwd"] else "fwd", round(r["ms"], 4), round(r["tflops"], 1))
PY
} >&3
