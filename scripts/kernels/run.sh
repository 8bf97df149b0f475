#!/usr/bin/env bash
# scripts/kernels/run.sh BUILDDIR - the kernel matrix (`make test-kernels`).
#
# For each kernel series in MMK_KERNELS (default "5.10 6.1 6.12"): fetch the
# Debian cloud kernel (fetch.sh), boot it under qemu-system-x86_64 with
# software emulation (-accel tcg) and an initramfs holding busybox, `mmkit`
# and every test program of BUILDDIR (initramfs.sh), run `mmkit features`
# and the tests inside as root and as an unprivileged user (guest-init.sh),
# and report per kernel: the probe's features, the fallbacks (backends)
# taken, each test program's pass/skip/fail counts and the run time.
#
# Pass/fail comes only from the marker lines the guest writes to its second
# serial port (QEMU exits 0 whatever happens inside): a kernel passes when
# its DONE marker carries this run's nonce, every test program exited 0 after
# printing cmocka's summary in every pass, and the probe's answers match the
# kernel's known feature set (e.g. no WP_ASYNC/PAGEMAP_SCAN before 6.7).
# A missing marker (hang, panic, time-out) is a failure.
#
# Environment:
#   MMK_KERNELS            kernel series to run (default "5.10 6.1 6.12")
#   MMK_KERNEL_SCALE       MMK_TEST_SCALE inside the guest (default 0.1)
#   MMK_KERNEL_TIMEOUT     seconds per kernel, whole boot (default 300: the three
#                          kernels stay within ~15 min of CI even when tests hang)
#   MMK_KERNEL_PROG_TIMEOUT seconds per test program and pass in the guest (default 120)
#   MMK_KERNEL_MEM / MMK_KERNEL_CPUS  guest size (default 2048 MiB / 2)
#   MMK_KERNEL_CACHE       kernel cache (see fetch.sh)
#   MMK_KERNEL_APPEND      extra kernel command-line arguments
#   MMK_TEST_SEED          passed on to the tests in the guest (replay)
#   MMK_ALLOW_NO_KERNELS=1 a missing QEMU or kernel package is a skip, not a failure
# Logs: BUILDDIR/kernels/linux-V.console.log (everything) and .markers.log.
# Shell tests (tests/*.sh) are not run in the guest: they need bash, cmake,
# python and a compiler, which the initramfs does not hold.
set -uo pipefail
build=$(cd "${1:?usage: run.sh BUILDDIR}" && pwd) || exit 1
here=$(cd "$(dirname "$0")" && pwd)
kernels=${MMK_KERNELS:-5.10 6.1 6.12}
scale=${MMK_KERNEL_SCALE:-0.1}
ktimeout=${MMK_KERNEL_TIMEOUT:-300}
ptimeout=${MMK_KERNEL_PROG_TIMEOUT:-120}
mem=${MMK_KERNEL_MEM:-2048}
cpus=${MMK_KERNEL_CPUS:-2}
allow=${MMK_ALLOW_NO_KERNELS:-0}
out=$build/kernels
mkdir -p "$out"

npass=0 nfail=0 nskip=0
summary=()

unavailable() { # reason
  if [ "$allow" = 1 ]; then
    echo "test-kernels: SKIP: $1 (MMK_ALLOW_NO_KERNELS=1)"
    return 0
  fi
  echo "test-kernels: FAIL: $1 (set MMK_ALLOW_NO_KERNELS=1 to skip instead)" >&2
  return 1
}

qemu=$(command -v qemu-system-x86_64 || true)
if [ -z "$qemu" ]; then
  unavailable "qemu-system-x86_64 not found (Debian package qemu-system-x86)"
  exit $?
fi
bb=$(command -v busybox || true)
if [ -z "$bb" ] || ldd "$bb" >/dev/null 2>&1; then
  unavailable "no statically linked busybox (Debian package busybox-static)"
  exit $?
fi
if ! command -v cpio >/dev/null; then
  unavailable "cpio not found (Debian package cpio)"
  exit $?
fi

