#!/bin/bash
# Call H: the 4k question. t1k (tails of 1024-query pieces: thirds at 4k, 16 heads) against main
# (4k uncut), 12 alternating rounds of time 128 and 8 of time 256.
L=$OUT/logs; mkdir -p $L
B=.carry/s14/bin; chmod +x $B/*
ext() { grep bench | command sed 's/.*: *\([0-9.]*\) ms, *\([0-9.]*\) TF.*/\1/' | tr '\n' ' '; }
for d in 128 256; do n=12; [ $d = 256 ] && n=8
  for r in $(seq 1 $n); do if [ $((r % 2)) = 1 ]; then o="bwd_final14 bwd_t1k"; else o="bwd_t1k bwd_final14"; fi
    for b in $o; do echo "d$d $b $(timeout 60 $B/$b time $d | ext)"; done; done; done | tee $L/t1k-time.log
