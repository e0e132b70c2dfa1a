#!/bin/bash
# Call D (twenty-third session; carry [".carry/s24", ".whl"]): where main's persistent d 128
# backward waits at 4k, against FA3's (the seventeenth session's runD.sh profiled the one-block
# kernel at 16k). Ours: bwd_fin `ncu 4096` (JFA_UNCUT=1: one uncut, persistent launch); FA3's
# through JAX (tests/device/step_kernels.py). One launch each, --clock-control none.
L=$OUT/logs; mkdir -p $L; C=.carry/s24
exec 3>&1 > $L/runD.log 2>&1
python3 -m pip install --no-index --no-deps .whl/flash_attn3_jax-*.whl > $L/pip.log 2>&1
S=$PWD/build/site; bash tests/device/site_setup.sh $S $C/cpp312-fin.tar.xz; export PYTHONPATH=$S
unxz -k -f $C/bwd_fin.xz; chmod +x $C/bwd_fin
SEC="--section SourceCounters --section WarpStateStats --section SpeedOfLight --section ComputeWorkloadAnalysis --section MemoryWorkloadAnalysis"
JFA_UNCUT=1 timeout 150 ncu --clock-control none $SEC -k regex:flash_bwd_kernel --launch-skip 3 --launch-count 1 -o $L/ours $C/bwd_fin ncu 4096 > $L/ncu-ours.log 2>&1; echo "ours rc $?" >&3
XLA_FLAGS=--xla_gpu_autotune_level=0 timeout 200 ncu --clock-control none $SEC --kernel-name-base demangled -k regex:FlashAttnBwdSm90 --launch-skip 1 --launch-count 1 -o $L/fa3 python3 tests/device/step_kernels.py fa3-jax 4096 > $L/ncu-fa3.log 2>&1; echo "fa3 rc $?" >&3
for r in ours fa3; do
  ncu -i $L/$r.ncu-rep --page details > $L/$r-details.txt 2>&1
  grep -E "^  [a-zA-Z].*\(|Duration|SM Frequency|Throughput|Executed Ipc A|Issue Slots Busy|Spilling|Warp Cycles Per Issued|Registers Per|Grid Size" $L/$r-details.txt | head -24 >&3
  ncu -i $L/$r.ncu-rep --page source --csv --print-source sass > $L/$r-sass.csv 2>&1
  python3 tests/device/ncu_top_stalls.py $L/$r-sass.csv --top 25 > $L/$r-stalls.txt 2>&1; head -26 $L/$r-stalls.txt >&3
done
rm -f $L/*.ncu-rep; xz -9 $L/*-sass.csv
tar czf $OUT/logs.tgz -C $OUT logs
