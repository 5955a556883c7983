#!/usr/bin/env bash
# Parses packaging/rpm/slot-os.spec with rpmspec (Debian package `rpm`) and checks that the
# install layout expanded to the systemd paths. Debian's rpm has no cargo-rpm-macros,
# systemd-rpm-macros or rpmautospec: the spec's own %{!?...} fallbacks define the paths,
# and the Rust macros (%cargo_prep, %cargo_build, ...) stay unexpanded, which -P allows.
set -euo pipefail
cd "$(dirname "$0")/.."
spec=packaging/rpm/slot-os.spec
command -v rpmspec >/dev/null || { echo "check-rpmspec: rpmspec missing (apt-get install rpm)" >&2; exit 1; }
out=$(rpmspec -P "$spec" 2>&1) || { printf '%s\n' "$out" >&2; echo "check-rpmspec: rpmspec -P failed" >&2; exit 1; }
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
rc=0
for want in "Version:        $version" \
    "/usr/lib/systemd/system-generators/slot-os-generator" \
    "SYSTEMD_SYSTEM_UNIT_DIR=/usr/lib/systemd/system " \
    "/usr/share/man/man5/slot-os.toml.5*" \
    "%config(noreplace) /etc/slot-os/slot-os.toml" \
    "/usr/share/bash-completion/completions/slot-os" \
    "/usr/share/fish/vendor_completions.d/slot-os.fish" \
    "Requires:       systemd-container" \
    "/usr/lib/systemd/system/slot-os-*"; do
    if ! grep -qF -- "$want" <<<"$out"; then
        echo "check-rpmspec: '$want' not in rpmspec -P output" >&2
        rc=1
    fi
done
if grep -qE '%\{(_unitdir|_systemdgeneratordir|_pkgdocdir|bash_completions_dir)\}' <<<"$out"; then
    echo "check-rpmspec: a path macro stayed unexpanded" >&2
    rc=1
fi
[[ $rc == 0 ]] && echo "check-rpmspec: $spec parses (version $version)"
exit "$rc"