echo "== test-kernels: building the initramfs from $build"
tests=$("$here/initramfs.sh" "$build" "$out/initramfs.cpio") || { echo "test-kernels: FAIL: initramfs" >&2; exit 1; }
[ -n "$tests" ] || { echo "test-kernels: FAIL: no test programs (test_*) in $build" >&2; exit 1; }
echo "   test programs: $tests"
echo "   guest: $cpus vCPUs, $mem MiB, -accel tcg, MMK_TEST_SCALE=$scale"
echo "   not run in the guest: shell tests (tests/*.sh: need bash, cmake, python)"

# Known feature set per kernel series (root pass): +present, -absent.  Only
# what the kernel version decides; sysctl- and config-dependent features
# (soft-dirty, perf, THP) are reported, not asserted.
expect_root() {
  case "$1" in
    5.10) echo "+userfaultfd +uffd_wp -uffd_wp_async -uffd_wp_unpopulated -pagemap_scan -procmap_query -mseal +memfd" ;;
    6.1)  echo "+userfaultfd +uffd_wp +uffd_sigbus -uffd_wp_async -uffd_wp_unpopulated -pagemap_scan -procmap_query -mseal +memfd +pidfd" ;;
    6.12) echo "+userfaultfd +uffd_wp +uffd_sigbus +uffd_wp_async +uffd_wp_unpopulated +pagemap_scan +procmap_query +mseal +memfd +pidfd" ;;
  esac
}
# Does an unprivileged process get a userfaultfd?  From 5.11 always
# (UFFD_USER_MODE_ONLY); before, only with vm.unprivileged_userfaultfd=1.
user_mode_only_kernel() { [ "$1" != 5.10 ]; }

marker() { # file key -> marker lines with that key, prefix stripped
  sed -n "s/^@@MMK@@ $2 //p" "$1"
}
field() { # "k=v k2=v2 ..." key -> v (values without spaces)
  sed -n "s/.*\(^\| \)$2=\([^ ]*\).*/\2/p" <<<"$1"
}

