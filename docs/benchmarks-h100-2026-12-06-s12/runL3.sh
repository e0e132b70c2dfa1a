#!/bin/bash
# Twelfth session, call 3 (the machine of runL1/runL2): the d 128 table of a1a7a40 again, clocks around it.
L=$OUT/logs; mkdir -p $L; export PYTHONPATH=$PWD/build/site
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,power.draw,power.limit,temperature.gpu --format=csv > $L/smi.log
python3 -m jax_flash_attn.bench --head-dim 128 --methods jax_flash_attn-cpp,jflash_attn-rust,jax-nn-cudnn,fa3-jax \
  --json $L/d128-L3.json --markdown $L/d128-L3.md > $L/d128-L3.log 2>&1
nvidia-smi --query-gpu=name,clocks.sm,power.draw,temperature.gpu --format=csv >> $L/smi.log
