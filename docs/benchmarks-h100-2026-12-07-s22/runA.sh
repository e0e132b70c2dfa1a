#!/bin/bash
# Call A (twenty-second session; carry [".carry/s23", ".whl"]): the persistent backward. b_pers /
# cpp312-pers: the uncut 80-row kernel (unmasked calls, d 64 and 128) in a grid of at most one CTA
# per SM, CTA c walking key blocks c, c + gridDim.x, ..., so that one block's dK/dV epilogue
# overlaps the next one's K/V load and no CTA is launched and set up per block. b_main /
# cpp312-main: main's kernels (the check builds both with the check's two new multi-round cases).
# Standalone A/B and memcheck, the A/B through JAX (tests/device/tool_ab.sh: column
# jax_flash_attn-cpp is main, jflash_attn-rust the persistent build; FA3 beside), then the
# twenty-first session's call B (what sets the clock) on main's backward check.
L=$OUT/logs; mkdir -p $L; C=.carry/s23
exec 3>&1 > $L/runA.log 2>&1
left() { t=$(($1 - SECONDS)); [ $t -gt 5 ] && echo $t || echo 1; }  # seconds to a mark of the call
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,power.limit --format=csv >&3
bash tests/device/ab_standalone.sh $L/ab b_main $C/b_main $C/b_pers >&3
timeout $(left 260) compute-sanitizer --tool memcheck --kernel-name kns=flash_bwd_kernel $C/b_pers only 128 \
  > $L/memcheck128.log 2>&1
echo "memcheck 128 rc $? $(grep SUMMARY $L/memcheck128.log)" >&3
export FA3_WHEEL=$(ls .whl/flash_attn3_jax-*.whl)
M="--mode fwdbwd --no-causal --methods jax_flash_attn-cpp,jflash_attn-rust,fa3-jax"
echo "== through JAX, d 128 (cpp: main, rust: persistent)" >&3
timeout $(left 430) bash tests/device/tool_ab.sh $L/ab128 $C/cpp312-main.tar.xz $C/cpp312-pers.tar.xz --head-dim 128 $M >&3
echo "== through JAX, d 64" >&3
RUNS=1 timeout $(left 520) bash tests/device/tool_ab.sh $L/ab64 $C/cpp312-main.tar.xz $C/cpp312-pers.tar.xz --head-dim 64 $M >&3
BUILDS="$C/b_main" MS=3000 OUT=$L/clock timeout $(left 580) bash docs/benchmarks-h100-2026-12-07-s21/runB.sh >&3 2>&1
tar czf $OUT/logs.tgz -C $OUT logs
