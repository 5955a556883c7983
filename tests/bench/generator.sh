#!/usr/bin/env bash
# Benchmark (not a test): slot-os-generator run time for 10, 100 and 1000 slot files,
# cold (empty /run, as at boot) and warm (files already there, as at daemon-reload).
# Compared with the time systemd's own generators take on this machine (perf-baseline.md:
# 17-22 ms each). Wall times are medians; with `perf` installed, the CPU time the process
# used (task-clock, user + system) is printed beside them: on a machine shared with other
# work it is the steadier of the two.
#
#   tests/bench/generator.sh [RUNS] [OTHER_GENERATOR]
#
# OTHER_GENERATOR (e.g. a build of an older commit) is run interleaved with this tree's
# release build on the same files, so the two can be compared in one run.
set -euo pipefail
cd "$(dirname "$0")/../.."
runs=${1:-30}
other=${2:-}
cargo build --release -q -p slot-os-generator
gens=("$PWD/target/release/slot-os-generator")
[[ -z "$other" ]] || gens+=("$(realpath "$other")")
# /run is a tmpfs on every systemd host; measure on one (ext4 adds inode-reuse stalls).
work=$(mktemp -d -p /dev/shm)
trap 'rm -rf "$work"' EXIT
have_perf=0
perf stat -x, -e task-clock true >/dev/null 2>&1 && have_perf=1

median() { sort -n | awk '{a[NR]=$1} END {printf "%.2f", (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }

# one GEN ROOT: "wall_us cpu_ms": the wall time of a plain run, and the CPU time of the
# run that follows it under perf (cpu "-" without perf). COLD=1: /run emptied before each.
one() {
  local t0 t1 cpu=-
  [[ -z "${COLD:-}" ]] || rm -rf "$2/run"
  t0=$(date +%s%N)
  SLOT_OS_ROOT=$2 "$1" "$2/run/systemd/generator"
  t1=$(date +%s%N)
  if ((have_perf)); then
    [[ -z "${COLD:-}" ]] || rm -rf "$2/run"
    cpu=$(SLOT_OS_ROOT=$2 perf stat -x, -e task-clock "$1" "$2/run/systemd/generator" 2>&1 >/dev/null | cut -d, -f1)
  fi
  echo "$(( (t1 - t0) / 1000 )) $cpu"
}

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
  declare -A cw=() cc=() ww=() wc=()
  for ((r = 0; r < runs; r++)); do
    for g in "${gens[@]}"; do
      read -r w c < <(COLD=1 one "$g" "$root"); cw[$g]+="$w "; cc[$g]+="$c "
      read -r w c < <(one "$g" "$root"); ww[$g]+="$w "; wc[$g]+="$c "
    done
  done
  nfiles=$(find "$root/run" -type f -o -type l | wc -l)
  for g in "${gens[@]}"; do
    label=this; [[ "$g" == "${gens[0]}" ]] || label=other
    printf '%5d slots (%5d files written), %-5s: cold median %7s ms (CPU %6s ms), warm median %7s ms (CPU %6s ms)\n' \
      "$n" "$nfiles" "$label" \
      "$(printf '%s\n' ${cw[$g]} | awk '{print $1/1000}' | median)" \
      "$(if ((have_perf)); then printf '%s\n' ${cc[$g]} | median; else echo -; fi)" \
      "$(printf '%s\n' ${ww[$g]} | awk '{print $1/1000}' | median)" \
      "$(if ((have_perf)); then printf '%s\n' ${wc[$g]} | median; else echo -; fi)"
  done
done
t0=$(date +%s%N); for ((r = 0; r < runs; r++)); do /bin/true; done; t1=$(date +%s%N)
printf 'process spawn floor (/bin/true): %.2f ms; load average: %s\n' \
  "$(awk -v d=$((t1 - t0)) -v r="$runs" 'BEGIN {print d/r/1e6}')" "$(cut -d' ' -f1-3 /proc/loadavg)"
