#!/usr/bin/env bash
# scripts/deps.sh GROUP... - make sure the Debian packages a make target needs
# are installed.  As root: `apt-get install -y` only the missing ones (after
# one `apt-get update`).  As non-root: print the exact command and fail.
# Groups: build test bench asan kernels clang.
set -euo pipefail

declare -A PKGS=(
  [build]="cmake make gcc libc6-dev pkg-config scdoc"
  [test]="libcmocka-dev gnuplot-nox"
  [asan]="libcmocka-dev"
  [bench]="gnuplot-nox sysstat linux-perf liblmdb-dev libsqlite3-dev afl++ clang"
  [kernels]="libcmocka-dev qemu-system-x86 busybox-static cpio"
  [clang]="clang"
)

want=()
for g in "$@"; do
  for p in ${PKGS[$g]:-}; do want+=("$p"); done
done
missing=()
for p in "${want[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
  echo "mmkit: missing Debian packages: ${missing[*]}" >&2
  echo "run as root:  apt-get update && apt-get install -y ${missing[*]}" >&2
  exit 1
fi
echo "mmkit: installing missing packages: ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null
apt-get install -y -qq "${missing[@]}" >/dev/null
