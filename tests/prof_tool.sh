#!/usr/bin/env bash
# tests/prof_tool.sh TOOL SRCDIR BUILDDIR - `mmkit prof` end to end: an
# isolated daemon (MMKIT_PROF_DIR), register/unregister/list and their
# errors, monitor (text, CSV, MP3 view, late reader), `prof run` accuracy
# against rusage and exit status, the work program's access patterns, plot.
set -euo pipefail
tool=$1
export MMKIT_PROF_DIR=$(mktemp -d /tmp/mmkit-prof-sh-XXXXXX)
work=$(mktemp -d /tmp/mmkit-prof-out-XXXXXX)
dpid=""
cleanup() {
  set +e
  [ -n "$dpid" ] && kill "$dpid" 2>/dev/null && wait "$dpid" 2>/dev/null
  [ -n "${sp:-}" ] && kill "$sp" 2>/dev/null
  rm -rf "$MMKIT_PROF_DIR" "$work"
}
trap cleanup EXIT
fail() { echo "FAIL: $*"; exit 1; }

# --- daemon lifecycle -------------------------------------------------------
"$tool" prof daemon --rate 100 --records 5000 &
dpid=$!
for i in $(seq 100); do [ -S "$MMKIT_PROF_DIR/prof.sock" ] && break; sleep 0.02; done
[ -S "$MMKIT_PROF_DIR/prof.sock" ] || fail "daemon did not start"
[ "$(stat -c %a "$MMKIT_PROF_DIR/prof.sock")" = 600 ] || fail "socket mode"
set +e
"$tool" prof daemon --rate 100 2>/dev/null; [ $? -eq 1 ] || fail "second daemon must fail"
set -e

sleep 60 & sp=$!
"$tool" prof register $sp
set +e
"$tool" prof register $sp 2>"$work/err"; [ $? -eq 1 ] && grep -q "exists" "$work/err" || fail "already registered"
"$tool" prof register 0x12 2>/dev/null; [ $? -eq 2 ] || fail "bad pid syntax must exit 2"
"$tool" prof register 1073741000 2>"$work/err"; [ $? -eq 1 ] && grep -qi "no such process" "$work/err" || fail "no such process"
"$tool" prof unregister 1 2>"$work/err"; [ $? -eq 1 ] && grep -qi "no such file" "$work/err" || fail "not registered"
set -e
[ "$("$tool" prof list)" = "$sp" ] || fail "list"

# a work program registers itself and unregisters at the end
"$tool" work 16 R 3000 --iterations 3 --period-ms 100 >/dev/null &
wp=$!
sleep 0.15
"$tool" prof list | grep -qx "$wp" || fail "work did not register itself"
wait $wp
"$tool" prof list | grep -qx "$wp" && fail "work did not unregister"

# exit while registered: dropped automatically
kill $sp; wait $sp 2>/dev/null || true
for i in $(seq 50); do [ -z "$("$tool" prof list)" ] && break; sleep 0.02; done
[ -z "$("$tool" prof list)" ] || fail "exited process still listed"

# monitor: late reader sees the history; CSV header fixed; MP3 view sums
"$tool" prof monitor --csv >"$work/mon.csv"
[ "$(head -1 "$work/mon.csv")" = "t_s,pid,minflt,majflt,utime_s,stime_s,util" ] || fail "csv header"
grep -q ",$sp," "$work/mon.csv" || fail "monitor lacks the registered process"
grep -q ",$wp," "$work/mon.csv" || fail "monitor lacks the work process"
maxf=$(awk -F, -v p=$wp '$2==p && $3>m {m=$3} END {print m+0}' "$work/mon.csv")
[ "$maxf" -ge 2000 ] || fail "work faults not seen by the daemon ($maxf)"
"$tool" prof monitor --mp3 >"$work/mp3.csv"
[ "$(head -1 "$work/mp3.csv")" = "t_s,minflt,majflt,cpu_s,util" ] || fail "mp3 header"
"$tool" prof monitor >"$work/mon.txt"
grep -q register "$work/mon.txt" || fail "text monitor"
"$tool" prof stats >"$work/stats.txt"
grep -q '^jitter_p99_us' "$work/stats.txt" || fail "stats"
"$tool" prof stop
wait $dpid; dpid=""
[ -S "$MMKIT_PROF_DIR/prof.sock" ] && fail "socket left behind"

# --- one-shot run: exact totals, exit status ------------------------------------
out=$("$tool" prof run --rate 200 --csv "$work/r.csv" -- "$tool" work 32 R 20000 --iterations 2 --period-ms 0 --no-register --stats)
grep -q "minflt exact" <<<"$out" || fail "run: minflt not exact: $out"
grep -q "majflt exact" <<<"$out" || fail "run: majflt not exact"
touched=$(sed -n 's/.*touched_pages=\([0-9]*\).*/\1/p' <<<"$out")
final=$(awk -F, 'NR>1 && $3>m {m=$3} END {print m+0}' "$work/r.csv")
[ "$final" -ge "$touched" ] || fail "faults $final < touched pages $touched"
# (start-up faults, plus ASan's shadow pages in the sanitizer build)
[ "$final" -le $((touched + touched / 4 + 3000)) ] || fail "faults $final >> touched pages $touched"
set +e
"$tool" prof run -- sh -c 'exit 7' >/dev/null; [ $? -eq 7 ] || fail "exit status not propagated"
"$tool" prof run >/dev/null 2>&1; [ $? -eq 2 ] || fail "run without command must exit 2"
set -e

# --- work access patterns: random touches far more pages than locality ---------
r=$("$tool" work 64 R 20000 --iterations 2 --period-ms 0 --no-register --stats | sed -n 's/.*touched_pages=\([0-9]*\).*/\1/p')
l=$("$tool" work 64 L 20000 --iterations 2 --period-ms 0 --no-register --stats | sed -n 's/.*touched_pages=\([0-9]*\).*/\1/p')
# random: 40000 uniform accesses over 16384 pages touch ~91 % of them
[ "$r" -ge 14000 ] || fail "random touched only $r pages"
# locality: 95 % inside a 256-page window sliding 625 pages -> ~ 900 + 5 % x 40000 ~ 2900
[ "$l" -le 5000 ] && [ "$l" -ge 800 ] || fail "locality touched $l pages"

# --- plot --------------------------------------------------------------------------
if command -v gnuplot >/dev/null; then
  "$tool" prof plot "$work/r.csv" -o "$work/r.png"
  [ "$(head -c 4 "$work/r.png" | od -An -c | tr -d ' ')" = "211PNG" ] || fail "not a PNG"
  "$tool" prof plot "$work/r.csv" -o "$work/r.svg"
  grep -q "<svg" "$work/r.svg" || fail "not an SVG"
else
  echo "SKIP plot: gnuplot not installed"
fi
echo OK
