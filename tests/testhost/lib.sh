# shellcheck shell=bash
# tests/testhost/lib.sh - boot throw-away systemd "test hosts" in systemd-nspawn and run
# end-to-end scenarios in them. Sourced by tests/run-e2e.sh and by every tests/e2e/NN-*.sh.
# Safe under `set -euo pipefail`. See tests/testhost/README.md.
#
# Layout:  $SLOT_OS_TEST_CACHE/base-<release>-<key>/  debootstrapped Debian tree (read-only use)
#          $SLOT_OS_TEST_CACHE/rootfs-<key>/       stock-shaped test host root made from it
#          $SLOT_OS_TEST_HOSTS/<host>/root/        the test host's root dir (a copy of the cache)
#          $SLOT_OS_TEST_HOSTS/<host>/console.log  nspawn + systemd console output (all boots)
#          $SLOT_OS_TEST_HOSTS/<host>/{nspawn,leader,owner}.pid, mode, release, netns, install.log
#          $SLOT_OS_TEST_RUN/logs/<scenario>/<test>.log   captured output of each test
#          (SLOT_OS_TEST_HOSTS defaults to SLOT_OS_TEST_RUN; the runner gives each scenario
#          run its own, so two can run at once with the same host names.)

if [[ -n "${TH_LIB_LOADED:-}" ]]; then return 0; fi
TH_LIB_LOADED=1

TH_LIB_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
TH_REPO=${TH_REPO:-$(cd "$TH_LIB_DIR/../.." && pwd)}
TH_CACHE=${SLOT_OS_TEST_CACHE:-/var/cache/slot-os-test}
TH_RUN=${SLOT_OS_TEST_RUN:-/var/tmp/slot-os-test}
TH_PROFILE=${SLOT_OS_PROFILE:-debug}
TH_BOOT_TIMEOUT=${SLOT_OS_TEST_BOOT_TIMEOUT:-90}
TH_POWEROFF_TIMEOUT=${SLOT_OS_TEST_POWEROFF_TIMEOUT:-30}
# Empty: debootstrap picks its own default mirror (we name none).
TH_MIRROR=${SLOT_OS_TEST_MIRROR:-}
# The release th_boot boots unless told otherwise (th_boot's 3rd argument, TH_RELEASE).
TH_RELEASE=${TH_RELEASE:-bookworm}
TH_RELEASES=(bookworm trixie)
# shellcheck disable=SC2034 # old name, kept for scenarios that read it
TH_SUITE=$TH_RELEASE
TH_HOSTS=${SLOT_OS_TEST_HOSTS:-$TH_RUN}
# Bump when the debootstrap step changes in a way the hash below does not see.
TH_ROOTFS_RECIPE=slot-os-testhost-rootfs-v2
TH_HOST_PACKAGES=(systemd-container debootstrap dbus iproute2 btrfs-progs debian-archive-keyring iputils-ping)
# What the tests need in every host (and slot image made from it) ...
TH_ROOTFS_PACKAGES=(systemd systemd-sysv dbus systemd-container iproute2 udev iputils-ping procps python3 python3-apt
    btrfs-progs iptables kmod less zstd attr restic)
# ... and what makes it look like a stock Debian server (tests/testhost/README.md): the host's
# NIC managed by ifupdown, sshd with its own host keys, cron, rsyslog. systemd-networkd comes
# with the systemd package (Debian 12 and 13) and stays disabled, as Debian ships it.
TH_STOCK_PACKAGES=(ifupdown openssh-server cron rsyslog logrotate netbase)
declare -A TH_STOCK_RELEASE_PACKAGES=(
    # The DHCP client ifupdown uses: ISC's on Debian 12; Debian 13's installer uses dhcpcd.
    [bookworm]="isc-dhcp-client"
    [trixie]="dhcpcd-base"
)
# The host's own NIC (named as on a typical VM/server), its static address and the address of
# the "upstream" network namespace it is cabled to (TEST-NET-1, RFC 5737: never routed).
TH_NIC=enp1s0
TH_NIC_ADDR=192.0.2.10/24
TH_UPSTREAM_ADDR=192.0.2.1
# Units allowed to have failed when a stock host has booted: systemd-remount-fs cannot find
# the fstab's UUID= root in a container (testing.md §7). Any other failed unit fails the boot.
if ! declare -p TH_ALLOWED_FAILED_UNITS >/dev/null 2>&1; then
    TH_ALLOWED_FAILED_UNITS=(systemd-remount-fs.service)
