#!/bin/bash
# Call D: where the d 128 backward waits now, against FA3's, at 16k (the seventh session's
# profile, s7-runA-ncu-16k.txt, is twelve versions old). Ours: main's standalone check (b_tc,
# built off the device from 50b4813; JFA_UNCUT=1 so that every launch is the uncut kernel); FA3's
# through JAX (tests/device/step_kernels.py). One launch each, --clock-control none.
L=$OUT/logs; mkdir -p $L
exec 3>&1 > $L/runD.log 2>&1
python3 -m pip install --no-index --no-deps .whl/flash_attn3_jax-*.whl > $L/pip.log 2>&1
S=$PWD/build/site; rm -rf $S; mkdir -p $S; tar xJf .carry/s15/cpp312-final3.tar.xz -C $S
cp python/frontend/*.py $S/jax_flash_attn/; export PYTHONPATH=$S
B=.carry/s18; unxz -k -f $B/b_tc.xz; chmod +x $B/b_tc
SEC="--section SourceCounters --section WarpStateStats --section SpeedOfLight --section ComputeWorkloadAnalysis --section MemoryWorkloadAnalysis"
JFA_UNCUT=1 timeout 200 ncu --clock-control none $SEC -k regex:flash_bwd_kernel --launch-skip 3 --launch-count 1 -o $L/ours $B/b_tc ncu 16384 > $L/ncu-ours.log 2>&1; echo "ours rc $?" >&3
XLA_FLAGS=--xla_gpu_autotune_level=0 timeout 200 ncu --clock-control none $SEC --kernel-name-base demangled -k regex:FlashAttnBwdSm90 --launch-skip 1 --launch-count 1 -o $L/fa3 python3 tests/device/step_kernels.py fa3-jax 16384 > $L/ncu-fa3.log 2>&1; echo "fa3 rc $?" >&3
for r in ours fa3; do
  ncu -i $L/$r.ncu-rep --page details > $L/$r-details.txt 2>&1
  grep -E "^  [a-zA-Z].*\(|Duration|SM Frequency|Throughput|Executed Ipc A|Issue Slots Busy|Spilling|Warp Cycles Per Issued|Registers Per" $L/$r-details.txt | head -20 >&3
  ncu -i $L/$r.ncu-rep --page source --csv --print-source sass > $L/$r-sass.csv 2>&1
  python3 tests/device/ncu_top_stalls.py $L/$r-sass.csv --top 25 > $L/$r-stalls.txt 2>&1; head -26 $L/$r-stalls.txt >&3
done
rm -f $L/*.ncu-rep; xz -9 $L/*-sass.csv
cd $OUT && tar czf logsD.tgz logs
