#!/usr/bin/env bash
# Benchmark (not a test, not run in CI): the helper's own fixed cost. `slot-os start 0` and
# `machinectl start slot00` of an already running slot (no job work: config, bus, unit
# states, an empty job), and `slot-os list` vs `machinectl list`, interleaved, timed inside
# one stock-shaped test host with $EPOCHREALTIME. Used by docs/notes/bench-stock.md to tell
# the helper's cost from the machine's noise.
#
#   sudo bash tests/bench/start-noop.sh [ROUNDS] [RELEASE]     (defaults: 20, bookworm)
set -euo pipefail
rounds=${1:-20}
rel=${2:-bookworm}
# shellcheck source=common.sh
source "$(dirname "$0")/common.sh"
H=bnoop
cleanup() { th_cleanup_all || true; leave_own_cgroups; }
trap cleanup EXIT
th_boot "$H" unified "$rel"
th_copy_slot_image "$H" slot00
th_sh "$H" 'mkdir -p /etc/slot-os && : > /etc/slot-os/slot00.toml && systemctl daemon-reload && slot-os start 0 >/dev/null'
raw=$(th_run "$H" bash -c '
    t() { local k=$1; shift; local s=$EPOCHREALTIME; "$@" >/dev/null 2>&1 || echo "FAILED: $*" >&2; local e=$EPOCHREALTIME; echo "$k $(( ${e/./} - ${s/./} ))"; }
    for ((i = 0; i < $1; i++)); do
        if ((i % 2)); then t mc machinectl start slot00; t sos slot-os start 0; t mclist machinectl list; t soslist slot-os list;
        else t sos slot-os start 0; t mc machinectl start slot00; t soslist slot-os list; t mclist machinectl list; fi
        read -r l _ </proc/loadavg; echo "load ${l/./}0"
    done' _ "$rounds")
echo "# $rel, one running slot, $rounds rounds, interleaved; ms: median min max"
printf '%-40s %s\n' "slot-os start 0 (already running)" "$(stats sos 1)"
printf '%-40s %s\n' "machinectl start slot00 (already running)" "$(stats mc 1)"
printf '%-40s %s\n' "slot-os list" "$(stats soslist 1)"
printf '%-40s %s\n' "machinectl list" "$(stats mclist 1)"
printf 'load average (1 min): median min max %s\n' "$(stats load 2)"
