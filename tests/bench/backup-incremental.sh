#!/usr/bin/env bash
# Benchmark (not a test, not run in CI): issue 13's incremental backups, side by side in one
# run, inside one test host, on a ~1 GB slot-like tree (the test rootfs plus this machine's
# /usr/lib/x86_64-linux-gnu and /usr/share/doc: real, varied files):
#  - first and incremental (after 10 MB written) `slot-os backup` (two-pass capture +
#    restic) vs `tar | zstd -T0` and vs bare `restic backup` of the same tree;
#  - restore: `slot-os backup-restore` (restic restore --verify + swap) vs `zstd -d | tar -x`
#    and bare `restic restore`;
#  - repository sizes, CPU (user+sys) of each, and the freeze of a running slot: ext4 copy
#    (reported by slot-os, and where its time goes) and btrfs snapshot.
#
#   sudo tests/bench/backup-incremental.sh [ROUNDS]      (default 3)
set -euo pipefail
rounds=${1:-3}
# shellcheck source=common.sh
source "$(dirname "$0")/common.sh"
H=benchinc
B=benchincfs
img=$(mktemp -p /var/tmp slot-os-bench-inc.XXXXXX)
cleanup() { th_cleanup_all || true; rm -f "$img"; leave_own_cgroups; }
trap cleanup EXIT

th_boot "$H" unified
th_copy_slot_image "$H" slot00
root=$(th_root "$H")
mkdir -p "$root/var/lib/machines/slot00/opt/extra"
cp -a /usr/lib/x86_64-linux-gnu "$root/var/lib/machines/slot00/opt/extra/lib"
cp -a /usr/share/doc "$root/var/lib/machines/slot00/opt/extra/doc"
th_sh "$H" 'mkdir -p /etc/slot-os && : > /etc/slot-os/slot00.toml && systemctl daemon-reload'
bytes=$(th_sh "$H" 'du -sb /var/lib/machines/slot00 | cut -f1')
entries=$(th_sh "$H" 'find /var/lib/machines/slot00 | wc -l')
th_sh "$H" 'head -c 32 /dev/urandom | od -An -tx1 | tr -d " \n" > /root/bare.key; chmod 600 /root/bare.key
  RESTIC_PASSWORD_FILE=/root/bare.key restic init -q -r /var/tmp/bare-repo'

# One timed command inside the host -> "KEY MICROSECONDS CPU_MICROSECONDS"
timed() { # KEY CMD
    local key=$1
    shift
    echo "$key $(th_run "$H" bash -c '
        s=$EPOCHREALTIME
        TIMEFORMAT="%U %S"
        { time { bash -c "$1" >/tmp/out 2>&1; echo $? >/tmp/rc; }; } 2>/tmp/cpu
        e=$EPOCHREALTIME
        [ "$(cat /tmp/rc)" = 0 ] || { echo FAILED >&2; cat /tmp/out >&2; }
        read -r u y </tmp/cpu
        echo $(( ${e/./} - ${s/./} )) $(awk -v u="$u" -v y="$y" "BEGIN { printf \"%d\", (u + y) * 1e6 }")' _ "$*")"
}
tarzstd='tar -C /var/lib/machines/slot00 --numeric-owner --xattrs --xattrs-include="*" --acls --sparse -cf - . | zstd -T0 -3 -q > /var/tmp/plain.tar.zst'
bare='cd /var/lib/machines/slot00 && RESTIC_PASSWORD_FILE=/root/bare.key restic -q --no-cache -r /var/tmp/bare-repo backup --host bench .'
raw=""
report=""
for ((i = 0; i < rounds; i++)); do
    th_sh "$H" 'rm -rf /var/lib/slot-os/backups /var/lib/slot-os/backup.key /var/tmp/plain.tar.zst'
    raw+=$(timed sos-first "SLOT_OS_CAPTURE_REPORT=1 slot-os backup 0 first")$'\n'
    report+="first: $(th_sh "$H" 'grep ^capture: /tmp/out')"$'\n'
    raw+=$(timed tarzstd "$tarzstd")$'\n'
    [[ $i == 0 ]] && raw+=$(timed bare-first "$bare")$'\n'
    th_sh "$H" "head -c 10M /dev/urandom > /var/lib/machines/slot00/root/ten-$i"
    raw+=$(timed sos-inc "SLOT_OS_CAPTURE_REPORT=1 slot-os backup 0 inc")$'\n'
    report+="incremental: $(th_sh "$H" 'grep ^capture: /tmp/out')"$'\n'
    raw+=$(timed bare-inc "$bare")$'\n'
    raw+=$(timed tarzstd-inc "$tarzstd")$'\n'
    added=$(th_run "$H" slot-os backup-list --json | jq -r '.[] | select(.name == "slot00.inc") | .size')
    repo=$(th_sh "$H" 'du -sb /var/lib/slot-os/backups/restic | cut -f1')
    plain=$(th_sh "$H" 'stat -c %s /var/tmp/plain.tar.zst')
    raw+="size-inc $added 0"$'\n'"size-repo $repo 0"$'\n'"size-tar $plain 0"$'\n'
    raw+=$(timed restore "slot-os backup-restore 0 slot00.inc")$'\n'
    raw+=$(timed untar "rm -rf /var/tmp/untar && mkdir /var/tmp/untar && zstd -dc /var/tmp/plain.tar.zst | tar -C /var/tmp/untar --numeric-owner --xattrs --xattrs-include='*' --acls -xpf - && sync")$'\n'
    raw+=$(timed bare-restore "rm -rf /var/tmp/rr && RESTIC_PASSWORD_FILE=/root/bare.key restic -q --no-cache -r /var/tmp/bare-repo restore latest --target /var/tmp/rr && sync")$'\n'
    th_sh "$H" 'rm -rf /var/tmp/untar /var/tmp/rr'
    th_run "$H" slot-os backup-del slot00.inc >/dev/null
    th_run "$H" slot-os backup-del slot00.first >/dev/null
