#!/bin/bash
# Tenth session, call D (warm, after C): the few-tile forward's host cost per binding (enqueue
# time of 2000 jitted calls against their completion), the bench tool alternating the bindings
# at 2 heads x 4096; the forward's rescale-only-when-the-max-moves variant (standalone, checked
# and timed against main's kernel, alternated); then the full d 128 table at main.
L=$OUT/logs; mkdir -p $L
exec 3>&1 > $L/runD.log 2>&1
set -x
python3 -m pip install --no-index --no-deps .whl/flash_attn3_jax-*.whl > $L/pip.log 2>&1
B=.carry/s10/bin; chmod +x $B/*
( time timeout 60 $B/fwd_resc ) > $L/resc-check.log 2>&1
for r in 1 2 3; do for v in s10 resc; do echo "== round $r $v"; $B/fwd_$v time 128; done; done > $L/resc-time.log 2>&1
for r in 1 2; do for v in s10 resc; do echo "== round $r $v causal"; $B/fwd_$v bench 128 | grep -i causal | tail -3; done; done > $L/resc-causal.log 2>&1
[ -d build/site ] || exit 3
for r in 1 2; do for p in jflash_attn jax_flash_attn; do
  PYTHONPATH=$PWD/build/$([ $p = jflash_attn ] && echo rs-cnt || echo site) timeout 60 python3 tests/device/host_cost.py $p; done; done > $L/host-cost.log 2>&1
export PYTHONPATH=$PWD/build/site
for v in rust cpp rust cpp; do m=jflash_attn-rust; [ $v = cpp ] && m=jax_flash_attn-cpp
  timeout 45 python3 -m jax_flash_attn.bench --mode both --no-causal --head-dim 128 \
    --methods $m --heads 2 --total-tokens 4096 --seqlens 4096 --json $L/few-$v-$SECONDS.json > /dev/null 2>&1
done
timeout 200 python3 -m jax_flash_attn.bench --head-dim 128 --methods jax_flash_attn-cpp,jflash_attn-rust,jax-nn-cudnn,fa3-jax \
  --json $L/d128-D.json --markdown $L/d128-D.md > $L/d128-D.log 2>&1
cd $OUT && tar czf logs.tgz logs
{ tail -2 $L/resc-check.log; grep -c PASS $L/resc-check.log; grep FAIL $L/resc-check.log | head -3
  cat $L/resc-time.log $L/resc-causal.log | cut -c1-150; cat $L/host-cost.log | grep -v "^+"
  python3 - <<'PY'
import glob, json
for f in sorted(glob.glob("logs/few-*.json"), key=lambda f: int(f.split("-")[-1][:-5])):
    for r in json.load(open(f)):
        print(f.split("/")[-1], r["method"], "fwdbwd" if r["bwd"] else "fwd", round(r["ms"], 4), round(r["min_ms"], 4))
PY
  cat $L/d128-D.md; tail -2 $L/d128-D.log; } >&3
