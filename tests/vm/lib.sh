# shellcheck shell=bash
# tests/vm/lib.sh - a Debian VM booted with qemu as a real host: real PID 1, /dev/kmsg and
# cgroup v2 controllers that enforce limits (an nspawn test host has none of them). Sourced by
# tests/vm/90-vm.sh and tests/vm/image.sh. See tests/vm/README.md.
#
# Cache ($VM_CACHE = the test hosts' $SLOT_OS_TEST_CACHE; each dir built once under a lock by
# th__cache_build, tests/testhost/lib.sh, and renamed into place when complete):
#   vm-root-<suite>-<key>/root    debootstrapped root (key: suite, packages, recipe)
#   vm-image-<suite>-<key>/       disk.img (ext4, made with mkfs.ext4 -d; holds the slot's root
#                                 as a tarball), vmlinuz, initrd.img (key: the root's key + the
#                                 image recipe, runner included)
# Run dir ($VM_RUN): disk.img (a sparse copy of the cached one with the .deb under test
#   installed), share/ (the guest's 9p share: jobs/, running/, results/, ready),
#   console.log (serial), qemu.pid, qemu.log.

VM_LIB_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# The cache step is the test hosts' own (th__cache_build), and so are the cache and run dirs.
# shellcheck source=tests/testhost/lib.sh
source "$VM_LIB_DIR/../testhost/lib.sh"
VM_REPO=${VM_REPO:-$TH_REPO}
VM_CACHE=$TH_CACHE
VM_SUITE=${SLOT_OS_VM_SUITE:-bookworm}
VM_RUN=${SLOT_OS_VM_RUN:-$TH_RUN/vm-$VM_SUITE}
VM_MEM=${SLOT_OS_VM_MEM:-1024}
VM_SMP=${SLOT_OS_VM_SMP:-2}
VM_BOOT_TIMEOUT=${SLOT_OS_VM_BOOT_TIMEOUT:-1200}
# Bump when the debootstrap step changes in a way the key does not see.
VM_ROOT_RECIPE=slot-os-vm-root-v1
# What a real host needs to boot from a virtio disk, run systemd-nspawn slots, and the checks.
VM_PACKAGES=(linux-image-amd64 initramfs-tools systemd systemd-sysv systemd-container dbus
    iproute2 udev kmod procps e2fsprogs)
# quiet: the serial line is slow under emulation (the kernel log stays in /dev/kmsg);
# mitigations=off: nothing to protect in a throw-away VM, and emulated barriers cost time.
VM_CMDLINE="root=/dev/vda rw console=ttyS0 quiet mitigations=off"
# In the image: the slot's root file system as a tarball, for `make-base-image --from-tar`.
VM_SLOT_TAR=/var/lib/slot-os-vm/slot-root.tar

vm__now_ms() { th__now_ms; }
vm__secs() { th__secs "$@"; }
vm_note() { printf '# vm: %s\n' "$*" >&2; }
vm__die() { printf 'vm: %s\n' "$*" >&2; return 1; }

vm__root_key() {
    printf '%s\n' "$VM_ROOT_RECIPE" "$VM_SUITE" "${VM_PACKAGES[*]}" | sha256sum | cut -c1-12
}

vm__build_root() { # TMP (th__cache_build keeps the output in DIR.build.log)
    local pkgs=${VM_PACKAGES[*]}
    mkdir -p "$1" || return 1
    # debootstrap's own default mirror, unless SLOT_OS_TEST_MIRROR names one (as for the hosts)
    debootstrap --variant=minbase --include="${pkgs// /,}" "$VM_SUITE" "$1/root" ${TH_MIRROR:+"$TH_MIRROR"}
}

# vm_root: path of the cached debootstrapped root.
vm_root() {
    local dir
    dir=$VM_CACHE/vm-root-$VM_SUITE-$(vm__root_key)
    th__cache_build "$dir" "Debian $VM_SUITE VM root (debootstrap)" vm__build_root || return 1
    printf '%s\n' "$dir/root"
}

# Kernel modules a VM with a virtio disk, a 9p share and nspawn slots never loads (hardware
# drivers, most of /usr/lib/modules): left out of the image.
VM_MODULES_DROP=(drivers/gpu drivers/net/wireless drivers/net/ethernet drivers/media
    drivers/infiniband drivers/scsi drivers/staging drivers/usb drivers/bluetooth drivers/iio
    drivers/isdn drivers/input drivers/hid drivers/mtd drivers/net/can drivers/net/usb
    drivers/hwmon drivers/edac drivers/md drivers/nvme drivers/ata drivers/target
    drivers/thunderbolt drivers/mmc drivers/video drivers/firewire drivers/leds
    drivers/power drivers/regulator drivers/watchdog drivers/spi drivers/gpio drivers/comedi
    sound net/wireless net/mac80211 net/bluetooth fs/ocfs2 fs/xfs fs/gfs2 fs/nfs fs/nfsd
    fs/smb fs/ceph fs/f2fs fs/ubifs)
