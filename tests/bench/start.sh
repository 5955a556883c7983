#!/usr/bin/env bash
# Benchmark (not a test, not run in CI): `slot-os start all` with 5 slots against
# `machinectl start` of the same 5 in one call, in one test host. Every run starts from all
# five stopped. Both wait for the slots to boot: the generated .nspawn files have
# NotifyReady=yes, so StartUnit's job (which both wait for) ends at the slot's READY=1.
# Interleaved rounds (alternating which goes first), timed inside the test host with bash's $EPOCHREALTIME; prints
# min/median/max and the ratio of the medians.
#
#   sudo tests/bench/start.sh [ROUNDS] [unified|hybrid]     (defaults: 8 rounds, hybrid)
#
# Env: SLOT_OS_PROFILE (default release; built first unless SLOT_OS_SKIP_BUILD is set),
# CARGO_TARGET_DIR, SLOT_OS_TEST_RUN, see tests/testhost/README.md.
set -euo pipefail
rounds=${1:-8}
mode=${2:-hybrid}
# shellcheck source=common.sh
source "$(dirname "$0")/common.sh"

H=benchstart
N=5
img=$(mktemp -p /var/tmp slot-os-bench-start.XXXXXX)

# /var/lib/machines on a loop btrfs: slot images are snapshots of one copy (fast set-up).
th_pre_boot_hook() { btrfs_slot_images "$2" "$img" "$N"; }
cleanup() {
    th_cleanup_all || true
    rm -f "$img"
    leave_own_cgroups
}
trap cleanup EXIT

th_boot "$H" "$mode"
th_sh "$H" 'mkdir -p /etc/slot-os
    for i in $(seq 0 $(($1 - 1))); do printf "memory = \"256M\"\n" > /etc/slot-os/$(printf slot%02d $i).toml; done
    systemctl daemon-reload' "$N"
names=$(for ((s = 0; s < N; s++)); do printf 'slot%02d ' "$s"; done)
# a first boot of each image outside the timing (first boots do one-off work)
th_run "$H" slot-os start all >/dev/null
th_run "$H" slot-os stop all >/dev/null

# One line per round and tool: "<what> <microseconds>". Each timed start begins with all
# slots stopped (stopped untimed by `slot-os stop all`, then a second to settle), and is
# checked: all five must be active afterwards.
raw=$(th_run "$H" bash -c '
    rounds=$1; shift; names=$*
    t() { local s=$EPOCHREALTIME; "$@" >/dev/null 2>&1 || echo "FAILED: $*" >&2; local e=$EPOCHREALTIME; echo $(( ${e/./} - ${s/./} )); }
    settle() { slot-os stop all >/dev/null; sleep 1; }
    check() {
        local n
        n=$(systemctl show -P ActiveState $(for m in $names; do echo systemd-nspawn@$m.service; done) | grep -cx active)
        [ "$n" = "$(echo $names | wc -w)" ] || echo "NOT ALL ACTIVE after $1: $n" >&2
    }
    sos() { settle; echo "sos $(t slot-os start all)"; check "slot-os start all"; }
    mc() { settle; echo "mc $(t machinectl start $names)"; check "machinectl start"; }
    # alternate which goes first, so neither always runs right after the other
    for ((i = 0; i < rounds; i++)); do
        if ((i % 2)); then mc; sos; else sos; mc; fi
    done
    settle' _ "$rounds" $names)

read -r sos_med sos_min sos_max < <(stats sos)
read -r mc_med mc_min mc_max < <(stats mc)
echo "# $N slots, each run from all stopped, until booted (NotifyReady=yes); $mode cgroups; $rounds rounds, interleaved; ms (median, min-max)"
printf '%-34s %6s  %s\n' "slot-os start all" "$sos_med" "($sos_min-$sos_max)"
printf '%-34s %6s  %s\n' "machinectl start (5 names, 1 call)" "$mc_med" "($mc_min-$mc_max)"
printf 'ratio slot-os / machinectl (medians): %.2fx\n' "$(awk -v a="$sos_med" -v b="$mc_med" 'BEGIN { print a / b }')"
