#!/usr/bin/env bash
# Benchmark (not a test, not run in CI): issue 5's backup and restore timings on a stopped
# slot whose image is a copy of the test-host rootfs, side by side with the bare tools:
#  - ext4: `slot-os backup` (tar | zstd -T0 -3, SHA-256 on the way) vs `tar | zstd -T0` and
#    `machinectl export-tar x.tar.gz`; `slot-os backup-restore` vs `machinectl import-tar`
#    of the plain tar; page cache warm, and dropped before each run (cold);
#  - btrfs (loop file): `slot-os backup` end to end (read-only snapshot).
# Throughput = the image's apparent size (du -sb) / time.
#
#   sudo tests/bench/backup.sh [ROUNDS]      (default 5)
set -euo pipefail
rounds=${1:-5}
# shellcheck source=common.sh
source "$(dirname "$0")/common.sh"
H=benchbk
B=benchbkfs
img=$(mktemp -p /var/tmp slot-os-bench-backup.XXXXXX)
cleanup() { th_cleanup_all || true; rm -f "$img"; leave_own_cgroups; }
trap cleanup EXIT

th_boot "$H" unified
th_copy_slot_image "$H" slot00
th_sh "$H" 'mkdir -p /etc/slot-os && : > /etc/slot-os/slot00.toml && systemctl daemon-reload'
bytes=$(th_sh "$H" 'du -sb /var/lib/machines/slot00 | cut -f1')

# One timed command inside the host -> microseconds; "cold" drops the page cache first
# (from outside: /proc/sys is read-only in the host).
timed() { # KEY cold|warm CMD
    local key=$1 cache=$2
    shift 2
    [[ $cache == cold ]] && sync && echo 3 >/proc/sys/vm/drop_caches
    echo "$key-$cache $(th_run "$H" bash -c 's=$EPOCHREALTIME; eval "$1" >/dev/null 2>&1 || echo FAILED >&2; e=$EPOCHREALTIME; echo $(( ${e/./} - ${s/./} ))' _ "$*")"
}
tarzstd='tar -C /var/lib/machines/slot00 --numeric-owner --xattrs --xattrs-include="*" --acls --sparse -cf - . | zstd -T0 -3 -q > /var/tmp/plain.tar.zst'
raw=""
for cache in warm cold; do
    for ((i = 0; i < rounds; i++)); do
        raw+=$(timed sos "$cache" 'slot-os backup 0 bench')$'\n'
        raw+=$(timed tarzstd "$cache" "$tarzstd")$'\n'
        raw+=$(timed restore "$cache" 'slot-os backup-restore 0 slot00.bench')$'\n'
        th_run "$H" slot-os backup-del slot00.bench >/dev/null
        th_sh "$H" 'rm -f /var/tmp/plain.tar; tar -C /var/lib/machines/slot00 --numeric-owner --xattrs --xattrs-include="*" --acls -cf /var/tmp/plain.tar .'
        raw+=$(timed import "$cache" 'machinectl import-tar /var/tmp/plain.tar imported')$'\n'
        th_run "$H" machinectl remove imported
    done
done
# gzip is ~25 MB/s here: a few runs only
for ((i = 0; i < 2; i++)); do
    raw+=$(timed mcgz warm 'rm -f /var/tmp/x.tar.gz; machinectl export-tar slot00 /var/tmp/x.tar.gz')$'\n'
done
sos_size=$(th_sh "$H" 'slot-os backup 0 size >/dev/null && stat -c %s /var/lib/slot-os/backups/slot00.size.tar.zst')
plain_size=$(th_sh "$H" 'stat -c %s /var/tmp/plain.tar.zst')
gz_size=$(th_sh "$H" 'stat -c %s /var/tmp/x.tar.gz')
grep -q FAILED <<<"$raw" && { echo "a timed command failed" >&2; exit 1; }

# btrfs: snapshot backups, end to end, of a running slot
th_pre_boot_hook() {
    truncate -s 4G "$img" && mkfs.btrfs -q -f "$img" && mkdir -p "$2/var/lib/machines" && mount -o loop "$img" "$2/var/lib/machines" &&
        mkdir -p "$2/var/lib/slot-os" "$2/var/lib/machines/.backups" && ln -s /var/lib/machines/.backups "$2/var/lib/slot-os/backups"
}
th_boot "$B" unified
th_run "$B" slot-os make-base-image >/dev/null
th_run "$B" slot-os build 1 >/dev/null
th_run "$B" slot-os start 0 >/dev/null
snap=$(th_run "$B" bash -c 'for i in $(seq 1 $1); do s=$EPOCHREALTIME; slot-os backup 0 s$i >/dev/null; e=$EPOCHREALTIME; echo "snap $(( ${e/./} - ${s/./} ))"; done' _ "$((rounds * 2))")
freeze=$(th_run "$B" slot-os backup-list --json | jq -r '.[].freeze_ms' | sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }')

mbps() { awk -v b="$bytes" -v ms="$1" 'BEGIN { printf "%.0f", b / 1e6 / (ms / 1000) }'; }
row() { # LABEL KEY
    local med min max
    read -r med min max < <(stats "$2")
    printf '%-48s %7s ms (%s-%s)  %5s MB/s\n' "$1" "$med" "$min" "$max" "$(mbps "$med")"
}
echo "# image $((bytes / 1000000)) MB (du -sb); $rounds rounds per row unless noted; median (min-max)"
for cache in warm cold; do
    echo "## page cache $cache"
    row "slot-os backup (tar | zstd -T0 -3 + sha256)" "sos-$cache"
    row "tar | zstd -T0 -3" "tarzstd-$cache"
    row "slot-os backup-restore (sha256 check + unpack)" "restore-$cache"
    row "machinectl import-tar plain.tar" "import-$cache"
    read -r a _ _ < <(stats "sos-$cache"); read -r b _ _ < <(stats "tarzstd-$cache")
    read -r c _ _ < <(stats "restore-$cache"); read -r d _ _ < <(stats "import-$cache")
    awk -v a="$a" -v b="$b" -v c="$c" -v d="$d" 'BEGIN { printf "throughput backup / tar|zstd: %.2fx; restore / import-tar: %.2fx\n", b / a, d / c }'
done
row "machinectl export-tar x.tar.gz (2 runs)" mcgz-warm
read -r a _ _ < <(stats sos-warm); read -r g _ _ < <(stats mcgz-warm)
awk -v a="$a" -v g="$g" 'BEGIN { printf "throughput backup / export-tar .gz: %.1fx\n", g / a }'
echo "sizes: slot-os $sos_size, tar|zstd $plain_size, tar.gz $gz_size bytes"
raw=$snap
row "btrfs: slot-os backup of a running slot, end to end" snap
echo "btrfs: median freeze ${freeze} ms"