# Left out of the slot's root tarball: what only a kernel needs (a slot boots none) and the
# image's own VM tier files.
VM_SLOT_TAR_EXCLUDES=(./boot ./usr/lib/modules ./usr/lib/firmware ./var/lib/initramfs-tools
    ./etc/initramfs-tools ./usr/share/initramfs-tools ./var/lib/slot-os-vm)

# Everything the image gets on top of the debootstrapped root. Its source text (and the
# runner's) is part of the image key.
vm__image_setup() { # ROOT
    local r=$1 kver m
    [[ -n "$r" && -d "$r/usr/lib" && "$r" != / ]] || { echo "vm__image_setup: bad root '$r'"; return 1; }
    echo slotvm >"$r/etc/hostname"
    printf '127.0.1.1 slotvm\n' >>"$r/etc/hosts"
    # One VM at a time boots this image (a per-run copy): a fixed id avoids first-boot units.
    systemd-id128 new >"$r/etc/machine-id" 2>/dev/null || tr -d - </proc/sys/kernel/random/uuid >"$r/etc/machine-id"
    chroot "$r" passwd -dq root >/dev/null 2>&1 || chroot "$r" passwd -d root >/dev/null
    # The root file system is the kernel's root= (rw); nothing else to mount.
    : >"$r/etc/fstab"
    # Boot fast, do nothing behind the checks' back; no logins (the serial line is a log), no
    # modules nothing here uses, no fsck of a root mkfs.ext4 made for this run. (Slots made
    # from this root get the same: the checks need their systemd, journal and D-Bus only.)
    systemctl --root="$r" mask apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer \
        e2scrub_reap.service fstrim.timer dpkg-db-backup.timer man-db.timer \
        systemd-firstboot.service getty@tty1.service serial-getty@ttyS0.service \
        console-getty.service systemd-logind.service systemd-user-sessions.service \
        modprobe@loop.service modprobe@fuse.service modprobe@dm_mod.service \
        modprobe@drm.service modprobe@efi_pstore.service modprobe@configfs.service \
        sys-kernel-debug.mount sys-kernel-tracing.mount sys-kernel-config.mount \
        dev-hugepages.mount systemd-fsck-root.service >/dev/null 2>&1
    mkdir -p "$r/etc/systemd/journald.conf.d"
    printf '[Journal]\nStorage=volatile\nRuntimeMaxUse=32M\n' >"$r/etc/systemd/journald.conf.d/50-slot-os-vm.conf"
    printf '%s\n' 'path-exclude=/usr/share/doc/*' 'path-include=/usr/share/doc/*/copyright' \
        'path-exclude=/usr/share/man/*' 'path-exclude=/usr/share/info/*' \
        'path-exclude=/usr/share/locale/*' 'path-include=/usr/share/locale/locale.alias' \
        >"$r/etc/dpkg/dpkg.cfg.d/50-slot-os-vm-nodoc"
    find "$r/usr/share/doc" -mindepth 1 ! -type d ! -name copyright -delete
    find "$r/usr/share/man" "$r/usr/share/info" -mindepth 1 -delete
    find "$r/usr/share/locale" -mindepth 1 -maxdepth 1 ! -name locale.alias -exec rm -rf {} +
    chroot "$r" apt-get clean
    rm -rf "$r"/var/lib/apt/lists/* "$r"/var/cache/apt/*.bin "$r"/var/log/*.log "$r"/var/log/apt/*
    mkdir -p "$r/var/lib/apt/lists/partial"
    # A small kernel: no hardware drivers, and an initrd with only what mounts the root
    # (unpacking Debian's default "most" initrd is slow under emulation).
    kver=$(find "$r/usr/lib/modules" -mindepth 1 -maxdepth 1 -printf '%f\n' | sort -V | tail -n 1)
    [[ -n "$kver" ]] || { echo "no kernel modules in $r"; return 1; }
    for m in "${VM_MODULES_DROP[@]}"; do rm -rf -- "$r/usr/lib/modules/$kver/kernel/$m"; done
    chroot "$r" depmod -a "$kver" || return 1
    sed -i 's/^MODULES=.*/MODULES=list/' "$r/etc/initramfs-tools/initramfs.conf" || return 1
    printf '%s\n' virtio_pci virtio_blk ext4 crc32c_generic >>"$r/etc/initramfs-tools/modules"
    chroot "$r" update-initramfs -u -k "$kver" || return 1
    # The job runner: the host drives the VM through the 9p share (tests/vm/guest-runner.sh).
    install -m755 "$VM_LIB_DIR/guest-runner.sh" "$r/usr/local/sbin/slot-os-vm-runner"
    printf '%s\n' '[Unit]' 'Description=slot-os VM tier: run the host'"'"'s jobs from the 9p share' \
        '# Not inside slots made from this root.' 'ConditionVirtualization=!container' \
        '[Service]' 'ExecStart=/usr/local/sbin/slot-os-vm-runner' '[Install]' \
        'WantedBy=multi-user.target' >"$r/etc/systemd/system/slot-os-vm-runner.service"
    systemctl --root="$r" enable slot-os-vm-runner.service >/dev/null 2>&1
    # The slot's root: this root without the kernel's files, for `make-base-image --from-tar`
    # in the VM (the slot image itself is made there, by the package under test).
    mkdir -p "$r${VM_SLOT_TAR%/*}"
    tar -C "$r" --numeric-owner --xattrs --acls "${VM_SLOT_TAR_EXCLUDES[@]/#/--exclude=}" \
        -cf "$r$VM_SLOT_TAR" . || return 1
}

