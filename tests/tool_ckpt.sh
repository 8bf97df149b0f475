#!/usr/bin/env bash
# tests/tool_ckpt.sh TOOL SRCDIR BUILDDIR - `mmkit ckpt`: a synthetic chain
# (write), restore in a new process gives the same bytes (digest), info and
# verify, compaction keeps the bytes, a damaged or truncated image fails
# verification, the directory falls back to the intact chain, a stray temp
# file is ignored, usage errors exit 2.
set -euo pipefail
tool=$1
d=$(mktemp -d /tmp/mmk-tool-ckpt.XXXXXX)
trap 'rm -rf "$d"' EXIT
out=$("$tool" ckpt write "$d" --mib 4 --deltas 3 --change 2)
echo "$out"
[ "$(grep -c '^generation' <<<"$out")" = 4 ] || { echo "expected 4 generations"; exit 1; }
grep -q '^generation 1: full' <<<"$out" || { echo "first image must be full"; exit 1; }
grep -q '^generation 2: delta' <<<"$out" || { echo "second image must be a delta"; exit 1; }
want=$(tail -1 <<<"$out" | sed 's/.*digest //')
want2=$(sed -n 2p <<<"$out" | sed 's/.*digest //')
img4=$d/ckpt-0000000000000004.img
img2=$d/ckpt-0000000000000002.img
got=$("$tool" ckpt restore "$d" | sed -n 's/.*digest //p')
[ "$got" = "$want" ] || { echo "restore digest $got != $want"; exit 1; }
got=$("$tool" ckpt restore "$img2" | sed -n 's/.*digest //p')
[ "$got" = "$want2" ] || { echo "gen 2 digest $got != $want2"; exit 1; }
"$tool" ckpt verify "$d" | grep -q 'chain of 4' || { echo "verify: chain of 4 expected"; exit 1; }
"$tool" ckpt info "$d" | grep -q 'latest valid: .*ckpt-0000000000000004.img'
"$tool" ckpt info "$img4" | grep -q '^parent *3 (delta)'
# a stray half-written temp file is ignored
head -c 10000 /dev/urandom >"$d/.ckpt-0000000000000005.tmp"
got=$("$tool" ckpt restore "$d" | sed -n 's/.*digest //p')
[ "$got" = "$want" ] || { echo "temp file changed the restore"; exit 1; }
# compaction: one full image, same bytes
cp "$img4" "$d/saved"
"$tool" ckpt compact "$img4" | grep -q 'folded a chain of 4'
"$tool" ckpt info "$img4" | grep -q '(full image)'
got=$("$tool" ckpt restore "$img4" | sed -n 's/.*digest //p')
[ "$got" = "$want" ] || { echo "compacted digest $got != $want"; exit 1; }
# damage: a flipped byte in the page data of gen 4 (now full)
size=$(stat -c %s "$img4")
printf '\x5a' | dd of="$img4" bs=1 seek=$((size - 64 - 3000)) conv=notrunc status=none
set +e
"$tool" ckpt verify "$img4" >/dev/null 2>&1; [ $? -eq 1 ] || { echo "damaged image must fail verify"; exit 1; }
"$tool" ckpt restore "$img4" >/dev/null 2>&1; [ $? -eq 1 ] || { echo "damaged image must fail restore"; exit 1; }
set -e
# the directory falls back to gen 3 (its chain 1-2-3 is intact)
got=$("$tool" ckpt restore "$d" | head -1)
grep -q '^generation 3' <<<"$got" || { echo "fallback to generation 3 expected: $got"; exit 1; }
# truncation
cp "$d/saved" "$img4"
truncate -s $((size / 2)) "$img4"
set +e
"$tool" ckpt verify "$img4" >/dev/null 2>&1; [ $? -eq 1 ] || { echo "truncated image must fail"; exit 1; }
"$tool" ckpt >/dev/null 2>&1; [ $? -eq 2 ] || { echo "usage must exit 2"; exit 1; }
"$tool" ckpt frobnicate x >/dev/null 2>&1; [ $? -eq 2 ] || { echo "usage must exit 2"; exit 1; }
set -e
echo OK
