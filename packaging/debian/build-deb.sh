#!/usr/bin/env bash
# Builds slot-os_VERSION_ARCH.deb from a `make install` staging tree: no debhelper, no
# cargo-deb. Called by `make deb` after the build:
#   build-deb.sh MAKE PROFILE VERSION OUTPUT.deb
# Needs dpkg-dev (dpkg-shlibdeps) and binutils (strip). Run from the repository root.
set -euo pipefail
make=$1 profile=$2 version=$3 out=$4
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
arch=$(dpkg --print-architecture)

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
root=$work/root
mkdir -p "$root"
chmod 755 "$root"
umask 022

$make --no-print-directory install DESTDIR="$root" PREFIX=/usr PROFILE="$profile" \
    ZSH_COMPLETION_DIR=/usr/share/zsh/vendor-completions >/dev/null

strip --strip-unneeded --remove-section=.comment --remove-section=.note \
    "$root/usr/bin/slot-os" "$root/usr/lib/systemd/system-generators/slot-os-generator"

doc=$root/usr/share/doc/slot-os
install -m644 "$here/copyright" "$doc/copyright"
# A native package's changelog; its date is the last commit's, so rebuilds are identical.
date=$(git log -1 --format=%cD 2>/dev/null || date -R)
printf 'slot-os (%s) unstable; urgency=medium\n\n  * Release %s; see the git history for the changes.\n\n -- slot-os developers <slot-os@example.invalid>  %s\n' \
    "$version" "$version" "$date" >"$doc/changelog"
gzip -9n "$doc/changelog"
find "$root/usr/share/man" -type f -exec gzip -9n {} +
install -Dm644 "$here/slot-os.lintian-overrides" "$root/usr/share/lintian/overrides/slot-os"

# Library dependencies of the binaries, as debhelper's ${shlibs:Depends}. dpkg-shlibdeps
# wants a debian/control to read; give it a minimal one.
mkdir -p "$work/src/debian"
printf 'Source: slot-os\n\nPackage: slot-os\nArchitecture: any\n' >"$work/src/debian/control"
shlibs=$(cd "$work/src" && dpkg-shlibdeps -O -e"$root/usr/bin/slot-os" \
    -e"$root/usr/lib/systemd/system-generators/slot-os-generator" 2>/dev/null |
    sed -n 's/^shlibs:Depends=//p')
[[ -n "$shlibs" ]] || { echo "build-deb.sh: dpkg-shlibdeps found no library dependency" >&2; exit 1; }

mkdir -p "$root/DEBIAN"
size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
sed -e "s/@VERSION@/$version/" -e "s/@ARCH@/$arch/" -e "s/@SHLIBS@/$shlibs/" \
    -e "s/@SIZE@/$size/" "$here/control.in" >"$root/DEBIAN/control"
install -m644 "$here/conffiles" "$root/DEBIAN/conffiles"
install -m755 "$here/postinst" "$here/prerm" "$here/postrm" "$root/DEBIAN/"
(cd "$root" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | LC_ALL=C sort -z |
    xargs -0 md5sum) >"$root/DEBIAN/md5sums"
chmod 644 "$root/DEBIAN/md5sums"

mkdir -p "$(dirname "$out")"
SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)} \
    dpkg-deb --root-owner-group -Zxz --build "$root" "$out" >/dev/null
echo "$out"
