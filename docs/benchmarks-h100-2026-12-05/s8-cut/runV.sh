#!/bin/bash
# Eighth session, call V: why calls of few tiles ran slower cut in the tool.
# Standalone kernel timing (no XLA) cut vs uncut; then the tool with main's
# extension, the branch's, and the branch's without XLA's scratch (uncut).
L=$OUT/logs; mkdir -p $L
exec 3>&1 > $L/runV.log 2>&1
set -x
B=.carry/s8/split
for hs in "2 4096" "4 2048" "16 16384"; do set -- $hs
  $B few 128 $1 $2; JFA_UNCUT=1 $B few 128 $1 $2; $B few 128 $1 $2; JFA_UNCUT=1 $B few 128 $1 $2
done > $L/few-standalone.log 2>&1
for v in main new noalloc; do mkdir -p build/rs-$v/jflash_attn; cp python/frontend/*.py python/jflash_attn/_binding.py build/rs-$v/jflash_attn/; done
xz -dc .carry/s8/rs-new.so.xz > build/rs-new/jflash_attn/_jflash_attn_rust.so
xz -dc .carry/s8/rs-noalloc.so.xz > build/rs-noalloc/jflash_attn/_jflash_attn_rust.so
xz -dc .carry/rs-new.so.xz > build/rs-main/jflash_attn/_jflash_attn_rust.so
for v in main new noalloc noalloc new main; do
  for hs in "4 2048 2048" "2 4096 4096"; do set -- $hs
    PYTHONPATH=$PWD/build/rs-$v python3 -m jflash_attn.bench --mode fwd --no-causal --methods jflash_attn-rust \
      --heads $1 --total-tokens $2 --seqlens $3 --json $L/few-$v-h$1-$SECONDS.json > /dev/null 2>&1
  done
done
cd $OUT && tar czf logs.tgz logs
{ grep bench $L/few-standalone.log; python3 - <<'PY'
import glob, json
for f in sorted(glob.glob("logs/few-*.json")):
    for r in json.load(open(f)):
        print(f.split("/")[-1], r["heads"], r["seqlen"], round(r["ms"], 4), round(r["min_ms"], 4), round(r["tflops"], 1))
PY
} >&3
