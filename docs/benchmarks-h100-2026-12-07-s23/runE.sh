#!/bin/bash
# Call E (twenty-third session; carry [".carry/s24", ".whl"]): main's d 64 and d 256 tables (the C++
# package cpp312-all: FlashAttention-2 at every head dim too, which the front end requires; the
# Rust extension of CI has d 128 only, so no Rust column), then why the persistent backward loses
# at 512: ncu on one launch at 512 of main's one-block kernel (bwd_fin) and of the persistent one
# (bwd_p0: kPersistMinQueries = 0), after bwd_p0's checks.
L=$OUT/logs; mkdir -p $L; C=.carry/s24
exec 3>&1 > $L/runE.log 2>&1
left() { t=$(($1 - SECONDS)); [ $t -gt 5 ] && echo $t || echo 1; }  # seconds to a mark of the call
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,power.limit --format=csv >&3
python3 -m pip install --no-index --no-deps .whl/flash_attn3_jax-*.whl > $L/pip.log 2>&1
S=$PWD/build/site; bash tests/device/site_setup.sh $S $C/cpp312-all.tar.xz; export PYTHONPATH=$S
for d in 64 256; do
  M=jax_flash_attn-cpp,jax-nn-cudnn; [ $d = 64 ] && M=$M,fa3-jax
  timeout $(left $([ $d = 64 ] && echo 90 || echo 160)) python3 -m jax_flash_attn.bench --gpu-clocks --head-dim $d \
    --methods $M --json $L/d$d-E.json --markdown $L/d$d-E.md > $L/bench-d$d.log 2>&1; echo "d$d rc $?" >&3
  grep -A9 "^### .*TFLOPS" $L/d$d-E.md >&3
done
for b in bwd_fin bwd_p0; do unxz -k -f $C/$b.xz; chmod +x $C/$b; done
timeout 60 $C/bwd_p0 > $L/check-bwd_p0.log 2>&1
echo "bwd_p0 rc $? $(grep -c PASS $L/check-bwd_p0.log) PASS $(grep -c FAIL $L/check-bwd_p0.log) FAIL" >&3
SEC="--section SourceCounters --section WarpStateStats --section SpeedOfLight --section ComputeWorkloadAnalysis --section MemoryWorkloadAnalysis"
for b in bwd_fin bwd_p0; do
  timeout 90 ncu --clock-control none $SEC -k regex:flash_bwd_kernel --launch-skip 3 --launch-count 1 -o $L/$b $C/$b ncu 512 > $L/ncu-$b.log 2>&1; echo "$b ncu rc $?" >&3
  ncu -i $L/$b.ncu-rep --page details > $L/$b-details.txt 2>&1
  grep -E "^  [a-zA-Z].*\(|Duration|SM Frequency|Elapsed Cycles|Throughput|Executed Ipc A|Spilling Requests |Warp Cycles Per Issued" $L/$b-details.txt | head -16 >&3
  ncu -i $L/$b.ncu-rep --page source --csv --print-source sass > $L/$b-sass.csv 2>&1
  python3 tests/device/ncu_top_stalls.py $L/$b-sass.csv --top 20 > $L/$b-stalls.txt 2>&1; head -21 $L/$b-stalls.txt >&3
done
rm -f $L/*.ncu-rep; xz -9 $L/*-sass.csv
tar czf $OUT/logs.tgz -C $OUT logs
