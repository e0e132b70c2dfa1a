#!/bin/bash
# Call J: fwd_ahead (d 64, 128-key blocks at every length: block i + 1's S issued before block
# i's softmax into a second buffer, moved back once done) against main: the forward check,
# time 64 alternating, causal, memcheck; then the C++ package with it (every head dim, bf16):
# tests/test_sm90.py's d 64 cases and the tool's d 64 forward beside cuDNN. Results are
# printed as they come (the device budget is nearly spent).
L=$OUT/logs; mkdir -p $L
B=.carry/s14/bin; chmod +x $B/*
timeout 60 $B/fwd_ahead > $L/ahead-check.log 2>&1; echo "check rc $? $(grep -c PASS $L/ahead-check.log) $(tail -1 $L/ahead-check.log)"
ext() { grep bench | command sed 's/.*: *\([0-9.]*\) ms, *\([0-9.]*\) TF.*/\1/' | tr '\n' ' '; }
for r in 1 2 3 4 5 6; do if [ $((r % 2)) = 1 ]; then o="fwd_main14 fwd_ahead"; else o="fwd_ahead fwd_main14"; fi
  for b in $o; do echo "$b $(timeout 30 $B/$b time 64 | ext)"; done; done | tee $L/ahead-time64.log
for b in fwd_ahead fwd_main14; do echo "$b causal $(timeout 60 $B/$b bench 64 | grep causal | ext)"; done | tee $L/ahead-causal.log
S=$PWD/build/site; rm -rf $S; mkdir -p $S; tar xJf .carry/s14/cpp312-ahead.tar.xz -C $S
export PYTHONPATH=$S
XLA_FLAGS=--xla_gpu_autotune_level=0 timeout 110 python3 -m pytest tests/test_sm90.py -q -n 8 -p no:cacheprovider -rfE --bindings cpp -k 64 > $L/suite-sm90-d64.log 2>&1
grep -E "passed|failed" $L/suite-sm90-d64.log | tail -1; grep -E "^(FAILED|ERROR)" $L/suite-sm90-d64.log | head -5
timeout 45 python3 -m jax_flash_attn.bench --head-dim 64 --mode fwd --no-causal --methods jax_flash_attn-cpp,jax-nn-cudnn --markdown $L/d64-fwd.md > $L/d64-fwd.log 2>&1; cat $L/d64-fwd.md
timeout 50 compute-sanitizer --tool memcheck --kernel-name kns=flash_fwd_kernel $B/fwd_ahead > $L/ahead-memcheck.log 2>&1; echo "memcheck rc $?"; grep SUMMARY $L/ahead-memcheck.log
cd $OUT && tar czf logsJ.tgz logs