vm__image_key() {
    {
        vm__root_key
        printf '%s\n' "$VM_CMDLINE" "$VM_SLOT_TAR" "${VM_MODULES_DROP[*]}" "${VM_SLOT_TAR_EXCLUDES[*]}"
        declare -f vm__image_setup vm__build_image
        cat "$VM_LIB_DIR/guest-runner.sh"
    } | sha256sum | cut -c1-12
}

vm__build_image() { # TMP ROOT (th__cache_build keeps the output in DIR.build.log)
    local tmp=$1 root=$2 stage=$1/stage k i
    mkdir -p "$tmp" || return 1
    cp -a -- "$root" "$stage" || return 1
    vm__image_setup "$stage" || { echo "image setup failed"; return 1; }
    k=$(find "$stage/boot" -maxdepth 1 -name 'vmlinuz-*' | sort -V | tail -n 1)
    i=$(find "$stage/boot" -maxdepth 1 -name 'initrd.img-*' | sort -V | tail -n 1)
    [[ -n "$k" && -n "$i" ]] || { echo "no kernel/initrd in $stage/boot"; return 1; }
    cp -- "$k" "$tmp/vmlinuz" && cp -- "$i" "$tmp/initrd.img" || return 1
    basename "$k" >"$tmp/kernel-version"
    # qemu boots the copies; the root does not need them.
    find "$stage/boot" -mindepth 1 -maxdepth 1 \( -name 'vmlinuz-*' -o -name 'initrd.img-*' \) -delete
    du -sh "$stage" "$stage$VM_SLOT_TAR" "$tmp/initrd.img"
    # Sparse: 4G of room for the slot images next to the root.
    mkfs.ext4 -q -F -L slotvm -d "$stage" "$tmp/disk.img" 4G || { echo "mkfs.ext4 failed"; return 1; }
    rm -rf --one-file-system -- "$stage"
}

# vm_image: path of the cached image dir (disk.img, vmlinuz, initrd.img).
vm_image() {
    local root dir
    root=$(vm_root) || return 1
    dir=$VM_CACHE/vm-image-$VM_SUITE-$(vm__image_key)
    th__cache_build "$dir" "Debian $VM_SUITE VM image" vm__build_image "$root" || return 1
    printf '%s\n' "$dir"
}