fi
# Extra packages for the rootfs (comma or space separated); they change the cache key.
if [[ -n "${SLOT_OS_TEST_EXTRA_PACKAGES:-}" ]]; then
    # shellcheck disable=SC2206
    TH_ROOTFS_PACKAGES+=(${SLOT_OS_TEST_EXTRA_PACKAGES//,/ })
fi
# Scenarios may add systemd-nspawn arguments for the hosts they boot (kept across th_reboot).
if ! declare -p TH_NSPAWN_ARGS >/dev/null 2>&1; then TH_NSPAWN_ARGS=(); fi
TH_ENV=(PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 HOME=/root SYSTEMD_PAGER= SYSTEMD_COLORS=0
    SYSTEMD_LOG_COLOR=0 TERM=dumb)
# Hosts booted by this shell (and its subshells: $$ is the same there) are listed in this file.
TH_OWNED_FILE="$TH_RUN/.owned.$$"

# ---------------------------------------------------------------------------------------------
# small internals

th__now_ms() { local t=${EPOCHREALTIME/[.,]/}; printf '%s\n' "$((t / 1000))"; }
th__secs() { # MS -> "1.2s"
    printf '%d.%ds' "$(($1 / 1000))" "$((($1 % 1000) / 100))"
}
th__die() { printf 'testhost: %s\n' "$*" >&2; return 1; }

# th_note MSG: a "# ..." progress line that is always shown (also while a test's output is
# captured into its log).
th_note() {
    if [[ -n "${TH_OUT_FD:-}" ]] && { true >&"$TH_OUT_FD"; } 2>/dev/null; then
        printf '# %s\n' "$*" >&"$TH_OUT_FD"
    else
        printf '# %s\n' "$*" >&2
    fi
    # and into the captured log, for context
    if [[ -n "${TH_IN_TEST:-}" ]]; then printf '# %s\n' "$*"; fi
}

th__check_name() {
    [[ "${1:-}" =~ ^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$ ]] || th__die "bad name '${1:-}' (use [A-Za-z0-9_.-])"
}

# "PID STARTTIME" of a process; empty if gone or a zombie.
th__proc_id() {
    local pid=$1 stat rest
    [[ "$pid" =~ ^[0-9]+$ ]] || return 0
    stat=$(cat "/proc/$pid/stat" 2>/dev/null) || return 0
    rest=${stat##*) }
    # shellcheck disable=SC2086
    set -- $rest
    [[ "${1:-}" != Z && "${1:-}" != X ]] || return 0
    printf '%s %s\n' "$pid" "${20:-}"
}
th__ppid() {
    local stat
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    stat=${stat##*) }
    # shellcheck disable=SC2086
    set -- $stat
    printf '%s\n' "$2"
}

# th__pidfile_alive FILE: prints the PID recorded in FILE if that very process still runs.
th__pidfile_alive() {
    local f=$1 rec pid
    [[ -s "$f" ]] || return 1
    rec=$(cat "$f" 2>/dev/null) || return 1
    pid=${rec%% *}
    [[ -n "$pid" && "$(th__proc_id "$pid")" == "$rec" ]] || return 1
    printf '%s\n' "$pid"
}

th__record_pid() { th__proc_id "$1" >"$2"; }

th__self_id() { th__proc_id "$$"; }

th__own_add() {
    mkdir -p "$TH_RUN"
    grep -qxF -- "$1" "$TH_OWNED_FILE" 2>/dev/null || printf '%s\n' "$1" >>"$TH_OWNED_FILE"
}
th__own_del() {
    [[ -f "$TH_OWNED_FILE" ]] || return 0
    local rest
    rest=$(grep -vxF -- "$1" "$TH_OWNED_FILE" || true)
    if [[ -n "$rest" ]]; then printf '%s\n' "$rest" >"$TH_OWNED_FILE"; else rm -f "$TH_OWNED_FILE"; fi
}

# Mount points at or below DIR (deepest first), from our mount namespace.
th__mounts_below() {
    local dir=$1
    awk -v d="$dir" '{
        m = $5; gsub(/\\040/, " ", m); gsub(/\\011/, "\t", m); gsub(/\\012/, "\n", m); gsub(/\\134/, "\\", m)
        if (m == d || index(m, d "/") == 1) print m
    }' /proc/self/mountinfo | sort -r
}

# th__safe_rm DIR: unmount whatever is mounted below DIR, then remove it without crossing
# into other file systems. Only for dirs below $TH_RUN or $TH_CACHE.
th__safe_rm() {
    local dir=$1 m
    [[ -e "$dir" || -L "$dir" ]] || return 0
    dir=$(realpath -s -- "$dir")
    case "$dir" in
    "$TH_RUN"/?* | "$TH_HOSTS"/?* | "$TH_CACHE"/?*) ;;
    *) th__die "refusing to remove '$dir' (not below $TH_RUN or $TH_CACHE)"; return 1 ;;
    esac
    while IFS= read -r m; do
        [[ -n "$m" ]] || continue
        umount -- "$m" 2>/dev/null || umount -l -- "$m" 2>/dev/null || true
    done < <(th__mounts_below "$dir")
    rm -rf --one-file-system -- "$dir"
}

th__ensured=
# th_ensure_packages: install what the machine running the tests needs (idempotent).
th_ensure_packages() {
    [[ -z "$th__ensured" ]] || return 0
    local p missing=()
    for p in "${TH_HOST_PACKAGES[@]}"; do
        [[ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)" == "install ok installed" ]] ||
            missing+=("$p")
    done
    if ((${#missing[@]})); then
        th_note "installing on this machine: ${missing[*]}"
        # Only what is listed; never systemd-resolved (see shared/testing.md).
        DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 update -qq >&2
        DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -qq \
            --no-install-recommends "${missing[@]}" >&2
    fi
    th__ensure_limits
    th__ensured=1
}

# Every test host and slot on this machine shares its kernel, and their inotify instances and
# watches are all charged to root (issue 11: Debian's 128 instances let 16 slots boot, the
# rest time out). With several hosts at once (SLOT_OS_E2E_JOBS, other suites) and scenarios
# that boot 80 slots (76-scale), the machine running the tests gets what the package ships
# for a real host (conf/sysctl.d/60-slot-os.conf), never less than it has.
th__ensure_limits() {
    local key f want cur
    for key in max_user_instances max_user_watches; do
        f=/proc/sys/fs/inotify/$key
        want=$(sed -n "s/^fs\.inotify\.$key *= *//p" "$TH_REPO/conf/sysctl.d/60-slot-os.conf")
        cur=$(cat "$f" 2>/dev/null) || continue
        [[ -n "$want" ]] && ((cur < want)) || continue
        if printf '%s\n' "$want" >"$f" 2>/dev/null; then
            th_note "fs.inotify.$key: $cur -> $want on this machine (test hosts and slots share it)"
        else
            th_note "fs.inotify.$key is $cur and cannot be raised: many slots at once will time out"
        fi
    done
}

# ---------------------------------------------------------------------------------------------
# the cached root file systems: one per release, in two steps (a debootstrapped tree, then the
# stock-server shape on a copy of it), so that editing the shape does not debootstrap again.

th__check_release() {
    local r
    for r in "${TH_RELEASES[@]}"; do [[ "${1:-}" != "$r" ]] || return 0; done
    th__die "unknown release '${1:-}' (known: ${TH_RELEASES[*]})"
}

# th__packages RELEASE: the --include list for RELEASE, one line.
th__packages() {
    # shellcheck disable=SC2086 # the release's list is space separated on purpose
    printf '%s\n' "${TH_ROOTFS_PACKAGES[*]} ${TH_STOCK_PACKAGES[*]} ${TH_STOCK_RELEASE_PACKAGES[$1]:-}"
}

# Everything done to the debootstrapped tree to make it look like a stock Debian server. Its
# source text is part of the cache key, so editing it builds a new cache. Only what an
# installed server has, plus what the harness itself needs (each says why).
th__rootfs_setup() {
    local r=$1 rel=$2
    echo debian >"$r/etc/hostname" # th_boot names each host
    printf '127.0.0.1\tlocalhost\n127.0.1.1\tdebian\n\n::1\tlocalhost ip6-localhost ip6-loopback\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n' \
        >"$r/etc/hosts"
    # Harness: every copy gets its own machine-id (th_boot, th_copy_slot_image), as an
    # installed server has its own.
    : >"$r/etc/machine-id"
    rm -f "$r/var/lib/dbus/machine-id"
    mkdir -p "$r/var/lib/dbus"
    ln -s /etc/machine-id "$r/var/lib/dbus/machine-id"
    # The installer's network configuration for one wired NIC, with a static address (the
    # test host's network namespace has no DHCP server). The installer writes
    # "allow-hotplug", which ifup@.service acts on when udev reports the NIC; udev does not
    # run in a container, so the NIC is "auto" and networking.service brings it up.
    cat >"$r/etc/network/interfaces" <<EOF2
# This file describes the network interfaces available on your system
# and how to activate them. For more information, see interfaces(5).

source /etc/network/interfaces.d/*

# The loopback network interface
auto lo
iface lo inet loopback

# The primary network interface
auto $TH_NIC
iface $TH_NIC inet static
	address $TH_NIC_ADDR
	gateway $TH_UPSTREAM_ADDR
EOF2
    # The installer's fstab: root and swap by UUID (fixed ones: no such disks exist here).
    cat >"$r/etc/fstab" <<'EOF2'
# /etc/fstab: static file system information.
#
# <file system> <mount point>   <type>  <options>       <dump>  <pass>
# / was on /dev/vda1 during installation
UUID=5d0c4d7e-3f4a-4a8e-9f61-2b7c1e0a9d11 /               ext4    errors=remount-ro 0       1
# swap was on /dev/vda5 during installation
UUID=0b9e6f2c-8d3a-4c5b-a7e1-6f4d2c8b3a90 none            swap    sw              0       0
EOF2
    # systemd-networkd ships disabled on Debian; make sure nothing above changed that.
    [[ "$(systemctl --root="$r" is-enabled systemd-networkd.service 2>/dev/null)" == disabled ]] ||
        { echo "systemd-networkd is not disabled in the $rel tree"; return 1; }
    # Harness: apt's daily timers would take the dpkg lock (and try the network) while a
    # test installs a package; a server's admin schedules them, a test host has no use.
    systemctl --root="$r" mask apt-daily.timer apt-daily-upgrade.timer >/dev/null 2>&1
    # Harness: a small journal (it is persistent), and smaller, fewer files for faster copies
    # (every test host and slot image is one): no docs, man pages or translations, now or
    # from later dpkg installs (80-package removes this for its host).
    mkdir -p "$r/etc/systemd/journald.conf.d" "$r/var/log/journal"
    printf '[Journal]\nSystemMaxUse=16M\nRuntimeMaxUse=16M\n' \
        >"$r/etc/systemd/journald.conf.d/50-slot-os-test.conf"
    cat >"$r/etc/dpkg/dpkg.cfg.d/50-slot-os-test-nodoc" <<'EOF2'
path-exclude=/usr/share/doc/*
path-include=/usr/share/doc/*/copyright
path-exclude=/usr/share/man/*
path-exclude=/usr/share/info/*
path-exclude=/usr/share/locale/*
path-include=/usr/share/locale/locale.alias
EOF2
    find "$r/usr/share/doc" -mindepth 1 ! -type d ! -name copyright -delete
    find "$r/usr/share/doc" -mindepth 1 -type d -empty -delete
    find "$r/usr/share/man" "$r/usr/share/info" -mindepth 1 -delete
    find "$r/usr/share/locale" -mindepth 1 -maxdepth 1 ! -name locale.alias -exec rm -rf {} +
    chroot "$r" apt-get clean
    rm -rf "$r"/var/lib/apt/lists/* "$r"/var/cache/apt/*.bin "$r"/var/log/*.log "$r"/var/log/apt/*
    mkdir -p "$r/var/lib/apt/lists/partial" "$r/var/lib/machines"
}

th__base_key() { # RELEASE
    printf '%s\n' "$TH_ROOTFS_RECIPE" "$1" "$(th__packages "$1")" | sha256sum | cut -c1-12
}
th__rootfs_key() { # [RELEASE]
    local rel=${1:-$TH_RELEASE}
    {
        th__base_key "$rel"
        declare -f th__rootfs_setup
        printf '%s\n' "$TH_NIC" "$TH_NIC_ADDR" "$TH_UPSTREAM_ADDR"
    } | sha256sum | cut -c1-12
}

# th__cache_build DIR WHAT BUILD-FN ARGS...: make DIR (once, under a lock) by running
# BUILD-FN TMPDIR ARGS...; a half-built tree is never seen under DIR.
th__cache_build() {
    local dir=$1 what=$2 fn=$3 lockfd tmp log t0 d rc=0
    shift 3
    [[ ! -d "$dir" ]] || return 0
    mkdir -p "$TH_CACHE" || return 1
    exec {lockfd}>"$dir.lock" || return 1
    flock "$lockfd" || { exec {lockfd}>&-; return 1; }
    if [[ ! -d "$dir" ]]; then
        # We hold the lock: any build dir for this key is from an interrupted build.
        for d in "$TH_CACHE/.build-${dir##*/}".*; do
            if [[ -e "$d" ]]; then th__safe_rm "$d" || true; fi
        done
        tmp=$TH_CACHE/.build-${dir##*/}.$$
        log=$dir.build.log
        t0=$(th__now_ms)
        # Notes to stderr: callers capture stdout, which is the path alone.
        th_note "building $what: $dir (log: $log)" >&2
        "$fn" "$tmp" "$@" >"$log" 2>&1 || rc=$?
        if ((rc != 0)); then
            tail -n 30 "$log" >&2 || true
            th__safe_rm "$tmp" || true
            exec {lockfd}>&-
            th__die "building $what failed (log: $log)"
            return 1
        fi
        mv -T -- "$tmp" "$dir" || { exec {lockfd}>&-; return 1; }
        th_note "built $what in $(th__secs $(($(th__now_ms) - t0))) ($(du -sh "$dir" | cut -f1))" >&2
    fi
    exec {lockfd}>&-
}

th__build_base() { # TMP RELEASE
    local pkgs
    pkgs=$(th__packages "$2")
    pkgs=${pkgs//  / }
    pkgs=${pkgs% }
    debootstrap --variant=minbase --include="${pkgs// /,}" "$2" "$1" ${TH_MIRROR:+"$TH_MIRROR"}
}

th__build_rootfs() { # TMP RELEASE BASE
    cp -a --reflink=auto -- "$3" "$1" && th__rootfs_setup "$1" "$2"
}

# th_rootfs [RELEASE]: print the path of the cached stock-shaped root of RELEASE (default
# $TH_RELEASE), building it first if missing.
th_rootfs() {
    local rel=${1:-$TH_RELEASE} base dir
    th__check_release "$rel" || return 1
    base=$TH_CACHE/base-$rel-$(th__base_key "$rel")
    dir=$TH_CACHE/rootfs-$rel-$(th__rootfs_key "$rel")
    if [[ -d "$dir" ]]; then printf '%s\n' "$dir"; return 0; fi
    th_ensure_packages || return 1
    th__cache_build "$base" "Debian $rel tree (debootstrap)" th__build_base "$rel" || return 1
    th__cache_build "$dir" "stock-shaped $rel root" th__build_rootfs "$rel" "$base" || return 1
    printf '%s\n' "$dir"
}

# Give a root dir its own identity.
th__set_identity() {
    local root=$1 name=$2 id
    id=$(systemd-id128 new 2>/dev/null) || id=$(tr -d '-' </proc/sys/kernel/random/uuid)
    printf '%s\n' "$id" >"$root/etc/machine-id" || return 1
    printf '%s\n' "$name" >"$root/etc/hostname" || return 1
    # as the installer writes it: the host's own name on 127.0.1.1
    if [[ -f "$root/etc/hosts" && ! -L "$root/etc/hosts" ]]; then
        sed -i "s/^127\.0\.1\.1[[:space:]].*/127.0.1.1\t$name/" "$root/etc/hosts" || return 1
    fi
    if [[ -e "$root/var/lib/dbus/machine-id" && ! -L "$root/var/lib/dbus/machine-id" ]]; then
        rm -f "$root/var/lib/dbus/machine-id"
        ln -s /etc/machine-id "$root/var/lib/dbus/machine-id"
    fi
}

# th__slot_ready IMAGE_ROOT: what a slot-ready image made from a stock host root has (what
# `make-base-image` is to produce, issue 11): none of the host's fstab entries, no ifupdown
# NIC (a slot has host0), networkd on (DHCP on host0, systemd's 80-container-host0.network),
# its own SSH host keys. th_copy_slot_image gives tests such images; tests of
# make-base-image itself use the real command.
th__slot_ready() {
    local r=$1
    printf '# slot image: no file systems of its own\n' >"$r/etc/fstab" || return 1
    if [[ -d "$r/etc/network" ]]; then
        printf 'source /etc/network/interfaces.d/*\n\nauto lo\niface lo inet loopback\n' \
            >"$r/etc/network/interfaces" || return 1
    fi
    systemctl --root="$r" enable systemd-networkd.service >/dev/null 2>&1 || return 1
    systemctl --root="$r" disable systemd-networkd-wait-online.service >/dev/null 2>&1 || true
    rm -f "$r"/etc/ssh/ssh_host_*
    if [[ -d "$r/etc/ssh" ]]; then chroot "$r" ssh-keygen -q -A >/dev/null || return 1; fi
}

# ---------------------------------------------------------------------------------------------
# test hosts

th_root() { th__check_name "${1:-}" && printf '%s\n' "$TH_HOSTS/$1/root"; }

# th_leader NAME: PID (in our PID namespace) of the host's PID 1.
th_leader() {
    th__check_name "${1:-}" || return 1
    th__pidfile_alive "$TH_HOSTS/$1/leader.pid" || th__die "test host '$1' is not running"
}

th__running() { th__pidfile_alive "$TH_HOSTS/$1/nspawn.pid" >/dev/null; }

# End processes recorded for a host dir that is not ours (left over from a crashed run).
th__reap_stale() {
    local dir=$1 owner pid
    if owner=$(th__pidfile_alive "$dir/owner.pid"); then
        if [[ "$(cat "$dir/owner.pid")" != "$(th__self_id)" ]]; then
            th__die "$dir is in use by running test process $owner; use another SLOT_OS_TEST_RUN"
            return 1
        fi
    fi
    for pid in leader nspawn; do
        if pid=$(th__pidfile_alive "$dir/$pid.pid"); then kill -KILL "$pid" 2>/dev/null || true; fi
    done
    for _ in $(seq 50); do
        th__pidfile_alive "$dir/nspawn.pid" >/dev/null || th__pidfile_alive "$dir/leader.pid" >/dev/null || break
        sleep 0.1
    done
    th__net_teardown "$dir"
    th__cgroup_teardown "$dir"
}

# The network namespaces of the host at DIR: its own (made anew at every boot, as a reboot
# resets a server's NICs) and "upstream", the network its NIC is cabled to (kept until the
# host is destroyed). Named after a hash of DIR: unique across runs and run dirs.
th__netns_names() { # DIR -> "HOSTNS UPNS"
    local h
    h=$(printf '%s' "$1" | sha256sum | cut -c1-10)
    printf 'th-%s th-%s-up\n' "$h" "$h"
}

# th__net_prepare DIR: a fresh host netns with the NIC $TH_NIC, a veth whose peer "uplink0"
# ($TH_UPSTREAM_ADDR) is in the upstream netns; ifupdown in the host configures the NIC.
th__net_prepare() {
    local dir=$1 ns up
    read -r ns up < <(th__netns_names "$dir")
    printf '%s %s\n' "$ns" "$up" >"$dir/netns" || return 1
    if [[ ! -e "/run/netns/$up" ]]; then
        ip netns add "$up" && ip -n "$up" link set lo up || return 1
    fi
    ip -n "$up" link del uplink0 2>/dev/null || true
    if [[ -e "/run/netns/$ns" ]]; then ip netns del "$ns" || return 1; fi
    ip netns add "$ns" || return 1
    ip link add "$TH_NIC" netns "$ns" type veth peer name uplink0 netns "$up" || return 1
    ip -n "$up" addr add "$TH_UPSTREAM_ADDR/${TH_NIC_ADDR#*/}" dev uplink0 &&
        ip -n "$up" link set uplink0 up
}

th__net_teardown() { # DIR
    local dir=$1 ns up
    [[ -s "$dir/netns" ]] || return 0
    read -r ns up <"$dir/netns" || return 0
    [[ "$ns $up" == "$(th__netns_names "$dir")" ]] || return 0 # not ours
    if [[ -e "/run/netns/$up" ]]; then ip -n "$up" link del uplink0 2>/dev/null || true; fi
    if [[ -e "/run/netns/$ns" ]]; then ip netns del "$ns" 2>/dev/null || true; fi
    if [[ -e "/run/netns/$up" ]]; then ip netns del "$up" 2>/dev/null || true; fi
    rm -f "$dir/netns"
}

# Each test host gets cgroups of its own. With no systemd as PID 1, nspawn --keep-unit puts
# the container into "<its own cgroup>/payload": hosts started from one cgroup (two hosts of a
# scenario, scenarios run in parallel, another worktree's run) would share one cgroup tree,
# each systemd managing the other's units (a slot start failed with status 219 so). The dirs
# are named after a hash of DIR, like the netns, and removed with the host.
th__cgroup_dirs() { # DIR -> the host's cgroup dirs in the hierarchies nspawn uses
    local h id
    id=th-$(printf '%s' "$1" | sha256sum | cut -c1-10)
    for h in /sys/fs/cgroup/unified /sys/fs/cgroup/systemd /sys/fs/cgroup; do
        [[ -f "$h/cgroup.procs" ]] && printf '%s\n' "$h/$id"
    done
}

th__cgroup_enter() { # DIR: move this (sub)shell into the host's cgroups
    local d
    while IFS= read -r d; do
        mkdir -p "$d" && echo "$BASHPID" >"$d/cgroup.procs" || return 1
    done < <(th__cgroup_dirs "$1")
}

th__cgroup_teardown() { # DIR: remove the host's cgroups once its processes are gone
    local d
    while IFS= read -r d; do
        [[ -d "$d" ]] || continue
        find "$d" -depth -type d -exec rmdir {} \; 2>/dev/null || true
    done < <(th__cgroup_dirs "$1")
}

# th_upstream NAME: the name of the network namespace beyond host NAME's NIC (for
# `ip netns exec "$(th_upstream H)" ...`); it answers on $TH_UPSTREAM_ADDR.
th_upstream() {
    local name=${1:-} ns up
    th__check_name "$name" || return 1
    [[ -s "$TH_HOSTS/$name/netns" ]] || { th__die "test host '$name' has no network"; return 1; }
    read -r ns up <"$TH_HOSTS/$name/netns"
    printf '%s\n' "$up"
}

th__check_binaries() {
    local tdir=${CARGO_TARGET_DIR:-target} sub b
    [[ "$tdir" == /* ]] || tdir=$TH_REPO/$tdir
    case "$TH_PROFILE" in debug | dev) sub=debug ;; *) sub=$TH_PROFILE ;; esac
    for b in slot-os slot-os-generator; do
        [[ -x "$tdir/$sub/$b" ]] || {
            th__die "binary $tdir/$sub/$b is missing: build first (cargo build$([[ $sub == release ]] && echo ' --release'), or run tests/run-e2e.sh without SLOT_OS_SKIP_BUILD)"
            return 1
        }
    done
}

th__install_project() {
    local name=$1 root=$2 log=$TH_HOSTS/$1/install.log
    local lockfd rc=0
    th__check_binaries || return 1
    # `make install` regenerates the docs in the build dir: one at a time (parallel scenarios).
    exec {lockfd}>"$TH_RUN/.install.lock" || return 1
    flock "$lockfd" || { exec {lockfd}>&-; return 1; }
    make -C "$TH_REPO" install DESTDIR="$root" PREFIX=/usr PROFILE="$TH_PROFILE" >"$log" 2>&1 || rc=$?
    exec {lockfd}>&-
    if ((rc != 0)); then
        tail -n 20 "$log" >&2 || true
        th__die "make install into test host '$name' failed (log: $log)"
        return 1
    fi
}

# th_boot NAME [unified|hybrid] [RELEASE]: a fresh stock-shaped host of RELEASE (default
# $TH_RELEASE, itself bookworm unless the runner or the caller sets it).
th_boot() {
    local name=${1:-} mode=${2:-unified} rel=${3:-$TH_RELEASE} dir root src t0 t1 t2
    th__check_name "$name" || return 1
    case "$mode" in unified | hybrid) ;; *) th__die "th_boot: mode must be unified or hybrid"; return 1 ;; esac
    th__check_release "$rel" || return 1
    # systemd >= 256 does not boot in the hybrid hierarchy (testing.md §7).
    if [[ "$mode" == hybrid && "$rel" != bookworm ]]; then
        th__die "th_boot: $rel boots only in unified mode"
        return 1
    fi
    th_ensure_packages || return 1
    dir=$TH_HOSTS/$name
    root=$dir/root
    src=$(th_rootfs "$rel") || return 1
    t0=$(th__now_ms)
    th__check_binaries || return 1
    if [[ -e "$dir" ]]; then
        if th__running "$name" && [[ "$(cat "$dir/owner.pid" 2>/dev/null)" == "$(th__self_id)" ]]; then
            th_poweroff "$name" || return 1
        fi
        th__reap_stale "$dir" || return 1
        th__safe_rm "$dir" || return 1
    fi
    mkdir -p "$dir" || return 1
    th__record_pid "$$" "$dir/owner.pid" || return 1
    th__own_add "$name" || return 1
    printf '%s\n' "$mode" >"$dir/mode" || return 1
    printf '%s\n' "$rel" >"$dir/release" || return 1
    : >"$dir/nspawn.args" || return 1
    if ((${#TH_NSPAWN_ARGS[@]})); then printf '%s\0' "${TH_NSPAWN_ARGS[@]}" >"$dir/nspawn.args"; fi
    cp -a --reflink=auto -- "$src" "$root" || { th__die "copying the rootfs to $root failed"; return 1; }
    t1=$(th__now_ms)
    th__set_identity "$root" "$name" || return 1
    # TH_INSTALL_PROJECT=0: a host without slot-os, for scenarios that install a package.
    if [[ "${TH_INSTALL_PROJECT:-1}" != 0 ]]; then
        th__install_project "$name" "$root" || return 1
    fi
    if declare -F th_pre_boot_hook >/dev/null; then
        th_pre_boot_hook "$name" "$root" || { th__die "th_pre_boot_hook $name failed"; return 1; }
    fi
    t2=$(th__now_ms)
    th__start "$name" || return 1
    th_note "$name: booted ($rel, $mode) in $(th__secs $(($(th__now_ms) - t0))) (copy $(th__secs $((t1 - t0))), install+hook $(th__secs $((t2 - t1))), boot $(th__secs $(($(th__now_ms) - t2))))"
}

# Start nspawn on an existing host dir and wait until its systemd is up.
th__start() {
    local name=$1 dir=$TH_HOSTS/$1 mode pid leader p deadline state rc comm
    local -a envcmd args=()
    mode=$(cat "$dir/mode") || return 1
    if [[ "$mode" == unified ]]; then
        envcmd=(env SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=1)
    else
        envcmd=(env -u SYSTEMD_NSPAWN_UNIFIED_HIERARCHY)
    fi
    # /proc/sys/net writable, as on a real host (nspawn does it for --private-network, not
    # for --network-namespace-path): networkd turns on forwarding for the NAT zone there.
    envcmd+=(SYSTEMD_NSPAWN_API_VFS_WRITABLE=network)
    if [[ -s "$dir/nspawn.args" ]]; then mapfile -d '' -t args <"$dir/nspawn.args"; fi
    printf '\n===== %s: boot (%s) at %s =====\n' "$name" "$mode" "$(date -Is)" >>"$dir/console.log"
    rm -f "$dir/leader.pid" "$dir/nspawn.pid"
    th__net_prepare "$dir" || { th__die "$name: making its network namespaces failed"; return 1; }
    # fds >2 (the runner's output, logs, locks) are not handed to nspawn
    (
        th__cgroup_enter "$dir" || { echo "testhost: cannot enter the cgroups of $dir" >&2; exit 1; }
        exec "${envcmd[@]}" systemd-nspawn -D "$dir/root" -b --register=no --keep-unit --console=pipe \
            --network-namespace-path="/run/netns/$(th__netns_names "$dir" | cut -d' ' -f1)" \
            --capability=CAP_NET_ADMIN \
            -M "$name" ${args[@]+"${args[@]}"}
    ) </dev/null >>"$dir/console.log" 2>&1 3>&- 4>&- 5>&- 6>&- 7>&- 8>&- 9>&- &
    pid=$!
    th__record_pid "$pid" "$dir/nspawn.pid"
    deadline=$(($(th__now_ms) + TH_BOOT_TIMEOUT * 1000))
    # The container's PID 1: a child of nspawn, in another PID namespace, that has exec'd systemd.
    leader=
    while [[ -z "$leader" ]]; do
        if ! th__running "$name"; then
            th__boot_failed "$name" "systemd-nspawn exited before the container started"
            return 1
        fi
        for p in /proc/[0-9]*; do
            p=${p#/proc/}
            [[ "$(th__ppid "$p" 2>/dev/null)" == "$pid" ]] || continue
            comm=$(cat "/proc/$p/comm" 2>/dev/null) || continue
            [[ "$comm" == systemd || "$comm" == init ]] || continue
            [[ "$(readlink "/proc/$p/ns/pid" 2>/dev/null)" != "$(readlink "/proc/$pid/ns/pid")" ]] || continue
            leader=$p
            break
        done
        if [[ -z "$leader" ]]; then
            (($(th__now_ms) < deadline)) || { th__boot_failed "$name" "no container PID 1 found"; return 1; }
            sleep 0.05
        fi
    done
    th__record_pid "$leader" "$dir/leader.pid"
    # Wait for the boot to finish: running or degraded.
    while :; do
        rc=0
        state=$(timeout $(((deadline - $(th__now_ms)) / 1000 + 1)) \
            env -i "${TH_ENV[@]}" nsenter -t "$leader" -a systemctl is-system-running --wait \
            </dev/null 2>/dev/null) || rc=$?
        case "$state" in
        running) return 0 ;;
        degraded) th__check_failed_units "$name"; return ;;
        esac
        if ! th__running "$name"; then
            th__boot_failed "$name" "systemd-nspawn exited during boot"
            return 1
        fi
        if (($(th__now_ms) >= deadline)); then
            th__boot_failed "$name" "not running after ${TH_BOOT_TIMEOUT}s (state: ${state:-?}, rc $rc)"
            return 1
        fi
        sleep 0.2
    done
}

# A booted host may be degraded only by the units the stock shape is known to fail
# (TH_ALLOWED_FAILED_UNITS); slot-os's own units (slots, its services) are the tests' business.
th__check_failed_units() {
    local name=$1 u a ok bad=() slots=()
    while read -r u _; do
        [[ -n "$u" ]] || continue
        ok=
        for a in "${TH_ALLOWED_FAILED_UNITS[@]}"; do
            # shellcheck disable=SC2053 # a glob on purpose
            if [[ "$u" == $a ]]; then ok=1; fi
        done
        case "$u" in systemd-nspawn@*.service | slot-os*) slots+=("$u"); ok=1 ;; esac
        [[ -n "$ok" ]] || bad+=("$u")
    done < <(th__run_t 10 "$name" systemctl list-units --state=failed --no-legend --plain --no-pager 2>/dev/null)
    if ((${#slots[@]})); then th_note "$name: booted with failed slot-os units: ${slots[*]}"; fi
    if ((${#bad[@]})); then
        th__boot_failed "$name" "units failed at boot: ${bad[*]} (allowed: ${TH_ALLOWED_FAILED_UNITS[*]})"
        return 1
    fi
}

# th_diagnose NAME: what a failure leaves to read once the host is gone: the failed units
# of the host and of every slot in it, each with its journal's tail.
th_diagnose() {
    local name=$1 u m lines=${SLOT_OS_TEST_JOURNAL_LINES:-40}
    th_leader "$name" >/dev/null 2>&1 || { printf -- '--- %s: not running ---\n' "$name"; return 0; }
    printf -- '--- %s: failed units ---\n' "$name"
    th__run_t 10 "$name" systemctl list-units --state=failed --no-legend --plain --no-pager 2>&1 || true
    while read -r u _; do
        [[ -n "$u" ]] || continue
        printf -- '--- %s: journalctl -u %s (last %s lines) ---\n' "$name" "$u" "$lines"
        th__run_t 10 "$name" journalctl -b --no-pager -n "$lines" -u "$u" 2>&1 || true
        case "$u" in systemd-nspawn@*.service)
            # the slot's own journal, in its image (--link-journal=try-guest)
            m=${u#systemd-nspawn@}
            m=${m%.service}
            printf -- '--- %s: slot %s: its journal (warnings, last %s lines) ---\n' "$name" "$m" "$lines"
            th__run_t 10 "$name" sh -c 'd=/var/lib/machines/$1/var/log/journal; [ -d "$d" ] && journalctl -D "$d" --no-pager -p warning -n "$2"' sh "$m" "$lines" 2>&1 || true
            ;;
        esac
    done < <(th__run_t 10 "$name" systemctl list-units --state=failed --no-legend --plain --no-pager 2>/dev/null | head -n 8)
    while read -r m _; do
        [[ -n "$m" ]] || continue
        printf -- '--- %s: slot %s: failed units ---\n' "$name" "$m"
        th__run_t 10 "$name" systemctl -M "$m" list-units --state=failed --no-legend --plain --no-pager 2>&1 || true
        while read -r u _; do
            [[ -n "$u" ]] || continue
            printf -- '--- %s: slot %s: journalctl -u %s ---\n' "$name" "$m" "$u"
            th__run_t 10 "$name" journalctl -M "$m" -b --no-pager -n "$lines" -u "$u" 2>&1 || true
        done < <(th__run_t 10 "$name" systemctl -M "$m" list-units --state=failed --no-legend --plain --no-pager 2>/dev/null | head -n 5)
    done < <(th__run_t 10 "$name" machinectl list --no-legend --no-pager 2>/dev/null | head -n 8)
}

# Diagnostics of every running host this shell booted (after a failed test).
th__diagnose_all() {
    local name
    [[ -f "$TH_OWNED_FILE" ]] || return 0
    while IFS= read -r name; do
        [[ -n "$name" ]] || continue
        th__running "$name" || continue
        th_diagnose "$name"
    done <"$TH_OWNED_FILE"
}

th__boot_failed() {
    local name=$1 dir=$TH_HOSTS/$1
    {
        printf 'testhost: %s: boot failed: %s\n' "$name" "$2"
        printf -- '--- console.log (tail) ---\n'
        tail -n 40 "$dir/console.log" 2>/dev/null || true
        if th_leader "$name" >/dev/null 2>&1; then
            th_diagnose "$name"
            printf -- '--- jobs ---\n'
            th__run_t 10 "$name" systemctl list-jobs --no-legend --no-pager 2>&1 || true
        fi
        # PID 1's console is /dev/null with --console=pipe: its journal says more.
        if [[ -d "$dir/root/var/log/journal" ]]; then
            printf -- '--- journal (tail, read from outside) ---\n'
            journalctl -D "$dir/root/var/log/journal" -b -n 30 --no-pager 2>&1 || true
        fi
    } >&2
}

# th_run NAME CMD...: run CMD inside the test host (all its namespaces), clean environment.
th_run() {
    local name=${1:-} leader
    shift || true
    (($#)) || { th__die "th_run: no command"; return 2; }
    leader=$(th_leader "$name") || return 1
    if [[ -p /dev/stdin || -f /dev/stdin || -S /dev/stdin ]]; then
        env -i "${TH_ENV[@]}" nsenter -t "$leader" -a "$@"
    else
        env -i "${TH_ENV[@]}" nsenter -t "$leader" -a "$@" </dev/null
    fi
}

# th__run_t SECS NAME CMD...: th_run with a time limit (stdin /dev/null).
th__run_t() {
    local secs=$1 name=$2 leader
    shift 2
    leader=$(th_leader "$name") || return 1
    timeout "$secs" env -i "${TH_ENV[@]}" nsenter -t "$leader" -a "$@" </dev/null
}

# th_sh NAME 'shell code' [ARGS...]
th_sh() {
    local name=${1:-}
    shift || true
    th_run "$name" sh -c "${1:?th_sh: no shell code}" sh "${@:2}"
}

# th_storage_backend NAME BACKEND: host NAME's slot-os.toml asks for `[storage] backend`
# (for scenarios that read a stopped slot's files from its image directory, which an overlay
# slot, auto's choice on the test hosts' ext4, has only while it runs).
th_storage_backend() {
    local name=${1:-} backend=${2:-} dir
    th__check_name "$name" || return 1
    dir=$TH_HOSTS/$name/root/etc/slot-os
    mkdir -p "$dir" && printf '[storage]\nbackend = "%s"\n' "$backend" >"$dir/slot-os.toml"
}

# th_copy_slot_image NAME IMAGE: a slot-ready copy of the host's release root (th__slot_ready)
# at ROOT/var/lib/machines/IMAGE, with its own machine-id, hostname and SSH host keys.
th_copy_slot_image() {
    local name=${1:-} image=${2:-} root dest src rel
    th__check_name "$name" && th__check_name "$image" || return 1
    root=$TH_HOSTS/$name/root
    [[ -d "$root" ]] || { th__die "no test host '$name'"; return 1; }
    dest=$root/var/lib/machines/$image
    [[ ! -e "$dest" ]] || { th__die "slot image $dest exists already"; return 1; }
    rel=$(cat "$TH_HOSTS/$name/release" 2>/dev/null) || rel=$TH_RELEASE
    src=$(th_rootfs "$rel") || return 1
    mkdir -p "$root/var/lib/machines" || return 1
    cp -a --reflink=auto -- "$src" "$dest" || { th__die "copying the rootfs to $dest failed"; return 1; }
    th__set_identity "$dest" "$image" && th__slot_ready "$dest"
}

# th_poweroff NAME: orderly shutdown; keeps the root dir.
th_poweroff() {
    local name=${1:-} dir pid leader deadline
    th__check_name "$name" || return 1
    dir=$TH_HOSTS/$name
    if ! pid=$(th__pidfile_alive "$dir/nspawn.pid"); then
        # nspawn gone; a leftover container (nspawn was SIGKILLed) is ended by PID.
        if leader=$(th__pidfile_alive "$dir/leader.pid"); then kill -KILL "$leader" 2>/dev/null || true; fi
        rm -f "$dir/nspawn.pid" "$dir/leader.pid"
        return 0
    fi
    if leader=$(th__pidfile_alive "$dir/leader.pid"); then
        kill -s RTMIN+4 "$leader" 2>/dev/null || true # systemd: start poweroff.target
    else
        kill -TERM "$pid" 2>/dev/null || true
    fi
    deadline=$(($(th__now_ms) + TH_POWEROFF_TIMEOUT * 1000))
    while th__pidfile_alive "$dir/nspawn.pid" >/dev/null && (($(th__now_ms) < deadline)); do sleep 0.1; done
    if th__pidfile_alive "$dir/nspawn.pid" >/dev/null; then
        printf 'testhost: %s: no orderly poweroff within %ss, killing it\n' "$name" "$TH_POWEROFF_TIMEOUT" >&2
        if leader=$(th__pidfile_alive "$dir/leader.pid"); then kill -KILL "$leader" 2>/dev/null || true; fi
        sleep 1
        if pid=$(th__pidfile_alive "$dir/nspawn.pid"); then kill -KILL "$pid" 2>/dev/null || true; fi
        sleep 0.2
    fi
    wait "$pid" 2>/dev/null || true # reap it if it is our child
    rm -f "$dir/nspawn.pid" "$dir/leader.pid"
}

# th_reboot NAME: poweroff, then boot the same root dir again (same mode and nspawn args).
th_reboot() {
    local name=${1:-} t0
    th__check_name "$name" || return 1
    [[ -d "$TH_HOSTS/$name/root" ]] || { th__die "no test host '$name'"; return 1; }
    t0=$(th__now_ms)
    th_poweroff "$name" || return 1
    th__start "$name" || return 1
    th_note "$name: rebooted in $(th__secs $(($(th__now_ms) - t0)))"
}

# th_destroy NAME: poweroff if running, then remove its dir.
th_destroy() {
    local name=${1:-}
    th__check_name "$name" || return 1
    th_poweroff "$name" || true
    th__net_teardown "$TH_HOSTS/$name"
    th__cgroup_teardown "$TH_HOSTS/$name"
    th__safe_rm "$TH_HOSTS/$name" || return 1
    th__own_del "$name"
}

# th_cleanup_all: destroy every host this shell booted. `trap th_cleanup_all EXIT`.
# With SLOT_OS_TEST_KEEP=1 they are left running, for debugging.
th_cleanup_all() {
    local name
    [[ -f "$TH_OWNED_FILE" ]] || return 0
    if [[ -n "${SLOT_OS_TEST_KEEP:-}" ]]; then
        while IFS= read -r name; do
            [[ -n "$name" ]] || continue
            printf '# kept test host %s: nsenter -t %s -a bash   (root: %s)\n' "$name" \
                "$(th_leader "$name" 2>/dev/null || echo '?')" "$TH_HOSTS/$name/root" >&2
        done <"$TH_OWNED_FILE"
        rm -f "$TH_OWNED_FILE"
        return 0
    fi
    while IFS= read -r name; do
        [[ -n "$name" ]] || continue
        th_destroy "$name" || printf 'testhost: could not destroy %s\n' "$name" >&2
    done < <(tac "$TH_OWNED_FILE")
    rm -f "$TH_OWNED_FILE"
}

# th_wait_for TIMEOUT_S CMD...: poll CMD (output hidden) until it succeeds.
th_wait_for() {
    local t=${1:?th_wait_for: timeout} deadline out=
    shift
    deadline=$(($(th__now_ms) + ${t%%.*} * 1000))
    while :; do
        if out=$("$@" 2>&1); then return 0; fi
        if (($(th__now_ms) >= deadline)); then
            printf 'th_wait_for: timed out after %ss: %s (last output: %s)\n' "$t" "$*" \
                "$(printf '%s' "$out" | tail -n 3 | tr '\n' ' ')" >&2
            return 1
        fi
        sleep "${TH_WAIT_INTERVAL:-0.2}"
    done
}

# th_unit_state NAME UNIT: the unit's ActiveState inside the host.
th_unit_state() { th_run "$1" systemctl show -P ActiveState -- "$2"; }

# ---------------------------------------------------------------------------------------------
# tests: assertions and the scenario runner
#
# A scenario file defines test_* functions (run in the order they are defined), and optionally
# scenario_setup / scenario_teardown. Each test runs in a subshell with errexit OFF (so
# `out=$(cmd); rc=$?` works) and nounset on; its output goes to a log, shown on failure.
# A test fails if it returns non-zero or calls t_fail (assert_* call t_fail). Write
# `assert_... || return 1` to stop at the first failed assertion.
# Set TH_TEST_ERREXIT=1 in a scenario to run its tests with `set -e` instead.

TH_SCENARIO=${TH_SCENARIO:-adhoc}
TH_RESULTS=${TH_RESULTS:-}

th__report() { # STATUS(ok|FAIL) TEST [REASON]
    local line
    if [[ "$1" == ok ]]; then
        line="ok   $TH_SCENARIO: $2"
    else
        line="FAIL $TH_SCENARIO: $2: ${3:-failed}"
    fi
    if [[ -n "${TH_OUT_FD:-}" ]] && { true >&"$TH_OUT_FD"; } 2>/dev/null; then
        printf '%s\n' "$line" >&"$TH_OUT_FD"
    else
        printf '%s\n' "$line"
    fi
    if [[ -n "$TH_RESULTS" ]]; then printf '%s\n' "$line" >>"$TH_RESULTS"; fi
}

th__reason() { # first recorded failure reason (one line) of the current test
    local f=${TH_T_REASON_FILE:-} n
    [[ -n "$f" && -s "$f" ]] || return 0
    n=$(wc -l <"$f")
    printf '%s' "$(head -n 1 "$f" | cut -c1-400)"
    if ((n > 1)); then printf ' (+%d more)' "$((n - 1))"; fi
}

# t_begin NAME: inside a test_* function it labels a step (prefixed to failure reasons);
# outside one it starts an ad-hoc test that t_pass / t_fail ends.
t_begin() {
    if [[ -n "${TH_IN_TEST:-}" ]]; then
        TH_T_STEP=$1
        printf '## step: %s\n' "$1"
    else
        TH_T_NAME=$1
        TH_T_REASON_FILE=$(mktemp)
    fi
}

t_pass() {
    [[ -z "${TH_IN_TEST:-}" ]] || return 0
    if [[ -n "$(th__reason)" ]]; then
        th__report FAIL "${TH_T_NAME:-?}" "$(th__reason)"
    else
        th__report ok "${TH_T_NAME:-?}"
    fi
    rm -f "${TH_T_REASON_FILE:-}"
    TH_T_REASON_FILE=
}

# t_fail MSG: record a failure and return 1.
t_fail() {
    local msg="${*:-failed}"
    msg=${msg//$'\n'/ }
    if [[ -n "${TH_IN_TEST:-}" ]]; then
        [[ -z "${TH_T_STEP:-}" ]] || msg="$TH_T_STEP: $msg"
        printf '%s\n' "$msg" >>"$TH_T_REASON_FILE"
        printf 'FAIL: %s\n' "$msg" >&2
    else
        th__report FAIL "${TH_T_NAME:-?}" "$msg"
        rm -f "${TH_T_REASON_FILE:-}"
        TH_T_REASON_FILE=
    fi
    return 1
}

th__short() { local s=${1//$'\n'/ }; ((${#s} <= 200)) || s="${s:0:200}..."; printf '%s' "$s"; }

assert_eq() { # EXPECTED ACTUAL MSG
    if [[ "$1" == "$2" ]]; then return 0; fi
    t_fail "${3:-assert_eq}: expected '$(th__short "$1")', got '$(th__short "$2")'"
}

assert_contains() { # HAYSTACK NEEDLE MSG
    if [[ "$1" == *"$2"* ]]; then return 0; fi
    t_fail "${3:-assert_contains}: '$(th__short "$2")' not in '$(th__short "$1")'"
}

assert_not_contains() { # HAYSTACK NEEDLE MSG
    if [[ "$1" != *"$2"* ]]; then return 0; fi
    t_fail "${3:-assert_not_contains}: '$(th__short "$2")' found in '$(th__short "$1")'"
}

# assert_ok CMD...: CMD must exit 0 (its output goes to the test log).
assert_ok() {
    local out rc=0
    out=$("$@" 2>&1) || rc=$?
    [[ -z "$out" ]] || printf '%s\n' "$out"
    if ((rc == 0)); then return 0; fi
    t_fail "command failed (exit $rc): $(th__short "$*")${out:+: $(th__short "$(printf '%s' "$out" | tail -n 3)")}"
}

# assert_exit CODE CMD...: CMD must exit with CODE.
assert_exit() {
    local want=$1 out rc=0
    shift
    out=$("$@" 2>&1) || rc=$?
    [[ -z "$out" ]] || printf '%s\n' "$out"
    if ((rc == want)); then return 0; fi
    t_fail "expected exit $want, got $rc: $(th__short "$*")${out:+: $(th__short "$(printf '%s' "$out" | tail -n 3)")}"
}

# The test_* functions of the sourced scenario FILE, in the order they are defined.
th__test_list() {
    local file=$1 fn
    local -A seen=()
    while IFS= read -r fn; do
        [[ -n "$fn" && -z "${seen[$fn]:-}" ]] || continue
        declare -F "$fn" >/dev/null || continue
        seen[$fn]=1
        printf '%s\n' "$fn"
    done < <(grep -oE '^[[:space:]]*(function[[:space:]]+)?test_[A-Za-z0-9_]+' "$file" |
        sed -E 's/^[[:space:]]*(function[[:space:]]+)?//')
    while IFS= read -r fn; do
        [[ -z "${seen[$fn]:-}" ]] || continue
        printf '%s\n' "$fn"
    done < <(declare -F | awk '$3 ~ /^test_/ {print $3}')
}

th__on_err() { # errexit mode: remember the failing command
    [[ -n "${TH_T_REASON_FILE:-}" && ! -s "$TH_T_REASON_FILE" ]] || return 0
    printf '%s\n' "${TH_T_STEP:+$TH_T_STEP: }command failed (exit $1) at $3: $(th__short "$2")" >>"$TH_T_REASON_FILE"
}

th__step_body() {
    TH_IN_TEST=1 TH_T_STEP=
    set +e -u
    if [[ -n "${TH_TEST_ERREXIT:-}" ]]; then
        set -eE -o pipefail
        trap 'th__on_err $? "$BASH_COMMAND" "${BASH_SOURCE[0]##*/}:$LINENO"' ERR
    fi
    "$1"
}

# th__run_step FN LOG: run FN in a subshell, output to LOG; status 0 = passed.
th__run_step() {
    local fn=$1 log=$2 rc last e=
    TH_T_REASON_FILE=$(mktemp)
    [[ $- != *e* ]] || e=1
    set +e
    if [[ -n "${SLOT_OS_TEST_VERBOSE:-}" ]]; then
        (th__step_body "$fn") 2>&1 | tee "$log"
        rc=${PIPESTATUS[0]}
    else
        (th__step_body "$fn") >"$log" 2>&1
        rc=$?
    fi
    [[ -z "$e" ]] || set -e
    if ((rc != 0)) && [[ ! -s "$TH_T_REASON_FILE" ]]; then
        last=$(grep -v '^[[:space:]]*$' "$log" 2>/dev/null | tail -n 1 || true)
        printf 'returned %s%s\n' "$rc" "${last:+ (last output: $(th__short "$last"))}" >>"$TH_T_REASON_FILE"
    fi
    # Failed: keep what the hosts' journals say about it before they are destroyed.
    if [[ -s "$TH_T_REASON_FILE" ]]; then
        printf '%s\n' "$TH_DIAG_MARK" >>"$log"
        th__diagnose_all >>"$log" 2>&1
    fi
    [[ ! -s "$TH_T_REASON_FILE" ]]
}

TH_DIAG_MARK='=== diagnostics (failed units and their journals, saved by the harness) ==='
th__show_log_tail() {
    local log=$1 n
    [[ -s "$log" ]] || return 0
    if [[ -n "${SLOT_OS_TEST_VERBOSE:-}" ]]; then
        sed -n "/^$TH_DIAG_MARK\$/,\$p" "$log" >&"$TH_OUT_FD"
        return 0
    fi
    n=$(sed -n "/^$TH_DIAG_MARK\$/,\$p" "$log" | wc -l)
    {
        printf '    | (last lines of %s)\n' "$log"
        sed "/^$TH_DIAG_MARK\$/,\$d" "$log" | tail -n "${SLOT_OS_TEST_LOG_LINES:-25}" | sed 's/^/    | /'
        if ((n > 1)); then printf '    | (+ %d lines of failed units and journals at its end)\n' "$((n - 1))"; fi
    } >&"$TH_OUT_FD"
}

th__scenario_exit() {
    local rc=$?
    set +e
    trap - INT TERM
    if [[ "${TH_PHASE:-}" != "done" ]]; then
        th__report FAIL "${TH_PHASE:-load}" "scenario process ended (exit $rc$( ((rc != 143)) || echo ': terminated, timeout?'))"
        [[ -z "${TH_PHASE_LOG:-}" ]] || th__show_log_tail "$TH_PHASE_LOG"
        [[ -z "${TH_CRASH_MARKER:-}" ]] || : >"$TH_CRASH_MARKER"
        ((rc != 0)) || rc=1
    fi
    th_cleanup_all
    exit "$rc"
}

# t_run_scenario FILE: source a scenario, run scenario_setup (in this shell, so variables it
# sets are seen by the tests), each test_* function (in a subshell; failures do not stop the
# rest), then scenario_teardown; print one ok/FAIL line per test. Destroys the hosts it booted.
# Returns 1 if anything failed.
t_run_scenario() {
    local file=$1 fn log logdir failed=0 setup_ok=1 rc e=
    # The runner names a scenario's run per release: "30-walkthrough[trixie]", logs in
    # logs/30-walkthrough.trixie.
    TH_SCENARIO=${TH_SCENARIO_LABEL:-$(basename "$file" .sh)}
    exec {TH_OUT_FD}>&1
    logdir=$TH_RUN/logs/${TH_LOG_NAME:-$TH_SCENARIO}
    rm -rf -- "$logdir"
    mkdir -p "$logdir"
    TH_PHASE=load TH_PHASE_LOG=
    trap th__scenario_exit EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    # shellcheck disable=SC1090
    source "$file"
    if declare -F scenario_setup >/dev/null; then
        TH_PHASE=scenario_setup TH_PHASE_LOG=$logdir/scenario_setup.log
        TH_T_REASON_FILE=$(mktemp)
        TH_IN_TEST=1 TH_T_STEP=
        [[ $- != *e* ]] || e=1
        set +e
        scenario_setup >"$TH_PHASE_LOG" 2>&1
        rc=$?
        [[ -z "$e" ]] || set -e
        TH_IN_TEST=
        if ((rc != 0)) || [[ -s "$TH_T_REASON_FILE" ]]; then
            setup_ok=
            failed=1
            if [[ ! -s "$TH_T_REASON_FILE" ]]; then
                printf 'returned %s (last output: %s)\n' "$rc" \
                    "$(th__short "$(grep -v '^[[:space:]]*$' "$TH_PHASE_LOG" | tail -n 1)")" >>"$TH_T_REASON_FILE"
            fi
            th__report FAIL scenario_setup "$(th__reason)"
            th__show_log_tail "$TH_PHASE_LOG"
        fi
        rm -f "$TH_T_REASON_FILE"
    fi
    TH_PHASE=tests TH_PHASE_LOG=
    while IFS= read -r fn; do
        if [[ -n "${SLOT_OS_TEST_FILTER:-}" ]] && ! [[ "$fn" =~ $SLOT_OS_TEST_FILTER ]]; then continue; fi
        if [[ -z "$setup_ok" ]]; then
            th__report FAIL "$fn" "not run: scenario_setup failed"
            continue
        fi
        log=$logdir/$fn.log
        TH_PHASE=$fn
        if th__run_step "$fn" "$log"; then
            th__report ok "$fn"
        else
            failed=1
            th__report FAIL "$fn" "$(th__reason)"
            th__show_log_tail "$log"
        fi
        rm -f "$TH_T_REASON_FILE"
    done < <(th__test_list "$file")
    if declare -F scenario_teardown >/dev/null; then
        TH_PHASE=scenario_teardown
        log=$logdir/scenario_teardown.log
        if ! th__run_step scenario_teardown "$log"; then
            failed=1
            th__report FAIL scenario_teardown "$(th__reason)"
            th__show_log_tail "$log"
        fi
        rm -f "$TH_T_REASON_FILE"
    fi
    TH_PHASE="done"
    [[ -z "${TH_DONE_MARKER:-}" ]] || : >"$TH_DONE_MARKER"
    return "$failed"
}
