#!/bin/sh
# scripts/kernels/guest-init.sh - /init of the test initramfs (busybox sh).
#
# Runs `mmkit features` and every test program in /mmk/tests, first as root,
# then as the unprivileged user `mmk` (uid 1000, via su), and writes one
# marker line per result to the SECOND serial port (/dev/ttyS1), which
# carries nothing else: kernel messages on the console (ttyS0) can never
# split a marker.  The host decides pass/fail only from these markers; the
# last one, DONE, repeats the nonce given on the kernel command line, so a
# hang, panic or time-out (no DONE) is a failure, never a pass.  Then the
# guest powers off (QEMU exits 0 whatever happened, hence the markers).
#
# Kernel command line: mmk.nonce=N mmk.scale=S mmk.timeout=SECS (per program)
# [mmk.seed=N] (MMK_TEST_SEED, to replay a randomized run)
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mkdir -p /dev/pts /dev/shm
mount -t tmpfs -o mode=1777 tmpfs /tmp
mount -t tmpfs -o mode=1777 tmpfs /dev/shm
mount -t devpts devpts /dev/pts 2>/dev/null
# as a systemd host would have it (memory cgroups for the profiler's tests)
mount -t cgroup2 cgroup2 /sys/fs/cgroup 2>/dev/null
exec </dev/console >/dev/console 2>&1