# vm_prepare_run IMAGE_DIR DEB: a fresh run dir whose disk is a sparse copy of the cached
# image with the package under test installed (dpkg in a chroot of the copy, before its
# first boot: the generator's first run is the boot's, when only /dev/kmsg can take its
# messages); then FN MOUNTPOINT, if given, adds what the scenario needs before that boot.
vm_prepare_run() {
    local img=$1 deb=$2 fn=${3:-} mnt rc=0 t0
    t0=$(vm__now_ms)
    vm_kill
    [[ -d "$VM_RUN" ]] && { th__safe_rm "$VM_RUN" || return 1; }
    mkdir -p "$VM_RUN/share" "$VM_RUN/tmp" "$VM_RUN/mnt" || return 1
    cp --sparse=always -- "$img/disk.img" "$VM_RUN/disk.img" || return 1
    mnt=$VM_RUN/mnt
    mount -o loop -t ext4 -- "$VM_RUN/disk.img" "$mnt" || return 1
    {
        cp -- "$deb" "$mnt/var/tmp/slot-os.deb" &&
            # no /proc in the chroot: the postinst's sysctl cannot touch this machine's kernel
            chroot "$mnt" env DEBIAN_FRONTEND=noninteractive PATH=/usr/sbin:/usr/bin:/sbin:/bin \
                dpkg -i /var/tmp/slot-os.deb &&
            rm -f -- "$mnt/var/tmp/slot-os.deb"
    } >"$VM_RUN/install.log" 2>&1 || { rc=1; cat "$VM_RUN/install.log" >&2; }
    if ((rc == 0)) && [[ -n "$fn" ]]; then "$fn" "$mnt" || rc=1; fi
    umount -- "$mnt" || { umount -l -- "$mnt"; rc=1; }
    rmdir -- "$mnt"
    ((rc == 0)) && vm_note "run disk with the package installed in $(vm__secs $(($(vm__now_ms) - t0)))"
    return "$rc"
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

# PIDs are recorded as "PID STARTTIME" (th__proc_id) and trusted only while that very
# process runs (th__pidfile_alive), as for the test hosts.
vm_running() { th__pidfile_alive "$VM_RUN/qemu.pid" >/dev/null; }

# vm_kill: end the qemu process this run dir records (ours, or one left by a killed run).
vm_kill() {
    local pid
    pid=$(th__pidfile_alive "$VM_RUN/qemu.pid") || return 0
    kill -TERM "$pid" 2>/dev/null
    for _ in $(seq 50); do vm_running || break; sleep 0.1; done
    if vm_running; then kill -KILL "$pid" 2>/dev/null; fi
    wait "$pid" 2>/dev/null || true
    rm -f "$VM_RUN/qemu.pid"
}

# vm_start IMAGE_DIR: boot the run disk vm_prepare_run made (with the image's kernel and
# initrd; the cached image is never written), and the disk images VM_DRIVES names (raw
# files, /dev/vdb on), if any. Returns when the guest has written "ready".
VM_DRIVES=()
vm_start() {
    local img=$1 accel cpu pid t0 rec d
    local -a qemu
    vm_kill
    [[ -f "$VM_RUN/disk.img" ]] || { vm__die "no $VM_RUN/disk.img (vm_prepare_run)"; return 1; }
    accel=$(vm_accel)
    if [[ "$accel" == kvm ]]; then cpu=host; else accel=tcg,thread=multi cpu=qemu64; fi
    qemu=(qemu-system-x86_64 -name slot-os-vm -nodefaults -no-user-config -display none
        -accel "$accel" -cpu "$cpu" -m "$VM_MEM" -smp "$VM_SMP"
        -kernel "$img/vmlinuz" -initrd "$img/initrd.img" -append "$VM_CMDLINE"
        -drive "file=$VM_RUN/disk.img,format=raw,if=virtio,cache=unsafe"
        -virtfs "local,path=$VM_RUN/share,mount_tag=host0,security_model=none,id=host0"
        -device virtio-rng-pci -nic none -serial "file:$VM_RUN/console.log" -monitor none)
    for d in "${VM_DRIVES[@]}"; do qemu+=(-drive "file=$d,format=raw,if=virtio,cache=unsafe"); done
    printf '%s\n' "${qemu[*]}" >"$VM_RUN/qemu.cmd"
    t0=$(vm__now_ms)
    # PDEATHSIG: qemu ends with the shell that started it, however that shell ends.
    TMPDIR=$VM_RUN/tmp setpriv --pdeathsig KILL -- "${qemu[@]}" </dev/null >"$VM_RUN/qemu.log" 2>&1 3>&- 4>&- 5>&- 6>&- 7>&- 8>&- 9>&- &
    pid=$!
    rec=$(th__proc_id "$pid")
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

# vm_reboot: reboot the guest (same qemu, same run disk) and wait for the new boot.
vm_reboot() {
    local old t0
    old=$(vm_ready_line) || return 1
    old=${old%% *}
    t0=$(vm__now_ms)
    vm_submit reboot 30 'systemctl --no-block reboot' >/dev/null
    vm_wait_ready "$old" || return 1
    vm_note "rebooted in $(vm__secs $(($(vm__now_ms) - t0))): $(vm_ready_line)"
}