run_kernel() { # series
  local v=$1 vmlinuz pkg t0 t1 secs nonce con mk ok=1 why=()
  echo
  echo "== linux $v"
  if ! vmlinuz=$("$here/fetch.sh" "$v" 2>"$out/fetch-$v.err"); then
    sed 's/^/   /' "$out/fetch-$v.err"
    if unavailable "linux $v: kernel package could not be obtained"; then
      nskip=$((nskip + 1)); summary+=("linux $v: SKIP (no kernel package)"); return 0
    fi
    nfail=$((nfail + 1)); summary+=("linux $v: FAIL (no kernel package)"); return 0
  fi
  pkg=$(cat "$(dirname "$vmlinuz")/package")
  echo "   package: $pkg"
  con=$out/linux-$v.console.log
  mk=$out/linux-$v.markers.log
  rm -f "$con" "$mk"
  nonce=$(od -An -N8 -tx8 /dev/urandom | tr -d ' ')
  t0=$(date +%s.%N)
  timeout -k 10 "$ktimeout" "$qemu" -accel tcg -m "$mem" -smp "$cpus" \
    -display none -nodefaults -no-reboot -monitor none \
    -kernel "$vmlinuz" -initrd "$out/initramfs.cpio" \
    -append "console=ttyS0 panic=-1 oops=panic loglevel=4 mmk.nonce=$nonce mmk.scale=$scale mmk.timeout=$ptimeout${MMK_TEST_SEED:+ mmk.seed=$MMK_TEST_SEED}${MMK_KERNEL_APPEND:+ $MMK_KERNEL_APPEND}" \
    -serial "file:$con" -serial "file:$mk" </dev/null >"$out/qemu-$v.log" 2>&1
  local qrc=$?
  t1=$(date +%s.%N)
  secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.0f", b - a }')
  [ -f "$mk" ] || : >"$mk"
  sed -i 's/\r$//' "$mk"

  local begin done_
  begin=$(marker "$mk" BEGIN | head -n1)
  done_=$(marker "$mk" DONE | head -n1)
  if [ -z "$begin" ]; then
    ok=0; why+=("guest never started the tests (no BEGIN marker; qemu exit $qrc)")
  else
    echo "   booted: $(field "$begin" kernel) ($(field "$begin" cpus) vCPUs; tests started at $(field "$begin" uptime) s guest uptime)"
    echo "   sysctl: $(marker "$mk" SYSCTL | head -n1)"
  fi
  if [ -z "$done_" ]; then
    ok=0
    [ "$qrc" = 124 ] || [ "$qrc" = 137 ] && why+=("timed out after ${ktimeout}s")
    grep -q 'Kernel panic' "$con" 2>/dev/null && why+=("kernel panic (see $con)")
    why+=("no DONE marker: the guest did not finish")
  elif [ "$(field "$done_" nonce)" != "$nonce" ]; then
    ok=0; why+=("DONE marker carries a stale nonce")
  fi

  # features per pass, checked against the kernel's known set
  local passes who line name present value e want got
  passes=$(marker "$mk" PASSES | head -n1)
  [ -n "$passes" ] || passes="root user"
  for who in $passes; do
    local pres="" abs=""
    while IFS= read -r line; do
      name=$(field "$line" name); present=$(field "$line" present); value=$(field "$line" value)
      if [ "$present" = true ]; then pres+=" $name${value:+$([ "$value" != - ] && echo "($value)")}"; else abs+=" $name"; fi
    done < <(marker "$mk" FEATURE | grep "^who=$who ")
    [ -n "$pres$abs" ] || { ok=0; why+=("no feature list for $who"); continue; }
    echo "   features ($who): present:$pres"
    echo "   $(printf '%*s' ${#who} '')            absent:${abs:- none}"
    if [ "$who" = root ]; then
      for e in $(expect_root "$v"); do
        want=${e:0:1}; name=${e:1}
        got=$(marker "$mk" FEATURE | grep "^who=root name=$name " | sed -n 's/.* present=\([a-z]*\).*/\1/p')
        if { [ "$want" = + ] && [ "$got" != true ]; } || { [ "$want" = - ] && [ "$got" != false ]; }; then
          ok=0
          if [ "$want" = + ]; then why+=("probe says $name present=${got:-?} as root: linux $v has it")
          else why+=("probe says $name present=${got:-?} as root: linux $v lacks it"); fi
        fi
      done
    else
      got=$(marker "$mk" FEATURE | grep "^who=$who name=userfaultfd " | sed -n 's/.* present=\([a-z]*\).*/\1/p')
      local sysctl
      sysctl=$(marker "$mk" SYSCTL | sed -n 's/.*unprivileged_userfaultfd=\([0-9a-z]*\).*/\1/p')
      [ "$who" = user-uffd0 ] && sysctl=0
      if user_mode_only_kernel "$v" || [ "$sysctl" = 1 ]; then want=true; else want=false; fi
      if [ "$got" != "$want" ]; then
        ok=0; why+=("probe says userfaultfd present=${got:-?} for $who (vm.unprivileged_userfaultfd=$sysctl), linux $v gives $want")
      fi
    fi
  done
  # backends: the fallback each absent feature selects, and what tests announce
  local fb
  fb=$(marker "$mk" FALLBACK | grep '^who=root ' | sed 's/^who=root name=\([^ ]*\) text=/\1 -> /')
  if [ -n "$fb" ]; then
    echo "   fallbacks taken (root):"
    sed 's/^/     /' <<<"$fb"
  fi
  local ub x
  ub=$(for x in $(marker "$mk" FALLBACK | grep -v '^who=root ' | sed 's/^who=\([^ ]*\) name=\([^ ]*\) .*/\2@\1/'); do
         marker "$mk" FALLBACK | grep -q "^who=root name=${x%@*} " || echo "${x%@*} (${x#*@})"
       done | tr '\n' ' ')
  [ -n "$ub" ] && echo "   fallbacks taken only unprivileged: $ub"
  local bk
  bk=$(marker "$mk" BACKEND | sed 's/^name=\([^ ]*\) who=\([^ ]*\) backend=/\1 \2: /' | sort -u)
  if [ -n "$bk" ]; then
    echo "   backends announced by the tests:"
    sed 's/^/     /' <<<"$bk"
  fi

  # test programs
  local t rc run p s f tl nres=0
  for t in $tests; do
    for who in $passes; do
      line=$(marker "$mk" TEST | grep "^name=$t who=$who " | head -n1)
      if [ -z "$line" ]; then
        ok=0; why+=("$t ($who): no result"); printf '   %-26s %-10s %s\n' "$t" "$who" "NO RESULT"; continue
      fi
      nres=$((nres + 1))
      rc=$(field "$line" rc); run=$(field "$line" run)
      p=$(field "$line" passed); s=$(field "$line" skipped); f=$(field "$line" failed)
      tl=$(awk -v a="$(field "$line" t0)" -v b="$(field "$line" t1)" 'BEGIN { printf "%.1f", b - a }')
      local verdict=PASS nsum note=""
      nsum=$(field "$line" summaries)
      if [ "${nsum:-1}" -gt 1 ]; then
        note="       note: $nsum cmocka summaries: a forked child returned into the test runner and ran the rest of the suite (counts: the last summary, failed: the most)"
        if [ "$f" != 0 ] && [ "$rc" = 0 ]; then
          verdict=FAIL; ok=0; why+=("$t ($who): a forked child failed $f test(s) although the program exited 0")
        fi
      fi
      if [ "$rc" != 0 ] || [ "$run" = - ]; then
        verdict=FAIL; ok=0
        # busybox timeout: the child's TERM status (143), or KILL (137)
        if { [ "$rc" = 124 ] || [ "$rc" = 143 ] || [ "$rc" = 137 ]; } &&
           awk -v a="$tl" -v b="$ptimeout" 'BEGIN { exit !(a >= b - 0.5) }'; then
          why+=("$t ($who): timed out after ${ptimeout}s in the guest")
        elif [ "$run" = - ]; then
          local how="exit $rc"
          [ "$rc" -gt 128 ] 2>/dev/null && [ "$rc" -le 192 ] && how="killed by signal $((rc - 128)) ($(kill -l $((rc - 128)) 2>/dev/null || echo ?))"
          why+=("$t ($who): $how without a cmocka summary, in $(field "$line" last)")
        else why+=("$t ($who): exit $rc, $f failed"); fi
      fi
      if [ "$run" = - ]; then
        printf '   %-26s %-10s %s  no cmocka summary (exit %s, last test started: %s)  (%ss)\n' "$t" "$who" "$verdict" "$rc" "$(field "$line" last)" "$tl"
      else
        printf '   %-26s %-10s %s  %s passed, %s skipped, %s failed  (%ss)\n' "$t" "$who" "$verdict" "$p" "$s" "$f" "$tl"
      fi
      [ -n "$note" ] && echo "$note"
      local sk
      sk=$(marker "$mk" SKIPPED | grep "^name=$t who=$who " | sed 's/.* test=//' | tr '\n' ' ')
      [ -n "$sk" ] && echo "       skipped: $sk"
      marker "$mk" SKIP-REASON | grep "^name=$t who=$who " | sed 's/.* reason=/       reason: /'
    done
  done

  if [ "$ok" = 1 ]; then
    npass=$((npass + 1)); summary+=("linux $v: PASS in ${secs}s ($pkg)")
    echo "   result: PASS (${secs}s)"
  else
    nfail=$((nfail + 1)); summary+=("linux $v: FAIL in ${secs}s ($pkg)")
    echo "   result: FAIL (${secs}s):"
    printf '     - %s\n' "${why[@]}"
    echo "   guest console: $con"
    echo "   --- last lines of the guest console:"
    tail -n 25 "$con" 2>/dev/null | sed 's/^/   | /'
  fi
}

T0=$(date +%s)
for v in $kernels; do
  run_kernel "$v"
done
echo
echo "== test-kernels summary ($(( $(date +%s) - T0 ))s total)"
printf '   %s\n' "${summary[@]}"
echo "test-kernels: $npass passed, $nfail failed, $nskip skipped"
[ "$nfail" = 0 ]
