#!/usr/bin/env bash
# Benchmarks (not tests) of overlay slots (issue 13), side by side with the bare tools in
# the same run, on a base image padded to about 1 GB:
#   ext4 /var/lib/machines (a test host's own root directory):
#     slot-os build 10 (overlay: one read-only version of the base + 10 empty layers)
#       vs machinectl clone x10 (a full copy each); build 10 -> 20 (10 more on the version)
#     disk used by 20 overlay slots vs 10 clones
#     slot-os start of an overlay slot vs of a copied one (NotifyReady: until booted),
#       first boot and later boots, interleaved
#     the chown fallback: an overlay root shifted by nspawn's recursive chown (what a kernel
#       without idmapped layers would need) vs idmapped layers: first start and upper size
#   xfs /var/lib/machines (a loop file, mkfs.xfs -m reflink=1):
#     machinectl clone (machined's CloneImage) vs cp -a --reflink=always, and whether the
#       clone shares extents (filefrag); slot-os build 10 with backend auto
# Usage: sudo tests/bench/overlay.sh [ROUNDS]   (release build; needs xfsprogs, ~14 GB free)
#   SLOT_OS_BENCH_BASE_MB: the base image's size (default 1000)
set -euo pipefail
rounds=${1:-3}
source "$(dirname "$0")/common.sh"
th_ensure_packages
command -v mkfs.xfs >/dev/null || apt-get install -y -q xfsprogs >/dev/null
E=ovbench
X=xfsbench
xfs_img=$(mktemp -p /var/tmp slot-os-bench-xfs.XXXXXX)
cleanup() { th_cleanup_all; rm -f "$xfs_img"; leave_own_cgroups; }
trap cleanup EXIT

# Runs shell code inside host $1 and prints its wall time in ms (timed inside, so nsenter's
# own cost is not counted).
timed() { th_sh "$1" "s=\$(date +%s%N); $2 >/dev/null 2>&1 || echo FAILED >&2; e=\$(date +%s%N); echo \$(( (e - s) / 1000 ))" | awk '{printf "%.0f\n", $1/1000}'; }
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }'; }

# The base image "slot-os" of host $1: the slot-ready test root, padded to ~1 GB with copies
# of its /usr (many small files, as a real server root has).
base_mb=${SLOT_OS_BENCH_BASE_MB:-1000}
padded_base() {
    th_copy_slot_image "$1" slot-os
    th_sh "$1" 'b=/var/lib/machines/slot-os; mkdir -p $b/opt
        i=0; while [ "$(du -sm $b | cut -f1)" -lt '"$base_mb"' ]; do i=$((i+1)); cp -a $b/usr $b/opt/bulk$i; done
        sync; echo "base image: $(du -sh $b | cut -f1), $(find $b | wc -l) entries"'
}

echo "== ext4: overlay slots vs copies ($(uname -r), load $(cut -d' ' -f1-3 /proc/loadavg))"
th_boot "$E" unified
padded_base "$E"
th_sh "$E" 'mkdir -p /etc/slot-os && printf "[storage]\nbackend = \"overlay\"\n" > /etc/slot-os/slot-os.toml'
t_build=$(timed "$E" 'slot-os build 10')
t_more=$(timed "$E" 'slot-os build 20')
t_clone=$(timed "$E" 'sync; for i in 0 1 2 3 4 5 6 7 8 9; do machinectl clone slot-os c$i; done; sync')
echo "build 10 (overlay, incl. copying the base's version): $t_build ms; machinectl clone x10: $t_clone ms; ratio $(ratio "$t_build" "$t_clone")"
echo "build 10 -> 20 (10 more overlay slots on the same version): $t_more ms; per slot $((t_more / 10)) ms vs one clone $((t_clone / 10)) ms"
th_sh "$E" 'echo "disk: base version $(du -sm /var/lib/machines/.slot-os/lower | cut -f1) MB + 20 layers $(du -sm /var/lib/machines/.slot-os/slot | cut -f1) MB; 10 clones $(du -smc /var/lib/machines/c? | tail -1 | cut -f1) MB"'

# Boot time: overlay slot00 vs copied slot c0 (a slot file naming the clone), first boots
# then later boots, interleaved.
th_sh "$E" 'printf "storage = \"copy\"\n" > /etc/slot-os/c0.toml && systemctl daemon-reload'
first_o=$(timed "$E" 'slot-os start 0'); th_run "$E" slot-os stop 0 >/dev/null
first_c=$(timed "$E" 'slot-os start c0'); th_run "$E" slot-os stop c0 >/dev/null
echo "first boot: overlay $first_o ms, copy $first_c ms, ratio $(ratio "$first_o" "$first_c")"
bo=(); bc=()
for ((r = 0; r < rounds + 2; r++)); do
    bo+=("$(timed "$E" 'slot-os start 0')"); th_run "$E" slot-os stop 0 >/dev/null
    bc+=("$(timed "$E" 'slot-os start c0')"); th_run "$E" slot-os stop c0 >/dev/null
