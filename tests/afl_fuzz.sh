#!/usr/bin/env bash
# tests/afl_fuzz.sh TOOL SRCDIR BUILDDIR - the AFL++ harness (mmkit/afl.h)
# under the real AFL++: builds examples/afl's target with afl-clang-fast in
# its persistent-no-reset and mmkit-reset builds and checks, with
# afl-showmap, that a sequence of inputs run by one persistent process gives
# every input exactly the coverage it has as the first input of a fresh
# process (reset build: no leaked state, and a child's first input passes
# the loop like every other), while the no-reset build differs (so the
# check can fail); then fuzzes the reset build for a few seconds: persistent
# mode detected, stability >= 98 %, every crash found reproduces alone.
# Exit 77 (skip) without AFL++.
set -uo pipefail
src=$2 build=$3
for p in afl-clang-fast afl-showmap afl-fuzz; do
  command -v $p >/dev/null 2>&1 || { echo "SKIP: $p not installed (Debian afl++; scripts/deps.sh bench)"; exit 77; }
done
[ -f "$build/libmmkit.a" ] || { echo "SKIP: $build/libmmkit.a not built"; exit 77; }
if grep -q '^MMK_SANITIZE:BOOL=ON' "$build/CMakeCache.txt" 2>/dev/null; then
  echo "SKIP: sanitized build: AFL++ targets are not linked with the sanitizer runtime (covered by the normal build)"
  exit 77
fi
w=$(mktemp -d) || exit 1
trap 'rm -rf "$w"' EXIT
fail() { echo "FAIL: $*"; exit 1; }
for m in persist reset; do
  M=$(echo $m | tr a-z A-Z)
  AFL_QUIET=1 afl-clang-fast -O2 -D_GNU_SOURCE -I"$src/include" -DMODE_$M -o "$w/t_$m" \
    "$src/examples/afl/target.c" "$build/libmmkit.a" -lpthread -ldl >"$w/build_$m.log" 2>&1 ||
    { cat "$w/build_$m.log"; fail "afl-clang-fast $m"; }
done
cc -O2 -D_GNU_SOURCE -DMODE_FORK -o "$w/t_plain" "$src/examples/afl/target.c" || fail "plain build"

# inputs: the seeds and documents whose coverage depends on earlier state
mkdir -p "$w/in"
printf '\n' >"$w/in/0000-neutral"
i=0
for f in "$src"/examples/afl/seeds/*; do cp "$f" "$w/in/id-$i"; i=$((i + 1)); done
for d in 'set a 1\nget a\n' 'get a\nget a\n' 'set a 2\nset b 3\ncat c a b\nget c\n' \
         'log x\nlog y\ndump\n' 'set q 9\ninc q 4\nget q\ndump\n' 'get c\nget q\nget a\n'; do
  printf "$d" >"$w/in/id-$i"; i=$((i + 1))
done
export AFL_QUIET=1 AFL_SKIP_CPUFREQ=1 AFL_NO_AFFINITY=1 AFL_NO_UI=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1
differ() { # build -> number of inputs whose in-sequence map differs from the fresh one
  local b=$1 n=0
  rm -rf "$w/seq"; afl-showmap -q -t 2000 -i "$w/in" -o "$w/seq" -- "$w/t_$b" >/dev/null 2>&1
  for f in "$w"/in/id-*; do
    local name=$(basename "$f")
    rm -rf "$w/one" "$w/one_out"; mkdir -p "$w/one"
    cp "$f" "$w/one/" # alone: the first input of a fresh process
    afl-showmap -q -t 2000 -i "$w/one" -o "$w/one_out" -- "$w/t_$b" >/dev/null 2>&1
    [ -s "$w/one_out/$name" ] || fail "$b: no map for $name"
    cmp -s "$w/seq/$name" "$w/one_out/$name" || n=$((n + 1))
  done
  echo $n
}
dr=$(differ reset)
dp=$(differ persist)
echo "inputs: $i; maps differing from a fresh process: reset $dr, no reset $dp"
[ "$dr" -eq 0 ] || fail "reset build: $dr input(s) with coverage different from a fresh process"
[ "$dp" -gt 0 ] || fail "no-reset build shows no leak: the check would not notice one"

timeout 60 afl-fuzz -V 4 -i "$src/examples/afl/seeds" -o "$w/out" -- "$w/t_reset" >"$w/fuzz.log" 2>&1 ||
  { tail -20 "$w/fuzz.log"; fail "afl-fuzz"; }
st="$w/out/default/fuzzer_stats"
grep -q '^target_mode *:.*persistent' "$st" || fail "AFL++ did not run the reset build in persistent mode"
stab=$(awk -F: '/^stability/ { gsub(/[ %]/, "", $2); print $2 }' "$st")
eps=$(awk -F: '/^execs_per_sec/ { gsub(/ /, "", $2); print $2 }' "$st")
echo "afl-fuzz reset build: $eps execs/s, stability $stab %"
awk -v s="$stab" 'BEGIN { exit !(s >= 98) }' || fail "stability $stab % < 98 %"
for c in "$w"/out/default/crashes/id:*; do
  [ -e "$c" ] || continue
  (ulimit -c 0; exec "$w/t_plain" <"$c" >/dev/null 2>&1) 2>/dev/null
  [ $? -gt 128 ] || fail "crash $(basename "$c") does not reproduce alone"
done
echo "PASS"
