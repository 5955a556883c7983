# shellcheck shell=bash
# tests/vm/lib.sh - a Debian VM booted with qemu as a real host: real PID 1, /dev/kmsg and
# cgroup v2 controllers that enforce limits (an nspawn test host has none of them). Sourced by
# tests/vm/run.sh. See tests/vm/README.md.
#
# Cache ($VM_CACHE = $SLOT_OS_TEST_CACHE, shared with the nspawn test hosts, built under a lock):
#   vm-root-<suite>-<key>/      debootstrapped root (key: suite, packages, debootstrap recipe)
#   vm-image-<suite>-<key>/     disk.img (ext4, made with mkfs.ext4 -d), vmlinuz, initrd.img
#                               (key: the root's key + the image recipe, runner included)
# Run dir ($VM_RUN): share/ (the guest's 9p share: jobs/, running/, results/, ready),
#   console.log (serial), qemu.pid, qemu.log.

VM_LIB_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
VM_REPO=${VM_REPO:-$(cd "$VM_LIB_DIR/../.." && pwd)}
VM_CACHE=${SLOT_OS_TEST_CACHE:-/var/cache/slot-os-test}
VM_SUITE=${SLOT_OS_VM_SUITE:-bookworm}
VM_RUN=${SLOT_OS_VM_RUN:-${SLOT_OS_TEST_RUN:-/var/tmp/slot-os-test}/vm-$VM_SUITE}
VM_MEM=${SLOT_OS_VM_MEM:-1024}
VM_SMP=${SLOT_OS_VM_SMP:-2}
VM_BOOT_TIMEOUT=${SLOT_OS_VM_BOOT_TIMEOUT:-1200}
# Bump when the debootstrap step changes in a way the key does not see.
VM_ROOT_RECIPE=slot-os-vm-root-v1
# What a real host needs to boot from a virtio disk, run systemd-nspawn slots, and the checks.
VM_PACKAGES=(linux-image-amd64 initramfs-tools systemd systemd-sysv systemd-container dbus
    iproute2 udev kmod procps e2fsprogs)
VM_CMDLINE="root=/dev/vda rw console=ttyS0"

vm__now_ms() { local t=${EPOCHREALTIME/[.,]/}; printf '%s\n' "$((t / 1000))"; }
vm__secs() { printf '%d.%ds' "$(($1 / 1000))" "$((($1 % 1000) / 100))"; }
vm_note() { printf '# vm: %s\n' "$*" >&2; }
vm__die() { printf 'vm: %s\n' "$*" >&2; return 1; }

# vm__locked_build DIR BUILDFN ARGS...: build DIR once (under a lock), in a temp dir that
# BUILDFN fills (called as BUILDFN TMPDIR ARGS...), renamed to DIR when complete.
vm__locked_build() {
    local dir=$1 fn=$2 lockfd tmp d rc=0
    shift 2
    [[ -d "$dir" ]] && return 0
    mkdir -p "$VM_CACHE" || return 1
    exec {lockfd}>"$dir.lock" || return 1
    flock "$lockfd" || { exec {lockfd}>&-; return 1; }
    if [[ ! -d "$dir" ]]; then
        # We hold the lock: a build dir left here is from an interrupted build.
        for d in "$dir".build.*; do
            [[ -e "$d" ]] && rm -rf --one-file-system -- "$d"
        done
        tmp=$dir.build.$$
        mkdir -p "$tmp" || rc=1
        ((rc)) || "$fn" "$tmp" "$@" || rc=1
        if ((rc)); then
            rm -rf --one-file-system -- "$tmp"
        else
            mv -T -- "$tmp" "$dir" || rc=1
        fi
    fi
    exec {lockfd}>&-
    return "$rc"
}

vm__root_key() {
    printf '%s\n' "$VM_ROOT_RECIPE" "$VM_SUITE" "${VM_PACKAGES[*]}" | sha256sum | cut -c1-12
}

vm__build_root() { # TMP
    local tmp=$1 pkgs=${VM_PACKAGES[*]} log=$1.log t0
    t0=$(vm__now_ms)
    vm_note "debootstrap $VM_SUITE into $tmp/root (log: $log; takes minutes)"
    # debootstrap's own default mirror: we name none.
    if ! debootstrap --variant=minbase --include="${pkgs// /,}" "$VM_SUITE" "$tmp/root" >"$log" 2>&1; then
        tail -n 30 "$log" >&2
        vm__die "debootstrap failed (log: $log)"
        return 1
    fi
    mv -- "$log" "$tmp/debootstrap.log"
    vm_note "debootstrapped in $(vm__secs $(($(vm__now_ms) - t0))) ($(du -sh "$tmp/root" | cut -f1))"
}

