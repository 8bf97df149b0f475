#!/usr/bin/env bash
# tests/prof_case.sh TOOL SRCDIR BUILDDIR - both case studies in --quick mode
# produce their plots and interpretation, and (as root) the swap file and
# memory cgroup they set up are gone afterwards.
set -euo pipefail
tool=$1
command -v gnuplot >/dev/null || { echo "SKIP: gnuplot not installed (make test installs gnuplot-nox)"; exit 77; }
out=$(mktemp -d /tmp/mmkit-prof-case-XXXXXX)
trap 'rm -rf "$out"' EXIT
fail() { echo "FAIL: $*"; exit 1; }
png() { [ "$(head -c 4 "$1" | od -An -c | tr -d ' ')" = "211PNG" ]; }

"$tool" prof case-study 1 --quick --out "$out" | tee "$out/c1.txt"
for p in 1 2; do png "$out/case1_pair$p.png" || fail "case 1 pair $p plot"; done
grep -q "interpretation:" "$out/c1.txt" || fail "case 1 interpretation"
[ "$(grep -c 'minflt exact' "$out/c1.txt")" = 4 ] || fail "case 1 totals not exact"

"$tool" prof case-study 2 --quick --out "$out" | tee "$out/c2.txt"
png "$out/case2_util.png" || fail "case 2 plot"
grep -q "utilisation peaks" "$out/c2.txt" || fail "case 2 interpretation"
[ "$(grep -cE '^ +[0-9]+ +[0-9.]+ +[0-9.]+ +[0-9]+ +[0-9]+ +yes$' "$out/c2.txt")" = 4 ] || fail "case 2 rows"
grep -q "setup:" "$out/c2.txt" || fail "case 2 must say what it set up"
if [ "$(id -u)" = 0 ]; then
  sw=$(grep -o '/var/tmp/mmkit-case-swap-[0-9]*' "$out/c2.txt" | head -1 || true)
  cg=$(grep -o '/sys/fs/cgroup/[a-z/]*mmkit-case-[0-9]*' "$out/c2.txt" | head -1 || true)
  [ -n "$cg" ] || fail "root run did not set up a memory cgroup"
  [ -d "$cg" ] && fail "cgroup $cg left behind"
  if [ -n "$sw" ]; then
    grep -q "^$sw " /proc/swaps && fail "swap $sw left enabled"
    [ -e "$sw" ] && fail "swap file $sw left behind"
  fi
  # the slow-disk emulation (blkio throttle of the swap device) is undone too
  "$tool" prof case-study 2 --quick --slow-disk 5000 --out "$out/slow" >"$out/c3.txt"
  png "$out/slow/case2_util.png" || fail "slow-disk plot"
  blk=$(grep -o '/sys/fs/cgroup/blkio/mmkit-case-[0-9]*' "$out/c3.txt" | head -1 || true)
  if [ -n "$blk" ]; then
    [ -d "$blk" ] && fail "blkio cgroup $blk left behind"
  else
    grep -q "throttling not available" "$out/c3.txt" || fail "slow-disk: neither set up nor explained"
  fi
else
  grep -q "major faults cannot appear" "$out/c2.txt" || fail "non-root note missing"
fi
echo OK
