#!/usr/bin/env bash
# Benchmark (not a test, not run in CI): issue 11's numbers on stock-shaped test hosts, one
# per release (Debian 12 bookworm, Debian 13 trixie), side by side in the same run:
#  - start until booted and until the NAT address, 1 slot and 10 slots:
#      `slot-os start 0`   vs `machinectl start slot00`
#      `slot-os start all` vs `machinectl start slot00 ... slot09` (one call)
#    Same units either way (the generator's .nspawn has NotifyReady=yes, so both return at
#    the slots' READY=1). Each start begins with every slot stopped and the zone bridge gone.
#    "booted" = `systemctl -M SLOT is-system-running` says running (polled from the moment
#    the command returned); "address" = the slot's host0 has its NAT IPv4 address (the
#    prefix route in /proc/LEADER/net/route, polled every ~5 ms from t0).
#  - idle memory per slot (RSS/PSS/USS/anon summed over the processes of the slot unit's
#    cgroup, from /proc/PID/smaps_rollup, and memory.current if the cgroup has one) of a
#    slot from `make-base-image` of the stock host against a minbase slot (debootstrap
#    minbase as in shared/testing.md §2, made an image by `make-base-image --from-tar`).
# Interleaved rounds, alternating which tool goes first; timed inside the test host
# (tests/bench/stock-driver.sh). Prints tables with median (min-max), the ratios of the
# medians and the load average; raw lines in $SLOT_OS_TEST_RUN/bench-stock/.
#
#   sudo bash tests/bench/stock.sh [ROUNDS]      (default 5)
#   sudo bash tests/bench/stock.sh --prepare     (only build the cached roots)
#   sudo bash tests/bench/stock.sh --report      (only print the tables of the last run)
#
# Env: SLOT_OS_TEST_RELEASES (default "bookworm trixie"), BENCH_IDLE (seconds of idle
# before the memory sample, default 45: bus-activated daemons such as timedated exit after 30 s idle), BENCH_MEM_SLOTS (slots of each kind, default 3),
# BENCH_SETTLE (seconds between a stop and the next start, default 2), BENCH_SLOT_HOSTS=1
# (the stock-shaped slots' /etc/hosts gets 127.0.1.1 SLOTNAME instead of the host's name:
# see docs/notes/bench-stock.md, rsyslog on Debian 13), BENCH_OUT (where the raw lines and
# report.md go, default $SLOT_OS_TEST_RUN/bench-stock), SLOT_OS_PROFILE
# (default release; built first unless SLOT_OS_SKIP_BUILD is set), SLOT_OS_TEST_RUN, see
# tests/testhost/README.md.
set -euo pipefail
prepare_only= report_only=
case "${1:-}" in
--prepare) prepare_only=1 ;;
--report) report_only=1 ;;
esac
if [[ -n "$prepare_only$report_only" ]]; then
    export SLOT_OS_SKIP_BUILD=1
    shift
fi
rounds=${1:-5}
idle=${BENCH_IDLE:-45}
nmem=${BENCH_MEM_SLOTS:-3}
# shellcheck source=common.sh
source "$(dirname "$0")/common.sh"
read -r -a releases <<<"${SLOT_OS_TEST_RELEASES:-bookworm trixie}"
N=10
NAT=172.17.0.0/16 # slot-os's default nat_address
out=${BENCH_OUT:-$TH_RUN/bench-stock}
mkdir -p "$out"

