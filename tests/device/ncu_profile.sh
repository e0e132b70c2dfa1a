#!/bin/bash
# ncu_profile.sh LOGS NAME SKIP KERNEL_REGEX CMD... (on the device, from the repository root): one
# launch of the kernels matching KERNEL_REGEX (after SKIP of them) that CMD runs, profiled by ncu
# with --clock-control none and the sections the notes compare (speed of light, compute and memory
# workload, warp states, source counters). Writes LOGS/NAME-details.txt, LOGS/NAME-stalls.txt (the
# top stall sites, tests/device/ncu_top_stalls.py) and LOGS/NAME-sass.csv.xz; prints the headline
# figures and the top 20 sites. Set NCU_EXTRA (e.g. "--kernel-name-base demangled") for a peer's kernels.
L=$1; n=$2; skip=$3; kernel=$4; shift 4; mkdir -p $L
SEC="--section SourceCounters --section WarpStateStats --section SpeedOfLight --section ComputeWorkloadAnalysis --section MemoryWorkloadAnalysis"
ncu --clock-control none $SEC $NCU_EXTRA -k regex:$kernel --launch-skip $skip --launch-count 1 -o $L/$n "$@" \
  > $L/ncu-$n.log 2>&1
echo "$n ncu rc $?"
ncu -i $L/$n.ncu-rep --page details > $L/$n-details.txt 2>&1
grep -E "^  [a-zA-Z].*\(|Duration|SM Frequency|Elapsed Cycles|Throughput|Executed Ipc A|Spilling Requests |Warp Cycles Per Issued" \
  $L/$n-details.txt | head -16
ncu -i $L/$n.ncu-rep --page source --csv --print-source sass > $L/$n-sass.csv 2>&1
python3 tests/device/ncu_top_stalls.py $L/$n-sass.csv --top 20 > $L/$n-stalls.txt 2>&1
head -21 $L/$n-stalls.txt
rm -f $L/$n.ncu-rep; xz -9 -f $L/$n-sass.csv
