#!/bin/bash
# Ninth session, call F: the Rust extension at the scratch-alignment fix (CI's Bazel build): the
# GPU suite (the cut last rounds now run through JAX), one 64-key-block step kernel by kernel under
# ncu, then the tool's d 128 table (unmasked) with main's extension and this one alternated.
L=$OUT/logs; mkdir -p $L
exec 3>&1 > $L/runF.log 2>&1
set -x
for d in fix main; do mkdir -p build/rs-$d/jflash_attn; cp python/frontend/*.py python/jflash_attn/_binding.py build/rs-$d/jflash_attn/
  xz -dc .carry/s9/rs-$d.so.xz > build/rs-$d/jflash_attn/_jflash_attn_rust.so; done
( time PYTHONPATH=$PWD/build/rs-fix XLA_FLAGS=--xla_gpu_autotune_level=0 timeout 200 python3 -m pytest tests -q -n 8 -p no:cacheprovider -rfE --bindings rust ) > $L/suite-rust.log 2>&1
for v in main fix; do
  PYTHONPATH=$PWD/build/rs-$v timeout 60 ncu --clock-control none --metrics gpu__time_duration.sum --csv \
    python3 tests/device/step_kernels.py jflash_attn-rust 4096 --heads 2 --tokens 4096 > $L/step-$v.csv 2> $L/step-$v.err
  python3 tests/device/step_kernels.py --summarize $L/step-$v.csv > $L/step-$v.txt 2>&1
done
for v in main fix main fix; do
  PYTHONPATH=$PWD/build/rs-$v timeout 70 python3 -m jflash_attn.bench --mode both --no-causal --head-dim 128 \
    --methods jflash_attn-rust --json $L/tool-$v-$SECONDS.json > /dev/null 2>&1
done
cd $OUT && tar czf logs.tgz logs
{ grep -E "passed|failed" $L/suite-rust.log | tail -2; grep -E "FAILED|ERROR" $L/suite-rust.log | head -5
  for f in $L/step-*.txt; do echo "== $(basename $f)"; cut -c1-120 $f; done
  python3 - <<'PY'
import glob, json
for f in sorted(glob.glob("logs/tool-*.json"), key=lambda f: int(f.split("-")[-1][:-5])):
    print(f.split("/")[-1], " ".join(f"{'fb' if r['bwd'] else 'f'}{r['seqlen']}:{r['ms']:.4f}" for r in json.load(open(f))))
PY
} >&3
