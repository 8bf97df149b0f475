#!/usr/bin/env bash
# scripts/kernels/fetch.sh VERSION - make a Debian cloud kernel available in
# the kernel cache and print the path of its vmlinuz on stdout.
#
# VERSION is one of: 5.10 (Debian 11 "bullseye"), 6.1 and 6.12 (Debian 12
# "bookworm"; 6.12 is its linux-image-6.12-cloud-amd64).  The package is
# fetched with `apt-get download` through a PRIVATE apt configuration kept in
# the cache (sources, lists, cache dirs), derived from this machine's own
# sources by replacing its suite name with the wanted one, so the system's apt
# state is never touched and no mirror host name is written anywhere in the
# repository.  It is unpacked with `dpkg -x`: nothing is installed, /boot is
# never written.
#
# Cache: ${MMK_KERNEL_CACHE:-/var/cache/mmkit-kernels} (root) or
# ${XDG_CACHE_HOME:-~/.cache}/mmkit-kernels (others).  A kernel already in the
# cache is reused without network access; MMK_KERNEL_REFRESH=1 re-resolves
# the newest package of the series.
# Exit: 0 with the path printed; 1 with the reason on stderr.
set -euo pipefail

ver=${1:?usage: fetch.sh 5.10|6.1|6.12}
case "$ver" in
  5.10) suite=bullseye meta=linux-image-cloud-amd64 ;;
  6.1)  suite=bookworm meta=linux-image-cloud-amd64 ;;
  6.12) suite=bookworm meta=linux-image-6.12-cloud-amd64 ;;
  *) echo "fetch.sh: unknown kernel series '$ver' (known: 5.10 6.1 6.12)" >&2; exit 1 ;;
esac

if [ -n "${MMK_KERNEL_CACHE:-}" ]; then cache=$MMK_KERNEL_CACHE
elif [ "$(id -u)" -eq 0 ]; then cache=/var/cache/mmkit-kernels
else cache=${XDG_CACHE_HOME:-$HOME/.cache}/mmkit-kernels
fi
kdir=$cache/linux-$ver
if [ -z "${MMK_KERNEL_REFRESH:-}" ] && [ -s "$kdir/vmlinuz" ] && [ -s "$kdir/package" ]; then
  echo "$kdir/vmlinuz"
  exit 0
fi

die() { echo "fetch.sh: linux $ver: $*" >&2; exit 1; }
command -v apt-get >/dev/null || die "apt-get not found (a Debian-based host is needed to fetch kernels)"
command -v dpkg >/dev/null || die "dpkg not found"
mkdir -p "$cache" || die "cannot create cache dir $cache"

# ---- private apt configuration for $suite --------------------------------
host=$(. /etc/os-release 2>/dev/null && echo "${VERSION_CODENAME:-}")
[ -n "$host" ] || die "cannot tell this machine's Debian suite (no VERSION_CODENAME in /etc/os-release)"
apt=$cache/apt-$suite
mkdir -p "$apt/lists/partial" "$apt/cache/archives/partial" "$apt/sourceparts" "$apt/prefs"
src=$apt/sources.list

