#!/bin/bash
# Call F: main 839caec's standalone backward (bwd_final): the check, then racecheck on the d 128 cases.
L=$OUT/logs; mkdir -p $L
F=.carry/s13/bin/bwd_final; chmod +x $F
timeout 40 $F > $L/final-check.log 2>&1; echo "check rc $?"; grep -c PASS $L/final-check.log; tail -1 $L/final-check.log
timeout 250 compute-sanitizer --tool racecheck $F only 128 > $L/final-racecheck.log 2>&1; echo "racecheck rc $?"
grep -c PASS $L/final-racecheck.log; grep -E "SUMMARY|hazard" $L/final-racecheck.log | tail -3
