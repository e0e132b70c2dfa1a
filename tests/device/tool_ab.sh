#!/bin/bash
# tool_ab.sh LOGS BASE_TAR VARIANT_TAR BENCH_ARGS... (on the device, from the repository root): A/B
# of two builds of the C++ package through the benchmark tool, in one process, so that each sample
# of one sits between samples of the other. BASE_TAR and VARIANT_TAR are tar.xz files of the site
# tests/device/gpu_build.py built. BASE is jax_flash_attn; VARIANT's extension goes into a second
# package under jflash_attn's name (the two bindings share one API), so that the tool's column
# jflash_attn-rust is the variant, counted as ours. FA3_WHEEL, if set, is installed first (fa3-jax).
# RUNS runs (default 2) of `python3 -m jax_flash_attn.bench --gpu-clocks BENCH_ARGS`, merged into
# LOGS/ab.md and LOGS/ab.json; prints the merged table. Leaves PYTHONPATH's site in build/site-ab.
set -e
L=$1; base=$2; variant=$3; shift 3; mkdir -p $L
[ -n "$FA3_WHEEL" ] && python3 -m pip install --no-index --no-deps "$FA3_WHEEL" > $L/pip.log 2>&1
S=$PWD/build/site-ab; bash tests/device/site_setup.sh $S $base
V=$S/jflash_attn; mkdir -p $V $L/variant-site
tar xJf $variant -C $L/variant-site
cp $L/variant-site/jax_flash_attn/_jax_flash_attn_cpp*.so python/frontend/*.py $V/
cat > $V/_binding.py <<'PY'
"""The variant of an A/B (tests/device/tool_ab.sh): a C++ extension under jflash_attn's name."""

from . import _jax_flash_attn_cpp as extension

NAME = "rust"  # the tool's label for the second of ours
PACKAGE = "jflash_attn"
TARGET_PREFIX = "jflash_attn_variant"
PY
rm -rf $L/variant-site
export PYTHONPATH=$S
for r in $(seq ${RUNS:-2}); do
  python3 -m jax_flash_attn.bench --gpu-clocks --json $L/ab$r.json --markdown $L/ab$r.md "$@" > $L/ab$r.log 2>&1 ||
    { tail -20 $L/ab$r.log; exit 1; }
done
python3 -m jax_flash_attn.bench --merge $L/ab[0-9]*.json --json $L/ab.json --markdown $L/ab.md > $L/merge.log 2>&1
cat $L/ab.md
