#!/bin/bash
# Twelfth session, call 4 (same machine): racecheck on the d 128 cases, bstt and main (a1a7a40's kernels).
L=$OUT/logs; mkdir -p $L; chmod +x .carry/s11/bin/*
(timeout 280 compute-sanitizer --tool racecheck .carry/s11/bin/bwd_bstt only 128 > $L/bstt-racecheck.log 2>&1 &)
timeout 280 compute-sanitizer --tool racecheck .carry/s11/bin/bwd_gate only 128 > $L/gate-racecheck.log 2>&1