# The minbase slot image: shared/testing.md §2's recipe (what the harness's slots were
# before test hosts became stock-shaped), with the same journal size as the stock root.
MINBASE_PACKAGES=systemd,systemd-sysv,dbus,systemd-container,iproute2,udev
minbase_key() { printf '%s\n' bench-minbase-v1 "$1" "$MINBASE_PACKAGES" | sha256sum | cut -c1-12; }
build_minbase() { # TMP RELEASE
    debootstrap --variant=minbase --include="$MINBASE_PACKAGES" "$2" "$1" ${TH_MIRROR:+"$TH_MIRROR"} || return 1
    mkdir -p "$1/etc/systemd/journald.conf.d" "$1/var/log/journal"
    printf '[Journal]\nSystemMaxUse=16M\nRuntimeMaxUse=16M\n' >"$1/etc/systemd/journald.conf.d/50-slot-os-test.conf"
    : >"$1/etc/machine-id"
    chroot "$1" apt-get clean
    rm -rf "$1"/var/lib/apt/lists/*
}
minbase_root() { # RELEASE
    local dir=$TH_CACHE/bench-minbase-$1-$(minbase_key "$1")
    th__cache_build "$dir" "minbase $1 tree (benchmark)" build_minbase "$1" || return 1
    printf '%s\n' "$dir"
}

if [[ -n "$report_only" ]]; then
    :
else
th_ensure_packages
for rel in "${releases[@]}"; do
    th__check_release "$rel"
    th_rootfs "$rel" >/dev/null
    minbase_root "$rel" >/dev/null
done
if [[ -n "$prepare_only" ]]; then
    leave_own_cgroups
    exit 0
fi
fi

img=
cleanup() {
    th_cleanup_all || true
    [[ -z "$img" ]] || rm -f "$img"
    leave_own_cgroups
}
trap cleanup EXIT

# /var/lib/machines on a loop btrfs (clones are snapshots: a fast set-up, as in start.sh).
th_pre_boot_hook() {
    truncate -s 12G "$img"
    mkfs.btrfs -q -f "$img" >/dev/null 2>&1
    mkdir -p "$2/var/lib/machines"
    mount -o loop "$img" "$2/var/lib/machines"
}

slots10=()
for ((s = 0; s < N; s++)); do slots10+=("$(printf 'slot%02d' "$s")"); done
mem_stock=() mem_min=()
for ((s = 0; s < nmem; s++)); do
    mem_stock+=("$(printf 'slot%02d' "$s")")
    mem_min+=("slot$((N + s))")
done

# ms KEY -> "median min max" (ms) of lines "KEY US" in $raw (common.sh's stats)
fmt() { # KEY -> "med (min-max)"
    local m a b
    read -r m a b < <(stats "$1")
    printf '%s (%s-%s)' "$m" "$a" "$b"
}
ratio() { # KEY_A KEY_B
    local a b
    a=$(stats "$1" | cut -d' ' -f1)
    b=$(stats "$2" | cut -d' ' -f1)
    awk -v a="$a" -v b="$b" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }'
}

run_release() {
    local rel=$1 H=bstock-$1 root sysd log t
    img=$(mktemp -p /var/tmp slot-os-bench-stock.XXXXXX)
    th_boot "$H" unified "$rel"
    root=$(th_root "$H")
    sysd=$(th_run "$H" systemctl --version | head -n 1)
    log=$out/$rel.setup.log
    th_note "$H: $sysd; setting up (log: $log)"
    {
        # the stock host's root, made slot-ready; the minbase tree the same way
        th_run "$H" slot-os make-base-image
        tar -C "$(minbase_root "$rel")" --numeric-owner --xattrs --xattrs-include='*' -cf "$root/var/tmp/minbase.tar" .
        th_run "$H" slot-os make-base-image --from-tar /var/tmp/minbase.tar --name minbase
        rm -f "$root/var/tmp/minbase.tar"
        th_run "$H" slot-os build "$N"
        for s in "${mem_min[@]}"; do
            th_run "$H" machinectl clone minbase "$s"
            systemd-id128 new >"$root/var/lib/machines/$s/etc/machine-id"
            echo "$s" >"$root/var/lib/machines/$s/etc/hostname"
        done
        if [[ -n "${BENCH_SLOT_HOSTS:-}" ]]; then
            for s in "${slots10[@]}"; do
                sed -i "s/^127\.0\.1\.1[[:space:]].*/127.0.1.1\t$s/" "$root/var/lib/machines/$s/etc/hosts"
                grep -H '^127\.0\.1\.1' "$root/var/lib/machines/$s/etc/hosts"
            done
        fi
        th_run "$H" systemctl daemon-reload
        th_sh "$H" 'du -sh --apparent-size /var/lib/machines/slot-os /var/lib/machines/minbase'
        # a first boot of each image outside the timing (first boots do one-off work)
        th_run "$H" slot-os start all
        th_run "$H" slot-os stop all
    } >"$log" 2>&1 || { cat "$log" >&2; return 1; }
    install -m 0755 tests/bench/stock-driver.sh "$root/var/tmp/stock-driver.sh"

    th_note "$H: timing, $rounds rounds"
    th_run "$H" bash /var/tmp/stock-driver.sh timing "$rounds" "$NAT" "${slots10[@]}" >"$out/$rel.timing.raw"

    th_note "$H: idle memory, ${nmem} stock-shaped and ${nmem} minbase slots"
    {
        for s in "${mem_min[@]}"; do : >"$root/etc/slot-os/$s.toml"; done
        th_run "$H" systemctl daemon-reload
        th_run "$H" slot-os start "${mem_min[@]}" # first boot, untimed
        th_run "$H" slot-os stop all
        th_run "$H" slot-os start "${mem_stock[@]}" "${mem_min[@]}"
    } >>"$log" 2>&1 || { cat "$log" >&2; return 1; }
    th_run "$H" bash /var/tmp/stock-driver.sh mem "$idle" "${mem_stock[@]}" "${mem_min[@]}" >"$out/$rel.mem.raw"
    th_run "$H" slot-os stop all >>"$log" 2>&1 || true
    echo "$sysd" >"$out/$rel.systemd"
    echo "$idle" >"$out/$rel.idle"
    if [[ -n "${BENCH_SLOT_HOSTS:-}" ]]; then
        echo "stock-shaped slots' /etc/hosts: 127.0.1.1 SLOTNAME (BENCH_SLOT_HOSTS=1)" >"$out/$rel.variant"
    else
        echo "images as make-base-image made them" >"$out/$rel.variant"
    fi
    th_destroy "$H"
    rm -f "$img"
    img=
}

