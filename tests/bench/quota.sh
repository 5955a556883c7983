#!/usr/bin/env bash
# Benchmark (not a test, not run in CI): the cost of disk quotas (issue 13), side by side
# with the bare tools in the same run.
#  1. Project IDs on an existing tree (what the first `resource -d` on an ext4/xfs slot
#     does): the helper's walk (storage::quota::project::tag_tree, run through an ignored
#     test of the release build) against `chattr -R -p ID +P` and `xfs_quota -x -c 'project
#     -s'`, interleaved, on a loop xfs (this machine's kernel has no ext4 quota support, and
#     so mounts no ext4 with the `project` feature; xfs keeps project IDs without quota
#     support, so the quota files' own updates are not in these numbers: the VM tier's log
#     has a real ext4 one, under emulation). Trees of 10k and 50k files shaped like a root
#     file system (8 files per directory). Needs xfsprogs.
#  2. `slot-os resource -d` (validate, persist, set, daemon-reload) against the bare
#     `btrfs qgroup limit`, and `slot-os disk-apply` (what every slot start runs) with and
#     without a limit, in a test host whose machines dir is a loop btrfs.
#
#   sudo bash tests/bench/quota.sh [ROUNDS] [RELEASE]     (defaults: 5, bookworm)
set -euo pipefail
rounds=${1:-5}
rel=${2:-bookworm}
# shellcheck source=common.sh
source "$(dirname "$0")/common.sh"
H=bquota
work=/var/tmp/slot-os-bench-quota-$$
cleanup() {
    th_cleanup_all || true
    umount "$work/mnt" 2>/dev/null || true
    rm -rf --one-file-system -- "$work"
    leave_own_cgroups
}
trap cleanup EXIT
mkdir -p "$work/mnt"

# ---- 1. the walk
cargo test --release -q -p slot-os --lib --no-run 2>/dev/null
truncate -s 2G "$work/xfs.img"
mkfs.xfs -q -f "$work/xfs.img"
mount -o loop "$work/xfs.img" "$work/mnt"
# tree DIR N: N files, 8 per directory, directories 3 levels deep
tree() {
    local d=$1 n=$2 i
    for ((i = 0; i < n; i++)); do
        if ((i % 8 == 0)); then mkdir -p "$d/$((i / 512))/$((i / 64 % 8))/$((i / 8 % 8))"; fi
        printf 'x' >"$d/$((i / 512))/$((i / 64 % 8))/$((i / 8 % 8))/f$i"
    done
}
raw=""
for n in 10000 50000; do
    tree "$work/mnt/t$n" "$n"
    sync
    for ((r = 0; r < rounds; r++)); do
        id=$((2000000000 + r + 1))
        # the helper's walk, then chattr with another ID (each changes every inode)
        line=$(SLOT_OS_BENCH_TREE=$work/mnt/t$n SLOT_OS_BENCH_ID=$id \
            cargo test --release -q -p slot-os --lib -- --ignored --exact \
            storage::quota::project::tests::bench_tag_tree --nocapture 2>/dev/null | grep '^walk ')
        raw+="sos$n ${line#walk }"$'\n'
        s=$EPOCHREALTIME
        chattr -R -p $((id + 100)) +P "$work/mnt/t$n" 2>/dev/null || true
        e=$EPOCHREALTIME
        raw+="chattr$n $((${e/./} - ${s/./}))"$'\n'
        s=$EPOCHREALTIME
        xfs_quota -x -c "project -s -p $work/mnt/t$n $((id + 200))" "$work/mnt" >/dev/null
        e=$EPOCHREALTIME
        raw+="xfsq$n $((${e/./} - ${s/./}))"$'\n'
    done
done
echo "# 1. project IDs on every inode of a tree (xfs, warm cache), $rounds rounds; ms: median min max"
for n in 10000 50000; do
    printf '%-44s %s\n' "helper walk, $n files" "$(stats sos$n 1)"
    printf '%-44s %s\n' "chattr -R -p ID +P, $n files" "$(stats chattr$n 1)"
    printf '%-44s %s\n' "xfs_quota project -s, $n files" "$(stats xfsq$n 1)"
done
umount "$work/mnt"

# ---- 2. resource -d and disk-apply against btrfs qgroup limit
th_pre_boot_hook() { btrfs_slot_images "$2" "$work/btrfs.img" 2; }
th_boot "$H" unified "$rel"
unset -f th_pre_boot_hook
th_sh "$H" 'mkdir -p /etc/slot-os && : > /etc/slot-os/slot00.toml && : > /etc/slot-os/slot01.toml &&
    systemctl daemon-reload && slot-os resource -d 4G 0 >/dev/null'
raw=$(th_run "$H" bash -c '
    t() { local k=$1; shift; local s=$EPOCHREALTIME; "$@" >/dev/null 2>&1 || echo "FAILED: $*" >&2; local e=$EPOCHREALTIME; echo "$k $(( ${e/./} - ${s/./} ))"; }
    for ((i = 0; i < $1; i++)); do
        t sosd slot-os resource -d $((3000 + i))M 0
        t btrfs btrfs qgroup limit $((3000 + i))M /var/lib/machines/slot00
        t apply slot-os disk-apply slot00
        t apply0 slot-os disk-apply slot01
        t true /bin/true
    done' _ "$((rounds * 4))")
echo "# 2. $rel test host, btrfs, $((rounds * 4)) rounds, interleaved; ms: median min max"
printf '%-44s %s\n' "slot-os resource -d SIZE 0" "$(stats sosd 1)"
printf '%-44s %s\n' "btrfs qgroup limit SIZE PATH" "$(stats btrfs 1)"
printf '%-44s %s\n' "slot-os disk-apply (a limit: set again)" "$(stats apply 1)"
printf '%-44s %s\n' "slot-os disk-apply (no limit)" "$(stats apply0 1)"
printf '%-44s %s\n' "/bin/true" "$(stats true 2)"
