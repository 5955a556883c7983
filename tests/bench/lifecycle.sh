#!/usr/bin/env bash
# Benchmarks (not tests) of the helper against the bare systemd tools, side by side in
# one test host, on a loop-mounted btrfs /var/lib/machines:
#   build 10            vs  machinectl clone ×10
#   start all (5 slots) vs  machinectl start of the same 5 in one call (both wait for boot:
#                           the generated .nspawn has NotifyReady=yes, so this compares the
#                           same work; stock units would return before boot)
#   list (10 slots, 5 running) vs machinectl list
# Usage: sudo tests/bench/lifecycle.sh [ROUNDS]   (release build)
set -euo pipefail
cd "$(dirname "$0")/../.."
rounds=${1:-5}
export SLOT_OS_PROFILE=release
cargo build --release -q
source tests/testhost/lib.sh
th_ensure_packages
H=bench
img=$(mktemp -p /var/tmp slot-os-bench-btrfs.XXXXXX)
th_pre_boot_hook() {
  truncate -s 8G "$img"
  mkfs.btrfs -q -f "$img"
  mkdir -p "$2/var/lib/machines"
  mount -o loop "$img" "$2/var/lib/machines"
}
cleanup() { th_cleanup_all; rm -f "$img"; }
trap cleanup EXIT
th_boot "$H" unified

ms() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", (b - a) / 1e6 }'; }
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
# Runs a shell snippet inside the host and prints its wall time in ms (timed inside,
# so nsenter's own cost is not counted).
timed() { th_sh "$H" "s=\$(date +%s%N); $1 >/dev/null 2>&1; e=\$(date +%s%N); echo \$(( (e - s) / 1000 ))" | awk '{printf "%.1f\n", $1/1000}'; }

th_run "$H" slot-os make-base-image
echo "base image: $(th_sh "$H" 'du -sh /var/lib/machines/slot-os | cut -f1'), btrfs subvolume: $(th_sh "$H" 'btrfs subvolume show /var/lib/machines/slot-os >/dev/null 2>&1 && echo yes || echo no')"

b_build=(); b_clone=()
for ((r = 0; r < rounds; r++)); do
  b_build+=("$(timed 'slot-os build 10')")
  th_run "$H" slot-os build 0 >/dev/null
  b_clone+=("$(timed 'for i in 0 1 2 3 4 5 6 7 8 9; do machinectl clone slot-os c$i; done')")
  th_sh "$H" 'for i in 0 1 2 3 4 5 6 7 8 9; do machinectl remove c$i; done'
done
mb=$(printf '%s\n' "${b_build[@]}" | median); mc=$(printf '%s\n' "${b_clone[@]}" | median)
printf 'build 10: %s ms   machinectl clone x10: %s ms   ratio %.2fx\n' "$mb" "$mc" "$(awk -v a="$mb" -v b="$mc" 'BEGIN{print a/b}')"

th_run "$H" slot-os build 10 >/dev/null
five="slot00 slot01 slot02 slot03 slot04"
s_sos=(); s_mc=()
for ((r = 0; r < rounds; r++)); do
  s_sos+=("$(timed "slot-os start $five")")
  th_run "$H" slot-os stop all >/dev/null
  s_mc+=("$(timed "machinectl start $five")")
  th_run "$H" slot-os stop all >/dev/null
done
m1=$(printf '%s\n' "${s_sos[@]}" | median); m2=$(printf '%s\n' "${s_mc[@]}" | median)
printf 'start 5 slots: slot-os %s ms   machinectl start (one call) %s ms   ratio %.2fx\n' "$m1" "$m2" "$(awk -v a="$m1" -v b="$m2" 'BEGIN{print a/b}')"

th_run "$H" slot-os start $five >/dev/null
l_sos=(); l_mc=()
for ((r = 0; r < 30; r++)); do
  l_sos+=("$(timed 'slot-os list')")
  l_mc+=("$(timed 'machinectl list')")
done
m1=$(printf '%s\n' "${l_sos[@]}" | median); m2=$(printf '%s\n' "${l_mc[@]}" | median)
printf 'list (10 slots, 5 running): slot-os %s ms   machinectl list %s ms   ratio %.2fx\n' "$m1" "$m2" "$(awk -v a="$m1" -v b="$m2" 'BEGIN{print a/b}')"
th_run "$H" slot-os stop all >/dev/null
