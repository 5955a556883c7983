#!/bin/bash
# The timed part of tests/bench/stock.sh. It runs INSIDE a test host (stock.sh copies it to
# the host's /var/tmp and runs it with th_run), so nsenter's own cost is never timed. Output:
# one line per observation on stdout (stock.sh parses them), progress on stderr:
#   KIND ROUND run RC RET_US LOAD1 LOAD5 LOAD15  the start command: exit code, wall time
#   KIND ROUND boot SLOT DT_US STATE             `systemctl -M SLOT is-system-running` first
#                                                said running/degraded (polled from the
#                                                moment the start command returned)
#   KIND ROUND addr SLOT DT_US                   the slot's host0 first had its NAT IPv4
#                                                address (polled from t0, every ~5 ms)
#   mem SLOT PART NPROC RSS PSS USS ANON CURRENT COMMS   (kB; PART all|payload)
# DT_US are microseconds since t0 (just before the start command); -1 = not within 60 s.
#
#   stock-driver.sh timing ROUNDS NAT_PREFIX SLOT...   (SLOT... = the 10-slot set; the first
#                                                       is the 1-slot case)
#   stock-driver.sh mem IDLE_S SLOT...
set -u
export LANG=C SYSTEMD_PAGER= SYSTEMD_COLORS=0

fifo=/run/stock-bench.fifo
rm -f "$fifo"
mkfifo "$fifo"
exec {sfd}<>"$fifo"
rm -f "$fifo"
# sleep without a fork (nothing is ever written to the fifo)
snooze() { read -r -t "$1" -u "$sfd" _ || :; }
now() { REPLY=${EPOCHREALTIME/[.,]/}; }

unit_cg() { printf '/sys/fs/cgroup/machine.slice/systemd-nspawn@%s.service' "$1"; }

# The slot's PID 1 as this host sees it: the only process of its init.scope (unified
# hierarchy; systemd puts itself there first thing at boot). No fork.
leader_of() {
    REPLY=
    local f
    f="$(unit_cg "$1")/payload/init.scope/cgroup.procs"
    if [[ -r "$f" ]]; then read -r REPLY 2>/dev/null <"$f" || REPLY=; fi
}

# The NAT address is there when the kernel has the prefix route it brings: a line for
# host0 with that destination in the slot's /proc/PID/net/route (no fork, no exec).
has_nat() { # LEADER
    local ifc dst rest
    while read -r ifc dst rest; do
        [[ "$ifc" == host0 && "$dst" == "$nat_hex" ]] && return 0
    done 2>/dev/null <"/proc/$1/net/route"
    return 1
}

