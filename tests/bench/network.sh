#!/usr/bin/env bash
# Benchmark (not a test, not run in CI): issue 4's network timings, in one test host.
#  - `slot-os net-add` on a running slot (veth, bridge port, address, persisted in TOML,
#    networkd reload) against the bare `ip` commands that make the same NIC (not persisted);
#  - `slot-os start` of a slot with 4 NICs (4 bridges) against one with none.
# Interleaved rounds, timed inside the test host with $EPOCHREALTIME; medians and ratios.
#
#   sudo tests/bench/network.sh [ROUNDS]      (default 10)
set -euo pipefail
rounds=${1:-10}
# shellcheck source=common.sh
source "$(dirname "$0")/common.sh"
H=benchnet
cleanup() { th_cleanup_all || true; leave_own_cgroups; }
trap cleanup EXIT

th_boot "$H" unified
th_copy_slot_image "$H" slot00
th_copy_slot_image "$H" slot01
th_sh "$H" 'mkdir -p /etc/slot-os && : > /etc/slot-os/slot00.toml && : > /etc/slot-os/slot01.toml && systemctl daemon-reload
    for b in 1 2 3 4; do slot-os br-add $b 10.1.$b.1/24 >/dev/null; slot-os net-add 1 10.1.$b.11/24 $b >/dev/null; done
    slot-os start 0 1 >/dev/null && slot-os stop 0 1 >/dev/null'

raw=$(th_run "$H" bash -c '
    rounds=$1
    t() { local s=$EPOCHREALTIME; "$@" >/dev/null 2>&1 || echo "FAILED: $*" >&2; local e=$EPOCHREALTIME; echo $(( ${e/./} - ${s/./} )); }
    starts() {
        slot-os stop 0 1 >/dev/null; sleep 1
        if (($1 % 2)); then echo "start4 $(t slot-os start 1)"; echo "start0 $(t slot-os start 0)";
        else echo "start0 $(t slot-os start 0)"; echo "start4 $(t slot-os start 1)"; fi
    }
    bare() {
        local leader; leader=$(machinectl show slot00 -p Leader --value)
        ip link add vb-0-1 type veth peer name vbp &&
        ip link set vb-0-1 master slotbr1 up &&
        ip link set vbp netns "$leader" &&
        nsenter -t "$leader" -n ip link set vbp name eth1 &&
        nsenter -t "$leader" -n ip addr add 10.1.1.50/24 dev eth1 &&
        nsenter -t "$leader" -n ip link set eth1 up
    }
    for ((i = 0; i < rounds; i++)); do starts $i; done
    # slot00 is running now
    for ((i = 0; i < rounds; i++)); do
        echo "netadd $(t slot-os net-add 0 10.1.1.50/24 1)"; slot-os net-del 0 1 >/dev/null
        echo "bare $(t bare)"; ip link del vb-0-1
    done
    slot-os stop 0 1 >/dev/null' _ "$rounds")
grep -q FAILED <<<"$raw" && { echo "a timed command failed:" >&2; grep FAILED <<<"$raw" >&2; exit 1; }
read -r s4 s4min s4max < <(stats start4)
read -r s0 s0min s0max < <(stats start0)
read -r na namin namax < <(stats netadd 1)
read -r ba bamin bamax < <(stats bare 1)
echo "# network, $rounds rounds, interleaved; ms (median, min-max)"
printf '%-44s %7s  (%s-%s)\n' "slot-os start, slot with 4 NICs" "$s4" "$s4min" "$s4max"
printf '%-44s %7s  (%s-%s)\n' "slot-os start, slot without NICs" "$s0" "$s0min" "$s0max"
printf 'ratio 4 NICs / none: %.2fx\n' "$(awk -v a="$s4" -v b="$s0" 'BEGIN { print a / b }')"
printf '%-44s %7s  (%s-%s)\n' "slot-os net-add on a running slot" "$na" "$namin" "$namax"
printf '%-44s %7s  (%s-%s)\n' "bare ip commands (same NIC, not persisted)" "$ba" "$bamin" "$bamax"
printf 'ratio net-add / bare ip: %.2fx\n' "$(awk -v a="$na" -v b="$ba" 'BEGIN { print a / b }')"