report() { # RELEASE
    local rel=$1 tr=$out/$1.timing.raw mr=$out/$1.mem.raw k what
    # per start: the command's time, the last slot running, the last slot with its address
    raw=$(awk '
        $3 == "run"  { key = $1 " " $2; ret[key] = $5; rc[key] = $4 }
        $3 == "boot" { key = $1 " " $2; if ($5 < 0) bad[key] = 1; else if ($5 > boot[key]) boot[key] = $5
                       if ($6 != "running") notrun[key] = notrun[key] " " $4 ":" $6 }
        $3 == "addr" { key = $1 " " $2; if ($5 < 0) bada[key] = 1; else if ($5 > addr[key]) addr[key] = $5 }
        END { for (key in ret) { split(key, p, " ")
                print p[1] ".ret", ret[key]
                if (!(key in bad)) print p[1] ".boot", boot[key]
                if (!(key in bada)) print p[1] ".addr", addr[key] } }' "$tr")
    echo
    echo "## $rel ($(cat "$out/$rel.systemd")), $(awk '$3 == "run" { r[$2] = 1 } END { print length(r) }' "$tr") rounds, interleaved; ms: median (min-max)"
    echo
    echo "images: $(cat "$out/$rel.variant" 2>/dev/null || echo "as make-base-image made them")"
    echo
    echo "| | slot-os | machinectl | ratio slot-os/machinectl |"
    echo "|---|---|---|---|"
    for k in 1 10; do
        for what in ret boot addr; do
            case $what in
            ret) w="start command returns" ;;
            boot) w="until running (last slot)" ;;
            addr) w="until NAT address (last slot)" ;;
            esac
            echo "| $k slot(s): $w | $(fmt "sos$k.$what") | $(fmt "mc$k.$what") | $(ratio "sos$k.$what" "mc$k.$what") |"
        done
    done
    awk '$3 == "run" { print $6 }' "$tr" | sort -n | awk '{ a[NR] = $1 } END { printf "\nload average (1 min) at the start of each measurement: median %s, min %s, max %s\n", a[int((NR + 1) / 2)], a[1], a[NR] }'
    awk '$3 == "run" && $4 != 0 { n++ } $3 == "boot" && ($5 < 0 || $6 != "running") { b = b " " $1 "/" $2 "/" $4 ":" $6 }
         $3 == "addr" && $5 < 0 { a = a " " $1 "/" $2 "/" $4 }
         END { if (n) print "FAILED start commands: " n; if (b) print "not running:" b; if (a) print "no NAT address within 60 s:" a }' "$tr"
    echo
    echo "idle memory per slot after $(cat "$out/$rel.idle")s idle (median over ${nmem} slots of each image; all = with the slot's systemd-nspawn, payload = without; $(awk '$1 == "memload" { print "load " $2 " " $3 " " $4 }' "$mr"))"
    echo
    echo "| image | part | processes | RSS | PSS | USS | anon | memory.current |"
    echo "|---|---|---|---|---|---|---|---|"
    awk -v ns="${nmem}" -v n="$N" '
        function med(arr, c,   i, j, t) { for (i = 1; i <= c; i++) for (j = i + 1; j <= c; j++) if (arr[j] < arr[i]) { t = arr[i]; arr[i] = arr[j]; arr[j] = t }
                                          return (c % 2) ? arr[(c + 1) / 2] : (arr[c / 2] + arr[c / 2 + 1]) / 2 }
        function mib(kb) { return sprintf("%.1f MiB", kb / 1024) }
        $1 == "mem" { kind = (substr($2, 5) + 0 < n) ? "stock" : "minbase"; k = kind SUBSEP $3; c[k]++
            np[k, c[k]] = $4; rss[k, c[k]] = $5; pss[k, c[k]] = $6; uss[k, c[k]] = $7; anon[k, c[k]] = $8; cur = $9 }
        function col(a, k,   i, t) { for (i = 1; i <= c[k]; i++) t[i] = a[k, i]; return med(t, c[k]) }
        END {
            split("stock minbase", kinds, " "); split("all payload", parts, " ")
            for (pi = 1; pi <= 2; pi++) for (ki = 1; ki <= 2; ki++) {
                k = kinds[ki] SUBSEP parts[pi]; if (!c[k]) continue
                v[ki, 1] = col(rss, k); v[ki, 2] = col(pss, k); v[ki, 3] = col(uss, k); v[ki, 4] = col(anon, k)
                printf "| %s | %s | %s | %s | %s | %s | %s | %s |\n", kinds[ki], parts[pi], col(np, k), mib(v[ki, 1]), mib(v[ki, 2]), mib(v[ki, 3]), mib(v[ki, 4]), cur
                if (ki == 2 && v[2, 1] > 0) printf "| ratio stock/minbase | %s | | %.2f | %.2f | %.2f | %.2f | |\n", parts[pi], v[1, 1] / v[2, 1], v[1, 2] / v[2, 2], v[1, 3] / v[2, 3], v[1, 4] / v[2, 4]
            } }' "$mr"
    awk -v n="$N" '$1 == "mem" && $3 == "payload" { num = substr($2, 5) + 0; k = (num < n) ? "stock" : "minbase"; if (!(k in seen)) { seen[k] = 1; print k " processes: " $10 } }' "$mr"
    awk '$1 == "state" && $3 != "running" { print "memory slot not running: " $2 " " $3 }' "$mr"
}

if [[ -z "$report_only" ]]; then
    for rel in "${releases[@]}"; do run_release "$rel"; done
fi
{
    echo "# tests/bench/stock.sh, $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) CPUs"
    for rel in "${releases[@]}"; do report "$rel"; done
} | tee "$out/report.md"
