#!/usr/bin/env bash
# Everything the build and the test suite need on a fresh Debian 12 (idempotent).
# Never installs systemd-resolved: on a machine without systemd as PID 1 it breaks DNS.
set -euo pipefail
pkgs=(systemd-container debootstrap dbus iproute2 btrfs-progs iputils-ping make gcc pkg-config tar jq)
# Packaging and manuals: make deb (dpkg-shlibdeps, strip), lintian, rpmspec -P, man -l.
pkgs+=(dpkg-dev binutils lintian rpm man-db)
# tests/e2e/25-secrets.sh: a terminal around `slot-os console` (tmux), host keys for the
# test host made by the machine's ssh-keygen (openssh-client).
pkgs+=(tmux openssh-client)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
if ! command -v cargo >/dev/null; then
  echo "cargo not found: install a Rust toolchain (rustup) first" >&2
  exit 1
fi

# ansible-core for tests/e2e/70-ansible.sh: a pinned venv in the test cache (python3-venv
# from apt if missing); the scenario makes it too if this step was skipped.
bash "$(dirname "$0")/ansible/venv.sh" >/dev/null
# The VM tier (tests/vm/): qemu, mkfs.ext4 -d, debootstrap.
bash "$(dirname "$0")/vm/install-deps.sh"