# vm_root: path of the cached debootstrapped root.
vm_root() {
    local dir
    dir=$VM_CACHE/vm-root-$VM_SUITE-$(vm__root_key)
    vm__locked_build "$dir" vm__build_root || return 1
    printf '%s\n' "$dir/root"
}

# Everything the image gets on top of the debootstrapped root. Its source text (and the
# runner's) is part of the image key.
vm__image_setup() { # ROOT
    local r=$1
    echo slotvm >"$r/etc/hostname"
    printf '127.0.1.1 slotvm\n' >>"$r/etc/hosts"
    # One VM at a time boots this image (-snapshot): a fixed id avoids first-boot units.
    systemd-id128 new >"$r/etc/machine-id" 2>/dev/null || tr -d - </proc/sys/kernel/random/uuid >"$r/etc/machine-id"
    chroot "$r" passwd -dq root >/dev/null 2>&1 || chroot "$r" passwd -d root >/dev/null
    # The root file system is the kernel's root= (rw); nothing else to mount.
    : >"$r/etc/fstab"
    # Boot fast, do nothing behind the checks' back.
    systemctl --root="$r" mask apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer \
        e2scrub_reap.service fstrim.timer dpkg-db-backup.timer man-db.timer \
        systemd-firstboot.service getty@tty1.service >/dev/null 2>&1
    mkdir -p "$r/etc/systemd/journald.conf.d"
    printf '[Journal]\nStorage=volatile\nRuntimeMaxUse=32M\n' >"$r/etc/systemd/journald.conf.d/50-slot-os-vm.conf"
    cat >"$r/etc/dpkg/dpkg.cfg.d/50-slot-os-vm-nodoc" <<'EOF'
path-exclude=/usr/share/doc/*
path-include=/usr/share/doc/*/copyright
path-exclude=/usr/share/man/*
path-exclude=/usr/share/info/*
path-exclude=/usr/share/locale/*
path-include=/usr/share/locale/locale.alias
EOF
    find "$r/usr/share/doc" -mindepth 1 ! -type d ! -name copyright -delete
    find "$r/usr/share/man" "$r/usr/share/info" -mindepth 1 -delete
    find "$r/usr/share/locale" -mindepth 1 -maxdepth 1 ! -name locale.alias -exec rm -rf {} +
    chroot "$r" apt-get clean
    rm -rf "$r"/var/lib/apt/lists/* "$r"/var/cache/apt/*.bin "$r"/var/log/*.log "$r"/var/log/apt/*
    mkdir -p "$r/var/lib/apt/lists/partial"
    # The job runner: the host drives the VM through the 9p share (tests/vm/guest-runner.sh).
    install -m755 "$VM_LIB_DIR/guest-runner.sh" "$r/usr/local/sbin/slot-os-vm-runner"
    cat >"$r/etc/systemd/system/slot-os-vm-runner.service" <<'EOF'
[Unit]
Description=slot-os VM tier: run the host's jobs from the 9p share
# Not inside slots made from this root (make-base-image copies it).
ConditionVirtualization=!container
[Service]
ExecStart=/usr/local/sbin/slot-os-vm-runner
[Install]
WantedBy=multi-user.target
EOF
    systemctl --root="$r" enable slot-os-vm-runner.service >/dev/null 2>&1
}

vm__image_key() {
    {
        vm__root_key
        printf '%s\n' "$VM_CMDLINE"
        declare -f vm__image_setup vm__build_image
        cat "$VM_LIB_DIR/guest-runner.sh"
    } | sha256sum | cut -c1-12
}

vm__build_image() { # TMP ROOT
    local tmp=$1 root=$2 stage=$1/stage t0 k i
    t0=$(vm__now_ms)
    cp -a -- "$root" "$stage" || return 1
    vm__image_setup "$stage" >"$tmp/setup.log" 2>&1 || { cat "$tmp/setup.log" >&2; vm__die "image setup failed"; return 1; }
    k=$(find "$stage/boot" -maxdepth 1 -name 'vmlinuz-*' | sort -V | tail -n 1)
    i=$(find "$stage/boot" -maxdepth 1 -name 'initrd.img-*' | sort -V | tail -n 1)
    [[ -n "$k" && -n "$i" ]] || { vm__die "no kernel/initrd in $stage/boot"; return 1; }
    cp -- "$k" "$tmp/vmlinuz" && cp -- "$i" "$tmp/initrd.img" || return 1
    basename "$k" >"$tmp/kernel-version"
    # qemu boots the copies; without them the root (and every slot image made from it) is
    # ~100 MB smaller.
    find "$stage/boot" -mindepth 1 -maxdepth 1 \( -name 'vmlinuz-*' -o -name 'initrd.img-*' \) -delete
    # Sparse: 4G of room for a slot image next to the root; ~1 GB actually written.
    mkfs.ext4 -q -F -L slotvm -d "$stage" "$tmp/disk.img" 4G >"$tmp/mkfs.log" 2>&1 ||
        { cat "$tmp/mkfs.log" >&2; vm__die "mkfs.ext4 failed"; return 1; }
    rm -rf --one-file-system -- "$stage"
    vm_note "image built in $(vm__secs $(($(vm__now_ms) - t0))) ($(du -h "$tmp/disk.img" | cut -f1) used)"
}

# vm_image: path of the cached image dir (disk.img, vmlinuz, initrd.img).
vm_image() {
    local root dir
    root=$(vm_root) || return 1
    dir=$VM_CACHE/vm-image-$VM_SUITE-$(vm__image_key)
    vm__locked_build "$dir" vm__build_image "$root" || return 1
    printf '%s\n' "$dir"
}

# KVM only where it can boot a stock kernel: /dev/kvm usable and the CPU showing vmx/svm.
# (kvm_pvm's /dev/kvm shows neither and cannot boot stock Debian kernels.)
vm_accel() {
    case "${SLOT_OS_VM_ACCEL:-auto}" in
    kvm | tcg) printf '%s\n' "$SLOT_OS_VM_ACCEL"; return 0 ;;
    esac
    if [[ -r /dev/kvm && -w /dev/kvm ]] && grep -qw -e vmx -e svm /proc/cpuinfo; then
        echo kvm
    else
        echo tcg
    fi
}

# ---------------------------------------------------------------------------------------------
# the running VM

# "PID STARTTIME" of a live process (empty if gone): a recorded PID is only trusted with it.
vm__proc_id() {
    local pid=${1:-} stat rest
    [[ "$pid" =~ ^[0-9]+$ ]] || return 0
    stat=$(cat "/proc/$pid/stat" 2>/dev/null) || return 0
    rest=${stat##*) }
    # shellcheck disable=SC2086
    set -- $rest
    [[ "${1:-}" != Z && "${1:-}" != X ]] || return 0
    printf '%s %s\n' "$pid" "${20:-}"
}
vm__pid_alive() { # FILE: prints the recorded PID if that very process still runs
    local rec pid
    [[ -s "$1" ]] || return 1
    rec=$(cat "$1") || return 1
    pid=${rec%% *}
    [[ "$(vm__proc_id "$pid")" == "$rec" ]] || return 1
    printf '%s\n' "$pid"
}
vm_running() { vm__pid_alive "$VM_RUN/qemu.pid" >/dev/null; }

# vm_kill: end the qemu process this run dir records (ours, or one left by a killed run).
vm_kill() {
    local pid
    pid=$(vm__pid_alive "$VM_RUN/qemu.pid") || return 0
    kill -TERM "$pid" 2>/dev/null
    for _ in $(seq 50); do vm_running || break; sleep 0.1; done
    if vm_running; then kill -KILL "$pid" 2>/dev/null; fi
    wait "$pid" 2>/dev/null || true
    rm -f "$VM_RUN/qemu.pid"
}

# vm_start IMAGE_DIR: boot the image (its disk is never written: -snapshot keeps the guest's
# writes in a temp file in the run dir). Returns when the guest has written "ready".
vm_start() {
    local img=$1 accel cpu pid t0 rec
    local -a qemu
    vm_kill
    rm -rf --one-file-system -- "$VM_RUN" || return 1
    mkdir -p "$VM_RUN/share" "$VM_RUN/tmp" || return 1
    accel=$(vm_accel)
    if [[ "$accel" == kvm ]]; then cpu=host; else accel=tcg,thread=multi cpu=qemu64; fi
    qemu=(qemu-system-x86_64 -name slot-os-vm -nodefaults -no-user-config -display none
        -accel "$accel" -cpu "$cpu" -m "$VM_MEM" -smp "$VM_SMP"
        -kernel "$img/vmlinuz" -initrd "$img/initrd.img" -append "$VM_CMDLINE"
        -drive "file=$img/disk.img,format=raw,if=virtio,snapshot=on"
        -virtfs "local,path=$VM_RUN/share,mount_tag=host0,security_model=none,id=host0"
        -device virtio-rng-pci -nic none -serial "file:$VM_RUN/console.log" -monitor none)
    printf '%s\n' "${qemu[*]}" >"$VM_RUN/qemu.cmd"
    t0=$(vm__now_ms)
    # PDEATHSIG: qemu ends with the shell that started it, however that shell ends.
    TMPDIR=$VM_RUN/tmp setpriv --pdeathsig KILL -- "${qemu[@]}" </dev/null >"$VM_RUN/qemu.log" 2>&1 3>&- 4>&- 5>&- 6>&- 7>&- 8>&- 9>&- &
    pid=$!
    rec=$(vm__proc_id "$pid")
    [[ -n "$rec" ]] && printf '%s\n' "$rec" >"$VM_RUN/qemu.pid"
    printf '%s\n' "$accel" >"$VM_RUN/accel"
    vm_wait_ready "" || return 1
    vm_note "booted ($accel) in $(vm__secs $(($(vm__now_ms) - t0))): $(cat "$VM_RUN/share/ready")"
}

# vm_wait_ready [OLD_BOOT_ID]: wait for the guest's "ready" file of a boot other than OLD.
vm_wait_ready() {
    local old=${1:-} deadline line
    deadline=$(($(vm__now_ms) + VM_BOOT_TIMEOUT * 1000))
    while :; do
        line=$(cat "$VM_RUN/share/ready" 2>/dev/null) || line=
        if [[ -n "$line" && "${line%% *}" != "$old" ]]; then return 0; fi
        if ! vm_running; then
            vm__die "qemu exited during boot; $(tail -n 5 "$VM_RUN/qemu.log" 2>/dev/null)"
            vm__console_tail
            return 1
        fi
        if (($(vm__now_ms) >= deadline)); then
            vm__die "not ready after ${VM_BOOT_TIMEOUT}s"
            vm__console_tail
            return 1
        fi
        sleep 0.5
    done
}
vm__console_tail() { { echo '--- console.log (tail) ---'; tail -n 40 "$VM_RUN/console.log"; } >&2 2>/dev/null; }

# The guest's boot id and state ("BOOT_ID STATE").
vm_ready_line() { cat "$VM_RUN/share/ready" 2>/dev/null; }

# vm_submit NAME TIMEOUT SCRIPT: queue a job (prints its id); vm_result ID WAIT: wait for it,
# print its output, return its exit code (124: the guest's timeout; 255: no result).
vm_submit() {
    local id
    id=$(vm__now_ms)-$1
    printf '%s\n' "$2" >"$VM_RUN/share/jobs/$id.timeout"
    printf '%s\n' "$3" >"$VM_RUN/share/jobs/.$id.tmp"
    mv -- "$VM_RUN/share/jobs/.$id.tmp" "$VM_RUN/share/jobs/$id.sh"
    printf '%s\n' "$id"
}
vm_result() {
    local id=$1 deadline r=$VM_RUN/share/results
    deadline=$(($(vm__now_ms) + $2 * 1000))
    while [[ ! -f "$r/$id.rc" ]]; do
        if ! vm_running; then vm__die "job $id: the VM is gone"; return 255; fi
        if (($(vm__now_ms) >= deadline)); then vm__die "job $id: no result after $2s"; return 255; fi
        sleep 0.2
    done
    rm -f -- "$VM_RUN/share/jobs/$id.timeout"
    cat "$r/$id.out"
    return "$(cat "$r/$id.rc")"
}

# vm_sh [-t SECS] 'shell code' [ARGS...]: run it in the VM as root (bash), output and exit
# code passed back. Default time limit 300 s.
vm_sh() {
    local t=300 id code args=""
    if [[ "${1:-}" == -t ]]; then t=$2; shift 2; fi
    code=$1
    shift
    if (($#)); then args=$(printf ' %q' "$@"); fi
    id=$(vm_submit sh "$t" "set -- $args"$'\n'"$code") || return 255
    vm_result "$id" $((t + 30))
}

# vm_poweroff: orderly shutdown, then qemu is ended by PID if it is still there.
vm_poweroff() {
    vm_running || return 0
    vm_submit poweroff 30 'systemctl --no-block poweroff' >/dev/null
    local deadline=$(($(vm__now_ms) + 90 * 1000))
    while vm_running && (($(vm__now_ms) < deadline)); do sleep 0.5; done
    vm_kill
}

# vm_reboot: reboot the guest (same qemu, same -snapshot overlay) and wait for the new boot.
vm_reboot() {
    local old t0
    old=$(vm_ready_line) || return 1
    old=${old%% *}
    t0=$(vm__now_ms)
    vm_submit reboot 30 'systemctl --no-block reboot' >/dev/null
    vm_wait_ready "$old" || return 1
    vm_note "rebooted in $(vm__secs $(($(vm__now_ms) - t0))): $(vm_ready_line)"
}
