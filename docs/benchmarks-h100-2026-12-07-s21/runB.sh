#!/bin/bash
# Call B (twenty-first session; carry [".carry/s16", ".carry/s22"]): what sets the SM clock under
# sustained load. Every method ran at 1568-1590 MHz at 16k in the seventeenth to twenty-first
# sessions' tables, at 495 to 691 W of the 700 W limit, so board power alone does not explain it.
# Each build runs one point (`few 128 16 16384`: batch 1, 16 heads, three timed spans) for
# JFA_BENCH_MS=4000 while nvidia-smi logs the clock, power, temperatures and the clock event
# reasons every 100 ms; `nvidia-smi -q -d PERFORMANCE` is read mid-run. Logs tarred (the tool
# returns at most 8 files).
L=$OUT/logs; mkdir -p $L; C=.carry/s22; F=.carry/s16
B=${BUILDS:-$C/b_main $C/b_mc $F/f_main}  # BUILDS=...: fewer
for b in $B; do unxz -k -f $b.xz && chmod +x $b; done
Q=timestamp,clocks.sm,clocks.mem,power.draw,enforced.power.limit,temperature.gpu,temperature.memory
R=clocks_event_reasons.active,clocks_event_reasons.sw_power_cap,clocks_event_reasons.hw_slowdown,clocks_event_reasons.hw_thermal_slowdown,clocks_event_reasons.hw_power_brake_slowdown,clocks_event_reasons.sw_thermal_slowdown
nvidia-smi --query-gpu=$Q,$R --format=csv > $L/smi-fields.log 2>&1 || R=clocks_throttle_reasons.active
for b in $B; do
  n=$(basename $b)
  nvidia-smi --query-gpu=$Q,$R --format=csv,noheader,nounits -lms 100 > $L/smi-$n.log 2>&1 & S=$!
  sleep 1; JFA_BENCH_MS=${MS:-4000} timeout 90 $b few 128 16 16384 > $L/time-$n.log 2>&1 & P=$!
  sleep 12; nvidia-smi -q -d PERFORMANCE > $L/perf-$n.log 2>&1
  wait $P; kill $S; sleep 5
  echo "== $n"; grep bench $L/time-$n.log
  # the readings while it ran: median clock, power, temperature, and the reasons seen
  python3 - $L/smi-$n.log <<'PY'
import statistics, sys, collections
rows = [l.strip().split(", ") for l in open(sys.argv[1]) if l.count(",") >= 7]
busy = [r for r in rows if r[3].replace(".", "").isdigit() and float(r[3]) > 300]
if busy:
    for i, name in [(1, "MHz"), (3, "W"), (5, "C gpu"), (6, "C mem")]:
        v = [float(r[i]) for r in busy if r[i].replace(".", "").isdigit()]
        print(f"  {name}: median {statistics.median(v):.0f}, min {min(v):.0f}, max {max(v):.0f} over {len(v)} readings")
    print("  reasons:", dict(collections.Counter(" ".join(r[7:]) for r in busy)))
PY
  grep -A14 -i "Clocks Event Reasons\|Clocks Throttle Reasons" $L/perf-$n.log | head -16
done
tar czf $OUT/logs.tgz -C $OUT logs