# Every Debian source entry of this machine whose suite is $host or
# $host-<something> (updates, security, backports), as one-line entries with
# the suite renamed; only the `main` component is needed.
derive() {
  local f
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -f "$f" ] || continue
    # deb [opts] URI SUITE COMPONENTS...
    awk -v host="$host" -v want="$suite" '
      $1 == "deb" {
        i = 2; opts = "";
        if ($2 ~ /^\[/) { while (i <= NF && $i !~ /\]$/) { opts = opts " " $i; i++ } opts = opts " " $i; i++ }
        uri = $i; s = $(i + 1);
        if (s != host && index(s, host "-") != 1) next;
        sub("^" host, want, s);
        sub(/^ /, "", opts);
        print "deb " (opts != "" ? opts " " : "") uri " " s " main";
      }' "$f"
  done
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    # deb822 stanzas, separated by blank lines; comments dropped
    awk -v host="$host" -v want="$suite" '
      function flush(   n, i, j, u, s, sfx, out, nu, us, ss) {
        if (types ~ /(^| )deb( |$)/ && uris != "" && suites != "" && enabled != "no") {
          nu = split(uris, us, " "); n = split(suites, ss, " ");
          for (i = 1; i <= n; i++) {
            s = ss[i];
            if (s != host && index(s, host "-") != 1) continue;
            sub("^" host, want, s);
            for (j = 1; j <= nu; j++)
              print "deb " (signed != "" ? "[signed-by=" signed "] " : "") us[j] " " s " main";
          }
        }
        types = uris = suites = signed = enabled = "";
      }
      /^[ \t]*#/ { next }
      /^[ \t]*$/ { flush(); next }
      {
        key = tolower($1); sub(/:$/, "", key);
        val = $0; sub(/^[^:]*:[ \t]*/, "", val);
        if (key == "types") types = val;
        else if (key == "uris") uris = val;
        else if (key == "suites") suites = val;
        else if (key == "signed-by") signed = val;
        else if (key == "enabled") enabled = tolower(val);
      }
      END { flush() }' "$f"
  done
}
derive | sort -u >"$src.new"
[ -s "$src.new" ] || die "no Debian '$host' source entries found in /etc/apt/sources.list(.d) to derive '$suite' from"
mv "$src.new" "$src"

aptopts=(
  -o "Dir::Etc::sourcelist=$src"
  -o "Dir::Etc::sourceparts=$apt/sourceparts"
  -o "Dir::Etc::preferencesparts=$apt/prefs"
  -o "Dir::State::Lists=$apt/lists"
  -o "Dir::Cache=$apt/cache"
  -o "Debug::NoLocking=1"
  -o "APT::Sandbox::User=$(id -un)"
)
# One update per run of the matrix is enough: reuse lists younger than 6 h.
stamp=$apt/updated
if [ -n "${MMK_KERNEL_REFRESH:-}" ] || [ ! -f "$stamp" ] || [ -n "$(find "$stamp" -mmin +360)" ]; then
  if ! apt-get "${aptopts[@]}" -qq update >"$apt/update.log" 2>&1; then
    sed 's/^/  /' "$apt/update.log" >&2
    die "apt-get update for suite '$suite' failed (private lists in $apt)"
  fi
  touch "$stamp"
fi

# ---- resolve the metapackage to the concrete image package ---------------
pkg=$(apt-cache "${aptopts[@]}" depends "$meta" 2>/dev/null |
      awk '/^  Depends: linux-image-[0-9]/ { print $2; exit }')
[ -n "$pkg" ] || die "'$meta' not found in suite '$suite' (or it names no linux-image-N package)"
pver=$(apt-cache "${aptopts[@]}" policy "$pkg" | awk '/Candidate:/ { print $2 }')

# ---- download and unpack (never installed) ----------------------------------
work=$(mktemp -d "$cache/.fetch-$ver.XXXXXX")
trap 'rm -rf "$work"' EXIT
( cd "$work" && apt-get "${aptopts[@]}" -qq download "$pkg" ) >"$work/dl.log" 2>&1 ||
  { sed 's/^/  /' "$work/dl.log" >&2; die "apt-get download $pkg failed"; }
deb=$(ls "$work"/*.deb 2>/dev/null | head -n1)
[ -n "$deb" ] || die "apt-get download $pkg produced no .deb"
dpkg -x "$deb" "$work/root"
img=$(ls "$work"/root/boot/vmlinuz-* 2>/dev/null | head -n1)
[ -n "$img" ] || die "$pkg holds no /boot/vmlinuz-*"

rm -rf "$kdir.new"
mkdir -p "$kdir.new"
cp "$img" "$kdir.new/vmlinuz"
cfg=$(ls "$work"/root/boot/config-* 2>/dev/null | head -n1)
[ -n "$cfg" ] && cp "$cfg" "$kdir.new/config"
echo "$pkg $pver ($suite)" >"$kdir.new/package"
rm -rf "$kdir"
mv "$kdir.new" "$kdir"
echo "$kdir/vmlinuz"
