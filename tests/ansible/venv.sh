#!/usr/bin/env bash
# ansible-core in a venv of its own, outside the repository, for tests/e2e/70-ansible.sh.
# Idempotent: prints the venv's directory, creating it only when missing. The venv is
# bound read-only into test hosts at the same path, so it is made with Debian's own
# /usr/bin/python3 (the test hosts' python is the same Debian 12 build).
set -euo pipefail
ver=${SLOT_OS_ANSIBLE_CORE_VERSION:-2.19.14}
dir=${SLOT_OS_TEST_CACHE:-/var/cache/slot-os-test}/ansible-core-$ver
if [[ -x "$dir/bin/ansible-playbook" && -e "$dir/.complete" ]]; then
  echo "$dir"
  exit 0
fi
if ! /usr/bin/python3 -c 'import ensurepip, venv' 2>/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq --no-install-recommends python3-venv >&2
fi
mkdir -p "$(dirname "$dir")"
# Built under a temporary name and renamed: an interrupted install is never used.
tmp=$dir.tmp.$$
rm -rf "$tmp"
trap 'rm -rf "$tmp"' EXIT
/usr/bin/python3 -m venv "$tmp" >&2
"$tmp/bin/pip" install -q --disable-pip-version-check "ansible-core==$ver" >&2
# venv scripts carry the venv's absolute path in their #! line: rename, then fix it.
rm -rf "$dir"
mv "$tmp" "$dir"
trap - EXIT
grep -rlI --null "$tmp" "$dir/bin" | xargs -0 -r sed -i "s|$tmp|$dir|g"
touch "$dir/.complete"
echo "$dir"
