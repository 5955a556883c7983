#!/usr/bin/env bash
# End-to-end suite: each tests/e2e/NN-name.sh runs in its own bash process with
# tests/testhost/lib.sh sourced; its test_* functions run in file order after
# scenario_setup, then scenario_teardown. Last line: "e2e: N passed, N failed".
#   tests/run-e2e.sh [NN-name ...]      (default: all scenarios)
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
[ "$(id -u)" = 0 ] || { echo "run-e2e.sh: must run as root" >&2; exit 2; }

# shellcheck source=testhost/lib.sh
source "$here/testhost/lib.sh"
th_ensure_packages || exit 1
# Hosts left by an interrupted earlier run: end their recorded nspawn, remove their dirs.
for d in "$TH_RUN"/*/; do
  [ -d "$d" ] || continue
  n=$(basename "$d"); th_kill_stale "$n"; th_umount_below "${d%/}"; rm -rf "${d%/}"
done
th_rootfs >/dev/null || { echo "e2e: 0 passed, 1 failed"; exit 1; }
if [ -z "${SLOT_OS_SKIP_BUILD:-}" ]; then
  if [ "${SLOT_OS_PROFILE:-debug}" = release ]; then
    (cd "$repo" && cargo build --release --locked) || { echo "e2e: 0 passed, 1 failed"; exit 1; }
  else
    (cd "$repo" && cargo build --locked) || { echo "e2e: 0 passed, 1 failed"; exit 1; }
  fi
fi

scenarios=()
if [ $# -gt 0 ]; then
  for s in "$@"; do scenarios+=("$here/e2e/${s%.sh}.sh"); done
else
  for s in "$here"/e2e/[0-9][0-9]-*.sh; do scenarios+=("$s"); done
fi

total_p=0
total_f=0
for file in "${scenarios[@]}"; do
  sname=$(basename "$file" .sh)
  [ -f "$file" ] || { echo "FAIL $sname: no such scenario"; total_f=$((total_f + 1)); continue; }
  result=$(mktemp)
  t0=$SECONDS
  timeout --kill-after=30 "${SLOT_OS_SCENARIO_TIMEOUT:-1200}" bash -c '
    set -u
    source "$1"; source "$2"
    sname=$3; result=$4
    trap th_cleanup_all EXIT
    p=0; f=0
    tests=$(grep -oE "^test_[A-Za-z0-9_]+\(\)" "$2" | tr -d "()")
    if declare -F scenario_setup >/dev/null && ! scenario_setup; then
      for t in $tests; do echo "FAIL $sname: $t: scenario_setup failed"; f=$((f + 1)); done
      echo "$p $f" > "$result"; exit 0
    fi
    for t in $tests; do
      T_FAILED=0; T_REASON=""
      ts=$(date +%s%N)
      "$t"; rc=$?
      ms=$(( ($(date +%s%N) - ts) / 1000000 ))
      if [ "$rc" = 0 ] && [ "$T_FAILED" = 0 ]; then
        echo "ok   $sname: $t (${ms} ms)"; p=$((p + 1))
      else
        echo "FAIL $sname: $t (${ms} ms): ${T_REASON:-returned $rc}"; f=$((f + 1))
      fi
      echo "$p $f" > "$result"
    done
    if declare -F scenario_teardown >/dev/null; then scenario_teardown || true; fi
    echo "$p $f" > "$result"
  ' _ "$here/testhost/lib.sh" "$file" "$sname" "$result"
  rc=$?
  read -r p f < "$result" 2>/dev/null || { p=0; f=0; }
  rm -f "$result"
  if [ "$rc" != 0 ]; then
    echo "FAIL $sname: the scenario process ended with status $rc (timeout or crash)"
    f=$((f + 1))
  fi
  echo "--- $sname: $p passed, $f failed in $((SECONDS - t0)) s"
  total_p=$((total_p + p)); total_f=$((total_f + f))
done
echo "e2e: $total_p passed, $total_f failed"
[ "$total_f" = 0 ]
