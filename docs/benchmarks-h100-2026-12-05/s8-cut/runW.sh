#!/bin/bash
# Eighth session, call W: the standalone check after the pools' host code was merged (next_entry).
L=$OUT/logs; mkdir -p $L
.carry/s8/split > $L/check.log 2>&1; echo "rc $?" >> $L/check.log
tail -2 $L/check.log; grep -c PASS $L/check.log; grep -c "cut tiles" $L/check.log; grep -c FAIL $L/check.log
