#!/usr/bin/env bash
# Benchmark (not a test): slot-os-generator run time for 10, 100 and 1000 slot files,
# cold (empty /run, as at boot) and warm (files already there, as at daemon-reload).
# Compared with the time systemd's own generators take on this machine (perf-baseline.md:
# 17-22 ms each). Usage: tests/bench/generator.sh [RUNS]
set -euo pipefail
cd "$(dirname "$0")/../.."
runs=${1:-30}
cargo build --release -q -p slot-os-generator
gen=$PWD/target/release/slot-os-generator
# /run is a tmpfs on every systemd host; measure on one (ext4 adds inode-reuse stalls).
work=$(mktemp -d -p /dev/shm)
trap 'rm -rf "$work"' EXIT

median() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }

for n in 10 100 1000; do
  root=$work/$n
  mkdir -p "$root/etc/slot-os" "$root/sys/devices/system/cpu" "$root/proc"
  echo 0-1 > "$root/sys/devices/system/cpu/online"
  grep MemTotal /proc/meminfo > "$root/proc/meminfo"
  printf '[[bridge]]\nnumber = 1\naddress = "10.0.0.1/16"\n' > "$root/etc/slot-os/slot-os.toml"
  for ((i = 0; i < n; i++)); do
    printf 'autostart = %s\ncpu_quota = "50%%"\ncpus = "0-1"\nmemory = "256M"\n[[nic]]\nnumber = 1\nbridge = 1\naddress = "10.0.%d.%d/16"\n[[bind]]\nsource = "/srv/data/%d"\ntarget = "/DATA"\n' \
      "$([ $((i % 2)) = 0 ] && echo true || echo false)" $((i / 250)) $((i % 250 + 2)) "$i" > "$root/etc/slot-os/$(printf 'slot%02d' "$i").toml"
  done
  cold=(); warm=()
  for ((r = 0; r < runs; r++)); do
    rm -rf "$root/run"
    t0=$(date +%s%N); SLOT_OS_ROOT=$root "$gen" "$root/run/systemd/generator"; t1=$(date +%s%N)
    cold+=($(( (t1 - t0) / 1000 )))
    t0=$(date +%s%N); SLOT_OS_ROOT=$root "$gen" "$root/run/systemd/generator"; t1=$(date +%s%N)
    warm+=($(( (t1 - t0) / 1000 )))
  done
  nfiles=$(find "$root/run" -type f -o -type l | wc -l)
  printf '%5d slots (%5d files written): cold median %6.2f ms, warm median %6.2f ms\n' "$n" "$nfiles" \
    "$(printf '%s\n' "${cold[@]}" | median | awk '{print $1/1000}')" \
    "$(printf '%s\n' "${warm[@]}" | median | awk '{print $1/1000}')"
done
t0=$(date +%s%N); for ((r = 0; r < runs; r++)); do /bin/true; done; t1=$(date +%s%N)
printf 'process spawn floor (/bin/true): %.2f ms\n' "$(awk -v d=$((t1 - t0)) -v r="$runs" 'BEGIN {print d/r/1e6}')"
