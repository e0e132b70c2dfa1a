#!/bin/bash
# Call C (twenty-second session; carry [".carry/s23", ".whl"]): call A's A/B through JAX at d 128
# again, three more runs on the same machine (cpp: main, rust: the persistent backward).
L=$OUT/logs; mkdir -p $L; C=.carry/s23
export FA3_WHEEL=$(ls .whl/flash_attn3_jax-*.whl)
RUNS=${RUNS:-3} timeout 500 bash tests/device/tool_ab.sh $L/ab128 $C/cpp312-main.tar.xz $C/cpp312-pers.tar.xz \
  --head-dim 128 --mode fwdbwd --no-causal --methods jax_flash_attn-cpp,jflash_attn-rust,fa3-jax
tar czf $OUT/logs.tgz -C $OUT logs
