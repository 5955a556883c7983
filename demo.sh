#!/usr/bin/env bash
# slot-os demo: installs what it needs, builds slot-os, boots a throw-away systemd host
# (systemd-nspawn, private network) with slot-os installed the way a package installs it,
# and runs the Fulcon walkthrough inside it: make-base-image, build 3, start all, list,
# resource, stop, build 0. Run as root on Debian 12.
#   DEMO_KEEP=1 ./demo.sh   keeps the host running afterwards and tells how to enter it.
set -euo pipefail
cd "$(dirname "$0")"
[ "$(id -u)" = 0 ] || { echo "demo.sh: run as root (it boots a systemd host in nspawn)" >&2; exit 2; }

bash tests/install-deps.sh
cargo build --release
export SLOT_OS_PROFILE=release
# shellcheck source=tests/testhost/lib.sh
source tests/testhost/lib.sh
th_ensure_packages
th_rootfs >/dev/null
if [ -z "${DEMO_KEEP:-}" ]; then trap th_cleanup_all EXIT; fi

H=slot-os-demo
echo "==> booting a systemd host '$H' in nspawn"
th_boot "$H" unified

say() { printf '\n\033[1mdemo#\033[0m %s\n' "$*"; th_run "$H" "$@"; }
say slot-os make-base-image
say slot-os build 3
say slot-os list
say slot-os start 0
say slot-os start all
say slot-os list
say machinectl list
say slot-os resource -c 50 -n 0 -m 256M 1
say systemctl show -p CPUQuotaPerSecUSec -p AllowedCPUs -p MemoryMax systemd-nspawn@slot01
say cat /etc/slot-os/slot01.toml
say slot-os br-add 1 192.168.18.1/24
say slot-os net-add 0 192.168.18.2/24 1
say slot-os net-add 1 192.168.18.3/24 1
say slot-os exec 0 -- ping -c1 -W2 192.168.18.3
say slot-os net-info
say slot-os backup 0 demo
say slot-os backup-list
say journalctl -t slot-os SLOT=slot01 --no-pager -o cat
say slot-os autostart on 0
say slot-os stop all
say slot-os list

if [ -n "${DEMO_KEEP:-}" ]; then
  echo
  echo "The host '$H' keeps running with its 3 slots. Enter it with:"
  echo "  nsenter -t $(th_leader "$H") -a /bin/bash"
  echo "Stop it with: kill $(th__pidfile_alive "$TH_RUN/$H/nspawn.pid")"
else
  say slot-os build 0
  say machinectl list-images
fi
