#!/usr/bin/env bash
# tests/install.sh TOOL SRCDIR BUILDDIR - cmake --install to a scratch
# prefix, then build and run a program outside the tree with pkg-config only.
set -euo pipefail
tool=$1 src=$2 build=$3
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cmake --install "$build" --prefix "$tmp/prefix" >/dev/null
for f in include/mmkit.h include/mmkit/common.h bin/mmkit; do
  [ -e "$tmp/prefix/$f" ] || { echo "missing $f after install"; exit 1; }
done
libdir=$(ls -d "$tmp"/prefix/lib* | head -1)
[ -e "$libdir/libmmkit.a" ] || { echo "missing static library"; exit 1; }
so=$(readlink -f "$libdir/libmmkit.so")
soname=$(objdump -p "$so" | awk '/SONAME/ {print $2}')
want=libmmkit.so.$(sed -n 's/^set(MMK_SOVERSION \([0-9]*\))/\1/p' "$src/CMakeLists.txt")
[ "$soname" = "$want" ] || { echo "bad soname '$soname' (want $want)"; exit 1; }
if command -v scdoc >/dev/null; then
  [ -e "$tmp/prefix/share/man/man1/mmkit.1" ] || { echo "missing man page"; exit 1; }
fi
cat >"$tmp/prog.c" <<'C'
#include <mmkit.h>
#include <stdio.h>
int main(void)
{
	const mmk_features *f = mmk_features_get();
	printf("kernel %s version %s\n", f->kernel_release, mmk_version());
	return f->page_size ? 0 : 1;
}
C
export PKG_CONFIG_PATH="$libdir/pkgconfig"
# a sanitized build's library needs the sanitizer runtime in the program too
san=""
grep -q '^MMK_SANITIZE:BOOL=ON' "$build/CMakeCache.txt" && san="-fsanitize=address,undefined"
cc -std=c11 -Wall -Wextra -Werror $san "$tmp/prog.c" -o "$tmp/prog" $(pkg-config --cflags --libs mmkit)
# (outputs captured first: `cmd | grep -q` under pipefail fails when grep
# exits early and cmd dies of SIGPIPE)
out=$(LD_LIBRARY_PATH="$libdir" "$tmp/prog")
grep -q '^kernel ' <<<"$out" || { echo "program output: $out"; exit 1; }
# the installed library is the shared one (the program is not static)
deps=$(LD_LIBRARY_PATH="$libdir" ldd "$tmp/prog")
grep -q "$want" <<<"$deps" || { echo "ldd: $deps"; exit 1; }
echo "install + pkg-config OK"
