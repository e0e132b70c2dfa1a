#!/bin/bash
# Call H (twenty-third session; given inline, carry [".carry/s24f"], the same warm machine): btma
# against main at d 128 again, the order reversed (variant first), three rounds.
C=.carry/s24f; L=$OUT/logs; mkdir -p $L; for b in bwd_fin bwd_tma; do [ -x $C/$b ] || { unxz -k -f $C/$b.xz; chmod +x $C/$b; }; done; ext() { grep bench | sed 's/.*: *\([0-9.]*\) ms, *\([0-9.]*\) TF.*/\1/' | tr '\n' ' '; }; for r in 1 2 3; do for b in bwd_tma bwd_fin; do echo "$b $(JFA_BENCH_MS=300 timeout 25 $C/$b time 128 | ext)" >> $L/sustained128.log; echo "$b $(timeout 15 $C/$b time 128 | ext)" >> $L/time128.log; done; done; echo "== d128 bursts"; python3 tests/device/median_times.py $L/time128.log bwd_fin; echo "== d128 sustained"; python3 tests/device/median_times.py $L/sustained128.log bwd_fin
