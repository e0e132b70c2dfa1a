#!/bin/bash
# Twelfth session, call 6 (the machine of runM): the d 128 table a third time (merged with runM's two).
L=$OUT/logs; mkdir -p $L; export PYTHONPATH=$PWD/build/site
python3 -m jax_flash_attn.bench --head-dim 128 --methods jax_flash_attn-cpp,jflash_attn-rust,jax-nn-cudnn,fa3-jax \
  --json $L/d128-M3.json --markdown $L/d128-M3.md > $L/d128-M3.log 2>&1
