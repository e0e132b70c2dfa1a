#!/bin/bash
# Call B (twenty-third session; carry [".carry/s24", ".whl"]): main's tables as landed. The tool
# at d 128 three times (per point the median of the runs, --merge), d 64 and d 256 once each,
# both bindings with cuDNN and FA3 beside (FA3 has no d 256 backward: left out there); then
# memcheck and racecheck on bwd_fin's d 128 cases (the persistent kernel among them).
L=$OUT/logs; mkdir -p $L; C=.carry/s24
exec 3>&1 > $L/runB.log 2>&1
left() { t=$(($1 - SECONDS)); [ $t -gt 5 ] && echo $t || echo 1; }  # seconds to a mark of the call
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,power.limit --format=csv >&3
S=$PWD/build/site; bash tests/device/site_setup.sh $S $C/cpp312-fin.tar.xz $C/rust_so.xz; export PYTHONPATH=$S
python3 -m pip install --no-index --no-deps .whl/flash_attn3_jax-*.whl > $L/pip.log 2>&1
M=jax_flash_attn-cpp,jflash_attn-rust,jax-nn-cudnn
for r in 1 2 3; do
  timeout $(left $((60 + 65 * r))) python3 -m jax_flash_attn.bench --gpu-clocks --head-dim 128 --methods $M,fa3-jax \
    --json $L/d128-B$r.json --markdown $L/d128-B$r.md > $L/bench-d128-$r.log 2>&1; echo "d128 run $r rc $?" >&3
done
python3 -m jax_flash_attn.bench --merge $L/d128-B?.json --markdown $L/d128-B.md --json $L/d128-B.json > $L/merge.log 2>&1
grep -A9 "^### " $L/d128-B.md | grep -v "clock\|MHz" >&3
timeout $(left 320) python3 -m jax_flash_attn.bench --gpu-clocks --head-dim 64 --methods $M,fa3-jax \
  --json $L/d64-B.json --markdown $L/d64-B.md > $L/bench-d64.log 2>&1; echo "d64 rc $?" >&3
timeout $(left 380) python3 -m jax_flash_attn.bench --gpu-clocks --head-dim 256 --methods $M \
  --json $L/d256-B.json --markdown $L/d256-B.md > $L/bench-d256.log 2>&1; echo "d256 rc $?" >&3
unxz -k -f $C/bwd_fin.xz && chmod +x $C/bwd_fin
for tool in memcheck racecheck; do
  timeout $(left $([ $tool = memcheck ] && echo 470 || echo 580)) compute-sanitizer --tool $tool \
    --kernel-name kns=flash_bwd_kernel $C/bwd_fin only 128 > $L/$tool-128.log 2>&1
  echo "$tool 128 rc $? $(grep -E 'SUMMARY|hazard' $L/$tool-128.log | tail -2)" >&3
done
tar czf $OUT/logs.tgz -C $OUT logs
