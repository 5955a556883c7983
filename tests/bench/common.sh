# Sourced by the benchmarks in this directory (not tests, not run in CI): builds the
# project (SLOT_OS_PROFILE, default release; not when SLOT_OS_SKIP_BUILD is set), loads the
# test-host library, gives this run cgroups of its own, and provides `stats`.
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
export SLOT_OS_PROFILE=${SLOT_OS_PROFILE:-release}
if [[ -z "${SLOT_OS_SKIP_BUILD:-}" ]]; then
    if [[ "$SLOT_OS_PROFILE" == release ]]; then cargo build --release -q; else cargo build -q; fi
fi
# shellcheck source=../testhost/lib.sh
source tests/testhost/lib.sh

# On a machine whose PID 1 is not systemd, every nspawn started from the same cgroup puts its
# container in the same "/payload" cgroup (cgroup2 and name=systemd): test hosts running at the
# same time (other benchmarks, e2e runs) would share their slots' cgroups and time each other's
# work. This run gets cgroups of its own; they are removed at exit.
own_cgroups=()
if [[ "$(cat /proc/1/comm)" != systemd ]]; then
    for h in /sys/fs/cgroup/unified /sys/fs/cgroup/systemd /sys/fs/cgroup; do
        [[ -f "$h/cgroup.procs" && -w "$h/cgroup.procs" ]] || continue
        d=$h/slot-os-bench-$$
        mkdir -p "$d" && echo $$ >"$d/cgroup.procs" && own_cgroups+=("$d")
    done
fi
leave_own_cgroups() {
    local d
    for d in ${own_cgroups[@]+"${own_cgroups[@]}"}; do
        echo $$ >"$(dirname "$d")/cgroup.procs" 2>/dev/null || true
        find "$d" -depth -type d -exec rmdir {} \; 2>/dev/null || true
    done
}

# stats KEY [DECIMALS]: lines "KEY MICROSECONDS" in $raw -> "median min max" in ms
stats() {
    printf '%s\n' "$raw" | awk -v k="$1" '$1 == k { print $2 }' | sort -n | awk -v d="${2:-0}" '
        { a[NR] = $1 }
        END { m = (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2
              f = "%." d "f %." d "f %." d "f\n"; printf f, m / 1000, a[1] / 1000, a[NR] / 1000 }'
}

# btrfs_slot_images ROOT IMGFILE COUNT: /var/lib/machines of a test host's ROOT on a loop
# btrfs in IMGFILE, with slot00..slotCOUNT-1 as snapshots of one copy of the rootfs, each
# with its own machine-id and hostname (fast set-up; use from th_pre_boot_hook).
btrfs_slot_images() {
    local root=$1 img=$2 n=$3 src s d
    truncate -s 4G "$img"
    mkfs.btrfs -q -f "$img"
    mkdir -p "$root/var/lib/machines"
    mount -o loop "$img" "$root/var/lib/machines"
    src=$(th_rootfs)
    btrfs subvolume create "$root/var/lib/machines/slot00" >/dev/null
    cp -a --reflink=auto -- "$src/." "$root/var/lib/machines/slot00/"
    for ((s = 1; s < n; s++)); do
        btrfs subvolume snapshot "$root/var/lib/machines/slot00" \
            "$root/var/lib/machines/$(printf 'slot%02d' "$s")" >/dev/null
    done
    for ((s = 0; s < n; s++)); do
        d=$root/var/lib/machines/$(printf 'slot%02d' "$s")
        systemd-id128 new >"$d/etc/machine-id"
        printf 'slot%02d\n' "$s" >"$d/etc/hostname"
    done
}
