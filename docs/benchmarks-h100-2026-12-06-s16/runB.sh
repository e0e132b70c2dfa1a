#!/bin/bash
# Call B: the forward in pairs of CTAs (clusters of two sharing K and V loads by TMA multicast)
# for unmasked calls at d 128 and 256 with an even number of query blocks. f_cl: the branch;
# f_cl0: the same source with JFA_CLUSTER=0 (control); f_main: main dc95df5. Checks of f_cl,
# `time 128` alternated (medians); through JAX the C++ package of the branch against the Rust
# CI extension of main (FA3 beside), unmasked forward and fwd+bwd, samples alternating;
# tests/test_sm90.py on the branch's package; racecheck and memcheck of the d 128 cases.
L=$OUT/logs; mkdir -p $L; MED=tests/device/median_times.py  # (a copy of it ran)
exec 3>&1 > $L/runB.log 2>&1
left() { t=$(($1 - SECONDS)); [ $t -gt 5 ] && echo $t || echo 1; }  # seconds to a mark of the call
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,power.limit --format=csv >&3
B=.carry/s16; for f in $B/f_*.xz; do unxz -k -f $f; done; chmod +x $B/f_*
timeout 100 $B/f_cl > $L/check-cl.log 2>&1; echo "check cl rc $? $(head -1 $L/check-cl.log) $(grep -c FAIL $L/check-cl.log) FAIL, $(tail -1 $L/check-cl.log)" >&3
ext() { grep bench | command sed 's/.*: *\([0-9.]*\) ms, *\([0-9.]*\) TF.*/\1/' | tr '\n' ' '; }
for r in 1 2 3; do for b in f_main f_cl0 f_cl; do
  echo "$b $(timeout 30 $B/$b time 128 | ext)" >> $L/time128.log
done; done
python3 $MED $L/time128.log f_main >&3
python3 -m pip install --no-index --no-deps .whl/flash_attn3_jax-*.whl > $L/pip.log 2>&1
S=$PWD/build/site; rm -rf $S; mkdir -p $S; tar xJf $B/cpp312-cl.tar.xz -C $S
mkdir -p $S/jflash_attn; cp python/frontend/*.py python/jflash_attn/_binding.py $S/jflash_attn/
xz -dc $B/rs-main.so.xz > $S/jflash_attn/_jflash_attn_rust.so
export PYTHONPATH=$S
M=jax_flash_attn-cpp,jflash_attn-rust,fa3-jax
for r in 1 2; do
  timeout $(left 330) python3 -m jax_flash_attn.bench --head-dim 128 --mode fwd --no-causal --methods $M --json $L/ab$r.json --markdown $L/ab$r.md > $L/ab$r.log 2>&1
done
python3 -m jax_flash_attn.bench --merge $L/ab1.json $L/ab2.json --json $L/ab.json --markdown $L/ab.md > $L/merge-ab.log 2>&1
cat $L/ab.md >&3
( time XLA_FLAGS=--xla_gpu_autotune_level=0 timeout $(left 440) python3 -m pytest tests/test_sm90.py -q -n 8 -p no:cacheprovider -rfE --bindings cpp ) > $L/suite-cpp.log 2>&1
{ echo "== test_sm90 cpp"; grep -E "passed|failed" $L/suite-cpp.log | tail -1; grep -E "^(FAILED|ERROR)" $L/suite-cpp.log | head -8; } >&3
timeout $(left 530) compute-sanitizer --tool racecheck --kernel-name kns=flash_fwd_kernel $B/f_cl only 128 > $L/racecheck128.log 2>&1; echo "racecheck rc $? $(grep SUMMARY $L/racecheck128.log)" >&3
timeout $(left 575) compute-sanitizer --tool memcheck --kernel-name kns=flash_fwd_kernel $B/f_cl only 128 > $L/memcheck128.log 2>&1; echo "memcheck rc $? $(grep SUMMARY $L/memcheck128.log)" >&3
cd $OUT && tar czf logsB.tgz logs
