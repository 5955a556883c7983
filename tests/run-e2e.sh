#!/usr/bin/env bash
# End-to-end suite: boots real systemd test hosts in systemd-nspawn (tests/testhost/lib.sh)
# and runs every tests/e2e/NN-name.sh scenario in its own bash process.
#   tests/run-e2e.sh [SCENARIO...]    SCENARIO: 00-testhost, 00-testhost.sh, a path, or "00"
# Prints "ok   <scenario>: <test>" / "FAIL <scenario>: <test>: <reason>" lines; the last line
# is always "e2e: N passed, N failed". Exit 1 if anything failed. A scenario with a
# "# releases: bookworm trixie" line runs once per release ("ok   30-walkthrough[trixie]: ...").
# SLOT_OS_E2E_JOBS=N runs N scenario runs at once. Env: tests/testhost/README.md.
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
    sed -n '2,8p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
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
for d in "$TH_RUN"/*/ "$TH_RUN"/hosts/*/*/; do
    d=${d%/}
    [[ -d "$d/root" || -f "$d/nspawn.pid" ]] || continue
    if th__pidfile_alive "$d/owner.pid" >/dev/null; then continue; fi # a live run's host
    th__reap_stale "$d" && th__safe_rm "$d" || echo "# could not remove stale $d" >&2
done
rmdir "$TH_RUN"/hosts/*/ 2>/dev/null || true
for f in "$TH_RUN"/.owned.*; do
    [[ -e "$f" ]] || continue
    [[ -n "$(th__proc_id "${f##*.}")" ]] || rm -f "$f"
done

# Each scenario runs once per release named in its "# releases: bookworm trixie" line
# (default: bookworm only), reported as "30-walkthrough[trixie]". SLOT_OS_TEST_RELEASES
# (space separated) limits the releases run.
inst_file=() inst_rel=() inst_label=() inst_log=()
for file in "${scenarios[@]}"; do
    sname=$(basename "$file" .sh)
    line=$(sed -n 's/^#[[:space:]]*releases:[[:space:]]*//p' "$file" | head -n 1)
    # shellcheck disable=SC2206 # a space separated list
    rels=(${line:-bookworm})
    for r in "${rels[@]}"; do
        th__check_release "$r" 2>/dev/null || early_fail "$sname: unknown release '$r' in its releases line"
        [[ -z "${SLOT_OS_TEST_RELEASES:-}" || " $SLOT_OS_TEST_RELEASES " == *" $r "* ]] || continue
        inst_file+=("$file") inst_rel+=("$r")
        if [[ -n "$line" ]]; then inst_label+=("${sname}[$r]") inst_log+=("$sname.$r"); else inst_label+=("$sname") inst_log+=("$sname"); fi
    done
done
((${#inst_file[@]})) || early_fail "no scenario runs on the releases asked for (SLOT_OS_TEST_RELEASES=${SLOT_OS_TEST_RELEASES:-})"

# Each release's root, built (once; cached) while cargo builds: debootstrap waits on the
# network and the disk, cargo on the CPU.
mkdir -p "$TH_RUN/results"
rootfs_t0=$(th__now_ms)
declare -A rootfs_pid=()
for r in $(printf '%s\n' "${inst_rel[@]}" | sort -u); do
    th_rootfs "$r" >"$TH_RUN/results/rootfs-$r.path" 2>"$TH_RUN/results/rootfs-$r.log" &
    rootfs_pid[$r]=$!
done

if [[ -z "${SLOT_OS_SKIP_BUILD:-}" ]]; then
    command -v cargo >/dev/null || PATH=$PATH:${HOME:-/root}/.cargo/bin:/root/.cargo/bin
    build=(cargo build)
    case "$TH_PROFILE" in debug | dev) ;; release) build+=(--release) ;; *) build+=(--profile "$TH_PROFILE") ;; esac
    t0=$(th__now_ms)
    (cd "$TH_REPO" && "${build[@]}") >&2 || early_fail "${build[*]} failed"
    echo "# ${build[*]}: $(th__secs $(($(th__now_ms) - t0)))"
fi
for r in "${!rootfs_pid[@]}"; do
    if ! wait "${rootfs_pid[$r]}"; then
        cat "$TH_RUN/results/rootfs-$r.log" >&2
        early_fail "building the $r test host rootfs failed"
    fi
    grep '^# built' "$TH_RUN/results/rootfs-$r.log" || true
    echo "# rootfs $r: $(cat "$TH_RUN/results/rootfs-$r.path") (ready after $(th__secs $(($(th__now_ms) - rootfs_t0))))"
done
th__check_binaries || early_fail "the binaries to test are missing"

results=
JOBS=${SLOT_OS_E2E_JOBS:-1}
[[ "$JOBS" =~ ^[1-9][0-9]*$ ]] || early_fail "SLOT_OS_E2E_JOBS must be a positive number, not '$JOBS'"
mkdir -p "$TH_RUN/results" "$TH_RUN/hosts"
declare -A running=()  # pid -> instance index
declare -A busy_file=() # file -> 1 while one of its runs is running
declare -A inst_t0=()

