#!/bin/bash
# Call E (given inline to the device tool): runA's d 64 causal forward at 512-2k again, three
# runs of the tool (C++ package of runA against cuDNN), merged.
L=$OUT/logs; mkdir -p $L
python3 -m pip install --no-index --no-deps .whl/flash_attn3_jax-*.whl > /dev/null 2>&1
S=$PWD/build/site; rm -rf $S; mkdir -p $S; tar xJf .carry/s15/cpp312-final3.tar.xz -C $S; export PYTHONPATH=$S
for r in 1 2 3; do
  timeout 60 python3 -m jax_flash_attn.bench --head-dim 64 --mode fwd --causal --seqlens 512,1024,2048 --methods jax_flash_attn-cpp,jax-nn-cudnn --json $L/c$r.json --markdown $L/c$r.md > $L/c$r.log 2>&1
done
python3 -m jax_flash_attn.bench --merge $L/c1.json $L/c2.json $L/c3.json --json $L/c.json --markdown $L/c.md
cat $L/c1.md $L/c2.md $L/c3.md | grep "^| [0-9]"
