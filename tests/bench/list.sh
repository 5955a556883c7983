#!/usr/bin/env bash
# Benchmark (not a test, not run in CI): `slot-os list` against `machinectl list`, side by
# side in one test host with 10 configured slots of which 5 are running. Timed inside the
# test host with bash's $EPOCHREALTIME (no extra process per measurement), interleaved,
# after warm-up runs; prints min/median/max and the ratio of the medians.
#
#   sudo tests/bench/list.sh [RUNS] [unified|hybrid]     (defaults: 30 runs, hybrid)
#
# Env: SLOT_OS_PROFILE (default release; built first unless SLOT_OS_SKIP_BUILD is set),
# CARGO_TARGET_DIR, SLOT_OS_TEST_RUN (where the test host lives), see tests/testhost/README.md.
# Goal (issue): slot-os list <= 0.5x machinectl list.
set -euo pipefail
runs=${1:-30}
mode=${2:-hybrid}
((runs >= 20)) || { echo "list.sh: use at least 20 runs" >&2; exit 2; }
# shellcheck source=common.sh
source "$(dirname "$0")/common.sh"

H=benchlist
NSLOTS=10
NRUNNING=5
img=$(mktemp -p /var/tmp slot-os-bench-list.XXXXXX)

# /var/lib/machines on a loop btrfs: slot images are snapshots of one copy (fast set-up).
th_pre_boot_hook() { btrfs_slot_images "$2" "$img" "$NRUNNING"; }
cleanup() {
    th_cleanup_all || true
    rm -f "$img"
    leave_own_cgroups
}
trap cleanup EXIT

th_boot "$H" "$mode"
# 10 slots configured, the first 5 have images and are started (and have booted).
th_sh "$H" 'mkdir -p /etc/slot-os
    for i in $(seq 0 $(($1 - 1))); do printf "memory = \"256M\"\n" > /etc/slot-os/$(printf slot%02d $i).toml; done
    systemctl daemon-reload' "$NSLOTS"
th_run "$H" slot-os start $(seq 0 $((NRUNNING - 1))) >/dev/null
th_run "$H" slot-os list
echo "# machinectl list:"
th_run "$H" machinectl list --no-pager

# One line per measurement: "<what> <microseconds>".
raw=$(th_run "$H" bash -c '
    runs=$1
    t() { local s=$EPOCHREALTIME; "$@" >/dev/null 2>&1; local e=$EPOCHREALTIME; echo $(( ${e/./} - ${s/./} )); }
    for i in 1 2 3 4 5; do t slot-os list; t slot-os list --json; t machinectl list; t /bin/true; done >/dev/null
    for ((i = 0; i < runs; i++)); do
        echo "sos $(t slot-os list)"
        echo "mc $(t machinectl list)"
        echo "json $(t slot-os list --json)"
        echo "true $(t /bin/true)"
    done' _ "$runs")

read -r sos_med sos_min sos_max < <(stats sos 1)
read -r mc_med mc_min mc_max < <(stats mc 1)
read -r js_med js_min js_max < <(stats json 1)
read -r tr_med tr_min tr_max < <(stats true 1)
echo
echo "# $NSLOTS slots configured, $NRUNNING running; $mode cgroups; $runs runs each, interleaved; ms (median, min-max)"
printf '%-26s %7s  %s\n' "slot-os list" "$sos_med" "($sos_min-$sos_max)"
printf '%-26s %7s  %s\n' "slot-os list --json" "$js_med" "($js_min-$js_max)"
printf '%-26s %7s  %s\n' "machinectl list" "$mc_med" "($mc_min-$mc_max)"
printf '%-26s %7s  %s\n' "/bin/true (spawn floor)" "$tr_med" "($tr_min-$tr_max)"
printf 'ratio slot-os list / machinectl list (medians): %.2fx (goal <= 0.50x)\n' \
    "$(awk -v a="$sos_med" -v b="$mc_med" 'BEGIN { print a / b }')"
