#!/usr/bin/env bash
# bench/run.sh BUILD_DIR - the main job: mmkit features, then every seed
# comparison.  Each benchmark program writes CSV (a header row, optional
# '#' note lines) to stdout; this script saves it under BUILD_DIR/bench-results
# and prints it as an aligned table.  MMK_BENCH_MODE=full runs the complete
# grids (passes --full), MMK_BENCH_MODE=quick a smoke run (--quick).
set -uo pipefail
build=${1:-build}
mode=${MMK_BENCH_MODE:-default}
out=$build/bench-results
mkdir -p "$out"
flag=""
[ "$mode" = full ] && flag=--full
[ "$mode" = quick ] && flag=--quick

table() { # pretty-print CSV; '#' lines verbatim; a blank line starts a new table
  awk -F, '
    function flush(   r, k, i, j, line, s, d) {
      for (r = 1; r <= n; r++) {
        k = split(rows[r], f, ","); line = ""
        for (i = 1; i <= k; i++) line = line sprintf("%-" w[i] + 2 "s", f[i])
        print "  " line
        if (r == 1) { s = ""; for (i = 1; i <= nf; i++) { d = ""; for (j = 0; j < w[i]; j++) d = d "-"; s = s sprintf("%-" w[i] + 2 "s", d) } print "  " s }
      }
      if (n) print ""
      n = 0; nf = 0; delete w
    }
    /^#/ { notes[++nn] = $0; next }
    /^$/ { flush(); next }
    { rows[++n] = $0; if (NF > nf) nf = NF; for (i = 1; i <= NF; i++) if (length($i) > w[i]) w[i] = length($i) }
    END {
      flush()
      for (i = 1; i <= nn; i++) print "  " notes[i]
    }'
}

echo "== mmkit features"
"$build/mmkit" features
echo

# Order: the price list of kernel primitives first (it explains the rest),
# then the seed comparisons in seed order; others after.
benches=()
for b in primitives pagetab snapshot sfork prof rvm ckpt afl; do
  [ -x "$build/bench_$b" ] && benches+=("bench_$b")
done
for f in "$build"/bench_*; do
  n=$(basename "$f")
  [ -x "$f" ] || continue
  case " ${benches[*]} " in *" $n "*) ;; *) benches+=("$n") ;; esac
done

status=0
i=0
for b in "${benches[@]}"; do
  i=$((i + 1))
  [ -t 2 ] && printf '[%d/%d] %s %s ...\n' "$i" "${#benches[@]}" "$b" "$flag" >&2
  start=$(date +%s)
  if [ -t 2 ]; then
    "$build/$b" $flag >"$out/$b.csv" 2> >(tee "$out/$b.log" >&2)
  else
    "$build/$b" $flag >"$out/$b.csv" 2>"$out/$b.log"
  fi
  if [ $? -eq 0 ]; then
    echo "== $b ($(( $(date +%s) - start )) s; CSV: $out/$b.csv)"
    table <"$out/$b.csv"
  else
    echo "== $b FAILED (see $out/$b.log)"
    tail -5 "$out/$b.log"
    status=1
  fi
  echo
done
exit $status
