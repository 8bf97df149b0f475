#!/usr/bin/env bash
# scripts/kernels/initramfs.sh BUILDDIR OUT - build the test initramfs (an
# uncompressed newc cpio) for the kernel matrix.
#
# Holds: static busybox (+ one symlink per applet), /init (guest-init.sh),
# /etc/passwd + /etc/group (root, and `mmk` uid 1000 for unprivileged runs),
# BUILDDIR's `mmkit` tool as /mmk/bin/mmkit, every test program found in
# BUILDDIR (executables named test_*, discovered by globbing: no fixed list)
# as /mmk/tests/*, and the shared libraries they need (from ldd, copied at
# their host paths, plus the dynamic loader).  Prints the test names.
# Needs no root: the cpio records every file as root-owned.
set -euo pipefail
build=$(cd "${1:?usage: initramfs.sh BUILDDIR OUT}" && pwd)
out=${2:?usage: initramfs.sh BUILDDIR OUT}
here=$(cd "$(dirname "$0")" && pwd)

bb=$(command -v busybox || true)
[ -n "$bb" ] || { echo "initramfs.sh: busybox not found (Debian package busybox-static)" >&2; exit 1; }
if ldd "$bb" >/dev/null 2>&1; then
  echo "initramfs.sh: $bb is dynamically linked; install busybox-static" >&2; exit 1
fi
command -v cpio >/dev/null || { echo "initramfs.sh: cpio not found" >&2; exit 1; }
[ -x "$build/mmkit" ] || { echo "initramfs.sh: $build/mmkit not built" >&2; exit 1; }

root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,etc,proc,sys,dev,tmp,mmk/bin,mmk/tests}
cp "$bb" "$root/bin/busybox"
for a in $("$bb" --list); do
  [ "$a" = busybox ] || ln -sf busybox "$root/bin/$a"
done
install -m 0755 "$here/guest-init.sh" "$root/init"
cat >"$root/etc/passwd" <<'EOF'
root:x:0:0:root:/tmp/root:/bin/sh
mmk:x:1000:1000:mmkit tests:/tmp/user:/bin/sh
EOF
cat >"$root/etc/group" <<'EOF'
root:x:0:
mmk:x:1000:
EOF
echo "/bin/sh" >"$root/etc/shells"

bins=("$build/mmkit")
cp "$build/mmkit" "$root/mmk/bin/mmkit"
names=()
while IFS= read -r -d '' t; do
  n=$(basename "$t")
  [ -e "$root/mmk/tests/$n" ] && continue
  cp "$t" "$root/mmk/tests/$n"
  bins+=("$t")
  names+=("$n")
done < <(find "$build" -path "$build/CMakeFiles" -prune -o -type f -name 'test_*' -perm -u+x -print0 | sort -z)

# shared libraries at their host paths (ldd prints "name => /path (addr)"
# or "/path (addr)" for the loader); plus libgcc_s, which glibc dlopens at
# pthread_exit and thread cancellation (not in any ldd output)
{
  for b in "${bins[@]}"; do
    ldd "$b" 2>/dev/null | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }'
  done
  ldconfig -p 2>/dev/null | awk '$1 == "libgcc_s.so.1" && /x86-64/ && !n++ { print $NF }' || true
} | sort -u | while read -r lib; do
  real=$(readlink -f "$lib")
  if [ ! -e "$root$real" ]; then
    mkdir -p "$root$(dirname "$real")"
    cp "$real" "$root$real"
  fi
  # the path the programs ask for (e.g. /lib64/ld-linux-x86-64.so.2) links
  # to the one copy at its canonical path
  if [ "$real" != "$lib" ] && [ ! -e "$root$lib" ]; then
    mkdir -p "$root$(dirname "$lib")"
    ln -s "$real" "$root$lib"
  fi
done

( cd "$root" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet ) >"$out.tmp"
mv "$out.tmp" "$out"
echo "${names[*]}"