nonce=0 scale=0.1 ptimeout=600
for a in $(cat /proc/cmdline); do
	case "$a" in
	mmk.nonce=*) nonce=${a#mmk.nonce=} ;;
	mmk.scale=*) scale=${a#mmk.scale=} ;;
	mmk.timeout=*) ptimeout=${a#mmk.timeout=} ;;
	mmk.seed=*) export MMK_TEST_SEED=${a#mmk.seed=} ;;
	esac
done

exec 3>/dev/ttyS1
M="@@MMK@@"
mark() { echo "$M $*" >&3; }
now() { cut -d' ' -f1 /proc/uptime; }

mark "BEGIN nonce=$nonce kernel=$(uname -r) cpus=$(nproc) scale=$scale uptime=$(now)"
mark "SYSCTL unprivileged_userfaultfd=$(cat /proc/sys/vm/unprivileged_userfaultfd 2>/dev/null || echo none) perf_event_paranoid=$(cat /proc/sys/kernel/perf_event_paranoid 2>/dev/null || echo none) dev_userfaultfd=$([ -e /dev/userfaultfd ] && echo yes || echo no)"

export MMK_TEST_SCALE=$scale
export MMKIT_TOOL=/mmk/bin/mmkit
# The profiler's switch-record buffers enable the kernel's context-switch
# hooks, which live-patches __schedule (int3 + text_poke); under QEMU's
# software emulation (TCG) the other vCPU can still execute the int3 after
# the patch and the guest panics ("Oops: int3" in __schedule, seen on 6.12).
# The tests then check the schedstat rule only (they say so).  Any task-bound
# perf event does it (the feature probe's disabled counter too: a 6.12 guest
# panicked once in `mmkit features`), so the probe honours the variable as well.
export MMK_PROF_NO_PERF=1
mkdir -p /tmp/root /tmp/user
chown 1000:1000 /tmp/user

# Passes: root; user (uid 1000, no capabilities); and, where the kernel lets
# unprivileged processes open a full userfaultfd (vm.unprivileged_userfaultfd
# = 1, the default of Debian 11's 5.10), user-uffd0: the same user with the
# sysctl at 0, the hardened setting, under which a pre-5.11 kernel (no
# UFFD_USER_MODE_ONLY) gives an unprivileged process no userfaultfd at all.
passes="root user"
[ "$(cat /proc/sys/vm/unprivileged_userfaultfd 2>/dev/null)" = 1 ] && passes="$passes user-uffd0"
uffd_sysctl=$(cat /proc/sys/vm/unprivileged_userfaultfd 2>/dev/null)
setpass() {
	[ -n "$uffd_sysctl" ] || return 0
	if [ "$1" = user-uffd0 ]; then echo 0; else echo "$uffd_sysctl"; fi >/proc/sys/vm/unprivileged_userfaultfd
}

# as WHO (root|user|user-uffd0) in its working dir: run "$@" with a time
# limit, output to the console and to $out; exit status in $out.rc.  The
# programs never see fd 3 (the marker port): they cannot forge a marker.
as() {
	who=$1 out=$2
	shift 2
	if [ "$who" = root ]; then
		(cd /tmp/root && timeout "$ptimeout" "$@"; echo $? >"$out.rc") 3>&- 2>&1 | tee "$out"
	else
		# su as root asks no password; the command line is re-parsed by sh
		(cd /tmp/user && timeout "$ptimeout" su -s /bin/sh mmk -c "cd /tmp/user && MMK_TEST_SCALE=$scale MMK_PROF_NO_PERF=1 MMKIT_TOOL=$MMKIT_TOOL${MMK_TEST_SEED:+ MMK_TEST_SEED=$MMK_TEST_SEED} $*"; echo $? >"$out.rc") 3>&- 2>&1 | tee "$out"
	fi
}

for who in $passes; do
	setpass "$who"
	echo "==== mmkit features ($who)"
	as "$who" /tmp/feat-$who.txt /mmk/bin/mmkit features
	as "$who" /tmp/feat-$who.json /mmk/bin/mmkit features --json >/dev/null
	# one marker per feature: name present value
	sed -n 's/.*"name": "\([^"]*\)", "present": \([a-z]*\), "value": "\([^"]*\)".*/\1 \2 \3/p' \
		/tmp/feat-$who.json | while read -r name present value; do
		mark "FEATURE who=$who name=$name present=$present value=${value:--}"
	done
	sed -n 's/.*"name": "\([^"]*\)", "present": false,.*"fallback": "\([^"]*\)".*/\1 \2/p' \
		/tmp/feat-$who.json | while read -r name text; do
		mark "FALLBACK who=$who name=$name text=$text"
	done
	mark "FEATURES-DONE who=$who rc=$(cat /tmp/feat-$who.json.rc) uid=$(as "$who" /tmp/id-$who id -u)"
done

for t in /mmk/tests/*; do
	[ -x "$t" ] || continue
	name=${t##*/}
	for who in $passes; do
		setpass "$who"
		echo "==== $name ($who, MMK_TEST_SCALE=$scale)"
		log=/tmp/$name.$who.log
		t0=$(now)
		as "$who" "$log" "$t"
		t1=$(now)
		rc=$(cat "$log.rc")
		run=$(sed -n 's/.*\[==========\] \([0-9]*\) test(s) run\..*/\1/p' "$log" | tail -n1)
		pass=$(sed -n 's/.*\[  PASSED  \] \([0-9]*\) test(s)\..*/\1/p' "$log" | tail -n1)
		skip=$(sed -n 's/.*\[  SKIPPED \] \([0-9]*\) test(s).*/\1/p' "$log" | tail -n1)
		# the most failures of any summary: a forked child that fails an
		# assertion and returns into cmocka runs the rest of the suite
		# and prints a second summary
		fail=$(sed -n 's/.*\[  FAILED  \] \([0-9]*\) test(s).*/\1/p' "$log" | sort -n | tail -n1)
		# summaries beyond the groups started: a group a test runs on
		# purpose in a child prints both lines, a child that returned
		# into the runner prints a summary without a start
		nsum=$(( $(grep -c '\[==========\] [0-9]* test(s) run\.' "$log") - $(grep -c '\[==========\] Running [0-9]* test(s)\.' "$log") + 1 ))
		last=$(sed -n 's/.*\[ RUN      \] \([a-zA-Z0-9_]*\).*/\1/p' "$log" | tail -n1)
		mark "TEST name=$name who=$who rc=$rc last=${last:--} run=${run:--} passed=${pass:-0} skipped=${skip:-0} failed=${fail:-0} summaries=$nsum t0=$t0 t1=$t1"
		# skipped test names and reasons, backend announcements
		sed -n 's/.*\[  SKIPPED \] \([a-zA-Z0-9_]*\)$/\1/p' "$log" | sort -u | while read -r s; do
			mark "SKIPPED name=$name who=$who test=$s"
		done
		sed -n 's/^# SKIP: *//p' "$log" | sort -u | while read -r r; do
			mark "SKIP-REASON name=$name who=$who reason=$r"
		done
		sed -n 's/^# [Bb][Aa][Cc][Kk][Ee][Nn][Dd]:* *//p' "$log" | sort -u | while read -r b; do
			mark "BACKEND name=$name who=$who backend=$b"
		done
	done
done

setpass root
mark "PASSES $passes"
mark "DONE nonce=$nonce uptime=$(now)"
exec 3>&-   # close waits until the UART has sent everything
sync
sleep 1
poweroff -f