run_inst() { # I: the scenario run's own process (bash), with a time limit
    local i=$1 log=${inst_log[$1]}
    # shellcheck disable=SC2016  # $1/$2 are expanded by the inner bash
    TH_RESULTS=$TH_RUN/results/$log.txt TH_DONE_MARKER=$TH_RUN/results/$log.done \
        TH_CRASH_MARKER=$TH_RUN/results/$log.crashed \
        TH_RELEASE=${inst_rel[$i]} TH_SCENARIO_LABEL=${inst_label[$i]} TH_LOG_NAME=$log \
        SLOT_OS_TEST_HOSTS=$TH_RUN/hosts/$log \
        exec timeout --kill-after=30 "${SLOT_OS_SCENARIO_TIMEOUT:-900}" \
        bash -c 'set -uo pipefail; source "$1"; t_run_scenario "$2"' scenario \
        "$here/testhost/lib.sh" "${inst_file[$i]}" </dev/null
}

start_inst() { # I
    local i=$1 log=${inst_log[$1]} out
    results=$TH_RUN/results/$log.txt
    rm -f "$results" "$TH_RUN/results/$log.done" "$TH_RUN/results/$log.crashed"
    : >"$results"
    inst_t0[$i]=$(th__now_ms)
    if ((JOBS > 1)); then
        # its output is shown in one piece when it ends
        out=$TH_RUN/results/$log.out
        run_inst "$i" >"$out" 2>&1 &
    else
        echo "# scenario ${inst_label[$i]}"
        run_inst "$i" &
    fi
    running[$!]=$i
    busy_file[${inst_file[$i]}]=1
}

finish_inst() { # I RC
    local i=$1 rc=$2 log=${inst_log[$1]} label=${inst_label[$1]} p f why
    results=$TH_RUN/results/$log.txt
    if ((JOBS > 1)); then
        echo "# scenario $label"
        cat "$TH_RUN/results/$log.out"
    fi
    p=$(grep -c '^ok ' "$results")
    f=$(grep -c '^FAIL ' "$results")
    if [[ ! -e "$TH_RUN/results/$log.done" ]]; then
        why="exit $rc"
        if ((rc == 124 || (rc == 137 && $(th__now_ms) - inst_t0[$i] >= ${SLOT_OS_SCENARIO_TIMEOUT:-900} * 1000))); then
            why="timed out after ${SLOT_OS_SCENARIO_TIMEOUT:-900}s"
        fi
        if [[ -e "$TH_RUN/results/$log.crashed" ]]; then # it reported its own FAIL line
            echo "# $label: scenario process ended early ($why)"
        else
            echo "FAIL $label: scenario process died ($why)"
            f=$((f + 1))
        fi
    fi
    echo "# $label: $p passed, $f failed in $(th__secs $(($(th__now_ms) - inst_t0[$i])))"
    echo "$((($(th__now_ms) - inst_t0[$i]) / 1000))" >"$TH_RUN/results/$log.secs"
    total_p=$((total_p + p))
    total_f=$((total_f + f))
    unset "busy_file[${inst_file[$i]}]"
}

# shellcheck disable=SC2317  # called by trap
on_signal() {
    local pid i
    trap - INT TERM
    # timeout(1) passes the signal on to the scenario's process group.
    for pid in "${!running[@]}"; do kill -TERM "$pid" 2>/dev/null; done
    for pid in "${!running[@]}"; do
        wait "$pid" 2>/dev/null
        i=${running[$pid]}
        results=$TH_RUN/results/${inst_log[$i]}.txt
        total_p=$((total_p + $(grep -c '^ok ' "$results")))
        total_f=$((total_f + $(grep -c '^FAIL ' "$results")))
    done
    echo "FAIL e2e: interrupted"
    total_f=$((total_f + 1))
    summary
}
trap on_signal INT TERM
trap th_cleanup_all EXIT

# A queue of runs, JOBS at a time; two runs of one scenario never run at once (they would
# share what the scenario makes outside its hosts, e.g. 80-package's .deb).
pending=("${!inst_file[@]}")
if ((JOBS > 1)); then
    # longest first (as the last run here measured; unknown ones first): a shorter wall time
    mapfile -t pending < <(for i in "${pending[@]}"; do
        printf '%s %s\n' "$(cat "$TH_RUN/results/${inst_log[$i]}.secs" 2>/dev/null || echo 99999)" "$i"
    done | sort -s -k1,1nr | cut -d' ' -f2)
fi
((JOBS == 1)) || echo "# running ${#pending[@]} scenario runs, $JOBS at a time"
while ((${#pending[@]} || ${#running[@]})); do
    while ((${#running[@]} < JOBS)); do
        pick=
        for k in "${!pending[@]}"; do
            if [[ -z "${busy_file[${inst_file[${pending[$k]}]}]:-}" ]]; then pick=$k; break; fi
        done
        [[ -n "$pick" ]] || break
        start_inst "${pending[$pick]}"
        unset "pending[$pick]"
        pending=(${pending[@]+"${pending[@]}"})
    done
    done_pid=
    wait -n -p done_pid "${!running[@]}"
    rc=$?
    [[ -n "$done_pid" ]] || continue
    finish_inst "${running[$done_pid]}" "$rc"
    unset "running[$done_pid]"
done
echo "# total time $(th__secs $(($(th__now_ms) - run_t0))); logs: $TH_RUN/logs"
summary