addr_poller() { # T0 SLOT...
    local t0=$1 s l
    shift
    local -A L=()
    local pending=("$@") next
    while ((${#pending[@]})); do
        now
        if ((REPLY - t0 > 60000000)); then
            for s in "${pending[@]}"; do echo "addr $s -1"; done
            return
        fi
        next=()
        for s in "${pending[@]}"; do
            l=${L[$s]:-}
            if [[ -z "$l" ]]; then
                leader_of "$s"
                l=$REPLY
                [[ -z "$l" ]] || L[$s]=$l
            fi
            if [[ -n "$l" ]] && has_nat "$l"; then
                now
                echo "addr $s $((REPLY - t0))"
            else
                next+=("$s")
            fi
        done
        pending=(${next[@]+"${next[@]}"})
        snooze 0.005
    done
}

boot_watch() { # T0 SLOT
    local t0=$1 s=$2 st
    while :; do
        st=$(systemctl -M "$s" is-system-running 2>/dev/null)
        now
        case "$st" in
        running | degraded | maintenance | stopping)
            echo "boot $s $((REPLY - t0)) $st"
            return
            ;;
        esac
        if ((REPLY - t0 > 60000000)); then
            echo "boot $s -1 ${st:-no-answer}"
            return
        fi
        snooze 0.01
    done
}

units_of() { local s; for s in "$@"; do printf 'systemd-nspawn@%s.service\n' "$s"; done; }

# Everything stopped (ActiveState inactive or failed), the zone bridge gone (nspawn deletes
# it with its last slot: each 1-slot start is a "first slot" start), then a pause.
settle() {
    slot-os stop all >/dev/null 2>&1
    local i st
    for ((i = 0; i < 300; i++)); do
        # (one value per unit, separated by empty lines)
        st=$(systemctl show -P ActiveState $(units_of "${all[@]}") | grep -cxE 'active|activating|deactivating|reloading|refreshing')
        [[ "$st" == 0 ]] && break
        snooze 0.1
    done
    [[ "$st" == 0 ]] || echo "settle: $st slot unit(s) still not stopped" >&2
    for ((i = 0; i < 50; i++)); do
        ip link show vz-slots >/dev/null 2>&1 || break
        snooze 0.1
    done
    snooze "${BENCH_SETTLE:-2}"
}

measure() { # KIND ROUND CMD...
    local kind=$1 round=$2 slots s t0 rc ret pp l1 l5 l15 tmp=/run/stock-bench.out
    shift 2
    if [[ "$kind" == *1 ]]; then slots=("${all[0]}"); else slots=("${all[@]}"); fi
    settle
    read -r l1 l5 l15 _ </proc/loadavg
    now
    t0=$REPLY
    addr_poller "$t0" "${slots[@]}" >"$tmp.addr" &
    pp=$!
    "$@" >"$tmp.cmd" 2>&1
    rc=$?
    now
    ret=$((REPLY - t0))
    for s in "${slots[@]}"; do boot_watch "$t0" "$s" >"$tmp.boot.$s" & done
    wait
    echo "$kind $round run $rc $ret $l1 $l5 $l15"
    for s in "${slots[@]}"; do sed "s/^/$kind $round /" "$tmp.boot.$s"; done
    sed "s/^/$kind $round /" "$tmp.addr"
    if ((rc != 0)); then
        echo "$kind $round: '$*' exited $rc:" >&2
        sed 's/^/    /' "$tmp.cmd" >&2
    fi
    echo "# $kind round $round: start returned after $((ret / 1000)) ms (rc $rc, load $l1)" >&2
    rm -f "$tmp".*
}

mem_sample() { # SLOT
    local cg p k v comm part
    cg=$(unit_cg "$1")
    local cur=n/a
    [[ -r "$cg/memory.current" ]] && cur=$(<"$cg/memory.current")
    for part in all payload; do
        local n=0 rss=0 pss=0 uss=0 anon=0 comms=
        for p in $(find "$cg" -name cgroup.procs -exec cat {} + | sort -un); do
            comm=$(cat "/proc/$p/comm" 2>/dev/null) || continue
            [[ "$part" == all || "$comm" != systemd-nspawn ]] || continue
            [[ -r "/proc/$p/smaps_rollup" ]] || continue
            n=$((n + 1))
            comms+="$comm,"
            while read -r k v _; do
                case "$k" in
                Rss:) rss=$((rss + v)) ;;
                Pss:) pss=$((pss + v)) ;;
                Private_Clean: | Private_Dirty:) uss=$((uss + v)) ;;
                Anonymous:) anon=$((anon + v)) ;;
                esac
            done <"/proc/$p/smaps_rollup"
        done
        echo "mem $1 $part $n $rss $pss $uss $anon $cur ${comms%,}"
    done
}

mode=$1
shift
case "$mode" in
timing)
    rounds=$1 nat=$2
    shift 2
    all=("$@")
    # 172.17.0.0 -> the little-endian hex /proc/net/route prints: 000011AC
    IFS=. read -r a b c d <<<"${nat%/*}"
    nat_hex=$(printf '%02X%02X%02X%02X' "$d" "$c" "$b" "$a")
    n1=${all[0]#slot}
    n1=$((10#$n1))
    for ((i = 0; i < rounds; i++)); do
        # alternate which tool goes first, so neither always runs right after the other
        if ((i % 2 == 0)); then
            measure sos1 "$i" slot-os start "$n1"
            measure mc1 "$i" machinectl start "${all[0]}"
            measure sos10 "$i" slot-os start all
            measure mc10 "$i" machinectl start "${all[@]}"
        else
            measure mc1 "$i" machinectl start "${all[0]}"
            measure sos1 "$i" slot-os start "$n1"
            measure mc10 "$i" machinectl start "${all[@]}"
            measure sos10 "$i" slot-os start all
        fi
    done
    settle
    ;;
mem)
    idle=$1
    shift
    all=("$@")
    for s in "$@"; do
        st=$(timeout 120 systemctl -M "$s" is-system-running --wait 2>/dev/null)
        echo "# $s: $st" >&2
        echo "state $s $st"
    done
    read -r l1 l5 l15 _ </proc/loadavg
    echo "# all booted (load $l1); idle for ${idle}s" >&2
    sleep "$idle"
    read -r l1 l5 l15 _ </proc/loadavg
    echo "memload $l1 $l5 $l15"
    for s in "$@"; do mem_sample "$s"; done
    ;;
*)
    echo "usage: $0 timing ROUNDS NAT_PREFIX SLOT... | mem IDLE SLOT..." >&2
    exit 2
    ;;
esac
