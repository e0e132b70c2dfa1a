#!/bin/bash
# Call G: per-pipe utilisation of main's d 64 and d 128 forward kernels at 16k (ncu metrics).
L=$OUT/logs; mkdir -p $L
B=.carry/s14/bin; chmod +x $B/*
M="regex:sm__inst_executed_pipe_.*\.avg\.pct_of_peak_sustained_active,regex:sm__pipe_.*_cycles_active\.avg\.pct_of_peak_sustained_active,sm__cycles_elapsed.avg.per_second,gpu__time_duration.sum"
timeout 150 ncu --clock-control none --metrics "$M" -k regex:flash_fwd_kernel --launch-skip 3 --launch-count 1 $B/fwd_main14 few 64 16 16384 > $L/ncu-pipes-f64.txt 2>&1; echo "rc $?"
timeout 150 ncu --clock-control none --metrics "$M" -k regex:flash_fwd_kernel --launch-skip 3 --launch-count 1 $B/fwd_main14 ncu > $L/ncu-pipes-f128.txt 2>&1; echo "rc $?"
paste <(grep -E "sm__|gpu__" $L/ncu-pipes-f64.txt | awk '{print $1, $NF}') <(grep -E "sm__|gpu__" $L/ncu-pipes-f128.txt | awk '{print $NF}') | awk '$2!="0" || $3!="0"'