done
mo=$(printf '%s\n' "${bo[@]}" | median); mc=$(printf '%s\n' "${bc[@]}" | median)
echo "start until booted (median of $((rounds + 2))): overlay $mo ms, copy $mc ms, ratio $(ratio "$mo" "$mc")"
th_sh "$E" 'echo "slot00 upper after $(( '"$rounds"' + 3 )) boots: $(du -sk /var/lib/machines/.slot-os/slot/slot00/upper | cut -f1) KB"'

# The chown fallback: slot19 as a privileged overlay (layers not idmapped), booted by an
# admin's .nspawn (it replaces ours) asking nspawn for a picked range and a recursive chown.
th_sh "$E" 'printf "storage = \"overlay\"\nprivileged = true\n" > /etc/slot-os/slot19.toml
    mkdir -p /etc/systemd/nspawn && printf "[Exec]\nBoot=yes\nNotifyReady=yes\nPrivateUsers=pick\n[Files]\nPrivateUsersOwnership=chown\n[Network]\nZone=slots\n" > /etc/systemd/nspawn/slot19.nspawn
    systemctl daemon-reload'
t_idmap=$(timed "$E" 'slot-os start 18')
t_chown=$(timed "$E" 'slot-os start 19')
th_sh "$E" 'echo "first start: idmapped layers '"$t_idmap"' ms, upper $(du -sm /var/lib/machines/.slot-os/slot/slot18/upper | cut -f1) MB; chown fallback '"$t_chown"' ms, upper $(du -sm /var/lib/machines/.slot-os/slot/slot19/upper | cut -f1) MB (every file copied up)"'
echo "chown fallback / idmapped first start: $(ratio "$t_chown" "$t_idmap")"
th_run "$E" slot-os stop 18 19 >/dev/null
th_destroy "$E"

echo "== xfs (reflink=1): machined's CloneImage vs cp --reflink"
th_pre_boot_hook() {
    truncate -s 12G "$xfs_img"
    mkfs.xfs -q -f -m reflink=1 "$xfs_img"
    mkdir -p "$2/var/lib/machines"
    mount -o loop "$xfs_img" "$2/var/lib/machines"
}
th_boot "$X" unified
unset -f th_pre_boot_hook
padded_base "$X"
cl=(); cp=()
for ((r = 0; r < rounds; r++)); do
    cl+=("$(timed "$X" "machinectl clone slot-os x$r; sync")")
    cp+=("$(timed "$X" "cp -a --reflink=always /var/lib/machines/slot-os /var/lib/machines/y$r; sync")")
done
m1=$(printf '%s\n' "${cl[@]}" | median); m2=$(printf '%s\n' "${cp[@]}" | median)
echo "clone of the ~1 GB base (median of $rounds): machinectl clone $m1 ms, cp -a --reflink=always $m2 ms, ratio $(ratio "$m1" "$m2")"
th_sh "$X" 'f=$(find /var/lib/machines/x0 -type f -size +1M | head -n 1)
    echo "a clone'"'"'s file shares its extents: $(filefrag -v "$f" | grep -c shared) of $(filefrag -v "$f" | grep -cE "^ +[0-9]+:") extents marked shared ($f)"
    echo "disk used on the xfs: $(df -m --output=used /var/lib/machines | tail -1) MB for the base and '"$((rounds * 2))"' clones"'
th_sh "$X" 'for d in /var/lib/machines/x* /var/lib/machines/y*; do rm -rf "$d"; done'
th_sh "$X" 'mkdir -p /etc/slot-os'
out=$(th_run "$X" slot-os build 1 2>&1 | sed -n 1,2p) # sed reads all: head would cut build off (EPIPE)
echo "slot-os build on xfs, backend auto: $out"
th_run "$X" slot-os build 0 >/dev/null
t_ov=$(timed "$X" 'printf "[storage]\nbackend = \"overlay\"\n" > /etc/slot-os/slot-os.toml; slot-os build 10')
th_run "$X" slot-os build 0 >/dev/null
t_cp=$(timed "$X" 'printf "[storage]\nbackend = \"copy\"\n" > /etc/slot-os/slot-os.toml; slot-os build 10')
echo "xfs build 10: overlay $t_ov ms, copy (CloneImage, reflinks) $t_cp ms, ratio $(ratio "$t_ov" "$t_cp")"
th_destroy "$X"
