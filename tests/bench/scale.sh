#!/usr/bin/env bash
# Benchmark (not a test, not run in CI): slot-os at 10, 50 and 200 slots in one test host,
# each figure beside the bare systemd tool doing the same work in the same run:
#   build N              vs  machinectl clone x N (one after the other, as a script would)
#   start all (N)        vs  machinectl start of the same N names in one call; slot-os with
#                            its default -j and with -j 0 (every job at once). All wait for
#                            the boots (the generated .nspawn has NotifyReady=yes).
#   list (N running)     vs  machinectl list
#   info (N running)     vs  machinectl status of one slot
#   stop all (N)         vs  systemctl stop of the same N units in one call
# and with N booted: the slots' memory (PSS summed over their cgroups), and the inotify
# instances and watches in use against the limits the package sets.
#
#   sudo tests/bench/scale.sh [COUNTS...]        (default: 10 50 200)
#
# Images are btrfs snapshots of one minbase-sized root (the test host's own). Timed inside
# the test host with bash's $EPOCHREALTIME. Env: SLOT_OS_PROFILE (default release),
# SLOT_OS_TEST_RUN, see tests/testhost/README.md. Takes about 30 minutes for 200 on 2 cores.
set -euo pipefail
counts=("$@")
((${#counts[@]})) || counts=(10 50 200)
# shellcheck source=common.sh
source "$(dirname "$0")/common.sh"
th_ensure_packages

H=benchscale
img=$(mktemp -p /var/tmp slot-os-bench-scale.XXXXXX)
th_pre_boot_hook() {
    truncate -s 32G "$img"
    mkfs.btrfs -q -f "$img" >/dev/null 2>&1
    mkdir -p "$2/var/lib/machines"
    mount -o loop "$img" "$2/var/lib/machines"
}
cleanup() {
    th_cleanup_all || true
    rm -f "$img"
    leave_own_cgroups
}
trap cleanup EXIT
th_boot "$H" unified
th_copy_slot_image "$H" slot-os
echo "# base image slot-os: $(th_sh "$H" 'du -sh /var/lib/machines/slot-os | cut -f1') (btrfs snapshots), $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "# inotify limits (the package's, given to the machine by the harness): instances $(cat /proc/sys/fs/inotify/max_user_instances), watches $(cat /proc/sys/fs/inotify/max_user_watches)"

# t 'code': wall time of the code inside the host, in ms (one decimal); stderr says if it failed
t() {
    th_run "$H" bash -c 's=$EPOCHREALTIME; eval "$1" >/tmp/bench.out 2>&1 || { echo "FAILED: $1" >&2; tail -n 3 /tmp/bench.out >&2; }; e=$EPOCHREALTIME; echo $(( ${e/./} - ${s/./} ))' _ "$1" |
        awk '{ printf "%.1f", $1 / 1000 }'
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
row() { printf '%-44s %10s ms   %-34s %10s ms   %sx\n' "$1" "$2" "$3" "$4" "$(ratio "$2" "$4")"; }
active() { th_sh "$H" "systemctl list-units --no-legend --state=active 'systemd-nspawn@*' | wc -l"; }
all_stopped() { th_run "$H" slot-os stop -j 0 all >/dev/null; }

for n in "${counts[@]}"; do
    names=$(for ((i = 0; i < n; i++)); do printf 'slot%02d ' "$i"; done)
    units=$(for s in $names; do printf 'systemd-nspawn@%s.service ' "$s"; done)
    echo
    echo "## $n slots"
    th_run "$H" slot-os build 0 >/dev/null
    a=$(t "slot-os build $n")
    b=$(t "for i in \$(seq $n); do machinectl clone slot-os mc\$i || exit 1; done")
    row "build $n (clone + machine-id + SSH keys)" "$a" "machinectl clone x$n" "$b"
    th_sh "$H" "for i in \$(seq $n); do machinectl remove mc\$i; done"
    th_run "$H" systemctl daemon-reload
    # one boot of every image outside the timing (first boots do one-off work)
    th_run "$H" slot-os start all >/dev/null
    all_stopped
    a=$(t "slot-os start all")
    [[ "$(active)" == "$n" ]] || echo "NOT ALL ACTIVE after slot-os start all: $(active)"
    all_stopped
    c=$(t "slot-os start -j 0 all")
    [[ "$(active)" == "$n" ]] || echo "NOT ALL ACTIVE after slot-os start -j 0 all: $(active)"
    all_stopped
    b=$(t "machinectl start $names")
    [[ "$(active)" == "$n" ]] || echo "NOT ALL ACTIVE after machinectl start: $(active)"
    row "start all ($n, default -j)" "$a" "machinectl start ($n names)" "$b"
    row "start -j 0 all ($n, all at once)" "$c" "machinectl start ($n names)" "$b"
    # booted and idle for a while: list, info, memory, inotify
    th_sh "$H" 'sleep 10'
    la=(); lb=(); ia=(); ib=()
    for r in 1 2 3 4 5 6 7 8 9 10 11; do
        la+=("$(t 'slot-os list')"); lb+=("$(t 'machinectl list --no-pager')")
        ia+=("$(t "slot-os info slot$(printf %02d $((n - 1)))")"); ib+=("$(t "machinectl status --no-pager slot$(printf %02d $((n - 1)))")")
    done
    med() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
    row "list ($n running, median of 11)" "$(med "${la[@]}")" "machinectl list" "$(med "${lb[@]}")"
    row "info ($n running, median of 11)" "$(med "${ia[@]}")" "machinectl status" "$(med "${ib[@]}")"
    echo "memory of $n idle slots (PSS summed over their cgroups): $(th_sh "$H" '
        for u in /sys/fs/cgroup/machine.slice/systemd-nspawn@*/; do
            find "$u" -name cgroup.procs -exec cat {} +
        done | while read -r p; do awk "/^Pss:/ { print \$2 }" /proc/$p/smaps_rollup 2>/dev/null; done |
        awk -v n='"$n"' "{ s += \$1 } END { printf \"%.0f MiB, %.1f MiB per slot\", s / 1024, s / 1024 / n }"')"
    echo "inotify in use with $n booted: $(th_sh "$H" '
        i=0; w=0
        for fd in /proc/[0-9]*/fd/*; do
            [ "$(readlink "$fd" 2>/dev/null)" = "anon_inode:inotify" ] || continue
            i=$((i + 1)); p=${fd%/fd/*}; c=$(grep -c "^inotify wd:" "$p/fdinfo/${fd##*/}" 2>/dev/null); w=$((w + ${c:-0}))
        done
        echo "$i instances, $w watches"') (test host and slots; the package's limits: 1048576 each)"
    a=$(t "slot-os stop all")
    [[ "$(active)" == 0 ]] || echo "STILL ACTIVE after slot-os stop all: $(active)"
    th_run "$H" slot-os start -j 0 all >/dev/null
    b=$(t "systemctl stop $units")
    [[ "$(active)" == 0 ]] || echo "STILL ACTIVE after systemctl stop: $(active)"
    row "stop all ($n)" "$a" "systemctl stop ($n units)" "$b"
done
echo
echo "# load at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
