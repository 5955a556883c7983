#!/usr/bin/env bash
# What the VM tier needs on the machine running it (idempotent; also run by tests/vm/run.sh).
# qemu-system-x86: the emulator (KVM when usable, TCG otherwise); e2fsprogs: mkfs.ext4 -d;
# debootstrap + debian-archive-keyring: the image's root.
set -euo pipefail
pkgs=(qemu-system-x86 e2fsprogs debootstrap debian-archive-keyring)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "# vm: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get -o DPkg::Lock::Timeout=300 update -qq >&2
  apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends "${missing[@]}" >&2
fi
