#!/usr/bin/env bash
# bench/rvm_soak.sh BUILD_DIR [MINUTES] - long crash soak for mmk_rvm: runs
# the crash harnesses (tests/test_rvm_crash.c: SIGKILL, simulated power cut,
# EIO) again and again with fresh seeds at MMK_TEST_SCALE=${SCALE:-10}
# (10000 kill points + 10000 power cuts + 3000 EIO runs per round) until
# MINUTES (default 10) have passed.  Stops at the first failure and prints
# the seed that replays it (MMK_TEST_SEED=... BUILD/tests/test_rvm_crash).
set -uo pipefail
build=${1:-build}
minutes=${2:-10}
bin=$build/tests/test_rvm_crash
[ -x "$bin" ] || { echo "rvm_soak: $bin not built" >&2; exit 1; }
end=$(( $(date +%s) + $(awk "BEGIN{print int($minutes * 60)}") ))
rounds=0 kills=0 cuts=0 eios=0
while [ "$(date +%s)" -lt "$end" ]; do
  seed=$(( (RANDOM << 30) ^ (RANDOM << 15) ^ RANDOM ^ $(date +%s%N) ))
  [ $seed -lt 0 ] && seed=$(( -seed ))
  out=$(MMK_TEST_SEED=$seed MMK_TEST_SCALE=${SCALE:-10} "$bin" 2>&1)
  if [ $? -ne 0 ]; then
    echo "$out" | grep -E 'ERROR|FAIL|#' >&2
    echo "rvm_soak: FAILED in round $((rounds + 1)); replay: MMK_TEST_SEED=$seed MMK_TEST_SCALE=${SCALE:-10} $bin" >&2
    exit 1
  fi
  rounds=$((rounds + 1))
  kills=$((kills + $(echo "$out" | sed -n 's/^# \([0-9]*\) SIGKILL.*/\1/p')))
  cuts=$((cuts + $(echo "$out" | sed -n 's/^# \([0-9]*\) power cuts.*/\1/p')))
  eios=$((eios + $(echo "$out" | sed -n 's/^# \([0-9]*\) EIO.*/\1/p')))
  echo "round $rounds: $kills SIGKILL points, $cuts power cuts, $eios EIO failures, all recovered" >&2
done
echo "rounds,sigkill_points,power_cuts,eio_failures,failures"
echo "$rounds,$kills,$cuts,$eios,0"
