#!/usr/bin/env bash
# End-to-end suite: boots real systemd test hosts in systemd-nspawn (tests/testhost/lib.sh)
# and runs every tests/e2e/NN-name.sh scenario in its own bash process.
#   tests/run-e2e.sh [SCENARIO...]    SCENARIO: 00-testhost, 00-testhost.sh, a path, or "00"
# Prints "ok   <scenario>: <test>" / "FAIL <scenario>: <test>: <reason>" lines; the last line
# is always "e2e: N passed, N failed". Exit 1 if anything failed. Env: tests/testhost/README.md.
set -uo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=testhost/lib.sh
source "$here/testhost/lib.sh"

total_p=0
total_f=0
summary() {
    echo "e2e: $total_p passed, $total_f failed"
    if ((total_f == 0)); then exit 0; fi
    exit 1
}
early_fail() { # MSG: a failure before any scenario ran
    echo "FAIL e2e: $*"
    total_f=$((total_f + 1))
    summary
}

if [[ "${1:-}" == -h || "${1:-}" == --help ]]; then
    sed -n '2,6p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
    exit 0
fi
[[ "$(id -u)" == 0 ]] || { echo "run-e2e.sh: must run as root (it boots systemd test hosts)" >&2; exit 2; }

# Resolve the scenarios first, so a typo fails before anything slow happens.
scenarios=()
if (($#)); then
    for s in "$@"; do
        f=
        if [[ -f "$s" ]]; then
            f=$(realpath "$s")
        elif [[ -f "$here/e2e/${s%.sh}.sh" ]]; then
            f=$here/e2e/${s%.sh}.sh
        else
            for g in "$here"/e2e/"${s%.sh}"-*.sh; do [[ -f "$g" ]] && f=$g && break; done
        fi
        [[ -n "$f" ]] || early_fail "no such scenario: $s"
        scenarios+=("$f")
    done
else
    for f in "$here"/e2e/[0-9][0-9]-*.sh; do [[ -f "$f" ]] && scenarios+=("$f"); done
fi
((${#scenarios[@]})) || early_fail "no scenarios in $here/e2e"

run_t0=$(th__now_ms)
th_ensure_packages || early_fail "installing packages failed"

# Hosts left behind by an interrupted earlier run (their owner process is gone).
mkdir -p "$TH_RUN"
for d in "$TH_RUN"/*/; do
    d=${d%/}
    [[ -d "$d/root" || -f "$d/nspawn.pid" ]] || continue
    if th__pidfile_alive "$d/owner.pid" >/dev/null; then continue; fi # a live run's host
    th__reap_stale "$d" && th__safe_rm "$d" || echo "# could not remove stale $d" >&2
done
for f in "$TH_RUN"/.owned.*; do
    [[ -e "$f" ]] || continue
    [[ -n "$(th__proc_id "${f##*.}")" ]] || rm -f "$f"
done

t0=$(th__now_ms)
rootfs=$(th_rootfs) || early_fail "building the test host rootfs failed"
echo "# rootfs: $rootfs ($(th__secs $(($(th__now_ms) - t0))))"

if [[ -z "${SLOT_OS_SKIP_BUILD:-}" ]]; then
    command -v cargo >/dev/null || PATH=$PATH:${HOME:-/root}/.cargo/bin:/root/.cargo/bin
    build=(cargo build)
    case "$TH_PROFILE" in debug | dev) ;; release) build+=(--release) ;; *) build+=(--profile "$TH_PROFILE") ;; esac
    t0=$(th__now_ms)
    (cd "$TH_REPO" && "${build[@]}") >&2 || early_fail "${build[*]} failed"
    echo "# ${build[*]}: $(th__secs $(($(th__now_ms) - t0)))"
fi
th__check_binaries || early_fail "the binaries to test are missing"

child=
results=
# shellcheck disable=SC2317  # called by trap
on_signal() {
    trap - INT TERM
    # timeout(1) passes the signal on to the scenario's process group.
    [[ -z "$child" ]] || kill -TERM "$child" 2>/dev/null
    [[ -z "$child" ]] || wait "$child" 2>/dev/null
    if [[ -n "${results:-}" && -f "$results" ]]; then
        total_p=$((total_p + $(grep -c '^ok ' "$results")))
        total_f=$((total_f + $(grep -c '^FAIL ' "$results")))
    fi
    echo "FAIL e2e: interrupted"
    total_f=$((total_f + 1))
    summary
}
trap on_signal INT TERM
trap th_cleanup_all EXIT

mkdir -p "$TH_RUN/results"
for file in "${scenarios[@]}"; do
    sname=$(basename "$file" .sh)
    results=$TH_RUN/results/$sname.txt
    done_marker=$TH_RUN/results/$sname.done
    crash_marker=$TH_RUN/results/$sname.crashed
    rm -f "$results" "$done_marker" "$crash_marker"
    : >"$results"
    echo "# scenario $sname"
    t0=$(th__now_ms)
    # shellcheck disable=SC2016  # $1/$2 are expanded by the inner bash
    TH_RESULTS=$results TH_DONE_MARKER=$done_marker TH_CRASH_MARKER=$crash_marker \
        timeout --kill-after=30 "${SLOT_OS_SCENARIO_TIMEOUT:-900}" \
        bash -c 'set -uo pipefail; source "$1"; t_run_scenario "$2"' scenario \
        "$here/testhost/lib.sh" "$file" </dev/null &
    child=$!
    wait "$child"
    rc=$?
    child=
    p=$(grep -c '^ok ' "$results")
    f=$(grep -c '^FAIL ' "$results")
    if [[ ! -e "$done_marker" ]]; then
        why="exit $rc"
        if ((rc == 124 || (rc == 137 && $(th__now_ms) - t0 >= ${SLOT_OS_SCENARIO_TIMEOUT:-900} * 1000))); then
            why="timed out after ${SLOT_OS_SCENARIO_TIMEOUT:-900}s"
        fi
        if [[ -e "$crash_marker" ]]; then # it reported its own FAIL line
            echo "# $sname: scenario process ended early ($why)"
        else
            echo "FAIL $sname: scenario process died ($why)"
            f=$((f + 1))
        fi
    fi
    echo "# $sname: $p passed, $f failed in $(th__secs $(($(th__now_ms) - t0)))"
    total_p=$((total_p + p))
    total_f=$((total_f + f))
done
echo "# total time $(th__secs $(($(th__now_ms) - run_t0))); logs: $TH_RUN/logs"
summary