done
bare_size=$(th_sh "$H" 'du -sb /var/tmp/bare-repo | cut -f1')
grep -q FAILED <<<"$raw" && { echo "a timed command failed" >&2; exit 1; }

# Freeze of a running slot on ext4, with the slot writing as it runs.
th_run "$H" slot-os start 0 >/dev/null
th_run "$H" systemd-run -M slot00 --unit=ticker --quiet python3 -c '
import time
f = open("/root/ticks", "a", buffering=1)
while True:
    f.write("%.6f\n" % time.time())
    time.sleep(0.01)'
freeze_raw=""
for ((i = 0; i < rounds * 2; i++)); do
    th_run "$H" slot-os exec 0 -- sh -c "head -c 2M /dev/urandom > /root/w$i"
    out=$(th_run "$H" env SLOT_OS_CAPTURE_REPORT=1 slot-os backup 0 "run$i" 2>&1)
    freeze_raw+="freeze $(sed -n 's/.*frozen for \([0-9.]*\) ms.*/\1/p' <<<"$out" | awk '{ printf "%d", $1 * 1000 }') 0"$'\n'
    report+="running: $(grep ^capture: <<<"$out")"$'\n'
done

# btrfs: snapshot capture of a running slot.
th_pre_boot_hook() {
    truncate -s 4G "$img" && mkfs.btrfs -q -f "$img" && mkdir -p "$2/var/lib/machines" && mount -o loop "$img" "$2/var/lib/machines" &&
        mkdir -p "$2/var/lib/slot-os" "$2/var/lib/machines/.backups" && ln -s /var/lib/machines/.backups "$2/var/lib/slot-os/backups"
}
th_boot "$B" unified
th_run "$B" slot-os make-base-image >/dev/null
th_run "$B" slot-os build 1 >/dev/null
th_run "$B" slot-os start 0 >/dev/null
for ((i = 0; i < rounds * 2; i++)); do
    out=$(th_run "$B" slot-os backup 0 "s$i" 2>&1)
    freeze_raw+="btrfs $(sed -n 's/.*frozen for \([0-9.]*\) ms.*/\1/p' <<<"$out" | awk '{ printf "%d", $1 * 1000 }') 0"$'\n'
done

med() { read -r m _ _ < <(stats "$1"); echo "$m"; }
cpu() { printf '%s\n' "$raw" | awk -v k="$1" '$1 == k { s += $3; n++ } END { printf "%.1f", s / n / 1e6 }'; }
row() { # LABEL KEY
    local m mi ma
    read -r m mi ma < <(stats "$2")
    printf '%-52s %8s ms (%s-%s)  cpu %5s s\n' "$1" "$m" "$mi" "$ma" "$(cpu "$2")"
}
echo "# slot: $((bytes / 1000000)) MB (du -sb), $entries entries; $rounds rounds; median (min-max) wall, mean CPU user+sys"
row "slot-os backup, first (copy + restic)" sos-first
row "tar | zstd -T0 -3 (whole tree)" tarzstd
row "restic backup (bare, first, 1 run)" bare-first
row "slot-os backup, incremental after 10 MB" sos-inc
row "restic backup (bare, incremental after 10 MB)" bare-inc
row "tar | zstd -T0 -3 again (after 10 MB)" tarzstd-inc
row "slot-os backup-restore (restic --verify + swap)" restore
row "zstd -d | tar -x + sync" untar
row "restic restore (bare) + sync" bare-restore
a=$(med sos-inc); t=$(med tarzstd-inc); f=$(med sos-first); r=$(med restore); u=$(med untar)
read -r inc _ _ < <(stats size-inc); read -r rp _ _ < <(stats size-repo); read -r pl _ _ < <(stats size-tar)
awk -v a="$a" -v t="$t" -v f="$f" -v tz="$(med tarzstd)" -v r="$r" -v u="$u" -v inc="$inc" -v pl="$pl" -v rp="$rp" -v bs="$bare_size" 'BEGIN {
    # sizes went through stats (bytes / 1000): MB = value / 1000
    printf "incremental vs tar|zstd: %.1fx faster, %.0fx smaller (%.1f MB added vs %.1f MB)\n", t / a, pl / inc, inc / 1000, pl / 1000
    printf "first backup vs tar|zstd: %.2fx the time; repository %.1f MB vs tar.zst %.1f MB (bare restic repo after all rounds %.1f MB)\n", f / tz, rp / 1000, pl / 1000, bs / 1e6
    printf "restore vs tar -x: %.2fx the time\n", r / u
}'
raw=$freeze_raw
printf '%-52s %8s ms (%s-%s)\n' "freeze, ext4 two-pass capture, slot writing" $(stats freeze 1)
printf '%-52s %8s ms (%s-%s)\n' "freeze, btrfs read-only snapshot" $(stats btrfs 1)
echo "# where the capture's time goes (ms; entries/bytes copied before and while frozen):"
printf '%s' "$report" | sed 's/"sparse":\[[^]]*\],\?//'
